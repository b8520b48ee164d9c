//! The manifest: a small JSON object written after its archive. A backup
//! exists only once its manifest does, so a crash mid-backup never leaves a
//! half-written backup visible: at worst an archive without a manifest,
//! which listing and restore ignore and retention deletes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const FORMAT: u32 = 1;
pub const ARCHIVE_SUFFIX: &str = ".tbk";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// `<UTC time>-<random>`: sorts in creation order.
    pub id: String,
    pub created_ms: u64,
    /// `created_ms` for people (RFC 3339, UTC).
    pub created: String,
    /// Object name of the archive, beside the manifest.
    pub archive: String,
    pub archive_bytes: u64,
    pub archive_sha256: String,
    /// Id of the key that sealed the archive (also in the archive header).
    pub key_id: String,
    pub entries: u64,
    /// Uncompressed payload size.
    pub plain_bytes: u64,
    /// Entries per bucket.
    pub buckets: BTreeMap<String, u64>,
    /// `embedded` or `redis`.
    pub store: String,
    /// `snapshot` (one read transaction) or `per-key` (Redis SCAN).
    pub consistency: String,
    pub tern_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {0}: {1}")]
    Parse(String, String),
    #[error(
        "archive {archive} does not match its manifest ({what}): it was altered or damaged \
         after the backup was written"
    )]
    Mismatch { archive: String, what: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Manifest {
    pub fn manifest_name(id: &str) -> String {
        format!("{id}{MANIFEST_SUFFIX}")
    }

    pub fn archive_name(id: &str) -> String {
        format!("{id}{ARCHIVE_SUFFIX}")
    }

    pub fn parse(name: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Parse(name.into(), e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Parse(
                name.into(),
                format!("format {} (this tern reads {FORMAT})", m.format),
            ));
        }
        if Manifest::manifest_name(&m.id) != name.rsplit('/').next().unwrap_or(name) {
            return Err(ManifestError::Parse(
                name.into(),
                "its id does not match its name".into(),
            ));
        }
        Ok(m)
    }

    /// Check an archive's bytes against the size and SHA-256 recorded here.
    pub fn verify_archive(&self, archive: &[u8]) -> Result<(), ManifestError> {
        let mismatch = |what: String| ManifestError::Mismatch {
            archive: self.archive.clone(),
            what,
        };
        if archive.len() as u64 != self.archive_bytes {
            return Err(mismatch(format!(
                "{} bytes, manifest says {}",
                archive.len(),
                self.archive_bytes
            )));
        }
        if sha256_hex(archive) != self.archive_sha256 {
            return Err(mismatch("SHA-256 differs".into()));
        }
        Ok(())
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-26T01:02:03.456Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, s) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(d);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Proleptic Gregorian date of a day count from 1970-01-01 (the classic
/// era-based conversion: 400-year eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_654_923_456), "2026-11-26T01:02:03.456Z");
    }
}

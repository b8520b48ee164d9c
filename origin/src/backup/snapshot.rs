//! Between the store and the archive: a store's dump fed through the
//! encoder, and an opened archive checked and then loaded into a store.

use std::collections::BTreeMap;

use indicatif::ProgressBar;

use super::archive::{Encoder, Frame, Opened};
use super::error::BackupError;
use super::keys::Key;
use super::manifest::Manifest;
use crate::store::Kv;

/// An archive built in memory, with what its manifest records about it.
pub struct Encoded {
    pub archive: Vec<u8>,
    pub entries: u64,
    pub plain_bytes: u64,
    pub buckets: BTreeMap<String, u64>,
}

/// Dump the whole store through an encoder (blocking: call it on a
/// blocking thread). The embedded store is read in one transaction, so the
/// archive is one point in time; Redis is read key by key.
pub fn encode(
    kv: &Kv,
    key: &Key,
    nonce_prefix: [u8; 7],
    backup_id: &str,
    created_ms: u64,
    meta: &[u8],
    progress: &ProgressBar,
) -> Result<Encoded, BackupError> {
    let mut enc = Encoder::new(key, nonce_prefix, backup_id, created_ms, meta)?;
    let mut archive = enc.take_output();
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    kv.dump(|bucket, k, v| -> Result<(), BackupError> {
        enc.push_entry(bucket, k, v)?;
        archive.extend(enc.take_output());
        match buckets.get_mut(bucket) {
            Some(n) => *n += 1,
            None => {
                buckets.insert(bucket.to_string(), 1);
            }
        }
        progress.inc(1);
        Ok(())
    })?;
    let (entries, plain_bytes) = (enc.entries(), enc.plain_bytes());
    archive.extend(enc.finish()?);
    Ok(Encoded {
        archive,
        entries,
        plain_bytes,
        buckets,
    })
}

/// Read every frame of an authenticated archive and check it against its
/// manifest: meta first, the end mark's count, the count per bucket. Run
/// before anything is written, so a restore either writes a whole archive
/// or nothing.
pub fn check(opened: &Opened, m: &Manifest) -> Result<serde_json::Value, BackupError> {
    let bad = |what: String| BackupError::Inconsistent(m.id.clone(), what);
    if opened.header.backup_id != m.id {
        return Err(bad(format!(
            "the archive says it is backup {}",
            opened.header.backup_id
        )));
    }
    if opened.header.key_id != m.key_id {
        return Err(bad("key ids differ".into()));
    }
    let mut frames = opened.frames()?;
    let meta = match frames.next().transpose()? {
        Some(Frame::Meta(j)) => serde_json::from_slice(&j).map_err(|e| bad(e.to_string()))?,
        _ => return Err(bad("no metadata at the start".into())),
    };
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    let mut counted = 0u64;
    for f in frames {
        match f? {
            Frame::Entry { bucket, .. } => {
                *buckets.entry(bucket).or_default() += 1;
                counted += 1;
            }
            Frame::End { entries } if entries == counted && entries == m.entries => {}
            Frame::End { entries } => {
                return Err(bad(format!(
                    "{counted} entries read, end mark says {entries}, manifest {}",
                    m.entries
                )))
            }
            Frame::Meta(_) => return Err(bad("a second metadata frame".into())),
        }
    }
    if buckets != m.buckets {
        return Err(bad("entries per bucket differ".into()));
    }
    Ok(meta)
}

/// Write every entry of a checked archive into the store (blocking).
pub fn load(kv: &Kv, opened: &Opened, progress: &ProgressBar) -> Result<u64, BackupError> {
    let entries = opened.frames()?.filter_map(|f| match f {
        Ok(Frame::Entry { bucket, key, value }) => {
            progress.inc(1);
            Some(Ok((bucket, key, value)))
        }
        Ok(_) => None,
        Err(e) => Some(Err(BackupError::from(e))),
    });
    let n = kv.load(entries)?;
    kv.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::archive;
    use crate::backup::keys::Keyring;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::StoreError;

    fn contents(kv: &Kv) -> Vec<(String, String, Vec<u8>)> {
        let mut all = Vec::new();
        kv.dump(|b, k, v| {
            all.push((b.to_string(), k.to_string(), v.to_vec()));
            Ok::<_, StoreError>(())
        })
        .unwrap();
        all
    }

    #[test]
    fn embedded_store_round_trips_through_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let a = EmbeddedStore::open(&dir.path().join("a")).unwrap();
        for i in 0..500 {
            a.set(
                "default",
                &format!("room/{i}"),
                format!("{{\"n\":{i}}}").as_bytes(),
            )
            .unwrap();
        }
        a.set("other", "k", &[0, 159, 146, 150]).unwrap();
        let a = Kv::from(a);
        let key = Key {
            id: "k".into(),
            bytes: [3; 32],
        };
        let hidden = ProgressBar::hidden();
        let enc = encode(&a, &key, [9; 7], "id-1", 1, b"{}", &hidden).unwrap();
        assert_eq!(enc.entries, 501);
        let m = Manifest {
            format: 1,
            id: "id-1".into(),
            created_ms: 1,
            created: String::new(),
            archive: String::new(),
            archive_bytes: enc.archive.len() as u64,
            archive_sha256: String::new(),
            key_id: "k".into(),
            entries: enc.entries,
            plain_bytes: enc.plain_bytes,
            buckets: enc.buckets.clone(),
            store: "embedded".into(),
            consistency: "snapshot".into(),
            tern_version: String::new(),
        };
        let opened = archive::open(&enc.archive, &Keyring::new(vec![key])).unwrap();
        check(&opened, &m).unwrap();
        let mut wrong = m.clone();
        wrong.entries += 1;
        assert!(check(&opened, &wrong).is_err());

        let b = Kv::from(EmbeddedStore::open(&dir.path().join("b")).unwrap());
        assert!(b.is_empty().unwrap());
        assert_eq!(load(&b, &opened, &hidden).unwrap(), 501);
        assert!(!b.is_empty().unwrap());
        assert_eq!(contents(&a), contents(&b));
    }
}

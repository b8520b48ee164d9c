//! Backups: `tern backup` (make one, `list`, `verify`, `keygen`),
//! `tern restore`, and the schedule inside `tern serve` / `tern up`.
//!
//! A backup is every key of every bucket in the store plus non-secret
//! config, compressed and sealed with AES-256-GCM (archive.rs), written as
//! an archive object and then a manifest with its SHA-256 (manifest.rs) to
//! a local directory or S3 (dest.rs); old ones are pruned by retention.rs.
//! docs/backups.md is the operator's guide.

pub mod archive;
pub mod dest;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod retention;
pub mod snapshot;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use rand::RngCore as _;

use self::dest::Destination;
pub use self::error::BackupError;
use self::keys::Keyring;
use self::manifest::Manifest;
use crate::store::Kv;

/// Set in tests only: the process aborts between writing a backup's archive
/// and its manifest, as a crash there would.
const CRASH_HOOK_ENV: &str = "TERN_BACKUP_TEST_CRASH_BEFORE_MANIFEST";
/// Archives without a manifest are deleted once this old (an older one
/// cannot be a backup still being written).
const ORPHAN_AGE_MS: u64 = 3_600_000;

#[derive(clap::Args, Clone, Debug)]
pub struct DestArgs {
    /// Backup destination: a directory, file:///dir or s3://bucket/prefix
    /// (S3 credentials and region from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION).
    #[arg(long = "to", visible_alias = "from", env = "TERN_BACKUP_TO")]
    pub to: Option<String>,
    /// Endpoint of an S3-compatible server (e.g. http://10.0.0.9:9000).
    #[arg(long, env = "TERN_BACKUP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

impl DestArgs {
    pub fn open(&self) -> anyhow::Result<Destination> {
        let to = self
            .to
            .as_deref()
            .context("where are the backups? pass --to <dir | s3://bucket/prefix>")?;
        Ok(Destination::parse(to, self.s3_endpoint.as_deref())?)
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct KeyArgs {
    /// Key file(s): one `<id> <64 hex digits>` per line; the first key of
    /// the first file seals new backups, every key opens old ones. Keys in
    /// TERN_BACKUP_KEY (`<id>:<hex>[,…]`) come before them.
    #[arg(long = "key-file", env = "TERN_BACKUP_KEY_FILE", value_delimiter = ',')]
    pub key_files: Vec<PathBuf>,
}

impl KeyArgs {
    pub fn keyring(&self) -> Result<Keyring, keys::KeyError> {
        Keyring::load(
            std::env::var("TERN_BACKUP_KEY").ok().as_deref(),
            &self.key_files,
        )
    }
}

#[derive(clap::Args, Clone, Copy, Debug)]
pub struct RetentionArgs {
    /// Keep the newest N backups.
    #[arg(long, default_value_t = 24)]
    pub keep_last: usize,
    /// Also keep the newest backup of each of the last N days (UTC).
    #[arg(long, default_value_t = 7)]
    pub keep_daily: usize,
    /// Also keep the newest backup of each of the last N weeks.
    #[arg(long, default_value_t = 4)]
    pub keep_weekly: usize,
}

impl RetentionArgs {
    pub fn policy(&self) -> retention::Policy {
        retention::Policy {
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
        }
    }
}

/// Backups on a schedule inside `tern serve` / `tern up`.
#[derive(clap::Args, Clone, Debug)]
pub struct ScheduleArgs {
    /// Back up to this destination on a schedule (a directory, file:///dir
    /// or s3://bucket/prefix). With Redis, enable it on one edge only.
    #[arg(long = "backup-to", env = "TERN_BACKUP_TO")]
    pub to: Option<String>,
    /// Time between backups (`300s`, `5m`, `1h`, or milliseconds `500ms`).
    #[arg(long = "backup-every", default_value = "5m", value_parser = parse_duration)]
    pub every: Duration,
    /// Key file(s) for scheduled backups (see `tern backup --help`).
    #[arg(
        long = "backup-key-file",
        env = "TERN_BACKUP_KEY_FILE",
        value_delimiter = ','
    )]
    pub key_files: Vec<PathBuf>,
    /// Endpoint of an S3-compatible server.
    #[arg(long = "backup-s3-endpoint", env = "TERN_BACKUP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long = "backup-keep-last", default_value_t = 24)]
    pub keep_last: usize,
    #[arg(long = "backup-keep-daily", default_value_t = 7)]
    pub keep_daily: usize,
    #[arg(long = "backup-keep-weekly", default_value_t = 4)]
    pub keep_weekly: usize,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 30s, 5m, 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: units are ms, s, m, h")),
    };
    if d.is_zero() {
        return Err("the interval must be positive".into());
    }
    Ok(d)
}

fn new_backup_id(created_ms: u64) -> String {
    let t = manifest::rfc3339(created_ms);
    // 2026-11-26T01:02:03.456Z -> 20261126T010203456Z: sorts by time, and
    // is a safe object name everywhere.
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut r = [0u8; 3];
    rand::thread_rng().fill_bytes(&mut r);
    format!("{compact}-{}", hex::encode(r))
}

/// Make one backup of `kv` at `dest`: snapshot, seal, write archive then
/// manifest. `meta` is the non-secret config recorded inside the archive.
pub async fn make(
    kv: &Kv,
    dest: &Destination,
    keyring: &Keyring,
    meta: serde_json::Value,
    progress: ProgressBar,
) -> Result<Manifest, BackupError> {
    let key = keyring.current()?.clone();
    let created_ms = crate::edge::now_ms();
    let id = new_backup_id(created_ms);
    let mut nonce_prefix = [0u8; 7];
    rand::rngs::OsRng.fill_bytes(&mut nonce_prefix);
    let meta = serde_json::json!({
        "store": kv.kind(),
        "consistency": kv.consistency(),
        "tern_version": env!("CARGO_PKG_VERSION"),
        "config": meta,
    });
    let enc = {
        let (kv, id) = (kv.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let meta = serde_json::to_vec(&meta).expect("meta serializes");
            let r = snapshot::encode(&kv, &key, nonce_prefix, &id, created_ms, &meta, &progress);
            progress.finish_and_clear();
            r
        })
        .await
        .map_err(|e| BackupError::Task(e.to_string()))??
    };
    let m = Manifest {
        format: manifest::FORMAT,
        archive: Manifest::archive_name(&id),
        id,
        created_ms,
        created: manifest::rfc3339(created_ms),
        archive_bytes: enc.archive.len() as u64,
        archive_sha256: manifest::sha256_hex(&enc.archive),
        key_id: keyring.current()?.id.clone(),
        entries: enc.entries,
        plain_bytes: enc.plain_bytes,
        buckets: enc.buckets,
        store: kv.kind().into(),
        consistency: kv.consistency().into(),
        tern_version: env!("CARGO_PKG_VERSION").into(),
    };
    dest.put(&m, enc.archive, || {
        if std::env::var_os(CRASH_HOOK_ENV).is_some() {
            std::process::abort();
        }
    })
    .await?;
    Ok(m)
}

/// Apply retention: delete backups no rule keeps, and archives left
/// without a manifest by a crash (once they are old enough not to be a
/// backup still being written). Returns how many backups were deleted.
pub async fn prune(dest: &Destination, policy: retention::Policy) -> Result<usize, BackupError> {
    let listing = dest.list().await?;
    let all: Vec<(String, u64)> = listing
        .backups
        .iter()
        .map(|m| (m.id.clone(), m.created_ms))
        .collect();
    let keep = retention::keep(policy, &all);
    let mut deleted = 0;
    for m in &listing.backups {
        if !keep.contains(&m.id) {
            dest.delete(m).await?;
            deleted += 1;
        }
    }
    let now = crate::edge::now_ms();
    for (name, _) in &listing.orphans {
        // Ids start with their UTC time; compare it with now.
        let created = listing
            .backups
            .iter()
            .find(|m| name.starts_with(&m.id))
            .map(|m| m.created_ms);
        let old = name
            .get(..19)
            .and_then(parse_compact_time)
            .or(created)
            .is_some_and(|t| now.saturating_sub(t) > ORPHAN_AGE_MS);
        if old {
            tracing::info!(archive = %name, "deleting an archive without a manifest");
            dest.delete_object(name).await?;
        }
    }
    Ok(deleted)
}

/// `20261126T010203456Z` -> unix ms.
fn parse_compact_time(s: &str) -> Option<u64> {
    let d = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, da) = (d(0..4)?, d(4..6)?, d(6..8)?);
    let (h, mi, se, ms) = (d(9..11)?, d(11..13)?, d(13..15)?, d(15..18)?);
    // Days from civil (inverse of manifest::civil_from_days).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

/// Fetch a backup and check everything a restore checks before writing:
/// size and SHA-256 against the manifest, every GCM tag, frame counts.
pub async fn fetch_checked(
    dest: &Destination,
    keyring: &Keyring,
    id: &str,
) -> Result<(Manifest, archive::Opened, serde_json::Value), BackupError> {
    let m = dest.find(id).await?;
    let bytes = dest.fetch_archive(&m).await?;
    m.verify_archive(&bytes)?;
    let keyring = keyring.clone();
    let m2 = m.clone();
    let (opened, meta) = tokio::task::spawn_blocking(move || {
        let opened = archive::open(&bytes, &keyring)?;
        let meta = snapshot::check(&opened, &m2)?;
        Ok::<_, BackupError>((opened, meta))
    })
    .await
    .map_err(|e| BackupError::Task(e.to_string()))??;
    Ok((m, opened, meta))
}

/// Start scheduled backups of `kv`, if `args.to` is set. `default_key`
/// (used by `tern up` only) is a key file created when no key is given.
pub fn spawn_schedule(
    kv: Kv,
    args: &ScheduleArgs,
    default_key: Option<PathBuf>,
    meta: serde_json::Value,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(to) = &args.to else {
        return Ok(None);
    };
    let env_key = std::env::var("TERN_BACKUP_KEY").ok();
    let mut files = args.key_files.clone();
    if files.is_empty() && env_key.is_none() {
        let Some(k) = default_key else {
            anyhow::bail!("--backup-to needs a key: --backup-key-file or TERN_BACKUP_KEY");
        };
        if !k.exists() {
            keys::generate(&k, "dev-1")?;
            tracing::warn!(key = %k.display(), "generated a backup key next to the data: development only");
        }
        files.push(k);
    }
    let keyring = Keyring::load(env_key.as_deref(), &files)?;
    let dest = Destination::parse(to, args.s3_endpoint.as_deref())?;
    let policy = retention::Policy {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
    };
    let every = args.every;
    tracing::info!(to = %dest.spec(), every = ?every, key = %keyring.current()?.id, "scheduled backups on");
    Ok(Some(tokio::spawn(async move {
        // First backup one interval after start: a fresh origin has
        // nothing worth saving yet, and a restarting one has just been
        // backed up.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let t = Instant::now();
            match make(&kv, &dest, &keyring, meta.clone(), ProgressBar::hidden()).await {
                Ok(m) => tracing::info!(
                    id = %m.id, entries = m.entries, bytes = m.archive_bytes,
                    ms = t.elapsed().as_millis() as u64, "backup written"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "backup failed; the previous ones are intact");
                    continue;
                }
            }
            if let Err(e) = prune(&dest, policy).await {
                tracing::warn!(error = %e, "pruning old backups failed");
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let a = new_backup_id(1_795_654_923_456);
        assert!(a.starts_with("20261126T010203456Z-"), "{a}");
        assert_eq!(parse_compact_time(&a[..19]), Some(1_795_654_923_456));
        assert!(new_backup_id(1_795_654_923_457) > a);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}

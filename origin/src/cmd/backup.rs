//! `tern backup [list | verify | keygen]` and `tern restore`: the command
//! line over [`crate::backup`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backup::dest::Destination;
use crate::backup::keys::{self, Keyring};
use crate::backup::{
    archive, fetch_checked, make, prune, snapshot, BackupError, DestArgs, KeyArgs, RetentionArgs,
};
use crate::cmd::{StoreArgs, DEFAULT_DATA_DIR};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    dest: DestArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Do not delete old backups after this one.
    #[arg(long)]
    no_prune: bool,
}

#[derive(Subcommand)]
enum BackupCommand {
    /// List the backups at a destination, oldest first.
    List {
        #[command(flatten)]
        dest: DestArgs,
        /// One manifest per line, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup without restoring it: manifest checksum, every
    /// authentication tag, entry counts. Optionally print its entries.
    Verify {
        #[command(flatten)]
        dest: DestArgs,
        #[command(flatten)]
        keys: KeyArgs,
        /// Backup id, or `latest`.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// Print every entry as a JSON line {bucket, key, value}.
        #[arg(long)]
        entries: bool,
    },
    /// Add a new random key at the top of a key file: it seals new
    /// backups, the older keys below it still open old ones.
    Keygen {
        #[arg(long)]
        key_file: PathBuf,
        /// Key id recorded in archive headers (default: key-<unix time>).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    dest: DestArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// Write into a store that already holds keys (restored keys overwrite
    /// theirs; others stay).
    #[arg(long)]
    force: bool,
}

fn spinner(msg: &'static str) -> ProgressBar {
    let p = ProgressBar::new_spinner();
    p.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {human_pos} entries ({per_sec})")
            .expect("template"),
    );
    p.set_message(msg);
    p
}

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let p = ProgressBar::new(len);
    p.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    p.set_message(msg);
    p
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `tern backup [list | verify | keygen]`.
pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(BackupCommand::List { dest, json }) => rt.block_on(list(dest.open()?, json)),
        Some(BackupCommand::Verify {
            dest,
            keys,
            backup,
            entries,
        }) => rt.block_on(verify(dest.open()?, keys.keyring()?, &backup, entries)),
        Some(BackupCommand::Keygen { key_file, id }) => {
            let id = id.unwrap_or_else(|| format!("key-{}", crate::edge::now_ms() / 1000));
            let k = keys::generate(&key_file, &id)?;
            println!(
                "added key `{}` at the top of {} (it seals new backups; keep a copy \
                 somewhere other than the backups)",
                k.id,
                key_file.display()
            );
            Ok(())
        }
        None => {
            let dest = args.dest.open()?;
            let keyring = args.keys.keyring()?;
            let store = args.store.clone();
            let kv = rt.block_on(async {
                tokio::task::spawn_blocking(move || open_for_backup(&store)).await?
            })?;
            let meta = serde_json::json!({
                "kv": crate::store::redact_url(&args.store.kv),
                "kv_prefix": args.store.kv_prefix,
            });
            let t = Instant::now();
            let m = rt.block_on(make(&kv, &dest, &keyring, meta, spinner("backing up")))?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "backup {} : {} entries, {:.1} MB -> {:.1} MB archive, key `{}`, {:.2} s ({})",
                m.id,
                m.entries,
                mb(m.plain_bytes),
                mb(m.archive_bytes),
                m.key_id,
                secs,
                m.consistency
            );
            if !args.no_prune {
                let n = rt.block_on(prune(&dest, args.retention.policy()))?;
                if n > 0 {
                    println!("retention: deleted {n} old backup(s)");
                }
            }
            Ok(())
        }
    }
}

async fn list(dest: Destination, json: bool) -> anyhow::Result<()> {
    let l = dest.list().await?;
    for s in &l.skipped {
        eprintln!("skipped: {s}");
    }
    for (name, _) in &l.orphans {
        eprintln!("incomplete (no manifest; ignored): {name}");
    }
    if json {
        for m in &l.backups {
            println!("{}", serde_json::to_string(m)?);
        }
        return Ok(());
    }
    println!(
        "{:<28} {:<24} {:>10} {:>10}  key",
        "id", "created (UTC)", "entries", "MB"
    );
    for m in &l.backups {
        println!(
            "{:<28} {:<24} {:>10} {:>10.2}  {}",
            m.id,
            m.created,
            m.entries,
            mb(m.archive_bytes),
            m.key_id
        );
    }
    Ok(())
}

async fn verify(
    dest: Destination,
    keyring: Keyring,
    id: &str,
    print_entries: bool,
) -> anyhow::Result<()> {
    let (m, opened, _) = fetch_checked(&dest, &keyring, id).await?;
    if print_entries {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for f in opened.frames()? {
            if let archive::Frame::Entry { bucket, key, value } = f? {
                let value = match String::from_utf8(value) {
                    Ok(s) => serde_json::Value::String(s),
                    Err(e) => serde_json::json!({ "hex": hex::encode(e.into_bytes()) }),
                };
                let line = serde_json::json!({"bucket": bucket, "key": key, "value": value});
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
    } else {
        println!(
            "backup {} is intact: {} entries, key `{}`, created {}",
            m.id, m.entries, m.key_id, m.created
        );
    }
    Ok(())
}

/// `tern restore`: into an empty store only (unless --force); nothing is
/// written until the whole archive has been verified.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dest = args.dest.open()?;
    let keyring = args.keys.keyring()?;
    let store = args.store.clone();
    rt.block_on(async move {
        let t0 = Instant::now();
        let kv = tokio::task::spawn_blocking(move || open_for_backup(&store)).await??;
        let check_empty = {
            let kv = kv.clone();
            tokio::task::spawn_blocking(move || kv.is_empty()).await??
        };
        if !check_empty && !args.force {
            return Err(BackupError::NotEmpty.into());
        }
        let (m, opened, _) = fetch_checked(&dest, &keyring, &args.backup)
            .await
            .with_context(|| format!("restoring backup `{}`: nothing was written", args.backup))?;
        let verified = t0.elapsed().as_secs_f64();
        let progress = bar(m.entries, "restoring");
        let n = tokio::task::spawn_blocking(move || {
            let r = snapshot::load(&kv, &opened, &progress);
            progress.finish_and_clear();
            r
        })
        .await??;
        println!(
            "restored backup {} ({}): {n} entries in {:.2} s (verified in {:.2} s)",
            m.id,
            m.created,
            t0.elapsed().as_secs_f64(),
            verified
        );
        Ok(())
    })
}

/// Open the store to back up or restore into (blocking).
fn open_for_backup(store: &StoreArgs) -> anyhow::Result<crate::store::Kv> {
    let dir = store.data_dir_or(DEFAULT_DATA_DIR);
    store.open(&dir).context(
        "an embedded store is held by its running origin: use its --backup-to schedule, or stop it first",
    )
}

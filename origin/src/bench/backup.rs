//! `tern bench backup`: backup and restore throughput on a generated store
//! of call-record-sized JSON values (results in docs/benchmarks.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::ProgressBar;
use rand::{Rng as _, SeedableRng as _};

use crate::backup::dest::Destination;
use crate::backup::keys::{Key, Keyring};
use crate::store::embedded::EmbeddedStore;
use crate::store::Kv;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Records to generate.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Scratch directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A call record as JSON, 300-500 bytes, with the variety of real ones
/// (ids and numbers differ, field names repeat: zstd sees what it would).
fn record(rng: &mut rand::rngs::StdRng, i: u64) -> Vec<u8> {
    let t0 = 1_795_000_000_000u64 + i * 1_000 + rng.gen_range(0..1000);
    let regions = ["eu-west", "us-east", "ap-south", "local-a"];
    let v = serde_json::json!({
        "call": format!("c-{:016x}", rng.gen::<u64>()),
        "room": format!("room-{}", rng.gen_range(0..50_000)),
        "started_ms": t0,
        "ended_ms": t0 + rng.gen_range(10_000..3_600_000),
        "participants": [
            {"participant": format!("p-{:016x}", rng.gen::<u64>()), "identity": format!("user{}", rng.gen_range(0..100_000)),
             "edge": "eu-west-1", "joined_ms": t0, "left_ms": t0 + rng.gen_range(1_000..600_000)},
            {"participant": format!("p-{:016x}", rng.gen::<u64>()), "identity": format!("user{}", rng.gen_range(0..100_000)),
             "edge": "us-east-1", "joined_ms": t0 + 500, "left_ms": null},
        ],
        "relays": [{"relay": format!("{}-1", regions[rng.gen_range(0..4)]), "from_ms": t0, "reason": "join"}],
        "quality": {"lost": rng.gen_range(0..500), "jitter_ms": rng.gen_range(0..40), "rtt_ms": rng.gen_range(5..300)},
    });
    serde_json::to_vec(&v).expect("json")
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let src = EmbeddedStore::open(&dir.join("src")).context("scratch store")?;
    let t = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut value_bytes = 0u64;
    let mut i = 0;
    while i < args.records {
        let mut b = src.begin()?;
        for _ in 0..10_000.min(args.records - i) {
            let v = record(&mut rng, i);
            value_bytes += v.len() as u64;
            b.set("default", &format!("call/{i:09}"), &v)?;
            i += 1;
        }
        b.commit()?;
    }
    src.flush()?;
    println!(
        "generated {} records, {:.1} MB of values (avg {} B) in {:.1} s",
        args.records,
        value_bytes as f64 / 1e6,
        value_bytes / args.records.max(1),
        t.elapsed().as_secs_f64()
    );
    let kv = Kv::from(src);

    // Reading alone, to tell store cost from archive cost.
    let t = Instant::now();
    let n = kv.dump(|_, _, _| Ok::<_, crate::store::StoreError>(()))?;
    let read_s = t.elapsed().as_secs_f64();

    let mut kb = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut kb);
    let ring = Keyring::new(vec![Key {
        id: "bench".into(),
        bytes: kb,
    }]);
    let dest_dir = dir.join("backups");
    let dest = Destination::parse(dest_dir.to_str().context("utf-8 path")?, None)?;
    let t = Instant::now();
    let m = rt.block_on(crate::backup::make(
        &kv,
        &dest,
        &ring,
        serde_json::json!({"bench": true}),
        ProgressBar::hidden(),
    ))?;
    let backup_s = t.elapsed().as_secs_f64();

    let dst = Kv::from(EmbeddedStore::open(&dir.join("dst"))?);
    let t = Instant::now();
    let (_, opened, _) = rt.block_on(crate::backup::fetch_checked(&dest, &ring, &m.id))?;
    let verify_s = t.elapsed().as_secs_f64();
    let loaded = crate::backup::snapshot::load(&dst, &opened, &ProgressBar::hidden())?;
    let restore_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(loaded == n && n == args.records, "counts differ");

    let plain = m.plain_bytes as f64 / 1e6;
    println!(
        "entries {n}, payload {plain:.1} MB, archive {:.1} MB (ratio {:.1}x)",
        m.archive_bytes as f64 / 1e6,
        m.plain_bytes as f64 / m.archive_bytes as f64
    );
    println!(
        "read only (one redb read txn):        {read_s:6.2} s  {:7.0} rec/s  {:6.1} MB/s",
        n as f64 / read_s,
        plain / read_s
    );
    println!(
        "backup (read+zstd+AES-GCM+write):     {backup_s:6.2} s  {:7.0} rec/s  {:6.1} MB/s",
        n as f64 / backup_s,
        plain / backup_s
    );
    println!("restore verify (sha256+tags+counts):  {verify_s:6.2} s");
    println!(
        "restore total (verify + load + fsync):{restore_s:6.2} s  {:7.0} rec/s  {:6.1} MB/s",
        n as f64 / restore_s,
        plain / restore_s
    );
    Ok(())
}

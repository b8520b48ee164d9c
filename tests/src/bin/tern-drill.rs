//! tern-drill: a failure drill on one machine. Starts Tern (origins, relays
//! in several regions, optionally Redis with a replica and Sentinel), runs N
//! simulated calls (tern-callsim), breaks something mid-call, and reports the
//! audio-gap distribution and how many calls were restored.
//!
//!   cargo build --release --workspace --exclude signaling-component
//!   target/release/tern-drill --calls 100 --scenario region
//!
//! Scenarios: `relay` (SIGKILL the relay carrying the most allocations),
//! `region` (SIGKILL every relay of that relay's region), `redis` (SIGKILL
//! the Redis primary; Sentinel promotes the replica), `edge` (two edges on
//! one Redis, each call with one side on each; SIGKILL the first edge: its
//! participants resume their sessions on the other while media goes on).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tern_callsim::{run_calls, SimConfig};
use tern_tests::*;

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Scenario {
    Relay,
    Region,
    Redis,
    Edge,
}

#[derive(Parser)]
#[command(name = "tern-drill")]
struct Args {
    #[arg(long, value_enum, default_value = "region")]
    scenario: Scenario,
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// Regions, each with `relays_per_region` relays.
    #[arg(long, default_value_t = 3)]
    regions: usize,
    #[arg(long, default_value_t = 1)]
    relays_per_region: usize,
    /// Seconds the calls last; the failure is injected at `kill_at`.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    kill_at: u64,
}

fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("tern-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // State: embedded, or Redis + replica + Sentinel for the redis drill.
    let mut redis_procs = Vec::new();
    let kv = if a.scenario == Scenario::Edge {
        let p = free_tcp_port();
        redis_procs.push(start_redis(p, None));
        format!("redis://127.0.0.1:{p}")
    } else if a.scenario == Scenario::Redis {
        let (p1, p2, s) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
        redis_procs.push(start_redis(p1, None));
        redis_procs.push(start_redis(p2, Some(p1)));
        wait_until(Duration::from_secs(10), || {
            redis_cli(p2, &["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"))
        })?;
        redis_procs.push(start_sentinel(s, p1, "tern", &dir));
        format!("redis+sentinel://127.0.0.1:{s}/tern")
    } else {
        "embedded".to_string()
    };
    // In the edge drill, edge-1 is the one that dies; relays heartbeat into
    // the survivor (a relay heartbeats to one signaling URL today).
    let mut doomed = (a.scenario == Scenario::Edge).then(|| Origin::start_with("edge-0", &kv));
    let origin = Origin::start_with("edge-1", &kv);
    let mut relays: BTreeMap<String, (String, Proc)> = BTreeMap::new();
    for r in 0..a.regions {
        let region = format!("region-{}", (b'a' + r as u8) as char);
        for i in 0..a.relays_per_region {
            let id = format!("{region}-{}", i + 1);
            let p = start_relay(&origin, &id, &region);
            relays.insert(id, (region.clone(), p));
        }
    }
    origin.wait_healthy_relays(relays.len(), Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // detector history

    let mut edges = vec![origin.ws_url()];
    if let Some(d) = &doomed {
        edges.insert(0, d.ws_url());
    }
    let cfg = SimConfig {
        edges,
        api_secret: API_SECRET.into(),
        calls: a.calls,
        duration: Duration::from_secs(a.seconds),
        room_prefix: format!("drill-{}", std::process::id()),
    };
    let started = Instant::now();
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(a.kill_at)).await;

    // Who carries calls now, by the directory's load figures.
    let directory = origin.relays();
    let busiest = directory
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| r["load"]["allocations"].as_u64().unwrap_or(0))
        .map(|r| r["id"].as_str().unwrap().to_string())
        .unwrap();
    let victim_region = relays[&busiest].0.clone();
    let killed_at = Instant::now();
    let killed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let what = match a.scenario {
        Scenario::Relay => {
            relays.get_mut(&busiest).unwrap().1.kill();
            format!("relay {busiest}")
        }
        Scenario::Region => {
            for (_, (region, p)) in relays.iter_mut() {
                if *region == victim_region {
                    p.kill();
                }
            }
            format!("region {victim_region}")
        }
        Scenario::Redis => {
            redis_procs[0].kill();
            "the Redis primary".to_string()
        }
        Scenario::Edge => {
            doomed
                .as_mut()
                .expect("edge drill has two edges")
                .proc
                .kill();
            "edge edge-0".to_string()
        }
    };
    eprintln!(
        "killed {what} at {:.1} s",
        (killed_at - started).as_secs_f64()
    );
    let reports = sim.await?;

    let restored = reports.iter().filter(|r| r.restored).count();
    let errors: Vec<_> = reports.iter().filter_map(|r| r.error.clone()).collect();
    let mut moved: Vec<f64> = reports
        .iter()
        .filter(|r| r.reroutes > 0)
        .map(|r| r.gap_ms)
        .collect();
    let mut all: Vec<f64> = reports
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.gap_ms)
        .collect();
    moved.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    println!(
        "scenario={:?} calls={} restored={} ({:.1}%) rerouted={} errors={}",
        a.scenario,
        reports.len(),
        restored,
        100.0 * restored as f64 / reports.len().max(1) as f64,
        moved.len(),
        errors.len()
    );
    println!(
        "audio gap, rerouted calls: p50={:.0} ms p99={:.0} ms max={:.0} ms",
        pct(&moved, 0.5),
        pct(&moved, 0.99),
        moved.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "audio gap, all calls:      p50={:.0} ms p99={:.0} ms max={:.0} ms",
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
    // Where the time goes: kill → reroute received (detection + decision)
    // and reroute → audio both ways (new allocation, rebinding).
    let mut detect: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.reroute_at_ms)
        .map(|t| t as f64 - killed_unix as f64)
        .collect();
    let mut recover: Vec<f64> = reports
        .iter()
        .filter_map(|r| Some(r.resumed_at_ms? as f64 - r.reroute_at_ms? as f64))
        .collect();
    detect.sort_by(f64::total_cmp);
    recover.sort_by(f64::total_cmp);
    println!(
        "kill → reroute:            p50={:.0} ms p99={:.0} ms",
        pct(&detect, 0.5),
        pct(&detect, 0.99)
    );
    println!(
        "reroute → audio back:      p50={:.0} ms p99={:.0} ms",
        pct(&recover, 0.5),
        pct(&recover, 0.99)
    );
    let mut sig: Vec<f64> = reports.iter().filter_map(|r| r.signaling_gap_ms).collect();
    sig.sort_by(f64::total_cmp);
    if !sig.is_empty() {
        println!(
            "signaling resumed on another edge ({} calls): p50={:.0} ms p99={:.0} ms max={:.0} ms",
            sig.len(),
            pct(&sig, 0.5),
            pct(&sig, 0.99),
            sig.last().copied().unwrap_or(f64::NAN)
        );
    }
    for e in errors.iter().take(5) {
        println!("error: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! tern-drill: a failure drill on one machine. Starts Tern (origins, relays
//! in several regions, optionally Redis with a replica and Sentinel), runs N
//! simulated calls (tern-callsim), breaks something mid-call, and reports the
//! audio-gap distribution and how many calls were restored.
//!
//!   cargo build --release --workspace --exclude signaling-component
//!   target/release/tern-drill --calls 100 --scenario region
//!
//! Scenarios: `relay` (SIGKILL the relay carrying the most allocations),
//! `region` (SIGKILL every relay of that relay's region), `cut` (cut that
//! region off the network: its relays live on and keep heartbeating, but
//! nothing reaches them; needs `--region-rtt-ms`, the cut freezes the
//! region's delay shims with SIGSTOP), `redis` (SIGKILL the Redis primary;
//! Sentinel promotes the replica), `edge` (two edges on one Redis, each call
//! with one side on each; SIGKILL the first edge: its participants resume
//! their sessions on the other while media goes on).
//!
//! `--region-rtt-ms 10,40,80` puts each region at that RTT from the callers:
//! a `tern-delay` shim in front of every relay of the region (relays
//! advertise the shim's address). The callers probe every region with STUN
//! through the shims and send the RTTs as `probes`, so calls land in the
//! nearest region and move to the next nearest when it fails. Relays
//! heartbeat to every edge (`--signaling a,b`).

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
    Cut,
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
    /// RTT of each region from the callers, ms, in region order (a, b, c…);
    /// missing or 0: no delay shim (loopback).
    #[arg(long, value_delimiter = ',')]
    region_rtt_ms: Vec<u64>,
}

/// A relay process, and the delay shim in front of it if its region has one.
struct RelayProcs {
    region: String,
    relay: Proc,
    shim: Option<Proc>,
}

/// Region `r`'s own address: a loopback alias (Linux routes all of
/// 127.0.0.0/8 to `lo`, so no set-up is needed). Its relays listen, relay and
/// are probed there, and its delay shim listens there too, so a region is
/// an address, as on a real network.
fn region_ip(r: usize) -> String {
    format!("127.0.0.{}", 11 + r)
}

/// A UDP port free on `ip`.
fn free_udp_port_on(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on the region's address")
        .port()
}

/// Start relay `id` on `ip`, heartbeating to every edge in `signaling`; with
/// `rtt_ms` > 0, behind a `tern-delay` shim adding half of it each way.
fn start_relay_at(signaling: &str, id: &str, region: &str, ip: &str, rtt_ms: u64) -> RelayProcs {
    let port = free_udp_port_on(ip);
    let shim = (rtt_ms > 0).then(|| {
        let shim_port = free_udp_port_on(ip);
        let child = std::process::Command::new(bin("tern-delay"))
            .args(["--listen", &format!("{ip}:{shim_port}")])
            .args(["--upstream", &format!("{ip}:{port}")])
            .args(["--delay-ms", &(rtt_ms / 2).to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting tern-delay");
        (
            shim_port,
            Proc {
                child,
                name: format!("delay shim for {id}"),
            },
        )
    });
    let child = std::process::Command::new(bin("tern"))
        .args(["relay", "--id", id, "--region", region])
        .args(["--listen", &format!("{ip}:{port}")])
        .args(["--signaling", signaling])
        .args(["--allow-peer", "127.0.0.0/8", "--allocate-rate-per-ip", "0"])
        .args(
            shim.as_ref()
                .map(|(p, _)| vec!["--advertise".to_string(), format!("{ip}:{p}")])
                .unwrap_or_default(),
        )
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting tern relay");
    RelayProcs {
        region: region.into(),
        relay: Proc {
            child,
            name: format!("relay {id}"),
        },
        shim: shim.map(|(_, p)| p),
    }
}

/// RTT to each region as a caller measures it: a STUN Binding to one
/// relay's advertised UDP listener per region (the best of 5), the same
/// round trip the browser SDK times.
fn probe_regions(directory: &serde_json::Value) -> BTreeMap<String, f64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut out = BTreeMap::new();
    for r in directory.as_array().into_iter().flatten() {
        let region = r["region"].as_str().unwrap_or_default().to_string();
        let Some(addr) = r["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["transport"] == "udp")
            .and_then(|l| l["address"].as_str()?.parse::<std::net::SocketAddr>().ok())
        else {
            continue;
        };
        if out.contains_key(&region) {
            continue;
        }
        let mut best = f64::INFINITY;
        for i in 0..5u8 {
            // Binding request: type 0x0001, length 0, magic cookie, tid.
            let mut req = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
            req.extend_from_slice(&[i; 12]);
            let t = Instant::now();
            if sock.send_to(&req, addr).is_err() {
                continue;
            }
            let mut buf = [0u8; 512];
            if sock.recv_from(&mut buf).is_ok() {
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if best.is_finite() {
            out.insert(region, (best * 10.0).round() / 10.0);
        }
    }
    out
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
    anyhow::ensure!(
        a.scenario != Scenario::Cut || a.region_rtt_ms.iter().any(|&r| r > 0),
        "the cut scenario needs --region-rtt-ms (it freezes the regions' delay shims)"
    );
    // In the edge drill, edge-0 is the one that dies; relays heartbeat to
    // both edges (to one at a time, moving on when it dies).
    let mut doomed = (a.scenario == Scenario::Edge).then(|| Origin::start_with("edge-0", &kv));
    let origin = Origin::start_with("edge-1", &kv);
    let signaling = doomed
        .iter()
        .chain([&origin])
        .map(|o| format!("http://{}", o.addr))
        .collect::<Vec<_>>()
        .join(",");
    let mut relays: BTreeMap<String, RelayProcs> = BTreeMap::new();
    for r in 0..a.regions {
        let region = format!("region-{}", (b'a' + r as u8) as char);
        let rtt = a.region_rtt_ms.get(r).copied().unwrap_or(0);
        for i in 0..a.relays_per_region {
            let id = format!("{region}-{}", i + 1);
            relays.insert(
                id.clone(),
                start_relay_at(&signaling, &id, &region, &region_ip(r), rtt),
            );
        }
    }
    origin.wait_healthy_relays(relays.len(), Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // detector history
    let probes = if a.region_rtt_ms.is_empty() {
        BTreeMap::new()
    } else {
        probe_regions(&origin.relays())
    };
    if !probes.is_empty() {
        eprintln!("region probes (ms): {probes:?}");
    }

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
        probes,
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
    let victim_region = relays[&busiest].region.clone();
    let killed_at = Instant::now();
    let killed_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let what = match a.scenario {
        Scenario::Relay => {
            relays.get_mut(&busiest).unwrap().relay.kill();
            format!("relay {busiest}")
        }
        Scenario::Region => {
            for r in relays.values_mut().filter(|r| r.region == victim_region) {
                r.relay.kill();
            }
            format!("region {victim_region}")
        }
        Scenario::Cut => {
            // Freeze the shims: the relays stay up and keep heartbeating to
            // signaling, but neither callers nor the edge's probes reach
            // them any more. (SIGKILL when the drill ends still works.)
            let shims = relays
                .values()
                .filter(|r| r.region == victim_region)
                .filter_map(|r| r.shim.as_ref());
            for shim in shims {
                // SAFETY: plain kill(2) on a PID we spawned and still own.
                unsafe {
                    libc::kill(shim.pid() as i32, libc::SIGSTOP);
                }
            }
            format!("region {victim_region} off the network")
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

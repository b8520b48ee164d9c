//! tern-drill: a failure drill on one machine. Starts Tern (origins, relays
//! in several regions, optionally Redis with a replica and Sentinel), runs N
//! simulated calls (tern-callsim), breaks something mid-call, and reports the
//! audio-gap distribution and how many calls were restored.
//!
//!   cargo build --release --workspace --exclude signaling-component
//!   target/release/tern-drill --calls 100 --scenario region
//!
//! Scenarios: `relay` (SIGKILL the relay carrying the most media),
//! `region` (SIGKILL every relay of that relay's region), `cut` (cut that
//! region off the network: its relays live on and keep heartbeating, but
//! nothing reaches them; needs `--region-rtt-ms`, the cut freezes the
//! region's delay shims with SIGSTOP), `redis` (SIGKILL the Redis primary;
//! Sentinel promotes the replica), `edge` (two edges on one Redis, each call
//! with one side on each; SIGKILL the first edge: its participants resume
//! their sessions on the other while media goes on), `drain` (SIGTERM the
//! relay carrying the most media: a planned drain; it reports draining,
//! keeps relaying, and its calls move make-before-break; the report counts
//! lost packets).
//!
//! `--region-rtt-ms 10,40,80` puts each region at that RTT from the callers:
//! a `tern-delay` shim in front of every relay of the region (relays
//! advertise the shim's address). The callers probe every region with STUN
//! through the shims and send the RTTs as `probes`, so calls land in the
//! nearest region and move to the next nearest when it fails. Relays
//! heartbeat to every edge (`--signaling a,b`).
//!
//! `--declared-rtt-ms 10,40,80` declares the same topology instead of
//! building it: no shims, the callers send these RTTs as their probes. Calls
//! still land in the nearest region and move to the next, but media takes
//! no extra time on the way and no shim process competes for the machine's
//! cores (what a 1,000-call drill on a small VM needs).
//!
//! Callers pre-allocate on the hot standby signaling hands out and switch to
//! it without a new allocation when `reroute` names it (or, sooner, when
//! their inbound audio stalls); `--no-standby` makes them re-allocate on
//! every reroute instead. The report counts how participants switched.
//! `--json` prints the summary as one JSON object instead of text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use tern_callsim::{run_calls, CallReport, SimConfig, Switches, STALL_AFTER};
use tern_tests::*;

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Scenario {
    Relay,
    Region,
    Redis,
    Edge,
    Cut,
    Drain,
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
    /// RTT of each region (ms, region order) that callers report as their
    /// probes, without delay shims: a declared topology.
    #[arg(long, value_delimiter = ',', conflicts_with = "region_rtt_ms")]
    declared_rtt_ms: Vec<f64>,
    /// Callers do not pre-allocate on the hot standby: every reroute
    /// allocates on the new relay (the simulator's behaviour before).
    #[arg(long)]
    no_standby: bool,
    /// Inbound silence (ms) after which a caller moves sending to its ready
    /// standby leg by itself.
    #[arg(long, default_value_t = STALL_AFTER.as_millis() as u64)]
    stall_after_ms: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Calls placed per second until all are up (the failure should come
    /// after that: --kill-at).
    #[arg(long, default_value_t = 250.0)]
    calls_per_sec: f64,
    /// Datapath threads per relay. One by default: this drill runs every
    /// relay, edge and caller on one small machine, and with one thread a
    /// call's two allocations always share it, so its media is handed over
    /// in memory (docs/relay.md, "Local delivery"). 0 = one per core.
    #[arg(long, default_value_t = 1)]
    relay_threads: usize,
    /// Niceness of the simulated callers' media threads. The callers and
    /// the system under test share this machine, and whichever side needs
    /// a burst of CPU after the failure loses it to the other. Default: 10
    /// in `edge` (the surviving edge resuming a thousand sessions is what
    /// is measured; the callers' media would otherwise take most of its
    /// CPU), 0 elsewhere (there the burst is the callers' own: two
    /// thousand of them switching relays at once). docs/benchmarks.md,
    /// "Failover drills", has both measured both ways.
    #[arg(long)]
    sim_nice: Option<i32>,
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
fn start_relay_at(
    signaling: &str,
    (id, region): (&str, &str),
    ip: &str,
    rtt_ms: u64,
    threads: usize,
) -> RelayProcs {
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
        .args(["--threads", &threads.to_string()])
        // A drained relay keeps relaying until its calls have moved (the
        // drain scenario); 1 s, the default, is for tests.
        .args(["--drain-ms", "30000"])
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

/// A distribution in ms (NaN, `null` in JSON, when empty).
#[derive(Serialize)]
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn dist(mut v: Vec<f64>) -> Dist {
    v.sort_by(f64::total_cmp);
    Dist {
        n: v.len(),
        p50: pct(&v, 0.5),
        p99: pct(&v, 0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// What a drill shows.
#[derive(Serialize)]
struct Summary {
    scenario: String,
    standby: bool,
    stall_after_ms: u64,
    calls: usize,
    restored: usize,
    rerouted: usize,
    errors: usize,
    gap_rerouted_ms: Dist,
    gap_all_ms: Dist,
    /// Where the time goes: kill → reroute received (detection + decision)
    /// and reroute → audio both ways (switch or new allocation, rebinding).
    kill_to_reroute_ms: Dist,
    reroute_to_audio_ms: Dist,
    /// How the participants moved their audio, summed over all calls.
    switches: Switches,
    /// Participants whose edge died: until their session was resumed.
    signaling_resumed_ms: Dist,
    /// Audio packets that never arrived, over every call and side
    /// (sequence numbers missing between the first and last received).
    lost_packets: u64,
    calls_with_loss: usize,
    first_errors: Vec<String>,
}

fn summarize(a: &Args, reports: &[CallReport], killed_unix: u64) -> Summary {
    let mut switches = Switches::default();
    for r in reports {
        switches += r.switches;
    }
    let errors: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
    Summary {
        scenario: format!("{:?}", a.scenario).to_lowercase(),
        standby: !a.no_standby,
        stall_after_ms: a.stall_after_ms,
        calls: reports.len(),
        restored: reports.iter().filter(|r| r.restored).count(),
        rerouted: reports.iter().filter(|r| r.reroutes > 0).count(),
        errors: errors.len(),
        gap_rerouted_ms: dist(
            reports
                .iter()
                .filter(|r| r.reroutes > 0)
                .map(|r| r.gap_ms)
                .collect(),
        ),
        gap_all_ms: dist(
            reports
                .iter()
                .filter(|r| r.error.is_none())
                .map(|r| r.gap_ms)
                .collect(),
        ),
        kill_to_reroute_ms: dist(
            reports
                .iter()
                .filter_map(|r| r.reroute_at_ms)
                .map(|t| t as f64 - killed_unix as f64)
                .collect(),
        ),
        reroute_to_audio_ms: dist(
            reports
                .iter()
                .filter_map(|r| Some(r.resumed_at_ms? as f64 - r.reroute_at_ms? as f64))
                .collect(),
        ),
        switches,
        signaling_resumed_ms: dist(reports.iter().filter_map(|r| r.signaling_gap_ms).collect()),
        lost_packets: reports.iter().map(|r| r.lost[0] + r.lost[1]).sum(),
        calls_with_loss: reports.iter().filter(|r| r.lost != [0, 0]).count(),
        first_errors: errors.into_iter().take(5).collect(),
    }
}

fn print_text(s: &Summary) {
    println!(
        "scenario={} standby={} calls={} restored={} ({:.1}%) rerouted={} errors={}",
        s.scenario,
        if s.standby { "on" } else { "off" },
        s.calls,
        s.restored,
        100.0 * s.restored as f64 / s.calls.max(1) as f64,
        s.rerouted,
        s.errors
    );
    let (g, a) = (&s.gap_rerouted_ms, &s.gap_all_ms);
    println!(
        "audio gap, rerouted calls: p50={:.0} ms p99={:.0} ms max={:.0} ms",
        g.p50, g.p99, g.max
    );
    println!(
        "audio gap, all calls:      p50={:.0} ms p99={:.0} ms max={:.0} ms",
        a.p50, a.p99, a.max
    );
    println!(
        "kill → reroute:            p50={:.0} ms p99={:.0} ms",
        s.kill_to_reroute_ms.p50, s.kill_to_reroute_ms.p99
    );
    println!(
        "reroute → audio back:      p50={:.0} ms p99={:.0} ms",
        s.reroute_to_audio_ms.p50, s.reroute_to_audio_ms.p99
    );
    let w = &s.switches;
    println!(
        "switches (participants):   onto prepared standby={} fresh allocation={} stall switch={}",
        w.prepared, w.fresh, w.stall
    );
    println!(
        "audio packets lost:        {} (in {} calls)",
        s.lost_packets, s.calls_with_loss
    );
    let sig = &s.signaling_resumed_ms;
    if sig.n > 0 {
        println!(
            "signaling resumed on another edge ({} calls): p50={:.0} ms p99={:.0} ms max={:.0} ms",
            sig.n, sig.p50, sig.p99, sig.max
        );
    }
    for e in &s.first_errors {
        println!("error: {e}");
    }
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
    // Every simulated caller comes from loopback: one address for
    // thousands of sockets, which the per-address limit is not for.
    let edge = |name: &str| Origin::start_full(name, &kv, None, None, &["--sockets-per-ip", "0"]);
    let mut doomed = (a.scenario == Scenario::Edge).then(|| edge("edge-0"));
    let origin = edge("edge-1");
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
                start_relay_at(
                    &signaling,
                    (&id, &region),
                    &region_ip(r),
                    rtt,
                    a.relay_threads,
                ),
            );
        }
    }
    origin.wait_healthy_relays(relays.len(), Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_millis(1500)).await; // detector history
    let probes = if !a.declared_rtt_ms.is_empty() {
        (0..a.regions)
            .zip(&a.declared_rtt_ms)
            .map(|(r, &rtt)| (format!("region-{}", (b'a' + r as u8) as char), rtt))
            .collect()
    } else if a.region_rtt_ms.is_empty() {
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
        no_standby: a.no_standby,
        stall_after: Duration::from_millis(a.stall_after_ms),
        ramp: Duration::from_secs_f64(a.calls as f64 / a.calls_per_sec),
        nice: a
            .sim_nice
            .unwrap_or(if a.scenario == Scenario::Edge { 10 } else { 0 }),
    };
    anyhow::ensure!(
        cfg.ramp < Duration::from_secs(a.kill_at),
        "calls are still being placed at --kill-at: raise --calls-per-sec or --kill-at"
    );
    let started = Instant::now();
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(a.kill_at)).await;

    // Who carries calls now, by the directory's load figures: media packets
    // a second (hot-standby allocations are as many as the primary ones but
    // carry nothing), then allocations.
    let directory = origin.relays();
    let busiest = directory
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| {
            let load = |k: &str| r["load"][k].as_u64().unwrap_or(0);
            (load("pps"), load("allocations"))
        })
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
        Scenario::Drain => {
            let pid = relays[&busiest].relay.pid();
            // SAFETY: plain kill(2) on a PID we spawned and still own.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            format!("relay {busiest} (SIGTERM: drain)")
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
        "killed {what} at {:.1} s (unix ms {killed_unix}, to line up with the edges' logs)",
        (killed_at - started).as_secs_f64()
    );
    let reports = sim.await?;

    let summary = summarize(&a, &reports, killed_unix);
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_text(&summary);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

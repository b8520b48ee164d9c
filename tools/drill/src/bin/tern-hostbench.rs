//! `tern-hostbench`: the same signaling workload against any protocol v1
//! host (origin, origin hosting the Spin artifact, `wrangler dev`), so their
//! figures compare: join→joined and signal→delivered latency seen by a
//! client, and, with `--pid`, the host's CPU time per frame it handled.
//!
//! Workload: `--rooms` rooms one after another; in each, two participants
//! join, exchange `--signals` signals each way, ping, and leave. Frames are
//! sent one at a time (latency, not throughput, is the question: a
//! serverless host is billed and judged per request).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;
use tern_tests::conformance::room_url;
use tern_tests::{token, Client};

#[derive(Parser)]
#[command(about = "Latency and CPU per frame of a protocol v1 host")]
struct Args {
    /// Signaling URL: ws://…/v1/signal or http://…/v1/http.
    #[arg(long)]
    url: String,
    /// Rooms to run (two participants each).
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// Signals each way per room.
    #[arg(long, default_value_t = 5)]
    signals: usize,
    /// Host processes whose CPU time to count (user + system, from /proc);
    /// repeat for several (e.g. workerd and its parent).
    #[arg(long)]
    pid: Vec<u32>,
    /// A label for the output line.
    #[arg(long, default_value = "host")]
    label: String,
}

fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading the CPU time of pid {pid}"))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    }
    Ok(total)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_start = cpu_ticks(&args.pid)?;
    let started = Instant::now();
    let mut joins = Vec::new();
    let mut signals = Vec::new();
    let mut frames = 0u64;
    for r in 0..args.rooms {
        let room = format!("bench-{}-{r}", std::process::id());
        // WebSocket URLs name the room, as the SDK does (the Worker routes by it).
        let url = room_url(&args.url, &room);
        let mut a = Client::connect(&url).await;
        let mut b = Client::connect(&url).await;
        let mut joined = Vec::new();
        for (c, who) in [(&mut a, "alice"), (&mut b, "bob")] {
            let t = Instant::now();
            c.send(json!({"type":"join","room":room,"token":token(&room, who, 600)}))
                .await;
            let j = c.expect("joined").await;
            joins.push(t.elapsed());
            joined.push(j);
        }
        a.expect("peer-joined").await;
        let (pa, pb) = (&joined[0]["participant"], &joined[1]["participant"]);
        for i in 0..args.signals {
            let t = Instant::now();
            a.send(json!({"type":"signal","to":pb,"data":{"n":i}}))
                .await;
            b.expect("signal").await;
            signals.push(t.elapsed());
            let t = Instant::now();
            b.send(json!({"type":"signal","to":pa,"data":{"n":i}}))
                .await;
            a.expect("signal").await;
            signals.push(t.elapsed());
        }
        a.send(json!({"type":"ping","id":1})).await;
        a.expect("pong").await;
        for c in [&mut a, &mut b] {
            c.send(json!({"type":"leave"})).await;
            c.skip_to("left").await;
        }
        // join ×2, signal ×2n, ping, leave ×2
        frames += 5 + 2 * args.signals as u64;
        a.close().await;
        b.close().await;
    }
    let wall = started.elapsed();
    joins.sort();
    signals.sort();
    let cpu = if args.pid.is_empty() {
        "n/a".to_string()
    } else {
        let secs = (cpu_ticks(&args.pid)? - cpu_start) as f64 / ticks_per_sec;
        format!("{:.1} us", secs * 1e6 / frames as f64)
    };
    println!(
        "{}: {} rooms, {frames} frames in {:.1} s; join->joined p50 {} ms p99 {} ms; \
         signal->delivered p50 {} ms p99 {} ms; host CPU per frame {cpu}",
        args.label,
        args.rooms,
        wall.as_secs_f64(),
        ms(pct(&joins, 0.5)),
        ms(pct(&joins, 0.99)),
        ms(pct(&signals, 0.5)),
        ms(pct(&signals, 0.99)),
    );
    Ok(())
}

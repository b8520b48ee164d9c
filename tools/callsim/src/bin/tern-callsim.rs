//! tern-callsim: run N simulated two-party calls against Tern and print one
//! JSON line per call plus a summary.

use std::time::Duration;

use clap::Parser;
use tern_callsim::{run_calls, SimConfig, STALL_AFTER};

#[derive(Parser)]
#[command(name = "tern-callsim", version)]
struct Args {
    /// Signaling URL(s), e.g. ws://127.0.0.1:8080/v1/signal (repeatable).
    #[arg(long = "edge", required = true)]
    edges: Vec<String>,
    /// The app's API secret (room tokens).
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    api_secret: String,
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Seconds each call lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Do not pre-allocate on the hot standby; re-allocate on every reroute.
    #[arg(long)]
    no_standby: bool,
    /// Inbound silence (ms) after which sending moves to the standby leg.
    #[arg(long, default_value_t = STALL_AFTER.as_millis() as u64)]
    stall_after_ms: u64,
    /// Calls placed per second until all are up.
    #[arg(long, default_value_t = 250.0)]
    calls_per_sec: f64,
    /// Niceness of the media threads (positive: yield the CPU to servers
    /// sharing this machine first).
    #[arg(long, default_value_t = 0)]
    nice: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = SimConfig {
        edges: a.edges,
        api_secret: a.api_secret,
        calls: a.calls,
        duration: Duration::from_secs(a.seconds),
        room_prefix: format!("sim-{}", rand::random::<u32>()),
        probes: Default::default(),
        no_standby: a.no_standby,
        stall_after: Duration::from_millis(a.stall_after_ms),
        ramp: Duration::from_secs_f64(a.calls as f64 / a.calls_per_sec),
        nice: a.nice,
    };
    let reports = run_calls(&cfg).await;
    for r in &reports {
        println!("{}", serde_json::to_string(r)?);
    }
    let ok = reports.iter().filter(|r| r.restored).count();
    eprintln!(
        "{ok} of {} calls have audio both ways at the end",
        reports.len()
    );
    Ok(())
}

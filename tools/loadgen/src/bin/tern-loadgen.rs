//! tern-loadgen: drive a TURN relay (or the bare forwarder) with pairs of
//! Opus-like streams and report delivery, loss, latency, setup rate and, with
//! `--relay-pid`, the relay's CPU per packet and memory per allocation.
//!
//!   tern-loadgen --server 127.0.0.1:3478 --secret S --pairs 100 --duration 10
//!   tern-loadgen --server 127.0.0.1:3478 --secret S --pairs 500 --search
//!   tern-loadgen forwarder --listen 127.0.0.1:3479      # the bare floor
//!   tern-loadgen --target bare --server 127.0.0.1:3479 --pairs 100

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tern_loadgen::forwarder::Forwarder;
use tern_loadgen::{
    procstat, Harness, SearchConfig, SearchReport, SetupConfig, SetupReport, StepConfig,
    StepReport, Target,
};

#[derive(Parser)]
#[command(name = "tern-loadgen", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    gen: GenArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bare recvmmsg/sendmmsg forwarder (the benchmark's floor).
    Forwarder {
        #[arg(long, default_value = "127.0.0.1:3479")]
        listen: SocketAddrV4,
        /// Hand packets between two of its own allocations over in memory
        /// (the floor for tern-relay's default path) instead of through the
        /// kernel.
        #[arg(long)]
        local_delivery: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    /// A TURN server with REST credentials (tern-relay, coturn).
    Turn,
    /// `tern-loadgen forwarder`.
    Bare,
}

#[derive(Args)]
struct GenArgs {
    /// Relay listener address.
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    #[arg(long, value_enum, default_value = "turn")]
    target: TargetKind,
    /// TURN REST shared secret (coturn's static-auth-secret).
    #[arg(long, env = "TERN_RELAY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Client pairs; each pair is two allocations and two streams.
    #[arg(long, default_value_t = 10)]
    pairs: usize,
    /// Packets per second per stream.
    #[arg(long, default_value_t = 50.0)]
    pps: f64,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 160)]
    size: usize,
    /// Seconds of traffic (0: set up, hold, report memory, no traffic).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Find the highest zero-loss aggregate rate instead of one fixed run.
    #[arg(long)]
    search: bool,
    /// Aggregate packets/s the search starts at.
    #[arg(long, default_value_t = 10_000.0)]
    search_start: f64,
    /// Aggregate packets/s the search never exceeds.
    #[arg(long, default_value_t = 400_000.0)]
    search_max: f64,
    /// Bisection stops when the bounds are this close (relative).
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Tries per rate in a search before it counts as lossy.
    #[arg(long, default_value_t = 2)]
    attempts: u32,
    /// In a search, a step also needs p99 latency at or below this (µs).
    #[arg(long)]
    max_p99_us: Option<f64>,
    /// Seconds per search step.
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    /// Pid of the relay, for CPU (utime+stime) and RSS accounting.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Seconds to hold the allocations idle after setup before reading RSS.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Allocate/bind requests in flight at once during setup.
    #[arg(long, default_value_t = 64)]
    setup_window: usize,
    /// Milliseconds to wait for packets in flight after the last send.
    #[arg(long, default_value_t = 300)]
    drain_ms: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct MemoryReport {
    rss_before_kib: u64,
    rss_after_kib: u64,
    bytes_per_allocation: f64,
}

#[derive(Serialize)]
struct Report {
    target: &'static str,
    server: SocketAddr,
    pairs: usize,
    streams: usize,
    size: usize,
    setup: SetupReport,
    memory: Option<MemoryReport>,
    run: Option<StepReport>,
    search: Option<SearchReport>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    match cli.cmd {
        Some(Cmd::Forwarder {
            listen,
            local_delivery,
        }) => {
            let mut f = Forwarder::bind(listen)
                .context("binding the forwarder")?
                .local_delivery(local_delivery);
            eprintln!("tern-loadgen forwarder listening on {}", f.local_addr()?);
            f.run().context("forwarder loop")
        }
        None => generate(cli.gen),
    }
}

fn generate(a: GenArgs) -> anyhow::Result<()> {
    let target = match a.target {
        TargetKind::Turn => Target::Turn {
            secret: a
                .secret
                .clone()
                .context("--secret (or TERN_RELAY_SECRET) is required for a TURN target")?
                .into_bytes(),
        },
        TargetKind::Bare => Target::Bare,
    };
    if a.pps <= 0.0 || a.duration < 0.0 {
        bail!("--pps must be positive and --duration not negative");
    }
    let rss_before = a.relay_pid.map(procstat::rss_kib).transpose()?;
    let mut h = Harness::setup(&SetupConfig {
        server: a.server,
        target,
        pairs: a.pairs,
        setup_window: a.setup_window,
        setup_timeout: Duration::from_secs(120),
    })
    .context("setting up allocations")?;
    if !a.json {
        let s = &h.setup;
        eprintln!(
            "setup: {} allocations in {:.2} s ({:.0}/s), channels bound in {:.2} s",
            s.allocations, s.allocate_secs, s.allocations_per_sec, s.bind_secs
        );
    }
    if a.hold > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(a.hold));
    }
    let memory = match (a.relay_pid, rss_before) {
        (Some(pid), Some(before)) => {
            let after = procstat::rss_kib(pid)?;
            Some(MemoryReport {
                rss_before_kib: before,
                rss_after_kib: after,
                bytes_per_allocation: (after as f64 - before as f64) * 1024.0 / h.clients() as f64,
            })
        }
        _ => None,
    };
    let step = StepConfig {
        rate: a.pps * h.clients() as f64,
        duration: Duration::from_secs_f64(a.duration),
        size: a.size,
        drain: Duration::from_millis(a.drain_ms),
        relay_pid: a.relay_pid,
    };
    let (mut run, mut search) = (None, None);
    if a.search {
        let cfg = SearchConfig {
            start_pps: a.search_start,
            max_pps: a.search_max,
            resolution: a.resolution,
            settle: Duration::from_millis(500),
            attempts: a.attempts,
            max_p99_us: a.max_p99_us,
        };
        let step = StepConfig {
            duration: Duration::from_secs_f64(a.step_secs),
            ..step
        };
        let json = a.json;
        search = Some(h.search(&step, &cfg, |r| {
            if !json {
                eprintln!("{}", step_line(r));
            }
        })?);
    } else if a.duration > 0.0 {
        run = Some(h.step(&step, 1)?);
    }
    h.release(Duration::from_secs(5))
        .context("releasing allocations")?;
    let report = Report {
        target: match a.target {
            TargetKind::Turn => "turn",
            TargetKind::Bare => "bare",
        },
        server: a.server,
        pairs: a.pairs,
        streams: h.clients(),
        size: a.size,
        setup: h.setup,
        memory,
        run,
        search,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn step_line(r: &StepReport) -> String {
    let cpu = r
        .relay_cpu_secs_per_mpkt
        .map(|c| format!("  relay {c:.2} CPU-s/Mpkt"))
        .unwrap_or_default();
    format!(
        "offered {:>9.0} pps  sent {:>9.0} pps  delivered {:>9}  lost {:>7}  p50 {:>6.0} µs  p99 {:>7.0} µs  max {:>8.0} µs{}{}",
        r.offered_pps,
        r.sent_pps,
        r.delivered,
        r.lost,
        r.p50_us,
        r.p99_us,
        r.max_us,
        cpu,
        if r.generator_limited { "  (generator-limited)" } else { "" }
    )
}

fn print_table(r: &Report) {
    println!(
        "target {} at {}: {} pairs, {} streams, {} B payload",
        r.target, r.server, r.pairs, r.streams, r.size
    );
    println!(
        "  allocation setup   {:.0} allocations/s ({} in {:.2} s)",
        r.setup.allocations_per_sec, r.setup.allocations, r.setup.allocate_secs
    );
    if let Some(m) = &r.memory {
        println!(
            "  relay RSS          {} → {} KiB, {:.0} B per allocation",
            m.rss_before_kib, m.rss_after_kib, m.bytes_per_allocation
        );
    }
    if let Some(s) = &r.run {
        println!("  run                {}", step_line(s));
        if let Some(c) = s.relay_cpu_secs {
            println!("  relay CPU          {c:.2} s");
        }
    }
    if let Some(s) = &r.search {
        match s.zero_loss_pps {
            Some(p) => println!("  zero-loss rate     {p:.0} pps"),
            None => println!("  zero-loss rate     none (the first step already lost packets)"),
        }
        if s.reached_max {
            println!("  (every rate up to --search-max was clean: raise it for the real ceiling)");
        }
        if s.generator_limited {
            println!(
                "  (bounded by the generator: the next rate up was clean but sent short; the relay carries at least this)"
            );
        }
        if let Some(b) = &s.best {
            println!("  at that rate       {}", step_line(b));
        }
    }
}

/// Every allocation is a socket: lift the soft fd limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

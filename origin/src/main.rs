//! `tern`: the origin. Hosts the signaling component, terminates WebSockets,
//! keeps state in the embedded store or Redis, and in `tern up` runs local
//! relays. docs/architecture.md shows how the rooms below fit together.
//!
//! This file is the command line's root only; each subcommand lives in
//! [`cmd`], one file each, and the rooms it drives are:
//! - [`edge`]: a running signaling edge (WebSocket endpoint, HTTP routes,
//!   lanes of component calls, the housekeeping tick, the cross-edge bus);
//! - [`host`]: the wasmtime host of the signaling component;
//! - [`store`]: where state lives (embedded redb or Redis) behind one
//!   interface;
//! - [`probe`]: active STUN probes of relays and their verdicts;
//! - [`backup`], [`gateway`] (`tern gateway`), [`spin`] (`tern spin`) and
//!   [`bench`].

mod backup;
mod bench;
mod cmd;
mod edge;
mod gateway;
mod host;
mod probe;
mod spin;
mod store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: voice calls that survive failures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on one machine: signaling, the embedded store, and two
    /// local relay regions. Development and demo defaults.
    Up(cmd::up::UpArgs),
    /// Run an origin (signaling edge) only.
    Serve(cmd::serve::ServeCommand),
    // Boxed: its many flags make it far larger than the other variants.
    /// Run a TURN relay that heartbeats into signaling (same as `tern-relay`).
    Relay(Box<edge_relay::server::Args>),
    /// Print a room token.
    Token(cmd::token::TokenArgs),
    /// Benchmarks (results go to docs/benchmarks.md).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Call records: list, filter and export.
    Calls(cmd::calls::CallsArgs),
    /// Encrypted backups of Tern's state: make one, list them.
    Backup(cmd::backup::BackupArgs),
    /// Restore a backup into an empty store.
    Restore(cmd::backup::RestoreArgs),
    /// Terminate browser WebSockets and bridge them to a signaling host that
    /// speaks only the HTTP transport (a Spin app).
    Gateway(cmd::gateway::GatewayArgs),
    /// Serve the Spin app in spin.toml without Spin: the component's
    /// wasi:http export, one instance per request, origin's key-value store.
    Spin(cmd::spin::SpinArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up(args) => cmd::runtime()?.block_on(cmd::up::run(args)),
        Command::Serve(args) => cmd::runtime()?.block_on(cmd::serve::run(args)),
        Command::Relay(args) => cmd::runtime()?.block_on(edge_relay::server::run(*args)),
        Command::Token(args) => cmd::token::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Calls(args) => cmd::calls::run(args),
        Command::Backup(args) => cmd::backup::run(args),
        Command::Restore(args) => cmd::backup::restore(args),
        Command::Gateway(args) => cmd::runtime()?.block_on(cmd::gateway::run(args)),
        Command::Spin(args) => cmd::runtime()?.block_on(cmd::spin::run(args)),
    }
}

//! `tern bench signaling|backup`: the benchmarks built into the binary
//! (results and their commands: docs/benchmarks.md).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Per-frame cost through the wasm component and join→joined latency.
    Signaling(crate::bench::signaling::BenchArgs),
    /// Backup and restore throughput on generated call records.
    Backup(crate::bench::backup::BenchArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Signaling(args) => crate::bench::signaling::run(args),
        BenchCommand::Backup(args) => crate::bench::backup::run(args),
    }
}

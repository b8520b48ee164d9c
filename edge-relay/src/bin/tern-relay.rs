//! tern-relay: a standalone Tern TURN relay (`tern relay` in the `tern`
//! binary is the same server).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    edge_relay::server::run(edge_relay::server::Args::parse()).await
}

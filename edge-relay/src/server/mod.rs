//! The relay server: the tokio driver around the sans-IO TURN engine, its
//! heartbeats and its shutdown. Shared by the `tern-relay` binary and
//! `tern relay` (origin's binary), so a relay is one function call away.
//! Driver code, so errors are `anyhow` like in a binary.

mod cli;
mod heartbeat;
mod udp;

pub use cli::Args;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::{Config, PeerPolicy, Relay};
use anyhow::Context;
use heartbeat::{Heartbeater, Shared};

/// Run a relay until SIGTERM/ctrl-c, then drain and return.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!args.secret.is_empty(), "--secret must not be empty");

    let mut config = Config::new(
        args.realm.clone(),
        args.secret.as_bytes().to_vec(),
        rand::random(),
    );
    config.policy = PeerPolicy::new(args.allow_peer.clone());
    config.max_allocations = args.max_allocations;
    config.rfc5766_channels = args.rfc5766_channels;
    let relay = Relay::new(config);

    let shared = Arc::new(Shared::default());
    let relay_ip = args.relay_ip.unwrap_or(args.listen.ip());
    let driver = udp::Driver::bind(
        relay,
        args.listen,
        relay_ip,
        args.relay_ports.clone(),
        shared.clone(),
    )
    .await?;
    let local = driver.local_addr();
    let advertise = args.advertise.unwrap_or(local);
    tracing::info!(
        id = %args.id, region = %args.region, listen = %local, %relay_ip, %advertise,
        allow_peer = ?args.allow_peer, "tern-relay listening (udp)"
    );

    if let Some(base) = &args.signaling {
        let hb = Heartbeater {
            url: format!("{}/v1/relays/heartbeat", base.trim_end_matches('/')),
            secret: args.secret.as_bytes().to_vec(),
            id: args.id.clone(),
            region: args.region.clone(),
            advertise: advertise.to_string(),
            interval: Duration::from_millis(args.heartbeat_ms.max(10)),
            shared: shared.clone(),
        };
        tokio::spawn(hb.run());
    } else {
        tracing::info!("no --signaling: not sending heartbeats");
    }

    // Stop after a signal: announce draining (the heartbeat task sends it at
    // once), keep relaying for --drain-ms so calls can move, then exit.
    let drain = Duration::from_millis(args.drain_ms);
    let shared_stop = shared.clone();
    let stop = async move {
        shutdown_signal().await;
        tracing::info!(?drain, "shutdown requested: draining");
        shared_stop.draining.store(true, Ordering::Relaxed);
        shared_stop.wake.notify_one();
        tokio::time::sleep(drain).await;
    };
    driver.run(stop).await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).context("installing SIGTERM handler");
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "falling back to Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

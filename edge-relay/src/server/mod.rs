//! The relay server: the tokio driver around the sans-IO TURN engine, its
//! listeners (UDP, TCP, TLS), heartbeats, admin endpoint and shutdown.
//! Shared by the `tern-relay` binary and `tern relay` (origin's binary), so a
//! relay is one function call away. Driver code, so errors are `anyhow` like
//! in a binary.
//!
//! Modules: `cli` (flags + config file), `driver` (starts the datapath
//! shards and routes to them), `shard` (one core's epoll loop: its engine,
//! UDP listener socket and relayed sockets), `stream` (TCP/TLS framing),
//! `tls`, `heartbeat`, `admin` + `metrics`.

mod admin;
mod cli;
mod driver;
mod heartbeat;
mod inbox;
mod metrics;
mod shard;
mod stream;
pub mod tls;

pub use cli::{Args, Settings};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::{Bandwidth, Config, PeerPolicy};
use anyhow::Context;
use heartbeat::{Heartbeater, Shared};
use tern_common::relay::Listener;
use tokio::net::TcpListener;

/// Where clients may reach the UDP listener: its bound address, the
/// address published for it, and the relayed IP on its port (a wildcard
/// listener answers there too). Peers there are refused (see
/// [`Config::own_addresses`]).
fn own_udp_addresses(s: &Settings) -> Vec<SocketAddr> {
    let port = s.listen.port();
    let mut own = vec![s.listen, SocketAddr::new(s.relay_ip, port)];
    own.extend(s.relay_ip6.map(|ip| SocketAddr::new(ip, port)));
    own.extend(s.advertise);
    own.retain(|a| a.port() != 0);
    own.sort_unstable();
    own.dedup();
    own
}

/// Run a relay until SIGTERM/ctrl-c or `POST /drain`, then drain and return.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let s = Settings::resolve(args)?;

    let mut config = Config::new(
        s.realm.clone(),
        s.secret.as_bytes().to_vec(),
        rand::random(),
    );
    config.previous_secret = s.previous_secret.as_ref().map(|p| p.as_bytes().to_vec());
    config.policy = PeerPolicy::new(s.allow_peer.clone());
    config.max_allocations = s.max_allocations;
    config.max_allocations_per_user = s.max_allocations_per_user;
    config.allocate_rate_per_ip = s.allocate_rate_per_ip;
    config.max_permissions = s.max_permissions;
    config.max_channels = s.max_channels;
    config.own_addresses = own_udp_addresses(&s);
    config.bandwidth = (s.bandwidth_kbps > 0).then(|| Bandwidth::kbps(s.bandwidth_kbps));
    config.rfc5766_channels = s.rfc5766_channels;
    config.alternate = s.alternate;
    config.local_delivery = s.local_delivery;
    let shared = Arc::new(Shared::default());
    let addrs = shard::RelayedAddrs {
        ip: s.relay_ip,
        ip6: s.relay_ip6,
        ports: s.relay_ports.clone(),
    };
    let driver = driver::Driver::start(config, s.threads, s.listen, addrs, shared.clone())?;
    let local = driver.local_addr();
    let advertise = s.advertise.unwrap_or(local);
    let mut listeners = vec![Listener {
        transport: "udp".into(),
        address: advertise.to_string(),
    }];

    // Stream listeners publish the advertised IP with their own port unless
    // told otherwise.
    let published = |explicit: Option<SocketAddr>, bound: SocketAddr| {
        explicit.unwrap_or_else(|| match s.advertise {
            Some(a) => SocketAddr::new(a.ip(), bound.port()),
            None => bound,
        })
    };
    // One budget of stream connections per client IP across TCP and TLS.
    let streams = Arc::new(stream::StreamLimits::new(s.max_connections_per_ip));
    if let Some(addr) = s.listen_tcp {
        let l = listen_stream(addr).with_context(|| format!("binding --listen-tcp {addr}"))?;
        let bound = l.local_addr()?;
        listeners.push(Listener {
            transport: "tcp".into(),
            address: published(s.advertise_tcp, bound).to_string(),
        });
        tracing::info!(listen = %bound, "TURN over TCP");
        tokio::spawn(stream::serve(l, None, driver.shards(), streams.clone()));
    }
    if let Some(addr) = s.listen_tls {
        let (cert, key) = (
            s.tls_cert.as_ref().expect("checked by Settings"),
            s.tls_key.as_ref().expect("checked by Settings"),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(cert, key)?);
        let l = listen_stream(addr).with_context(|| format!("binding --listen-tls {addr}"))?;
        let bound = l.local_addr()?;
        listeners.push(Listener {
            transport: "tls".into(),
            address: published(s.advertise_tls, bound).to_string(),
        });
        tracing::info!(listen = %bound, "TURN over TLS");
        tokio::spawn(stream::serve(
            l,
            Some(acceptor),
            driver.shards(),
            streams.clone(),
        ));
    }
    if let Some(addr) = s.admin {
        let l = admin::bind(addr).await?;
        tracing::info!(admin = %l.local_addr()?, "admin listening (/metrics, /healthz, POST /drain)");
        let a = admin::Admin {
            shared: shared.clone(),
            shards: driver.shards(),
            streams: streams.clone(),
            token: s.admin_token.as_deref().map(Arc::from),
        };
        tokio::spawn(a.serve(l));
    }
    tracing::info!(
        id = %s.id, region = %s.region, listen = %local, relay_ip = %s.relay_ip,
        relay_ip6 = ?s.relay_ip6, ?listeners, allow_peer = ?s.allow_peer, threads = s.threads,
        "tern-relay listening"
    );

    if let Some(base) = &s.signaling {
        let hb = Heartbeater {
            urls: base
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(|b| format!("{}/v1/relays/heartbeat", b.trim_end_matches('/')))
                .collect(),
            secret: s.secret.as_bytes().to_vec(),
            id: s.id.clone(),
            region: s.region.clone(),
            listeners,
            interval: Duration::from_millis(s.heartbeat_ms.max(10)),
            threads: s.threads as u32,
            shared: shared.clone(),
            standby: s.standby,
            client: heartbeat::client(s.signaling_ca.as_deref())?,
        };
        tokio::spawn(hb.run());
    } else {
        tracing::info!("no --signaling: not sending heartbeats");
        shared.draining_announced.store(true, Ordering::Relaxed);
    }

    // Drain after a signal or POST /drain: announce draining (the heartbeat
    // task sends it at once), refuse or redirect new Allocates, keep relaying
    // for existing allocations until none are left (and signaling has been
    // told) or --drain-ms passes, then exit.
    let drain = Duration::from_millis(s.drain_ms);
    let shared_stop = shared.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = shared_stop.drain_requested.notified() => {}
        }
        tracing::info!(?drain, "drain requested");
        shared_stop.draining.store(true, Ordering::Relaxed);
        shared_stop.wake.notify_one();
        let deadline = tokio::time::Instant::now() + drain;
        loop {
            let done = shared_stop.allocations.load(Ordering::Relaxed) == 0
                && shared_stop.draining_announced.load(Ordering::Relaxed);
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(
            allocations = shared_stop.allocations.load(Ordering::Relaxed),
            "drain finished"
        );
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

/// Connections the kernel queues for `accept` on a TCP listener (the
/// relay's TCP and TLS listeners, and the origin's). When a relay or an
/// edge dies, all its clients arrive at the survivors at once; with the
/// standard library's 128 the queue overflowed, and every dropped SYN cost
/// its caller a one-second retransmission (docs/failover.md). The kernel
/// caps it at net.core.somaxconn.
const ACCEPT_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with an accept queue of [`ACCEPT_BACKLOG`].
pub fn listen_stream(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's bind does: a restarted relay rebinds its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

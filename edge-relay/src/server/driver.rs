//! The driver: owns the sockets and the clock, feeds the engines, sends what
//! they say. No TURN logic lives here.
//!
//! The datapath is one [`Shard`] per thread (by default one per core), each
//! an epoll loop with its own engine, its own socket on the UDP listen
//! address and the relayed sockets of its allocations (see `shard.rs` for the
//! loop). The kernel spreads clients over the shards by 5-tuple
//! (SO_REUSEPORT), so each client's packets always reach the same shard. The
//! shards share one quota [`Ledger`], so per-user and total limits are per
//! process. TCP/TLS connections run as tokio tasks and are pinned to a shard
//! by a hash of their 5-tuple ([`super::inbox::Shards::send`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::quota::Ledger;
use crate::{Config, Relay};

use super::heartbeat::Shared;
use super::inbox::Shards;
use super::shard::{RelayedAddrs, Shard};

pub(crate) struct Driver {
    shards: Shards,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    local: SocketAddr,
}

impl Driver {
    /// Bind the UDP listener (`threads` sockets sharing the address) and
    /// start the shards.
    pub(crate) fn start(
        config: Config,
        threads: usize,
        listen: SocketAddr,
        addrs: RelayedAddrs,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let sockets = bind_listeners(listen, threads)?;
        let local = sockets[0].local_addr()?;
        let ledger = Ledger::new(config.allocate_rate_per_ip, config.nonce_key);
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        let mut joins = Vec::with_capacity(threads);
        for (i, socket) in sockets.into_iter().enumerate() {
            let relay = Relay::with_ledger(config.clone(), ledger.clone());
            let (shard, handle) =
                Shard::new(relay, socket, addrs.clone(), shared.clone(), stop.clone())
                    .context("starting a datapath shard")?;
            handles.push(handle);
            joins.push(
                std::thread::Builder::new()
                    .name(format!("relay-shard-{i}"))
                    .spawn(move || shard.run())
                    .context("spawning a datapath thread")?,
            );
        }
        Ok(Driver {
            shards: Shards::new(handles),
            threads: joins,
            stop,
            local,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn shards(&self) -> Shards {
        self.shards.clone()
    }

    /// Serve until `stop` resolves, then stop every shard and wait for them.
    pub(crate) async fn run(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        self.stop.store(true, Ordering::Relaxed);
        self.shards.wake_all();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        tracing::info!("driver stopped");
    }
}

/// `n` non-blocking UDP sockets on one address. With more than one they
/// share it through SO_REUSEPORT, which would also let another process of
/// the same user join the group unnoticed and take a share of our clients;
/// so an explicit port is first bound plainly, which fails if anyone holds
/// it, and only then shared among our own sockets.
fn bind_listeners(listen: SocketAddr, n: usize) -> anyhow::Result<Vec<UdpSocket>> {
    let plain =
        UdpSocket::bind(listen).with_context(|| format!("binding TURN listener on {listen}"))?;
    if n == 1 {
        plain.set_nonblocking(true)?;
        deep_receive_buffer(&plain);
        return Ok(vec![plain]);
    }
    // The address is ours and free (for port 0: the kernel's pick). `plain`
    // holds it without SO_REUSEPORT, so let go and take it again, shared.
    let addr = plain.local_addr()?;
    drop(plain);
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())
            .with_context(|| format!("binding TURN listener on {addr}"))?;
        let s: UdpSocket = s.into();
        deep_receive_buffer(&s);
        sockets.push(s);
    }
    Ok(sockets)
}

/// Receive buffer asked for on each listen socket (the kernel caps it at
/// net.core.rmem_max; raise that on a relay host). Everything every client
/// of a thread sends arrives on one socket: at the default (~208 KiB, about
/// 250 small datagrams) a thread descheduled for 2-3 ms at 100,000 packets/s
/// overflows it and drops media and signaling's probes alike. Queueing a few
/// milliseconds through a hiccup is better for voice than losing them.
const LISTENER_RECEIVE_BUFFER: usize = 4 << 20;

fn deep_receive_buffer(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    if let Err(e) = tern_netio::set_receive_buffer(s.as_raw_fd(), LISTENER_RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the listener's receive buffer");
    }
}

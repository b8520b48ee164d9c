//! The driver: owns the sockets and the clock, feeds the engine, sends what
//! it says. No TURN logic lives here.
//!
//! One task owns the [`Relay`]. It reads the UDP listener socket itself; each
//! relayed socket has a small reader task that hands peer datagrams to it over
//! a channel, and so does each TCP/TLS connection ([`super::stream`]). Sends
//! use `try_send_to` / `try_send`: UDP may drop, and a full socket buffer or a
//! slow TCP client must not stall the loop that serves everybody else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    BindError, Event, Family, FiveTuple, Forward, Relay, Transmit, Transport, CHANNEL_DATA_HEADROOM,
};
use anyhow::Context;
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cli::PortRange;
use super::heartbeat::Shared;
use super::metrics::Snapshot;
use super::stream::{framed, StreamInput};

/// Largest UDP payload we read.
const MAX_DATAGRAM: usize = 65_535;

/// A datagram a peer sent to one of our relayed addresses. `buf` starts with
/// [`CHANNEL_DATA_HEADROOM`] scratch bytes for the engine.
struct PeerDatagram {
    relayed: SocketAddr,
    peer: SocketAddr,
    buf: Vec<u8>,
}

struct RelayedSocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

pub struct Driver {
    relay: Relay,
    listener: UdpSocket,
    local: SocketAddr,
    relay_ip: IpAddr,
    relay_ip6: Option<IpAddr>,
    ports: PortRange,
    relayed: HashMap<SocketAddr, RelayedSocket>,
    peer_tx: mpsc::Sender<PeerDatagram>,
    peer_rx: mpsc::Receiver<PeerDatagram>,
    /// Open TCP/TLS connections by 5-tuple: their outgoing queues.
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    stream_tx: mpsc::Sender<StreamInput>,
    stream_rx: mpsc::Receiver<StreamInput>,
    snapshot_tx: mpsc::Sender<oneshot::Sender<Snapshot>>,
    snapshot_rx: mpsc::Receiver<oneshot::Sender<Snapshot>>,
    shared: Arc<Shared>,
}

impl Driver {
    pub async fn bind(
        relay: Relay,
        listen: SocketAddr,
        relay_ip: IpAddr,
        relay_ip6: Option<IpAddr>,
        ports: PortRange,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let listener = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("binding TURN listener on {listen}"))?;
        let local = listener.local_addr()?;
        let (peer_tx, peer_rx) = mpsc::channel(4096);
        let (stream_tx, stream_rx) = mpsc::channel(4096);
        let (snapshot_tx, snapshot_rx) = mpsc::channel(16);
        Ok(Driver {
            relay,
            listener,
            local,
            relay_ip,
            relay_ip6,
            ports,
            relayed: HashMap::new(),
            peer_tx,
            peer_rx,
            streams: HashMap::new(),
            stream_tx,
            stream_rx,
            snapshot_tx,
            snapshot_rx,
            shared,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where TCP/TLS connection tasks send what they read.
    pub fn stream_sender(&self) -> mpsc::Sender<StreamInput> {
        self.stream_tx.clone()
    }

    /// Ask the engine task for a metrics snapshot (answered between inputs,
    /// so the packet path never copies counters for nobody).
    pub fn snapshot_sender(&self) -> mpsc::Sender<oneshot::Sender<Snapshot>> {
        self.snapshot_tx.clone()
    }

    /// Serve until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            // With nothing scheduled, sleep "forever" (a day) instead.
            let deadline = self
                .relay
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                r = self.listener.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.sync_draining();
                        let fwd = self.relay.handle_client_datagram(
                            Instant::now().into_std(), unix_secs(), from, self.local, &buf[..n]);
                        if let Some(f) = fwd {
                            self.forward(&f, &buf);
                        }
                    }
                    // E.g. ECONNREFUSED from an ICMP for an earlier send:
                    // about one client, never fatal for the rest.
                    Err(e) => tracing::debug!(error = %e, "listener recv error"),
                },
                Some(mut d) = self.peer_rx.recv() => {
                    let fwd = self.relay.handle_peer_datagram(
                        Instant::now().into_std(), d.relayed, d.peer, &mut d.buf);
                    if let Some(f) = fwd {
                        self.forward(&f, &d.buf);
                    }
                }
                Some(input) = self.stream_rx.recv() => match input {
                    StreamInput::Opened { ft, out } => {
                        self.streams.insert(ft, out);
                    }
                    StreamInput::Message { ft, bytes } => {
                        self.sync_draining();
                        let fwd = self.relay.handle_client_message(
                            Instant::now().into_std(), unix_secs(), ft, &bytes);
                        if let Some(f) = fwd {
                            self.forward(&f, &bytes);
                        }
                    }
                    StreamInput::Closed { ft } => {
                        self.streams.remove(&ft);
                        self.relay.client_closed(ft);
                    }
                },
                Some(reply) = self.snapshot_rx.recv() => {
                    let _ = reply.send(self.snapshot());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.relay.handle_timeout(Instant::now().into_std());
                }
                _ = &mut stop => break,
            }
            self.after_input();
        }
        tracing::info!(
            allocations = self.relay.allocation_count(),
            "driver stopped"
        );
    }

    /// Act on events, flush queued transmits, publish load figures.
    /// Tell the engine about a drain started elsewhere (signal, admin).
    /// Checked before every client message, so the first Allocate after a
    /// drain began is already refused or redirected; one relaxed load.
    fn sync_draining(&mut self) {
        let draining = self.shared.draining.load(Ordering::Relaxed);
        if draining != self.relay.is_draining() {
            self.relay.set_draining(draining);
        }
    }

    fn after_input(&mut self) {
        self.sync_draining();
        while let Some(ev) = self.relay.poll_event() {
            match ev {
                Event::BindRelay {
                    id,
                    family,
                    even_port,
                } => {
                    let result = self.bind_relayed(family, even_port);
                    if let Err(e) = &result {
                        tracing::warn!(?id, error = %e, "cannot open relayed socket");
                    }
                    self.relay
                        .relay_bound(Instant::now().into_std(), id, result);
                }
                Event::Allocated {
                    id,
                    client,
                    relayed,
                    username,
                } => tracing::info!(?id, %client, %relayed, %username, "allocation created"),
                Event::Released {
                    id,
                    relayed,
                    reason,
                } => {
                    tracing::info!(?id, ?relayed, ?reason, "allocation released");
                    if let Some(r) = relayed.and_then(|r| self.relayed.remove(&r)) {
                        r.reader.abort();
                    }
                }
            }
        }
        while let Some(t) = self.relay.poll_transmit() {
            self.send(t);
        }
        self.shared
            .allocations
            .store(self.relay.allocation_count() as u64, Ordering::Relaxed);
        self.shared
            .relayed_packets
            .store(self.relay.stats().relayed_packets, Ordering::Relaxed);
    }

    fn socket_for(&self, from: SocketAddr) -> Option<&UdpSocket> {
        if from == self.local {
            Some(&self.listener)
        } else {
            self.relayed.get(&from).map(|r| &*r.socket)
        }
    }

    fn snapshot(&self) -> Snapshot {
        let (permissions, channels) = self
            .relay
            .permission_and_channel_counts(Instant::now().into_std());
        let mut streams = [0usize; 2];
        for ft in self.streams.keys() {
            streams[(ft.transport == Transport::Tls) as usize] += 1;
        }
        Snapshot {
            stats: self.relay.stats(),
            allocations: self.relay.allocation_count(),
            permissions,
            channels,
            tcp_connections: streams[0],
            tls_connections: streams[1],
            draining: self.relay.is_draining(),
        }
    }

    fn send(&self, t: Transmit) {
        if t.transport.is_stream() {
            self.send_stream(t.transport, t.from, t.to, t.payload);
        } else {
            self.send_bytes(t.from, t.to, &t.payload);
        }
    }

    fn forward(&self, f: &Forward, buf: &[u8]) {
        let bytes = &buf[f.range.clone()];
        if f.transport.is_stream() {
            self.send_stream(f.transport, f.from, f.to, framed(bytes));
        } else {
            self.send_bytes(f.from, f.to, bytes);
        }
    }

    /// Queue a message on a TCP/TLS connection; dropped if the client is not
    /// reading (real-time media: late is as bad as lost).
    fn send_stream(
        &self,
        transport: Transport,
        local: SocketAddr,
        client: SocketAddr,
        bytes: Vec<u8>,
    ) {
        let ft = FiveTuple {
            client,
            local,
            transport,
        };
        match self.streams.get(&ft) {
            Some(out) => {
                if out.try_send(bytes).is_err() {
                    tracing::debug!(%client, "stream queue full; dropped");
                }
            }
            None => tracing::debug!(%client, "no connection for transmit"),
        }
    }

    fn send_bytes(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let Some(sock) = self.socket_for(from) else {
            tracing::debug!(%from, "no socket for transmit");
            return;
        };
        if let Err(e) = sock.try_send_to(bytes, to) {
            tracing::debug!(%from, %to, error = %e, "send dropped");
        }
    }

    /// Open a relayed socket on `--relay-ip` (IPv4) or `--relay-ip6` and
    /// start its reader.
    fn bind_relayed(&mut self, family: Family, even: bool) -> Result<SocketAddr, BindError> {
        let ip = match family {
            Family::V4 if self.relay_ip.is_ipv4() => self.relay_ip,
            Family::V6 if self.relay_ip.is_ipv6() => self.relay_ip,
            Family::V6 => self.relay_ip6.ok_or(BindError::AddressFamilyNotSupported)?,
            Family::V4 => return Err(BindError::AddressFamilyNotSupported),
        };
        let acceptable =
            |s: &std::net::UdpSocket| !even || s.local_addr().is_ok_and(|a| a.port() % 2 == 0);
        // Random probing keeps relayed ports unpredictable; a full range
        // shows up as repeated collisions and then 508.
        let mut rng = rand::thread_rng();
        let std_sock = (0..64)
            .find_map(|_| {
                let port = match &self.ports {
                    PortRange::Ephemeral => 0,
                    PortRange::Range(r) => {
                        let p = rng.gen_range(r.clone());
                        if even && p % 2 == 1 && p > *r.start() {
                            p - 1
                        } else {
                            p
                        }
                    }
                };
                std::net::UdpSocket::bind((ip, port))
                    .ok()
                    .filter(|s| acceptable(s))
            })
            .ok_or(BindError::InsufficientCapacity)?;
        std_sock
            .set_nonblocking(true)
            .map_err(|_| BindError::InsufficientCapacity)?;
        let socket =
            Arc::new(UdpSocket::from_std(std_sock).map_err(|_| BindError::InsufficientCapacity)?);
        let relayed = socket
            .local_addr()
            .map_err(|_| BindError::InsufficientCapacity)?;
        let reader = tokio::spawn(read_peers(socket.clone(), relayed, self.peer_tx.clone()));
        self.relayed
            .insert(relayed, RelayedSocket { socket, reader });
        Ok(relayed)
    }
}

/// Reader for one relayed socket. Ends when aborted on release.
async fn read_peers(socket: Arc<UdpSocket>, relayed: SocketAddr, tx: mpsc::Sender<PeerDatagram>) {
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut scratch).await {
            Ok((n, peer)) => {
                // One right-sized buffer per datagram, since the channel hands
                // ownership to the engine task; headroom in front for the
                // ChannelData header. A batched per-core datapath (recvmmsg)
                // will replace this copy.
                let mut buf = Vec::with_capacity(CHANNEL_DATA_HEADROOM + n);
                buf.extend_from_slice(&[0; CHANNEL_DATA_HEADROOM]);
                buf.extend_from_slice(&scratch[..n]);
                // Drop rather than wait when the engine is behind: media is
                // real-time and late packets are worthless.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(PeerDatagram { relayed, peer, buf })
                {
                    return;
                }
            }
            Err(e) => tracing::debug!(%relayed, error = %e, "relayed recv error"),
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

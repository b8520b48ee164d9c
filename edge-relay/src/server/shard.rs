//! One core's share of the relay: an OS thread running a level-triggered
//! epoll loop around its own [`Relay`] engine.
//!
//! Every shard has its own socket on the UDP listen address (SO_REUSEPORT:
//! the kernel steers each client's 5-tuple to one of them, always the same),
//! so a client's allocation, its relayed socket and every packet of its calls
//! stay on one thread: no locks, channels or task hops on the forwarding
//! path. Per wakeup a shard reads each readable socket once with recvmmsg and
//! sends everything bound for clients through its listener with one sendmmsg;
//! client-to-peer packets leave through their allocation's relayed socket
//! with one `sendto` each (one socket per allocation is what TURN is).
//! Receive and send buffers are allocated once per shard, never per packet.
//!
//! TCP/TLS connections, metrics requests and the stop signal arrive over a
//! channel plus an eventfd ([`Waker`]); UDP never touches them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tern_netio::{Epoll, RecvBatch, SendBatch, Waker};
use tokio::sync::mpsc;

use crate::{
    BindError, Event, Family, FastMap, FiveTuple, Forward, Relay, Route, Transmit, Transport,
    CHANNEL_DATA_HEADROOM,
};

use super::cli::PortRange;
use super::heartbeat::Shared;
use super::inbox::{Input, ShardHandle, StreamInput};
use super::metrics::Snapshot;
use crate::stun::framing::framed;

/// A shard's [`Egress`]: a macro, not a method, so that only the fields it
/// names are borrowed.
macro_rules! egress {
    ($shard:expr) => {
        Egress {
            relayed: &$shard.relayed,
            by_addr: &$shard.by_addr,
            to_clients: &mut $shard.to_clients,
            listener: &$shard.listener,
            streams: &$shard.streams,
        }
    };
}

/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;
/// A slot holds the largest UDP payload there is, so nothing is truncated.
/// Only the bytes a datagram uses are touched, so the resident cost is a
/// page or so per slot, per shard (not per allocation).
const SLOT: usize = 65_536 + CHANNEL_DATA_HEADROOM;

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
/// Tokens from here on are relayed sockets: token - FIRST_RELAYED indexes
/// [`Shard::relayed`].
const FIRST_RELAYED: u64 = 2;

/// Where a shard opens relayed sockets.
#[derive(Clone)]
pub(crate) struct RelayedAddrs {
    pub ip: IpAddr,
    pub ip6: Option<IpAddr>,
    pub ports: PortRange,
}

struct Relayed {
    socket: UdpSocket,
    addr: SocketAddr,
}

/// What this shard last added to the process-wide gauges in [`Shared`].
#[derive(Default)]
struct Published {
    allocations: u64,
    relayed_packets: u64,
}

pub(crate) struct Shard {
    relay: Relay,
    epoll: Epoll,
    listener: UdpSocket,
    local: SocketAddr,
    waker: Arc<Waker>,
    inputs: mpsc::Receiver<Input>,
    addrs: RelayedAddrs,
    /// Relayed sockets by token index; `None` slots are free for reuse.
    relayed: Vec<Option<Relayed>>,
    free: Vec<usize>,
    by_addr: FastMap<SocketAddr, usize>,
    /// Open TCP/TLS connections by 5-tuple: their outgoing queues.
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    from_clients: RecvBatch,
    from_peers: RecvBatch,
    to_clients: SendBatch,
    shared: Arc<Shared>,
    published: Published,
    stop: Arc<AtomicBool>,
}

impl Shard {
    /// A shard serving `listener` (already bound, non-blocking). Returns it
    /// and the handle other threads use.
    pub(crate) fn new(
        relay: Relay,
        listener: UdpSocket,
        addrs: RelayedAddrs,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<(Shard, ShardHandle)> {
        let epoll = Epoll::new(1024)?;
        let waker = Arc::new(Waker::new()?);
        epoll.add(listener.as_raw_fd(), LISTENER)?;
        epoll.add(waker.as_raw_fd(), WAKER)?;
        let (tx, inputs) = mpsc::channel(4096);
        let local = listener.local_addr()?;
        let shard = Shard {
            relay,
            epoll,
            listener,
            local,
            waker: waker.clone(),
            inputs,
            addrs,
            relayed: Vec::new(),
            free: Vec::new(),
            by_addr: FastMap::default(),
            streams: HashMap::new(),
            from_clients: RecvBatch::new(BATCH, SLOT, 0),
            from_peers: RecvBatch::new(BATCH, SLOT, CHANNEL_DATA_HEADROOM),
            to_clients: SendBatch::new(BATCH, SLOT),
            shared,
            published: Published::default(),
            stop,
        };
        Ok((shard, ShardHandle::new(tx, waker)))
    }

    /// Serve until the stop flag is set (and the shard woken).
    pub(crate) fn run(mut self) {
        loop {
            let timeout = self
                .relay
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let ready = match self.epoll.wait(timeout) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "epoll failed; shard stops");
                    break;
                }
            };
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            self.sync_draining();
            for k in 0..ready {
                match self.epoll.token(k) {
                    LISTENER => self.read_clients(now),
                    WAKER => self.read_inputs(now),
                    t => self.read_peers(now, (t - FIRST_RELAYED) as usize),
                }
            }
            self.flush_to_clients();
            if self.relay.poll_timeout().is_some_and(|t| t <= now) {
                self.relay.handle_timeout(now);
            }
            self.after_input(now);
        }
        // Closing the sockets is all the cleanup there is; the process is
        // exiting after a drain.
        tracing::debug!(allocations = self.relay.allocation_count(), "shard stopped");
    }

    /// Tell the engine about a drain started elsewhere (signal, admin): one
    /// relaxed load per wakeup, so the first Allocate after a drain began is
    /// already refused or redirected.
    fn sync_draining(&mut self) {
        let draining = self.shared.draining.load(Ordering::Relaxed);
        if draining != self.relay.is_draining() {
            self.relay.set_draining(draining);
        }
    }

    /// One recvmmsg on the listener (level-triggered: epoll reports it again
    /// if more is waiting). Media for a peer that is another allocation of
    /// this shard is handed over in memory and joins the batch for clients;
    /// other media leaves at once through the allocation's relayed socket;
    /// control answers queue in the engine.
    fn read_clients(&mut self, now: Instant) {
        let n = match self.from_clients.recv(self.listener.as_raw_fd()) {
            Ok(n) => n,
            // E.g. ECONNREFUSED from an ICMP for an earlier send: about one
            // client, never fatal for the rest; the error is consumed.
            Err(e) => {
                tracing::debug!(error = %e, "listener recv error");
                return;
            }
        };
        let unix = unix_secs();
        for i in 0..n {
            let (Some(from), data) = self.from_clients.slot_mut(i) else {
                continue;
            };
            let Some(f) = self
                .relay
                .handle_client_datagram(now, unix, from, self.local, data)
            else {
                continue;
            };
            let route = self.relay.route_client_media(now, f, data);
            egress!(self).route(route, data);
        }
    }

    /// One recvmmsg on a relayed socket: peer datagrams become ChannelData
    /// (in place, in the slot's headroom) or Data indications for the client.
    fn read_peers(&mut self, now: Instant, index: usize) {
        let Some(Some(r)) = self.relayed.get(index) else {
            return; // released since epoll reported it
        };
        let relayed_addr = r.addr;
        let n = match self.from_peers.recv(r.socket.as_raw_fd()) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(relayed = %relayed_addr, error = %e, "relayed recv error");
                return;
            }
        };
        for i in 0..n {
            let (Some(peer), slot) = self.from_peers.slot_mut(i) else {
                continue;
            };
            if let Some(f) = self
                .relay
                .handle_peer_datagram(now, relayed_addr, peer, slot)
            {
                egress!(self).send_to_client(&f, slot);
            }
        }
    }

    fn flush_to_clients(&mut self) {
        flush(&mut self.to_clients, &self.listener);
    }

    /// Messages from other threads: TCP/TLS traffic, metrics requests.
    fn read_inputs(&mut self, now: Instant) {
        // Reset first: a wake that lands while we drain is seen next round.
        self.waker.reset();
        while let Ok(input) = self.inputs.try_recv() {
            match input {
                Input::Stream(StreamInput::Opened { ft, out }) => {
                    self.streams.insert(ft, out);
                }
                Input::Stream(StreamInput::Message { ft, mut bytes }) => {
                    self.sync_draining();
                    let Some(f) = self
                        .relay
                        .handle_client_message(now, unix_secs(), ft, &bytes)
                    else {
                        continue;
                    };
                    let route = self.relay.route_client_media(now, f, &mut bytes);
                    egress!(self).route(route, &bytes);
                }
                Input::Stream(StreamInput::Closed { ft }) => {
                    self.streams.remove(&ft);
                    self.relay.client_closed(ft);
                }
                Input::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot(now));
                }
            }
        }
    }

    /// Act on engine events, send queued control answers, publish gauges.
    fn after_input(&mut self, now: Instant) {
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
                    self.relay.relay_bound(now, id, result);
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
                    if let Some(r) = relayed {
                        self.close_relayed(r);
                    }
                }
            }
        }
        while let Some(t) = self.relay.poll_transmit() {
            self.send_transmit(t);
        }
        self.flush_to_clients();
        self.publish();
    }

    fn send_transmit(&mut self, t: Transmit) {
        if t.transport.is_stream() {
            send_stream(&self.streams, t.transport, t.from, t.to, t.payload);
        } else if t.from == self.local {
            if self.to_clients.is_full() {
                self.flush_to_clients();
            }
            let p = &t.payload;
            self.to_clients.push(t.to, |out| {
                out[..p.len()].copy_from_slice(p);
                p.len()
            });
        } else if let Some(r) = self.socket_for(t.from) {
            if let Err(e) = r.send_to(&t.payload, t.to) {
                tracing::debug!(from = %t.from, to = %t.to, error = %e, "send dropped");
            }
        }
    }

    fn socket_for(&self, addr: SocketAddr) -> Option<&UdpSocket> {
        relayed_socket(&self.relayed, &self.by_addr, addr)
    }

    /// Add this shard's change in allocations and relayed packets to the
    /// process-wide gauges (heartbeats and the drain read the sums).
    fn publish(&mut self) {
        let allocations = self.relay.allocation_count() as u64;
        let relayed = self.relay.stats().relayed_packets;
        let p = &mut self.published;
        if allocations > p.allocations {
            let d = allocations - p.allocations;
            self.shared.allocations.fetch_add(d, Ordering::Relaxed);
        } else if allocations < p.allocations {
            let d = p.allocations - allocations;
            self.shared.allocations.fetch_sub(d, Ordering::Relaxed);
        }
        add(&self.shared.relayed_packets, relayed - p.relayed_packets);
        *p = Published {
            allocations,
            relayed_packets: relayed,
        };
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let (permissions, channels) = self.relay.permission_and_channel_counts(now);
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

    /// Open a relayed socket on the relay IP of `family` and watch it.
    fn bind_relayed(&mut self, family: Family, even: bool) -> Result<SocketAddr, BindError> {
        let ip = match family {
            Family::V4 if self.addrs.ip.is_ipv4() => self.addrs.ip,
            Family::V6 if self.addrs.ip.is_ipv6() => self.addrs.ip,
            Family::V6 => self.addrs.ip6.ok_or(BindError::AddressFamilyNotSupported)?,
            Family::V4 => return Err(BindError::AddressFamilyNotSupported),
        };
        let socket = bind_port(ip, &self.addrs.ports, even)?;
        let addr = socket
            .local_addr()
            .map_err(|_| BindError::InsufficientCapacity)?;
        let index = self.free.pop().unwrap_or_else(|| {
            self.relayed.push(None);
            self.relayed.len() - 1
        });
        if self
            .epoll
            .add(socket.as_raw_fd(), FIRST_RELAYED + index as u64)
            .is_err()
        {
            self.free.push(index);
            return Err(BindError::InsufficientCapacity);
        }
        self.relayed[index] = Some(Relayed { socket, addr });
        self.by_addr.insert(addr, index);
        Ok(addr)
    }

    fn close_relayed(&mut self, addr: SocketAddr) {
        let Some(index) = self.by_addr.remove(&addr) else {
            return;
        };
        if let Some(r) = self.relayed[index].take() {
            let _ = self.epoll.delete(r.socket.as_raw_fd());
        }
        self.free.push(index);
    }
}

/// Send what is queued for clients through the listener, in one sendmmsg.
fn flush(batch: &mut SendBatch, listener: &UdpSocket) {
    if !batch.is_empty() {
        let dropped = batch.flush(listener.as_raw_fd());
        if dropped > 0 {
            tracing::debug!(dropped, "listener send buffer full; datagrams dropped");
        }
    }
}

fn add(gauge: &AtomicU64, d: u64) {
    if d > 0 {
        gauge.fetch_add(d, Ordering::Relaxed);
    }
}

fn relayed_socket<'a>(
    relayed: &'a [Option<Relayed>],
    by_addr: &FastMap<SocketAddr, usize>,
    addr: SocketAddr,
) -> Option<&'a UdpSocket> {
    let i = *by_addr.get(&addr)?;
    relayed.get(i)?.as_ref().map(|r| &r.socket)
}

/// The shard's ways out for media, borrowed field by field (see [`egress!`])
/// so that a caller can keep a slot of its receive batches borrowed.
struct Egress<'a> {
    relayed: &'a [Option<Relayed>],
    by_addr: &'a FastMap<SocketAddr, usize>,
    to_clients: &'a mut SendBatch,
    listener: &'a UdpSocket,
    streams: &'a HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
}

impl Egress<'_> {
    /// Client media (in `buf`) where the engine routed it.
    fn route(&mut self, route: Route, buf: &[u8]) {
        match route {
            Route::Kernel(f) => self.send_to_peer(&f, buf),
            Route::Local(f) => self.send_to_client(&f, buf),
            Route::Consumed => {}
        }
    }

    /// Client media towards a peer: out through the allocation's relayed
    /// socket.
    fn send_to_peer(&self, f: &Forward, buf: &[u8]) {
        let Some(sock) = relayed_socket(self.relayed, self.by_addr, f.from) else {
            tracing::debug!(from = %f.from, "no socket for forward");
            return;
        };
        if let Err(e) = sock.send_to(&buf[f.range.clone()], f.to) {
            tracing::debug!(from = %f.from, to = %f.to, error = %e, "send dropped");
        }
    }

    /// Media for a client (`f.range` of `buf`): into the batch that leaves
    /// through the listener with the next sendmmsg, or onto its TCP/TLS
    /// connection.
    fn send_to_client(&mut self, f: &Forward, buf: &[u8]) {
        let bytes = &buf[f.range.clone()];
        if f.transport.is_stream() {
            send_stream(self.streams, f.transport, f.from, f.to, framed(bytes));
            return;
        }
        if self.to_clients.is_full() {
            flush(self.to_clients, self.listener);
        }
        self.to_clients.push(f.to, |out| {
            out[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        });
    }
}

/// Queue a message on a TCP/TLS connection; dropped if the client is not
/// reading (real-time media: late is as bad as lost).
fn send_stream(
    streams: &HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
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
    match streams.get(&ft) {
        Some(out) => {
            if out.try_send(bytes).is_err() {
                tracing::debug!(%client, "stream queue full; dropped");
            }
        }
        None => tracing::debug!(%client, "no connection for transmit"),
    }
}

/// Bind a non-blocking UDP socket on `ip`: a random port from the range (so
/// relayed ports are unpredictable; a full range shows up as repeated
/// collisions and then 508) or an ephemeral one; even if asked.
fn bind_port(ip: IpAddr, ports: &PortRange, even: bool) -> Result<UdpSocket, BindError> {
    let acceptable = |s: &UdpSocket| !even || s.local_addr().is_ok_and(|a| a.port() % 2 == 0);
    let mut rng = rand::thread_rng();
    let socket = (0..64)
        .find_map(|_| {
            let port = match ports {
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
            UdpSocket::bind((ip, port)).ok().filter(|s| acceptable(s))
        })
        .ok_or(BindError::InsufficientCapacity)?;
    socket
        .set_nonblocking(true)
        .map_err(|_| BindError::InsufficientCapacity)?;
    Ok(socket)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

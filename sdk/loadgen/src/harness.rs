//! The generator's sockets and the setup phase. TURN allocations are keyed
//! by the client's 5-tuple, so every client needs an address of its own:
//!
//! * per client (default): one UDP socket each on 127.0.0.1, all on one
//!   level-triggered epoll; one send and one receive syscall per packet;
//! * shared (`shared_socket`, IPv4 only): one socket on the unspecified
//!   address, each client its own loopback address (127.64.x.y, same
//!   port), chosen per datagram with IP_PKTINFO; media then moves in
//!   sendmmsg/recvmmsg batches, so the generator spends a fraction of the
//!   CPU per packet and can load a relay past what one core of per-packet
//!   syscalls could (docs/benchmarks.md, "TURN relay").
//!
//! Driven from one thread either way, so the generator needs one core.
//!
//! Clients come in pairs (2p, 2p+1). Setup allocates every client with at
//! most `setup_window` Allocates in flight, then has each client let its
//! partner's relayed address in and bind channel 0x4000 to it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bare::BareClient;
use crate::client::{decode_channel_data, ClientError, Op, TurnClient};
use crate::session::{Session, SessionEvent};
use crate::LoadError;
use tern_netio::{Epoll, RecvBatch, SendBatch};

/// Channel each client binds to its partner (the first of RFC 8656's range).
pub const CHANNEL: u16 = 0x4000;

/// Which relay the generator talks to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TURN server with REST credentials from this shared secret.
    Turn { secret: Vec<u8> },
    /// The bare forwarder ([`crate::forwarder`]).
    Bare,
}

#[derive(Debug, Clone)]
pub struct SetupConfig {
    pub server: SocketAddr,
    pub target: Target,
    pub pairs: usize,
    /// Allocations (and bind requests) in flight at once.
    pub setup_window: usize,
    /// Give up on setup after this long.
    pub setup_timeout: Duration,
    /// All clients on one socket, each from its own loopback address (see
    /// the module comment). IPv4 servers only.
    pub shared_socket: bool,
}

/// How a client reaches the relay.
pub(crate) enum Wire {
    /// A socket of its own, connected to the server.
    Own(UdpSocket),
    /// The shared socket, from this address.
    Shared(Ipv4Addr),
}

/// The one socket of shared mode, with its batches.
pub(crate) struct SharedSocket {
    pub socket: UdpSocket,
    pub tx: SendBatch,
    pub rx: RecvBatch,
    /// Client address → client index.
    pub by_ip: HashMap<Ipv4Addr, usize>,
    /// Addresses handed out so far (new ones after a 437 too).
    issued: u32,
}

/// Datagrams per sendmmsg/recvmmsg in shared mode.
pub(crate) const BATCH: usize = 64;
/// Epoll token of the shared socket (client sockets use their index).
pub(crate) const SHARED_TOKEN: u64 = u64::MAX;
/// First client address in shared mode: 127.64.0.0 + n, clear of the
/// 127.0.0.x that servers and other tools usually take.
const FIRST_SHARED_IP: u32 = u32::from_be_bytes([127, 64, 0, 0]);

impl SharedSocket {
    fn open(epoll: &Epoll) -> Result<SharedSocket, LoadError> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_nonblocking(true)?;
        tern_netio::enable_pktinfo(socket.as_raw_fd())?;
        // Every client's media arrives here: room for bursts.
        tern_netio::set_receive_buffer(socket.as_raw_fd(), 8 << 20)?;
        epoll.add(socket.as_raw_fd(), SHARED_TOKEN)?;
        Ok(SharedSocket {
            socket,
            tx: SendBatch::new(BATCH, 2048),
            rx: RecvBatch::new(BATCH, 2048, 0).with_local_addresses(),
            by_ip: HashMap::new(),
            issued: 0,
        })
    }

    /// A fresh address for client `i`.
    fn issue(&mut self, i: usize) -> Result<Ipv4Addr, LoadError> {
        if self.issued >= (1 << 22) {
            return Err(LoadError::Config("out of loopback addresses".into()));
        }
        let ip = Ipv4Addr::from(FIRST_SHARED_IP + self.issued);
        self.issued += 1;
        self.by_ip.insert(ip, i);
        Ok(ip)
    }
}

pub(crate) struct Client {
    pub wire: Wire,
    pub session: Box<dyn Session>,
    pub relayed: Option<SocketAddr>,
    pub bound: bool,
}

/// What setup took.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SetupReport {
    pub allocations: usize,
    pub allocate_secs: f64,
    /// Allocations per second, 401 round trip included.
    pub allocations_per_sec: f64,
    pub bind_secs: f64,
    /// Clients that got 437 and allocated again from a new local port.
    pub reopened_after_437: usize,
}

/// N pairs of allocated, channel-bound clients ready to send media.
pub struct Harness {
    pub(crate) epoll: Epoll,
    pub(crate) clients: Vec<Client>,
    /// Shared mode's socket (`None`: a socket per client).
    pub(crate) shared: Option<SharedSocket>,
    pub(crate) buf: Vec<u8>,
    pub setup: SetupReport,
    /// While releasing, failures are expected (an allocation may be gone
    /// already) and ignored.
    releasing: bool,
    pub(crate) server: SocketAddr,
    target: Target,
    expiry: u64,
    /// Clients that moved to a new local port after a 437 (see `reopen`).
    reopened: usize,
}

impl Harness {
    /// Open the sockets and run setup to the end (or the first failure).
    pub fn setup(cfg: &SetupConfig) -> Result<Harness, LoadError> {
        if cfg.pairs == 0 {
            return Err(LoadError::Config("--pairs must be at least 1".into()));
        }
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 24 * 3600;
        if cfg.shared_socket && !cfg.server.is_ipv4() {
            return Err(LoadError::Config(
                "a shared socket needs an IPv4 server (its clients are 127.x.y.z)".into(),
            ));
        }
        let epoll = Epoll::new(1024)?;
        let shared = cfg
            .shared_socket
            .then(|| SharedSocket::open(&epoll))
            .transpose()?;
        let mut h = Harness {
            epoll,
            clients: Vec::with_capacity(cfg.pairs * 2),
            shared,
            buf: vec![0u8; 65_536],
            setup: SetupReport::default(),
            releasing: false,
            server: cfg.server,
            target: cfg.target.clone(),
            expiry,
            reopened: 0,
        };
        for i in 0..cfg.pairs * 2 {
            let c = h.new_client(i)?;
            h.clients.push(c);
        }
        let deadline = Instant::now() + cfg.setup_timeout;

        let t0 = Instant::now();
        let n = h.clients.len();
        h.windowed(cfg.setup_window, deadline, n, |h, i, now| {
            h.clients[i].session.allocate(now)
        })?;
        let allocate_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        h.windowed(cfg.setup_window, deadline, n, |h, i, now| {
            let peer = h.clients[i ^ 1].relayed.expect("all allocated");
            h.clients[i].session.bind(now, peer, CHANNEL);
        })?;
        h.setup = SetupReport {
            allocations: n,
            allocate_secs,
            allocations_per_sec: n as f64 / allocate_secs.max(1e-9),
            bind_secs: t1.elapsed().as_secs_f64(),
            reopened_after_437: h.reopened,
        };
        Ok(h)
    }

    /// A fresh address (socket and local port, or shared-mode address) and
    /// session for client `i`.
    fn new_client(&mut self, i: usize) -> Result<Client, LoadError> {
        let wire = match &mut self.shared {
            Some(shared) => Wire::Shared(shared.issue(i)?),
            None => {
                let bind: SocketAddr = if self.server.is_ipv4() {
                    "127.0.0.1:0"
                } else {
                    "[::1]:0"
                }
                .parse()
                .expect("literal address");
                let socket = UdpSocket::bind(bind)?;
                socket.set_nonblocking(true)?;
                // Connected: the kernel filters out strangers and send/recv
                // skip the address conversion.
                socket.connect(self.server)?;
                self.epoll.add(socket.as_raw_fd(), i as u64)?;
                Wire::Own(socket)
            }
        };
        let session: Box<dyn Session> = match &self.target {
            Target::Turn { secret } => Box::new(TurnClient::with_rest_secret(
                secret,
                &format!("loadgen-{i}"),
                self.expiry,
                rand::random(),
            )),
            Target::Bare => Box::new(BareClient::new()),
        };
        Ok(Client {
            wire,
            session,
            relayed: None,
            bound: false,
        })
    }

    /// 437 to an Allocate: the relay still holds an allocation for this
    /// 5-tuple (an earlier run's client had the same local port, and the
    /// relay has not let go of it yet). RFC 8656 lets the client move to
    /// another 5-tuple, so: new socket, new session, allocate again.
    fn reopen(&mut self, i: usize) -> Result<(), LoadError> {
        let fresh = self.new_client(i)?;
        let old = std::mem::replace(&mut self.clients[i], fresh);
        match (&old.wire, &mut self.shared) {
            (Wire::Own(socket), _) => {
                let _ = self.epoll.delete(socket.as_raw_fd());
            }
            (Wire::Shared(ip), Some(shared)) => {
                shared.by_ip.remove(ip);
            }
            (Wire::Shared(_), None) => {}
        }
        self.clients[i].session.allocate(Instant::now());
        self.reopened += 1;
        self.flush(i)
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Delete every allocation (best effort, at most `timeout`). Without it a
    /// relay keeps them for their lifetime, and a later run whose client
    /// happens to get the same local port would be refused with 437.
    pub fn release(&mut self, timeout: Duration) -> Result<(), LoadError> {
        self.releasing = true;
        let now = Instant::now();
        for i in 0..self.clients.len() {
            self.clients[i].session.release(now);
            self.flush(i)?;
            // Pace the burst so the relay's socket buffer does not overflow;
            // losses would only cost retransmissions, i.e. time.
            if i % 256 == 255 {
                self.pump(Some(Duration::from_millis(1)))?;
            }
        }
        let deadline = now + timeout;
        while Instant::now() < deadline
            && self
                .clients
                .iter()
                .any(|c| c.session.poll_timeout().is_some())
        {
            self.pump(Some(Duration::from_millis(5)))?;
        }
        Ok(())
    }

    /// Start `start(i)` for every client with at most `window` unfinished,
    /// pumping IO until each has finished (its allocation or binding done).
    fn windowed(
        &mut self,
        window: usize,
        deadline: Instant,
        total: usize,
        mut start: impl FnMut(&mut Self, usize, Instant),
    ) -> Result<(), LoadError> {
        let done_of = |c: &Client, phase_bind: bool| {
            if phase_bind {
                c.bound
            } else {
                c.relayed.is_some()
            }
        };
        let phase_bind = self.clients.iter().all(|c| c.relayed.is_some());
        let (mut started, mut done) = (0usize, 0usize);
        while done < total {
            let now = Instant::now();
            if now > deadline {
                return Err(LoadError::SetupTimeout {
                    done,
                    total,
                    phase: if phase_bind { "bind" } else { "allocate" },
                });
            }
            while started < total && started - done < window.max(1) {
                start(self, started, now);
                self.flush(started)?;
                started += 1;
            }
            self.pump(Some(Duration::from_millis(5)))?;
            done = self.clients[..started]
                .iter()
                .filter(|c| done_of(c, phase_bind))
                .count();
        }
        Ok(())
    }

    /// Wait up to `timeout` for datagrams, feed them and due timers to the
    /// sessions, send what they queue. Media (ChannelData) is ignored here:
    /// the traffic phase has its own receive loop.
    pub(crate) fn pump(&mut self, timeout: Option<Duration>) -> Result<(), LoadError> {
        let n = self.epoll.wait(timeout)?;
        let ready: Vec<u64> = (0..n).map(|k| self.epoll.token(k)).collect();
        for token in ready {
            if token == SHARED_TOKEN {
                self.drain_shared_control()?;
            } else {
                self.drain_control(token as usize)?;
            }
        }
        self.service_timers(Instant::now())
    }

    /// The shared socket's datagrams, each to the client it was sent to.
    fn drain_shared_control(&mut self) -> Result<(), LoadError> {
        loop {
            let shared = self.shared.as_mut().expect("shared mode");
            let n = shared.rx.recv(shared.socket.as_raw_fd())?;
            if n == 0 {
                return Ok(());
            }
            for k in 0..n {
                let shared = self.shared.as_ref().expect("shared mode");
                let (from, d) = shared.rx.get(k);
                let to = shared.rx.local_ip(k).and_then(|ip| shared.by_ip.get(&ip));
                let (Some(&i), true) = (to, from == Some(self.server)) else {
                    continue;
                };
                if decode_channel_data(d).is_some() {
                    continue;
                }
                self.buf[..d.len()].copy_from_slice(d);
                let len = d.len();
                let now = Instant::now();
                self.clients[i]
                    .session
                    .handle_control(now, &self.buf[..len]);
                self.after_session(i)?;
            }
        }
    }

    fn drain_control(&mut self, i: usize) -> Result<(), LoadError> {
        loop {
            let Wire::Own(socket) = &self.clients[i].wire else {
                return Ok(());
            };
            let n = match socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // ICMP port unreachable from an earlier send: the server is
                // not there (yet); retransmissions take care of it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            };
            if decode_channel_data(&self.buf[..n]).is_none() {
                let now = Instant::now();
                self.clients[i].session.handle_control(now, &self.buf[..n]);
                self.after_session(i)?;
            }
        }
    }

    /// Run due retransmissions/refreshes of every session.
    pub(crate) fn service_timers(&mut self, now: Instant) -> Result<(), LoadError> {
        for i in 0..self.clients.len() {
            if self.clients[i]
                .session
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[i].session.handle_timeout(now);
                self.after_session(i)?;
            }
        }
        Ok(())
    }

    /// Drain a session's events and transmits after it was given input.
    pub(crate) fn after_session(&mut self, i: usize) -> Result<(), LoadError> {
        while let Some(ev) = self.clients[i].session.poll_event() {
            match ev {
                SessionEvent::Allocated { relayed } => self.clients[i].relayed = Some(relayed),
                SessionEvent::ChannelBound { .. } => self.clients[i].bound = true,
                SessionEvent::PermissionCreated { .. } => {}
                SessionEvent::Failed(_) if self.releasing => {}
                SessionEvent::Failed(ClientError::Rejected {
                    op: Op::Allocate,
                    code: 437,
                }) if self.reopened < 1000 => return self.reopen(i),
                SessionEvent::Failed(error) => return Err(LoadError::Client { client: i, error }),
            }
        }
        self.flush(i)
    }

    fn flush(&mut self, i: usize) -> Result<(), LoadError> {
        let c = &mut self.clients[i];
        while let Some(t) = c.session.poll_transmit() {
            let sent = match (&c.wire, &mut self.shared) {
                (Wire::Own(socket), _) => socket.send(&t).map(|_| ()),
                (Wire::Shared(ip), Some(shared)) => {
                    shared.tx.push_from(self.server, *ip, |slot| {
                        slot[..t.len()].copy_from_slice(&t);
                        t.len()
                    });
                    // Lost control messages are retransmitted.
                    shared.tx.flush(shared.socket.as_raw_fd());
                    Ok(())
                }
                (Wire::Shared(_), None) => unreachable!("shared address without the socket"),
            };
            match sent {
                Ok(_) => {}
                // Control messages are retransmitted by the session.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

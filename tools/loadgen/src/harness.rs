//! The generator's sockets and the setup phase: one UDP socket per
//! allocation (TURN allocations are keyed by the client's 5-tuple), all on
//! one level-triggered epoll, driven from one thread so the generator needs
//! one core.
//!
//! Clients come in pairs (2p, 2p+1). Setup allocates every client with at
//! most `setup_window` Allocates in flight, then has each client let its
//! partner's relayed address in and bind channel 0x4000 to it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bare::BareClient;
use crate::client::{decode_channel_data, ClientError, Op, TurnClient};
use crate::session::{Session, SessionEvent};
use crate::LoadError;
use tern_netio::Epoll;

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
}

pub(crate) struct Client {
    pub socket: UdpSocket,
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
    pub(crate) buf: Vec<u8>,
    pub setup: SetupReport,
    /// While releasing, failures are expected (an allocation may be gone
    /// already) and ignored.
    releasing: bool,
    server: SocketAddr,
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
        let mut h = Harness {
            epoll: Epoll::new(1024)?,
            clients: Vec::with_capacity(cfg.pairs * 2),
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

    /// A fresh socket (new local port) and session for client `i`.
    fn new_client(&mut self, i: usize) -> Result<Client, LoadError> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        }
        .parse()
        .expect("literal address");
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        // Connected: the kernel filters out strangers and send/recv skip the
        // address conversion.
        socket.connect(self.server)?;
        self.epoll.add(socket.as_raw_fd(), i as u64)?;
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
            socket,
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
        let _ = self.epoll.delete(old.socket.as_raw_fd());
        self.clients[i].session.allocate(Instant::now());
        self.reopened += 1;
        self.flush(i)
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Datagrams the generator's own sockets have dropped so far (receive
    /// buffer full): losses of the generator, not of the relay.
    pub(crate) fn receive_drops(&self) -> Result<u64, LoadError> {
        let mut total = 0;
        for c in &self.clients {
            total += tern_netio::receive_drops(c.socket.as_raw_fd())?;
        }
        Ok(total)
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
        let ready: Vec<usize> = (0..n).map(|k| self.epoll.token(k) as usize).collect();
        for i in ready {
            self.drain_control(i)?;
        }
        self.service_timers(Instant::now())
    }

    fn drain_control(&mut self, i: usize) -> Result<(), LoadError> {
        loop {
            let n = match self.clients[i].socket.recv(&mut self.buf) {
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
            match c.socket.send(&t) {
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

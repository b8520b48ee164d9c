//! The generator's sockets and the setup phase: one UDP socket per
//! allocation (TURN allocations are keyed by the client's 5-tuple), all on
//! one epoll, driven from one thread so the generator needs one core.
//!
//! Clients come in pairs (2p, 2p+1). Setup allocates every client with at
//! most `setup_window` Allocates in flight, then has each client let its
//! partner's relayed address in and bind channel 0x4000 to it.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token};

use crate::bare::BareClient;
use crate::client::{decode_channel_data, TurnClient};
use crate::session::{Session, SessionEvent};
use crate::LoadError;

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
    pub socket: MioUdp,
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
}

/// N pairs of allocated, channel-bound clients ready to send media.
pub struct Harness {
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    pub(crate) clients: Vec<Client>,
    pub(crate) buf: Vec<u8>,
    pub setup: SetupReport,
}

impl Harness {
    /// Open the sockets and run setup to the end (or the first failure).
    pub fn setup(cfg: &SetupConfig) -> Result<Harness, LoadError> {
        if cfg.pairs == 0 {
            return Err(LoadError::Config("--pairs must be at least 1".into()));
        }
        let poll = Poll::new()?;
        let bind_ip = if cfg.server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 24 * 3600;
        let mut clients = Vec::with_capacity(cfg.pairs * 2);
        for i in 0..cfg.pairs * 2 {
            let mut socket = MioUdp::bind(bind_ip.parse().expect("literal address"))?;
            // Connected: the kernel filters out strangers and send/recv skip
            // the address conversion.
            socket.connect(cfg.server)?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            let session: Box<dyn Session> = match &cfg.target {
                Target::Turn { secret } => Box::new(TurnClient::with_rest_secret(
                    secret,
                    &format!("loadgen-{i}"),
                    expiry,
                    rand::random(),
                )),
                Target::Bare => Box::new(BareClient::new()),
            };
            clients.push(Client {
                socket,
                session,
                relayed: None,
                bound: false,
            });
        }
        let mut h = Harness {
            poll,
            events: Events::with_capacity(1024),
            clients,
            buf: vec![0u8; 65_536],
            setup: SetupReport::default(),
        };
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
        };
        Ok(h)
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
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
        self.poll.poll(&mut self.events, timeout)?;
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
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

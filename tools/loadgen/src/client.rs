//! A small sans-IO TURN client (RFC 8656 over UDP, long-term credentials).
//!
//! Same shape as the relay's engine: the host feeds datagrams and time in and
//! drains transmits, events and the next timeout; no sockets or clocks inside,
//! so the unit tests drive it in simulated time against a scripted server.
//!
//! What it does: Allocate (first without credentials, then again with the
//! REALM/NONCE of the 401), CreatePermission, ChannelBind, Refresh (itself,
//! at half the granted lifetime, together with re-binding its channels, which
//! also refreshes their permissions), 438 stale-nonce retries, and STUN
//! retransmissions (RTO 500 ms doubling, 7 sends). ChannelData is framed by
//! the free functions at the bottom so the data path never touches the
//! state machine's allocations.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun::{self as st, long_term_key, Builder, Class, Message, TransactionId};

use crate::op::MAX_SENDS;
pub use crate::op::{ClientError, Op};
use crate::session::{Session, SessionEvent};

/// RFC 8489 §6.2.1 default initial RTO (Rc: [`MAX_SENDS`]).
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Lifetime asked for in Allocate/Refresh (the RFC default).
const REQUESTED_LIFETIME: u32 = 600;
/// Permissions last 300 s (RFC 8656 §9); channels are re-bound, which
/// refreshes both, well before that.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);

struct Transaction {
    tid: TransactionId,
    op: Op,
    bytes: Vec<u8>,
    sends: u32,
    next_send: Instant,
    rto: Duration,
    /// A 401 is answered once with credentials; a second one is final.
    authenticated: bool,
}

struct Binding {
    peer: SocketAddr,
    channel: u16,
}

/// One TURN allocation's client side.
pub struct TurnClient {
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    key: Option<[u8; 16]>,
    tid_prefix: [u8; 8],
    tid_counter: u32,
    transactions: Vec<Transaction>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
    relayed: Option<SocketAddr>,
    bindings: Vec<Binding>,
    refresh_at: Option<Instant>,
    lifetime: u32,
}

impl TurnClient {
    /// `tid_seed` is randomness from the host: transaction ids are
    /// `seed || counter`, so the client itself stays deterministic.
    pub fn new(username: String, password: String, tid_seed: u64) -> Self {
        TurnClient {
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            tid_prefix: tid_seed.to_be_bytes(),
            tid_counter: 0,
            transactions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            relayed: None,
            bindings: Vec::new(),
            refresh_at: None,
            lifetime: 0,
        }
    }

    /// REST credentials (`<expiry>:<identity>`, HMAC-SHA1 password) as
    /// coturn's `use-auth-secret` and tern-relay accept them.
    pub fn with_rest_secret(secret: &[u8], identity: &str, expiry_unix: u64, seed: u64) -> Self {
        let c = tern_common::credentials::mint(secret, identity, expiry_unix);
        TurnClient::new(c.username, c.credential, seed)
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Granted allocation lifetime in seconds (0 before the allocation).
    pub fn lifetime(&self) -> u32 {
        self.lifetime
    }

    pub fn create_permission(&mut self, now: Instant, peer: SocketAddr) {
        self.start(now, Op::CreatePermission { peer });
    }

    pub fn channel_bind(&mut self, now: Instant, peer: SocketAddr, channel: u16) {
        self.start(now, Op::ChannelBind { peer, channel });
    }

    /// Refresh the allocation; `lifetime` 0 deletes it.
    pub fn refresh(&mut self, now: Instant, lifetime: u32) {
        self.start(now, Op::Refresh { lifetime });
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid_counter = self.tid_counter.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.tid_prefix);
        tid[8..].copy_from_slice(&self.tid_counter.to_be_bytes());
        tid
    }

    fn start(&mut self, now: Instant, op: Op) {
        if op != Op::Allocate && self.key.is_none() {
            self.events
                .push_back(SessionEvent::Failed(ClientError::NotAllocated(op)));
            return;
        }
        let tid = self.next_tid();
        let bytes = self.encode(&op, tid);
        self.transmits.push_back(bytes.clone());
        self.transactions.push(Transaction {
            tid,
            authenticated: self.key.is_some(),
            op,
            bytes,
            sends: 1,
            next_send: now + INITIAL_RTO,
            rto: INITIAL_RTO,
        });
    }

    /// Build the request for `op`, with credentials once we have a nonce.
    fn encode(&self, op: &Op, tid: TransactionId) -> Vec<u8> {
        let mut b = match op {
            Op::Allocate => {
                let mut b = Builder::new(st::ALLOCATE, Class::Request, tid);
                // Protocol 17 (UDP) in the first byte, then RFFU zeros.
                b.u32(st::REQUESTED_TRANSPORT, 17 << 24)
                    .u32(st::LIFETIME, REQUESTED_LIFETIME);
                b
            }
            Op::Refresh { lifetime } => {
                let mut b = Builder::new(st::REFRESH, Class::Request, tid);
                b.u32(st::LIFETIME, *lifetime);
                b
            }
            Op::CreatePermission { peer } => {
                let mut b = Builder::new(st::CREATE_PERMISSION, Class::Request, tid);
                b.xor_address(st::XOR_PEER_ADDRESS, *peer);
                b
            }
            Op::ChannelBind { peer, channel } => {
                let mut b = Builder::new(st::CHANNEL_BIND, Class::Request, tid);
                let [hi, lo] = channel.to_be_bytes();
                b.attr(st::CHANNEL_NUMBER, &[hi, lo, 0, 0])
                    .xor_address(st::XOR_PEER_ADDRESS, *peer);
                b
            }
        };
        if let (Some(key), Some(realm), Some(nonce)) = (&self.key, &self.realm, &self.nonce) {
            b.attr(st::USERNAME, self.username.as_bytes())
                .attr(st::REALM, realm.as_bytes())
                .attr(st::NONCE, nonce)
                .integrity(key);
        }
        b.fingerprint().finish()
    }

    /// Answer to one of our transactions.
    fn handle_answer(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(i) = self.transactions.iter().position(|t| t.tid == msg.tid) else {
            return; // late duplicate of something already answered
        };
        // Authenticated answers must carry a valid MAC; an answer that fails
        // it is not from the server (or is corrupt) and is ignored, so the
        // retransmission timer still runs.
        if let Some(key) = &self.key {
            if msg.has_integrity() && !msg.verify_integrity(key) {
                return;
            }
        }
        let t = self.transactions.swap_remove(i);
        match msg.class {
            Class::Success => self.on_success(now, t.op, msg),
            Class::Error => {
                let code = msg.error_code().unwrap_or(0);
                self.on_error(now, t, code, msg);
            }
            _ => {}
        }
    }

    fn on_error(&mut self, now: Instant, t: Transaction, code: u16, msg: &Message<'_>) {
        let retry = match code {
            // First leg of the long-term handshake: learn realm and nonce.
            401 if !t.authenticated => {
                let realm = msg.get(st::REALM).map(|r| String::from_utf8_lossy(r));
                match (realm, msg.get(st::NONCE)) {
                    (Some(realm), Some(nonce)) => {
                        self.key = Some(long_term_key(&self.username, &realm, &self.password));
                        self.realm = Some(realm.into_owned());
                        self.nonce = Some(nonce.to_vec());
                        true
                    }
                    _ => false,
                }
            }
            // Stale nonce: take the fresh one and try again.
            438 => match msg.get(st::NONCE) {
                Some(nonce) if self.nonce.as_deref() != Some(nonce) => {
                    self.nonce = Some(nonce.to_vec());
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if retry {
            self.start(now, t.op);
        } else {
            self.events
                .push_back(SessionEvent::Failed(ClientError::Rejected {
                    op: t.op,
                    code,
                }));
        }
    }

    fn on_success(&mut self, now: Instant, op: Op, msg: &Message<'_>) {
        match op {
            Op::Allocate => {
                let relayed = msg.xor_address(st::XOR_RELAYED_ADDRESS);
                let Some(relayed) = relayed else {
                    self.events
                        .push_back(SessionEvent::Failed(ClientError::BadAnswer {
                            op,
                            what: "XOR-RELAYED-ADDRESS",
                        }));
                    return;
                };
                self.lifetime = msg.u32(st::LIFETIME).unwrap_or(REQUESTED_LIFETIME);
                self.relayed = Some(relayed);
                self.schedule_refresh(now);
                self.events.push_back(SessionEvent::Allocated { relayed });
            }
            Op::Refresh { lifetime } => {
                if lifetime == 0 {
                    self.relayed = None;
                    self.refresh_at = None;
                    return;
                }
                self.lifetime = msg.u32(st::LIFETIME).unwrap_or(lifetime);
                self.schedule_refresh(now);
            }
            Op::CreatePermission { peer } => {
                self.events
                    .push_back(SessionEvent::PermissionCreated { peer });
            }
            Op::ChannelBind { peer, channel } => {
                if !self
                    .bindings
                    .iter()
                    .any(|b| b.peer == peer && b.channel == channel)
                {
                    self.bindings.push(Binding { peer, channel });
                    self.events
                        .push_back(SessionEvent::ChannelBound { peer, channel });
                }
            }
        }
    }

    fn schedule_refresh(&mut self, now: Instant) {
        let half = Duration::from_secs(u64::from(self.lifetime.max(2)) / 2);
        self.refresh_at = Some(now + half.min(PERMISSION_REFRESH));
    }
}

impl Session for TurnClient {
    fn allocate(&mut self, now: Instant) {
        self.start(now, Op::Allocate);
    }

    /// Permission first (what the RFC and browsers do), then the channel;
    /// both requests go out at once since the relay handles them in order.
    fn bind(&mut self, now: Instant, peer: SocketAddr, channel: u16) {
        self.create_permission(now, peer);
        self.channel_bind(now, peer, channel);
    }

    fn release(&mut self, now: Instant) {
        if self.relayed.is_some() {
            self.refresh_at = None;
            self.refresh(now, 0);
        }
    }

    fn handle_control(&mut self, now: Instant, datagram: &[u8]) {
        if let Some(msg) = Message::parse(datagram) {
            if matches!(msg.class, Class::Success | Class::Error) {
                self.handle_answer(now, &msg);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.transactions.len() {
            let t = &mut self.transactions[i];
            if t.next_send > now {
                i += 1;
                continue;
            }
            if t.sends >= MAX_SENDS {
                let t = self.transactions.swap_remove(i);
                self.events
                    .push_back(SessionEvent::Failed(ClientError::Timeout { op: t.op }));
                continue;
            }
            t.sends += 1;
            t.rto *= 2;
            t.next_send = now + t.rto;
            self.transmits.push_back(t.bytes.clone());
            i += 1;
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            self.refresh(now, REQUESTED_LIFETIME);
            let peers: Vec<(SocketAddr, u16)> =
                self.bindings.iter().map(|b| (b.peer, b.channel)).collect();
            for (peer, channel) in peers {
                self.channel_bind(now, peer, channel);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .iter()
            .map(|t| t.next_send)
            .chain(self.refresh_at)
            .min()
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }
}

/// ChannelData header length (channel number + length).
pub const CHANNEL_DATA_HEADER: usize = 4;

/// Frame `payload` as ChannelData into `out`; returns the datagram length.
/// Over UDP no padding is needed (RFC 8656 §12.5).
pub fn encode_channel_data(channel: u16, payload: &[u8], out: &mut [u8]) -> usize {
    out[0..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    out[4..4 + payload.len()].copy_from_slice(payload);
    4 + payload.len()
}

/// If `datagram` is ChannelData (first two bits 01), its channel and payload.
pub fn decode_channel_data(datagram: &[u8]) -> Option<(u16, &[u8])> {
    if datagram.len() < CHANNEL_DATA_HEADER || datagram[0] & 0xc0 != 0x40 {
        return None;
    }
    let channel = u16::from_be_bytes([datagram[0], datagram[1]]);
    let len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    datagram.get(4..4 + len).map(|p| (channel, p))
}

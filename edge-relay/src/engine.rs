//! The sans-IO TURN server: [`Relay`].
//!
//! Inputs are datagrams (from clients, from peers), answers from the driver
//! about relayed sockets it was asked to open, and the passage of time. Outputs
//! are datagrams to send ([`Transmit`] via [`Relay::poll_transmit`], or the
//! allocation-free [`Forward`] returned directly for relayed media), events for
//! the driver ([`Event`] via [`Relay::poll_event`]) and the next deadline
//! ([`Relay::poll_timeout`]). The engine never reads a clock, opens a socket
//! or spawns anything, so tests run it in simulated time.
//!
//! Two clocks come in from the host: a monotonic [`Instant`] for lifetimes
//! and timers, and unix seconds for the wall-clock expiry inside TURN REST
//! usernames and nonces (only on the client path that authenticates).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::FastMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::allocation::{Allocation, AllocationId, FiveTuple, LocalRoute, Transport};
use crate::auth::{self, AuthError, Authenticator, Credentials, MessageKey};
use crate::policy::PeerPolicy;
use crate::quota::{Bandwidth, Ledger, TokenBucket};
use crate::stats::{AuthOutcome, DropReason, Quota, Stats};
use crate::stun::message::looks_like_stun;
use crate::stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};

/// Amplification bound for unauthenticated answers: never more than this
/// many times the bytes of the request that caused them. Anyone can spoof a
/// UDP source address, so an unauthenticated answer is a free reflection:
/// the engine sends the richest answer that fits (reason phrase, FINGERPRINT,
/// password-algorithm offer) and drops the request when even the leanest
/// does not (counted as [`DropReason::Amplification`]).
pub const MAX_AMPLIFICATION: usize = 2;

/// Bytes the driver must leave free in front of a peer datagram handed to
/// [`Relay::handle_peer_datagram`]: the ChannelData header is written there
/// in place, so relaying to a client with a channel copies nothing.
pub const CHANNEL_DATA_HEADROOM: usize = 4;

const CHANNEL_MIN: u16 = 0x4000;
/// RFC 8656 §12: channels are 0x4000-0x4FFF (0x5000+ is reserved so TURN
/// does not collide with DTLS-SRTP demultiplexing, RFC 7983).
const CHANNEL_MAX: u16 = 0x4FFF;
/// RFC 5766 allowed up to 0x7FFF; some older clients (coturn's
/// turnutils_uclient) still pick from that range.
const CHANNEL_MAX_RFC5766: u16 = 0x7FFF;

/// Tunables. Defaults follow RFC 8656.
#[derive(Debug, Clone)]
pub struct Config {
    /// REALM this relay authenticates in; part of every long-term key, so it
    /// must match the realm credentials were minted for.
    pub realm: String,
    /// Fleet secret that TURN REST passwords are derived from.
    pub secret: Vec<u8>,
    /// The secret before the last rotation, still accepted for TURN
    /// passwords (never for anything else).
    pub previous_secret: Option<Vec<u8>>,
    /// Random key for stateless nonces; from the host, since the engine has
    /// no randomness of its own.
    pub nonce_key: [u8; 32],
    /// How long a nonce stays valid before the client gets 438 Stale Nonce
    /// (whole seconds count; default 600 s).
    pub nonce_lifetime: Duration,
    /// Which peer addresses allocations may get permissions for and relay to.
    pub policy: PeerPolicy,
    /// The addresses clients reach this relay's listeners at. Never a peer,
    /// whatever the policy allows: an allocation relaying to its own relay's
    /// listener nests a second allocation inside the first, which hides the
    /// real client and doubles what one credential can hold. An unspecified
    /// IP (a wildcard listener) stands for every address on that port.
    pub own_addresses: Vec<SocketAddr>,
    /// Live permissions one allocation may hold; a CreatePermission or
    /// ChannelBind needing more gets 508. 0 = no limit.
    pub max_permissions: usize,
    /// Live channels one allocation may hold; a ChannelBind needing more gets
    /// 508. 0 = no limit.
    pub max_channels: usize,
    /// Server-wide cap; Allocate beyond it gets 508.
    pub max_allocations: usize,
    /// Allocations one REST username may hold at once; beyond it 486. 0 = no
    /// limit.
    pub max_allocations_per_user: usize,
    /// Allocate requests (authenticated or not) one source IP (IPv6: /64) may
    /// send per second; the rest are dropped. 0 = no limit.
    pub allocate_rate_per_ip: u32,
    /// Per-allocation bandwidth (both directions); packets over it are dropped.
    pub bandwidth: Option<Bandwidth>,
    /// While draining, authenticated Allocates are redirected here with 300
    /// Try Alternate (ALTERNATE-SERVER) instead of refused with 508.
    pub alternate: Option<SocketAddr>,
    /// Allocation lifetime granted when the request has no LIFETIME, and the
    /// least one granted (whole seconds; default 600 s).
    pub default_lifetime: Duration,
    /// Cap on a requested allocation lifetime (whole seconds; default 3600 s).
    pub max_lifetime: Duration,
    /// How long a permission lasts after CreatePermission or ChannelBind
    /// (default 300 s, RFC 8656); a fifth of it is the sweep interval.
    pub permission_lifetime: Duration,
    /// How long a channel binding lasts after ChannelBind (default 600 s,
    /// RFC 8656).
    pub channel_lifetime: Duration,
    /// Also accept RFC 5766 channel numbers 0x5000-0x7FFF (off by default).
    pub rfc5766_channels: bool,
    /// Hand media between two allocations of this engine directly instead of
    /// through the kernel (see [`Relay::deliver_locally`]). On by default;
    /// off only to measure the difference.
    pub local_delivery: bool,
    /// SOFTWARE attribute for authenticated answers (never sent to
    /// unauthenticated clients, to keep those answers small and uninformative).
    pub software: Option<String>,
}

impl Config {
    /// RFC 8656 defaults for `realm`, the fleet `secret` and a random
    /// `nonce_key` from the host; adjust the public fields afterwards.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>, nonce_key: [u8; 32]) -> Self {
        Config {
            realm: realm.into(),
            secret: secret.into(),
            previous_secret: None,
            nonce_key,
            nonce_lifetime: Duration::from_secs(600),
            policy: PeerPolicy::default(),
            own_addresses: Vec::new(),
            // A call needs one permission and one channel per other member
            // of its room; 128 is far beyond a voice room and still bounds
            // what one allocation can make the relay remember.
            max_permissions: 128,
            max_channels: 128,
            max_allocations: 100_000,
            max_allocations_per_user: 64,
            allocate_rate_per_ip: 100,
            // A voice call needs < 100 kbit/s per direction; 1 Mbit/s leaves
            // room for Opus at its maximum and some video, not for abuse.
            bandwidth: Some(Bandwidth::kbps(1000)),
            alternate: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            rfc5766_channels: false,
            local_delivery: true,
            software: Some(concat!("tern-relay ", env!("CARGO_PKG_VERSION")).to_owned()),
        }
    }
}

/// A datagram to send, owning its bytes (control answers, Data indications).
/// Always to a client: `(transport, from, to)` is the client's 5-tuple, which
/// for TCP/TLS names the connection to write the message to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Local socket to send from: a listener or a relayed address.
    pub from: SocketAddr,
    /// The client's address.
    pub to: SocketAddr,
    /// The client leg's transport; for TCP/TLS the message goes on the
    /// connection `(from, to)` names.
    pub transport: Transport,
    /// The encoded STUN message: a control answer or a Data indication.
    pub payload: Vec<u8>,
}

/// A datagram to send whose bytes are `range` of the buffer the caller just
/// passed in: relayed media without copying or allocating. To a peer the
/// transport is always UDP; to a TCP/TLS client the driver pads ChannelData
/// to a multiple of 4 bytes when it frames it (RFC 8656 §12.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Local socket to send from: the relayed address (towards a peer) or
    /// the client's listener (towards a client).
    pub from: SocketAddr,
    /// The peer's or the client's address.
    pub to: SocketAddr,
    /// UDP towards a peer; the client leg's transport towards a client.
    pub transport: Transport,
    /// Bytes to send, as a range of the buffer the engine was handed.
    pub range: Range<usize>,
    /// For ChannelData from a client: the sending allocation and channel
    /// (where [`Relay::route_client_media`] remembers a local route).
    origin: Option<(AllocationId, u16)>,
    /// The channel's remembered local route, if it still holds.
    local: Option<LocalRoute>,
}

impl Forward {
    fn new(from: SocketAddr, to: SocketAddr, transport: Transport, range: Range<usize>) -> Self {
        Forward {
            from,
            to,
            transport,
            range,
            origin: None,
            local: None,
        }
    }
}

/// Where client media goes after [`Relay::route_client_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To a peer outside this engine: through the sending allocation's
    /// relayed socket.
    Kernel(Forward),
    /// The peer is another allocation of this engine: straight to its client.
    Local(Forward),
    /// The peer is another allocation of this engine, and nothing is left
    /// for the driver: a Data indication was queued (see
    /// [`Relay::poll_transmit`]), or the receiver refused it (no permission,
    /// over its bandwidth quota) and the drop was counted.
    Consumed,
}

impl Route {
    /// A local delivery's range, computed over the slice starting at `by`,
    /// made a range of the whole buffer.
    fn shifted(self, by: usize) -> Route {
        match self {
            Route::Local(mut f) => {
                f.range = f.range.start + by..f.range.end + by;
                Route::Local(f)
            }
            other => other,
        }
    }
}

/// Address family of a relayed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (the default when the Allocate has no REQUESTED-ADDRESS-FAMILY).
    V4,
    /// IPv6 (REQUESTED-ADDRESS-FAMILY 0x02).
    V6,
}

/// Why the driver could not open a relayed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// No relay IP of the requested family is configured (answered 440).
    #[error("no relay address of the requested family")]
    AddressFamilyNotSupported,
    /// No relay port could be bound: range exhausted or bind failed (answered
    /// 508).
    #[error("no relay port available")]
    InsufficientCapacity,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Its lifetime ran out.
    Expired,
    /// The client sent Refresh with LIFETIME 0.
    Deleted,
    /// The driver could not bind, or answered for an allocation already gone.
    Abandoned,
    /// The client's TCP/TLS connection closed (RFC 8656 §3.1: the allocation
    /// lives and dies with the connection).
    ConnectionClosed,
}

/// Things the driver must act on or may log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Open a relayed UDP socket of `family` and answer with
    /// [`Relay::relay_bound`]. The engine answers the Allocate only then,
    /// which lets a driver bind asynchronously or on another thread.
    BindRelay {
        /// The pending allocation to pass back to [`Relay::relay_bound`].
        id: AllocationId,
        /// Address family of the relayed address to open.
        family: Family,
        /// The client asked for an even port (EVEN-PORT, RFC 8656 §14.6).
        even_port: bool,
    },
    /// An allocation is live.
    Allocated {
        /// The allocation's handle.
        id: AllocationId,
        /// The client's address (its five-tuple's `client`).
        client: SocketAddr,
        /// The relayed address the driver bound for it.
        relayed: SocketAddr,
        /// The TURN REST username that authenticated the Allocate.
        username: String,
    },
    /// An allocation is gone: close `relayed` if set.
    Released {
        /// The allocation's handle; never reused.
        id: AllocationId,
        /// Its relayed address, or `None` if the driver never bound one.
        relayed: Option<SocketAddr>,
        /// Why it ended.
        reason: ReleaseReason,
    },
}

/// The TURN server state machine.
#[derive(Debug)]
pub struct Relay {
    config: Config,
    auth: Authenticator,
    allocations: FastMap<AllocationId, Allocation>,
    by_client: FastMap<FiveTuple, AllocationId>,
    by_relayed: FastMap<SocketAddr, AllocationId>,
    /// Allocations (live or pending) in total and per REST username, and
    /// the per-IP Allocate rate: shared with the other engines of this
    /// process, if any.
    ledger: Ledger,
    next_id: u64,
    /// Allocation expiry deadlines. Refreshing pushes a new entry instead of
    /// updating in place; stale entries are skipped when they surface.
    expiries: BinaryHeap<Reverse<(Instant, AllocationId)>>,
    /// Periodic sweep of expired permissions and channels.
    next_sweep: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Refuse new allocations (existing ones keep working).
    draining: bool,
}

/// An error answer under construction.
#[derive(Clone, Copy)]
struct Reject {
    code: u16,
    reason: &'static str,
}

const fn reject(code: u16, reason: &'static str) -> Reject {
    Reject { code, reason }
}

const BAD_REQUEST: Reject = reject(400, "Bad Request");
const FORBIDDEN: Reject = reject(403, "Forbidden");
const ALLOCATION_MISMATCH: Reject = reject(437, "Allocation Mismatch");
const ALLOCATION_QUOTA: Reject = reject(486, "Allocation Quota Reached");
const WRONG_CREDENTIALS: Reject = reject(441, "Wrong Credentials");
const UNSUPPORTED_TRANSPORT: Reject = reject(442, "Unsupported Transport Protocol");
const PEER_FAMILY_MISMATCH: Reject = reject(443, "Peer Address Family Mismatch");
const FAMILY_NOT_SUPPORTED: Reject = reject(440, "Address Family not Supported");
const INSUFFICIENT_CAPACITY: Reject = reject(508, "Insufficient Capacity");
const TRY_ALTERNATE: Reject = reject(300, "Try Alternate");

impl Relay {
    /// An engine with a [`Ledger`] of its own: the allocation quotas and the
    /// per-IP Allocate rate cover this engine alone.
    pub fn new(config: Config) -> Self {
        let ledger = Ledger::new(config.allocate_rate_per_ip, config.nonce_key);
        Self::with_ledger(config, ledger)
    }

    /// An engine that shares its quotas with others (one engine per core;
    /// see [`Ledger`]). The ledger's rate limit is the one that applies.
    pub fn with_ledger(config: Config, ledger: Ledger) -> Self {
        let auth = Authenticator::new(
            config.secret.clone(),
            config.realm.clone(),
            config.nonce_key,
            config.nonce_lifetime.as_secs(),
        )
        .with_previous_secret(config.previous_secret.clone());
        Relay {
            config,
            auth,
            allocations: FastMap::default(),
            by_client: FastMap::default(),
            by_relayed: FastMap::default(),
            ledger,
            next_id: 1,
            expiries: BinaryHeap::new(),
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            draining: false,
        }
    }

    /// While draining, new Allocates get 508 so clients go to another relay;
    /// existing allocations keep relaying until they end or the host stops.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether [`Relay::set_draining`] last turned draining on.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Live and pending allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// A copy of this engine's counters since it was created.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Live permissions and channel bindings over all allocations (walks
    /// them: for metrics scrapes, not the packet path).
    pub fn permission_and_channel_counts(&self, now: Instant) -> (usize, usize) {
        self.allocations.values().fold((0, 0), |(p, c), a| {
            let (ap, ac) = a.live_counts(now);
            (p + ap, c + ac)
        })
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Relay::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiries.peek().map(|Reverse((t, _))| *t);
        match (expiry, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expire allocations (and sweep permissions/channels) due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.expiries.peek().copied() {
            if t > now {
                break;
            }
            self.expiries.pop();
            if self.allocations.get(&id).is_some_and(|a| a.expires <= now) {
                self.release(id, ReleaseReason::Expired);
            }
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            for a in self.allocations.values_mut() {
                a.sweep(now);
            }
            self.next_sweep = if self.allocations.is_empty() {
                None
            } else {
                Some(now + self.config.permission_lifetime / 5)
            };
        }
    }

    /// A datagram from a client arrived at listener `local`.
    ///
    /// Returns a [`Forward`] into `data` when it is media for a peer (Send
    /// indication or ChannelData); control answers are queued for
    /// [`Relay::poll_transmit`]. Anything malformed is dropped silently.
    pub fn handle_client_datagram(
        &mut self,
        now: Instant,
        unix_secs: u64,
        from: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) -> Option<Forward> {
        self.handle_client_message(now, unix_secs, FiveTuple::udp(from, local), data)
    }

    /// One message from a client over any transport: a UDP datagram, or one
    /// STUN message / ChannelData frame cut out of a TCP/TLS stream by the
    /// driver (`ft.transport` says which; answers go back on the same one).
    pub fn handle_client_message(
        &mut self,
        now: Instant,
        unix_secs: u64,
        ft: FiveTuple,
        data: &[u8],
    ) -> Option<Forward> {
        self.stats.client_packets_in += 1;
        self.stats.client_bytes_in += data.len() as u64;
        let result = match data.first().map(|b| b >> 6) {
            Some(0b01) => self.client_channel_data(now, ft, data),
            Some(0b00) if looks_like_stun(data) => match Message::parse(data) {
                Err(_) => Err(DropReason::Malformed),
                Ok(msg) => match msg.class {
                    Class::Request => {
                        self.handle_request(now, unix_secs, ft, &msg);
                        return None;
                    }
                    Class::Indication if msg.method == Method::SEND => {
                        self.send_indication(now, ft, &msg)
                    }
                    // Responses (we send no requests) and other indications.
                    _ => Err(DropReason::Unexpected),
                },
            },
            _ => Err(DropReason::Malformed),
        };
        result.map_err(|r| self.stats.drop(r)).ok()
    }

    /// The client's TCP/TLS connection is gone: its allocation goes with it.
    pub fn client_closed(&mut self, ft: FiveTuple) {
        if let Some(&id) = self.by_client.get(&ft) {
            self.release(id, ReleaseReason::ConnectionClosed);
        }
    }

    /// A datagram from `peer` arrived on relayed address `relayed`.
    ///
    /// `buf[CHANNEL_DATA_HEADROOM..]` holds the payload; the headroom in front
    /// is scratch. Returns a [`Forward`] into `buf` when the client has a
    /// channel for this peer, otherwise queues a Data indication.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
    ) -> Option<Forward> {
        let id = self.by_relayed.get(&relayed).copied();
        self.deliver_to(now, id, peer, buf)
    }

    /// A datagram from `peer` for allocation `id` (`None`: no allocation has
    /// the relayed address it came to), in `buf` behind
    /// [`CHANNEL_DATA_HEADROOM`] bytes: towards the client, or dropped.
    fn deliver_to(
        &mut self,
        now: Instant,
        id: Option<AllocationId>,
        peer: SocketAddr,
        buf: &mut [u8],
    ) -> Option<Forward> {
        if buf.len() < CHANNEL_DATA_HEADROOM {
            return None;
        }
        let payload_len = buf.len() - CHANNEL_DATA_HEADROOM;
        self.stats.peer_packets_in += 1;
        self.stats.peer_bytes_in += payload_len as u64;
        let Some(alloc) = id.and_then(|id| self.allocations.get_mut(&id)) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        // RFC 8656 §10.3: only peers with a permission reach the client.
        if !alloc.is_permitted(peer.ip(), now) {
            self.stats.drop(DropReason::NoPermission);
            return None;
        }
        if !admit_to_client(alloc, &self.config, &mut self.stats, now, payload_len) {
            return None;
        }
        let ft = alloc.five_tuple;
        if let Some(number) = alloc.channel_for(peer, now) {
            return channel_data_to(ft, number, buf);
        }
        let mut b =
            MessageBuilder::new(Method::DATA, Class::Indication, indication_tid(&self.stats));
        b.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, &buf[CHANNEL_DATA_HEADROOM..]);
        self.transmit(ft, b.finish());
        None
    }

    /// Where client media (`f`, from [`Relay::handle_client_message`] over
    /// `buf`) goes next. Tern's signaling puts every member of a room on the
    /// room's relay, so a call's media is nearly always from one allocation
    /// of a relay to another of the same relay: then it is delivered here,
    /// as if it had arrived on the receiver's relayed socket from `f.from`,
    /// without the round trip through the kernel (a send and a receive of a
    /// datagram that never leaves the host). Same rules as the socket path:
    /// the receiving allocation needs a permission for the sender's relayed
    /// address and has its own bandwidth quota.
    ///
    /// [`Route::Local`] carries the [`Forward`] towards the receiving client,
    /// as [`Relay::handle_peer_datagram`] returns it, with its range into
    /// `buf`. `f.range` always starts at least [`CHANNEL_DATA_HEADROOM`]
    /// bytes into `buf` (behind a ChannelData header or STUN attributes),
    /// which is where the outgoing header is written.
    pub fn route_client_media(&mut self, now: Instant, f: Forward, buf: &mut [u8]) -> Route {
        let Some(start) = f.range.start.checked_sub(CHANNEL_DATA_HEADROOM) else {
            return Route::Kernel(f);
        };
        if let Some(route) = f.local {
            if let Some(r) = self.deliver_on_route(now, route, &mut buf[start..f.range.end]) {
                return r.shifted(start);
            }
            // The receiver is gone (its port may be someone else's now).
            if let Some((id, number)) = f.origin {
                if let Some(a) = self.allocations.get_mut(&id) {
                    a.set_route(number, None);
                }
            }
        }
        // One lookup decides and finds the receiver.
        let receiver = self
            .config
            .local_delivery
            .then(|| self.by_relayed.get(&f.to).copied())
            .flatten();
        let Some(id) = receiver else {
            return Route::Kernel(f);
        };
        let out = self.deliver_to(now, Some(id), f.from, &mut buf[start..f.range.end]);
        match out {
            Some(out) => {
                if let Some((sender, number)) = f.origin {
                    self.remember_route(now, sender, number, f.from, id, f.to);
                }
                self.stats.local_deliveries += 1;
                Route::Local(out).shifted(start)
            }
            None => Route::Consumed,
        }
    }

    /// [`Relay::deliver_to`] for a remembered route: only what can change
    /// before `route.until` is looked at (the receiver's existence and
    /// bandwidth). `None` when the receiver is gone: nothing is counted then,
    /// and the caller takes the full path.
    fn deliver_on_route(
        &mut self,
        now: Instant,
        route: LocalRoute,
        buf: &mut [u8],
    ) -> Option<Route> {
        let payload_len = buf.len().checked_sub(CHANNEL_DATA_HEADROOM)?;
        let alloc = self.allocations.get_mut(&route.receiver)?;
        self.stats.peer_packets_in += 1;
        self.stats.peer_bytes_in += payload_len as u64;
        if !admit_to_client(alloc, &self.config, &mut self.stats, now, payload_len) {
            return Some(Route::Consumed);
        }
        match channel_data_to(alloc.five_tuple, route.channel, buf) {
            Some(f) => {
                self.stats.local_deliveries += 1;
                Some(Route::Local(f))
            }
            None => Some(Route::Consumed),
        }
    }

    /// After a packet from `sender`'s channel `number` (relayed address
    /// `from`) reached `receiver` (relayed address `to`) over a channel:
    /// remember the route until the first of the permissions and the
    /// receiver's channel it relied on expires.
    fn remember_route(
        &mut self,
        now: Instant,
        sender: AllocationId,
        number: u16,
        from: SocketAddr,
        receiver: AllocationId,
        to: SocketAddr,
    ) {
        let Some(r) = self.allocations.get(&receiver) else {
            return;
        };
        let (Some((channel, channel_until)), Some(permitted_until)) =
            (r.channel_expiry_for(from), r.permission_expiry(from.ip()))
        else {
            return;
        };
        let Some(s) = self.allocations.get_mut(&sender) else {
            return;
        };
        let Some(sender_permitted_until) = s.permission_expiry(to.ip()) else {
            return;
        };
        let until = channel_until
            .min(permitted_until)
            .min(sender_permitted_until);
        if until > now {
            s.set_route(
                number,
                Some(LocalRoute {
                    receiver,
                    channel,
                    until,
                }),
            );
        }
    }

    /// The driver's answer to [`Event::BindRelay`].
    pub fn relay_bound(
        &mut self,
        now: Instant,
        id: AllocationId,
        result: Result<SocketAddr, BindError>,
    ) {
        let pending = self
            .allocations
            .get(&id)
            .is_some_and(|a| a.relayed.is_none());
        if !pending {
            // Allocation expired meanwhile (or bogus id): hand the port back.
            if let Ok(relayed) = result {
                self.events.push_back(Event::Released {
                    id,
                    relayed: Some(relayed),
                    reason: ReleaseReason::Abandoned,
                });
            }
            return;
        }
        let relayed = match result {
            Ok(r) => r,
            Err(e) => {
                let a = &self.allocations[&id];
                let (ft, tid, key) = (a.five_tuple, a.allocate_tid, a.key);
                let rej = match e {
                    BindError::AddressFamilyNotSupported => FAMILY_NOT_SUPPORTED,
                    BindError::InsufficientCapacity => INSUFFICIENT_CAPACITY,
                };
                self.release(id, ReleaseReason::Abandoned);
                self.send_error(ft, Method::ALLOCATE, tid, rej, Some(&key), |_| {});
                return;
            }
        };
        let software = self.config.software.clone();
        let a = self.allocations.get_mut(&id).expect("checked above");
        a.relayed = Some(relayed);
        a.expires = now + Duration::from_secs(a.granted_lifetime.into());
        let ft = a.five_tuple;
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Success, a.allocate_tid);
        b.xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
            .u32(attr::LIFETIME, a.granted_lifetime)
            .xor_address(attr::XOR_MAPPED_ADDRESS, ft.client);
        if let Some(s) = &software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        a.key.sign(&mut b);
        let response = b.fingerprint().finish();
        a.allocate_response = Some(response.clone());
        let expires = a.expires;
        let username = a.username.clone();
        self.by_relayed.insert(relayed, id);
        self.expiries.push(Reverse((expires, id)));
        self.events.push_back(Event::Allocated {
            id,
            client: ft.client,
            relayed,
            username,
        });
        self.transmit(ft, response);
    }

    // ---- client media -------------------------------------------------

    fn client_channel_data(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
    ) -> Result<Forward, DropReason> {
        if data.len() < 4 {
            return Err(DropReason::Malformed);
        }
        let number = u16::from_be_bytes([data[0], data[1]]);
        let len = u16::from_be_bytes([data[2], data[3]]) as usize;
        if !self.channel_in_range(number) || 4 + len > data.len() {
            return Err(DropReason::Malformed);
        }
        let id = *self.by_client.get(&ft).ok_or(DropReason::NoAllocation)?;
        let alloc = self
            .allocations
            .get_mut(&id)
            .ok_or(DropReason::NoAllocation)?;
        let (peer, route) = alloc
            .channel_and_route(number, now)
            .ok_or(DropReason::NoChannel)?;
        let local = route.filter(|_| self.config.local_delivery);
        let from = admit_media(
            alloc,
            &self.config,
            &mut self.stats,
            now,
            peer,
            len,
            local.is_some(),
        )?;
        Ok(Forward {
            origin: Some((id, number)),
            local,
            ..Forward::new(from, peer, Transport::Udp, 4..4 + len)
        })
    }

    fn send_indication(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Forward, DropReason> {
        let alloc = self
            .by_client
            .get(&ft)
            .and_then(|id| self.allocations.get_mut(id))
            .ok_or(DropReason::NoAllocation)?;
        let (Some(peer), Some(data)) = (
            msg.get(attr::XOR_PEER_ADDRESS)
                .and_then(|v| attr::decode_xor_address(v, &msg.transaction_id)),
            msg.get(attr::DATA),
        ) else {
            return Err(DropReason::Malformed);
        };
        if is_own_address(&self.config.own_addresses, ft.local, peer) {
            return Err(DropReason::OwnAddress);
        }
        let from = admit_media(
            alloc,
            &self.config,
            &mut self.stats,
            now,
            peer,
            data.len(),
            false,
        )?;
        // DATA's value is a slice of the datagram: forward it in place.
        let start = data.as_ptr() as usize - msg.raw().as_ptr() as usize;
        Ok(Forward::new(
            from,
            peer,
            Transport::Udp,
            start..start + data.len(),
        ))
    }

    // ---- requests -----------------------------------------------------

    fn handle_request(&mut self, now: Instant, unix_secs: u64, ft: FiveTuple, msg: &Message<'_>) {
        let tid = msg.transaction_id;
        let req_len = msg.raw().len();
        match msg.method {
            Method::BINDING => {
                if let Some(unknown) = unknown_attributes(msg) {
                    return self.send_unknown(ft, msg.method, tid, &unknown, None, req_len);
                }
                // Plain STUN: no auth, no SOFTWARE, just the mapped address
                // (and FINGERPRINT when it fits the amplification budget).
                self.answer_unauthenticated(ft, req_len, |rich| {
                    let mut b = MessageBuilder::new(Method::BINDING, Class::Success, tid);
                    b.xor_address(attr::XOR_MAPPED_ADDRESS, ft.client);
                    if rich {
                        b.fingerprint();
                    }
                    b.finish()
                });
            }
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND => {
                // Counted before authentication: the 401 leg is what a flood
                // of spoofed Allocates costs us.
                if msg.method == Method::ALLOCATE
                    && !self.ledger.allow_allocate(ft.client.ip(), unix_secs)
                {
                    self.stats.drop(DropReason::RateLimited);
                    self.stats.quota_hit(Quota::AllocateRate);
                    return;
                }
                let creds = match self.auth.authenticate(msg, unix_secs, ft.client) {
                    Ok(c) => c,
                    Err(e) => return self.auth_failed(unix_secs, ft, msg, e),
                };
                if let Some(unknown) = unknown_attributes(msg) {
                    return self.send_unknown(
                        ft,
                        msg.method,
                        tid,
                        &unknown,
                        Some(&creds.key),
                        req_len,
                    );
                }
                let result = match msg.method {
                    Method::ALLOCATE => self.allocate(now, ft, msg, &creds),
                    Method::REFRESH => self.refresh(now, ft, msg, &creds),
                    Method::CREATE_PERMISSION => self.create_permission(now, ft, msg, &creds),
                    _ => self.channel_bind(now, ft, msg, &creds),
                };
                if let Err(rej) = result {
                    self.send_error(ft, msg.method, tid, rej, Some(&creds.key), |_| {});
                }
            }
            _ => self.answer_unauthenticated(ft, req_len, |rich| {
                error_message(msg.method, tid, BAD_REQUEST, rich)
            }),
        }
    }

    fn auth_failed(&mut self, unix_secs: u64, ft: FiveTuple, msg: &Message<'_>, e: AuthError) {
        let tid = msg.transaction_id;
        let req_len = msg.raw().len();
        let (rej, outcome) = match e {
            AuthError::Incomplete | AuthError::BadAlgorithm => {
                self.stats.auth_outcome(AuthOutcome::BadRequest);
                return self.answer_unauthenticated(ft, req_len, |rich| {
                    error_message(msg.method, tid, BAD_REQUEST, rich)
                });
            }
            AuthError::StaleNonce => (reject(438, "Stale Nonce"), AuthOutcome::StaleNonce),
            AuthError::Challenge => (reject(401, "Unauthorized"), AuthOutcome::Challenged),
            AuthError::Rejected(_) => (reject(401, "Unauthorized"), AuthOutcome::Rejected),
        };
        self.stats.auth_outcome(outcome);
        // 401/438 carry a fresh nonce and the realm so the client can retry;
        // they cannot carry MESSAGE-INTEGRITY (no agreed key yet). Richest
        // first: the RFC 8489 password-algorithm offer, then the reason
        // phrase and FINGERPRINT, as far as the request's size allows.
        let build = |offer: bool, rich: bool| {
            let nonce = self.auth.nonce(unix_secs, ft.client, offer);
            let mut b = MessageBuilder::new(msg.method, Class::Error, tid);
            b.error(rej.code, if rich { rej.reason } else { "" })
                .attr(attr::REALM, self.auth.realm().as_bytes())
                .attr(attr::NONCE, nonce.as_bytes());
            if offer {
                b.attr(attr::PASSWORD_ALGORITHMS, &auth::PASSWORD_ALGORITHMS);
            }
            if rich {
                b.fingerprint();
            }
            b.finish()
        };
        let budget = req_len * MAX_AMPLIFICATION;
        let answer = [(true, true), (true, false), (false, true), (false, false)]
            .into_iter()
            .map(|(offer, rich)| build(offer, rich))
            .find(|m| m.len() <= budget);
        match answer {
            Some(m) => self.transmit(ft, m),
            None => self.stats.drop(DropReason::Amplification),
        }
    }

    /// Send the rich form of an unauthenticated answer if it stays within
    /// [`MAX_AMPLIFICATION`] of the request, else the lean one, else nothing.
    fn answer_unauthenticated(
        &mut self,
        ft: FiveTuple,
        req_len: usize,
        build: impl Fn(bool) -> Vec<u8>,
    ) {
        let budget = req_len * MAX_AMPLIFICATION;
        let rich = build(true);
        if rich.len() <= budget {
            return self.transmit(ft, rich);
        }
        let lean = build(false);
        if lean.len() <= budget {
            return self.transmit(ft, lean);
        }
        self.stats.drop(DropReason::Amplification);
    }

    fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        creds: &Credentials,
    ) -> Result<(), Reject> {
        if let Some(id) = self.by_client.get(&ft) {
            let a = &self.allocations[id];
            if a.allocate_tid != msg.transaction_id {
                return Err(ALLOCATION_MISMATCH);
            }
            // Retransmission: repeat our answer, or stay quiet while the
            // relayed socket is still being bound.
            if let Some(resp) = a.allocate_response.clone() {
                self.transmit(ft, resp);
            }
            return Ok(());
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return Err(BAD_REQUEST),
            Some(v) if v.len() != 4 => return Err(BAD_REQUEST),
            Some(v) if v[0] != attr::TRANSPORT_UDP => return Err(UNSUPPORTED_TRANSPORT),
            Some(_) => {}
        }
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Family::V4,
            Some([attr::FAMILY_IPV4, ..]) => Family::V4,
            Some([attr::FAMILY_IPV6, ..]) => Family::V6,
            Some(_) => return Err(FAMILY_NOT_SUPPORTED),
        };
        // EVEN-PORT: an even port is easy; reserving the next one too (R bit)
        // needs RESERVATION-TOKEN, which we do not offer, so that gets 508
        // as RFC 8656 §7.2 allows.
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => false,
            Some([flags, ..]) if flags & 0x80 == 0 => true,
            Some([_, ..]) => return Err(INSUFFICIENT_CAPACITY),
            Some([]) => return Err(BAD_REQUEST),
        };
        if self.draining {
            if let Some(alt) = self.config.alternate {
                // RFC 8489 §10 / RFC 8656 §7.2: 300 Try Alternate, signed, so
                // only an authenticated client is ever redirected.
                let tid = msg.transaction_id;
                let key = creds.key;
                self.send_error(ft, msg.method, tid, TRY_ALTERNATE, Some(&key), |b| {
                    b.attr_with(attr::ALTERNATE_SERVER, |out| attr::encode_address(alt, out));
                });
                return Ok(());
            }
            return Err(INSUFFICIENT_CAPACITY);
        }
        let lifetime = self.granted_lifetime(msg)?;
        if let Err(q) = self.ledger.reserve(
            &creds.username,
            self.config.max_allocations,
            self.config.max_allocations_per_user,
        ) {
            self.stats.quota_hit(q);
            return Err(match q {
                Quota::UserAllocations => ALLOCATION_QUOTA,
                _ => INSUFFICIENT_CAPACITY,
            });
        }
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        // Until the driver binds, the allocation lives at most a short while:
        // a driver that never answers must not leak it.
        let bind_deadline = now + Duration::from_secs(30);
        let bucket = TokenBucket::new(
            now,
            &self.config.bandwidth.unwrap_or(Bandwidth {
                bytes_per_sec: 0,
                burst_bytes: 0,
            }),
        );
        let alloc = Allocation::new(
            ft,
            creds.username.clone(),
            creds.key,
            bind_deadline,
            msg.transaction_id,
            lifetime,
            bucket,
        );
        self.allocations.insert(id, alloc);
        self.by_client.insert(ft, id);
        self.expiries.push(Reverse((bind_deadline, id)));
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.permission_lifetime / 5);
        }
        self.events.push_back(Event::BindRelay {
            id,
            family,
            even_port,
        });
        Ok(())
    }

    /// RFC 8656 §7.2 step 8: min(requested, max), but never below default.
    fn granted_lifetime(&self, msg: &Message<'_>) -> Result<u32, Reject> {
        let default = self.config.default_lifetime.as_secs() as u32;
        let max = self.config.max_lifetime.as_secs() as u32;
        match msg.get(attr::LIFETIME) {
            None => Ok(default),
            Some(v) => {
                let req = attr::decode_u32(v).ok_or(BAD_REQUEST)?;
                Ok(req.min(max).max(default))
            }
        }
    }

    /// The client's allocation, checked against its credentials.
    fn owned(&mut self, ft: FiveTuple, creds: &Credentials) -> Result<AllocationId, Reject> {
        let id = *self.by_client.get(&ft).ok_or(ALLOCATION_MISMATCH)?;
        let a = &self.allocations[&id];
        if a.relayed.is_none() {
            return Err(ALLOCATION_MISMATCH);
        }
        if a.username != creds.username {
            return Err(WRONG_CREDENTIALS);
        }
        Ok(id)
    }

    fn refresh(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        creds: &Credentials,
    ) -> Result<(), Reject> {
        let id = self.owned(ft, creds)?;
        let requested = match msg.get(attr::LIFETIME) {
            Some(v) => Some(attr::decode_u32(v).ok_or(BAD_REQUEST)?),
            None => None,
        };
        let lifetime = if requested == Some(0) {
            self.release(id, ReleaseReason::Deleted);
            0
        } else {
            let lifetime = self.granted_lifetime(msg)?;
            let a = self.allocations.get_mut(&id).expect("owned");
            a.expires = now + Duration::from_secs(lifetime.into());
            self.expiries.push(Reverse((a.expires, id)));
            lifetime
        };
        self.send_success(ft, msg, &creds.key, |b| {
            b.u32(attr::LIFETIME, lifetime);
        });
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        creds: &Credentials,
    ) -> Result<(), Reject> {
        let id = self.owned(ft, creds)?;
        let relayed = self.allocations[&id].relayed.expect("owned");
        // Validate every peer first: the request is all or nothing.
        let mut peers = Vec::new();
        for a in msg
            .attributes()
            .iter()
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
        {
            let peer = attr::decode_xor_address(a.value, &msg.transaction_id).ok_or(BAD_REQUEST)?;
            self.check_peer(relayed, peer)?;
            peers.push(peer.ip());
        }
        if peers.is_empty() {
            return Err(BAD_REQUEST);
        }
        let until = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let a = self.allocations.get_mut(&id).expect("owned");
        if !a.has_room_for_permissions(&peers, now, max) {
            self.stats.quota_hit(Quota::Permissions);
            return Err(INSUFFICIENT_CAPACITY);
        }
        for ip in peers {
            a.permit(ip, until);
        }
        self.send_success(ft, msg, &creds.key, |_| {});
        Ok(())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        creds: &Credentials,
    ) -> Result<(), Reject> {
        let id = self.owned(ft, creds)?;
        let relayed = self.allocations[&id].relayed.expect("owned");
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some(&[hi, lo, _, _]) => u16::from_be_bytes([hi, lo]),
            _ => return Err(BAD_REQUEST),
        };
        if !self.channel_in_range(number) {
            return Err(BAD_REQUEST);
        }
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::decode_xor_address(v, &msg.transaction_id))
            .ok_or(BAD_REQUEST)?;
        self.check_peer(relayed, peer)?;
        // A permission is only an address, but a channel names a port too:
        // here the relay's own listeners can be told apart from its relayed
        // addresses, which share their IP.
        if is_own_address(&self.config.own_addresses, ft.local, peer) {
            return Err(FORBIDDEN);
        }
        let channel_until = now + self.config.channel_lifetime;
        let permission_until = now + self.config.permission_lifetime;
        let (max_channels, max_permissions) =
            (self.config.max_channels, self.config.max_permissions);
        let a = self.allocations.get_mut(&id).expect("owned");
        if !a.has_room_for_channel(number, now, max_channels) {
            self.stats.quota_hit(Quota::Channels);
            return Err(INSUFFICIENT_CAPACITY);
        }
        if !a.has_room_for_permissions(&[peer.ip()], now, max_permissions) {
            self.stats.quota_hit(Quota::Permissions);
            return Err(INSUFFICIENT_CAPACITY);
        }
        a.bind_channel(number, peer, channel_until)
            .map_err(|_| BAD_REQUEST)?;
        // A channel bind also installs or refreshes the peer's permission.
        a.permit(peer.ip(), permission_until);
        self.send_success(ft, msg, &creds.key, |_| {});
        Ok(())
    }

    fn channel_in_range(&self, number: u16) -> bool {
        let max = if self.config.rfc5766_channels {
            CHANNEL_MAX_RFC5766
        } else {
            CHANNEL_MAX
        };
        (CHANNEL_MIN..=max).contains(&number)
    }

    fn check_peer(&self, relayed: SocketAddr, peer: SocketAddr) -> Result<(), Reject> {
        if relayed.is_ipv4() != peer.is_ipv4() {
            return Err(PEER_FAMILY_MISMATCH);
        }
        if !self.config.policy.is_allowed(peer.ip()) {
            return Err(FORBIDDEN);
        }
        Ok(())
    }

    // ---- bookkeeping --------------------------------------------------

    fn release(&mut self, id: AllocationId, reason: ReleaseReason) {
        let Some(a) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&a.five_tuple);
        self.ledger.release(&a.username);
        if let Some(r) = a.relayed {
            self.by_relayed.remove(&r);
        }
        if self.allocations.is_empty() {
            self.next_sweep = None;
        }
        self.events.push_back(Event::Released {
            id,
            relayed: a.relayed,
            reason,
        });
    }

    /// Queue an answer to a client. The only way anything reaches a client:
    /// always to the 5-tuple the request came from, never to an address a
    /// message names (RESPONSE-ADDRESS and friends are not honoured).
    fn transmit(&mut self, ft: FiveTuple, payload: Vec<u8>) {
        self.stats.control_packets_out += 1;
        self.stats.control_bytes_out += payload.len() as u64;
        self.transmits.push_back(Transmit {
            from: ft.local,
            to: ft.client,
            transport: ft.transport,
            payload,
        });
    }

    fn send_success(
        &mut self,
        ft: FiveTuple,
        msg: &Message<'_>,
        key: &MessageKey,
        extra: impl FnOnce(&mut MessageBuilder),
    ) {
        let mut b = MessageBuilder::new(msg.method, Class::Success, msg.transaction_id);
        extra(&mut b);
        if let Some(s) = &self.config.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        key.sign(&mut b);
        b.fingerprint();
        self.transmit(ft, b.finish());
    }

    /// Error answer to an authenticated request, signed with its key.
    fn send_error(
        &mut self,
        ft: FiveTuple,
        method: Method,
        tid: TransactionId,
        rej: Reject,
        key: Option<&MessageKey>,
        extra: impl FnOnce(&mut MessageBuilder),
    ) {
        let mut b = MessageBuilder::new(method, Class::Error, tid);
        b.error(rej.code, rej.reason);
        extra(&mut b);
        if let Some(key) = key {
            key.sign(&mut b);
        }
        b.fingerprint();
        self.transmit(ft, b.finish());
    }

    fn send_unknown(
        &mut self,
        ft: FiveTuple,
        method: Method,
        tid: TransactionId,
        unknown: &[u16],
        key: Option<&MessageKey>,
        req_len: usize,
    ) {
        let build = |rich: bool| {
            let mut b = MessageBuilder::new(method, Class::Error, tid);
            b.error(420, if rich { "Unknown Attribute" } else { "" })
                .attr_with(attr::UNKNOWN_ATTRIBUTES, |out| {
                    for t in unknown {
                        out.extend_from_slice(&t.to_be_bytes());
                    }
                });
            if let Some(key) = key {
                key.sign(&mut b);
            }
            if rich || key.is_some() {
                b.fingerprint();
            }
            b.finish()
        };
        match key {
            Some(_) => {
                let m = build(true);
                self.transmit(ft, m);
            }
            None => self.answer_unauthenticated(ft, req_len, build),
        }
    }
}

/// An unsigned error answer; `rich` adds the reason phrase and FINGERPRINT.
fn error_message(method: Method, tid: TransactionId, rej: Reject, rich: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new(method, Class::Error, tid);
    b.error(rej.code, if rich { rej.reason } else { "" });
    if rich {
        b.fingerprint();
    }
    b.finish()
}

/// Is `peer` one of the relay's listeners: one of `own`, or the `listener`
/// the request came in on (which the engine knows even when the host could
/// not say in advance, as with a listener on port 0)? A wildcard IP
/// matches any; `::ffff:a.b.c.d` is the IPv4 address it maps.
fn is_own_address(own: &[SocketAddr], listener: SocketAddr, peer: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let ip = canonical(peer.ip());
    own.iter()
        .chain([&listener])
        .any(|o| o.port() == peer.port() && (o.ip().is_unspecified() || canonical(o.ip()) == ip))
}

/// Checks shared by ChannelData and Send from a client (bound, permission,
/// bandwidth), then counts the packet; returns the relayed address to send
/// from. A free function over split borrows so the packet path looks the
/// allocation up once.
///
/// `routed`: the channel has a live [`LocalRoute`], whose `until` already
/// stands for the permission.
fn admit_media(
    alloc: &mut Allocation,
    config: &Config,
    stats: &mut Stats,
    now: Instant,
    peer: SocketAddr,
    len: usize,
    routed: bool,
) -> Result<SocketAddr, DropReason> {
    let from = alloc.relayed.ok_or(DropReason::NoAllocation)?;
    if !routed && !alloc.is_permitted(peer.ip(), now) {
        return Err(DropReason::NoPermission);
    }
    if let Some(limit) = &config.bandwidth {
        if !alloc.bucket.take(now, len as u64, limit) {
            stats.quota_hit(Quota::Bandwidth);
            return Err(DropReason::Bandwidth);
        }
    }
    stats.relayed_packets += 1;
    stats.relayed_bytes += len as u64;
    Ok(from)
}

/// The receiving allocation's side of a peer datagram of `payload_len`
/// bytes bound for its client: its bandwidth quota, then the count. False
/// (counted as a bandwidth drop) when it is over the quota.
fn admit_to_client(
    alloc: &mut Allocation,
    config: &Config,
    stats: &mut Stats,
    now: Instant,
    payload_len: usize,
) -> bool {
    if let Some(limit) = &config.bandwidth {
        if !alloc.bucket.take(now, payload_len as u64, limit) {
            stats.drop(DropReason::Bandwidth);
            stats.quota_hit(Quota::Bandwidth);
            return false;
        }
    }
    stats.relayed_packets += 1;
    stats.relayed_bytes += payload_len as u64;
    true
}

/// Write the ChannelData header for channel `number` into the headroom in
/// front of the payload in `buf`: the whole of `buf` then goes to `ft`'s
/// client. `None` for a payload too long for the header's length field.
fn channel_data_to(ft: FiveTuple, number: u16, buf: &mut [u8]) -> Option<Forward> {
    let len = u16::try_from(buf.len() - CHANNEL_DATA_HEADROOM).ok()?;
    buf[0..2].copy_from_slice(&number.to_be_bytes());
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    // Over UDP the padding to 4 bytes is optional (RFC 8656 §12.5); stream
    // drivers add it when framing.
    Some(Forward::new(
        ft.local,
        ft.client,
        ft.transport,
        0..buf.len(),
    ))
}

/// Comprehension-required attributes we do not implement, if any.
fn unknown_attributes(msg: &Message<'_>) -> Option<Vec<u16>> {
    let unknown: Vec<u16> = msg
        .attributes()
        .iter()
        .map(|a| a.typ)
        .filter(|&t| !attr::is_understood(t))
        .take(16)
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}

/// Indications need a transaction id but nobody matches on it; derive one
/// from a counter rather than asking the host for randomness per packet.
fn indication_tid(stats: &Stats) -> TransactionId {
    let mut tid = [0u8; 12];
    tid[4..].copy_from_slice(&stats.relayed_packets.to_be_bytes());
    tid
}

//! One allocation: a client 5-tuple, its relayed address, and the
//! permissions and channel bindings that say which peers may use it.

use crate::FastMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::auth::MessageKey;
use crate::quota::TokenBucket;
use crate::stun::TransactionId;

/// How a client reaches us. The relayed leg is always UDP; this is only the
/// client <-> relay leg (RFC 8656 §3.1: TURN over TCP/TLS, not RFC 6062).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// Plain UDP datagrams, one message each (the default, and the only
    /// transport toward peers).
    #[default]
    Udp,
    /// TURN over TCP: messages and ChannelData framed on one connection.
    Tcp,
    /// TURN over TLS: as [`Transport::Tcp`], inside a TLS session.
    Tls,
}

impl Transport {
    /// Stream transports frame messages themselves and carry ChannelData
    /// padded to 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Stable lowercase label (`udp`, `tcp`, `tls`) for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Client side of an allocation: the 5-tuple of RFC 8656 §2.2. For TCP/TLS
/// (client, local) names one connection, since the kernel never has two
/// connections with the same address pair; `transport` keeps a UDP client
/// and a TCP client with the same addresses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it (XOR-MAPPED-ADDRESS).
    pub client: SocketAddr,
    /// The server's listener address the client talks to.
    pub local: SocketAddr,
    /// The client leg's transport (UDP, TCP or TLS).
    pub transport: Transport,
}

impl FiveTuple {
    /// The five-tuple of a UDP client at `client` talking to listener `local`.
    pub fn udp(client: SocketAddr, local: SocketAddr) -> Self {
        FiveTuple {
            client,
            local,
            transport: Transport::Udp,
        }
    }
}

/// Stable handle for an allocation, never reused within one [`crate::Relay`],
/// so a late timer or a late driver answer can never hit a newer allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

/// RFC 8656 §12: a channel number stays reserved for its peer this long after
/// its binding expires, so late packets are not misdelivered to a new peer.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub(crate) struct Allocation {
    pub five_tuple: FiveTuple,
    /// `None` while the driver is still opening the relayed socket.
    pub relayed: Option<SocketAddr>,
    pub username: String,
    /// Long-term key (and integrity mechanism) of the Allocate, which signs
    /// the answer to it.
    pub key: MessageKey,
    pub expires: Instant,
    /// Transaction of the Allocate that created us, and our answer to it, so
    /// a retransmitted Allocate gets the same answer instead of 437.
    pub allocate_tid: TransactionId,
    pub allocate_response: Option<Vec<u8>>,
    /// Lifetime granted at Allocate; reported once the relay is bound.
    pub granted_lifetime: u32,
    /// Bandwidth quota, both directions together.
    pub bucket: TokenBucket,
    permissions: FastMap<IpAddr, Instant>,
    channels: Channels,
}

/// Channel numbers <-> peers, both directions, for the two hot lookups.
#[derive(Debug, Default)]
struct Channels {
    by_number: FastMap<u16, Channel>,
    by_peer: FastMap<SocketAddr, u16>,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
    /// Set when the peer is another allocation of the same engine: see
    /// [`LocalRoute`].
    route: Option<LocalRoute>,
}

/// Where a channel's media goes when its peer is another allocation of the
/// same engine (every Tern call), remembered after the first packet passed
/// every check, so the next ones skip what cannot have changed before
/// `until`: the sender's permission for the peer, the receiver's lookup by
/// relayed address, its permission for the sender and its channel for it.
/// Those only ever expire (a refresh extends them; a binding cannot move to
/// another number or peer before its expiry plus quarantine), and `until` is
/// the earliest of their expiries. What can end sooner is checked on every
/// packet: the sender's channel (the route lives in it), the receiver
/// still existing (ids are never reused) and both bandwidth quotas. Found
/// with `perf`: on a relay the kernel's work between packets evicts the
/// engine's maps from the cache, so each of the nine lookups of the full
/// path was a cache miss, about 1 µs a packet in all (185 ns with the maps
/// in cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalRoute {
    pub receiver: AllocationId,
    /// The receiver's channel number for the sender's relayed address.
    pub channel: u16,
    pub until: Instant,
}

/// ChannelBind that RFC 8656 §12.2 forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelConflict {
    /// The channel number is already bound to a different peer.
    #[error("channel number is bound to another peer")]
    NumberInUse,
    /// The peer is already bound to a different channel number.
    #[error("peer is bound to another channel number")]
    PeerInUse,
}

impl Allocation {
    pub(crate) fn new(
        five_tuple: FiveTuple,
        username: String,
        key: MessageKey,
        expires: Instant,
        allocate_tid: TransactionId,
        granted_lifetime: u32,
        bucket: TokenBucket,
    ) -> Self {
        Allocation {
            five_tuple,
            relayed: None,
            username,
            key,
            expires,
            allocate_tid,
            allocate_response: None,
            granted_lifetime,
            bucket,
            permissions: FastMap::default(),
            channels: Channels::default(),
        }
    }

    pub(crate) fn permit(&mut self, ip: IpAddr, until: Instant) {
        self.permissions.insert(ip, until);
    }

    /// Would permissions for `ips` keep this allocation within `max` live
    /// permissions (0 = no limit)? Refreshing one it holds always fits.
    /// Expired permissions are dropped here when they stand in the way:
    /// otherwise they would hold room until the next sweep.
    pub(crate) fn has_room_for_permissions(
        &mut self,
        ips: &[IpAddr],
        now: Instant,
        max: usize,
    ) -> bool {
        if max == 0 {
            return true;
        }
        // Distinct addresses this allocation has no permission for yet.
        let fresh = |held: &FastMap<IpAddr, Instant>| {
            let mut f: Vec<&IpAddr> = ips.iter().filter(|ip| !held.contains_key(ip)).collect();
            f.sort_unstable();
            f.dedup();
            f.len()
        };
        if self.permissions.len() + fresh(&self.permissions) <= max {
            return true;
        }
        self.permissions.retain(|_, &mut t| t > now);
        self.permissions.len() + fresh(&self.permissions) <= max
    }

    /// Would binding `number` keep this allocation within `max` live
    /// channels (0 = no limit)? A refresh of a bound number always fits.
    pub(crate) fn has_room_for_channel(&self, number: u16, now: Instant, max: usize) -> bool {
        if max == 0 || self.channels.by_number.contains_key(&number) {
            return true;
        }
        self.live_counts(now).1 < max
    }

    pub(crate) fn is_permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permission_expiry(ip).is_some_and(|t| t > now)
    }

    /// Bind or refresh `number` <-> `peer` until `until`.
    pub(crate) fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        until: Instant,
    ) -> Result<(), ChannelConflict> {
        if let Some(ch) = self.channels.by_number.get_mut(&number) {
            if ch.peer != peer {
                return Err(ChannelConflict::NumberInUse);
            }
            // A refresh: same peer, so a remembered route stays right.
            ch.expires = until;
            return Ok(());
        }
        if let Some(&n) = self.channels.by_peer.get(&peer) {
            if n != number {
                return Err(ChannelConflict::PeerInUse);
            }
        }
        self.channels.by_number.insert(
            number,
            Channel {
                peer,
                expires: until,
                route: None,
            },
        );
        self.channels.by_peer.insert(peer, number);
        Ok(())
    }

    /// Peer of a live channel, and its remembered local route while that
    /// holds.
    pub(crate) fn channel_and_route(
        &self,
        number: u16,
        now: Instant,
    ) -> Option<(SocketAddr, Option<LocalRoute>)> {
        let c = self.channels.by_number.get(&number)?;
        (c.expires > now).then(|| (c.peer, c.route.filter(|r| r.until > now)))
    }

    /// Remember (or, with `None`, forget) where channel `number`'s media goes.
    pub(crate) fn set_route(&mut self, number: u16, route: Option<LocalRoute>) {
        if let Some(c) = self.channels.by_number.get_mut(&number) {
            c.route = route;
        }
    }

    /// When the permission for `ip` ends, if there is one.
    pub(crate) fn permission_expiry(&self, ip: IpAddr) -> Option<Instant> {
        self.permissions.get(&ip).copied()
    }

    /// The channel bound to `peer` and when it ends, if there is one.
    pub(crate) fn channel_expiry_for(&self, peer: SocketAddr) -> Option<(u16, Instant)> {
        let n = *self.channels.by_peer.get(&peer)?;
        Some((n, self.channels.by_number.get(&n)?.expires))
    }

    /// Live channel number for a peer.
    pub(crate) fn channel_for(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channel_expiry_for(peer)
            .filter(|&(_, expires)| expires > now)
            .map(|(n, _)| n)
    }

    /// Forget expired permissions and channels past their quarantine.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|_, &mut t| t > now);
        let by_peer = &mut self.channels.by_peer;
        self.channels.by_number.retain(|_, c| {
            let keep = c.expires + CHANNEL_QUARANTINE > now;
            if !keep {
                by_peer.remove(&c.peer);
            }
            keep
        });
    }

    /// Live permissions and channels right now.
    pub(crate) fn live_counts(&self, now: Instant) -> (usize, usize) {
        let p = self.permissions.values().filter(|&&t| t > now).count();
        let c = self
            .channels
            .by_number
            .values()
            .filter(|c| c.expires > now)
            .count();
        (p, c)
    }

    #[cfg(test)]
    pub(crate) fn permission_count(&self) -> usize {
        self.permissions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(now: Instant) -> Allocation {
        let ft = FiveTuple::udp(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:3478".parse().unwrap(),
        );
        let limit = crate::quota::Bandwidth::kbps(1000);
        let key = crate::auth::MessageKey::test_key();
        Allocation::new(
            ft,
            "u".into(),
            key,
            now,
            [0; 12],
            600,
            TokenBucket::new(now, &limit),
        )
    }

    #[test]
    fn channel_rules() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        let t600 = t0 + Duration::from_secs(600);
        assert_eq!(a.bind_channel(0x4000, p1, t600), Ok(()));
        assert_eq!(a.bind_channel(0x4000, p1, t600), Ok(()), "refresh");
        assert_eq!(
            a.bind_channel(0x4000, p2, t600),
            Err(ChannelConflict::NumberInUse)
        );
        assert_eq!(
            a.bind_channel(0x4001, p1, t600),
            Err(ChannelConflict::PeerInUse)
        );
        assert_eq!(a.channel_for(p1, t0), Some(0x4000));
        assert_eq!(
            a.channel_and_route(0x4000, t600).map(|(peer, _)| peer),
            None,
            "expired"
        );
        // Still reserved during quarantine, free after it.
        a.sweep(t600 + Duration::from_secs(10));
        assert_eq!(
            a.bind_channel(0x4000, p2, t600),
            Err(ChannelConflict::NumberInUse)
        );
        a.sweep(t600 + CHANNEL_QUARANTINE);
        assert_eq!(
            a.bind_channel(0x4000, p2, t600 + t600.duration_since(t0)),
            Ok(())
        );
    }

    #[test]
    fn permissions_expire() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        a.permit(ip, t0 + Duration::from_secs(300));
        assert!(a.is_permitted(ip, t0 + Duration::from_secs(299)));
        assert!(!a.is_permitted(ip, t0 + Duration::from_secs(300)));
        a.sweep(t0 + Duration::from_secs(300));
        assert_eq!(a.permission_count(), 0);
    }
}

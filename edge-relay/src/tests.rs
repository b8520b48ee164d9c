//! Engine behaviour in simulated time: a scripted client talks to a [`Relay`]
//! and checks every answer byte-for-byte through the codec.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tern_common::credentials;

mod protocol;
mod safety;

use crate::auth::long_term_key;
use crate::stun::{attr, Class, Message, MessageBuilder, Method};
use crate::*;

const SECRET: &[u8] = b"fleet-secret";
const REALM: &str = "tern";
const UNIX0: u64 = 1_800_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Harness {
    relay: Relay,
    now: Instant,
    unix: u64,
    local: SocketAddr,
    next_relay_port: u16,
    /// When false, BindRelay events are left for the test to answer.
    auto_bind: bool,
    events: Vec<Event>,
    tid: u64,
}

/// One client's credentials and the nonce it learned.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = Config::new(REALM, SECRET, [7; 32]);
        tweak(&mut cfg);
        Harness {
            relay: Relay::new(cfg),
            now: Instant::now(),
            unix: UNIX0,
            local: addr("192.0.2.1:3478"),
            next_relay_port: 50000,
            auto_bind: true,
            events: Vec::new(),
            tid: 0,
        }
    }

    fn client(&self, ip_port: &str, identity: &str, expiry: u64) -> Client {
        let c = credentials::mint(SECRET, identity, expiry);
        Client {
            addr: addr(ip_port),
            key: long_term_key(&c.username, REALM, &c.credential),
            username: c.username,
            nonce: Vec::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.unix += d.as_secs();
        while let Some(t) = self.relay.poll_timeout() {
            if t > self.now {
                break;
            }
            self.relay.handle_timeout(self.now);
        }
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.relay.poll_event() {
            if let (true, Event::BindRelay { id, family, .. }) = (self.auto_bind, &e) {
                let port = self.next_relay_port;
                self.next_relay_port += 1;
                let ip = match family {
                    Family::V4 => "203.0.113.9",
                    Family::V6 => "2001:db8::9",
                };
                let relayed = SocketAddr::new(ip.parse().unwrap(), port);
                self.relay.relay_bound(self.now, *id, Ok(relayed));
            }
            self.events.push(e);
        }
    }

    fn send_raw(&mut self, from: SocketAddr, bytes: &[u8]) -> (Option<Forward>, Vec<Transmit>) {
        let fwd = self
            .relay
            .handle_client_datagram(self.now, self.unix, from, self.local, bytes);
        self.drain_events();
        let mut out = Vec::new();
        while let Some(t) = self.relay.poll_transmit() {
            out.push(t);
        }
        (fwd, out)
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut t = [0xAA; 12];
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        t
    }

    fn build(
        &mut self,
        method: Method,
        c: Option<&Client>,
        tid: [u8; 12],
        attrs: impl FnOnce(&mut MessageBuilder),
    ) -> Vec<u8> {
        let mut b = MessageBuilder::new(method, Class::Request, tid);
        attrs(&mut b);
        if let Some(c) = c {
            b.attr(attr::USERNAME, c.username.as_bytes())
                .attr(attr::REALM, REALM.as_bytes())
                .attr(attr::NONCE, &c.nonce)
                .integrity(&c.key);
        }
        b.fingerprint();
        b.finish()
    }

    /// Send a request and return the single answer.
    fn request(
        &mut self,
        method: Method,
        c: Option<&Client>,
        attrs: impl FnOnce(&mut MessageBuilder),
    ) -> Vec<u8> {
        let from = c.map(|c| c.addr).unwrap_or(addr("198.51.100.1:1111"));
        self.request_from(from, method, c, attrs)
    }

    fn request_from(
        &mut self,
        from: SocketAddr,
        method: Method,
        c: Option<&Client>,
        attrs: impl FnOnce(&mut MessageBuilder),
    ) -> Vec<u8> {
        let tid = self.next_tid();
        let bytes = self.build(method, c, tid, attrs);
        let (fwd, mut out) = self.send_raw(from, &bytes);
        assert!(fwd.is_none());
        assert_eq!(out.len(), 1, "exactly one answer");
        let t = out.remove(0);
        assert_eq!((t.from, t.to), (self.local, from));
        t.payload
    }

    /// 401 handshake then Allocate; returns the relayed address.
    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self.request_from(c.addr, Method::ALLOCATE, None, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let m = Message::parse(&r).unwrap();
        assert_eq!(code(&m), Some(401));
        c.nonce = m.get(attr::NONCE).unwrap().to_vec();
        let c2 = c.clone();
        let r = self.request(Method::ALLOCATE, Some(&c2), |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class, Class::Success, "allocate failed: {:?}", code(&m));
        assert!(m.verify_integrity(&c.key));
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap()
    }

    fn permit(&mut self, c: &Client, peer: SocketAddr) -> Option<u16> {
        let r = self.request(Method::CREATE_PERMISSION, Some(c), |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        code(&Message::parse(&r).unwrap())
    }

    fn bind(&mut self, c: &Client, number: u16, peer: SocketAddr) -> Option<u16> {
        let r = self.request(Method::CHANNEL_BIND, Some(c), |b| {
            b.attr(
                attr::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            )
            .xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        code(&Message::parse(&r).unwrap())
    }

    fn send_indication(&mut self, c: &Client, peer: SocketAddr, data: &[u8]) -> Option<Forward> {
        let tid = self.next_tid();
        let mut b = MessageBuilder::new(Method::SEND, Class::Indication, tid);
        b.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        let bytes = b.finish();
        let (fwd, out) = self.send_raw(c.addr, &bytes);
        assert!(out.is_empty());
        if let Some(f) = &fwd {
            assert_eq!(&bytes[f.range.clone()], data);
        }
        fwd
    }

    fn peer_sends(
        &mut self,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> (Option<Vec<u8>>, Vec<Transmit>) {
        let mut buf = vec![0u8; CHANNEL_DATA_HEADROOM];
        buf.extend_from_slice(data);
        let fwd = self
            .relay
            .handle_peer_datagram(self.now, relayed, peer, &mut buf);
        let mut out = Vec::new();
        while let Some(t) = self.relay.poll_transmit() {
            out.push(t);
        }
        (fwd.map(|f| buf[f.range].to_vec()), out)
    }
}

/// ERROR-CODE of an answer, `None` for success.
fn code(m: &Message<'_>) -> Option<u16> {
    match m.class {
        Class::Error => attr::decode_error_code(m.get(attr::ERROR_CODE).unwrap()),
        _ => None,
    }
}

fn peer() -> SocketAddr {
    addr("198.51.100.7:4000")
}

#[test]
fn binding_request_gets_xor_mapped_address_only() {
    let mut h = Harness::new();
    let r = h.request(Method::BINDING, None, |_| {});
    let m = Message::parse(&r).unwrap();
    assert_eq!((m.method, m.class), (Method::BINDING, Class::Success));
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_MAPPED_ADDRESS).unwrap(), &m.transaction_id),
        Some(addr("198.51.100.1:1111"))
    );
    assert!(m.get(attr::SOFTWARE).is_none());
}

#[test]
fn full_allocate_flow() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    // First leg: challenge. Small, unsigned, no SOFTWARE.
    let r = h.request_from(c.addr, Method::ALLOCATE, None, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert_eq!(m.get(attr::REALM), Some(REALM.as_bytes()));
    assert!(m.get(attr::SOFTWARE).is_none() && !m.has_integrity());
    assert!(r.len() < 100, "challenge is {} bytes", r.len());
    c.nonce = m.get(attr::NONCE).unwrap().to_vec();

    let c2 = c.clone();
    let r = h.request(Method::ALLOCATE, Some(&c2), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .u32(attr::LIFETIME, 1200);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(
        m.verify_integrity(&c.key),
        "answer signed with the long-term key"
    );
    assert!(
        m.get(attr::FINGERPRINT).is_none(),
        "FINGERPRINT is checked by parse, not indexed"
    );
    assert_eq!(
        &r[r.len() - 8..r.len() - 4],
        &[0x80, 0x28, 0, 4],
        "ends with FINGERPRINT"
    );
    let tid = m.transaction_id;
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_MAPPED_ADDRESS).unwrap(), &tid),
        Some(c.addr)
    );
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &tid),
        Some(addr("203.0.113.9:50000"))
    );
    assert_eq!(attr::decode_u32(m.get(attr::LIFETIME).unwrap()), Some(1200));
    assert_eq!(h.relay.allocation_count(), 1);
    assert!(matches!(
        h.events[..],
        [Event::BindRelay { .. }, Event::Allocated { .. }]
    ));
}

#[test]
fn wrong_password_and_wrong_user_are_refused() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let r = h.request(Method::BINDING, None, |_| {});
    drop(r);
    // Learn a nonce, then sign with a key derived from the wrong password.
    let r = h.request(
        Method::ALLOCATE,
        Some(&Client {
            key: [0; 16],
            ..c.clone()
        }),
        |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        },
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(438), "empty nonce is stale");
    c.nonce = m.get(attr::NONCE).unwrap().to_vec();
    let bad = Client {
        key: long_term_key(&c.username, REALM, "not-the-password"),
        ..c.clone()
    };
    let r = h.request(Method::ALLOCATE, Some(&bad), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(401));
    assert_eq!(h.relay.allocation_count(), 0);

    // Valid credentials of another identity on alice's 5-tuple: 441.
    h.allocate(&mut c);
    let mut bob = h.client("198.51.100.1:5000", "bob", UNIX0 + 3600);
    bob.nonce = c.nonce.clone();
    assert_eq!(h.permit(&bob, peer()), Some(441));
    let r = h.request(Method::REFRESH, Some(&bob), |_| {});
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(441));
}

#[test]
fn expired_rest_username_is_refused() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 - 1);
    let r = h.request_from(c.addr, Method::ALLOCATE, None, |_| {});
    c.nonce = Message::parse(&r)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert!(m.get(attr::NONCE).is_some() && !m.has_integrity());
}

#[test]
fn stale_nonce_gets_438_and_a_fresh_nonce() {
    let mut h = Harness::with(|cfg| cfg.nonce_lifetime = Duration::from_secs(60));
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 86400);
    h.allocate(&mut c);
    h.advance(Duration::from_secs(61));
    let r = h.request(Method::REFRESH, Some(&c), |_| {});
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(438));
    c.nonce = m.get(attr::NONCE).unwrap().to_vec();
    let r = h.request(Method::REFRESH, Some(&c), |_| {});
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity(&c.key));
    // A nonce handed to one address is no good from another.
    let elsewhere = Client {
        addr: addr("198.51.100.1:5001"),
        ..c.clone()
    };
    let r = h.request(Method::ALLOCATE, Some(&elsewhere), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(438));
}

#[test]
fn permission_required_before_relaying() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    assert_eq!(h.send_indication(&c, peer(), b"hello"), None);
    assert_eq!(h.peer_sends(relayed, peer(), b"hi").0, None);
    assert!(h.peer_sends(relayed, peer(), b"hi").1.is_empty());

    assert_eq!(h.permit(&c, peer()), None);
    let f = h.send_indication(&c, peer(), b"hello").expect("relayed");
    assert_eq!((f.from, f.to), (relayed, peer()));
    // Permissions are per IP: another port of the same peer host may answer.
    let other_port = addr("198.51.100.7:4001");
    let (fwd, out) = h.peer_sends(relayed, other_port, b"back");
    assert_eq!(fwd, None, "no channel: Data indication instead");
    assert_eq!(out.len(), 1);
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!((m.method, m.class), (Method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"back"[..]));
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &m.transaction_id),
        Some(other_port)
    );
    assert_eq!((out[0].from, out[0].to), (h.local, c.addr));
    // Permissions last 300 s.
    h.advance(Duration::from_secs(301));
    assert_eq!(h.send_indication(&c, peer(), b"late"), None);
    assert_eq!(h.peer_sends(relayed, peer(), b"late").1.len(), 0);
}

#[test]
fn channel_bind_then_channel_data_both_ways() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    assert_eq!(h.bind(&c, 0x3FFF, peer()), Some(400), "below range");
    assert_eq!(h.bind(&c, 0x5000, peer()), Some(400), "above range");
    assert_eq!(h.bind(&c, 0x4001, peer()), None);
    assert_eq!(h.bind(&c, 0x4001, peer()), None, "refresh is fine");
    assert_eq!(h.bind(&c, 0x4001, addr("198.51.100.8:1")), Some(400));
    assert_eq!(h.bind(&c, 0x4002, peer()), Some(400));

    // Client -> peer: payload is forwarded in place.
    let mut cd = vec![0x40, 0x01, 0, 5];
    cd.extend_from_slice(b"voice\0\0\0"); // with padding
    let (f, out) = h.send_raw(c.addr, &cd);
    let f = f.expect("forwarded");
    assert!(out.is_empty());
    assert_eq!((f.from, f.to), (relayed, peer()));
    assert_eq!(&cd[f.range], b"voice");
    // Unknown channel and truncated length: dropped.
    assert_eq!(h.send_raw(c.addr, &[0x40, 0x02, 0, 1, 9]).0, None);
    assert_eq!(h.send_raw(c.addr, &[0x40, 0x01, 0, 9, 9]).0, None);
    // From another 5-tuple: dropped.
    assert_eq!(h.send_raw(addr("198.51.100.1:5001"), &cd).0, None);

    // Peer -> client: ChannelData, header written into the headroom.
    let (fwd, out) = h.peer_sends(relayed, peer(), b"reply");
    assert!(out.is_empty());
    assert_eq!(fwd.unwrap(), [&[0x40, 0x01, 0, 5][..], b"reply"].concat());
    assert_eq!(h.relay.stats().relayed_packets, 2);
}

/// Both callers of a room on one relay: A's media to B's relayed address is
/// handed to B's allocation in memory, under the same rules as a datagram
/// arriving on B's relayed socket.
#[test]
fn media_between_allocations_of_one_relay_is_delivered_in_memory() {
    let mut h = Harness::new();
    let mut a = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let mut b = h.client("198.51.100.2:6000", "bob", UNIX0 + 3600);
    let ra = h.allocate(&mut a);
    let rb = h.allocate(&mut b);
    assert_eq!(h.bind(&a, 0x4000, rb), None);

    let channel_data = |payload: &[u8]| {
        let mut cd = vec![0x40, 0x00, 0, payload.len() as u8];
        cd.extend_from_slice(payload);
        cd
    };
    // Sends `bytes` from A and delivers the forward locally; returns what
    // reaches B's client (bytes of the Forward) and the queued transmits.
    let local = |h: &mut Harness, mut bytes: Vec<u8>| {
        let f = h
            .relay
            .handle_client_datagram(h.now, h.unix, a.addr, h.local, &bytes)
            .expect("admitted for A");
        assert_eq!((f.from, f.to), (ra, rb));
        let out = match h.relay.route_client_media(h.now, f, &mut bytes) {
            Route::Local(o) => Some(o),
            Route::Consumed => None,
            Route::Kernel(f) => panic!("B's relayed address is local: {f:?}"),
        };
        let mut transmits = Vec::new();
        while let Some(t) = h.relay.poll_transmit() {
            transmits.push(t);
        }
        (out.map(|o| (bytes[o.range.clone()].to_vec(), o)), transmits)
    };

    // B has no permission for A's relayed address yet: dropped, as on the
    // socket path.
    let drops = h.relay.stats().drops(DropReason::NoPermission);
    let (out, tx) = local(&mut h, channel_data(b"hello"));
    assert!(out.is_none() && tx.is_empty());
    assert_eq!(h.relay.stats().drops(DropReason::NoPermission), drops + 1);

    // A permission but no channel: a Data indication from A's relayed address.
    assert_eq!(h.permit(&b, ra), None);
    let (out, tx) = local(&mut h, channel_data(b"hello"));
    assert!(out.is_none());
    assert_eq!(tx.len(), 1);
    assert_eq!((tx[0].from, tx[0].to), (h.local, b.addr));
    let m = Message::parse(&tx[0].payload).unwrap();
    assert_eq!((m.method, m.class), (Method::DATA, Class::Indication));
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &m.transaction_id),
        Some(ra)
    );
    assert_eq!(m.get(attr::DATA), Some(&b"hello"[..]));

    // With a channel: ChannelData to B's client, header written in place.
    assert_eq!(h.bind(&b, 0x4001, ra), None);
    let (out, tx) = local(&mut h, channel_data(b"hello"));
    let (bytes, o) = out.expect("ChannelData for B");
    assert!(tx.is_empty());
    assert_eq!(
        (o.from, o.to, o.transport),
        (h.local, b.addr, Transport::Udp)
    );
    assert_eq!(bytes, [&[0x40, 0x01, 0, 5][..], b"hello"].concat());

    // A Send indication takes the same way (its DATA is deeper in the buffer).
    let tid = h.next_tid();
    let mut send = MessageBuilder::new(Method::SEND, Class::Indication, tid);
    send.xor_address(attr::XOR_PEER_ADDRESS, rb)
        .attr(attr::DATA, b"by send");
    let (out, _) = local(&mut h, send.finish());
    assert_eq!(
        out.unwrap().0,
        [&[0x40, 0x01, 0, 7][..], b"by send"].concat()
    );

    let st = h.relay.stats();
    assert_eq!(st.local_deliveries, 2);
    // Relayed out of A: all four sends; into B: the three it was permitted
    // (Data indication, ChannelData, Send), as on the socket path.
    assert_eq!(st.relayed_packets, 4 + 3);

    // Once B's permission lapses, A's media stops reaching B.
    h.advance(Duration::from_secs(301));
    assert_eq!(h.bind(&a, 0x4000, rb), None, "A refreshes its side");
    let (out, tx) = local(&mut h, channel_data(b"late"));
    assert!(out.is_none() && tx.is_empty());

    // Turned off, the driver sends through the kernel as other servers do.
    let mut off = Harness::with(|c| c.local_delivery = false);
    let mut c = off.client("198.51.100.3:7000", "carol", UNIX0 + 3600);
    let mut d = off.client("198.51.100.4:8000", "dave", UNIX0 + 3600);
    off.allocate(&mut c);
    let rd = off.allocate(&mut d);
    assert_eq!(off.bind(&c, 0x4000, rd), None);
    let mut bytes = channel_data(b"via kernel");
    let f = off
        .relay
        .handle_client_datagram(off.now, off.unix, c.addr, off.local, &bytes)
        .expect("admitted for C");
    assert_eq!(
        off.relay.route_client_media(off.now, f.clone(), &mut bytes),
        Route::Kernel(f)
    );
    assert_eq!(off.relay.stats().local_deliveries, 0);
    // And a peer outside the engine always goes through the kernel.
    let mut bytes = channel_data(b"hi");
    let mut e = h.client("198.51.100.5:9000", "erin", UNIX0 + 3600);
    h.allocate(&mut e);
    assert_eq!(h.bind(&e, 0x4000, peer()), None);
    let f = h
        .relay
        .handle_client_datagram(h.now, h.unix, e.addr, h.local, &bytes)
        .expect("admitted for E");
    assert_eq!(
        h.relay.route_client_media(h.now, f.clone(), &mut bytes),
        Route::Kernel(f)
    );
}

/// The second and later packets of a channel between two allocations of
/// one engine take a remembered route (see `LocalRoute`); it must count the
/// same and stop exactly when the full checks would.
#[test]
fn a_remembered_local_route_counts_alike_and_ends_when_its_checks_would() {
    let mut h = Harness::new();
    let mut a = h.client("198.51.100.1:5000", "alice", UNIX0 + 86400);
    let mut b = h.client("198.51.100.2:6000", "bob", UNIX0 + 86400);
    let ra = h.allocate(&mut a);
    let rb = h.allocate(&mut b);
    assert_eq!(h.bind(&a, 0x4000, rb), None);
    assert_eq!(h.bind(&b, 0x4001, ra), None);

    // A -> B: the route the engine chose, what B's client gets, drops.
    let send = |h: &mut Harness| {
        let mut bytes = vec![0x40, 0x00, 0, 3, 7, 8, 9];
        let f = h
            .relay
            .handle_client_datagram(h.now, h.unix, a.addr, h.local, &bytes)
            .expect("admitted for A");
        match h.relay.route_client_media(h.now, f, &mut bytes) {
            Route::Local(o) => Some((o.to, bytes[o.range].to_vec())),
            Route::Consumed => None,
            Route::Kernel(f) => panic!("kernel route to {}", f.to),
        }
    };
    let counters = |st: Stats| {
        (
            st.relayed_packets,
            st.relayed_bytes,
            st.peer_packets_in,
            st.peer_bytes_in,
            st.local_deliveries,
            st.client_packets_in,
        )
    };
    // The first packet takes the full path and leaves the route behind;
    // the next ones take it. Each moves every counter by the same amount.
    let mut deltas = Vec::new();
    for _ in 0..3 {
        let before = counters(h.relay.stats());
        assert_eq!(
            send(&mut h),
            Some((b.addr, vec![0x40, 0x01, 0, 3, 7, 8, 9]))
        );
        let after = counters(h.relay.stats());
        deltas.push((
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
            after.4 - before.4,
            after.5 - before.5,
        ));
    }
    assert_eq!(deltas[0], (2, 6, 1, 3, 1, 1));
    assert!(deltas.iter().all(|d| *d == deltas[0]), "{deltas:?}");

    // Every permission was installed at t=0 for 300 s. A refreshes its
    // side at 250 s; B does not, so B's permission for A ends at 300 s and
    // with it the route, which must not outlive it by a packet.
    h.advance(Duration::from_secs(250));
    assert_eq!(h.bind(&a, 0x4000, rb), None);
    h.advance(Duration::from_millis(49_999));
    assert!(send(&mut h).is_some(), "B's permission still holds");
    h.advance(Duration::from_millis(1));
    let refused = h.relay.stats().drops(DropReason::NoPermission);
    assert_eq!(send(&mut h), None);
    assert_eq!(h.relay.stats().drops(DropReason::NoPermission), refused + 1);

    // B renews; the route is learned again. Then B leaves, and its relayed
    // address goes to a new allocation C: A's media must reach C's client
    // on C's channel, never B's.
    assert_eq!(h.bind(&b, 0x4001, ra), None);
    assert_eq!(send(&mut h).map(|(to, _)| to), Some(b.addr));
    assert_eq!(send(&mut h).map(|(to, _)| to), Some(b.addr));
    let r = h.request(Method::REFRESH, Some(&b), |m| {
        m.u32(attr::LIFETIME, 0);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
    let mut bytes = vec![0x40, 0x00, 0, 1, 1];
    let f = h
        .relay
        .handle_client_datagram(h.now, h.unix, a.addr, h.local, &bytes)
        .expect("A's channel still stands");
    assert_eq!(
        h.relay.route_client_media(h.now, f.clone(), &mut bytes),
        Route::Kernel(f),
        "nobody local has B's old address"
    );
    let mut c = h.client("198.51.100.3:7000", "carol", UNIX0 + 86400);
    h.next_relay_port = rb.port();
    assert_eq!(h.allocate(&mut c), rb, "C gets B's old relayed address");
    assert_eq!(h.bind(&c, 0x4002, ra), None);
    assert_eq!(
        send(&mut h),
        Some((c.addr, vec![0x40, 0x02, 0, 3, 7, 8, 9]))
    );
    assert_eq!(
        send(&mut h),
        Some((c.addr, vec![0x40, 0x02, 0, 3, 7, 8, 9]))
    );
}

#[test]
fn rfc5766_channel_numbers_only_when_enabled() {
    let mut h = Harness::with(|cfg| cfg.rfc5766_channels = true);
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    assert_eq!(h.bind(&c, 0x7FFF, peer()), None);
    assert_eq!(h.bind(&c, 0x8000, addr("198.51.100.8:1")), Some(400));
    let (f, _) = h.send_raw(c.addr, &[0x7F, 0xFF, 0, 1, 42]);
    assert_eq!(f.map(|f| (f.from, f.to)), Some((relayed, peer())));
}

#[test]
fn allocations_expire_and_can_be_deleted() {
    let mut h = Harness::with(|cfg| cfg.nonce_lifetime = Duration::from_secs(86400));
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 86400);
    let relayed = h.allocate(&mut c);
    assert_eq!(h.bind(&c, 0x4000, peer()), None);
    assert!(h.relay.poll_timeout().is_some());
    h.advance(Duration::from_secs(599));
    assert_eq!(h.relay.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(h.events.contains(&Event::Released {
        id: AllocationId(1),
        relayed: Some(relayed),
        reason: ReleaseReason::Expired
    }));
    assert_eq!(h.peer_sends(relayed, peer(), b"x").0, None);
    assert_eq!(h.relay.poll_timeout(), None, "nothing left to wake for");
    // After expiry the 5-tuple has no allocation: 437.
    let r = h.request(Method::REFRESH, Some(&c), |_| {});
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(437));

    // Refresh extends; LIFETIME 0 deletes.
    let relayed = h.allocate(&mut c);
    h.advance(Duration::from_secs(500));
    let r = h.request(Method::REFRESH, Some(&c), |b| {
        b.u32(attr::LIFETIME, 600);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
    h.advance(Duration::from_secs(500));
    assert_eq!(h.relay.allocation_count(), 1, "refreshed at 500 s");
    let r = h.request(Method::REFRESH, Some(&c), |b| {
        b.u32(attr::LIFETIME, 0);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(attr::decode_u32(m.get(attr::LIFETIME).unwrap()), Some(0));
    assert_eq!(h.relay.allocation_count(), 0);
    assert!(matches!(
        h.events.last(),
        Some(Event::Released { relayed: Some(r), reason: ReleaseReason::Deleted, .. }) if *r == relayed
    ));
}

#[test]
fn policy_refuses_private_peers_with_403() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut c);
    for p in [
        "127.0.0.1:1",
        "10.0.0.1:1",
        "169.254.169.254:80",
        "100.64.1.1:1",
        "192.168.0.1:9",
    ] {
        assert_eq!(h.permit(&c, addr(p)), Some(403), "{p}");
        assert_eq!(h.bind(&c, 0x4000, addr(p)), Some(403), "{p}");
    }
    assert_eq!(
        h.permit(&c, addr("[2001:db8::1]:1")),
        Some(443),
        "family mismatch"
    );

    let mut h = Harness::with(|cfg| {
        cfg.policy = PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
    });
    let mut c = h.client("127.0.0.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut c);
    assert_eq!(h.permit(&c, addr("127.0.0.1:9")), None);
    assert_eq!(h.permit(&c, addr("10.0.0.1:9")), Some(403));
}

#[test]
fn allocate_retransmission_mismatch_and_capacity() {
    let mut h = Harness::with(|cfg| cfg.max_allocations = 1);
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let r = h.request_from(c.addr, Method::ALLOCATE, None, |_| {});
    c.nonce = Message::parse(&r)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();
    let tid = h.next_tid();
    let req = h.build(Method::ALLOCATE, Some(&c), tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let first = h.send_raw(c.addr, &req).1;
    let again = h.send_raw(c.addr, &req).1;
    assert_eq!(first, again, "retransmission gets the same answer");
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(437));
    assert!(
        m.verify_integrity(&c.key),
        "authenticated errors are signed"
    );

    let mut d = h.client("198.51.100.2:5000", "dave", UNIX0 + 3600);
    d.nonce = h.relay_nonce_for(d.addr);
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
}

#[test]
fn draining_refuses_new_allocations_only() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    h.relay.set_draining(true);
    let mut d = h.client("198.51.100.2:5000", "dave", UNIX0 + 3600);
    d.nonce = h.relay_nonce_for(d.addr);
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
    assert_eq!(
        h.bind(&c, 0x4000, peer()),
        None,
        "existing allocation still works"
    );
    assert!(h.peer_sends(relayed, peer(), b"x").0.is_some());
}

#[test]
fn bad_allocate_requests() {
    let mut h = Harness::new();
    h.auto_bind = false;
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    c.nonce = h.relay_nonce_for(c.addr);
    let r = h.request(Method::ALLOCATE, Some(&c), |_| {});
    assert_eq!(
        code(&Message::parse(&r).unwrap()),
        Some(400),
        "no REQUESTED-TRANSPORT"
    );
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(442), "TCP");
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::RESERVATION_TOKEN, &[0; 8]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(420));
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x22][..]));
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::EVEN_PORT, &[0x80]);
    });
    assert_eq!(
        code(&Message::parse(&r).unwrap()),
        Some(508),
        "no port pairs"
    );

    // The driver cannot bind: 508, and the allocation is gone.
    let tid = h.next_tid();
    let req = h.build(Method::ALLOCATE, Some(&c), tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::EVEN_PORT, &[0]);
    });
    let (_, out) = h.send_raw(c.addr, &req);
    assert!(out.is_empty(), "no answer until the driver binds");
    let Some(Event::BindRelay {
        id,
        family: Family::V4,
        even_port: true,
    }) = h.events.pop()
    else {
        panic!("expected BindRelay")
    };
    h.relay
        .relay_bound(h.now, id, Err(BindError::InsufficientCapacity));
    let t = h.relay.poll_transmit().unwrap();
    assert_eq!(code(&Message::parse(&t.payload).unwrap()), Some(508));
    assert_eq!(h.relay.allocation_count(), 0);
    // A late bind for a dead allocation hands the port straight back.
    h.relay.relay_bound(h.now, id, Ok(addr("203.0.113.9:1")));
    let events: Vec<Event> = std::iter::from_fn(|| h.relay.poll_event()).collect();
    assert!(events.contains(&Event::Released {
        id,
        relayed: Some(addr("203.0.113.9:1")),
        reason: ReleaseReason::Abandoned
    }));
}

impl Harness {
    /// Learn a nonce through a 401.
    fn relay_nonce_for(&mut self, from: SocketAddr) -> Vec<u8> {
        let tid = self.next_tid();
        let req = self.build(Method::ALLOCATE, None, tid, |_| {});
        let (_, out) = self.send_raw(from, &req);
        let m = Message::parse(&out[0].payload).unwrap();
        m.get(attr::NONCE).unwrap().to_vec()
    }
}

/// Garbage and mutated valid messages must never panic the engine.
#[test]
fn malformed_input_never_panics() {
    let mut h = Harness::with(|cfg| {
        cfg.policy = PeerPolicy::new(vec!["0.0.0.0/0".parse().unwrap()]);
    });
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    h.bind(&c, 0x4000, peer());
    let mut corpus = vec![
        h.build(Method::CHANNEL_BIND, Some(&c), [1; 12], |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer());
        }),
        h.build(Method::CREATE_PERMISSION, Some(&c), [2; 12], |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer());
        }),
        h.build(Method::ALLOCATE, Some(&c), [3; 12], |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        }),
        h.build(Method::REFRESH, Some(&c), [4; 12], |b| {
            b.u32(attr::LIFETIME, 600);
        }),
        vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
    ];
    let mut b = MessageBuilder::new(Method::SEND, Class::Indication, [5; 12]);
    b.xor_address(attr::XOR_PEER_ADDRESS, peer())
        .attr(attr::DATA, b"abc");
    corpus.push(b.finish());

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e4e);
    for i in 0..20_000 {
        let mut msg = if i % 4 == 0 {
            let n = rng.gen_range(0..80);
            (0..n).map(|_| rng.gen()).collect::<Vec<u8>>()
        } else {
            corpus[rng.gen_range(0..corpus.len())].clone()
        };
        // Flip a few bytes, sometimes truncate or extend.
        for _ in 0..rng.gen_range(0..4) {
            if !msg.is_empty() {
                let j = rng.gen_range(0..msg.len());
                msg[j] = rng.gen();
            }
        }
        match rng.gen_range(0..6) {
            0 => msg.truncate(rng.gen_range(0..=msg.len())),
            1 => msg.extend((0..rng.gen_range(0..8)).map(|_| rng.gen::<u8>())),
            _ => {}
        }
        h.send_raw(c.addr, &msg);
        let mut buf = msg.clone();
        h.relay
            .handle_peer_datagram(h.now, relayed, peer(), &mut buf);
        let short = buf.len().min(3);
        h.relay
            .handle_peer_datagram(h.now, relayed, peer(), &mut buf[..short]);
        while h.relay.poll_transmit().is_some() {}
        if i % 1000 == 0 {
            h.advance(Duration::from_secs(7));
        }
    }
}

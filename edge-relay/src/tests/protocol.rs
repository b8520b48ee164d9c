//! Protocol conformance in simulated time: password-algorithm negotiation
//! and MESSAGE-INTEGRITY-SHA256, secret rotation, ALTERNATE-SERVER while
//! draining, IPv6 relayed addresses, TCP/TLS 5-tuples, and one check per
//! error code.

use super::*;
use crate::auth::{long_term_key_sha256, PASSWORD_ALGORITHMS};
use crate::stun::attr::{ALGORITHM_MD5, ALGORITHM_SHA256};

/// An Allocate big enough (SOFTWARE pads it) that the 401 has room for the
/// RFC 8489 offer.
fn padded_allocate(h: &mut Harness, from: SocketAddr) -> Message<'static> {
    let tid = h.next_tid();
    let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, tid);
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::SOFTWARE, b"an RFC 8489 client, padded")
        .fingerprint();
    let (_, out) = h.send_raw(from, &b.finish());
    let bytes: &'static [u8] = Box::leak(out[0].payload.clone().into_boxed_slice());
    Message::parse(bytes).unwrap()
}

fn algorithm(alg: u16) -> [u8; 4] {
    let a = alg.to_be_bytes();
    [a[0], a[1], 0, 0]
}

#[test]
fn sha256_password_algorithm_and_integrity_negotiated() {
    let mut h = Harness::new();
    let c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let m = padded_allocate(&mut h, c.addr);
    assert_eq!(code(&m), Some(401));
    let nonce = m.get(attr::NONCE).unwrap().to_vec();
    assert!(nonce.starts_with(b"obMatJos2"), "RFC 8489 nonce cookie");
    assert_eq!(
        m.get(attr::PASSWORD_ALGORITHMS),
        Some(&PASSWORD_ALGORITHMS[..])
    );
    let password = credentials::password(SECRET, &c.username);
    let key256 = long_term_key_sha256(&c.username, REALM, &password);

    let send = |h: &mut Harness,
                algs: Option<&[u8]>,
                alg: Option<u16>,
                key: &[u8],
                sha256: bool,
                method: Method| {
        let tid = h.next_tid();
        let mut b = MessageBuilder::new(method, Class::Request, tid);
        if method == Method::ALLOCATE {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        }
        b.attr(attr::USERNAME, c.username.as_bytes())
            .attr(attr::REALM, REALM.as_bytes())
            .attr(attr::NONCE, &nonce);
        if let Some(a) = algs {
            b.attr(attr::PASSWORD_ALGORITHMS, a);
        }
        if let Some(a) = alg {
            b.attr(attr::PASSWORD_ALGORITHM, &algorithm(a));
        }
        if sha256 {
            b.integrity_sha256(key);
        } else {
            b.integrity(key);
        }
        let (_, out) = h.send_raw(c.addr, &b.finish());
        out[0].payload.clone()
    };
    // Tampered list, a choice we did not offer, or only one of the two: 400.
    let r = send(
        &mut h,
        Some(&[0, 2, 0, 0]),
        Some(ALGORITHM_SHA256),
        &key256,
        true,
        Method::ALLOCATE,
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(400));
    let r = send(
        &mut h,
        Some(&PASSWORD_ALGORITHMS),
        Some(7),
        &key256,
        true,
        Method::ALLOCATE,
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(400));
    let r = send(
        &mut h,
        None,
        Some(ALGORITHM_SHA256),
        &key256,
        true,
        Method::ALLOCATE,
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(400));
    // The MD5 key when SHA-256 was chosen: 401.
    let r = send(
        &mut h,
        Some(&PASSWORD_ALGORITHMS),
        Some(ALGORITHM_SHA256),
        &c.key,
        true,
        Method::ALLOCATE,
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(401));

    let r = send(
        &mut h,
        Some(&PASSWORD_ALGORITHMS),
        Some(ALGORITHM_SHA256),
        &key256,
        true,
        Method::ALLOCATE,
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity_sha256(&key256), "answered with SHA-256");
    assert!(m.get(attr::MESSAGE_INTEGRITY).is_none());
    // Refresh the same way; MD5 + SHA-1 integrity still works on the same
    // allocation with the same nonce (MD5 chosen explicitly).
    let r = send(
        &mut h,
        Some(&PASSWORD_ALGORITHMS),
        Some(ALGORITHM_SHA256),
        &key256,
        true,
        Method::REFRESH,
    );
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
    let r = send(
        &mut h,
        Some(&PASSWORD_ALGORITHMS),
        Some(ALGORITHM_MD5),
        &c.key,
        false,
        Method::REFRESH,
    );
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), None);
    assert!(m.verify_integrity(&c.key));
    // A client that ignores the offer gets MD5 (RFC 8489 §9.2.4).
    let r = send(&mut h, None, None, &c.key, false, Method::REFRESH);
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
}

#[test]
fn sha256_integrity_with_md5_key_after_a_legacy_nonce() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    c.nonce = h.relay_nonce_for(c.addr);
    assert!(
        !c.nonce.starts_with(b"obMatJos2"),
        "small request, lean 401"
    );
    let tid = h.next_tid();
    let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, tid);
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::USERNAME, c.username.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, &c.nonce)
        .integrity(&c.key)
        .integrity_sha256(&c.key);
    let (_, out) = h.send_raw(c.addr, &b.finish());
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity_sha256(&c.key));
}

#[test]
fn previous_secret_is_accepted_during_rotation() {
    let mut h = Harness::with(|cfg| {
        cfg.secret = b"new-secret".to_vec();
        cfg.previous_secret = Some(SECRET.to_vec());
    });
    // `h.client` mints with SECRET, now the previous one.
    let mut old = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut old);
    let cred = credentials::mint(b"new-secret", "bob", UNIX0 + 3600);
    let mut new = Client {
        addr: addr("198.51.100.2:5000"),
        key: long_term_key(&cred.username, REALM, &cred.credential),
        username: cred.username,
        nonce: Vec::new(),
    };
    h.allocate(&mut new);
    let cred = credentials::mint(b"some-other-secret", "eve", UNIX0 + 3600);
    let mut eve = Client {
        addr: addr("198.51.100.3:5000"),
        key: long_term_key(&cred.username, REALM, &cred.credential),
        username: cred.username,
        nonce: Vec::new(),
    };
    eve.nonce = h.relay_nonce_for(eve.addr);
    let r = h.request(Method::ALLOCATE, Some(&eve), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(401));
    assert_eq!(h.relay.stats().auth(AuthOutcome::Rejected), 1);
}

#[test]
fn draining_with_alternate_redirects_new_allocations_with_300() {
    let alt = addr("203.0.113.50:3478");
    let mut h = Harness::with(|cfg| cfg.alternate = Some(alt));
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut c);
    h.relay.set_draining(true);
    let mut d = h.client("198.51.100.2:5000", "dave", UNIX0 + 3600);
    d.nonce = h.relay_nonce_for(d.addr);
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(300));
    assert_eq!(
        attr::decode_address(m.get(attr::ALTERNATE_SERVER).unwrap()),
        Some(alt)
    );
    assert!(
        m.verify_integrity(&d.key),
        "only authenticated clients are redirected"
    );
    assert_eq!(h.relay.allocation_count(), 1);
    // The existing allocation keeps working.
    let r = h.request(Method::REFRESH, Some(&c), |_| {});
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
}

#[test]
fn ipv6_relayed_addresses() {
    let mut h = Harness::new();
    let mut c = h.client("[2001:db8::1]:5000", "alice", UNIX0 + 3600);
    c.nonce = h.relay_nonce_for(c.addr);
    let r = h.request(Method::ALLOCATE, Some(&c), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    let m = Message::parse(&r).unwrap();
    let relayed =
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap();
    assert!(relayed.is_ipv6());
    let p6 = addr("[2001:db8::77]:4000");
    assert_eq!(h.bind(&c, 0x4000, p6), None);
    assert_eq!(h.permit(&c, peer()), Some(443), "IPv4 peer on IPv6 relay");
    let (fwd, _) = h.peer_sends(relayed, p6, b"hi");
    assert_eq!(fwd.unwrap(), [0x40, 0x00, 0x00, 0x02, b'h', b'i']);
    // Unknown family value: 440.
    let mut d = h.client("198.51.100.2:5000", "dave", UNIX0 + 3600);
    d.nonce = h.relay_nonce_for(d.addr);
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::REQUESTED_ADDRESS_FAMILY, &[9, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(440));
    // The driver has no IPv6 address: 440 too.
    h.auto_bind = false;
    let r = {
        let tid = h.next_tid();
        let req = h.build(Method::ALLOCATE, Some(&d), tid, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(
                attr::REQUESTED_ADDRESS_FAMILY,
                &[attr::FAMILY_IPV6, 0, 0, 0],
            );
        });
        h.send_raw(d.addr, &req);
        let Some(Event::BindRelay {
            id,
            family: Family::V6,
            ..
        }) = h.events.pop()
        else {
            panic!("expected BindRelay V6")
        };
        h.relay
            .relay_bound(h.now, id, Err(BindError::AddressFamilyNotSupported));
        h.relay.poll_transmit().unwrap().payload
    };
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(440));
}

/// TCP/TLS clients: answers and media go back on the same transport, and
/// the allocation ends with the connection.
#[test]
fn stream_clients_are_their_own_five_tuples() {
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let udp_relayed = h.allocate(&mut c);
    let ft = FiveTuple {
        client: c.addr,
        local: h.local,
        transport: Transport::Tls,
    };
    let send = |h: &mut Harness, bytes: &[u8]| {
        let fwd = h.relay.handle_client_message(h.now, h.unix, ft, bytes);
        h.drain_events();
        let out: Vec<Transmit> = std::iter::from_fn(|| h.relay.poll_transmit()).collect();
        (fwd, out)
    };
    let req = h.build(Method::ALLOCATE, Some(&c), [1; 12], |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let (_, out) = send(&mut h, &req);
    assert_eq!(out[0].transport, Transport::Tls);
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!(m.class, Class::Success, "a separate allocation, no 437");
    let tls_relayed =
        attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
            .unwrap();
    assert_ne!(tls_relayed, udp_relayed);
    let req = h.build(Method::CHANNEL_BIND, Some(&c), [2; 12], |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer());
    });
    let (_, out) = send(&mut h, &req);
    assert_eq!(code(&Message::parse(&out[0].payload).unwrap()), None);
    let (fwd, _) = send(&mut h, &[0x40, 0, 0, 1, 9, 0, 0, 0]);
    assert_eq!(fwd.unwrap().from, tls_relayed);
    let mut buf = vec![0u8; CHANNEL_DATA_HEADROOM + 3];
    let f = h
        .relay
        .handle_peer_datagram(h.now, tls_relayed, peer(), &mut buf)
        .unwrap();
    assert_eq!(
        (f.transport, f.to, f.from),
        (Transport::Tls, c.addr, h.local)
    );
    assert_eq!(h.relay.allocation_count(), 2);
    h.relay.client_closed(ft);
    h.drain_events();
    assert_eq!(h.relay.allocation_count(), 1);
    assert!(h.events.iter().any(|e| matches!(e,
        Event::Released { relayed: Some(r), reason: ReleaseReason::ConnectionClosed, .. } if *r == tls_relayed)));
}

/// One check per error code the relay emits, each from its own trigger.
/// Answers to authenticated requests are signed, the others are not.
#[test]
fn every_error_code_conformance() {
    let mut h = Harness::with(|cfg| {
        cfg.max_allocations_per_user = 1;
        cfg.max_allocations = 2;
    });
    let signed = |m: &Message<'_>, c: &Client| m.verify_integrity(&c.key);
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);

    // 401: no credentials (unsigned).
    let r = h.request(Method::ALLOCATE, None, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(401));
    assert!(m.get(attr::MESSAGE_INTEGRITY).is_none());
    // 438: a nonce from another address.
    let mut moved = c.clone();
    moved.nonce = h.relay_nonce_for(addr("198.51.100.1:5001"));
    let r = h.request(Method::ALLOCATE, Some(&moved), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(438));
    // 437: Refresh / CreatePermission / ChannelBind without an allocation.
    c.nonce = h.relay_nonce_for(c.addr);
    for method in [
        Method::REFRESH,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
    ] {
        let r = h.request(method, Some(&c), |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer());
        });
        let m = Message::parse(&r).unwrap();
        assert_eq!(code(&m), Some(437), "{method:?}");
        assert!(signed(&m, &c));
    }
    let relayed = h.allocate(&mut c);
    // 403: peer policy.
    assert_eq!(h.permit(&c, addr("10.0.0.1:1")), Some(403));
    // 400: ChannelBind outside the channel range, CreatePermission without peers.
    assert_eq!(h.bind(&c, 0x3fff, peer()), Some(400));
    let r = h.request(Method::CREATE_PERMISSION, Some(&c), |_| {});
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(400));
    // 441: another user's credentials on this allocation.
    let mut bob = h.client("198.51.100.1:5000", "bob", UNIX0 + 3600);
    bob.nonce = c.nonce.clone();
    let r = h.request(Method::REFRESH, Some(&bob), |_| {});
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(441));
    assert!(m.verify_integrity(&bob.key));
    // 486: alice's second allocation (quota 1) from another port.
    let mut c2 = Client {
        addr: addr("198.51.100.1:5002"),
        ..c.clone()
    };
    c2.nonce = h.relay_nonce_for(c2.addr);
    let r = h.request(Method::ALLOCATE, Some(&c2), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(486));
    assert!(signed(&m, &c2));
    // 442: TCP relaying requested.
    let mut d = h.client("198.51.100.4:5000", "dave", UNIX0 + 3600);
    d.nonce = h.relay_nonce_for(d.addr);
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(442));
    // 420: a comprehension-required attribute we do not know.
    let r = h.request(Method::ALLOCATE, Some(&d), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(0x7f01, &[1, 2, 3, 4]);
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(code(&m), Some(420));
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x7f, 0x01][..]));
    // 508: total capacity (alice + dave = 2).
    h.allocate(&mut d);
    let mut e = h.client("198.51.100.5:5000", "erin", UNIX0 + 3600);
    e.nonce = h.relay_nonce_for(e.addr);
    let r = h.request(Method::ALLOCATE, Some(&e), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
    // Lifetimes in simulated time: the allocation ends, its relayed address
    // no longer reaches anybody.
    assert_eq!(h.bind(&c, 0x4000, peer()), None);
    h.advance(Duration::from_secs(290));
    assert_eq!(h.bind(&c, 0x4000, peer()), None, "refreshes the permission");
    h.advance(Duration::from_secs(299));
    assert!(h.peer_sends(relayed, peer(), b"x").0.is_some());
    h.advance(Duration::from_secs(12));
    assert!(h.peer_sends(relayed, peer(), b"x").0.is_none());
    assert_eq!(h.relay.allocation_count(), 0);
}

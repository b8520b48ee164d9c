//! Safety: refused peer classes, quotas, rate limits, amplification, where
//! answers go, and drops counted by reason. Simulated time throughout.

use super::*;
use crate::stun::HEADER_LEN;

fn allocate_v6(h: &mut Harness, c: &mut Client) -> SocketAddr {
    let r = h.request_from(c.addr, Method::ALLOCATE, None, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    c.nonce = Message::parse(&r)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .to_vec();
    let c2 = c.clone();
    let r = h.request(Method::ALLOCATE, Some(&c2), |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class, Class::Success, "{:?}", code(&m));
    attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id).unwrap()
}

/// Every class the default policy refuses, over CreatePermission and
/// ChannelBind, IPv4 and IPv6 (incl. IPv4-mapped), and a Send to such a peer
/// goes nowhere.
#[test]
fn every_refused_peer_class_gets_403() {
    let v4 = [
        ("loopback", "127.0.0.1:1"),
        ("loopback high", "127.255.255.254:1"),
        ("rfc1918 10/8", "10.1.2.3:1"),
        ("rfc1918 172.16/12", "172.31.255.255:1"),
        ("rfc1918 192.168/16", "192.168.1.1:1"),
        ("link-local", "169.254.1.1:1"),
        ("cloud metadata", "169.254.169.254:80"),
        ("cgnat", "100.64.0.1:1"),
        ("cgnat high", "100.127.255.255:1"),
        ("multicast", "224.0.0.1:1"),
        ("multicast high", "239.255.255.250:1900"),
        ("unspecified", "0.0.0.0:1"),
        ("this network", "0.1.2.3:1"),
        ("broadcast", "255.255.255.255:1"),
        ("reserved 240/4", "240.0.0.1:1"),
    ];
    let mut h = Harness::new();
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut c);
    for (class, p) in v4 {
        assert_eq!(h.permit(&c, addr(p)), Some(403), "{class} {p}");
        assert_eq!(h.bind(&c, 0x4000, addr(p)), Some(403), "{class} {p}");
        assert!(h.send_indication(&c, addr(p), b"x").is_none(), "{class}");
    }
    assert_eq!(h.permit(&c, addr("198.51.100.7:1")), None, "public is fine");

    let v6 = [
        ("loopback", "[::1]:1"),
        ("unspecified", "[::]:1"),
        ("rfc4193 unique local", "[fd00::1]:1"),
        ("rfc4193 fc00", "[fc00::1]:1"),
        ("aws metadata v6", "[fd00:ec2::254]:80"),
        ("link-local", "[fe80::1]:1"),
        ("multicast", "[ff02::1]:1"),
        ("v4-mapped loopback", "[::ffff:127.0.0.1]:1"),
        ("v4-mapped rfc1918", "[::ffff:10.0.0.1]:1"),
        ("v4-mapped rfc1918 192.168", "[::ffff:192.168.0.1]:1"),
        ("v4-mapped metadata", "[::ffff:169.254.169.254]:80"),
        ("v4-mapped cgnat", "[::ffff:100.64.0.1]:1"),
        ("v4-mapped unspecified", "[::ffff:0.0.0.0]:1"),
        ("v4-mapped multicast", "[::ffff:224.0.0.1]:1"),
    ];
    let mut d = h.client("[2001:db8::1]:5000", "dave", UNIX0 + 3600);
    let relayed = allocate_v6(&mut h, &mut d);
    assert!(relayed.is_ipv6());
    for (class, p) in v6 {
        assert_eq!(h.permit(&d, addr(p)), Some(403), "{class} {p}");
        assert_eq!(h.bind(&d, 0x4001, addr(p)), Some(403), "{class} {p}");
    }
    assert_eq!(h.permit(&d, addr("[2001:db8::7]:1")), None, "public v6");
    assert_eq!(h.permit(&d, addr("198.51.100.7:1")), Some(443), "family");
}

#[test]
fn per_user_allocation_quota_gets_486() {
    let mut h = Harness::with(|cfg| cfg.max_allocations_per_user = 2);
    let a = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let mut clients: Vec<Client> = (0..3)
        .map(|i| Client {
            addr: addr(&format!("198.51.100.1:{}", 6000 + i)),
            ..a.clone()
        })
        .collect();
    h.allocate(&mut clients[0]);
    h.allocate(&mut clients[1]);
    let mut third = clients[2].clone();
    third.nonce = h.relay_nonce_for(third.addr);
    let alloc = |h: &mut Harness, c: &Client| {
        let r = h.request(Method::ALLOCATE, Some(c), |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let m = Message::parse(&r).unwrap();
        assert!(m.verify_integrity(&c.key), "signed");
        code(&m)
    };
    assert_eq!(alloc(&mut h, &third), Some(486));
    assert_eq!(h.relay.stats().quota_hits(Quota::UserAllocations), 1);
    // Another user is not affected.
    let mut b = h.client("198.51.100.2:5000", "bob", UNIX0 + 3600);
    h.allocate(&mut b);
    // Deleting one of alice's frees a slot.
    let r = h.request(Method::REFRESH, Some(&clients[0]), |b| {
        b.u32(attr::LIFETIME, 0);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), None);
    assert_eq!(alloc(&mut h, &third), None);
    // Expiry frees slots too.
    h.advance(Duration::from_secs(601));
    assert_eq!(h.relay.allocation_count(), 0);
    let mut again = clients[0].clone();
    h.allocate(&mut again);
}

#[test]
fn total_allocation_quota_gets_508_and_is_counted() {
    let mut h = Harness::with(|cfg| cfg.max_allocations = 1);
    let mut a = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut a);
    let mut b = h.client("198.51.100.2:5000", "bob", UNIX0 + 3600);
    b.nonce = h.relay_nonce_for(b.addr);
    let r = h.request(Method::ALLOCATE, Some(&b), |x| {
        x.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
    assert_eq!(h.relay.stats().quota_hits(Quota::TotalAllocations), 1);
}

#[test]
fn allocate_attempts_are_rate_limited_per_source_ip() {
    let mut h = Harness::with(|cfg| cfg.allocate_rate_per_ip = 3);
    let req = h.build(Method::ALLOCATE, None, [5; 12], |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let answered = |h: &mut Harness, from: &str| !h.send_raw(addr(from), &req).1.is_empty();
    // Different ports, same IP: one budget.
    assert!(answered(&mut h, "198.51.100.1:1"));
    assert!(answered(&mut h, "198.51.100.1:2"));
    assert!(answered(&mut h, "198.51.100.1:3"));
    assert!(!answered(&mut h, "198.51.100.1:4"), "4th in the second");
    assert!(answered(&mut h, "198.51.100.2:1"), "other IP unaffected");
    // Binding is not an Allocate attempt.
    let binding = h.build(Method::BINDING, None, [6; 12], |_| {});
    let (_, out) = h.send_raw(addr("198.51.100.1:4"), &binding);
    assert_eq!(out.len(), 1);
    let s = h.relay.stats();
    assert_eq!(s.drops(DropReason::RateLimited), 1);
    assert_eq!(s.quota_hits(Quota::AllocateRate), 1);
    h.advance(Duration::from_secs(1));
    assert!(answered(&mut h, "198.51.100.1:5"), "next second");
}

#[test]
fn bandwidth_quota_drops_and_counts_both_directions() {
    let mut h = Harness::with(|cfg| {
        cfg.bandwidth = Some(Bandwidth {
            bytes_per_sec: 1000,
            burst_bytes: 1000,
        })
    });
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    assert_eq!(h.bind(&c, 0x4000, peer()), None);
    let mut cd = vec![0x40, 0x00, 0x00, 200];
    cd.extend_from_slice(&[7; 200]);
    let sent: usize = (0..10)
        .filter(|_| h.send_raw(c.addr, &cd).0.is_some())
        .count();
    assert_eq!(sent, 5, "1000 bytes of burst = five 200-byte packets");
    assert!(
        h.peer_sends(relayed, peer(), &[1; 100]).0.is_none(),
        "shared"
    );
    let s = h.relay.stats();
    assert_eq!(s.drops(DropReason::Bandwidth), 6);
    assert_eq!(s.quota_hits(Quota::Bandwidth), 6);
    h.advance(Duration::from_millis(500));
    assert!(h.peer_sends(relayed, peer(), &[1; 400]).0.is_some());
    assert!(
        h.send_raw(c.addr, &cd).0.is_none(),
        "500 ms earned 500 bytes"
    );
    // Other allocations have their own bucket.
    let mut d = h.client("198.51.100.2:5000", "dave", UNIX0 + 3600);
    h.allocate(&mut d);
    assert_eq!(h.bind(&d, 0x4000, peer()), None);
    assert!(h.send_raw(d.addr, &cd).0.is_some());
}

/// Every answer to an unauthenticated request stays within 2x its size, from
/// IPv4 and IPv6 sources; requests too small for even the leanest answer are
/// dropped and counted.
#[test]
fn unauthenticated_answers_amplify_at_most_twice() {
    let mut h = Harness::new();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let bare = |m: Method, attrs: &dyn Fn(&mut MessageBuilder)| {
        let mut b = MessageBuilder::new(m, Class::Request, [9; 12]);
        attrs(&mut b);
        b.finish()
    };
    cases.push(("binding 20 bytes", bare(Method::BINDING, &|_| {})));
    cases.push((
        "binding + unknown attribute",
        bare(Method::BINDING, &|b| {
            b.attr(0x7777, &[]);
        }),
    ));
    cases.push((
        "binding + many unknown attributes",
        bare(Method::BINDING, &|b| {
            for t in 0x7000..0x7010 {
                b.attr(t, &[]);
            }
        }),
    ));
    cases.push((
        "minimal allocate (28 bytes)",
        bare(Method::ALLOCATE, &|b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        }),
    ));
    cases.push((
        "allocate without attributes",
        bare(Method::ALLOCATE, &|_| {}),
    ));
    cases.push(("refresh without attributes", bare(Method::REFRESH, &|_| {})));
    cases.push(("unknown method", bare(Method(0x0ff), &|_| {})));
    cases.push((
        "integrity without username",
        bare(Method::ALLOCATE, &|b| {
            b.integrity(b"k");
        }),
    ));
    let c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let stale = Client {
        nonce: b"AAAAAAAAAAAAAAAA".to_vec(),
        ..c.clone()
    };
    cases.push((
        "stale nonce",
        h.build(Method::ALLOCATE, Some(&stale), [3; 12], |_| {}),
    ));
    let mut wrong = c.clone();
    wrong.nonce = h.relay_nonce_for(addr("198.51.100.1:1111"));
    wrong.key = [1; 16];
    cases.push((
        "wrong password",
        h.build(Method::ALLOCATE, Some(&wrong), [4; 12], |_| {}),
    ));
    for from in ["198.51.100.1:1111", "[2001:db8::1]:1111"] {
        for (name, req) in &cases {
            let before = h.relay.stats().drops(DropReason::Amplification);
            let (_, out) = h.send_raw(addr(from), req);
            for t in &out {
                assert_eq!(t.to, addr(from));
                assert!(
                    t.payload.len() <= 2 * req.len(),
                    "{name} from {from}: {} -> {} bytes",
                    req.len(),
                    t.payload.len()
                );
            }
            let dropped = h.relay.stats().drops(DropReason::Amplification) - before;
            assert_eq!(
                out.len() + dropped as usize,
                1,
                "{name}: answered or counted"
            );
        }
    }
    // The numbers the docs promise: Binding 20 -> 40 (IPv4, with
    // FINGERPRINT), minimal Allocate 28 -> 56 with realm "tern"; a 20-byte
    // Allocate is dropped.
    let (_, out) = h.send_raw(addr("198.51.100.1:1"), &cases[0].1);
    assert_eq!(out[0].payload.len(), HEADER_LEN + 12 + 8);
    let (_, out) = h.send_raw(addr("198.51.100.1:1"), &cases[3].1);
    assert_eq!(out[0].payload.len(), 56);
    let m = Message::parse(&out[0].payload).unwrap();
    assert_eq!(code(&m), Some(401));
    let (_, out) = h.send_raw(addr("198.51.100.1:1"), &cases[4].1);
    assert!(out.is_empty());
}

/// RFC 3489's RESPONSE-ADDRESS and CHANGE-REQUEST would make us send to a
/// third party: they are never honoured; the sender alone gets an answer.
#[test]
fn answers_only_go_to_the_sender() {
    let mut h = Harness::new();
    let victim = addr("192.0.2.99:53");
    for typ in [attr::RESPONSE_ADDRESS, attr::CHANGE_REQUEST] {
        let mut b = MessageBuilder::new(Method::BINDING, Class::Request, [1; 12]);
        b.attr_with(typ, |out| attr::encode_address(victim, out));
        let req = b.finish();
        let (_, out) = h.send_raw(addr("198.51.100.1:1111"), &req);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, addr("198.51.100.1:1111"));
        let m = Message::parse(&out[0].payload).unwrap();
        assert_eq!(code(&m), Some(420), "not understood, and said so");
    }
}

#[test]
fn drops_are_counted_by_reason() {
    let mut h = Harness::new();
    let from = addr("198.51.100.1:5000");
    h.send_raw(from, b"\xff\xffgarbage");
    h.send_raw(from, &[]);
    let mut bad_len = h.build(Method::BINDING, None, [1; 12], |_| {});
    bad_len[3] = 200;
    h.send_raw(from, &bad_len);
    let resp = MessageBuilder::new(Method::BINDING, Class::Success, [1; 12]).finish();
    h.send_raw(from, &resp);
    h.send_raw(from, &[0x40, 0x00, 0x00, 0x01, 0xaa, 0, 0, 0]);
    h.peer_sends(addr("203.0.113.9:1"), peer(), b"x");
    let mut c = h.client("198.51.100.1:6000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    h.send_raw(c.addr, &[0x40, 0x00, 0x00, 0x01, 0xaa, 0, 0, 0]);
    h.peer_sends(relayed, peer(), b"x");
    let s = h.relay.stats();
    assert_eq!(s.drops(DropReason::Malformed), 3);
    assert_eq!(s.drops(DropReason::Unexpected), 1);
    assert_eq!(s.drops(DropReason::NoAllocation), 2);
    assert_eq!(s.drops(DropReason::NoChannel), 1);
    assert_eq!(s.drops(DropReason::NoPermission), 1);
    assert_eq!(s.auth(AuthOutcome::Challenged), 1);
    assert!(s.client_packets_in >= 7 && s.peer_packets_in == 2);
}

/// Permissions and channels per allocation are bounded: a request that
/// needs one more than the cap gets 508 and installs nothing, a refresh of
/// what the allocation holds always passes, and expiry makes room again.
#[test]
fn permissions_and_channels_per_allocation_are_capped_with_508() {
    let mut h = Harness::with(|cfg| {
        cfg.max_permissions = 3;
        cfg.max_channels = 2;
        // Short enough to outlive within the allocation's 600 s.
        cfg.permission_lifetime = Duration::from_secs(60);
        cfg.channel_lifetime = Duration::from_secs(120);
    });
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    let relayed = h.allocate(&mut c);
    let p = |i: u8| addr(&format!("198.51.100.{}:4000", 10 + i));
    for i in 0..3 {
        assert_eq!(h.permit(&c, p(i)), None, "permission {i}");
    }
    assert_eq!(h.permit(&c, p(3)), Some(508), "a fourth address");
    assert_eq!(h.permit(&c, p(0)), None, "a refresh fits");
    // All or nothing: one held and one new address in one request.
    let r = h.request(Method::CREATE_PERMISSION, Some(&c), |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, p(1))
            .xor_address(attr::XOR_PEER_ADDRESS, p(4));
    });
    assert_eq!(code(&Message::parse(&r).unwrap()), Some(508));
    assert_eq!(h.peer_sends(relayed, p(4), b"x").1.len(), 0);
    // A channel to a new address needs a permission too.
    assert_eq!(h.bind(&c, 0x4000, p(5)), Some(508), "permission cap");
    assert_eq!(h.bind(&c, 0x4000, p(0)), None);
    assert_eq!(h.bind(&c, 0x4001, p(1)), None);
    assert_eq!(h.bind(&c, 0x4002, p(2)), Some(508), "channel cap");
    assert_eq!(h.bind(&c, 0x4001, p(1)), None, "a refresh fits");
    let stats = h.relay.stats();
    assert_eq!(stats.quota_hits(Quota::Permissions), 3);
    assert_eq!(stats.quota_hits(Quota::Channels), 1);

    // Once the permissions and channels have lapsed, there is room.
    h.advance(Duration::from_secs(121));
    assert_eq!(h.permit(&c, p(3)), None);
    assert_eq!(h.bind(&c, 0x4003, p(4)), None);
}

/// A peer at one of the relay's own listeners would nest an allocation
/// inside another; it is refused on ChannelBind (403) and dropped on Send,
/// even where the policy allows its address, while the same IP on another
/// port (a relayed address of this relay, say) stays a peer.
#[test]
fn the_relays_own_listeners_are_no_peers() {
    // The harness's listener is 192.0.2.1:3478; the policy allows its IP.
    let mut h = Harness::with(|cfg| {
        cfg.own_addresses = vec![addr("203.0.113.50:3478"), addr("0.0.0.0:5349")];
    });
    let mut c = h.client("198.51.100.1:5000", "alice", UNIX0 + 3600);
    h.allocate(&mut c);
    assert_eq!(
        h.permit(&c, addr("192.0.2.1:3478")),
        None,
        "an IP is no listener"
    );
    assert_eq!(h.bind(&c, 0x4000, addr("192.0.2.1:3478")), Some(403));
    assert_eq!(h.bind(&c, 0x4000, addr("203.0.113.50:3478")), Some(403));
    assert_eq!(
        h.bind(&c, 0x4000, addr("198.51.100.9:5349")),
        Some(403),
        "wildcard"
    );
    assert_eq!(
        h.bind(&c, 0x4000, addr("192.0.2.1:50001")),
        None,
        "another port"
    );

    let before = h.relay.stats().drops(DropReason::OwnAddress);
    assert!(h
        .send_indication(&c, addr("192.0.2.1:3478"), b"nested")
        .is_none());
    assert_eq!(h.relay.stats().drops(DropReason::OwnAddress), before + 1);
    assert!(h
        .send_indication(&c, addr("192.0.2.1:50001"), b"media")
        .is_some());
}

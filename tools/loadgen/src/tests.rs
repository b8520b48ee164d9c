//! Client state machine tests in simulated time, against a scripted server
//! built with the codec (no sockets, no clock).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::bare::BareClient;
use crate::client::{decode_channel_data, encode_channel_data, ClientError, Op, TurnClient};
use crate::session::{Session, SessionEvent};
use crate::stun::{self as st, long_term_key, Builder, Class, Message};

const SECRET: &[u8] = b"test-secret";
const REALM: &str = "tern";

fn client() -> TurnClient {
    TurnClient::with_rest_secret(SECRET, "alice", 4_000_000_000, 7)
}

fn key() -> [u8; 16] {
    let c = tern_common::credentials::mint(SECRET, "alice", 4_000_000_000);
    long_term_key(&c.username, REALM, &c.credential)
}

fn sent(c: &mut TurnClient) -> Vec<u8> {
    c.poll_transmit().expect("a request was queued")
}

fn answer(req: &[u8], class: Class, build: impl FnOnce(&mut Builder)) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut b = Builder::new(m.method, class, m.tid);
    build(&mut b);
    b.fingerprint().finish()
}

fn challenge(req: &[u8], nonce: &str) -> Vec<u8> {
    answer(req, Class::Error, |b| {
        b.attr(st::ERROR_CODE, &[0, 0, 4, 1])
            .attr(st::REALM, REALM.as_bytes())
            .attr(st::NONCE, nonce.as_bytes());
    })
}

fn relayed() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

/// Run the Allocate handshake; returns the time it finished.
fn allocate(c: &mut TurnClient, t: Instant) {
    c.allocate(t);
    let first = sent(c);
    c.handle_control(t, &challenge(&first, "n1"));
    let second = sent(c);
    c.handle_control(
        t,
        &answer(&second, Class::Success, |b| {
            b.xor_address(st::XOR_RELAYED_ADDRESS, relayed())
                .u32(st::LIFETIME, 600)
                .integrity(&key());
        }),
    );
}

#[test]
fn allocate_answers_the_401_with_long_term_credentials() {
    let mut c = client();
    let t = Instant::now();
    c.allocate(t);
    let first = sent(&mut c);
    let m = Message::parse(&first).unwrap();
    assert_eq!((m.method, m.class), (st::ALLOCATE, Class::Request));
    assert_eq!(m.u32(st::REQUESTED_TRANSPORT), Some(17 << 24));
    assert!(
        !m.has_integrity(),
        "first Allocate goes without credentials"
    );

    c.handle_control(t, &challenge(&first, "nonce-1"));
    let second = sent(&mut c);
    let m2 = Message::parse(&second).unwrap();
    assert_ne!(
        m2.tid, m.tid,
        "the authenticated retry is a new transaction"
    );
    assert_eq!(m2.get(st::NONCE), Some(&b"nonce-1"[..]));
    assert_eq!(m2.get(st::REALM), Some(REALM.as_bytes()));
    assert!(m2.get(st::USERNAME).is_some_and(|u| u.ends_with(b":alice")));
    assert!(
        m2.verify_integrity(&key()),
        "MESSAGE-INTEGRITY uses MD5(user:realm:pass)"
    );

    c.handle_control(
        t,
        &answer(&second, Class::Success, |b| {
            b.xor_address(st::XOR_RELAYED_ADDRESS, relayed())
                .u32(st::LIFETIME, 600)
                .integrity(&key());
        }),
    );
    assert_eq!(
        c.poll_event(),
        Some(SessionEvent::Allocated { relayed: relayed() })
    );
    assert_eq!(c.relayed(), Some(relayed()));
    assert_eq!(c.lifetime(), 600);
}

#[test]
fn bind_sends_permission_then_channel_and_reports_both() {
    let mut c = client();
    let t = Instant::now();
    allocate(&mut c, t);
    c.poll_event();
    let peer: SocketAddr = "127.0.0.1:50002".parse().unwrap();
    c.bind(t, peer, 0x4000);
    let perm = sent(&mut c);
    let chan = sent(&mut c);
    let p = Message::parse(&perm).unwrap();
    assert_eq!(p.method, st::CREATE_PERMISSION);
    assert_eq!(p.xor_address(st::XOR_PEER_ADDRESS), Some(peer));
    assert!(p.verify_integrity(&key()));
    let b = Message::parse(&chan).unwrap();
    assert_eq!(b.method, st::CHANNEL_BIND);
    assert_eq!(b.get(st::CHANNEL_NUMBER), Some(&[0x40, 0, 0, 0][..]));
    assert_eq!(b.xor_address(st::XOR_PEER_ADDRESS), Some(peer));

    // Answers may come in any order.
    let ok = |req: &[u8]| {
        answer(req, Class::Success, |b| {
            b.integrity(&key());
        })
    };
    c.handle_control(t, &ok(&chan));
    c.handle_control(t, &ok(&perm));
    assert_eq!(
        c.poll_event(),
        Some(SessionEvent::ChannelBound {
            peer,
            channel: 0x4000
        })
    );
    assert_eq!(
        c.poll_event(),
        Some(SessionEvent::PermissionCreated { peer })
    );
    assert_eq!(c.poll_transmit(), None);
}

#[test]
fn stale_nonce_is_retried_with_the_fresh_one() {
    let mut c = client();
    let t = Instant::now();
    allocate(&mut c, t);
    c.poll_event();
    let peer: SocketAddr = "127.0.0.1:50002".parse().unwrap();
    c.create_permission(t, peer);
    let req = sent(&mut c);
    c.handle_control(
        t,
        &answer(&req, Class::Error, |b| {
            b.attr(st::ERROR_CODE, &[0, 0, 4, 38])
                .attr(st::REALM, REALM.as_bytes())
                .attr(st::NONCE, b"n2");
        }),
    );
    let retry = Message::parse(&sent(&mut c))
        .unwrap()
        .get(st::NONCE)
        .map(<[u8]>::to_vec);
    assert_eq!(retry.as_deref(), Some(&b"n2"[..]));
    assert_eq!(c.poll_event(), None, "a 438 is not a failure");
}

#[test]
fn a_second_401_and_other_errors_are_reported() {
    let mut c = client();
    let t = Instant::now();
    c.allocate(t);
    let first = sent(&mut c);
    c.handle_control(t, &challenge(&first, "n1"));
    let second = sent(&mut c);
    c.handle_control(t, &challenge(&second, "n1"));
    assert_eq!(
        c.poll_event(),
        Some(SessionEvent::Failed(ClientError::Rejected {
            op: Op::Allocate,
            code: 401
        }))
    );
    // Operations before an allocation are refused locally.
    let mut fresh = client();
    fresh.channel_bind(t, relayed(), 0x4000);
    assert!(matches!(
        fresh.poll_event(),
        Some(SessionEvent::Failed(ClientError::NotAllocated(_)))
    ));
}

#[test]
fn forged_answers_are_ignored_and_retransmission_continues() {
    let mut c = client();
    let t = Instant::now();
    allocate(&mut c, t);
    c.poll_event();
    c.refresh(t, 600);
    let req = sent(&mut c);
    c.handle_control(
        t,
        &answer(&req, Class::Success, |b| {
            b.integrity(b"not-the-key");
        }),
    );
    assert_eq!(c.poll_event(), None);
    // RTO 500 ms doubling, 7 sends in all, then a timeout.
    let mut now = t;
    let mut sends = 1;
    while let Some(at) = c
        .poll_timeout()
        .filter(|&at| at < t + Duration::from_secs(100))
    {
        now = at;
        c.handle_timeout(now);
        while let Some(again) = c.poll_transmit() {
            assert_eq!(again, req, "retransmissions are byte-identical");
            sends += 1;
        }
        if let Some(ev) = c.poll_event() {
            assert_eq!(
                ev,
                SessionEvent::Failed(ClientError::Timeout {
                    op: Op::Refresh { lifetime: 600 }
                })
            );
            break;
        }
    }
    assert_eq!(sends, 7);
    assert_eq!(
        now - t,
        Duration::from_millis(500 * (1 + 2 + 4 + 8 + 16 + 32 + 64))
    );
}

#[test]
fn allocations_and_channels_are_refreshed_before_they_expire() {
    let mut c = client();
    let t = Instant::now();
    allocate(&mut c, t);
    c.poll_event();
    let peer: SocketAddr = "127.0.0.1:50002".parse().unwrap();
    c.channel_bind(t, peer, 0x4001);
    let chan = sent(&mut c);
    c.handle_control(
        t,
        &answer(&chan, Class::Success, |b| {
            b.integrity(&key());
        }),
    );
    c.poll_event();
    // Permissions last 300 s, so the refresh comes at 240 s, not at 300 s.
    let at = c.poll_timeout().unwrap();
    assert_eq!(at - t, Duration::from_secs(240));
    c.handle_timeout(at);
    let refresh = Message::parse(&sent(&mut c)).unwrap().method;
    let rebind = Message::parse(&sent(&mut c)).unwrap().method;
    assert_eq!((refresh, rebind), (st::REFRESH, st::CHANNEL_BIND));
}

#[test]
fn channel_data_framing() {
    let mut out = [0u8; 64];
    let n = encode_channel_data(0x4001, b"hello", &mut out);
    assert_eq!(&out[..n], &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(
        decode_channel_data(&out[..n]),
        Some((0x4001, &b"hello"[..]))
    );
    // Padding after the payload (TCP framing) is tolerated; STUN is not
    // ChannelData; truncated frames are rejected.
    assert_eq!(
        decode_channel_data(&[0x40, 0x01, 0, 1, 9, 0, 0, 0]),
        Some((0x4001, &[9u8][..]))
    );
    assert_eq!(decode_channel_data(&[0x00, 0x01, 0, 0]), None);
    assert_eq!(decode_channel_data(&[0x40, 0x01, 0, 9, 1]), None);
}

#[test]
fn bare_client_sets_up_with_the_forwarder_protocol() {
    let mut c = BareClient::new();
    let t = Instant::now();
    c.allocate(t);
    let req = c.poll_transmit().unwrap();
    assert_eq!(&req[..4], crate::bare::ALLOC);
    let mut ans = crate::bare::ALLOC_OK.to_vec();
    ans.extend_from_slice(&req[4..8]);
    ans.extend_from_slice(&[127, 0, 0, 1, 0xc3, 0x50]);
    c.handle_control(t, &ans);
    assert_eq!(
        c.poll_event(),
        Some(SessionEvent::Allocated { relayed: relayed() })
    );
    assert_eq!(c.poll_timeout(), None, "nothing left to retransmit");
}

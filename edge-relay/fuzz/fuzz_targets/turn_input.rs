//! Everything a client or peer can send, through the codec and the engine.
//!
//! The first byte picks the path: parse only, a client datagram (UDP or a
//! TCP frame), or a peer datagram. The engine starts with one allocation
//! that has a channel and a permission, so ChannelData, Send and Data paths
//! are reachable without the fuzzer having to forge a MESSAGE-INTEGRITY.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_relay::stun::{attr, Message};
use edge_relay::{Config, FiveTuple, PeerPolicy, Relay, Transport, CHANNEL_DATA_HEADROOM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    // Codec: parse, and exercise every accessor on what parses.
    if let Ok(m) = Message::parse(data) {
        let _ = m.verify_integrity(b"key");
        let _ = m.verify_integrity_sha256(b"key");
        for a in m.attributes() {
            let _ = attr::decode_xor_address(a.value, &m.transaction_id);
            let _ = attr::decode_address(a.value);
            let _ = attr::decode_error_code(a.value);
            let _ = attr::decode_u32(a.value);
        }
    }
    let now = Instant::now();
    let mut cfg = Config::new("tern", b"secret".to_vec(), [1; 32]);
    cfg.policy = PeerPolicy::new(vec!["0.0.0.0/0".parse().unwrap()]);
    let mut relay = Relay::new(cfg);
    let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let local: SocketAddr = "192.0.2.2:3478".parse().unwrap();
    let relayed: SocketAddr = "192.0.2.2:50000".parse().unwrap();
    let peer: SocketAddr = "198.51.100.1:4000".parse().unwrap();
    let transport = match selector % 3 {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => Transport::Tls,
    };
    let ft = FiveTuple {
        client,
        local,
        transport,
    };
    match selector >> 6 {
        0 | 1 => {
            relay.handle_client_message(now, 1_800_000_000, ft, data);
        }
        2 => {
            let mut buf = vec![0u8; CHANNEL_DATA_HEADROOM];
            buf.extend_from_slice(data);
            relay.handle_peer_datagram(now, relayed, peer, &mut buf);
        }
        _ => {
            relay.handle_client_message(now, 1_800_000_000, ft, data);
            relay.client_closed(ft);
        }
    }
    relay.handle_timeout(now + Duration::from_secs(3600));
    while relay.poll_transmit().is_some() {}
    while relay.poll_event().is_some() {}
});

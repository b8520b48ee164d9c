//! What the sans-IO engine costs per relayed packet, with no sockets: the
//! user-space share of the relay's packet path, apart from the kernel's.
//!
//!   cargo run --release -p edge-relay --example engine_path -- [pairs] [packets]
//!
//! Sets up `pairs` pairs of allocations (default 500) the way clients do
//! (401 challenge, Allocate with REST credentials, ChannelBind 0x4000 to the
//! partner's relayed address), then pushes 164-byte ChannelData messages
//! through `handle_client_datagram` and `route_client_media` round-robin
//! over every client, which is the engine's whole work for one relayed
//! packet of a Tern call (both clients on this relay: local delivery).
//! Prints nanoseconds per relayed packet for five passes of `packets`
//! (default 2,000,000) and their median. Checks every packet is delivered
//! to the partner, so a fast wrong path cannot pass for a fast one.

use std::net::SocketAddr;
use std::time::Instant;

use edge_relay::auth::long_term_key;
use edge_relay::stun::{attr, Class, Message, MessageBuilder, Method};
use edge_relay::{Config, Event, Family, PeerPolicy, Relay, Route};
use tern_common::credentials;

const SECRET: &[u8] = b"bench-secret";
const REALM: &str = "tern";
const CHANNEL: u16 = 0x4000;
const PAYLOAD: usize = 160;

struct Client {
    addr: SocketAddr,
    relayed: SocketAddr,
}

struct Setup {
    relay: Relay,
    local: SocketAddr,
    now: Instant,
    unix: u64,
    next_port: u32,
    tid: u64,
}

impl Setup {
    /// Send a request, answer any BindRelay, return the one answer.
    fn request(&mut self, from: SocketAddr, msg: &[u8]) -> Vec<u8> {
        let fwd = self
            .relay
            .handle_client_datagram(self.now, self.unix, from, self.local, msg);
        assert!(fwd.is_none(), "a request is not media");
        while let Some(e) = self.relay.poll_event() {
            if let Event::BindRelay { id, family, .. } = e {
                assert_eq!(family, Family::V4);
                // 10.x.y.z:port, unique per allocation.
                let n = self.next_port;
                self.next_port += 1;
                let ip = std::net::Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8);
                let relayed = SocketAddr::new(ip.into(), 40_000);
                self.relay.relay_bound(self.now, id, Ok(relayed));
            }
        }
        let t = self.relay.poll_transmit().expect("an answer");
        assert!(self.relay.poll_transmit().is_none());
        t.payload
    }

    fn tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut t = [0x5A; 12];
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        t
    }

    fn client(&mut self, i: u32) -> (Client, [u8; 16], String, Vec<u8>) {
        let addr = SocketAddr::new(
            std::net::Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8).into(),
            5000,
        );
        let c = credentials::mint(SECRET, &format!("user{i}"), self.unix + 3600);
        let key = long_term_key(&c.username, REALM, &c.credential);
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, self.tid());
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        let r = self.request(addr, &b.finish());
        let nonce = Message::parse(&r)
            .unwrap()
            .get(attr::NONCE)
            .expect("401 with a nonce")
            .to_vec();
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, self.tid());
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        sign(&mut b, &c.username, &nonce, &key);
        let r = self.request(addr, &b.finish());
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class, Class::Success, "Allocate refused");
        let relayed =
            attr::decode_xor_address(m.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &m.transaction_id)
                .unwrap();
        (Client { addr, relayed }, key, c.username, nonce)
    }

    fn channel_bind(
        &mut self,
        c: &Client,
        user: &str,
        nonce: &[u8],
        key: &[u8; 16],
        peer: SocketAddr,
    ) {
        let mut b = MessageBuilder::new(Method::CHANNEL_BIND, Class::Request, self.tid());
        b.attr(
            attr::CHANNEL_NUMBER,
            &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0],
        )
        .xor_address(attr::XOR_PEER_ADDRESS, peer);
        sign(&mut b, user, nonce, key);
        let r = self.request(c.addr, &b.finish());
        assert_eq!(Message::parse(&r).unwrap().class, Class::Success);
    }
}

fn sign(b: &mut MessageBuilder, user: &str, nonce: &[u8], key: &[u8; 16]) {
    b.attr(attr::USERNAME, user.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, nonce)
        .integrity(key);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: u32 = args.next().map_or(500, |a| a.parse().expect("pairs"));
    let packets: usize = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("packets"));

    let mut config = Config::new(REALM, SECRET, [3; 32]);
    // As the benchmark runs tern-relay: addresses of the test bed allowed,
    // no per-user or per-IP limits, no bandwidth cap.
    config.max_allocations_per_user = 0;
    config.allocate_rate_per_ip = 0;
    config.bandwidth = None;
    config.policy = PeerPolicy::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut s = Setup {
        relay: Relay::new(config),
        local: "192.0.2.1:3478".parse().unwrap(),
        now: Instant::now(),
        unix,
        next_port: 1,
        tid: 0,
    };
    let mut clients = Vec::new();
    for p in 0..pairs {
        let (a, ka, ua, na) = s.client(2 * p);
        let (b, kb, ub, nb) = s.client(2 * p + 1);
        s.channel_bind(&a, &ua, &na, &ka, b.relayed);
        s.channel_bind(&b, &ub, &nb, &kb, a.relayed);
        clients.push((a.addr, b.addr));
        clients.push((b.addr, a.addr));
    }

    let mut msg = vec![0u8; 4 + PAYLOAD];
    msg[0..2].copy_from_slice(&CHANNEL.to_be_bytes());
    msg[2..4].copy_from_slice(&(PAYLOAD as u16).to_be_bytes());
    let mut results = Vec::new();
    for pass in 1..=5 {
        let start = Instant::now();
        let (now, unix) = (s.now, s.unix);
        for i in 0..packets {
            let (from, to) = clients[i % clients.len()];
            let f = s
                .relay
                .handle_client_datagram(now, unix, from, s.local, &msg)
                .expect("ChannelData on a bound channel is media");
            match s.relay.route_client_media(now, f, &mut msg) {
                Route::Local(out) if out.to == to => {}
                other => panic!("packet {i} from {from} not delivered to {to}: {other:?}"),
            }
            // Put the sender's channel number back over the receiver's
            // (the same 0x4000 here, but the engine wrote it).
            msg[0..2].copy_from_slice(&CHANNEL.to_be_bytes());
        }
        let ns = start.elapsed().as_nanos() as f64 / packets as f64;
        println!("pass {pass}: {ns:.1} ns per relayed packet");
        results.push(ns);
    }
    results.sort_by(f64::total_cmp);
    println!(
        "engine: {:.1} ns per relayed packet (median of 5; {} pairs, {} packets per pass)",
        results[2], pairs, packets
    );
}

//! Measure how many bytes a TURN server sends back for unauthenticated
//! requests of each kind (its amplification factor as a UDP reflector).
//!
//!   cargo run -p edge-relay --example amplification -- 127.0.0.1:3478 [label]
//!
//! Sends each request from a fresh socket, collects every datagram that comes
//! back within 300 ms, and prints one Markdown table row per request.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use edge_relay::stun::{attr, Class, MessageBuilder, Method};

fn main() {
    let mut args = std::env::args().skip(1);
    let server: SocketAddr = args
        .next()
        .expect("usage: amplification SERVER_IP:PORT [label]")
        .parse()
        .expect("SERVER_IP:PORT");
    let label = args.next().unwrap_or_else(|| server.to_string());
    let req = |m: Method, f: &dyn Fn(&mut MessageBuilder)| {
        let mut b = MessageBuilder::new(m, Class::Request, rand_tid());
        f(&mut b);
        b.finish()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Binding, no attributes", req(Method::BINDING, &|_| {})),
        (
            "Binding + FINGERPRINT",
            req(Method::BINDING, &|b| {
                b.fingerprint();
            }),
        ),
        ("Allocate, no attributes", req(Method::ALLOCATE, &|_| {})),
        (
            "Allocate + REQUESTED-TRANSPORT",
            req(Method::ALLOCATE, &|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            }),
        ),
        (
            "Allocate + REQUESTED-TRANSPORT + FINGERPRINT",
            req(Method::ALLOCATE, &|b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .fingerprint();
            }),
        ),
        ("Refresh, no attributes", req(Method::REFRESH, &|_| {})),
        ("unknown method 0x0ff", req(Method(0x0ff), &|_| {})),
    ];
    println!("| server | request | request bytes | answer bytes | ratio |");
    println!("|---|---|---|---|---|");
    for (name, bytes) in cases {
        let sock = UdpSocket::bind(if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })
        .expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        sock.send_to(&bytes, server).expect("send");
        let mut got = 0usize;
        let mut buf = [0u8; 2048];
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                got += n;
            }
        }
        let ratio = got as f64 / bytes.len() as f64;
        let answer = if got == 0 {
            "none".to_owned()
        } else {
            got.to_string()
        };
        println!(
            "| {label} | {name} | {} | {answer} | {ratio:.2} |",
            bytes.len()
        );
    }
}

/// Transaction ids only need to differ; the clock's nanoseconds will do.
fn rand_tid() -> [u8; 12] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut t = [0u8; 12];
    t.copy_from_slice(&n.to_be_bytes()[4..]);
    t
}

//! Native cost of the core alone (no wasm, in-memory KV), as a baseline for
//! `tern bench signaling`: `cargo run --release -p edge-signaling --example core_cost`.
use std::time::Instant;

use edge_signaling::apply::run;
use edge_signaling::kv::MemoryKv;
use edge_signaling::token::{mint, Claims};
use edge_signaling::{Config, Signaling};
use tern_common::relay::{sign, Heartbeat, Listener, Load, RelayState};

fn main() {
    let cfg = Config::new("api", "relay");
    let s = Signaling::new(&cfg);
    let mut kv = MemoryKv::default();
    let now = 1_800_000_000_000u64;
    for (id, region) in [("a", "ra"), ("b", "rb")] {
        let hb = Heartbeat {
            id: id.into(),
            region: region.into(),
            listeners: vec![Listener {
                transport: "udp".into(),
                address: "127.0.0.1:3478".into(),
            }],
            state: RelayState::Active,
            load: Load::default(),
            seq: 1,
            sent_at_ms: now,
            boot: String::new(),
        };
        let body = serde_json::to_vec(&hb).unwrap();
        let sig = sign(b"relay", &body);
        run(&mut kv, |kv| {
            s.handle_heartbeat(now, &body, &sig, kv).unwrap()
        })
        .unwrap();
    }
    let n = 20_000;
    let t = Instant::now();
    for i in 0..n {
        let room = format!("room-{i}");
        let token = mint(
            b"api",
            &Claims {
                room: room.clone(),
                sub: "x".into(),
                exp: now / 1000 + 60,
            },
        );
        let f = format!(r#"{{"type":"join","room":"{room}","token":"{token}"}}"#);
        let mut e = [0u8; 24];
        e[..8].copy_from_slice(&(i as u64).to_le_bytes());
        run(&mut kv, |kv| s.handle_frame(now, "c", &f, &e, kv)).unwrap();
        run(&mut kv, |kv| {
            s.handle_frame(now, "c", r#"{"type":"leave"}"#, &e, kv)
        })
        .unwrap();
    }
    println!(
        "join+leave (incl. minting the token): {:.1} µs per pair",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

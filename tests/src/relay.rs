//! Relays (`tern relay`) heartbeating into a signaling host under test.
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::origin::Origin;
use crate::process::{bin, free_udp_port, Proc};
use crate::token::RELAY_SECRET;
/// A relay started with `tern relay`, heartbeating into `origin`.
pub fn start_relay(origin: &Origin, id: &str, region: &str) -> Proc {
    start_relay_with(origin, id, region, &[])
}

/// [`start_relay`] with extra flags (e.g. `--standby`).
pub fn start_relay_with(origin: &Origin, id: &str, region: &str, extra: &[&str]) -> Proc {
    start_relay_at(origin.addr, id, region, extra)
}

/// A relay heartbeating into the signaling endpoint at `signaling` (an
/// origin or a `tern spin` app).
pub fn start_relay_at(signaling: SocketAddr, id: &str, region: &str, extra: &[&str]) -> Proc {
    let port = free_udp_port();
    let child = Command::new(bin("tern"))
        .args(["relay", "--id", id, "--region", region])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--signaling", &format!("http://{signaling}")])
        .args(["--allow-peer", "127.0.0.0/8"])
        // Every simulated caller comes from 127.0.0.1: the per-source-IP
        // Allocate limit (meant for the internet) would throttle a drill.
        .args(["--allocate-rate-per-ip", "0"])
        .args(extra)
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting tern relay");
    Proc {
        child,
        name: format!("relay {id}"),
    }
}

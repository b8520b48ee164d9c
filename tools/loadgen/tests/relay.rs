//! The generator end to end: a few pairs for ~2 s through a real `tern-relay`
//! process and through the in-process bare forwarder, asserting that every
//! packet arrives. Rates and latencies are not asserted (that is the
//! benchmark's job, and a busy CI machine would make them flaky).
//!
//! `tern-relay` is not built from here: `./dev test` (and `cargo build
//! --workspace`) put it next to this test's target directory, where it is
//! looked up; the test fails with instructions when it is missing.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern_loadgen::forwarder::Forwarder;
use tern_loadgen::{Harness, SetupConfig, StepConfig, StepReport, Target};

const SECRET: &str = "loadgen-test-secret-of-at-least-32-bytes";

/// Kills the relay when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/<profile>/tern-relay`: the test binary is `target/<profile>/deps/…`.
fn tern_relay_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = dir.join("tern-relay");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p edge-relay --bin tern-relay` \
         (same profile and target dir as this test; `./dev test` does it)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup(server: SocketAddr, target: Target, pairs: usize) -> Harness {
    // The relay may still be starting: setup retransmits for a few seconds,
    // and a refused first try is retried a few times.
    let mut last = None;
    for _ in 0..5 {
        match Harness::setup(&SetupConfig {
            server,
            target: target.clone(),
            pairs,
            setup_window: 16,
            setup_timeout: Duration::from_secs(10),
        }) {
            Ok(h) => return h,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("setup against {server} failed: {}", last.unwrap());
}

fn two_seconds(h: &mut Harness) -> StepReport {
    let r = h
        .step(
            &StepConfig {
                rate: 50.0 * h.clients() as f64,
                duration: Duration::from_secs(2),
                size: 160,
                // Generous: on a loaded machine a packet may be late, and
                // late is not lost.
                drain: Duration::from_secs(1),
                relay_pid: None,
            },
            1,
        )
        .expect("traffic step");
    assert!(r.sent > 0, "nothing was sent: {r:?}");
    r
}

#[test]
fn pairs_through_tern_relay_lose_nothing() {
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _relay = Proc(
        Command::new(tern_relay_bin())
            .args(["--listen", &server.to_string()])
            .args(["--allow-peer", "127.0.0.0/8", "--relay-ports", "ephemeral"])
            .env("TERN_RELAY_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tern-relay"),
    );
    let t0 = Instant::now();
    let mut h = setup(
        server,
        Target::Turn {
            secret: SECRET.as_bytes().to_vec(),
        },
        4,
    );
    assert_eq!(h.setup.allocations, 8);
    assert!(t0.elapsed() < Duration::from_secs(60));
    let r = two_seconds(&mut h);
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.delivered, r.sent, "{r:?}");
    assert_eq!(r.send_errors + r.stray, 0, "{r:?}");
}

#[test]
fn pairs_through_the_bare_forwarder_lose_nothing() {
    // Through the kernel between relayed sockets, and handed over in memory.
    for local in [false, true] {
        let listen: SocketAddrV4 = "127.0.0.1:0".parse().unwrap();
        // The forwarder serves forever on its own thread (which ends with
        // the test process) and reports where it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut fwd = Forwarder::bind(listen)
                .expect("bind forwarder")
                .local_delivery(local);
            tx.send(fwd.local_addr().unwrap()).unwrap();
            fwd.run()
        });
        let server = rx.recv().unwrap();
        let mut h = setup(server, Target::Bare, 4);
        let r = two_seconds(&mut h);
        assert_eq!(r.lost, 0, "local delivery {local}: {r:?}");
        assert_eq!(r.delivered, r.sent, "local delivery {local}: {r:?}");
    }
}

//! Relay failure handling on an origin, over real sockets: a `tern serve`
//! origin hosting the wasm signaling component, real `tern relay` processes
//! heartbeating into it, and scripted WebSocket clients. (The protocol
//! itself is the conformance suite's, `tests/tests/conformance.rs`.)

use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::*;

fn origin_with_relays() -> (Origin, Proc, Proc) {
    let origin = Origin::start("edge-1");
    let a = start_relay(&origin, "a-1", "region-a");
    let b = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("both relays heartbeat in");
    (origin, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_relay_is_unhealthy_within_two_seconds_and_joins_move() {
    let (origin, mut ra, _rb) = origin_with_relays();
    let mut c = Client::connect(&origin.ws_url()).await;
    let first = c.join("room-3", "carol").await;
    // Kill whichever relay the room got.
    let victim = first["relay"]["id"].as_str().unwrap().to_string();
    let mut other_proc;
    let victim_proc: &mut Proc = if victim == "a-1" {
        &mut ra
    } else {
        other_proc = _rb;
        &mut other_proc
    };
    let killed_at = Instant::now();
    victim_proc.kill();
    wait_until(Duration::from_secs(2), || {
        !healthy_ids(&origin.relays()).contains(&victim)
    })
    .expect("killed relay still listed healthy after 2 s");
    let detected = killed_at.elapsed();
    eprintln!("relay {victim} unhealthy after {detected:?}");
    let listed = origin.relays();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == victim.as_str())
        .expect("a dead relay stays listed, as unhealthy");
    assert_eq!(entry["healthy"], false);
    // Its heartbeat connection closed as it died: the edge probed it at
    // once (refused by its host, or unanswered) instead of waiting out a
    // silence. (The refusal path alone: tests/tests/redis.rs.)
    wait_until(Duration::from_secs(2), || {
        origin.relays().as_array().unwrap().iter().any(|r| {
            r["id"] == victim.as_str()
                && r["probe_link_closed"] == true
                && r["failing"] == "relay-lost"
        })
    })
    .unwrap_or_else(|_| panic!("the edge saw the connection close: {}", origin.relays()));

    let mut d = Client::connect(&origin.ws_url()).await;
    let next = d.join("room-4", "dave").await;
    assert_ne!(next["relay"]["id"], victim.as_str());
    assert_ne!(next["relay"]["region"], first["relay"]["region"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_on_a_killed_relay_are_rerouted_in_under_a_second() {
    let (origin, ra, rb) = origin_with_relays();
    // Let the failure detector learn the heartbeat rhythm first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut alice = Client::connect(&origin.ws_url()).await;
    let mut bob = Client::connect(&origin.ws_url()).await;
    let a = alice.join("reroute", "alice").await;
    bob.join("reroute", "bob").await;
    alice.expect("peer-joined").await;
    let victim = a["relay"]["id"].as_str().unwrap().to_string();
    let (mut dead, _alive) = if victim == "a-1" { (ra, rb) } else { (rb, ra) };

    let killed = Instant::now();
    dead.kill();
    for c in [&mut alice, &mut bob] {
        let f = c
            .recv_within(Duration::from_secs(3))
            .await
            .expect("a reroute after the relay died");
        assert_eq!(f["type"], "reroute", "{f}");
        assert_eq!(f["reason"], "relay-lost");
        assert_ne!(f["relay"]["id"], victim.as_str());
        assert!(f["iceServers"][0]["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("turn:"));
    }
    let took = killed.elapsed();
    eprintln!("reroute {took:?} after SIGKILL of relay {victim}");
    assert!(took < Duration::from_secs(1), "reroute took {took:?}");
    // Exactly once.
    alice.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_standby_relay_takes_over_its_region() {
    let origin = Origin::start("edge-1");
    let mut active = start_relay(&origin, "a-1", "region-a");
    let _standby = start_relay_with(&origin, "a-2", "region-a", &["--standby"]);
    let _other = start_relay(&origin, "b-1", "region-b");
    wait_until(Duration::from_secs(20), || {
        origin.relays().as_array().unwrap().len() == 3
    })
    .expect("three relays registered");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("the two active relays are healthy");
    let entry = |id: &str| {
        origin
            .relays()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let s = entry("a-2");
    assert_eq!(s["state"], "standby");
    assert_eq!(s["healthy"], false, "an idle standby takes no calls");
    let near_a = |room: &str, who: &str| json!({"type":"join","room":room,"token":token(room, who, 600),"probes":{"region-a":1.0,"region-b":80.0}});
    let mut c = Client::connect(&origin.ws_url()).await;
    c.send(near_a("sb-1", "carol")).await;
    assert_eq!(c.expect("joined").await["relay"]["id"], "a-1");

    active.kill();
    wait_until(Duration::from_secs(3), || entry("a-2")["promoted"] == true)
        .expect("the standby is promoted once its region has no active relay");
    let f = c
        .recv_within(Duration::from_secs(3))
        .await
        .expect("a reroute");
    assert_eq!(f["type"], "reroute", "{f}");
    let mut d = Client::connect(&origin.ws_url()).await;
    d.send(near_a("sb-2", "dave")).await;
    assert_eq!(
        d.expect("joined").await["relay"]["id"],
        "a-2",
        "callers near region-a now get the promoted standby"
    );
}

/// A relay whose probe answers slow down (its path congests: +60 ms each way
/// through a delay shim, the relay itself keeps heartbeating) is drained
/// make-before-break before callers feel more: `reroute` with
/// `relay-degraded` to the other region, and new calls avoid it.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_answering_probes_far_slower_than_usual_is_drained() {
    let origin = Origin::start("edge-slow");
    let dir = std::env::temp_dir().join(format!("tern-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let delay_file = dir.join("delay-ms");
    let (relay_port, shim_port) = (free_udp_port(), free_udp_port());
    let _shim = Proc {
        child: std::process::Command::new(bin("tern-delay"))
            .args(["--listen", &format!("127.0.0.1:{shim_port}")])
            .args(["--upstream", &format!("127.0.0.1:{relay_port}")])
            .args(["--delay-ms", "0", "--delay-file"])
            .arg(&delay_file)
            .spawn()
            .expect("tern-delay"),
        name: "delay shim".into(),
    };
    let _a = Proc {
        child: std::process::Command::new(bin("tern"))
            .args(["relay", "--id", "a-1", "--region", "region-a"])
            .args(["--listen", &format!("127.0.0.1:{relay_port}")])
            .args(["--advertise", &format!("127.0.0.1:{shim_port}")])
            .args(["--signaling", &format!("http://{}", origin.addr)])
            .args(["--allow-peer", "127.0.0.0/8"])
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("tern relay"),
        name: "relay a-1".into(),
    };
    let _b = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("both relays heartbeat in");
    // Let the prober learn a-1's usual round trip (a full window and more).
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut alice = Client::connect(&origin.ws_url()).await;
    alice
        .send(json!({"type":"join","room":"slow","token":token("slow","alice",600),"probes":{"region-a":1.0}}))
        .await;
    let a = alice.expect("joined").await;
    assert_eq!(a["relay"]["id"], "a-1", "probes put the room in region-a");

    std::fs::write(&delay_file, "60").unwrap();
    let congested = Instant::now();
    let f = alice
        .recv_within(Duration::from_secs(6))
        .await
        .expect("a reroute once a-1 answers far slower");
    assert_eq!(f["type"], "reroute", "{f}");
    assert_eq!(f["reason"], "relay-degraded");
    assert_eq!(f["relay"]["id"], "b-1");
    eprintln!(
        "slow relay drained {:?} after its path congested",
        congested.elapsed()
    );
    let entry = origin.relays();
    let a1 = entry
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "a-1")
        .unwrap()
        .clone();
    assert_eq!(a1["healthy"], false, "{a1}");
    assert_eq!(a1["failing"], "relay-degraded", "{a1}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A relay stand-in that heartbeats over one kept-alive HTTP connection and
/// answers the edge's STUN probes, until it "crashes": it stops answering
/// (its port stays open, so its host sends no ICMP) and its connection
/// closes, as a dead process's does.
struct FakeRelay {
    http: std::net::TcpStream,
    answering: std::sync::Arc<std::sync::atomic::AtomicBool>,
    udp: std::net::SocketAddr,
    seq: u64,
}

impl FakeRelay {
    fn start(origin: &Origin) -> FakeRelay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = sock.local_addr().unwrap();
        let answering = std::sync::Arc::new(AtomicBool::new(true));
        let on = answering.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                // A Binding request: answer with a bare success, same txid.
                if n >= 20 && buf[0..2] == [0, 1] && on.load(Ordering::Relaxed) {
                    let mut resp = [0u8; 20];
                    resp[0..2].copy_from_slice(&[1, 1]);
                    resp[4..20].copy_from_slice(&buf[4..20]);
                    let _ = sock.send_to(&resp, from);
                }
            }
        });
        let http = std::net::TcpStream::connect(origin.addr).unwrap();
        http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        FakeRelay {
            http,
            answering,
            udp,
            seq: 0,
        }
    }

    /// A stand-in the edge has heard from long enough to probe it, hear its
    /// answers and learn its RTT, and lists as healthy.
    fn registered(origin: &Origin) -> FakeRelay {
        let mut relay = FakeRelay::start(origin);
        for _ in 0..15 {
            assert_eq!(relay.heartbeat(), 204);
            std::thread::sleep(Duration::from_millis(100));
        }
        origin
            .wait_healthy_relays(1, Duration::from_secs(5))
            .expect("the stand-in is a healthy relay");
        relay
    }

    /// Close the heartbeat connection and open a new one (as a relay that
    /// moves to another edge does); the UDP side goes on as it was.
    fn reconnect(self, origin: &Origin) -> FakeRelay {
        drop(self.http);
        let http = std::net::TcpStream::connect(origin.addr).unwrap();
        http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        FakeRelay { http, ..self }
    }

    /// One signed heartbeat on the kept-alive connection; its status.
    fn heartbeat(&mut self) -> u16 {
        use std::io::{Read, Write};
        self.seq += 1;
        let sent_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let body = json!({
            "id": "fake-1", "region": "region-f",
            "listeners": [{"transport": "udp", "address": self.udp.to_string()}],
            "state": "active", "load": {"allocations": 0, "pps": 0},
            "seq": self.seq, "sent_at_ms": sent_at_ms,
        })
        .to_string();
        let sig = tern_common::relay::sign(RELAY_SECRET.as_bytes(), body.as_bytes());
        let req = format!(
            "POST /v1/relays/heartbeat HTTP/1.1\r\nHost: tern\r\nContent-Type: application/json\r\n\
             {}: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
            tern_common::relay::SIGNATURE_HEADER,
            body.len()
        );
        self.http.write_all(req.as_bytes()).unwrap();
        // The answer is a bodiless 204: read up to the end of its head.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.http.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// The heartbeat connection closing is the first sign of a crash, and it
/// needs no ICMP (which a loaded relay host rate-limits): the edge probes at
/// once and a relay that does not answer within a few round trips is lost,
/// long before silence alone would say so.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_whose_heartbeat_connection_closes_and_goes_quiet_is_lost_at_once() {
    let origin = Origin::start("edge-1");
    let relay = FakeRelay::registered(&origin);

    relay
        .answering
        .store(false, std::sync::atomic::Ordering::Relaxed);
    drop(relay.http);
    let crashed = Instant::now();
    wait_until(Duration::from_secs(3), || {
        origin
            .relays()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "fake-1" && r["failing"] == "relay-lost")
    })
    .expect("a relay whose connection closed and that went quiet is lost");
    eprintln!(
        "figure: connection closed -> relay lost after {:?}",
        crashed.elapsed()
    );
    let listed = origin.relays();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "fake-1")
        .unwrap();
    // The verdict came from the closed connection and an unanswered probe,
    // not from refusals (its port is open) nor from silence.
    assert_eq!(entry["probe_link_closed"], true, "{entry}");
    assert!(entry.get("probe_refused").is_none(), "{entry}");
}

/// A relay that only moved its heartbeats elsewhere (its connection to
/// this edge closed, it lives on) answers the check and keeps its calls.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_whose_heartbeat_connection_closes_but_answers_stays_healthy() {
    let origin = Origin::start("edge-1");
    let relay = FakeRelay::registered(&origin);
    // Back on a new connection (as after a switch of edges), heartbeating
    // on; the check right after the close is answered.
    let mut relay = relay.reconnect(&origin);
    for _ in 0..5 {
        assert_eq!(relay.heartbeat(), 204);
        let listed = origin.relays();
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "fake-1")
            .cloned()
            .unwrap();
        assert_eq!(
            entry["healthy"], true,
            "a live relay is not condemned: {entry}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A relay that moves its heartbeats to another connection (as to another
/// edge) while this edge does not hear its probe answers in time is not
/// reported crashed: a heartbeat after the close says it lives.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_heartbeats_again_after_its_connection_closed_is_not_reported_crashed() {
    let origin = Origin::start("edge-1");
    let relay = FakeRelay::registered(&origin);
    // Its probe answers stop reaching this edge, its connection closes, and
    // it heartbeats at once on a new one.
    relay
        .answering
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut relay = relay.reconnect(&origin);
    assert_eq!(relay.heartbeat(), 204);
    // Well past the suspicion (≥ 30 ms), before silence could judge (300 ms).
    std::thread::sleep(Duration::from_millis(150));
    let listed = origin.relays();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "fake-1")
        .unwrap();
    assert!(entry.get("crash_reported_by").is_none(), "{entry}");
    assert!(entry.get("probe_link_closed").is_none(), "{entry}");
}

//! Protocol v1 conformance: the scenarios every signaling host must pass,
//! written once and run unchanged against each host (origin's `tern serve`,
//! origin hosting the Spin artifact, `wrangler dev`). A host is a
//! [`Target`]: where clients connect (a WebSocket or an HTTP-transport URL;
//! [`Client`] speaks whichever the URL names), where its relay directory is,
//! and the real relay processes heartbeating into it.
//!
//! Scenarios use their own room names, so they run one after another against
//! one host. [`run_all`] ends with the relay-failure scenarios, which kill
//! relays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::Client;
use crate::http::http_get;
use crate::origin::healthy_ids;
use crate::process::{wait_until, Proc};
use crate::relay::start_relay_at;
use crate::token::token;

/// A signaling host under test and the relays heartbeating into it.
pub struct Target {
    /// Shown in failures and figures ("origin", "spin", "cloudflare").
    pub name: &'static str,
    /// `ws://…/v1/signal` or `http://…/v1/http`.
    pub signal_url: String,
    /// Where `GET /v1/relays` is served.
    pub http: SocketAddr,
    /// Relay id → its process (started with `--allow-peer 127.0.0.0/8`).
    pub relays: Vec<(String, Proc)>,
}

impl Target {
    /// A host at `signal_url` (its directory at `http`) with two relays,
    /// `a-1` in region-a and `b-1` in region-b, heartbeating into
    /// `signaling` (where the host takes heartbeats).
    pub fn with_relays(
        name: &'static str,
        signal_url: String,
        http: SocketAddr,
        signaling: SocketAddr,
    ) -> Target {
        let relays = [("a-1", "region-a"), ("b-1", "region-b")]
            .map(|(id, region)| (id.to_string(), start_relay_at(signaling, id, region, &[])));
        Target {
            name,
            signal_url,
            http,
            relays: relays.into(),
        }
    }

    pub fn directory(&self) -> Value {
        let (status, body) = http_get(self.http, "/v1/relays").expect("GET /v1/relays");
        assert_eq!(status, 200, "{}: GET /v1/relays: {body}", self.name);
        serde_json::from_str(&body).expect("relay directory JSON")
    }

    pub fn healthy(&self) -> Vec<String> {
        healthy_ids(&self.directory())
    }

    pub fn wait_healthy(&self, n: usize) {
        wait_until(Duration::from_secs(30), || self.healthy().len() >= n).unwrap_or_else(|_| {
            panic!(
                "{}: {n} healthy relays never showed: {}",
                self.name,
                self.directory()
            )
        });
    }

    /// A connection for `room`. WebSocket URLs name the room (`?room=`, as
    /// the SDK does) so a host that keeps each room in its own object (the
    /// Cloudflare Worker) can route the socket; other hosts ignore it.
    pub async fn client(&self, room: &str) -> Client {
        Client::connect(&room_url(&self.signal_url, room)).await
    }

    /// SIGKILL the relay with this id.
    fn kill_relay(&mut self, id: &str) {
        let (_, p) = self
            .relays
            .iter_mut()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("no relay {id}"));
        p.kill();
    }
}

/// `url` with `?room=` for WebSocket URLs.
pub fn room_url(url: &str, room: &str) -> String {
    if url.starts_with("ws") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}room={room}")
    } else {
        url.to_string()
    }
}

/// Every scenario, in an order that keeps relays alive until the end.
pub async fn run_all(t: &mut Target) {
    t.wait_healthy(2);
    join_peers_signal_and_leave(t).await;
    resume_after_a_dropped_connection(t).await;
    every_client_error_code(t).await;
    bad_input_harms_nobody(t).await;
    room_full(t).await;
    reroute_after_a_relay_dies(t).await;
    no_relay_when_none_is_healthy(t).await;
}

fn step(t: &Target, what: &str) {
    eprintln!("[{}] {what}", t.name);
}

pub async fn join_peers_signal_and_leave(t: &mut Target) {
    step(t, "join, peers, signal both ways, ping, leave");
    let room = "conf-basic";
    let mut alice = t.client(room).await;
    let mut bob = t.client(room).await;
    let a = alice.join(room, "alice").await;
    assert_eq!(a["peers"], json!([]));
    assert_eq!(a["identity"], "alice");
    assert!(a["session"].as_str().is_some_and(|s| s.len() >= 16));
    assert!(t
        .healthy()
        .contains(&a["relay"]["id"].as_str().unwrap().to_string()));
    let ice = &a["iceServers"][0];
    assert!(ice["urls"][0].as_str().unwrap().starts_with("turn:"));
    let user = ice["username"].as_str().unwrap();
    assert!(
        user.split_once(':')
            .is_some_and(|(exp, _)| exp.parse::<u64>().is_ok()),
        "TURN REST username <expiry>:<id>, got {user}"
    );
    assert!(!ice["credential"].as_str().unwrap().is_empty());

    let b = bob.join(room, "bob").await;
    assert_eq!(b["peers"][0]["participant"], a["participant"]);
    assert_eq!(b["peers"][0]["identity"], "alice");
    assert_eq!(b["relay"], a["relay"], "a room shares one relay");
    let pj = alice.expect("peer-joined").await;
    assert_eq!(pj["participant"], b["participant"]);
    assert_eq!(pj["identity"], "bob");

    alice
        .send(json!({"type":"signal","to":b["participant"],"data":{"sdp":"offer-1"}}))
        .await;
    let s = bob.expect("signal").await;
    assert_eq!(s["from"], a["participant"]);
    assert_eq!(s["data"]["sdp"], "offer-1");
    bob.send(json!({"type":"signal","to":a["participant"],"data":{"sdp":"answer-1"}}))
        .await;
    assert_eq!(alice.expect("signal").await["data"]["sdp"], "answer-1");

    bob.send(json!({"type":"ping","id":7})).await;
    assert_eq!(bob.expect("pong").await["id"], 7);

    alice.send(json!({"type":"leave"})).await;
    alice.expect("left").await;
    assert_eq!(
        bob.expect("peer-left").await["participant"],
        a["participant"]
    );
    // Left, alice may join again as a new participant.
    let again = alice.join(room, "alice").await;
    assert_ne!(again["participant"], a["participant"]);
    assert_eq!(
        bob.expect("peer-joined").await["participant"],
        again["participant"]
    );
}

pub async fn resume_after_a_dropped_connection(t: &mut Target) {
    step(t, "resume after a dropped connection");
    let room = "conf-resume";
    let mut alice = t.client(room).await;
    let mut bob = t.client(room).await;
    let a = alice.join(room, "alice").await;
    let b = bob.join(room, "bob").await;
    alice.expect("peer-joined").await;

    bob.close().await;
    // Away is not gone: alice is not told bob left.
    alice.expect_silence(Duration::from_millis(500)).await;
    let mut bob2 = t.client(room).await;
    bob2.send(
        json!({"type":"join","room":room,"token":token(room,"bob",600),"session":b["session"]}),
    )
    .await;
    let r = bob2.expect("joined").await;
    assert_eq!(r["participant"], b["participant"]);
    assert_eq!(r["resumed"], true);
    assert_eq!(r["peers"][0]["participant"], a["participant"]);
    alice
        .send(json!({"type":"signal","to":b["participant"],"data":{"candidate":"c"}}))
        .await;
    assert_eq!(bob2.expect("signal").await["data"]["candidate"], "c");

    // A session is a secret for one identity: someone else's token with it
    // does not take the participant over.
    let mut eve = t.client(room).await;
    eve.send(
        json!({"type":"join","room":room,"token":token(room,"eve",600),"session":b["session"]}),
    )
    .await;
    let e = eve.recv().await;
    assert!(
        e["type"] == "error" || e["participant"] != b["participant"],
        "another identity resumed bob's session: {e}"
    );
}

pub async fn every_client_error_code(t: &mut Target) {
    step(t, "every client error code");
    let room = "conf-errors";
    let mut alice = t.client(room).await;
    let a = alice.join(room, "alice").await;
    let mut eve = t.client(room).await;
    let forged = edge_signaling::token::mint(
        b"forged",
        &edge_signaling::token::Claims {
            room: room.into(),
            sub: "eve".into(),
            exp: u64::MAX / 2,
        },
    );
    let cases: Vec<(String, &str)> = vec![
        ("{\"type\":\"join\",".into(), "bad_request"),
        ("[]".into(), "bad_request"),
        ("{\"type\":7}".into(), "bad_request"),
        (json!({"type":"warp"}).to_string(), "unknown_type"),
        (
            format!(
                "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
                "x".repeat(70 * 1024)
            ),
            "frame_too_large",
        ),
        (
            json!({"type":"join","room":room}).to_string(),
            "bad_request",
        ),
        (
            json!({"type":"join","room":"","token":token("", "eve", 600)}).to_string(),
            "bad_request",
        ),
        (
            json!({"type":"join","room":room,"token":""}).to_string(),
            "bad_token",
        ),
        (
            json!({"type":"join","room":room,"token":"a.b.c"}).to_string(),
            "bad_token",
        ),
        (
            json!({"type":"join","room":room,"token":forged}).to_string(),
            "bad_token",
        ),
        (
            json!({"type":"join","room":room,"token":token("other-room","eve",600)}).to_string(),
            "bad_token",
        ),
        (
            json!({"type":"join","room":room,"token":token(room,"eve",-10)}).to_string(),
            "expired_token",
        ),
        (
            json!({"type":"signal","to":a["participant"],"data":{}}).to_string(),
            "not_joined",
        ),
        (json!({"type":"leave"}).to_string(), "not_joined"),
        (
            json!({"type":"stats","packets_lost":0}).to_string(),
            "not_joined",
        ),
    ];
    for (frame, code) in cases {
        eve.send_text(frame.clone()).await;
        let f = eve.expect("error").await;
        assert_eq!(f["code"], code, "{}: frame {:.80}", t.name, frame);
        assert!(f["message"].as_str().is_some_and(|m| m.len() > 3));
    }
    eve.send_binary(vec![0xff, 0x00, 0x01]).await;
    assert_eq!(eve.expect("error").await["code"], "bad_request");

    alice
        .send(json!({"type":"signal","to":"p-0000000000000000","data":{}}))
        .await;
    let f = alice.expect("error").await;
    assert_eq!(f["code"], "unknown_peer");
    assert_eq!(f["to"], "p-0000000000000000");
    alice
        .send(json!({"type":"join","room":room,"token":token(room,"alice",600)}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "already_joined");
}

pub async fn bad_input_harms_nobody(t: &mut Target) {
    step(t, "bad input harms nobody");
    let room = "conf-harm";
    let mut alice = t.client(room).await;
    let a = alice.join(room, "alice").await;
    let mut eve = t.client(room).await;
    for junk in ["", "null", "{}", "{\"type\":\"signal\"}", "\u{0}\u{1}"] {
        eve.send_text(junk.into()).await;
        assert_eq!(eve.expect("error").await["type"], "error");
    }
    // Nothing eve sent reached alice; eve's connection still works.
    alice.expect_silence(Duration::from_millis(300)).await;
    eve.send(json!({"type":"ping","id":1})).await;
    eve.expect("pong").await;
    let e = eve.join(room, "eve").await;
    assert_eq!(e["peers"][0]["participant"], a["participant"]);
    alice.expect("peer-joined").await;
    alice
        .send(json!({"type":"signal","to":e["participant"],"data":{"ok":true}}))
        .await;
    assert_eq!(eve.expect("signal").await["data"]["ok"], true);
}

/// The default room size is 16.
pub async fn room_full(t: &mut Target) {
    step(t, "room_full");
    let room = "conf-full";
    let mut members = Vec::new();
    for i in 0..16 {
        let mut c = t.client(room).await;
        c.join(room, &format!("member-{i}")).await;
        members.push(c);
    }
    let mut late = t.client(room).await;
    late.send(json!({"type":"join","room":room,"token":token(room,"late",600)}))
        .await;
    assert_eq!(late.expect("error").await["code"], "room_full");
    // Someone leaves: there is room again.
    members[0].send(json!({"type":"leave"})).await;
    members[0].skip_to("left").await;
    late.join(room, "late").await;
}

/// Kill the room's relay: every participant gets a `reroute` to a live relay
/// with fresh credentials, once. Prints kill→reroute (the host's failover
/// detection time).
pub async fn reroute_after_a_relay_dies(t: &mut Target) {
    step(t, "reroute after the room's relay dies");
    t.wait_healthy(2);
    // Let the failure detector learn the heartbeat rhythm first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let room = "conf-reroute";
    let mut alice = t.client(room).await;
    let mut bob = t.client(room).await;
    let a = alice.join(room, "alice").await;
    bob.join(room, "bob").await;
    alice.expect("peer-joined").await;
    let victim = a["relay"]["id"].as_str().unwrap().to_string();

    let killed = Instant::now();
    t.kill_relay(&victim);
    let mut took = Vec::new();
    for c in [&mut alice, &mut bob] {
        let f = c
            .recv_within(Duration::from_secs(5))
            .await
            .expect("a reroute after the relay died");
        took.push(killed.elapsed());
        assert_eq!(f["type"], "reroute", "{f}");
        assert_eq!(f["reason"], "relay-lost");
        assert_ne!(f["relay"]["id"], victim.as_str());
        assert!(f["iceServers"][0]["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("turn:"));
    }
    eprintln!(
        "[{}] figure: kill -> reroute {:?} / {:?} (SIGKILL of relay {victim})",
        t.name, took[0], took[1]
    );
    // Exactly once.
    alice.expect_silence(Duration::from_millis(500)).await;
    // Joins now go elsewhere.
    let mut carol = t.client(room).await;
    let c = carol.join(room, "carol").await;
    assert_ne!(c["relay"]["id"], victim.as_str());
}

pub async fn no_relay_when_none_is_healthy(t: &mut Target) {
    step(t, "no_relay when no relay is healthy");
    let ids: Vec<String> = t.relays.iter().map(|(id, _)| id.clone()).collect();
    for id in &ids {
        t.kill_relay(id);
    }
    // With the whole fleet silent at once a host without active probes
    // cannot tell dead relays from its own trouble (docs/failover.md), so
    // they count as gone only after 10 s.
    wait_until(Duration::from_secs(20), || t.healthy().is_empty())
        .unwrap_or_else(|_| panic!("{}: dead relays still healthy", t.name));
    let room = "conf-none";
    let mut c = t.client(room).await;
    c.send(json!({"type":"join","room":room,"token":token(room,"x",600)}))
        .await;
    assert_eq!(c.expect("error").await["code"], "no_relay");
}

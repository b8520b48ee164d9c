//! What only the Cloudflare Worker does, under `wrangler dev --local` (the
//! protocol itself is checked by the conformance suite, which runs against
//! the Worker too): room Durable Objects holding real WebSockets, the relay
//! directory Durable Object taking signed heartbeats from real `tern-relay`
//! processes, and failover detection on this design: from SIGKILL of a
//! relay to `reroute` at the clients.
//!
//! Needs `./dev test`'s set-up (npm ci, worker-build, wasm-bindgen-cli); a
//! missing piece fails the test.

use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::cloudflare::{start_tern_relay, WranglerDev};
use tern_tests::*;

/// One wrangler at a time: each runs the Worker's build first, and the
/// failover measurement should not share two cores with another workerd.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn edge_with_relays(vars: &[(&str, &str)]) -> (WranglerDev, Proc, Proc) {
    let edge = WranglerDev::start_with(vars);
    let a = start_tern_relay(&edge.url(), "a-1", "region-a");
    let b = start_tern_relay(&edge.url(), "b-1", "region-b");
    if let Err(e) = edge.wait_healthy_relays(2, Duration::from_secs(30)) {
        panic!("relays never became healthy ({e}):\n{}", edge.log_tail());
    }
    (edge, a, b)
}

/// What only the Worker does: the protocol itself is the conformance
/// suite's (`tests/tests/conformance.rs`, `cloudflare_worker_conforms`).
/// Here: requests routed to the room's object and refused elsewhere, a
/// socket bound to its room, TURN credentials minted in the Worker, the
/// room size and grace period from Worker vars, the grace period kept by
/// the room object's alarm, and forged heartbeats refused by the
/// directory object.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_routes_sockets_to_room_objects_and_keeps_their_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (edge, _ra, _rb) = edge_with_relays(&[
        ("TERN_MAX_ROOM_SIZE", "2"),
        // Short, so the test sees an absent participant time out.
        ("TERN_SESSION_GRACE_MS", "2000"),
        ("TERN_CALL_SWEEP_MS", "500"),
    ]);

    // Heartbeats are signed; the directory refuses forgeries.
    let (status, _) = http_post(
        edge.addr,
        "/v1/relays/heartbeat",
        &[("x-tern-signature", "00")],
        b"{}",
    )
    .unwrap();
    assert_eq!(status, 401);
    // A socket must name its room.
    let (status, _) = http_post(edge.addr, "/v1/signal", &[], b"").unwrap();
    assert_eq!(status, 404, "only GET upgrades");
    assert!(http_get(edge.addr, "/v1/signal").is_err_and(|e| e.to_string().contains("400")));

    let mut alice = Client::connect(&edge.ws_url("room-1")).await;
    let mut bob = Client::connect(&edge.ws_url("room-1")).await;
    let a = alice.join("room-1", "alice").await;
    assert!(healthy_ids(&edge.relays()).contains(&a["relay"]["id"].as_str().unwrap().to_string()));
    // TURN credentials minted in the Worker, in the TURN REST scheme.
    let ice = &a["iceServers"][0];
    assert!(ice["urls"][0]
        .as_str()
        .unwrap()
        .starts_with("turn:127.0.0.1:"));
    let username = ice["username"].as_str().unwrap();
    let user = tern_common::credentials::turn_identity("alice");
    assert!(username.ends_with(&format!(":{user}")), "{username}");
    assert_eq!(
        ice["credential"].as_str().unwrap(),
        tern_common::credentials::password(RELAY_SECRET.as_bytes(), username)
    );
    bob.join("room-1", "bob").await;
    alice.expect("peer-joined").await;

    // This socket belongs to room-1's object: another room is refused,
    // and room-1 is full at the Worker var's two.
    let mut carol = Client::connect(&edge.ws_url("room-1")).await;
    let code = |f: serde_json::Value| f["code"].as_str().unwrap_or("").to_string();
    carol
        .send(json!({"type":"join","room":"room-2","token":token("room-2","carol",600)}))
        .await;
    assert_eq!(code(carol.expect("error").await), "bad_request");
    carol
        .send(json!({"type":"join","room":"room-1","token":token("room-1","carol",600)}))
        .await;
    assert_eq!(code(carol.expect("error").await), "room_full");
    bob.expect_silence(Duration::from_millis(200)).await;

    // Other rooms are other objects.
    let mut dave = Client::connect(&edge.ws_url("room-2")).await;
    assert_eq!(dave.join("room-2", "dave").await["peers"], json!([]));

    // Someone who drops and does not come back within the grace period is
    // removed, and the others are told (the room object's alarm).
    let mut erin = Client::connect(&edge.ws_url("room-2")).await;
    let e = erin.join("room-2", "erin").await;
    assert_eq!(
        dave.expect("peer-joined").await["participant"],
        e["participant"]
    );
    erin.close().await;
    let dropped = Instant::now();
    let left = dave
        .recv_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|err| panic!("no peer-left ({err}):\n{}", edge.log_tail()));
    assert_eq!(left["type"], "peer-left", "{left}");
    assert_eq!(left["participant"], e["participant"]);
    assert!(
        dropped.elapsed() >= Duration::from_millis(1900),
        "not before the grace period"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reroute_after_relay_sigkill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (edge, ra, rb) = edge_with_relays(&[]);
    // Let the failure detector learn the heartbeat rhythm.
    std::thread::sleep(Duration::from_secs(2));

    let mut alice = Client::connect(&edge.ws_url("call-1")).await;
    let mut bob = Client::connect(&edge.ws_url("call-1")).await;
    let a = alice.join("call-1", "alice").await;
    bob.join("call-1", "bob").await;
    alice.expect("peer-joined").await;
    let lost = a["relay"]["id"].as_str().unwrap().to_string();
    let (mut victim, _survivor, other) = if lost == "a-1" {
        (ra, rb, "b-1")
    } else {
        (rb, ra, "a-1")
    };

    let killed = Instant::now();
    victim.kill();
    let mut times = Vec::new();
    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        let f = c
            .recv_within(Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{who} got no reroute ({e}):\n{}", edge.log_tail()));
        times.push((who, killed.elapsed()));
        assert_eq!(f["type"], "reroute", "{who}: {f}");
        assert_eq!(f["reason"], "relay-lost");
        assert_eq!(f["relay"]["id"], other);
        assert!(f["iceServers"][0]["urls"][0]
            .as_str()
            .unwrap()
            .starts_with("turn:127.0.0.1:"));
    }
    let ms: Vec<String> = times
        .iter()
        .map(|(who, t)| format!("{} ms ({who})", t.as_millis()))
        .collect();
    println!(
        "failover detection time on Cloudflare's design (wrangler dev --local, directory alarm every 100 ms): relay SIGKILL -> reroute at the client: {}",
        ms.join(", ")
    );
    assert!(
        times.iter().all(|(_, t)| *t < Duration::from_secs(5)),
        "reroute took too long: {ms:?}"
    );
    // The directory shows it, and a newcomer gets the surviving relay.
    assert!(!healthy_ids(&edge.relays()).contains(&lost));
    let mut carol = Client::connect(&edge.ws_url("call-1")).await;
    assert_eq!(carol.join("call-1", "carol").await["relay"]["id"], other);
    // Moved exactly once.
    alice.expect("peer-joined").await;
    alice.expect_silence(Duration::from_millis(500)).await;
}

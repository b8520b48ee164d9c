//! What only the Spin app does, over real sockets (the protocol itself is
//! the conformance suite's, run against `tern spin` and real `spin up`):
//! `tern spin` serves the very .wasm that spin.toml names through its
//! wasi:http export (one instance per request, as Spin's HTTP trigger),
//! real `tern relay` processes heartbeat into it, and scripted clients
//! speak the HTTP transport: long polls, acknowledgements, idle close,
//! mailbox overflow, two instances on one Redis.
//! Also: the artifact's imports and exports against what Spin 4.0.x
//! provides (`wasm-tools component targets`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::client::http::request;
use tern_tests::*;

fn app_with_relays() -> (SpinApp, Proc, Proc) {
    let app = SpinApp::start();
    let a = start_relay_at(app.addr, "a-1", "region-a", &[]);
    let b = start_relay_at(app.addr, "b-1", "region-b", &[]);
    app.wait_healthy_relays(2, Duration::from_secs(30))
        .expect("both relays heartbeat in");
    (app, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_come_back_as_frames_and_statuses() {
    // The error codes themselves are the conformance suite's; here, how the
    // HTTP transport carries them: frames in the answer to the same send,
    // statuses for what is not a frame.
    let (app, _ra, _rb) = app_with_relays();
    let mut c = HttpClient::connect(&app.url()).await;
    let a = c.send_raw(&[0xff, 0xfe]).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(c.expect("error").await["code"], "bad_request");
    // Over 64 KiB: an error frame; over 1 MiB: 413.
    let big = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(70 * 1024));
    c.send_text(big).await;
    assert_eq!(c.expect("error").await["code"], "frame_too_large");
    let huge = vec![b'x'; (1 << 20) + 10];
    assert_eq!(c.send_raw(&huge).await.unwrap().status, 413);
    // The connection still works.
    c.join("r", "x").await;

    // Unknown connection: 404 with the unknown_connection code; missing
    // conn: 400. CORS on every answer.
    for (method, path) in [
        ("POST", "/v1/http/send?conn=00ff&ack=0"),
        ("GET", "/v1/http/poll?conn=00ff&ack=0"),
        ("POST", "/v1/http/close?conn=00ff"),
    ] {
        let a = request(app.addr, method, path, b"{}", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
        assert_eq!(a.json().unwrap()["code"], "unknown_connection");
        assert!(a
            .headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: *"));
    }
    let a = request(
        app.addr,
        "POST",
        "/v1/http/send",
        b"{}",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 400);

    // After close, the id is unknown: the poller sees 404.
    let conn = c.conn().to_string();
    c.close().await;
    let a = request(
        app.addr,
        "GET",
        &format!("/v1/http/poll?conn={conn}&ack=0"),
        b"",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_wakes_promptly_and_acks_drop_frames() {
    let (app, _ra, _rb) = app_with_relays();
    let mut alice = HttpClient::connect(&app.url()).await;
    let mut bob = HttpClient::connect(&app.url()).await;
    let a = alice.join("room-p", "alice").await;
    let b = bob.join("room-p", "bob").await;
    alice.expect("peer-joined").await;
    // Let bob's poll settle into waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut wakes = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        alice
            .send(json!({"type":"signal","to":b["participant"],"data":{"n":i}}))
            .await;
        // A relay whose heartbeats lag on a loaded machine may be moved
        // away from meanwhile; its reroute is not what this test is about.
        let s = loop {
            let f = bob.recv().await;
            if f["type"] != "reroute" {
                break f;
            }
        };
        assert_eq!(s["type"], "signal", "{s}");
        assert_eq!(s["data"]["n"], i);
        wakes.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wakes.sort();
    eprintln!("long-poll wake-ups (send to delivery): {wakes:?}");
    // The poll looks at its mailbox every 20 ms; the rest is two HTTP round
    // trips and the send's own handling. Generous bounds for a loaded CI box.
    assert!(
        wakes[2] < Duration::from_millis(300),
        "median wake {:?}",
        wakes[2]
    );
    assert!(
        wakes[4] < Duration::from_millis(1500),
        "slowest wake {:?}",
        wakes[4]
    );

    let _ = a;

    // Sequence numbers and acknowledgements, on a raw connection: frames
    // stay in the mailbox (and come again) until acknowledged.
    let raw = |method: &'static str, path: String, body: String| {
        let addr = app.addr;
        async move {
            request(addr, method, &path, body.as_bytes(), Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    let c = raw("POST", "/v1/http/connect".into(), String::new()).await;
    let conn = c.json().unwrap()["conn"].as_str().unwrap().to_string();
    let ping = |id: u32| json!({"type":"ping","id":id}).to_string();
    let send = |ack: u64| format!("/v1/http/send?conn={conn}&ack={ack}");
    let a1 = raw("POST", send(0), ping(1)).await.json().unwrap();
    assert_eq!(a1, json!({"frames":[{"type":"pong","id":1}],"last":1}));
    // Not acknowledged yet: pong 1 comes again with pong 2.
    let a2 = raw("POST", send(0), ping(2)).await.json().unwrap();
    assert_eq!(a2["last"], 2);
    assert_eq!(a2["frames"].as_array().unwrap().len(), 2);
    // ack=2 drops both.
    let a3 = raw("POST", send(2), ping(3)).await.json().unwrap();
    assert_eq!(a3, json!({"frames":[{"type":"pong","id":3}],"last":3}));
    let p = raw(
        "GET",
        format!("/v1/http/poll?conn={conn}&ack=1"),
        String::new(),
    )
    .await
    .json()
    .unwrap();
    assert_eq!(
        p,
        json!({"frames":[{"type":"pong","id":3}],"last":3}),
        "only what is left"
    );
    // Everything acknowledged: the poll waits.
    let waiting = tokio::time::timeout(
        Duration::from_millis(600),
        raw(
            "GET",
            format!("/v1/http/poll?conn={conn}&ack=3"),
            String::new(),
        ),
    )
    .await;
    assert!(
        waiting.is_err(),
        "poll answered with nothing new: {waiting:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connection_is_closed_and_its_participant_goes_away() {
    // Short polls: a vanished client's last poll must end before its idle
    // time starts counting (a waiting poll is activity).
    let app = SpinApp::start_with("embedded", &["--env", "TERN_HTTP_POLL_MS=3000"]);
    let _ra = start_relay_at(app.addr, "a-1", "region-a", &[]);
    app.wait_healthy_relays(1, Duration::from_secs(30)).unwrap();
    let mut alice = HttpClient::connect(&app.url()).await;
    let mut bob = HttpClient::connect(&app.url()).await;
    alice.join("room-i", "alice").await;
    let b = bob.join("room-i", "bob").await;
    alice.expect("peer-joined").await;
    // Bob vanishes without a word. Alice's long poll keeps housekeeping
    // going; after 15 s without a request bob's connection is closed.
    // Any request would count as activity, so watch the connection count.
    let conn = bob.abandon();
    let connections = || {
        let (_, body) = http_get(app.addr, "/healthz").unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["connections"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(connections(), 2);
    let t = Instant::now();
    while connections() > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "idle connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        t.elapsed() > Duration::from_secs(10),
        "closed too early: {:?}",
        t.elapsed()
    );
    let a = request(
        app.addr,
        "POST",
        &format!("/v1/http/send?conn={conn}&ack=0"),
        br#"{"type":"ping","id":1}"#,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 404);
    // Closed like a dropped socket: his session can resume.
    let mut bob2 = HttpClient::connect(&app.url()).await;
    bob2.send(json!({"type":"join","room":"room-i","token":token("room-i","bob",600),"session":b["session"]}))
        .await;
    assert_eq!(bob2.expect("joined").await["resumed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn reroute_reaches_the_mailbox_after_a_relay_is_killed() {
    let (app, mut ra, mut rb) = app_with_relays();
    let mut alice = HttpClient::connect(&app.url()).await;
    let mut bob = HttpClient::connect(&app.url()).await;
    let a = alice.join("room-r", "alice").await;
    bob.join("room-r", "bob").await;
    alice.expect("peer-joined").await;
    let used = a["relay"]["id"].as_str().unwrap().to_string();
    let killed = Instant::now();
    if used == "a-1" {
        ra.kill();
    } else {
        rb.kill();
    }
    // Nothing but the clients' long polls runs housekeeping here.
    for c in [&mut alice, &mut bob] {
        let r = c
            .recv_within(Duration::from_secs(10))
            .await
            .expect("a reroute");
        assert_eq!(r["type"], "reroute", "{r}");
        assert_eq!(r["reason"], "relay-lost");
        assert_ne!(r["relay"]["id"], used.as_str());
        assert!(r["iceServers"][0]["credential"].is_string());
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "reroute took {took:?}");
}

/// The artifact links on Spin 4.0.x: its imports are a subset of what Spin's
/// HTTP trigger provides and it exports wasi:http/incoming-handler 0.2
/// (wit/spin-host/). Needs `wasm-tools` (`cargo install wasm-tools --locked --version 1.263.0`).
#[test]
fn artifact_targets_the_spin_http_trigger_world() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new("sh")
        .arg(root.join("wit/spin-host/check.sh"))
        .current_dir(&root)
        .status()
        .expect("running wit/spin-host/check.sh");
    assert!(
        status.success(),
        "the component does not fit Spin's HTTP trigger world"
    );
}

/// Two instances of the app on one Redis (Spin's production shape: any
/// instance answers any request): clients on different instances share a
/// room, and when an instance dies its clients' connections carry on at
/// the other one with the same ids and mailboxes.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_redis_share_connections_and_rooms() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}");
    let mut one = SpinApp::start_with(&url, &[]);
    let two = SpinApp::start_with(&url, &[]);
    // Relays heartbeat into instance two (which outlives one); one sees
    // them through the shared store.
    let _ra = start_relay_at(two.addr, "a-1", "region-a", &[]);
    let _rb = start_relay_at(two.addr, "b-1", "region-b", &[]);
    one.wait_healthy_relays(2, Duration::from_secs(30))
        .expect("instance one sees relays that heartbeat into two");

    let mut alice = HttpClient::connect(&one.url()).await;
    let mut bob = HttpClient::connect(&two.url()).await;
    let a = alice.join("shared", "alice").await;
    let b = bob.join("shared", "bob").await;
    assert_eq!(b["peers"][0]["participant"], a["participant"]);
    assert_eq!(
        alice.expect("peer-joined").await["participant"],
        b["participant"]
    );
    alice
        .send(json!({"type":"signal","to":b["participant"],"data":{"sdp":"offer"}}))
        .await;
    assert_eq!(bob.expect("signal").await["data"]["sdp"], "offer");

    // Instance one dies; alice's connection goes on at instance two.
    one.proc.kill();
    alice.switch_to(&two.url());
    bob.send(json!({"type":"signal","to":a["participant"],"data":{"sdp":"answer"}}))
        .await;
    assert_eq!(alice.expect("signal").await["data"]["sdp"], "answer");
    alice.send(json!({"type":"ping","id":7})).await;
    assert_eq!(alice.expect("pong").await["id"], 7);
}

/// A consumer that stops reading is cut off: past 1 MiB (or 1,024 frames)
/// unacknowledged, its connection is closed like a dropped socket.
#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_that_overflows_closes_its_connection() {
    let (app, _ra, _rb) = app_with_relays();
    let mut alice = HttpClient::connect(&app.url()).await;
    alice.join("room-o", "alice").await;
    // Bob joins over raw requests and then never polls or acknowledges.
    let connect = request(
        app.addr,
        "POST",
        "/v1/http/connect",
        b"",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let bob = connect.json().unwrap()["conn"]
        .as_str()
        .unwrap()
        .to_string();
    let join = json!({"type":"join","room":"room-o","token":token("room-o","bob",600)});
    let a = request(
        app.addr,
        "POST",
        &format!("/v1/http/send?conn={bob}&ack=0"),
        join.to_string().as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let joined = a.json().unwrap();
    assert_eq!(joined["frames"][0]["type"], "joined", "{joined}");
    let bob_p = joined["frames"][0]["participant"].clone();
    alice.expect("peer-joined").await;

    // 60 KiB signals: the 18th takes bob's mailbox past 1 MiB.
    let blob = "x".repeat(60 * 1024);
    for i in 0..18 {
        alice
            .send(json!({"type":"signal","to":bob_p,"data":{"i":i,"blob":blob}}))
            .await;
    }
    let a = request(
        app.addr,
        "GET",
        &format!("/v1/http/poll?conn={bob}&ack=0"),
        b"",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 404, "bob's connection should be closed");
    // Closed like a dropped socket: bob is away, so alice's next signal to
    // him is refused as to a participant who is not connected.
    alice
        .send(json!({"type":"signal","to":bob_p,"data":{"i":"late"}}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(e["code"], "unknown_peer");
}

/// Spin's Redis store keeps keys bare; with `?layout=spin` origins do too,
/// so a Spin app and native origins share one keyspace: relays heartbeating
/// into an origin are in the Spin app's directory, and its callers get them.
#[tokio::test(flavor = "multi_thread")]
async fn origin_and_spin_app_share_a_spin_layout_redis() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}?layout=spin");
    let origin = Origin::start_with("edge-1", &url);
    let app = SpinApp::start_with(&url, &[]);
    let _ra = start_relay(&origin, "a-1", "region-a");
    let _rb = start_relay(&origin, "b-1", "region-b");
    app.wait_healthy_relays(2, Duration::from_secs(30))
        .expect("the Spin app sees relays that heartbeat into the origin");
    // Keys as Spin writes them: bare, nothing under origin's default prefix.
    let relay = redis_cli(port, &["GET", "relay/a-1"]).unwrap();
    assert!(relay.contains("region-a"), "{relay}");
    assert_eq!(redis_cli(port, &["KEYS", "tern:*"]).unwrap(), "");

    let mut c = HttpClient::connect(&app.url()).await;
    let j = c.join("room-s", "carol").await;
    assert!(["a-1", "b-1"].contains(&j["relay"]["id"].as_str().unwrap()));
    assert_eq!(redis_cli(port, &["EXISTS", "room/room-s"]).unwrap(), "1");
    assert!(origin.relays().as_array().unwrap().len() == 2);
}

/// The same on real Spin: `spin up` with its Redis store (as
/// runtime-config.toml configures it) and an origin in the Spin layout on
/// one Redis. Relays heartbeat into the origin and Spin sees them; a room
/// Spin wrote (with its write token, see docs/spin.md) is read and changed
/// by compare-and-swap on the origin.
#[tokio::test(flavor = "multi_thread")]
async fn origin_and_real_spin_share_a_redis() {
    use tern_tests::spin_up::{SpinStore, SpinUp};
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let origin = Origin::start_with("edge-1", &format!("redis://127.0.0.1:{port}?layout=spin"));
    let app = SpinUp::start(SpinStore::Redis(format!("redis://127.0.0.1:{port}")), &[]);
    let _ra = start_relay(&origin, "a-1", "region-a");
    let _rb = start_relay(&origin, "b-1", "region-b");
    app.wait_healthy_relays(2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("Spin sees no relays ({e}):\n{}", app.log_tail()));
    assert_eq!(redis_cli(port, &["KEYS", "tern:*"]).unwrap(), "");

    let mut carol = HttpClient::connect(&app.url()).await;
    let j = carol.join("room-s", "carol").await;
    assert!(["a-1", "b-1"].contains(&j["relay"]["id"].as_str().unwrap()));
    carol.send(json!({"type":"leave"})).await;
    carol.expect("left").await;
    let room = redis_cli(port, &["GET", "room/room-s"]).unwrap();
    assert!(room.contains(r#""members":[]"#), "{room}");

    // The origin takes the room over where Spin left it.
    let mut dave = Client::connect(&origin.ws_url()).await;
    let d = dave.join("room-s", "dave").await;
    assert_eq!(d["peers"], json!([]));
    let room = redis_cli(port, &["GET", "room/room-s"]).unwrap();
    assert!(
        room.contains("dave") || room.contains(d["participant"].as_str().unwrap()),
        "{room}"
    );
}

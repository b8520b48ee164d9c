//! Several edges on one Redis: any edge serves any client, frames reach
//! participants on other edges, the relay directory is shared; and with
//! Sentinel, losing the Redis primary does not need a restart of Tern.

use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_share_rooms_and_relays_through_redis() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}");
    let edge1 = Origin::start_with("edge-1", &url);
    let edge2 = Origin::start_with("edge-2", &url);
    // Relays heartbeat into edge 1 only; edge 2 sees them through Redis.
    let mut ra = start_relay(&edge1, "a-1", "region-a");
    let _rb = start_relay(&edge1, "b-1", "region-b");
    edge2
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("edge 2 sees relays that heartbeat into edge 1");

    let mut alice = Client::connect(&edge1.ws_url()).await;
    let mut bob = Client::connect(&edge2.ws_url()).await;
    let a = alice.join("cross", "alice").await;
    let b = bob.join("cross", "bob").await;
    assert_eq!(b["peers"][0]["participant"], a["participant"]);
    assert_eq!(b["relay"], a["relay"]);
    let pj = alice.expect("peer-joined").await;
    assert_eq!(
        pj["participant"], b["participant"],
        "peer-joined crosses edges"
    );

    alice
        .send(json!({"type":"signal","to":b["participant"],"data":{"sdp":"offer"}}))
        .await;
    assert_eq!(bob.expect("signal").await["data"]["sdp"], "offer");
    bob.send(json!({"type":"signal","to":a["participant"],"data":{"sdp":"answer"}}))
        .await;
    assert_eq!(alice.expect("signal").await["data"]["sdp"], "answer");

    // Bob's socket drops; he resumes on the *other* edge.
    bob.close().await;
    let mut bob2 = Client::connect(&edge1.ws_url()).await;
    bob2.send(json!({"type":"join","room":"cross","token":token("cross","bob",600),"session":b["session"]}))
        .await;
    let r = bob2.expect("joined").await;
    assert_eq!(r["participant"], b["participant"]);
    assert_eq!(r["resumed"], true);

    bob2.send(json!({"type":"leave"})).await;
    bob2.expect("left").await;
    assert_eq!(
        alice.expect("peer-left").await["participant"],
        b["participant"]
    );

    // A relay crashes. Edge 1 held its heartbeat connection and learns it
    // from that closing; edge 2 never had one and learns it from its own
    // probes, which the relay's host refuses (ICMP port unreachable).
    ra.kill();
    let entry = |edge: &Origin| {
        edge.relays()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "a-1")
            .cloned()
            .unwrap()
    };
    wait_until(Duration::from_secs(3), || {
        let e = entry(&edge2);
        e["probe_refused"] == true && e["failing"] == "relay-lost"
    })
    .unwrap_or_else(|_| panic!("edge 2's probes are refused: {}", entry(&edge2)));
    assert!(entry(&edge2).get("probe_link_closed").is_none());
    // And from edge 1's crash report, whichever came first.
    wait_until(Duration::from_secs(3), || {
        entry(&edge2)["crash_reported_by"] == "edge-1"
    })
    .unwrap_or_else(|_| panic!("edge 1's crash report reaches edge 2: {}", entry(&edge2)));
    wait_until(Duration::from_secs(3), || {
        entry(&edge1)["probe_link_closed"] == true
    })
    .unwrap_or_else(|_| panic!("edge 1 saw the connection close: {}", entry(&edge1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn tern_follows_a_sentinel_failover_without_restart() {
    let (p1, p2, s) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let dir = std::env::temp_dir().join(format!("tern-sentinel-{}-{s}", std::process::id()));
    let mut primary = start_redis(p1, None);
    let _replica = start_redis(p2, Some(p1));
    wait_until(Duration::from_secs(10), || {
        redis_cli(p2, &["INFO", "replication"]).is_ok_and(|i| i.contains("master_link_status:up"))
    })
    .expect("replica syncs");
    let _sentinel = start_sentinel(s, p1, "tern", &dir);
    let origin = Origin::start_with("edge-1", &format!("redis+sentinel://127.0.0.1:{s}/tern"));
    let _ra = start_relay(&origin, "a-1", "region-a");
    let _rb = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");

    let mut alice = Client::connect(&origin.ws_url()).await;
    let a = alice.join("ha", "alice").await;
    // Wait until the replica holds the room, so the failover cannot lose it
    // (Redis replication is asynchronous).
    wait_until(Duration::from_secs(5), || {
        redis_cli(p2, &["GET", "tern:default:room/ha"])
            .is_ok_and(|v| v.contains(a["participant"].as_str().unwrap()))
    })
    .expect("room replicated");

    let killed = Instant::now();
    primary.kill();
    // New joins work again once Sentinel has promoted the replica; Tern finds
    // the new primary by itself.
    let mut bob = Client::connect(&origin.ws_url()).await;
    let b = loop {
        bob.send(json!({"type":"join","room":"ha","token":token("ha","bob",600)}))
            .await;
        let f = bob
            .recv_within(Duration::from_secs(5))
            .await
            .expect("an answer");
        if f["type"] == "joined" {
            break f;
        }
        // While the store is down: `unavailable`; right after, until the
        // relays' next heartbeats land in the new primary: `no_relay`.
        assert!(
            f["code"] == "unavailable" || f["code"] == "no_relay",
            "only the store outage may show: {f}"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no recovery after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "joins work again {:?} after the primary was killed",
        killed.elapsed()
    );
    assert_eq!(
        b["peers"][0]["participant"], a["participant"],
        "room state survived the failover"
    );
    // The relay directory lives on too (relays keep heartbeating).
    origin
        .wait_healthy_relays(2, Duration::from_secs(5))
        .expect("relays still listed after failover");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Failure drills with simulated calls: real origin and relay processes,
//! calls carrying RTP-like audio over TURN (tern-callsim), a relay killed
//! mid-call. Asserts that every call is restored; prints the audio gaps.

use std::time::Duration;

use tern_callsim::{run_calls, SimConfig};
use tern_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn simulated_calls_survive_losing_their_relay() {
    let origin = Origin::start("edge-1");
    let mut ra = start_relay(&origin, "a-1", "region-a");
    let _rb = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");
    // Let the failure detector learn the heartbeat rhythm.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let cfg = SimConfig {
        edges: vec![origin.ws_url()],
        api_secret: API_SECRET.into(),
        calls: 6,
        duration: Duration::from_secs(8),
        room_prefix: format!("drill-{}", std::process::id()),
        probes: Default::default(),
    };
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    ra.kill();
    let reports = sim.await.unwrap();

    assert_eq!(reports.len(), 6);
    let mut moved = 0;
    for r in &reports {
        eprintln!(
            "{}: gap {:.0} ms, reroutes {}, received {:?} of {:?}, relays {:?}",
            r.room, r.gap_ms, r.reroutes, r.received, r.sent, r.relays
        );
        assert!(r.error.is_none(), "{}: {:?}", r.room, r.error);
        assert!(r.restored, "{} has no audio at the end", r.room);
        assert!(
            r.received[0] > 100 && r.received[1] > 100,
            "{}: {:?}",
            r.room,
            r.received
        );
        assert!(
            r.relays.iter().all(|x| x == "b-1"),
            "{} ended on {:?}",
            r.room,
            r.relays
        );
        if r.reroutes > 0 {
            moved += 1;
            assert!(r.gap_ms < 3_000.0, "{}: gap {} ms", r.room, r.gap_ms);
        }
    }
    assert!(moved > 0, "no call was on the killed relay");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_edge_leaves_media_alone_and_sessions_resume_elsewhere() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}");
    let mut doomed = Origin::start_with("edge-0", &url);
    let survivor = Origin::start_with("edge-1", &url);
    let _ra = start_relay(&survivor, "a-1", "region-a");
    let _rb = start_relay(&survivor, "b-1", "region-b");
    survivor
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");
    let cfg = SimConfig {
        edges: vec![doomed.ws_url(), survivor.ws_url()],
        api_secret: API_SECRET.into(),
        calls: 4,
        duration: Duration::from_secs(7),
        room_prefix: format!("edge-drill-{}", std::process::id()),
        probes: Default::default(),
    };
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    doomed.proc.kill();
    let reports = sim.await.unwrap();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        eprintln!(
            "{}: gap {:.0} ms, signaling resumed after {:?} ms",
            r.room, r.gap_ms, r.signaling_gap_ms
        );
        assert!(r.error.is_none(), "{}: {:?}", r.room, r.error);
        assert!(r.restored, "{} has no audio at the end", r.room);
        assert_eq!(r.reroutes, 0, "an edge failure must not move media");
        let resumed = r.signaling_gap_ms.expect("one side was on the killed edge");
        assert!(
            resumed < 2_000.0,
            "{}: signaling back after {resumed} ms",
            r.room
        );
    }
}

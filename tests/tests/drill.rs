//! Failure drills with simulated calls: real origin and relay processes,
//! calls carrying RTP-like audio over TURN (tern-callsim), a relay killed
//! mid-call. Asserts that every call is restored and how participants
//! moved (onto their prepared standby, or by a new allocation); prints the
//! audio gaps.

use std::time::Duration;

use tern_callsim::{run_calls, CallReport, SimConfig, STALL_AFTER};
use tern_tests::*;

/// An origin and one relay in each of two regions (a-1, b-1), the failure
/// detector warmed up.
async fn two_regions() -> (Origin, Proc, Proc) {
    let origin = Origin::start("edge-1");
    let ra = start_relay(&origin, "a-1", "region-a");
    let rb = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");
    // Let the failure detector learn the heartbeat rhythm.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (origin, ra, rb)
}

/// Six 8-second calls; the failure comes 3 s in.
fn six_calls(origin: &Origin, prefix: &str, no_standby: bool) -> SimConfig {
    SimConfig {
        edges: vec![origin.ws_url()],
        api_secret: API_SECRET.into(),
        calls: 6,
        duration: Duration::from_secs(8),
        room_prefix: format!("{prefix}-{}", std::process::id()),
        probes: Default::default(),
        no_standby,
        stall_after: STALL_AFTER,
        ramp: Duration::ZERO,
        nice: 0,
    }
}

/// Every call ran without error and has audio both ways at the end.
fn assert_restored(reports: &[CallReport]) {
    assert_eq!(reports.len(), 6);
    for r in reports {
        eprintln!(
            "{}: gap {:.0} ms, reroutes {}, switches {:?}, received {:?} of {:?}, relays {:?}",
            r.room, r.gap_ms, r.reroutes, r.switches, r.received, r.sent, r.relays
        );
        assert!(r.error.is_none(), "{}: {:?}", r.room, r.error);
        assert!(r.restored, "{} has no audio at the end", r.room);
        assert!(
            r.received[0] > 100 && r.received[1] > 100,
            "{}: {:?}",
            r.room,
            r.received
        );
    }
}

/// Six calls through a SIGKILL of a-1: every call must be restored on b-1.
/// Returns the reports of the calls that were on the killed relay.
async fn calls_through_a_relay_kill(prefix: &str, no_standby: bool) -> Vec<CallReport> {
    let (origin, mut ra, _rb) = two_regions().await;
    let cfg = six_calls(&origin, prefix, no_standby);
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    ra.kill();
    let reports = sim.await.unwrap();

    assert_restored(&reports);
    for r in &reports {
        assert!(
            r.relays.iter().all(|x| x == "b-1"),
            "{} ended on {:?}",
            r.room,
            r.relays
        );
        if r.reroutes > 0 {
            assert_eq!(r.reroutes, 1, "{}: only a-1 failed", r.room);
            assert!(r.gap_ms < 3_000.0, "{}: gap {} ms", r.room, r.gap_ms);
        }
    }
    let moved: Vec<CallReport> = reports.into_iter().filter(|r| r.reroutes > 0).collect();
    assert!(!moved.is_empty(), "no call was on the killed relay");
    moved
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_calls_survive_losing_their_relay() {
    // Each caller prepared a leg on b-1 (the only other region's relay,
    // hence the standby `joined` named) and bound it to its peer's: the
    // reroute to b-1 only moves the sending, no participant allocates
    // anew. A stall switch may come first if the reroute is slow; the
    // reroute then still finds the prepared leg.
    for r in calls_through_a_relay_kill("drill", false).await {
        assert_eq!(
            (r.switches.prepared, r.switches.fresh),
            (2, 0),
            "{}: both sides switch onto their prepared standby: {:?}",
            r.room,
            r.switches
        );
        assert!(r.switches.stall <= 2, "{}: {:?}", r.room, r.switches);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_standby_simulated_calls_reallocate_on_reroute() {
    for r in calls_through_a_relay_kill("drill-nostandby", true).await {
        assert_eq!(
            (r.switches.prepared, r.switches.fresh, r.switches.stall),
            (0, 2, 0),
            "{}: both sides allocate on b-1 at the reroute: {:?}",
            r.room,
            r.switches
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_reroute_callers_switch_to_their_standby_on_a_stall() {
    let (origin, mut ra, _rb) = two_regions().await;
    let cfg = six_calls(&origin, "drill-frozen", false);
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Signaling frozen, then the relay killed: no reroute can come (as
    // tests/browser/failover.test.mjs holds it back), so only the callers'
    // own stall switch onto their prepared standby can restore the audio.
    // SAFETY: plain kill(2) on a PID we spawned and still own.
    unsafe {
        libc::kill(origin.proc.pid() as i32, libc::SIGSTOP);
    }
    ra.kill();
    let reports = sim.await.unwrap();

    assert_restored(&reports);
    let mut moved = 0;
    for r in reports
        .iter()
        .filter(|r| r.relays.iter().all(|x| x == "a-1"))
    {
        moved += 1;
        assert_eq!(r.reroutes, 0, "{}: signaling was frozen", r.room);
        assert_eq!(
            (r.switches.prepared, r.switches.fresh),
            (0, 0),
            "{}: {:?}",
            r.room,
            r.switches
        );
        // Both sides (the summed count cannot tell them apart, but a side
        // that did not switch would leave the call without audio one way).
        assert!(r.switches.stall >= 2, "{}: {:?}", r.room, r.switches);
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
        no_standby: false,
        stall_after: STALL_AFTER,
        ramp: Duration::ZERO,
        nice: 0,
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

/// A planned drain (SIGTERM of a-1): the relay says it is draining and keeps
/// relaying, its calls move make-before-break, and not one audio packet is
/// lost (counted by sequence number on every side).
#[tokio::test(flavor = "multi_thread")]
async fn a_drained_relays_calls_move_without_losing_a_packet() {
    let origin = Origin::start("edge-1");
    // Long enough for the calls to move before the relay exits.
    let ra = start_relay_with(&origin, "a-1", "region-a", &["--drain-ms", "20000"]);
    let _rb = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");
    let cfg = six_calls(&origin, "drill-drain", false);
    let sim = tokio::spawn(async move { run_calls(&cfg).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SAFETY: plain kill(2) on a PID we spawned and still own.
    unsafe {
        libc::kill(ra.pid() as i32, libc::SIGTERM);
    }
    let reports = sim.await.unwrap();
    assert_restored(&reports);
    let moved = reports.iter().filter(|r| r.reroutes > 0).count();
    assert!(moved > 0, "no call was on the drained relay");
    for r in &reports {
        assert_eq!(
            r.lost,
            [0, 0],
            "{}: packets lost in a planned drain",
            r.room
        );
        assert!(
            r.relays.iter().all(|x| x == "b-1"),
            "{}: {:?}",
            r.room,
            r.relays
        );
    }
}

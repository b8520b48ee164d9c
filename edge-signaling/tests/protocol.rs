//! Protocol v1 scenarios against the sans-IO core, with simulated time and an
//! in-memory store. Every scenario runs through `apply::run`, the same
//! write-and-retry path hosts use.

use edge_signaling::apply::{apply, run};
use edge_signaling::kv::MemoryKv;
use edge_signaling::token::{self, Claims};
use edge_signaling::{Config, Outcome, Signaling};
use serde_json::{json, Value};
use tern_common::relay::{self, Heartbeat, Listener, Load, RelayState};

const API: &[u8] = b"api-secret";
const RELAY: &[u8] = b"relay-secret";
const T0: u64 = 1_800_000_000_000; // simulated unix ms

struct Sim {
    cfg: Config,
    kv: MemoryKv,
    now: u64,
    counter: u64,
}

impl Sim {
    fn new() -> Sim {
        let mut s = Sim {
            cfg: Config::new(API, RELAY),
            kv: MemoryKv::default(),
            now: T0,
            counter: 0,
        };
        s.heartbeat("a1", "local-a", 1);
        s.heartbeat("b1", "local-b", 1);
        s
    }

    fn entropy(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut e = vec![0u8; 24];
        e[0..8].copy_from_slice(&self.counter.to_be_bytes());
        e[8..16].copy_from_slice(&self.counter.to_le_bytes());
        e
    }

    fn heartbeat(&mut self, id: &str, region: &str, seq: u64) {
        self.heartbeat_as(id, region, seq, RelayState::Active)
    }

    fn heartbeat_as(&mut self, id: &str, region: &str, seq: u64, state: RelayState) {
        self.heartbeat_full(id, region, seq, state, Load::default())
    }

    fn heartbeat_full(&mut self, id: &str, region: &str, seq: u64, state: RelayState, load: Load) {
        self.heartbeat_run(id, region, seq, state, load, "", self.now);
    }

    /// A heartbeat of relay run `boot`, sent at `sent_at_ms`.
    #[allow(clippy::too_many_arguments)]
    fn heartbeat_run(
        &mut self,
        id: &str,
        region: &str,
        seq: u64,
        state: RelayState,
        load: Load,
        boot: &str,
        sent_at_ms: u64,
    ) {
        let hb = Heartbeat {
            id: id.into(),
            region: region.into(),
            listeners: vec![Listener {
                transport: "udp".into(),
                address: format!("127.0.0.1:{}", 3478 + seq % 2),
            }],
            state,
            load,
            seq,
            sent_at_ms,
            boot: boot.into(),
        };
        let body = serde_json::to_vec(&hb).unwrap();
        let sig = relay::sign(RELAY, &body);
        let (cfg, now) = (self.cfg.clone(), self.now);
        let sig_ = Signaling::new(&cfg);
        run(&mut self.kv, |kv| {
            sig_.handle_heartbeat(now, &body, &sig, kv).unwrap()
        })
        .unwrap()
        .unwrap();
    }

    fn send(&mut self, conn: &str, frame: Value) -> Vec<(String, Value)> {
        self.send_text(conn, &frame.to_string())
    }

    fn send_text(&mut self, conn: &str, text: &str) -> Vec<(String, Value)> {
        let entropy = self.entropy();
        let (cfg, now) = (self.cfg.clone(), self.now);
        let s = Signaling::new(&cfg);
        let o = run(&mut self.kv, |kv| {
            s.handle_frame(now, conn, text, &entropy, kv)
        })
        .unwrap()
        .expect("no endless conflicts");
        deliveries(o)
    }

    fn disconnect(&mut self, conn: &str) -> Vec<(String, Value)> {
        let (cfg, now) = (self.cfg.clone(), self.now);
        let s = Signaling::new(&cfg);
        deliveries(
            run(&mut self.kv, |kv| {
                s.handle_disconnect(now, conn, kv).unwrap()
            })
            .unwrap()
            .unwrap(),
        )
    }

    fn token(&self, room: &str, who: &str) -> String {
        token::mint(
            API,
            &Claims {
                room: room.into(),
                sub: who.into(),
                exp: self.now / 1000 + 60,
            },
        )
    }

    fn join(&mut self, conn: &str, room: &str, who: &str) -> Value {
        let t = self.token(room, who);
        let out = self.send(conn, json!({"type":"join","room":room,"token":t}));
        let joined = out.iter().find(|(c, f)| c == conn && f["type"] == "joined");
        joined
            .unwrap_or_else(|| panic!("no joined frame: {out:?}"))
            .1
            .clone()
    }
}

fn deliveries(o: Outcome) -> Vec<(String, Value)> {
    o.deliveries
        .into_iter()
        .map(|d| (d.conn, serde_json::from_str(&d.frame).unwrap()))
        .collect()
}

fn error_code(out: &[(String, Value)]) -> String {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1["type"], "error", "{out:?}");
    out[0].1["code"].as_str().unwrap().to_string()
}

#[test]
fn two_participants_join_see_each_other_and_share_a_relay() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "room", "alice");
    assert_eq!(a["peers"], json!([]));
    assert_eq!(a["identity"], "alice");
    let primary = a["relay"]["region"].as_str().unwrap().to_string();
    let standby = a["standby"]["relay"]["region"].as_str().unwrap();
    assert_ne!(primary, standby, "standby must be in another region");
    let ice = &a["iceServers"][0];
    let username = ice["username"].as_str().unwrap();
    // The TURN user is the caller's identity (as a pseudonym), valid as
    // long as its room token: every join of one token is one TURN user.
    let token_exp = sim.now / 1000 + 60;
    assert_eq!(
        username,
        format!(
            "{token_exp}:{}",
            tern_common::credentials::turn_identity("alice")
        )
    );
    assert_eq!(
        ice["credential"],
        tern_common::credentials::password(RELAY, username)
    );

    let t = sim.token("room", "bob");
    let out = sim.send("c2", json!({"type":"join","room":"room","token":t}));
    let b = &out.iter().find(|(c, _)| c == "c2").unwrap().1;
    assert_eq!(
        b["peers"],
        json!([{"participant": a["participant"], "identity": "alice"}])
    );
    assert_eq!(b["relay"], a["relay"], "one relay per room");
    let note = &out.iter().find(|(c, _)| c == "c1").unwrap().1;
    assert_eq!(note["type"], "peer-joined");
    assert_eq!(note["participant"], b["participant"]);
    assert_eq!(note["identity"], "bob");
}

#[test]
fn signal_is_forwarded_both_ways_and_unknown_peers_are_refused() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    let b = sim.join("c2", "r", "bob");
    let out = sim.send(
        "c1",
        json!({"type":"signal","to":b["participant"],"data":{"sdp":"offer"}}),
    );
    assert_eq!(
        out,
        vec![(
            "c2".to_string(),
            json!({"type":"signal","from":a["participant"],"data":{"sdp":"offer"}})
        )]
    );
    let out = sim.send(
        "c2",
        json!({"type":"signal","to":a["participant"],"data":{"sdp":"answer"}}),
    );
    assert_eq!(out[0].0, "c1");
    assert_eq!(out[0].1["data"]["sdp"], "answer");
    let out = sim.send("c1", json!({"type":"signal","to":"p-nobody","data":{}}));
    assert_eq!(error_code(&out), "unknown_peer");
    assert_eq!(
        out[0].1["to"], "p-nobody",
        "the error names the refused signal's target"
    );
    // Nor to oneself.
    let out = sim.send(
        "c1",
        json!({"type":"signal","to":a["participant"],"data":{}}),
    );
    assert_eq!(error_code(&out), "unknown_peer");
}

#[test]
fn leave_tells_peers_and_frees_the_connection() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    let out = sim.send("c1", json!({"type":"leave"}));
    assert!(out.contains(&(
        "c2".to_string(),
        json!({"type":"peer-left","participant":a["participant"]})
    )));
    assert!(out.contains(&("c1".to_string(), json!({"type":"left"}))));
    assert_eq!(
        error_code(&sim.send("c1", json!({"type":"leave"}))),
        "not_joined"
    );
    // The connection may join again.
    let again = sim.join("c1", "r", "alice");
    assert_ne!(again["participant"], a["participant"]);
}

#[test]
fn a_dropped_connection_resumes_its_session_within_grace() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    assert!(
        sim.disconnect("c1").is_empty(),
        "peers are not told during grace"
    );
    sim.now += 5_000;
    sim.heartbeat("a1", "local-a", 2);
    sim.heartbeat("b1", "local-b", 2);
    let t = sim.token("r", "alice");
    let out = sim.send(
        "c3",
        json!({"type":"join","room":"r","token":t,"session":a["session"]}),
    );
    assert_eq!(out.len(), 1, "a resume announces nothing to peers: {out:?}");
    let resumed = &out[0].1;
    assert_eq!(resumed["participant"], a["participant"]);
    assert_eq!(resumed["resumed"], true);
    // Signals now reach the new connection.
    let out = sim.send(
        "c2",
        json!({"type":"signal","to":a["participant"],"data":{"x":1}}),
    );
    assert_eq!(out[0].0, "c3");
}

#[test]
fn a_session_cannot_be_taken_over_by_another_identity() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    sim.disconnect("c1");
    let t = sim.token("r", "mallory");
    let out = sim.send(
        "c9",
        json!({"type":"join","room":"r","token":t,"session":a["session"]}),
    );
    assert_ne!(out[0].1["participant"], a["participant"]);
    assert_eq!(out[0].1["resumed"], false);
}

#[test]
fn away_participants_are_pruned_after_grace() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    sim.disconnect("c1");
    sim.now += sim.cfg.session_grace_ms + 1;
    sim.heartbeat("a1", "local-a", 2);
    sim.heartbeat("b1", "local-b", 2);
    let t = sim.token("r", "carol");
    let out = sim.send("c3", json!({"type":"join","room":"r","token":t}));
    assert!(out.contains(&(
        "c2".to_string(),
        json!({"type":"peer-left","participant":a["participant"]})
    )));
    let c = &out.iter().find(|(c, _)| c == "c3").unwrap().1;
    assert_eq!(
        c["peers"].as_array().unwrap().len(),
        1,
        "only bob remains: {c}"
    );
    // The pruned session no longer resumes.
    let t = sim.token("r", "alice");
    let out = sim.send(
        "c4",
        json!({"type":"join","room":"r","token":t,"session":a["session"]}),
    );
    let j = &out.iter().find(|(c, _)| c == "c4").unwrap().1;
    assert_eq!(j["resumed"], false);
}

#[test]
fn tokens_are_checked() {
    let mut sim = Sim::new();
    let code = |sim: &mut Sim, token: String, room: &str| {
        error_code(&sim.send("c1", json!({"type":"join","room":room,"token":token})))
    };
    assert_eq!(code(&mut sim, String::new(), "r"), "bad_token");
    let forged = token::mint(
        b"wrong",
        &Claims {
            room: "r".into(),
            sub: "a".into(),
            exp: T0 / 1000 + 60,
        },
    );
    assert_eq!(code(&mut sim, forged, "r"), "bad_token");
    let expired = token::mint(
        API,
        &Claims {
            room: "r".into(),
            sub: "a".into(),
            exp: T0 / 1000 - 1,
        },
    );
    assert_eq!(code(&mut sim, expired, "r"), "expired_token");
    let other_room = sim.token("elsewhere", "a");
    assert_eq!(code(&mut sim, other_room, "r"), "bad_token");
    let missing = sim.send("c1", json!({"type":"join","room":"r"}));
    assert_eq!(error_code(&missing), "bad_request");
    assert!(
        sim.kv.map.keys().all(|k| !k.starts_with("room/")),
        "refused joins store nothing"
    );
}

#[test]
fn bad_input_gets_stable_codes_and_changes_nothing() {
    let mut sim = Sim::new();
    sim.join("c1", "r", "alice");
    let before = sim.kv.map.clone();
    assert_eq!(error_code(&sim.send_text("c1", "{not json")), "bad_request");
    assert_eq!(
        error_code(&sim.send("c1", json!({"type":"teleport"}))),
        "unknown_type"
    );
    let big = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(error_code(&sim.send_text("c1", &big)), "frame_too_large");
    assert_eq!(
        error_code(&sim.send("c2", json!({"type":"signal","to":"x","data":{}}))),
        "not_joined"
    );
    let t = sim.token("r", "alice");
    assert_eq!(
        error_code(&sim.send("c1", json!({"type":"join","room":"r","token":t}))),
        "already_joined"
    );
    assert_eq!(sim.kv.map, before);
    assert_eq!(
        sim.send("c2", json!({"type":"ping","id":42})),
        vec![("c2".to_string(), json!({"type":"pong","id":42}))]
    );
}

#[test]
fn rooms_have_a_size_limit() {
    let mut sim = Sim::new();
    sim.cfg.max_room_size = 2;
    sim.join("c1", "r", "a");
    sim.join("c2", "r", "b");
    let t = sim.token("r", "c");
    assert_eq!(
        error_code(&sim.send("c3", json!({"type":"join","room":"r","token":t}))),
        "room_full"
    );
}

#[test]
fn a_relay_that_stops_heartbeating_is_not_handed_out() {
    let mut sim = Sim::new();
    let first = sim.join("c1", "r1", "a");
    let dead = first["relay"]["id"].as_str().unwrap().to_string();
    let alive = if dead == "a1" {
        ("b1", "local-b")
    } else {
        ("a1", "local-a")
    };
    sim.now += 1_000;
    sim.heartbeat(alive.0, alive.1, 5);
    sim.now += sim.cfg.relay_stale_ms; // `dead` is now 2.5 s silent, `alive` 1.5 s
    let s = Signaling::new(&sim.cfg);
    let view = s.relays(sim.now, &sim.kv).unwrap();
    assert!(!view.iter().find(|r| r.id == dead).unwrap().healthy);
    assert!(view.iter().find(|r| r.id == alive.0).unwrap().healthy);
    let next = sim.join("c2", "r2", "b");
    assert_eq!(next["relay"]["id"], alive.0);
    assert!(
        next.get("standby").is_none(),
        "no other healthy region for a standby"
    );
    // Even the room that was on the dead relay moves for a newcomer.
    let late = sim.join("c3", "r1", "c");
    assert_eq!(late["relay"]["id"], alive.0);
    sim.now += 10_000;
    let t = sim.token("r3", "d");
    assert_eq!(
        error_code(&sim.send("c4", json!({"type":"join","room":"r3","token":t}))),
        "no_relay"
    );
}

#[test]
fn probes_steer_the_choice_of_relay() {
    let mut sim = Sim::new();
    let t = sim.token("r", "a");
    let out = sim.send(
        "c1",
        json!({"type":"join","room":"r","token":t,"probes":{"local-b":3.0,"local-a":90.0}}),
    );
    assert_eq!(out[0].1["relay"]["region"], "local-b");
    assert_eq!(out[0].1["standby"]["relay"]["region"], "local-a");
}

#[test]
fn racing_joins_retry_on_conflict_and_both_land() {
    let mut sim = Sim::new();
    let cfg = sim.cfg.clone();
    let s = Signaling::new(&cfg);
    let (ta, tb) = (sim.token("r", "a"), sim.token("r", "b"));
    let ja = json!({"type":"join","room":"r","token":ta}).to_string();
    let jb = json!({"type":"join","room":"r","token":tb}).to_string();
    // Both edges read the empty room, then b commits first.
    let oa = s.handle_frame(sim.now, "ca", &ja, &[1; 24], &sim.kv);
    let ob = s.handle_frame(sim.now, "cb", &jb, &[2; 24], &sim.kv);
    assert!(apply(&mut sim.kv, &ob.writes).unwrap());
    assert!(
        !apply(&mut sim.kv, &oa.writes).unwrap(),
        "stale CAS must lose"
    );
    let before = sim.kv.map.clone();
    assert!(!before.contains_key("conn/ca"), "a lost CAS writes nothing");
    let oa = run(&mut sim.kv, |kv| {
        s.handle_frame(sim.now, "ca", &ja, &[1; 24], kv)
    })
    .unwrap()
    .unwrap();
    let joined: Value = serde_json::from_str(&oa.deliveries[0].frame).unwrap();
    assert_eq!(joined["peers"].as_array().unwrap().len(), 1);
}

#[test]
fn heartbeats_must_be_signed() {
    let sim = Sim::new();
    let s = Signaling::new(&sim.cfg);
    let body = br#"{"id":"x"}"#;
    assert!(s
        .handle_heartbeat(sim.now, body, &relay::sign(b"nope", body), &sim.kv)
        .is_err());
}

fn tick(sim: &mut Sim) -> Vec<(String, Value)> {
    let cfg = sim.cfg.clone();
    let s = Signaling::new(&cfg);
    let d = edge_signaling::reroute::tick(&s, sim.now, &mut sim.kv).unwrap();
    d.into_iter()
        .map(|d| (d.conn, serde_json::from_str(&d.frame).unwrap()))
        .collect()
}

impl Sim {
    /// Both relays beating steadily for `ms`, so the failure detector has
    /// learned their rhythm. Returns the simulation and the heartbeat seq.
    fn warm(ms: u64) -> (Sim, u64) {
        let mut sim = Sim::new();
        let mut seq = 1;
        run_for(
            &mut sim,
            ms,
            &[("a1", "local-a"), ("b1", "local-b")],
            &mut seq,
        );
        (sim, seq)
    }

    /// Join with probes that make `region` the nearest.
    fn join_near(&mut self, conn: &str, room: &str, who: &str, region: &str) -> Value {
        let t = self.token(room, who);
        let out = self.send(
            conn,
            json!({"type":"join","room":room,"token":t,"probes":{region:1.0}}),
        );
        out.into_iter()
            .find(|(c, _)| c == conn)
            .expect("an answer")
            .1
    }
}

/// Advance time in heartbeat steps, beating only the listed relays.
fn run_for(sim: &mut Sim, ms: u64, beating: &[(&str, &str)], seq: &mut u64) {
    let mut t = 0;
    while t < ms {
        sim.now += 250;
        t += 250;
        *seq += 1;
        for (id, region) in beating {
            sim.heartbeat(id, region, *seq);
        }
    }
}

#[test]
fn calls_on_a_lost_relay_are_rerouted_once_with_fresh_credentials() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    let a = sim.join_near("c1", "r", "alice", "local-a");
    assert_eq!(a["relay"]["id"], "a1");
    let b = sim.join("c2", "r", "bob");
    assert!(
        tick(&mut sim).is_empty(),
        "nothing to do while a1 is healthy"
    );

    // a1 goes silent; b1 keeps beating. The phi detector (steady 250 ms
    // beat) suspects a1 within half a second.
    run_for(&mut sim, 500, &[("b1", "local-b")], &mut seq);
    let out = tick(&mut sim);
    assert_eq!(out.len(), 2, "{out:?}");
    for (conn, f) in &out {
        let who = if conn == "c1" { &a } else { &b };
        assert_eq!(f["type"], "reroute");
        assert_eq!(f["reason"], "relay-lost");
        assert_eq!(f["relay"]["id"], "b1");
        let user = f["iceServers"][0]["username"].as_str().unwrap();
        let identity = who["identity"].as_str().unwrap();
        assert!(user.ends_with(&tern_common::credentials::turn_identity(identity)));
        assert_eq!(
            f["iceServers"][0]["credential"],
            tern_common::credentials::password(RELAY, user)
        );
    }
    assert!(tick(&mut sim).is_empty(), "a room is moved once");
    // Newcomers get the room's new relay.
    let c = sim.join("c3", "r", "carol");
    assert_eq!(c["relay"]["id"], "b1");
}

#[test]
fn a_draining_relay_hands_its_calls_over_make_before_break() {
    let (mut sim, _) = Sim::warm(1_000);
    sim.join_near("c1", "r", "alice", "local-a");
    // a1 announces draining (still alive, still relaying).
    let hb = Heartbeat {
        id: "a1".into(),
        region: "local-a".into(),
        listeners: vec![Listener {
            transport: "udp".into(),
            address: "127.0.0.1:3478".into(),
        }],
        state: RelayState::Draining,
        load: Load::default(),
        seq: 1_000,
        sent_at_ms: sim.now,
        boot: String::new(),
    };
    let body = serde_json::to_vec(&hb).unwrap();
    let sig = relay::sign(RELAY, &body);
    let cfg = sim.cfg.clone();
    let s = Signaling::new(&cfg);
    let now = sim.now;
    run(&mut sim.kv, |kv| {
        s.handle_heartbeat(now, &body, &sig, kv).unwrap()
    })
    .unwrap();
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1["reason"], "relay-draining");
    assert_eq!(out[0].1["relay"]["id"], "b1");
}

#[test]
fn two_edges_ticking_at_once_move_a_room_once() {
    let (mut sim, mut seq) = Sim::warm(1_000);
    sim.join_near("c1", "r", "alice", "local-a");
    run_for(&mut sim, 750, &[("b1", "local-b")], &mut seq);
    let cfg = sim.cfg.clone();
    let s = Signaling::new(&cfg);
    let sweeps = s.sweeps(sim.now, &sim.kv).unwrap();
    assert_eq!(sweeps.len(), 1);
    assert_eq!(sweeps[0].rooms, ["r"]);
    // Both edges plan on the same state; the second CAS loses, and its retry
    // finds the room already moved and sends nothing.
    let (o1, _) = s.reroute_room(sim.now, &sweeps[0], "r", &sim.kv).unwrap();
    let (o2, _) = s.reroute_room(sim.now, &sweeps[0], "r", &sim.kv).unwrap();
    assert!(apply(&mut sim.kv, &o1.writes).unwrap());
    assert!(!apply(&mut sim.kv, &o2.writes).unwrap());
    let (o3, settled) = s.reroute_room(sim.now, &sweeps[0], "r", &sim.kv).unwrap();
    assert!(settled && o3.deliveries.is_empty());
}

#[test]
fn with_no_healthy_relay_the_sweep_waits_and_retries() {
    let (mut sim, mut seq) = Sim::warm(1_000);
    sim.join("c1", "r", "alice");
    run_for(&mut sim, 2_000, &[], &mut seq); // everything dies
    assert!(tick(&mut sim).is_empty());
    run_for(
        &mut sim,
        1_000,
        &[("b1", "local-b"), ("a1", "local-a")],
        &mut seq,
    );
    // Relays are back: the room's relay is healthy again, nothing to move.
    assert!(tick(&mut sim).is_empty());
}

#[test]
fn callers_reporting_stalled_audio_move_the_call_and_suspect_the_relay() {
    let (mut sim, _) = Sim::warm(1_000);
    let a = sim.join_near("c1", "r", "alice", "local-a");
    sim.join("c2", "r", "bob");
    sim.join_near("c3", "r2", "carol", "local-a");
    sim.join("c4", "r2", "dave");
    sim.join_near("c5", "r3", "erin", "local-a");
    assert_eq!(a["relay"]["id"], "a1");

    // One report is not enough (could be that caller's own network).
    assert!(sim
        .send("c1", json!({"type":"stall","relay":"a1"}))
        .is_empty());
    // A report about a relay the room no longer uses is ignored.
    assert!(sim
        .send("c2", json!({"type":"stall","relay":"b1"}))
        .is_empty());
    sim.now += 300;
    let out = sim.send("c2", json!({"type":"stall","relay":"a1"}));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|(_, f)| f["type"] == "reroute"
        && f["reason"] == "media-stalled"
        && f["relay"]["id"] == "b1"));
    // One room's callers moved their own call, nobody else's.
    let healthy = |sim: &Sim| {
        Signaling::new(&sim.cfg)
            .relays(sim.now, &sim.kv)
            .unwrap()
            .iter()
            .find(|r| r.id == "a1")
            .unwrap()
            .healthy
    };
    assert!(
        healthy(&sim),
        "one room's reports suspect the relay fleet-wide"
    );
    assert!(tick(&mut sim).is_empty());

    // A second room agrees: a1 is suspected fleet-wide, new joins avoid it
    // and the tick moves the last room on it.
    sim.now += 300;
    sim.send("c3", json!({"type":"stall","relay":"a1"}));
    let out = sim.send("c4", json!({"type":"stall","relay":"a1"}));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(!healthy(&sim));
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "c5");
    assert_eq!(out[0].1["reason"], "media-stalled");
}

/// One identity on several sockets is one caller: its reports agree with
/// nobody, so they move nothing.
#[test]
fn one_identity_on_several_sockets_cannot_move_a_call() {
    let (mut sim, _) = Sim::warm(1_000);
    let a = sim.join_near("c1", "r", "mallory", "local-a");
    sim.join("c2", "r", "mallory");
    sim.join("c3", "r", "alice");
    assert_eq!(a["relay"]["id"], "a1");
    assert!(sim
        .send("c1", json!({"type":"stall","relay":"a1"}))
        .is_empty());
    sim.now += 100;
    assert!(
        sim.send("c2", json!({"type":"stall","relay":"a1"}))
            .is_empty(),
        "two sockets of one identity moved the call"
    );
    // A second identity agreeing does move it.
    let out = sim.send("c3", json!({"type":"stall","relay":"a1"}));
    assert_eq!(out.len(), 3, "{out:?}");
}

#[test]
fn stale_stall_reports_do_not_add_up() {
    let (mut sim, mut seq) = Sim::warm(1_000);
    let a = sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    let relay = a["relay"]["id"].as_str().unwrap().to_string();
    sim.send("c1", json!({"type":"stall","relay":relay}));
    sim.now += 3_000;
    seq += 1;
    sim.heartbeat("a1", "local-a", seq);
    sim.heartbeat("b1", "local-b", seq);
    assert!(sim
        .send("c2", json!({"type":"stall","relay":relay}))
        .is_empty());
}

#[test]
fn a_cold_standby_is_promoted_only_when_its_region_runs_out() {
    let mut sim = Sim::new();
    let mut seq = 1;
    let beat = |sim: &mut Sim, seq: u64, with_a1: bool| {
        if with_a1 {
            sim.heartbeat("a1", "local-a", seq);
        }
        sim.heartbeat_as("a2", "local-a", seq, RelayState::Standby);
        sim.heartbeat("b1", "local-b", seq);
    };
    for _ in 0..6 {
        sim.now += 250;
        seq += 1;
        beat(&mut sim, seq, true);
    }
    let s = Signaling::new(&sim.cfg);
    let view = s.relays(sim.now, &sim.kv).unwrap();
    let a2 = view.iter().find(|r| r.id == "a2").unwrap();
    assert!(!a2.healthy && !a2.promoted, "idle standby takes no calls");
    let t = sim.token("r", "alice");
    let j = sim.send(
        "c1",
        json!({"type":"join","room":"r","token":t,"probes":{"local-a":1.0,"local-b":50.0}}),
    )[0]
    .1
    .clone();
    assert_eq!(j["relay"]["id"], "a1");
    assert!(
        tick(&mut sim).is_empty(),
        "the standby is not failing: nothing moves"
    );

    // a1 dies: the standby in local-a is promoted and takes the call.
    for _ in 0..3 {
        sim.now += 250;
        seq += 1;
        beat(&mut sim, seq, false);
    }
    let s = Signaling::new(&sim.cfg);
    let view = s.relays(sim.now, &sim.kv).unwrap();
    let a2 = view.iter().find(|r| r.id == "a2").unwrap();
    assert!(a2.healthy && a2.promoted);
    let out = tick(&mut sim);
    assert_eq!(out[0].1["relay"]["id"], "a2");
    let t = sim.token("r2", "bob");
    let j = sim.send(
        "c2",
        json!({"type":"join","room":"r2","token":t,"probes":{"local-a":1.0,"local-b":50.0}}),
    )[0]
    .1
    .clone();
    assert_eq!(j["relay"]["id"], "a2");
}

#[test]
fn a_relay_whose_heartbeat_turns_irregular_is_drained_before_it_fails() {
    let (mut sim, mut seq) = Sim::warm(3_000);
    sim.join_near("c1", "r", "alice", "local-a");
    // a1's beat turns ragged (an overloaded event loop), b1 stays steady.
    let start = sim.now;
    let mut a_at = Vec::new();
    let mut t = start;
    for gap in [50u64, 600, 80, 550, 100, 700, 60, 500] {
        t += gap;
        a_at.push(t);
    }
    let mut events: Vec<(u64, &str, &str)> = a_at.iter().map(|&t| (t, "a1", "local-a")).collect();
    let mut t = start;
    while t + 250 <= *a_at.last().unwrap() {
        t += 250;
        events.push((t, "b1", "local-b"));
    }
    events.sort();
    for (at, id, region) in events {
        sim.now = at;
        seq += 1;
        sim.heartbeat(id, region, seq);
    }
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1["reason"], "relay-degraded");
    assert_eq!(out[0].1["relay"]["id"], "b1");
    let j = sim.join_near("c2", "r2", "bob", "local-a");
    assert_eq!(j["relay"]["id"], "b1", "new calls avoid a degrading relay");
}

#[test]
fn a_relay_failing_this_edges_probes_is_treated_as_lost_until_it_answers() {
    let (mut sim, mut seq) = Sim::warm(1_000);
    sim.join_near("c1", "r", "alice", "local-a");
    // Heartbeats keep coming, but this edge's probes go unanswered.
    let key = edge_signaling::keys::relay_probe(&sim.cfg.edge, "a1");
    sim.kv
        .map
        .insert(key.clone(), br#"{"failing_since_ms":1}"#.to_vec());
    run_for(
        &mut sim,
        250,
        &[("a1", "local-a"), ("b1", "local-b")],
        &mut seq,
    );
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1["reason"], "relay-lost");
    // Another edge's verdict is not ours.
    let other = edge_signaling::keys::relay_probe("elsewhere", "b1");
    sim.kv
        .map
        .insert(other, br#"{"failing_since_ms":1}"#.to_vec());
    let s = Signaling::new(&sim.cfg);
    assert!(
        s.relays(sim.now, &sim.kv)
            .unwrap()
            .iter()
            .find(|r| r.id == "b1")
            .unwrap()
            .healthy
    );
    // Answers again: healthy again.
    sim.kv
        .map
        .insert(key, br#"{"failing_since_ms":null}"#.to_vec());
    let s = Signaling::new(&sim.cfg);
    assert!(
        s.relays(sim.now, &sim.kv)
            .unwrap()
            .iter()
            .find(|r| r.id == "a1")
            .unwrap()
            .healthy
    );
}

#[test]
fn a_fleet_gone_silent_at_once_is_blamed_on_this_side_not_the_relays() {
    // Three relays; the store (or this edge) stops taking heartbeats for
    // 3 s, as in a Redis failover. Every relay looks silent, which is far
    // likelier our problem than three independent failures: nothing moves
    // and joins still get a relay.
    let (mut sim, mut seq) = Sim::warm(1_000);
    sim.heartbeat("c1", "local-c", seq);
    run_for(
        &mut sim,
        1_000,
        &[("a1", "local-a"), ("b1", "local-b"), ("c1", "local-c")],
        &mut seq,
    );
    sim.join_near("x1", "r", "alice", "local-a");
    run_for(&mut sim, 3_000, &[], &mut seq);
    assert!(
        tick(&mut sim).is_empty(),
        "no reroute storm after a store outage"
    );
    let j = sim.join_near("x2", "r2", "bob", "local-b");
    assert_eq!(j["type"], "joined", "{j}");
    // One of three going silent is still a relay failure.
    run_for(
        &mut sim,
        1_000,
        &[("b1", "local-b"), ("c1", "local-c")],
        &mut seq,
    );
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1["reason"], "relay-lost");
}

// ---- call records (docs/kv-schema.md "Call records") ----------------------

impl Sim {
    /// Every call record in the store, built the way readers see them.
    fn calls(&self) -> Vec<edge_signaling::record::CallRecord> {
        use edge_signaling::kv::KvRead;
        use edge_signaling::model::{CallEvent, CallSummary, Quality};
        let get = |k: &str| self.kv.get(k).unwrap().unwrap();
        self.kv
            .list("call/")
            .unwrap()
            .into_iter()
            .map(|k| {
                let summary: CallSummary = serde_json::from_slice(&get(&k)).unwrap();
                let id = summary.call.clone();
                let events: Vec<CallEvent> = self
                    .kv
                    .list(&format!("call-event/{id}/"))
                    .unwrap()
                    .iter()
                    .map(|k| serde_json::from_slice(&get(k)).unwrap())
                    .collect();
                let quality: Vec<Quality> = self
                    .kv
                    .list(&format!("call-quality/{id}/"))
                    .unwrap()
                    .iter()
                    .map(|k| serde_json::from_slice(&get(k)).unwrap())
                    .collect();
                edge_signaling::record::build(summary, events, quality)
            })
            .collect()
    }

    fn room_call(&self, room: &str) -> Option<String> {
        let raw = self.kv.map.get(&format!("room/{room}"))?;
        let v: Value = serde_json::from_slice(raw).unwrap();
        v["call"].as_str().map(str::to_string)
    }
}

#[test]
fn join_and_leave_make_a_call_record_with_both_participants() {
    let mut sim = Sim::new();
    let t0 = sim.now;
    let a = sim.join("c1", "r", "alice");
    let call = sim
        .room_call("r")
        .expect("joining an empty room starts a call");
    assert!(call.starts_with(&format!("c-{t0:013}-")), "{call}");
    sim.now += 1_000;
    let b = sim.join("c2", "r", "bob");
    assert_eq!(sim.room_call("r").as_deref(), Some(call.as_str()));
    sim.now += 60_000;
    sim.send("c1", json!({"type":"leave"}));
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].ended_ms, None, "bob is still in the call");
    sim.now += 500;
    sim.send("c2", json!({"type":"leave"}));

    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.call, call);
    assert_eq!(c.room, "r");
    assert_eq!(c.started_ms, t0);
    assert_eq!(c.ended_ms, Some(t0 + 61_500));
    assert_eq!(c.end_reason.as_deref(), Some("empty"));
    assert_eq!(c.relays.len(), 1);
    assert_eq!(c.relays[0], a["relay"]["id"].as_str().unwrap());
    let p: Vec<_> = c
        .participants
        .iter()
        .map(|p| {
            (
                p.participant.as_str(),
                p.identity.as_str(),
                p.joined_ms,
                p.left_ms,
                p.leave_reason.as_deref(),
                p.edges.clone(),
            )
        })
        .collect();
    assert_eq!(
        p,
        vec![
            (
                a["participant"].as_str().unwrap(),
                "alice",
                t0,
                Some(t0 + 61_000),
                Some("leave"),
                vec!["local".to_string()]
            ),
            (
                b["participant"].as_str().unwrap(),
                "bob",
                t0 + 1_000,
                Some(t0 + 61_500),
                Some("leave"),
                vec!["local".to_string()]
            ),
        ]
    );
    assert!(sim.room_call("r").is_none(), "the empty room has no call");
    assert!(
        !sim.kv.map.keys().any(|k| k.starts_with("call-open/")),
        "an ended call is not open"
    );
    // The indexes readers page by room and by identity, in the same
    // outcomes as the record.
    let index: Vec<&String> = sim
        .kv
        .map
        .keys()
        .filter(|k| k.starts_with("call-room/") || k.starts_with("call-identity/"))
        .collect();
    assert_eq!(
        index,
        [
            &format!("call-identity/alice/{call}"),
            &format!("call-identity/bob/{call}"),
            &format!("call-room/r/{call}"),
        ]
    );
}

#[test]
fn a_room_that_empties_and_fills_again_is_a_new_call() {
    let mut sim = Sim::new();
    sim.join("c1", "r", "alice");
    let first = sim.room_call("r").unwrap();
    sim.now += 10;
    sim.send("c1", json!({"type":"leave"}));
    sim.now += 10;
    sim.join("c1", "r", "alice");
    let second = sim.room_call("r").unwrap();
    assert_ne!(first, second);
    // A resume is not a new call, and records the edge it came back on.
    sim.now += 10;
    let b = sim.join("c2", "r", "bob");
    sim.disconnect("c2");
    sim.cfg.edge = "edge-2".into();
    sim.now += 1_000;
    let t = sim.token("r", "bob");
    let again = sim.send(
        "c9",
        json!({"type":"join","room":"r","token":t,"session":b["session"]}),
    );
    assert_eq!(again[0].1["resumed"], true);
    assert_eq!(sim.room_call("r").as_deref(), Some(second.as_str()));
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    let rec = calls.iter().find(|c| c.call == second).unwrap();
    let bob = rec
        .participants
        .iter()
        .find(|p| p.identity == "bob")
        .unwrap();
    assert_eq!(bob.edges, ["local", "edge-2"]);
    assert_eq!(bob.away.len(), 1);
    assert_eq!(bob.left_ms, None);
    let old = calls.iter().find(|c| c.call == first).unwrap();
    assert_eq!(old.end_reason.as_deref(), Some("empty"));
}

#[test]
fn a_call_whose_participants_vanish_is_closed_by_the_timeout_sweep() {
    let mut sim = Sim::new();
    sim.cfg.call_sweep_ms = 1_000;
    sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    let call = sim.room_call("r").unwrap();
    sim.now += 100;
    let gone_at = sim.now;
    sim.disconnect("c1");
    sim.disconnect("c2");
    // Within grace nothing happens: they may resume.
    sim.now += sim.cfg.session_grace_ms;
    tick(&mut sim);
    assert_eq!(sim.calls()[0].ended_ms, None);
    // After grace the next sweep closes it, with no room activity at all.
    sim.now += 1_001;
    tick(&mut sim);
    let c = &sim.calls()[0];
    assert_eq!(c.call, call);
    assert_eq!(c.end_reason.as_deref(), Some("timeout"));
    assert_eq!(c.ended_ms, Some(sim.now));
    for p in &c.participants {
        assert_eq!(p.away, [gone_at]);
        assert_eq!(p.leave_reason.as_deref(), Some("timeout"));
    }
    assert!(sim.room_call("r").is_none());
    // The sweep is rate-limited per edge and finds nothing more to do.
    let before = sim.kv.map.clone();
    sim.now += 10;
    tick(&mut sim);
    assert_eq!(sim.kv.map, before, "no writes when nothing is due");
}

#[test]
fn a_member_timing_out_in_a_live_call_is_recorded_and_peers_told() {
    let mut sim = Sim::new();
    sim.cfg.call_sweep_ms = 0;
    let a = sim.join("c1", "r", "alice");
    sim.join("c2", "r", "bob");
    sim.disconnect("c1");
    sim.now += sim.cfg.session_grace_ms + 1;
    let out = tick(&mut sim);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, "c2");
    assert_eq!(out[0].1["type"], "peer-left");
    assert_eq!(out[0].1["participant"], a["participant"]);
    let c = &sim.calls()[0];
    assert_eq!(c.ended_ms, None, "bob is still there");
    assert_eq!(c.participants[0].leave_reason.as_deref(), Some("timeout"));
}

#[test]
fn reroutes_are_recorded_with_from_to_reason_and_times() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    sim.join_near("c1", "r", "alice", "local-a");
    sim.join("c2", "r", "bob");
    let last_beat = sim.now;
    run_for(&mut sim, 500, &[("b1", "local-b")], &mut seq);
    assert_eq!(tick(&mut sim).len(), 2);
    let moved_at = sim.now;
    // The SDK reports the audio gap it measured around the switch.
    sim.send(
        "c1",
        json!({"type":"stats","relay":"b1","peers":[],"gap":{"relay":"a1","ms":420}}),
    );
    let c = &sim.calls()[0];
    assert_eq!(c.relays, ["a1", "b1"]);
    assert_eq!(c.reroutes.len(), 1);
    let r = &c.reroutes[0];
    assert_eq!(r.from.as_deref(), Some("a1"));
    assert_eq!(r.to, "b1");
    assert_eq!(r.reason, "relay-lost");
    assert_eq!(r.at_ms, moved_at);
    assert_eq!(r.since_ms, Some(last_beat), "a1's last heartbeat");
    assert_eq!(r.detection_ms, Some(moved_at - last_beat));
    assert_eq!(r.gap_ms, Some(420));
}

#[test]
fn stall_reroutes_are_recorded_from_the_first_report() {
    let (mut sim, _) = Sim::warm(1_000);
    sim.join_near("c1", "r", "alice", "local-a");
    sim.join("c2", "r", "bob");
    let first = sim.now;
    sim.send("c1", json!({"type":"stall","relay":"a1"}));
    sim.now += 300;
    sim.send("c2", json!({"type":"stall","relay":"a1"}));
    let r = &sim.calls()[0].reroutes[0];
    assert_eq!(r.reason, "media-stalled");
    assert_eq!(r.since_ms, Some(first));
    assert_eq!(r.detection_ms, Some(300));
}

#[test]
fn stats_reports_fold_into_a_quality_summary() {
    let mut sim = Sim::new();
    let a = sim.join("c1", "r", "alice");
    let b = sim.join("c2", "r", "bob");
    let (pa, pb) = (
        a["participant"].as_str().unwrap(),
        b["participant"].as_str().unwrap(),
    );
    let report = |lost: u64, recv: u64, jitter: f64, rtt: f64| {
        json!({"type":"stats","relay":"a1","signalingRtt":3,
               "peers":[{"participant":pb,"packetsSent":recv,"packetsReceived":recv,
                         "packetsLost":lost,"jitter":jitter,"rtt":rtt,"candidateType":"relay"},
                        {"participant":"p-not-in-room","packetsLost":99999}]})
    };
    assert!(sim.send("c1", report(1, 100, 2.0, 20.0)).is_empty());
    sim.now += 5_000;
    sim.send("c1", report(5, 300, 6.0, 40.0));
    sim.send(
        "c2",
        json!({"type":"stats","peers":[{"participant":pa,"packetsReceived":295,"packetsLost":0,"jitter":null,"rtt":30}]}),
    );
    // Malformed reports are refused and change nothing.
    let before = sim.kv.map.clone();
    let out = sim.send("c1", json!({"type":"stats","peers":"lots"}));
    assert_eq!(error_code(&out), "bad_request");
    assert_eq!(sim.kv.map, before);

    let c = &sim.calls()[0];
    let qa = c.participants[0].quality.as_ref().unwrap();
    assert_eq!(qa.reports, 2);
    assert_eq!(qa.peers.len(), 1, "peers outside the room are ignored");
    let link = &qa.peers[pb];
    assert_eq!((link.packets_received, link.packets_lost), (300, 5));
    assert_eq!(link.jitter_ms_max, Some(6.0));
    assert_eq!(link.jitter_ms_mean, Some(4.0));
    assert_eq!(link.rtt_ms_max, Some(40.0));
    assert_eq!(link.rtt_ms_mean, Some(30.0));
    let q = &c.quality;
    assert_eq!(q.reports, 3);
    assert_eq!((q.packets_received, q.packets_lost), (595, 5));
    assert!((q.loss_pct.unwrap() - 100.0 * 5.0 / 600.0).abs() < 1e-9);
    assert_eq!(q.rtt_ms_max, Some(40.0));
    assert_eq!(q.rtt_ms_mean, Some(30.0), "(20 + 40 + 30) / 3");
    assert_eq!(q.jitter_ms_mean, Some(4.0));
}

#[test]
fn call_record_keys_are_the_durable_ones() {
    use edge_signaling::keys;
    let mut sim = Sim::new();
    sim.join("c1", "r", "alice");
    let call = sim.room_call("r").unwrap();
    assert!(keys::needs_durable_write(&keys::call(&call)));
    assert!(keys::needs_durable_write(&keys::call_event(
        &call, 1, "end"
    )));
    assert!(!keys::needs_durable_write(&keys::call_quality(&call, "p")));
    assert!(!keys::needs_durable_write("room/r"));
    assert!(!keys::needs_durable_write("calls-swept/local"));
}

/// A lost relay's calls go to the region nearest their callers (the probes
/// sent at join, kept with the room), not merely the least loaded relay.
#[test]
fn a_rerouted_call_goes_to_the_region_nearest_its_callers() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    // A third region, c, that the callers measured closer than b.
    let beat_all = [("a1", "local-a"), ("b1", "local-b"), ("c1", "local-c")];
    run_for(&mut sim, 2_000, &beat_all, &mut seq);
    let t = sim.token("r", "alice");
    let probes = json!({"local-a": 5.0, "local-b": 90.0, "local-c": 30.0});
    let a = sim.send(
        "c1",
        json!({"type":"join","room":"r","token":t,"probes":probes}),
    );
    assert_eq!(a[0].1["relay"]["id"], "a1");
    // Bob joins without probes: the room keeps alice's view.
    sim.join("c2", "r", "bob");

    run_for(
        &mut sim,
        500,
        &[("b1", "local-b"), ("c1", "local-c")],
        &mut seq,
    );
    let out = tick(&mut sim);
    assert_eq!(out.len(), 2, "{out:?}");
    for (_, f) in &out {
        assert_eq!(f["type"], "reroute");
        // Without the probes, b1 would win (same load, lower id).
        assert_eq!(f["relay"]["id"], "c1", "{f}");
    }
}

/// Beat both relays every 250 ms for `ms`, a1 at `a_cpu` % of one thread.
fn beat_with_cpu(sim: &mut Sim, ms: u64, a_cpu: f64, seq: &mut u64) {
    let load = |cpu: f64| Load {
        cpu_percent: Some(cpu),
        threads: Some(1),
        ..Load::default()
    };
    let mut t = 0;
    while t < ms {
        sim.now += 250;
        t += 250;
        *seq += 1;
        sim.heartbeat_full("a1", "local-a", *seq, RelayState::Active, load(a_cpu));
        sim.heartbeat_full("b1", "local-b", *seq, RelayState::Active, load(10.0));
    }
}

#[test]
fn an_overloaded_relay_sheds_part_of_its_calls_and_takes_no_new_ones() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    beat_with_cpu(&mut sim, 1_250, 40.0, &mut seq);
    for i in 0..10 {
        let j = sim.join_near(&format!("c{i}"), &format!("r{i}"), "alice", "local-a");
        assert_eq!(j["relay"]["id"], "a1");
    }
    // Busy for a moment (2 of 5 samples): no trend yet, nothing moves.
    beat_with_cpu(&mut sim, 500, 99.0, &mut seq);
    assert!(tick(&mut sim).is_empty());
    // Sustained: a1 sheds the share above the 80 % target, ceil(10 x 19/99)
    // = 2 rooms, make-before-break, to b1.
    beat_with_cpu(&mut sim, 750, 99.0, &mut seq);
    let out = tick(&mut sim);
    assert_eq!(out.len(), 2, "{out:?}");
    for (_, f) in &out {
        assert_eq!(f["reason"], "relay-overloaded");
        assert_eq!(f["relay"]["id"], "b1");
    }
    let relays = Signaling::new(&sim.cfg.clone())
        .relays(sim.now, &sim.kv)
        .unwrap();
    let a1 = relays.iter().find(|r| r.id == "a1").unwrap();
    assert_eq!((a1.healthy, a1.utilization), (false, Some(99)));
    // Its heartbeats have not caught up yet: no second shed right away...
    beat_with_cpu(&mut sim, 500, 99.0, &mut seq);
    assert!(tick(&mut sim).is_empty(), "one shed per interval");
    // ...and new callers near a1 go elsewhere.
    let j = sim.join_near("late", "r-late", "bob", "local-a");
    assert_eq!(j["relay"]["id"], "b1");
    // Still overloaded after the interval: the next share moves.
    beat_with_cpu(&mut sim, 1_500, 99.0, &mut seq);
    assert_eq!(tick(&mut sim).len(), 2, "ceil(8 x 19/99)");
    // Load falls below busy: a1 takes calls again and keeps the rest.
    beat_with_cpu(&mut sim, 1_250, 50.0, &mut seq);
    assert!(tick(&mut sim).is_empty());
    let j = sim.join_near("fresh", "r-fresh", "carol", "local-a");
    assert_eq!(j["relay"]["id"], "a1");
}

#[test]
fn a_busy_relay_takes_no_new_calls_but_keeps_its_own() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    sim.join_near("c1", "r", "alice", "local-a");
    beat_with_cpu(&mut sim, 1_500, 88.0, &mut seq);
    assert!(tick(&mut sim).is_empty(), "busy is not overloaded");
    let j = sim.join_near("c2", "r2", "bob", "local-a");
    assert_eq!(j["relay"]["id"], "b1");
    // The busy relay's own room keeps it, also for newcomers to that room.
    let j = sim.join("c3", "r", "carol");
    assert_eq!(j["relay"]["id"], "a1");
}

/// Callers in four rooms on a1 report their audio: `lossy` of them lose 20 %.
fn report_loss(sim: &mut Sim, lossy: usize) {
    let mut bobs = Vec::new();
    for i in 0..4 {
        sim.join_near(
            &format!("a{i}"),
            &format!("lr{i}"),
            &format!("alice{i}"),
            "local-a",
        );
        let b = sim.join_near(
            &format!("b{i}"),
            &format!("lr{i}"),
            &format!("bob{i}"),
            "local-a",
        );
        assert_eq!(b["relay"]["id"], "a1");
        bobs.push(b["participant"].clone());
    }
    for (i, bob) in bobs.iter().enumerate() {
        let lost = if i < lossy { 40 } else { 0 };
        sim.send(
            &format!("a{i}"),
            json!({"type":"stats","relay":"a1","peers":[{"participant":bob,"packetsReceived":200 - lost,"packetsLost":lost}]}),
        );
    }
}

#[test]
fn a_relay_many_callers_lose_packets_on_is_drained() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    report_loss(&mut sim, 3);
    // The first tick judges the reports; the next one acts on the verdict.
    assert!(tick(&mut sim).is_empty());
    run_for(
        &mut sim,
        250,
        &[("a1", "local-a"), ("b1", "local-b")],
        &mut seq,
    );
    let out = tick(&mut sim);
    assert_eq!(out.len(), 8, "every participant of the four rooms: {out:?}");
    for (_, f) in &out {
        assert_eq!(f["reason"], "relay-degraded");
        assert_eq!(f["relay"]["id"], "b1");
    }
    let j = sim.join_near("late", "r-late", "carol", "local-a");
    assert_eq!(j["relay"]["id"], "b1", "new calls avoid a lossy relay");
}

#[test]
fn one_callers_loss_does_not_condemn_its_relay() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    report_loss(&mut sim, 1);
    tick(&mut sim);
    run_for(
        &mut sim,
        250,
        &[("a1", "local-a"), ("b1", "local-b")],
        &mut seq,
    );
    assert!(tick(&mut sim).is_empty());
    let j = sim.join_near("late", "r-late", "carol", "local-a");
    assert_eq!(j["relay"]["id"], "a1");
}

/// Counts a host's store calls: each is one round trip on Redis.
struct CountingKv<'a> {
    inner: &'a MemoryKv,
    calls: std::cell::Cell<usize>,
}

impl edge_signaling::kv::KvRead for CountingKv<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, edge_signaling::kv::KvError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.get(key)
    }
    fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, edge_signaling::kv::KvError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.get_many(keys)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, edge_signaling::kv::KvError> {
        self.calls.set(self.calls.get() + 1);
        self.inner.list(prefix)
    }
}

/// A join (new or resumed) reads the store in the same few round trips
/// however many relays there are: the directory is one batch read.
#[test]
fn a_join_reads_the_store_in_few_round_trips_whatever_the_fleet_size() {
    let mut sim = Sim::new();
    let joined = sim.join("c1", "room", "alice");
    sim.disconnect("c1");
    let reads = |sim: &mut Sim, frame: Value| {
        let entropy = sim.entropy();
        let cfg = sim.cfg.clone();
        let counting = CountingKv {
            inner: &sim.kv,
            calls: Default::default(),
        };
        let out = Signaling::new(&cfg).handle_frame(
            sim.now,
            "c2",
            &frame.to_string(),
            &entropy,
            &counting,
        );
        assert!(
            deliveries(out).iter().any(|(_, f)| f["type"] == "joined"),
            "the join went through"
        );
        counting.calls.get()
    };
    let fresh = |sim: &Sim| json!({"type":"join","room":"other","token":sim.token("other","bob")});
    let resume = |sim: &Sim| json!({"type":"join","room":"room","token":sim.token("room","alice"),"session":joined["session"]});
    let (f, r) = (fresh(&sim), resume(&sim));
    let (fresh_2, resume_2) = (reads(&mut sim, f), reads(&mut sim, r));
    for i in 0..10 {
        sim.heartbeat(&format!("c{i}"), "local-c", 1);
    }
    let (f, r) = (fresh(&sim), resume(&sim));
    let (fresh_12, resume_12) = (reads(&mut sim, f), reads(&mut sim, r));
    assert_eq!(
        (fresh_2, resume_2),
        (fresh_12, resume_12),
        "12 relays cost what 2 do"
    );
    assert!(
        fresh_2 <= 4 && resume_2 <= 4,
        "round trips: {fresh_2} / {resume_2}"
    );
}

/// One edge's crash report (the relay's heartbeat connection there closed,
/// then a probe failed) counts on every edge, until a newer heartbeat says
/// the relay lives after all.
#[test]
fn a_crash_report_loses_the_relay_everywhere_until_a_newer_heartbeat() {
    use edge_signaling::apply::KvStore;
    let mut sim = Sim::new();
    sim.now += 50;
    let report = edge_signaling::model::CrashReport {
        at_ms: sim.now,
        edge: "edge-9".into(),
    };
    sim.kv
        .put(
            &edge_signaling::keys::relay_crashed("a1"),
            &serde_json::to_vec(&report).unwrap(),
        )
        .unwrap();
    sim.now += 10;
    let cfg = sim.cfg.clone();
    let view = |sim: &Sim| {
        let v = Signaling::new(&cfg).relays(sim.now, &sim.kv).unwrap();
        v.into_iter().find(|r| r.id == "a1").unwrap()
    };
    let a1 = view(&sim);
    assert_eq!(a1.failing, Some("relay-lost"));
    assert_eq!(a1.crash_reported_by.as_deref(), Some("edge-9"));
    assert!(!a1.healthy);

    sim.heartbeat("a1", "local-a", 2);
    let a1 = view(&sim);
    assert_eq!((a1.failing, a1.crash_reported_by), (None, None));
    assert!(a1.healthy);
}

/// Loss evidence is about the reporter's own room's relay and counts once
/// per identity: one room full of lossy callers, or reports naming a relay
/// the room does not use, condemn nothing.
#[test]
fn loss_reports_from_one_room_or_about_another_relay_condemn_nothing() {
    let (mut sim, mut seq) = Sim::warm(2_000);
    let mut peers = Vec::new();
    for (conn, who) in [("m1", "m1"), ("m2", "m2"), ("m3", "m3"), ("m4", "m4")] {
        let j = sim.join_near(conn, "one-room", who, "local-a");
        assert_eq!(j["relay"]["id"], "a1");
        peers.push(j["participant"].clone());
    }
    let lossy = |peer: &Value, relay: &str| json!({"type":"stats","relay":relay,"peers":[{"participant":peer,"packetsReceived":160,"packetsLost":40}]});
    for (i, conn) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        sim.send(conn, lossy(&peers[(i + 1) % 4], "a1"));
    }
    // Callers of rooms on a1 reporting about b1, which they do not use.
    for i in 0..3 {
        let conn = format!("o{i}");
        sim.join_near(&conn, &format!("other{i}"), &format!("o{i}"), "local-a");
        sim.send(&conn, lossy(&peers[0], "b1"));
    }
    tick(&mut sim);
    run_for(
        &mut sim,
        250,
        &[("a1", "local-a"), ("b1", "local-b")],
        &mut seq,
    );
    assert!(tick(&mut sim).is_empty(), "a relay was condemned");
    assert_eq!(
        sim.join_near("late", "r-late", "zoe", "local-a")["relay"]["id"],
        "a1"
    );
    assert_eq!(
        sim.join_near("late-b", "r-late-b", "zed", "local-b")["relay"]["id"],
        "b1"
    );
}

/// A relay run's heartbeats are told from another run's by their boot: once
/// a later run has been heard, an earlier run's heartbeat (a replay of a
/// captured one, or one late on the wire) changes nothing, however high
/// its sequence number; within a run, reordered ones are dropped.
#[test]
fn heartbeats_of_an_earlier_run_are_refused_once_a_later_run_is_heard() {
    let (mut sim, _) = Sim::warm(1_000);
    let state = |sim: &Sim| {
        let view = Signaling::new(&sim.cfg).relays(sim.now, &sim.kv).unwrap();
        let a1 = view.into_iter().find(|r| r.id == "a1").unwrap();
        serde_json::to_value(a1.state).unwrap()
    };
    let t0 = sim.now;
    sim.heartbeat_run(
        "a1",
        "local-a",
        500,
        RelayState::Active,
        Load::default(),
        "run-1",
        t0,
    );
    sim.now += 250;
    // The relay restarts: its sequence starts again under a new boot.
    sim.heartbeat_run(
        "a1",
        "local-a",
        1,
        RelayState::Active,
        Load::default(),
        "run-2",
        sim.now,
    );
    // A heartbeat of run 1 sent before that, replayed now, says draining.
    sim.now += 100;
    sim.heartbeat_run(
        "a1",
        "local-a",
        501,
        RelayState::Draining,
        Load::default(),
        "run-1",
        t0 + 10,
    );
    assert_eq!(
        state(&sim),
        "active",
        "an earlier run's heartbeat was taken"
    );
    // Run 2's own heartbeats go on; a reordered one of them is dropped.
    sim.heartbeat_run(
        "a1",
        "local-a",
        3,
        RelayState::Draining,
        Load::default(),
        "run-2",
        sim.now,
    );
    assert_eq!(state(&sim), "draining");
    sim.heartbeat_run(
        "a1",
        "local-a",
        2,
        RelayState::Active,
        Load::default(),
        "run-2",
        sim.now,
    );
    assert_eq!(state(&sim), "draining", "a reordered heartbeat was taken");
}

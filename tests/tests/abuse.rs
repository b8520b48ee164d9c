//! Hostile and broken callers against a real origin (`tern serve`): what
//! one socket, or one address, can make an edge hold or do. Each test
//! fails without the limit it names.

use std::time::{Duration, Instant};

use serde_json::json;
use tern_tests::*;

/// Resident memory of a process we started, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// A joined participant that stops reading while another sends it large
/// signals as fast as the origin takes them: the origin closes its socket
/// once 1 MiB waits for it (its peer's next signal is `unknown_peer`),
/// instead of holding all of it. Without the bound the origin queued
/// everything the sender sent (RSS grew by the ~100 MB sent) and never
/// closed the socket.
#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_does_not_read_is_closed_and_the_origin_holds_little() {
    // The rate limit is the other test's: here the sender may go flat out.
    let origin = Origin::start_full("edge-1", "embedded", None, None, &["--frames-per-sec", "0"]);
    let _relay = start_relay(&origin, "a-1", "region-a");
    origin
        .wait_healthy_relays(1, Duration::from_secs(20))
        .expect("relay heartbeats in");
    let mut alice = Client::connect(&origin.ws_url()).await;
    let a = alice.join("slow", "alice").await;
    let mut bob = Client::connect(&origin.ws_url()).await;
    bob.join("slow", "bob").await;
    let alice_id = a["participant"].as_str().unwrap().to_string();
    let before = rss_kib(origin.proc.pid());

    // From here alice reads nothing.
    let blob = "x".repeat(60 * 1024);
    let frame = json!({"type":"signal","to":alice_id,"data":{"sdp":blob}}).to_string();
    let (mut sent, mut refused) = (0usize, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < 2000 && Instant::now() < deadline {
        bob.send_text(frame.clone()).await;
        sent += 1;
        if let Ok(f) = bob.recv_within(Duration::from_millis(1)).await {
            refused = Some(f);
            break;
        }
    }
    let refused = match refused {
        Some(f) => f,
        None => bob
            .recv_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|_| {
                panic!("alice was never closed: {sent} signals of 60 KiB queued for her")
            }),
    };
    assert_eq!(refused["code"], "unknown_peer", "{refused}");
    let after = rss_kib(origin.proc.pid());
    let sent_mib = sent as u64 * 60 / 1024;
    eprintln!("closed after {sent} signals ({sent_mib} MiB); origin RSS {before} -> {after} KiB");
    // What alice's kernel buffers took is not the origin's; what it queued
    // beyond them is at most 1 MiB. Allow wasm instances and allocator
    // slack a generous 48 MiB.
    assert!(
        after < before + 48 * 1024,
        "origin RSS grew from {before} to {after} KiB while {sent_mib} MiB were sent"
    );

    // Alice reads at last: what got through, then the end of the socket.
    let mut got = 0usize;
    let end = loop {
        match alice.recv_within(Duration::from_secs(10)).await {
            Ok(f) if f["type"] == "signal" => got += 1,
            Ok(f) => assert_eq!(f["type"], "peer-joined", "{f}"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        got < sent,
        "alice got all {sent} signals: nothing was dropped"
    );
    assert!(
        !end.contains("no frame in time"),
        "alice's socket stayed open: {end}"
    );

    // She resumes on a new socket and the room works again.
    let mut alice = Client::connect(&origin.ws_url()).await;
    let token = token("slow", "alice", 600);
    alice
        .send(json!({"type":"join","room":"slow","token":token,"session":a["session"]}))
        .await;
    let resumed = alice.skip_to("joined").await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
}

/// Frames beyond the burst wait their turn: 200 pings past a burst of 100
/// at 100 a second cannot all be answered in under two seconds, though an
/// unlimited origin answers them in milliseconds. Nothing is refused.
#[tokio::test(flavor = "multi_thread")]
async fn frames_beyond_the_rate_wait_and_none_is_lost() {
    let origin = Origin::start_full(
        "edge-1",
        "embedded",
        None,
        None,
        &["--frames-per-sec", "100", "--frame-burst", "100"],
    );
    let mut c = Client::connect(&origin.ws_url()).await;
    let started = Instant::now();
    for id in 0..300 {
        c.send(json!({"type":"ping","id":id})).await;
    }
    for id in 0..300 {
        let f = c
            .recv_within(Duration::from_secs(20))
            .await
            .expect("every pong");
        assert_eq!(f, json!({"type":"pong","id":id}));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "300 pings were answered in {took:?}: faster than 100 a second after a burst of 100"
    );
}

/// A ping's id is echoed, so a long one is refused rather than copied.
#[tokio::test(flavor = "multi_thread")]
async fn a_ping_with_a_long_id_is_refused() {
    let origin = Origin::start("edge-1");
    let mut c = Client::connect(&origin.ws_url()).await;
    c.send(json!({"type":"ping","id":"x".repeat(60 * 1024)}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (&f["type"], &f["code"]),
        (&json!("error"), &json!("bad_request")),
        "{f}"
    );
    c.send(json!({"type":"ping","id":"short"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong","id":"short"}));
}

/// One address may hold `--sockets-per-ip` sockets; one more gets 429
/// before the upgrade, and a closed socket gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_per_address_are_limited() {
    let origin = Origin::start_full("edge-1", "embedded", None, None, &["--sockets-per-ip", "3"]);
    let url = origin.ws_url();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Client::connect(&url).await);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a fourth socket from one address: {:?}", other.map(|_| ())),
    }
    open.pop().unwrap().close().await;
    // The origin notices the close a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("the closed socket's place: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Commands a Redis server has processed so far.
fn redis_commands(port: u16) -> u64 {
    redis_cli(port, &["INFO", "stats"])
        .expect("redis INFO")
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

/// `/v1/relays` and `/healthz` are public; answering each from the store
/// turned a flood of them into a flood of store reads in the lane heartbeats
/// and the tick wait in. Now the directory is read at most every 100 ms:
/// 2,000 requests cost the store about what the same time idle costs.
/// Forged heartbeats are refused before they reach the store or a lane.
#[test]
fn a_flood_of_public_requests_costs_the_store_next_to_nothing() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let origin = Origin::start_with("edge-1", &format!("redis://127.0.0.1:{port}"));
    let _relay = start_relay(&origin, "a-1", "region-a");
    origin
        .wait_healthy_relays(1, Duration::from_secs(20))
        .expect("relay heartbeats in");

    // Control: what the edge's own housekeeping and the relay's heartbeats
    // cost the store over a while with no requests.
    let (c0, t0) = (redis_commands(port), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let idle_per_sec = (redis_commands(port) - c0) as f64 / t0.elapsed().as_secs_f64();

    let (c1, t1) = (redis_commands(port), Instant::now());
    let addr = origin.addr;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for n in 0..250 {
                    let path = if (i + n) % 2 == 0 {
                        "/v1/relays"
                    } else {
                        "/healthz"
                    };
                    let (status, _) = http_get(addr, path).expect("answer");
                    assert_eq!(status, 200, "{path}");
                    let forged = r#"{"id":"a-1","region":"region-a","listeners":[]}"#;
                    let (status, body) = http_post(
                        addr,
                        "/v1/relays/heartbeat",
                        &[("x-tern-signature", "00")],
                        forged.as_bytes(),
                    )
                    .expect("answer");
                    assert_eq!(status, 401, "forged heartbeat: {body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("flood thread");
    }
    let took = t1.elapsed().as_secs_f64();
    let flood = (redis_commands(port) - c1) as f64;
    let idle = idle_per_sec * took;
    eprintln!(
        "2,000 reads and 2,000 forged heartbeats in {took:.1} s: {flood:.0} store commands \
         (idle over the same time: {idle:.0})"
    );
    // One directory read every 100 ms is at most a few commands each:
    // allow 200 commands a second on top of the idle rate. Reading the
    // store per request cost at least one command per request: 2,000.
    assert!(
        flood < idle + 200.0 * took + 200.0,
        "the flood cost {flood:.0} store commands; idle costs {idle:.0} over {took:.1} s"
    );
    assert!(healthy_ids(&origin.relays()).contains(&"a-1".to_string()));
}

/// Join `room` as `who`, near `region` (by the probes the SDK would send).
async fn join_near(c: &mut Client, room: &str, who: &str, region: &str) -> serde_json::Value {
    c.send(json!({"type":"join","room":room,"token":token(room, who, 600),"probes":{region:1.0}}))
        .await;
    c.skip_to("joined").await
}

/// One caller with one token on three sockets claims its audio stalled and
/// that it loses packets on its relay. It is one identity in one room, so
/// it moves nothing: not its own call, not the calls of the room beside
/// it on the same relay, and the relay stays healthy. (Before, it counted
/// as three participants: its own room moved, the relay was suspected
/// fleet-wide and every room on it moved.)
#[tokio::test(flavor = "multi_thread")]
async fn one_caller_on_several_sockets_cannot_move_other_calls() {
    let origin = Origin::start("edge-1");
    let _a = start_relay(&origin, "a-1", "region-a");
    let _b = start_relay(&origin, "b-1", "region-b");
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("both relays heartbeat in");

    let mut alice = Client::connect(&origin.ws_url()).await;
    let mut bob = Client::connect(&origin.ws_url()).await;
    assert_eq!(
        join_near(&mut alice, "bystanders", "alice", "region-a").await["relay"]["id"],
        "a-1"
    );
    join_near(&mut bob, "bystanders", "bob", "region-a").await;
    alice.expect("peer-joined").await;

    let mut mallory = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&origin.ws_url()).await;
        let j = join_near(&mut c, "mine", "mallory", "region-a").await;
        assert_eq!(j["relay"]["id"], "a-1");
        ids.push(j["participant"].clone());
        mallory.push(c);
    }
    for (i, c) in mallory.iter_mut().enumerate() {
        c.send(json!({"type":"stall","relay":"a-1"})).await;
        let peer = &ids[(i + 1) % ids.len()];
        c.send(json!({"type":"stats","relay":"a-1",
            "peers":[{"participant":peer,"packetsReceived":100,"packetsLost":100}]}))
            .await;
    }
    // The loss check runs once a second and the tick acts on its verdict:
    // three seconds cover both several times over.
    let quiet = Duration::from_secs(3);
    alice.expect_silence(quiet).await;
    bob.expect_silence(Duration::from_millis(10)).await;
    for c in &mut mallory {
        // Others' joins arrive as peer-joined; nothing else may.
        while let Ok(f) = c.recv_within(Duration::from_millis(10)).await {
            assert_eq!(f["type"], "peer-joined", "mallory's own call moved: {f}");
        }
    }
    assert!(
        healthy_ids(&origin.relays()).contains(&"a-1".to_string()),
        "one caller's reports condemned the relay: {}",
        origin.relays()
    );
}

/// Run `tern <args>` with `env`, expecting it to refuse to start: its exit
/// status and what it printed.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(bin("tern"));
    cmd.args(args)
        .env_remove("TERN_API_SECRET")
        .env_remove("TERN_RELAY_SECRET")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tern");
    // A process that starts serving never exits by itself: wait a while,
    // then end it (through its handle: never a PID that may be reused).
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("tern's status").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("tern's output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "`tern {}` started (or was killed) instead of refusing: {:?}\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// An empty or short secret signs for anyone who guesses it; every host
/// refuses one: `tern serve` and `tern relay` at start, the Spin component
/// on every request. A `tern serve` on a shared store refuses to invent
/// secrets of its own. (Before, all of these started and served.)
#[test]
fn weak_and_missing_secrets_are_refused_by_every_host() {
    let dir = std::env::temp_dir().join(format!("tern-weak-secrets-{}", std::process::id()));
    let data_dir = dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_tcp_port());
    let serve = ["serve", "--listen", &listen, "--data-dir", data_dir];
    let out = refused_start(
        &serve,
        &[("TERN_API_SECRET", ""), ("TERN_RELAY_SECRET", RELAY_SECRET)],
    );
    assert!(out.contains("TERN_API_SECRET is 0 bytes"), "{out}");
    let out = refused_start(
        &serve,
        &[
            ("TERN_API_SECRET", API_SECRET),
            ("TERN_RELAY_SECRET", "hunter2"),
        ],
    );
    assert!(out.contains("TERN_RELAY_SECRET is 7 bytes"), "{out}");

    let redis = format!("redis://127.0.0.1:{}", free_tcp_port());
    let out = refused_start(
        &[
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            data_dir,
            "--kv",
            &redis,
        ],
        &[],
    );
    assert!(
        out.contains("edges sharing a store must share their secrets"),
        "{out}"
    );

    let relay = format!("127.0.0.1:{}", free_udp_port());
    let out = refused_start(
        &["relay", "--listen", &relay],
        &[("TERN_RELAY_SECRET", "s3cret")],
    );
    assert!(out.contains("TERN_RELAY_SECRET is 6 bytes"), "{out}");

    // The Spin component has no start: it refuses every request instead,
    // and signs nothing with the empty secret.
    let port = free_tcp_port();
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
    let spin_dir = dir.join("spin");
    let child = std::process::Command::new(bin("tern"))
        .arg("spin")
        .arg("--manifest")
        .arg(&manifest)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&spin_dir)
        .env("TERN_API_SECRET", "")
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting tern spin");
    let _spin = Proc {
        child,
        name: "tern spin".into(),
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .expect("tern spin listens");
    let (status, body) = http_post(addr, "/v1/http/connect", &[], b"").expect("an answer");
    assert!(
        status >= 500,
        "connect with an empty API secret: {status} {body}"
    );
    assert!(body.contains("TERN_API_SECRET is 0 bytes"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /v1/calls` with `bearer`: the whole HTTP answer.
fn calls_answer(addr: std::net::SocketAddr, bearer: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// Call records are read with a token of their own: the API secret, which
/// signs room tokens, is refused as their bearer, a weak calls token stops
/// the origin from starting, and without one the calls API is off.
#[test]
fn call_records_need_their_own_read_token() {
    let origin = Origin::start("edge-1");
    let read = |bearer: &str| calls_answer(origin.addr, bearer);
    assert!(
        read(CALLS_TOKEN).starts_with("HTTP/1.1 200"),
        "{}",
        read(CALLS_TOKEN)
    );
    assert!(
        read(API_SECRET).starts_with("HTTP/1.1 401"),
        "the API secret read call records"
    );

    let listen = format!("127.0.0.1:{}", free_tcp_port());
    let dir = std::env::temp_dir().join(format!("tern-calls-token-{}", std::process::id()));
    let out = refused_start(
        &[
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[
            ("TERN_API_SECRET", API_SECRET),
            ("TERN_RELAY_SECRET", RELAY_SECRET),
            ("TERN_CALLS_TOKEN", "letmein"),
        ],
    );
    assert!(out.contains("TERN_CALLS_TOKEN is 7 bytes"), "{out}");

    // Without a calls token the API is off, whatever the bearer.
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let child = std::process::Command::new(bin("tern"))
        .args([
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .env("TERN_API_SECRET", API_SECRET)
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env_remove("TERN_CALLS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting tern serve");
    let _off = Proc {
        child,
        name: "origin without a calls token".into(),
    };
    wait_until(Duration::from_secs(60), || {
        http_get(addr, "/healthz").is_ok()
    })
    .expect("origin healthy");
    let answer = calls_answer(addr, CALLS_TOKEN);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("TERN_CALLS_TOKEN"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Allocate on the TURN relay at `relay` with REST credentials, from a
/// fresh UDP socket: `Ok(())`, or the relay's error code.
fn turn_allocate(relay: std::net::SocketAddr, username: &str, credential: &str) -> Result<(), u16> {
    use edge_relay::stun::{attr, Class, Message, MessageBuilder, Method};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let key = edge_relay::auth::long_term_key(username, "tern", credential);
    let mut nonce: Option<Vec<u8>> = None;
    for tid in 1..=2u8 {
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, [tid; 12]);
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        if let Some(n) = &nonce {
            b.attr(attr::USERNAME, username.as_bytes())
                .attr(attr::REALM, b"tern")
                .attr(attr::NONCE, n)
                .integrity(&key);
        }
        sock.send_to(&b.finish(), relay).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = sock.recv_from(&mut buf).expect("the relay answers");
        let m = Message::parse(&buf[..n]).expect("a STUN answer");
        if m.class == Class::Success {
            return Ok(());
        }
        let code = m
            .get(attr::ERROR_CODE)
            .and_then(attr::decode_error_code)
            .expect("an error code");
        match (code, m.get(attr::NONCE)) {
            (401, Some(n)) if nonce.is_none() => nonce = Some(n.to_vec()),
            _ => return Err(code),
        }
    }
    Err(401)
}

/// One room token is one TURN user, however often it joins: every join
/// gets the same username (the token's expiry and a pseudonym of its
/// identity), so the relay's allocations-per-user quota holds the token to
/// it. (Before, each join minted a fresh username for a fresh participant,
/// and the quota limited nothing: the third allocation below succeeded.)
#[tokio::test(flavor = "multi_thread")]
async fn one_token_is_one_turn_user_held_to_the_relays_quota() {
    let origin = Origin::start("edge-1");
    let _relay = start_relay_with(
        &origin,
        "a-1",
        "region-a",
        &["--max-allocations-per-user", "2"],
    );
    origin
        .wait_healthy_relays(1, Duration::from_secs(20))
        .expect("relay heartbeats in");
    let t = token("quota", "mallory", 600);
    let mut creds = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&origin.ws_url()).await;
        c.send(json!({"type":"join","room":"quota","token":t}))
            .await;
        let j = c.skip_to("joined").await;
        let ice = &j["iceServers"][0];
        let url = ice["urls"][0].as_str().unwrap();
        let addr: std::net::SocketAddr = url
            .trim_start_matches("turn:")
            .split('?')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        creds.push((
            addr,
            ice["username"].as_str().unwrap().to_string(),
            ice["credential"].as_str().unwrap().to_string(),
        ));
        sockets.push(c);
    }
    assert!(
        creds.windows(2).all(|w| w[0].1 == w[1].1),
        "one token, several TURN users: {creds:?}"
    );
    let results: Vec<_> = creds
        .iter()
        .map(|(addr, user, cred)| turn_allocate(*addr, user, cred))
        .collect();
    assert_eq!(results, [Ok(()), Ok(()), Err(486)], "{creds:?}");
}

/// A heartbeat of an earlier run of a relay, signed and fresh enough to
/// pass (as a replay of a captured plaintext one would be), cannot undo
/// what the relay's current run says: posted 50 times over a second while
/// the real relay heartbeats, its `draining` never shows in the directory.
/// (Before, its higher sequence number won until the relay's next beat.)
#[test]
fn an_earlier_runs_heartbeats_cannot_override_the_current_run() {
    let origin = Origin::start("edge-1");
    let _relay = start_relay(&origin, "a-1", "region-a");
    origin
        .wait_healthy_relays(1, Duration::from_secs(20))
        .expect("relay heartbeats in");
    let listener = origin.relays()[0]["listeners"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen_draining = 0;
    for i in 0..50u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let body = json!({
            "id": "a-1", "region": "region-a",
            "listeners": [{"transport": "udp", "address": listener}],
            "state": "draining", "load": {"allocations": 0, "pps": 0},
            "seq": 1_000_000 + i, "sent_at_ms": now - 5_000, "boot": "an-earlier-run",
        })
        .to_string();
        let sig = tern_common::relay::sign(RELAY_SECRET.as_bytes(), body.as_bytes());
        let (status, answer) = http_post(
            origin.addr,
            "/v1/relays/heartbeat",
            &[("x-tern-signature", &sig)],
            body.as_bytes(),
        )
        .expect("an answer");
        assert_eq!(status, 204, "{answer}");
        std::thread::sleep(Duration::from_millis(20));
        if origin.relays()[0]["state"] == "draining" {
            seen_draining += 1;
        }
    }
    assert_eq!(
        seen_draining, 0,
        "the earlier run's draining showed in {seen_draining} of 50 looks"
    );
}

/// `tern gateway` holds browsers to the same per-address limit as an
/// origin: one more socket than `--sockets-per-ip` gets 429 before the
/// upgrade (and the Spin app behind it never sees it).
#[test]
fn the_gateway_limits_sockets_per_address() {
    let app = SpinApp::start();
    let gateway: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let _gw = Proc {
        child: std::process::Command::new(bin("tern"))
            .args(["gateway", "--listen", &gateway.to_string()])
            .args(["--upstream", &format!("{}/v1/http", app.url())])
            .args(["--sockets-per-ip", "2"])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("tern gateway"),
        name: "tern gateway".into(),
    };
    wait_until(Duration::from_secs(30), || {
        http_get(gateway, "/healthz").is_ok_and(|(s, _)| s == 200)
    })
    .expect("gateway healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("ws://{gateway}/v1/signal");
        let _a = Client::connect(&url).await;
        let _b = Client::connect(&url).await;
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
            other => panic!("a third socket from one address: {:?}", other.map(|_| ())),
        }
    });
}

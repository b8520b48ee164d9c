//! Call records over real processes: `tern serve` (embedded store and
//! Redis), `tern relay`, WebSocket clients; records read back through
//! `GET /v1/calls` and `tern calls`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tern_tests::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `tern serve` on a data dir this test owns, so it can be SIGKILLed and
/// started again on the same files.
struct Serve {
    proc: Proc,
    addr: SocketAddr,
}

fn serve(edge: &str, kv: &str, data_dir: &Path) -> Serve {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let child = Command::new(bin("tern"))
        .args(["serve", "--listen", &addr.to_string(), "--edge", edge])
        .args(["--kv", kv])
        .arg("--data-dir")
        .arg(data_dir)
        .env("TERN_API_SECRET", API_SECRET)
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting tern serve");
    let s = Serve {
        proc: Proc {
            child,
            name: format!("origin {edge}"),
        },
        addr,
    };
    // Generous: a debug build compiles the component at start, which takes
    // tens of seconds on a loaded two-core machine.
    wait_until(Duration::from_secs(180), || {
        http_get(addr, "/healthz").is_ok()
    })
    .expect("origin never became healthy");
    s
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tern-calls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// GET with an optional bearer token; status and body.
fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// `GET /v1/calls?<query>` as the app's server would ask.
fn calls(addr: SocketAddr, query: &str) -> Value {
    let (status, body) = get(addr, &format!("/v1/calls?{query}"), Some(API_SECRET));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call"].as_str().unwrap().to_string())
        .collect()
}

fn identities(call: &Value) -> Vec<String> {
    let mut v: Vec<String> = call["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// `tern calls <args>`: stdout, or a panic with stderr.
fn tern_calls(args: &[&str]) -> String {
    let out = Command::new(bin("tern"))
        .arg("calls")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tern calls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn relays_for(addr: SocketAddr) -> (Proc, Proc) {
    // The harness's relay starter wants an `Origin`; only its address matters.
    let start = |id: &str, region: &str| {
        let port = free_udp_port();
        let child = Command::new(bin("tern"))
            .args(["relay", "--id", id, "--region", region])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--signaling", &format!("http://{addr}")])
            .args(["--allow-peer", "127.0.0.0/8"])
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tern relay");
        Proc {
            child,
            name: format!("relay {id}"),
        }
    };
    let r = (start("a-1", "region-a"), start("b-1", "region-b"));
    wait_until(Duration::from_secs(20), || {
        http_get(addr, "/v1/relays")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|v| healthy_ids(&v).len() == 2)
    })
    .expect("both relays heartbeat in");
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_recorded_listed_filtered_paged_and_exported() {
    let dir = temp_dir("list");
    let mut origin = serve("edge-1", "embedded", &dir);
    let _relays = relays_for(origin.addr);
    let ws = format!("ws://{}/v1/signal", origin.addr);

    let t0 = now_ms();
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    let a = alice.join("standup", "alice").await;
    bob.join("standup", "bob").await;
    alice.expect("peer-joined").await;
    // A quality report like the SDK's.
    alice
        .send(
            json!({"type":"stats","relay":a["relay"]["id"],"signalingRtt":2,
            "peers":[{"participant":"nobody","packetsLost":7}]}),
        )
        .await;
    alice.send(json!({"type":"leave"})).await;
    alice.expect("left").await;
    bob.expect("peer-left").await;
    bob.send(json!({"type":"leave"})).await;
    bob.expect("left").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut carol = Client::connect(&ws).await;
    carol.join("retro", "carol").await;

    // Only the app's servers may read records.
    let (status, _) = get(origin.addr, "/v1/calls", None);
    assert_eq!(status, 401);
    let (status, _) = get(origin.addr, "/v1/calls", Some("wrong-secret"));
    assert_eq!(status, 401);

    let all = calls(origin.addr, "");
    assert_eq!(all["calls"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["calls"][0]["room"], "retro", "newest first");
    assert!(all["next_cursor"].is_null());
    let standup = &all["calls"][1];
    assert_eq!(standup["room"], "standup");
    assert_eq!(identities(standup), ["alice", "bob"]);
    assert_eq!(standup["end_reason"], "empty");
    let started = standup["started_ms"].as_u64().unwrap();
    let ended = standup["ended_ms"].as_u64().unwrap();
    assert!(t0 <= started && started <= ended && ended <= between);
    for p in standup["participants"].as_array().unwrap() {
        assert_eq!(p["leave_reason"], "leave");
        assert_eq!(p["edges"], json!(["edge-1"]));
        assert!(p["joined_ms"].as_u64().unwrap() <= p["left_ms"].as_u64().unwrap());
    }
    assert_eq!(standup["relays"], json!([a["relay"]["id"]]));
    assert_eq!(standup["quality"]["reports"], 1);
    let retro = &all["calls"][0];
    assert!(retro["ended_ms"].is_null(), "carol is still in the call");

    // Filters.
    assert_eq!(
        ids(&calls(origin.addr, "room=standup")),
        [standup["call"].as_str().unwrap()]
    );
    assert_eq!(
        ids(&calls(origin.addr, "identity=carol")),
        [retro["call"].as_str().unwrap()]
    );
    assert!(ids(&calls(origin.addr, "identity=mallory")).is_empty());
    assert_eq!(
        ids(&calls(origin.addr, &format!("until={between}"))),
        [standup["call"].as_str().unwrap()]
    );
    assert_eq!(
        ids(&calls(origin.addr, &format!("since={between}"))),
        [retro["call"].as_str().unwrap()],
        "the ended call is over before `since`; the open one is still going"
    );
    assert!(ids(&calls(origin.addr, &format!("since={t0}&room=nowhere"))).is_empty());

    // Pagination: one per page, following the cursor.
    let p1 = calls(origin.addr, "limit=1");
    assert_eq!(ids(&p1), [retro["call"].as_str().unwrap()]);
    let cursor = p1["next_cursor"].as_str().expect("a next page");
    let p2 = calls(origin.addr, &format!("limit=1&cursor={cursor}"));
    assert_eq!(ids(&p2), [standup["call"].as_str().unwrap()]);
    let rest = p2["next_cursor"]
        .as_str()
        .map(|c| ids(&calls(origin.addr, &format!("limit=1&cursor={c}"))))
        .unwrap_or_default();
    assert!(rest.is_empty());
    let (status, _) = get(origin.addr, "/v1/calls?limit=0", Some(API_SECRET));
    assert_eq!(status, 400);

    // `tern calls` reads the store itself (the origin must let go of it).
    origin.proc.kill();
    let d = dir.to_str().unwrap();
    let jsonl = tern_calls(&["--data-dir", d, "--format", "jsonl"]);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["call"], retro["call"]);
    assert_eq!(lines[1]["call"], standup["call"]);
    assert_eq!(identities(&lines[1]), ["alice", "bob"]);

    let csv = tern_calls(&["--data-dir", d, "--format", "csv", "--room", "standup"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("call,room,started,duration,end,identities,relays"));
    let cells: Vec<&str> = rows[1].split(',').collect();
    assert_eq!(cells[0], standup["call"].as_str().unwrap());
    assert_eq!(cells[1], "standup");
    assert_eq!(cells[4], "empty");
    assert_eq!(cells[5], "alice bob");

    let table = tern_calls(&["--data-dir", d, "--identity", "carol"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("CALL") && rows[0].contains("IDENTITIES"));
    assert!(rows[1].starts_with(retro["call"].as_str().unwrap()));
    assert!(rows[1].contains("retro") && rows[1].contains("open") && rows[1].contains("carol"));

    // Retention: ended calls older than the cut go, open ones stay.
    tern_calls(&["--data-dir", d, "--prune-older-than-days", "0"]);
    let left = tern_calls(&["--data-dir", d, "--format", "jsonl"]);
    let left: Vec<Value> = left
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["call"], retro["call"]);
    drop(carol);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_relay_shows_up_in_the_record_as_a_reroute() {
    let dir = temp_dir("reroute");
    let origin = serve("edge-1", "embedded", &dir);
    let (ra, rb) = relays_for(origin.addr);
    tokio::time::sleep(Duration::from_millis(1500)).await; // detector warm-up
    let ws = format!("ws://{}/v1/signal", origin.addr);
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    let a = alice.join("failover", "alice").await;
    bob.join("failover", "bob").await;
    alice.expect("peer-joined").await;
    let victim = a["relay"]["id"].as_str().unwrap().to_string();
    let (mut dead, _alive) = if victim == "a-1" { (ra, rb) } else { (rb, ra) };
    let killed = now_ms();
    dead.kill();
    let f = alice.expect("reroute").await;
    bob.expect("reroute").await;
    let to = f["relay"]["id"].as_str().unwrap();

    let page = calls(origin.addr, "room=failover");
    let call = &page["calls"][0];
    assert_eq!(call["relays"], json!([victim, to]));
    let r = &call["reroutes"][0];
    assert_eq!(r["from"], victim.as_str());
    assert_eq!(r["to"], to);
    assert_eq!(r["reason"], "relay-lost");
    let at = r["at_ms"].as_u64().unwrap();
    let since = r["since_ms"].as_u64().expect("the relay's last heartbeat");
    assert!(since <= killed && killed <= at, "{since} {killed} {at}");
    assert_eq!(r["detection_ms"].as_u64().unwrap(), at - since);
    eprintln!("record: relay silent since {since}, killed {killed}, moved {at}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The join is acknowledged (`joined` arrived), then the origin is SIGKILLed
/// well inside the store's 200 ms group-commit window: the call record's
/// events must be on disk anyway.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_join_survives_sigkill_of_the_embedded_origin() {
    let dir = temp_dir("crash");
    let mut origin = serve("edge-1", "embedded", &dir);
    let _relays = relays_for(origin.addr);
    let ws = format!("ws://{}/v1/signal", origin.addr);
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    alice.join("crash", "alice").await;
    let t = Instant::now();
    bob.join("crash", "bob").await;
    // Right after the acknowledgement: no group commit in between (it runs
    // every 200 ms; the kill lands within a few ms).
    origin.proc.kill();
    eprintln!("origin SIGKILLed {:?} after bob's joined", t.elapsed());
    drop((alice, bob));

    let again = serve("edge-1", "embedded", &dir);
    let page = calls(again.addr, "room=crash");
    // Without the durable commit (group commit only) this fails every
    // time: the acknowledged call is gone after the restart.
    assert_eq!(
        page["calls"].as_array().unwrap().len(),
        1,
        "the acknowledged call was lost: {page}"
    );
    let call = &page["calls"][0];
    assert_eq!(identities(call), ["alice", "bob"], "{page}");
    assert!(call["ended_ms"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_redis_records_survive_an_origin_sigkill_and_tern_calls_reads_them() {
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let kv = format!("redis://127.0.0.1:{port}");
    let (d1, d2) = (temp_dir("redis-1"), temp_dir("redis-2"));
    let mut one = serve("edge-1", &kv, &d1);
    let _relays = relays_for(one.addr);
    let ws = format!("ws://{}/v1/signal", one.addr);
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    alice.join("on-redis", "alice").await;
    bob.join("on-redis", "bob").await;
    bob.send(json!({"type":"leave"})).await;
    bob.expect("left").await;
    one.proc.kill();
    drop((alice, bob));

    // Another edge on the same Redis sees everything that was acknowledged.
    let two = serve("edge-2", &kv, &d2);
    let page = calls(two.addr, "identity=bob");
    let call = &page["calls"][0];
    assert_eq!(call["room"], "on-redis");
    assert_eq!(identities(call), ["alice", "bob"]);
    let bob_rec = call["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == "bob")
        .unwrap();
    assert_eq!(bob_rec["leave_reason"], "leave");

    let jsonl = tern_calls(&["--kv", &kv, "--format", "jsonl", "--room", "on-redis"]);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["call"], call["call"]);
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
}

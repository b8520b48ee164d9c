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
    serve_with(edge, kv, data_dir, &[])
}

/// [`serve`] with extra environment (settings such as the grace period).
fn serve_with(edge: &str, kv: &str, data_dir: &Path, env: &[(&str, &str)]) -> Serve {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let child = Command::new(bin("tern"))
        .args(["serve", "--listen", &addr.to_string(), "--edge", edge])
        .args(["--kv", kv])
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied())
        .env("TERN_API_SECRET", API_SECRET)
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("TERN_CALLS_TOKEN", CALLS_TOKEN)
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
    let (status, body) = get(addr, &format!("/v1/calls?{query}"), Some(CALLS_TOKEN));
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
    let out = tern_calls_as(args, None);
    assert!(
        out.status.success(),
        "tern calls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `tern calls <args>` with `TERN_CALLS_TOKEN` set (or not), whatever it
/// exits with.
fn tern_calls_as(args: &[&str], calls_token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(bin("tern"));
    cmd.arg("calls")
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TERN_CALLS_TOKEN");
    if let Some(s) = calls_token {
        cmd.env("TERN_CALLS_TOKEN", s);
    }
    cmd.output().unwrap()
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

    // Only the app's servers may read records, with the calls token: not
    // with the API secret, which signs room tokens.
    let (status, _) = get(origin.addr, "/v1/calls", None);
    assert_eq!(status, 401);
    let (status, _) = get(origin.addr, "/v1/calls", Some("wrong-secret"));
    assert_eq!(status, 401);
    let (status, _) = get(origin.addr, "/v1/calls", Some(API_SECRET));
    assert_eq!(status, 401, "the API secret reads call records");

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
    let (status, _) = get(origin.addr, "/v1/calls?limit=0", Some(CALLS_TOKEN));
    assert_eq!(status, 400);

    // While the origin runs it holds the embedded store's lock: `tern
    // calls` on the files says so, and reads through the API with --url.
    let d = dir.to_str().unwrap();
    let locked = tern_calls_as(&["--data-dir", d], None);
    assert!(!locked.status.success());
    let why = String::from_utf8_lossy(&locked.stderr);
    assert!(why.contains("--url"), "{why}");
    let url = format!("http://{}", origin.addr);
    let remote = tern_calls_as(&["--url", &url, "--format", "jsonl"], Some(CALLS_TOKEN));
    assert!(remote.status.success(), "{remote:?}");
    let remote = jsonl(&String::from_utf8(remote.stdout).unwrap());
    assert_eq!(remote, all["calls"].as_array().unwrap().clone());
    let one = tern_calls_as(
        &["--url", &url, "--format", "csv", "--identity", "bob"],
        Some(CALLS_TOKEN),
    );
    let csv = String::from_utf8(one.stdout).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(standup["call"].as_str().unwrap()));
    let paged = tern_calls_as(&["--url", &url, "--limit", "1"], Some(CALLS_TOKEN));
    let more = String::from_utf8_lossy(&paged.stderr);
    assert!(more.contains("--cursor"), "{more}");
    let refused = tern_calls_as(&["--url", &url], Some("wrong-secret"));
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("401"), "{why}");
    let refused = tern_calls_as(&["--url", &url], None);
    assert!(!refused.status.success(), "no secret, no records");

    // Without --url `tern calls` reads the store itself once the origin
    // has let go of it.
    origin.proc.kill();
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
    // Queries by the pruned call's room or identity find nothing.
    for filter in [["--room", "standup"], ["--identity", "alice"]] {
        let rest = tern_calls(&[&["--data-dir", d, "--format", "jsonl"][..], &filter[..]].concat());
        assert!(rest.is_empty(), "{filter:?}: {rest}");
    }
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
    // Its call sweep (which lists the whole bucket with SCAN) runs once at
    // start and then not for an hour, so the SCAN count below is the
    // queries' alone.
    let two = serve_with("edge-2", &kv, &d2, &[("TERN_CALL_SWEEP_MS", "3600000")]);
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

    // Reads go through the records' sorted sets, never SCAN (which walks
    // the whole keyspace).
    let id = call["call"].as_str().unwrap();
    let zrange = |set: &str| {
        redis_cli(
            port,
            &["ZRANGE", &format!("tern:idx:default:{set}"), "0", "-1"],
        )
        .unwrap()
    };
    assert!(zrange("call/").contains(id));
    assert_eq!(zrange("call-room/on-redis/"), id);
    assert_eq!(zrange("call-identity/bob/"), id);
    assert!(zrange(&format!("call-event/{id}/")).contains("-join-"));
    // edge-1's relays heartbeated only to edge-1 and are stale by now (how
    // soon depends on the machine's load): give edge-2 its own.
    let _relays2 = relays_for(two.addr);
    let mut ws2 = Client::connect(&format!("ws://{}/v1/signal", two.addr)).await;
    ws2.join("short", "carol").await;
    ws2.send(json!({"type":"leave"})).await;
    ws2.expect("left").await;
    let scans = || scan_calls(port);
    let before = scans();
    assert!(
        before > 0,
        "the counter works: edge-2's first sweep used SCAN"
    );
    let short = calls(two.addr, "room=short");
    assert_eq!(short["calls"][0]["end_reason"], "empty");
    let short_id = short["calls"][0]["call"].as_str().unwrap().to_string();
    assert_eq!(ids(&calls(two.addr, "identity=carol")), [short_id.as_str()]);
    let p1 = calls(two.addr, "limit=1");
    assert_eq!(ids(&p1), [short_id.as_str()], "newest first");
    let c = p1["next_cursor"].as_str().unwrap();
    assert_eq!(ids(&calls(two.addr, &format!("limit=1&cursor={c}"))), [id]);
    assert_eq!(scans(), before, "a query used SCAN");

    // Retention takes the index entries with the record; the open call
    // stays, entries and all.
    tern_calls(&["--kv", &kv, "--prune-older-than-days", "0"]);
    assert!(!zrange("call/").contains(&short_id));
    assert!(zrange("call/").contains(id));
    for set in [
        "call-room/short/".to_string(),
        "call-identity/carol/".to_string(),
        format!("call-event/{short_id}/"),
    ] {
        assert_eq!(zrange(&set), "", "{set} outlived its call");
    }
    let left = redis_cli(
        port,
        &[
            "--scan",
            "--pattern",
            &format!("tern:default:call*{short_id}*"),
        ],
    )
    .unwrap();
    assert_eq!(left, "", "keys of the pruned call remain");
    assert!(ids(&calls(two.addr, "room=short")).is_empty());
    assert_eq!(ids(&calls(two.addr, "")), [id]);
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
}

/// A TCP forwarder between a Redis replica and its primary whose
/// forwarding the test can freeze and cut. Frozen, it holds what it reads
/// instead of passing it on: the primary still counts the replica as
/// connected (the link is up) but its writes do not reach the replica and
/// no acknowledgement comes back. Cut, it drops every connection with what
/// it holds, as if those bytes never left the primary. (SIGSTOP of the
/// replica would not do: whatever the primary sent lands in the stopped
/// replica's socket buffer and is applied when it resumes, even after the
/// primary is dead.)
struct ReplLink {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ReplLink {
    async fn start(primary: u16) -> ReplLink {
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (f, t) = (frozen.clone(), tasks.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", primary)).await else {
                    continue;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let mut t = t.lock().unwrap();
                t.push(tokio::spawn(pump(ur, dw, f.clone())));
                t.push(tokio::spawn(pump(dr, uw, f.clone())));
            }
        });
        tasks.lock().unwrap().push(acceptor);
        ReplLink {
            port,
            frozen,
            tasks,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for ReplLink {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copy `r` to `w`. The freeze is checked between reading and writing, so
/// a read already waiting when the link froze cannot slip a chunk through.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Redis replication is asynchronous: without waiting for the replica, an
/// origin acknowledges a join the replica does not have, and a failover to
/// that replica loses the acknowledged event. With the wait (`tern serve
/// --redis-replica-wait-ms`), `joined` is held while replication stalls
/// and goes out once the replica has the event.
#[tokio::test(flavor = "multi_thread")]
async fn on_redis_an_acknowledged_join_survives_failover_to_the_replica() {
    let (p1, p2, s) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let sdir = temp_dir("failover-sentinel");
    let mut primary = start_redis(p1, None);
    let link = ReplLink::start(p1).await;
    let _replica = start_redis(p2, Some(link.port));
    wait_until(Duration::from_secs(10), || {
        redis_cli(p2, &["INFO", "replication"]).is_ok_and(|i| i.contains("master_link_status:up"))
    })
    .expect("replica syncs");
    // The replica follows the forwarder, not the primary's own address:
    // keep Sentinel from "fixing" that for the length of the test.
    let _sentinel = start_sentinel_with(s, p1, "tern", &sdir, 600_000);
    let kv = format!("redis+sentinel://127.0.0.1:{s}/tern");
    let (d1, d2) = (temp_dir("failover-1"), temp_dir("failover-2"));
    // A wait far longer than the test holds the link frozen, so "held" is
    // not confused with "slow".
    let one = serve_with(
        "edge-1",
        &kv,
        &d1,
        &[("TERN_REDIS_REPLICA_WAIT_MS", "20000")],
    );
    let _relays = relays_for(one.addr);
    let ws = format!("ws://{}/v1/signal", one.addr);
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    alice.join("failover", "alice").await;

    link.freeze(true);
    bob.send(json!({"type":"join","room":"failover","token":token("failover","bob",600)}))
        .await;
    let early = bob.recv_within(Duration::from_secs(2)).await;
    let held = early.is_err();
    if let Ok(f) = &early {
        assert_eq!(f["type"], "joined", "{f}");
        // Acknowledged while only the primary has it: lose the primary now,
        // with the replica never getting what was in flight.
        primary.kill();
        link.cut();
    } else {
        // Replication resumes: the replica acknowledges, the answer goes
        // out; then the primary dies right after it.
        link.freeze(false);
        let t = Instant::now();
        bob.expect("joined").await;
        eprintln!("joined released {:?} after the link thawed", t.elapsed());
        primary.kill();
    }
    let killed = Instant::now();
    wait_until(Duration::from_secs(30), || {
        redis_cli(p2, &["ROLE"]).is_ok_and(|r| r.starts_with("master"))
    })
    .expect("sentinel promotes the replica");
    eprintln!("replica promoted {:?} after the kill", killed.elapsed());
    wait_until(Duration::from_secs(30), || {
        redis_cli(s, &["SENTINEL", "get-master-addr-by-name", "tern"])
            .is_ok_and(|a| a.ends_with(&p2.to_string()))
    })
    .expect("sentinel names the promoted replica");
    // Right after the switch Sentinel may still flag the new primary (a
    // client looking it up then is told there is none): wait until it
    // reports it plainly, as `tern serve` needs at start.
    wait_until(Duration::from_secs(30), || {
        redis_cli(s, &["SENTINEL", "MASTERS"])
            .is_ok_and(|m| m.contains(&format!("port\n{p2}\n")) && m.contains("flags\nmaster\n"))
    })
    .expect("sentinel reports the promoted replica as a healthy primary");
    drop((alice, bob));

    // An origin on the promoted store finds every acknowledged event.
    let two = serve("edge-2", &kv, &d2);
    let page = calls(two.addr, "room=failover");
    assert_eq!(
        page["calls"].as_array().unwrap().len(),
        1,
        "the call was lost: {page}"
    );
    assert_eq!(
        identities(&page["calls"][0]),
        ["alice", "bob"],
        "an acknowledged join was lost in the failover: {page}"
    );
    assert!(
        held,
        "bob's joined went out while no replica could have his join"
    );
    drop(one);
    for d in [&sdir, &d1, &d2] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// How many SCAN commands the Redis on `port` has run.
fn scan_calls(port: u16) -> u64 {
    let stats = redis_cli(port, &["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Both participants' connections die without a `leave` (sockets dropped):
/// after the grace period the timeout sweep, running in the origin's tick
/// with nobody touching the room, has them leave with reason `timeout` and
/// ends the call with reason `timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_participants_vanish_ends_by_timeout() {
    const GRACE_MS: u64 = 1_000;
    let dir = temp_dir("timeout");
    let origin = serve_with(
        "edge-1",
        "embedded",
        &dir,
        &[
            ("TERN_SESSION_GRACE_MS", "1000"),
            ("TERN_CALL_SWEEP_MS", "200"),
        ],
    );
    let _relays = relays_for(origin.addr);
    let ws = format!("ws://{}/v1/signal", origin.addr);
    let mut alice = Client::connect(&ws).await;
    let mut bob = Client::connect(&ws).await;
    let a = alice.join("vanish", "alice").await;
    bob.join("vanish", "bob").await;
    alice.expect("peer-joined").await;

    // Alice's socket dies; Bob, still connected, is told she left once
    // the grace period is over (not before: she might have resumed).
    let dropped = Instant::now();
    drop(alice);
    let left = bob
        .recv_within(Duration::from_millis(GRACE_MS + 10_000))
        .await
        .expect("peer-left after the grace period");
    assert_eq!(left["type"], "peer-left", "{left}");
    assert_eq!(left["participant"], a["participant"]);
    assert!(
        dropped.elapsed() >= Duration::from_millis(GRACE_MS),
        "peer-left after {:?}, inside the grace period",
        dropped.elapsed()
    );

    // Then Bob's dies too, and nobody is left to leave or to touch the room.
    drop(bob);
    let mut call = Value::Null;
    wait_until(Duration::from_secs(20), || {
        call = calls(origin.addr, "room=vanish")["calls"][0].clone();
        !call["ended_ms"].is_null()
    })
    .unwrap_or_else(|_| panic!("the call never ended: {call}"));
    assert_eq!(call["end_reason"], "timeout", "{call}");
    let ps = call["participants"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    for p in ps {
        assert_eq!(p["leave_reason"], "timeout", "{p}");
        let away = p["away"][0].as_u64().expect("its socket drop is recorded");
        let gone = p["left_ms"].as_u64().unwrap();
        assert!(gone >= away + GRACE_MS, "{p}: left {gone} away {away}");
    }
    eprintln!(
        "call ended by timeout {} ms after the last socket dropped",
        call["ended_ms"].as_u64().unwrap()
            - ps.iter()
                .map(|p| p["away"][0].as_u64().unwrap())
                .max()
                .unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Backups and the cold-standby drill, over real `tern` processes: backup →
//! wipe → restore gives the same contents (embedded store and Redis),
//! tampered archives and wrong keys are refused with nothing written, a
//! crash mid-backup never leaves a half backup visible, retention keeps
//! the right set, S3 round trip against a real S3-protocol server (s3s-fs,
//! in this process), and an origin replaced by a standby restored from its
//! backups (RPO/RTO printed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_tests::*;

/// These tests start several debug origins each; on a 2-vCPU machine
/// running them side by side makes origins miss their start-up deadline,
/// so they take turns.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tern-backup-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn s(&self, p: &str) -> String {
        self.join(p).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tern(args: &[&str]) -> Command {
    let mut c = Command::new(bin("tern"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TERN_BACKUP_KEY")
        .env_remove("TERN_BACKUP_TO")
        .env_remove("TERN_KV")
        .stdin(Stdio::null());
    c
}

/// Run; it must succeed. Returns stdout.
fn ok(c: &mut Command) -> String {
    let o = c.output().expect("running tern");
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Run; it must fail. Returns stderr.
fn fails(c: &mut Command) -> String {
    let o = c.output().expect("running tern");
    assert!(!o.status.success(), "{c:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn keygen(file: &Path, id: &str) {
    ok(tern(&["backup", "keygen", "--id", id])
        .arg("--key-file")
        .arg(file));
}

/// Manifests at `dest`, oldest first.
fn list(dest: &str) -> Vec<Value> {
    ok(&mut tern(&["backup", "list", "--json", "--to", dest]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every entry of a backup (verified first), as bucket/key → value.
fn entries(dest: &str, key: &Path, backup: &str) -> BTreeMap<String, Value> {
    ok(tern(&[
        "backup",
        "verify",
        "--entries",
        "--to",
        dest,
        "--backup",
        backup,
    ])
    .arg("--key-file")
    .arg(key))
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        (
            format!(
                "{}/{}",
                v["bucket"].as_str().unwrap(),
                v["key"].as_str().unwrap()
            ),
            v["value"].clone(),
        )
    })
    .collect()
}

/// Back up the embedded store in `data_dir` (no origin running on it).
fn backup_dir(data_dir: &Path, dest: &str, key: &Path) -> String {
    ok(tern(&["backup", "--to", dest])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--key-file")
        .arg(key))
}

fn restore_cmd(data_dir: &Path, dest: &str, key: &Path) -> Command {
    let mut c = tern(&["restore", "--from", dest]);
    c.arg("--data-dir").arg(data_dir).arg("--key-file").arg(key);
    c
}

/// Stop an origin with SIGTERM (it flushes its store) and wait for it.
fn stop(o: &mut Origin) {
    // SAFETY: kill(2) on the PID of a child this test started.
    unsafe { libc::kill(o.proc.pid() as i32, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(o.proc.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited.is_ok(), "origin did not stop on SIGTERM");
}

/// Relays in two regions and three rooms of two callers each: rooms,
/// sessions, connection bindings, relay records and call records in the
/// store. Returns the callers with what `joined` told each.
async fn populate(origin: &Origin) -> (Vec<Proc>, Vec<(Client, Value)>) {
    let relays = vec![
        start_relay(origin, "a-1", "region-a"),
        start_relay(origin, "b-1", "region-b"),
    ];
    origin
        .wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays heartbeat in");
    let mut callers = Vec::new();
    for room in ["r1", "r2", "r3"] {
        for who in ["alice", "bob"] {
            let mut c = Client::connect(&origin.ws_url()).await;
            let j = c.join(room, who).await;
            callers.push((c, j));
        }
    }
    (relays, callers)
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_backup_wipe_restore_gives_identical_contents() {
    let _turn = serial().await;
    let s = Scratch::new("embedded");
    let key = s.join("keys");
    keygen(&key, "k1");
    let mut origin = Origin::start("edge-1");
    let (relays, callers) = populate(&origin).await;
    drop(callers);
    drop(relays);
    stop(&mut origin);

    let dest = s.s("backups");
    let out = backup_dir(&origin.data_dir, &dest, &key);
    assert!(out.contains("snapshot"), "{out}");
    let before = entries(&dest, &key, "latest");
    for prefix in ["default/room/r1", "default/relay/a-1", "default/relays"] {
        assert!(before.contains_key(prefix), "{prefix} missing: {before:?}");
    }
    assert!(
        before
            .keys()
            .filter(|k| k.starts_with("default/session/"))
            .count()
            >= 6
    );

    // Wipe: a brand-new data dir. Restore, then back the result up again.
    let restored = s.join("restored");
    let out = ok(&mut restore_cmd(&restored, &dest, &key));
    assert!(out.contains(&format!("{} entries", before.len())), "{out}");
    let dest2 = s.s("backups-2");
    backup_dir(&restored, &dest2, &key);
    assert_eq!(entries(&dest2, &key, "latest"), before);

    // A second restore into the now non-empty store is refused…
    let err = fails(&mut restore_cmd(&restored, &dest, &key));
    assert!(err.contains("not empty"), "{err}");
    // …unless forced.
    ok(restore_cmd(&restored, &dest, &key).arg("--force"));
}

/// Every key under `tern:` with its value; a sorted set (the call-record
/// indexes, which a restore rebuilds) as its members.
fn redis_contents(port: u16) -> BTreeMap<String, String> {
    let keys = redis_cli(port, &["--scan", "--pattern", "tern:*"]).unwrap();
    keys.lines()
        .filter(|k| !k.is_empty())
        .map(|k| {
            let v = match redis_cli(port, &["TYPE", k]).unwrap().as_str() {
                "zset" => format!(
                    "zset: {}",
                    redis_cli(port, &["ZRANGE", k, "0", "-1"]).unwrap()
                ),
                _ => redis_cli(port, &["GET", k]).unwrap(),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_backup_wipe_restore_gives_identical_contents() {
    let _turn = serial().await;
    let s = Scratch::new("redis");
    let key = s.join("keys");
    keygen(&key, "k1");
    let port = free_tcp_port();
    let _redis = start_redis(port, None);
    let url = format!("redis://127.0.0.1:{port}");
    let mut origin = Origin::start_with("edge-1", &url);
    let (relays, callers) = populate(&origin).await;
    drop(callers);
    drop(relays);
    stop(&mut origin);
    let before = redis_contents(port);
    assert!(before.len() >= 10, "{before:?}");
    assert!(
        before.values().any(|v| v.starts_with("zset: ")),
        "the call records' index sets are there: {before:?}"
    );

    let dest = s.s("backups");
    let out = ok(tern(&["backup", "--kv", &url, "--to", &dest])
        .arg("--key-file")
        .arg(&key));
    assert!(out.contains("per-key"), "{out}");
    redis_cli(port, &["FLUSHALL"]).unwrap();
    assert!(redis_contents(port).is_empty());
    ok(tern(&["restore", "--kv", &url, "--from", &dest])
        .arg("--key-file")
        .arg(&key));
    assert_eq!(redis_contents(port), before);

    let err = fails(
        tern(&["restore", "--kv", &url, "--from", &dest])
            .arg("--key-file")
            .arg(&key),
    );
    assert!(err.contains("not empty"), "{err}");
}

/// A store with a few keys, backed up once. Returns (scratch, key file,
/// destination, the backup's manifest).
async fn one_backup(name: &str) -> (Scratch, PathBuf, String, Value) {
    let s = Scratch::new(name);
    let key = s.join("keys");
    keygen(&key, "k1");
    let mut origin = Origin::start("edge-1");
    let relay = start_relay(&origin, "a-1", "region-a");
    origin
        .wait_healthy_relays(1, Duration::from_secs(20))
        .expect("relay heartbeats in");
    let mut c = Client::connect(&origin.ws_url()).await;
    c.join("room", "alice").await;
    c.close().await;
    drop(relay);
    stop(&mut origin);
    let dest = s.s("backups");
    backup_dir(&origin.data_dir, &dest, &key);
    let m = list(&dest).pop().unwrap();
    (s, key, dest, m)
}

fn flip_byte(file: &Path, at: usize) {
    let mut b = std::fs::read(file).unwrap();
    b[at] ^= 0x40;
    std::fs::write(file, b).unwrap();
}

/// The store in `dir` holds nothing: a restore without --force succeeds.
fn assert_empty_store(dir: &Path, dest: &str, key: &Path) {
    ok(&mut restore_cmd(dir, dest, key));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_archives_and_wrong_keys_are_refused_with_nothing_written() {
    let _turn = serial().await;
    let (s, key, dest, m) = one_backup("tamper").await;
    let archive = Path::new(&dest).join(m["archive"].as_str().unwrap());
    let manifest = Path::new(&dest).join(format!("{}.manifest.json", m["id"].as_str().unwrap()));
    let target = s.join("target");

    // A flipped byte: the manifest's SHA-256 catches it.
    let pristine = std::fs::read(&archive).unwrap();
    flip_byte(&archive, pristine.len() / 2);
    let err = fails(&mut restore_cmd(&target, &dest, &key));
    assert!(err.contains("does not match its manifest"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    // The manifest edited to match the altered archive: the GCM tag fails.
    let altered = std::fs::read(&archive).unwrap();
    let mut mv: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let sha = {
        use std::fmt::Write as _;
        let d = sha256(&altered);
        d.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    mv["archive_sha256"] = json!(sha);
    std::fs::write(&manifest, serde_json::to_vec(&mv).unwrap()).unwrap();
    let err = fails(&mut restore_cmd(&target, &dest, &key));
    assert!(err.contains("authentication failed"), "{err}");
    std::fs::write(&archive, &pristine).unwrap();
    mv["archive_sha256"] = m["archive_sha256"].clone();
    std::fs::write(&manifest, serde_json::to_vec(&mv).unwrap()).unwrap();

    // Same key id, other key bytes: authentication fails.
    let wrong = s.join("wrong");
    std::fs::write(&wrong, format!("k1 {}\n", "ab".repeat(32))).unwrap();
    let err = fails(&mut restore_cmd(&target, &dest, &wrong));
    assert!(err.contains("authentication failed"), "{err}");
    // A keyring without the archive's key id.
    let other = s.join("other");
    keygen(&other, "k2");
    let err = fails(&mut restore_cmd(&target, &dest, &other));
    assert!(err.contains("`k1`, which is not in the keyring"), "{err}");

    // Nothing was written by any of those; the intact backup restores.
    assert_empty_store(&target, &dest, &key);

    // Rotation: a new key on top seals new backups; the old one still
    // opens old backups from the same key file.
    keygen(&key, "k2");
    let fresh = s.join("fresh");
    ok(&mut restore_cmd(&fresh, &dest, &key));
}

/// SHA-256 without pulling a crate into the tests: `sha256sum`.
fn sha256(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    let hexs = String::from_utf8(out.stdout).unwrap();
    (0..32)
        .map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_backup_leaves_the_previous_backup_and_no_half_one() {
    let _turn = serial().await;
    let (s, key, dest, first) = one_backup("crash").await;
    let data = s.join("data");
    ok(&mut restore_cmd(&data, &dest, &key));

    // Crash between archive and manifest (injected).
    let o = tern(&["backup", "--to", &dest])
        .arg("--data-dir")
        .arg(&data)
        .arg("--key-file")
        .arg(&key)
        .env("TERN_BACKUP_TEST_CRASH_BEFORE_MANIFEST", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let archives = std::fs::read_dir(&dest)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tbk")
        })
        .count();
    assert_eq!(archives, 2, "the crashed backup's archive is there");
    let l = list(&dest);
    assert_eq!(l.len(), 1, "only the complete backup is listed");
    assert_eq!(l[0]["id"], first["id"]);
    let o = tern(&["backup", "list", "--to", &dest]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("incomplete"));
    let target = s.join("t1");
    let out = ok(&mut restore_cmd(&target, &dest, &key));
    assert!(out.contains(first["id"].as_str().unwrap()), "{out}");

    // SIGKILL at several points of a longer backup: whatever is listed
    // afterwards verifies, and the first backup is always still there.
    let big = s.join("big");
    ok(tern(&["bench", "backup", "--records", "20000"])
        .arg("--dir")
        .arg(&big));
    for delay_ms in [30u64, 120, 400, 900] {
        let mut child = tern(&["backup", "--to", &dest, "--no-prune"])
            .arg("--data-dir")
            .arg(big.join("src"))
            .arg("--key-file")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let l = list(&dest);
        assert_eq!(l[0]["id"], first["id"]);
        for m in &l {
            ok(tern(&["backup", "verify", "--to", &dest, "--backup"])
                .arg(m["id"].as_str().unwrap())
                .arg("--key-file")
                .arg(&key));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_and_one_per_day() {
    let _turn = serial().await;
    let (s, key, dest, _) = one_backup("retention").await;
    let data = s.join("data");
    ok(&mut restore_cmd(&data, &dest, &key));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ok(tern(&["backup", "--to", &dest, "--no-prune"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--key-file")
            .arg(&key));
        ids.push(list(&dest).last().unwrap()["id"].clone());
    }
    assert_eq!(list(&dest).len(), 5);
    // keep-last 2, and the newest of today (already among them).
    ok(tern(&[
        "backup",
        "--to",
        &dest,
        "--keep-last",
        "2",
        "--keep-daily",
        "1",
        "--keep-weekly",
        "0",
    ])
    .arg("--data-dir")
    .arg(&data)
    .arg("--key-file")
    .arg(&key));
    let l = list(&dest);
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l[0]["id"], ids[3]);
    let files = std::fs::read_dir(&dest).unwrap().count();
    assert_eq!(files, 4, "archives of pruned backups are deleted too");
}

/// An S3-protocol server (s3s-fs) on a loopback port, serving `root`, with
/// one access key.
async fn start_s3(root: &Path) -> SocketAddr {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(
        "tern-test",
        "tern-test-secret",
    ));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let svc = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_round_trip_against_a_real_s3_server() {
    let _turn = serial().await;
    let (s, key, local, _) = one_backup("s3").await;
    let data = s.join("data");
    ok(&mut restore_cmd(&data, &local, &key));
    let root = s.join("s3root");
    std::fs::create_dir_all(root.join("tern-backups")).unwrap();
    let addr = start_s3(&root).await;
    let endpoint = format!("http://{addr}");
    let dest = "s3://tern-backups/site-1";
    let with_s3 = |c: &mut Command| {
        c.args(["--s3-endpoint", &endpoint])
            .env("AWS_ACCESS_KEY_ID", "tern-test")
            .env("AWS_SECRET_ACCESS_KEY", "tern-test-secret")
            .env("AWS_REGION", "us-east-1");
    };
    // tern runs as a child process while this test's runtime serves S3.
    let run = |mut c: Command| {
        tokio::task::spawn_blocking(move || {
            let o = c.output().unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
    };
    let mut c = tern(&["backup", "--to", dest]);
    c.arg("--data-dir").arg(&data).arg("--key-file").arg(&key);
    with_s3(&mut c);
    let (okay, out, err) = run(c).await.unwrap();
    assert!(okay, "{out}{err}");

    // The objects are really on the server's disk, under the prefix.
    let stored: Vec<String> = std::fs::read_dir(root.join("tern-backups/site-1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(stored.iter().any(|n| n.ends_with(".tbk")), "{stored:?}");
    assert!(stored.iter().any(|n| n.ends_with(".manifest.json")));

    let mut c = tern(&["backup", "list", "--json", "--to", dest]);
    with_s3(&mut c);
    let (okay, out, err) = run(c).await.unwrap();
    assert!(okay, "{err}");
    assert_eq!(out.lines().count(), 1);

    let target = s.join("from-s3");
    let mut c = restore_cmd(&target, dest, &key);
    with_s3(&mut c);
    let (okay, out, err) = run(c).await.unwrap();
    assert!(okay, "{out}{err}");
    // Same contents as the local backup of the same store.
    let check = s.s("check");
    backup_dir(&target, &check, &key);
    assert_eq!(
        entries(&check, &key, "latest"),
        entries(&local, &key, "latest")
    );
}

/// The cold-standby drill: origin A serves calls and backs up every second;
/// A is SIGKILLed and its data dir deleted; B restores the latest backup
/// into a fresh data dir and starts on A's address; relays re-register by
/// themselves and callers resume their sessions on B.
#[tokio::test(flavor = "multi_thread")]
async fn cold_standby_takes_over_from_the_latest_backup() {
    let _turn = serial().await;
    let s = Scratch::new("drill");
    let key = s.join("keys");
    keygen(&key, "site-1");
    let backups = s.s("backups");
    let key_s = key.display().to_string();
    let sched = [
        "--backup-to",
        backups.as_str(),
        "--backup-every",
        "1s",
        "--backup-key-file",
        key_s.as_str(),
    ];
    let mut a = Origin::start_full("edge-1", "embedded", None, None, &sched);
    let (_relays, callers) = populate(&a).await;
    let joined_at = now_ms();
    // The next scheduled backup after the last join holds every call.
    wait_until(Duration::from_secs(10), || {
        list(&backups)
            .iter()
            .any(|m| m["created_ms"].as_u64().unwrap() > joined_at)
    })
    .expect("a backup after the joins");

    // Disaster: A dies and its disk is gone.
    let addr = a.addr;
    a.proc.kill();
    let killed = Instant::now();
    let killed_ms = now_ms();
    std::fs::remove_dir_all(&a.data_dir).unwrap();
    drop(callers);
    let last = list(&backups).pop().unwrap();
    let rpo_ms = killed_ms - last["created_ms"].as_u64().unwrap();

    // Standby: restore the latest backup, start on A's address.
    let b_dir = s.join("b-data");
    ok(&mut restore_cmd(&b_dir, &backups, &key));
    let restored = killed.elapsed();
    let b_backups = s.s("b-backups");
    let b_sched = [
        "--backup-to",
        b_backups.as_str(),
        "--backup-every",
        "1s",
        "--backup-key-file",
        key_s.as_str(),
    ];
    let b = Origin::start_full("edge-1", "embedded", Some(addr), Some(b_dir), &b_sched);
    let started = killed.elapsed();
    b.wait_healthy_relays(2, Duration::from_secs(20))
        .expect("relays re-register with B by themselves");
    let relays_back = killed.elapsed();

    // Every caller resumes its session on B: same participant, same room.
    let before = entries(&backups, &key, last["id"].as_str().unwrap());
    let sessions: Vec<(String, String, String, String)> = before
        .iter()
        .filter(|(k, _)| k.starts_with("default/session/"))
        .map(|(k, v)| {
            let v: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
            (
                k["default/session/".len()..].to_string(),
                v["room"].as_str().unwrap().to_string(),
                v["participant"].as_str().unwrap().to_string(),
                v["identity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sessions.len(), 6);
    let mut resumed = Vec::new();
    for (session, room, participant, who) in &sessions {
        let mut c = Client::connect(&b.ws_url()).await;
        c.send(json!({"type":"join","room":room,"token":token(room, who, 600),"session":session}))
            .await;
        let j = c.expect("joined").await;
        assert_eq!(j["participant"].as_str().unwrap(), participant);
        assert_eq!(j["resumed"], true);
        resumed.push(c);
    }
    let rto = killed.elapsed();

    // Every key of the last backup is in B, as B's own first backup shows.
    // Excepted are keys the system itself replaces: connection bindings
    // (resuming makes new ones) and relay-room markers (until a relay's
    // first heartbeat reaches B its restored record looks stale, and B's
    // sweep may move the room to the relay that heartbeated first).
    wait_until(Duration::from_secs(10), || !list(&b_backups).is_empty()).unwrap();
    let after = entries(&b_backups, &key, "latest");
    let replaced = ["default/conn/", "default/relay-room/"];
    for k in before
        .keys()
        .filter(|k| !replaced.iter().any(|p| k.starts_with(p)))
    {
        assert!(after.contains_key(k), "{k} lost in the takeover");
    }
    eprintln!(
        "DRILL cold standby: RPO {rpo_ms} ms (last backup before the kill; interval 1 s), \
         RTO {} ms (restore done {} ms, B listening {} ms, relays healthy {} ms, \
         6 sessions resumed {} ms); {} entries restored",
        rto.as_millis(),
        restored.as_millis(),
        started.as_millis(),
        relays_back.as_millis(),
        rto.as_millis(),
        before.len()
    );
    assert!(rpo_ms < 2_500, "RPO {rpo_ms} ms with a 1 s interval");
}

//! Harness for Tern's integration tests: starts real `tern` processes (origin
//! and relays) on loopback and speaks protocol v1 to them over WebSocket like
//! a client would. Used by the tests in tests/tests/.

pub mod conformance;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub mod http_transport;
pub use http_transport::HttpClient;
pub mod cloudflare;
pub mod spin_up;

pub const API_SECRET: &str = "test-api-secret";
pub const RELAY_SECRET: &str = "test-relay-secret";

/// A binary built by this workspace (`cargo build` first; the README's test
/// command does). Found next to the test executable's target directory.
pub fn bin(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/, binaries like tern-drill from
    // target/<profile>/: look next to the executable, then one level up.
    let exe = std::env::current_exe().expect("exe path");
    let here = exe.parent().expect("exe dir");
    [here.join(name), here.parent().unwrap_or(here).join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not built; run `cargo build --workspace` first"))
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (by its PID, which we started) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGKILL: the process gets no chance to say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An origin started with `tern serve` on a fresh data dir.
pub struct Origin {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Origin {
    pub fn start(edge: &str) -> Origin {
        Origin::start_with(edge, "embedded")
    }

    /// An origin on the given store (`embedded`, `redis://…`,
    /// `redis+sentinel://…`).
    pub fn start_with(edge: &str, kv: &str) -> Origin {
        Origin::start_full(edge, kv, None, None, &[])
    }

    /// An origin on a given address (default: a free port) and data dir
    /// (default: a fresh one, which must not exist yet), with extra `tern
    /// serve` flags. A standby that takes over a dead origin's address
    /// and a restored data dir is started this way.
    pub fn start_full(
        edge: &str,
        kv: &str,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        extra: &[&str],
    ) -> Origin {
        let addr =
            listen.unwrap_or_else(|| format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap());
        let port = addr.port();
        let data_dir = data_dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("tern-test-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            d
        });
        let child = Command::new(bin("tern"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--edge",
                edge,
                "--kv",
                kv,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("TERN_API_SECRET", API_SECRET)
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("RUST_LOG", "warn,tern::app=info")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tern serve");
        let o = Origin {
            proc: Proc {
                child,
                name: format!("origin {edge}"),
            },
            addr,
            data_dir,
        };
        wait_until(Duration::from_secs(30), || {
            http_get(addr, "/healthz").is_ok()
        })
        .expect("origin never became healthy");
        o
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/signal", self.addr)
    }

    pub fn relays(&self) -> Value {
        relay_directory(self.addr)
    }

    /// Wait until the directory lists `n` healthy relays.
    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `GET /v1/relays` of the signaling host at `addr`.
pub fn relay_directory(addr: SocketAddr) -> Value {
    let (_, body) = http_get(addr, "/v1/relays").expect("GET /v1/relays");
    serde_json::from_str(&body).expect("relays JSON")
}

/// Wait until the host at `addr` lists `n` healthy relays.
pub fn wait_healthy_relays_at(addr: SocketAddr, n: usize, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, || healthy_ids(&relay_directory(addr)).len() >= n)
}

pub fn healthy_ids(relays: &Value) -> Vec<String> {
    relays
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["healthy"] == true)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A relay started with `tern relay`, heartbeating into `origin`.
pub fn start_relay(origin: &Origin, id: &str, region: &str) -> Proc {
    start_relay_with(origin, id, region, &[])
}

/// [`start_relay`] with extra flags (e.g. `--standby`).
pub fn start_relay_with(origin: &Origin, id: &str, region: &str, extra: &[&str]) -> Proc {
    start_relay_at(origin.addr, id, region, extra)
}

/// A relay heartbeating into the signaling endpoint at `signaling` (an
/// origin or a `tern spin` app).
pub fn start_relay_at(signaling: SocketAddr, id: &str, region: &str, extra: &[&str]) -> Proc {
    let port = free_udp_port();
    let child = Command::new(bin("tern"))
        .args(["relay", "--id", id, "--region", region])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--signaling", &format!("http://{signaling}")])
        .args(["--allow-peer", "127.0.0.0/8"])
        // Every simulated caller comes from 127.0.0.1: the per-source-IP
        // Allocate limit (meant for the internet) would throttle a drill.
        .args(["--allocate-rate-per-ip", "0"])
        .args(extra)
        .env("TERN_RELAY_SECRET", RELAY_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting tern relay");
    Proc {
        child,
        name: format!("relay {id}"),
    }
}

/// The Spin app of the repository's spin.toml, served by `tern spin` (the
/// same .wasm Spin would run) on a fresh embedded store or on `kv`.
pub struct SpinApp {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl SpinApp {
    pub fn start() -> SpinApp {
        SpinApp::start_with("embedded", &[])
    }

    pub fn start_with(kv: &str, extra: &[&str]) -> SpinApp {
        let port = free_tcp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let data_dir =
            std::env::temp_dir().join(format!("tern-spin-test-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let child = Command::new(bin("tern"))
            .arg("spin")
            .arg("--manifest")
            .arg(&manifest)
            .args(["--listen", &addr.to_string(), "--kv", kv])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("TERN_API_SECRET", API_SECRET)
            .env("TERN_RELAY_SECRET", RELAY_SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting tern spin");
        let app = SpinApp {
            proc: Proc {
                child,
                name: "tern spin".into(),
            },
            addr,
            data_dir,
        };
        wait_until(Duration::from_secs(60), || {
            http_get(addr, "/healthz").is_ok()
        })
        .expect("tern spin never became healthy");
        app
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn relays(&self) -> Value {
        relay_directory(self.addr)
    }

    /// Wait until the directory lists `n` healthy relays.
    pub fn wait_healthy_relays(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_healthy_relays_at(self.addr, n, timeout)
    }
}

impl Drop for SpinApp {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("condition not met within {timeout:?}")
}

/// Minimal HTTP/1.1 GET over a plain socket (keeps the harness free of an
/// HTTP client stack). Returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    if status >= 400 {
        bail!("HTTP {status}: {body}");
    }
    Ok((status, body))
}

/// Minimal HTTP/1.1 POST (see [`http_get`]); returns status and body
/// whatever the status.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP head"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

pub(crate) fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A room token signed with the test API secret.
pub fn token(room: &str, identity: &str, exp_offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    edge_signaling::token::mint(
        API_SECRET.as_bytes(),
        &edge_signaling::token::Claims {
            room: room.into(),
            sub: identity.into(),
            exp: (now + exp_offset_secs) as u64,
        },
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A scripted protocol v1 client over whichever transport its URL names:
/// `ws://…/v1/signal` a WebSocket, `http://…/v1/http` the HTTP transport
/// ([`http_transport::HttpClient`]), as the browser SDK chooses.
pub struct Client {
    transport: Transport,
}

enum Transport {
    Ws(Box<Ws>),
    Http(http_transport::HttpClient),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let transport = match url.strip_suffix("/v1/http") {
            Some(base) if url.starts_with("http") => {
                Transport::Http(http_transport::HttpClient::connect(base).await)
            }
            _ => {
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("WebSocket connect");
                Transport::Ws(Box::new(ws))
            }
        };
        Client { transport }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, s: String) {
        match &mut self.transport {
            Transport::Ws(ws) => ws.send(Message::Text(s.into())).await.expect("send"),
            Transport::Http(h) => h.send_text(s).await,
        }
    }

    /// A binary WebSocket message; over HTTP, a body that is not UTF-8.
    pub async fn send_binary(&mut self, b: Vec<u8>) {
        match &mut self.transport {
            Transport::Ws(ws) => ws.send(Message::Binary(b.into())).await.expect("send"),
            Transport::Http(h) => {
                let a = h.send_raw(&b).await.expect("send");
                assert_eq!(a.status, 200, "send: {a:?}");
            }
        }
    }

    /// Next text frame as JSON, within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let ws = match &mut self.transport {
            Transport::Ws(ws) => ws,
            Transport::Http(h) => return h.recv_within(timeout).await,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .context("no frame in time")?
                .ok_or_else(|| anyhow!("socket closed"))??;
            if let Message::Text(t) = msg {
                return Ok(serde_json::from_str(&t)?);
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("expected a frame")
    }

    /// Receive until a frame of `ty` arrives (others are returned too).
    pub async fn expect(&mut self, ty: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["type"], ty, "expected {ty}, got {f}");
        f
    }

    /// Skip frames until one of type `ty` arrives (within 5 s overall).
    pub async fn skip_to(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self
                .recv_within(left)
                .await
                .unwrap_or_else(|e| panic!("no {ty} frame: {e}"));
            if f["type"] == ty {
                return f;
            }
        }
    }

    /// Assert nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(f) = self.recv_within(d).await {
            panic!("expected no frame, got {f}");
        }
    }

    pub async fn join(&mut self, room: &str, identity: &str) -> Value {
        self.send(
            serde_json::json!({"type":"join","room":room,"token":token(room, identity, 600)}),
        )
        .await;
        self.expect("joined").await
    }

    /// Close the connection without `leave` (a dropped socket).
    pub async fn close(self) {
        match self.transport {
            Transport::Ws(mut ws) => {
                let _ = ws.as_mut().close(None).await;
            }
            Transport::Http(h) => h.close().await,
        }
    }
}

/// A `redis-server` on a loopback port, no persistence, optionally a replica.
pub fn start_redis(port: u16, replica_of: Option<u16>) -> Proc {
    // Its own working dir: a replica's full sync writes an RDB file there.
    let dir = std::env::temp_dir().join(format!("tern-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir)
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
    if let Some(p) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (./dev test installs it)");
    let p = Proc {
        child,
        name: format!("redis {port}"),
    };
    wait_until(Duration::from_secs(10), || {
        redis_cli(port, &["PING"]).is_ok_and(|s| s == "PONG")
    })
    .expect("redis-server did not start");
    p
}

/// A `redis-sentinel` watching the primary on `primary_port` as `service`,
/// with fast failure detection for tests.
pub fn start_sentinel(port: u16, primary_port: u16, service: &str, dir: &std::path::Path) -> Proc {
    start_sentinel_with(port, primary_port, service, dir, 5000)
}

/// [`start_sentinel`] with a given `failover-timeout`. Besides bounding a
/// failover, it is how long Sentinel leaves a replica that follows another
/// address than the primary's before it points it back at the primary
/// ("+fix-slave-config"): a test that puts a forwarder between the two
/// needs it longer than the test.
pub fn start_sentinel_with(
    port: u16,
    primary_port: u16,
    service: &str,
    dir: &std::path::Path,
    failover_timeout_ms: u64,
) -> Proc {
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} {failover_timeout_ms}\n\
             sentinel parallel-syncs {service} 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("redis-sentinel must be installed (./dev test installs it)");
    let p = Proc {
        child,
        name: format!("sentinel {port}"),
    };
    wait_until(Duration::from_secs(10), || {
        redis_cli(port, &["PING"]).is_ok_and(|s| s == "PONG")
    })
    .expect("redis-sentinel did not start");
    p
}

/// Run `redis-cli -p port args…` and return its trimmed output.
pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("redis-cli failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

//! A scripted protocol v1 client over the HTTP transport (docs/protocol.md
//! "HTTP transport"), shaped like the WebSocket [`crate::Client`]:
//! `connect`, `send`, `recv_within`, `expect`, `join`, `close`, so a
//! scenario can run over either transport.
//!
//! It behaves as the protocol asks of a client: one frame in flight at a
//! time, one long poll outstanding (a background task), every frame handled
//! once in sequence order (send and poll answers may overlap), and each
//! request acknowledges what was handled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the sending side and the poller share.
struct Shared {
    /// Where requests go. Any instance of a serverless app can answer any
    /// request of any connection, so a test may move a client (as a load
    /// balancer would) with [`HttpClient::switch_to`].
    addr: SocketAddr,
    /// Highest sequence number handed to the reader: the `ack` of the next
    /// request.
    handled: u64,
    /// Why the connection is gone (a 404 `unknown_connection`), once it is.
    closed: Option<String>,
}

pub struct HttpClient {
    conn: String,
    shared: Arc<Mutex<Shared>>,
    frames: mpsc::UnboundedReceiver<Value>,
    tx: mpsc::UnboundedSender<Value>,
    poller: tokio::task::JoinHandle<()>,
}

/// A response: status and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// `http://host:port[/…]` → host:port.
fn addr_of(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let host = rest.split('/').next().unwrap();
    host.parse().expect("host:port")
}

/// One HTTP/1.1 request on its own socket (keeps the harness free of an
/// HTTP client stack).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<HttpAnswer> {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP head in {text:?}"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line"))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            crate::http::dechunk(body)
        } else {
            body.to_string()
        };
        Ok::<_, anyhow::Error>(HttpAnswer {
            status,
            headers: head.to_string(),
            body,
        })
    };
    tokio::time::timeout(timeout, go)
        .await
        .context("HTTP request timed out")?
}

/// Hand the frames of a `{"frames":[…],"last":L}` answer that are new to
/// the reader, in order, and advance `handled`.
fn take_frames(shared: &Mutex<Shared>, tx: &mpsc::UnboundedSender<Value>, answer: &Value) {
    let (Some(frames), Some(last)) = (answer["frames"].as_array(), answer["last"].as_u64()) else {
        return;
    };
    let mut s = shared.lock().unwrap();
    let first = last + 1 - frames.len() as u64;
    for (i, f) in frames.iter().enumerate() {
        let seq = first + i as u64;
        if seq > s.handled {
            let _ = tx.send(f.clone());
            s.handled = seq;
        }
    }
}

impl HttpClient {
    /// `POST /v1/http/connect` on the app at `url` (`http://host:port`) and
    /// start long-polling.
    pub async fn connect(url: &str) -> HttpClient {
        let addr = addr_of(url);
        let a = request(
            addr,
            "POST",
            "/v1/http/connect",
            b"",
            Duration::from_secs(10),
        )
        .await
        .expect("connect");
        assert_eq!(a.status, 200, "connect: {a:?}");
        let conn = a.json().unwrap()["conn"]
            .as_str()
            .expect("conn id")
            .to_string();
        let shared = Arc::new(Mutex::new(Shared {
            addr,
            handled: 0,
            closed: None,
        }));
        let (tx, frames) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll_loop(conn.clone(), shared.clone(), tx.clone()));
        HttpClient {
            conn,
            shared,
            frames,
            tx,
            poller,
        }
    }

    /// Send this connection's next requests (and polls) to another instance
    /// of the app at `url`; the connection and its mailbox stay the same.
    pub fn switch_to(&mut self, url: &str) {
        self.shared.lock().unwrap().addr = addr_of(url);
    }

    fn addr(&self) -> SocketAddr {
        self.shared.lock().unwrap().addr
    }

    /// The server-minted connection id.
    pub fn conn(&self) -> &str {
        &self.conn
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, s: String) {
        let a = self.send_raw(s.as_bytes()).await.expect("send");
        assert_eq!(a.status, 200, "send: {a:?}");
    }

    /// `POST /v1/http/send` with any body; frames in the answer go to the
    /// reader. The answer is returned for status checks.
    pub async fn send_raw(&mut self, body: &[u8]) -> anyhow::Result<HttpAnswer> {
        let ack = self.shared.lock().unwrap().handled;
        let path = format!("/v1/http/send?conn={}&ack={ack}", self.conn);
        let a = request(self.addr(), "POST", &path, body, Duration::from_secs(10)).await?;
        if a.status == 200 {
            take_frames(&self.shared, &self.tx, &a.json()?);
        }
        Ok(a)
    }

    /// Next frame within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        match tokio::time::timeout(timeout, self.frames.recv()).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => bail!("client gone"),
            Err(_) => match self.shared.lock().unwrap().closed.clone() {
                Some(why) => bail!("connection closed: {why}"),
                None => bail!("no frame in time"),
            },
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("expected a frame")
    }

    /// The next frame, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["type"], ty, "expected {ty}, got {f}");
        f
    }

    /// Assert nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(f) = self.recv_within(d).await {
            panic!("expected no frame, got {f}");
        }
    }

    pub async fn join(&mut self, room: &str, identity: &str) -> Value {
        self.send(
            serde_json::json!({"type":"join","room":room,"token":crate::token::token(room, identity, 600)}),
        )
        .await;
        self.expect("joined").await
    }

    /// Why the server forgot this connection, once a poll saw a 404.
    pub fn closed(&self) -> Option<String> {
        self.shared.lock().unwrap().closed.clone()
    }

    /// `POST /v1/http/close`: as if the socket dropped.
    pub async fn close(self) {
        self.poller.abort();
        let path = format!("/v1/http/close?conn={}", self.conn);
        let _ = request(self.addr(), "POST", &path, b"", Duration::from_secs(10)).await;
    }

    /// Stop polling and sending without telling the server (a client that
    /// vanished). Returns the connection id.
    pub fn abandon(self) -> String {
        self.poller.abort();
        self.conn.clone()
    }
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn poll_loop(conn: String, shared: Arc<Mutex<Shared>>, tx: mpsc::UnboundedSender<Value>) {
    loop {
        let (addr, ack) = {
            let s = shared.lock().unwrap();
            (s.addr, s.handled)
        };
        let path = format!("/v1/http/poll?conn={conn}&ack={ack}");
        match request(addr, "GET", &path, b"", Duration::from_secs(30)).await {
            Ok(a) if a.status == 200 => match a.json() {
                Ok(v) => take_frames(&shared, &tx, &v),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Ok(a) if a.status == 404 => {
                shared.lock().unwrap().closed = Some(a.body);
                return;
            }
            // A server restart or a transient failure: try again shortly.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

//! `tern gateway`: browser WebSockets in front of a signaling host that only
//! speaks protocol v1's HTTP transport (a Spin app; Spin has no inbound
//! WebSockets).
//!
//! Each browser socket becomes one HTTP-transport connection upstream: text
//! messages are sent one at a time, in order (`POST …/send`), and a long poll
//! (`GET …/poll`) brings the frames other participants cause. Both answers
//! carry numbered frames from the connection's mailbox and may overlap, so a
//! frame goes to the browser only if its number is past the last one sent.
//! The gateway keeps no room state: if it dies, browsers reconnect (to it or
//! another gateway) and resume their sessions like after any dropped socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edge_signaling::ErrorCode;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tern_common::relay::SIGNATURE_HEADER;
use tokio::sync::Mutex;

use crate::edge::connections::local_error;
use crate::edge::routes::{self, TokenQueryResult};
use crate::edge::socket_limits::{FrameRate, IpSlot, SocketLimits, SocketsPerIp};
use crate::edge::websocket::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, READ_BUFFER_BYTES};

/// What a gateway needs; `tern gateway` builds it from its flags.
pub struct GatewayConfig {
    /// Address for browsers (WebSocket at /v1/signal, the demo and the SDK).
    pub listen: SocketAddr,
    /// The HTTP transport of the signaling host (`https://host/v1/http`).
    pub upstream: String,
    /// Sign `GET /v1/dev/token` tokens with this (development only).
    pub dev_secret: Option<Vec<u8>>,
    /// Frames per socket and sockets per address, as an origin applies them.
    pub limits: SocketLimits,
}

struct Bridge {
    http: reqwest::Client,
    /// `…/v1/http`, no trailing slash.
    upstream: String,
    /// The host's relay directory and heartbeat endpoint, next to `upstream`.
    relays: String,
    dev_secret: Option<Vec<u8>>,
    limits: SocketLimits,
    sockets_per_ip: Arc<SocketsPerIp>,
}

/// How long a request upstream may take beyond what the protocol lets it
/// wait (a long poll's `poll_ms`); later than that, the upstream is gone.
const UPSTREAM_GRACE: Duration = Duration::from_secs(5);

/// Serve browsers until the process ends.
pub async fn run(cfg: GatewayConfig) -> anyhow::Result<()> {
    let upstream = cfg.upstream.trim_end_matches('/').to_string();
    let relays = match upstream.rsplit_once('/') {
        Some((base, _)) => format!("{base}/relays"),
        None => anyhow::bail!("--upstream must be a URL like https://host/v1/http"),
    };
    let dev_secret = cfg.dev_secret;
    let bridge = Arc::new(Bridge {
        http: reqwest::Client::builder()
            .connect_timeout(UPSTREAM_GRACE)
            .build()
            .context("HTTP client")?,
        upstream,
        relays,
        dev_secret,
        limits: cfg.limits,
        sockets_per_ip: Default::default(),
    });
    let app = Router::new()
        .route("/v1/signal", get(upgrade))
        .route("/v1/relays", get(relay_directory))
        .route("/v1/relays/heartbeat", post(heartbeat))
        .route("/v1/dev/token", get(dev_token))
        .route("/healthz", get(healthz))
        .merge(routes::static_routes())
        .with_state(bridge.clone());
    let listener = edge_relay::server::listen_stream(cfg.listen)
        .with_context(|| format!("listen on {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, upstream = %bridge.upstream, "gateway up");
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await.context("serve")
}

async fn upgrade(
    State(bridge): State<Arc<Bridge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = bridge.limits.sockets_per_ip;
    let Some(slot) = bridge.sockets_per_ip.admit(peer.ip(), max) else {
        tracing::warn!(ip = %peer.ip(), "refusing a socket: too many open from this address");
        let msg = format!("{max} sockets are open from this address; that is the limit");
        return (StatusCode::TOO_MANY_REQUESTS, msg).into_response();
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(bridge, socket, slot))
}

#[derive(Deserialize)]
struct Connected {
    conn: String,
    poll_ms: u64,
}

#[derive(Deserialize)]
struct Frames {
    frames: Vec<Value>,
    last: u64,
}

/// Why a connection upstream ended.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("the signaling host forgot this connection")]
    Forgotten,
    #[error("the signaling host answered {0}")]
    Status(StatusCode),
    #[error("the signaling host is unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
}

/// The browser side of one connection: its socket writer and the number of
/// the last mailbox frame written to it (what we acknowledge upstream).
struct Downstream {
    sink: SplitSink<WebSocket, Message>,
    acked: u64,
}

impl Downstream {
    /// Write the frames of an answer the browser has not seen yet, in order.
    async fn forward(&mut self, answer: Frames) -> Result<(), axum::Error> {
        let first = (answer.last + 1).saturating_sub(answer.frames.len() as u64);
        for (i, frame) in answer.frames.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq <= self.acked {
                continue;
            }
            self.acked = seq;
            self.sink
                .send(Message::Text(frame.to_string().into()))
                .await?;
        }
        Ok(())
    }
}

struct Connection {
    bridge: Arc<Bridge>,
    conn: String,
    poll: Duration,
    down: Mutex<Downstream>,
}

impl Connection {
    fn url(&self, what: &str, acked: Option<u64>) -> String {
        let mut url = format!("{}/{what}?conn={}", self.bridge.upstream, self.conn);
        if let Some(n) = acked {
            url.push_str(&format!("&ack={n}"));
        }
        url
    }

    async fn acked(&self) -> u64 {
        self.down.lock().await.acked
    }

    /// One client frame upstream; its answer (and anything else waiting in
    /// the mailbox) down to the browser.
    async fn send(&self, frame: String) -> Result<(), UpstreamError> {
        let url = self.url("send", Some(self.acked().await));
        let res = self
            .bridge
            .http
            .post(url)
            .header("content-type", "text/plain")
            .body(frame)
            .timeout(UPSTREAM_GRACE)
            .send()
            .await?;
        self.take(res).await
    }

    /// Long polls until the upstream or the browser goes away.
    async fn poll_forever(&self) -> UpstreamError {
        loop {
            let url = self.url("poll", Some(self.acked().await));
            let res = self
                .bridge
                .http
                .get(url)
                .timeout(self.poll + UPSTREAM_GRACE)
                .send()
                .await;
            let taken = match res {
                Ok(res) => self.take(res).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = taken {
                return e;
            }
        }
    }

    async fn take(&self, res: reqwest::Response) -> Result<(), UpstreamError> {
        match res.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(UpstreamError::Forgotten),
            s => return Err(UpstreamError::Status(s)),
        }
        let answer: Frames = res.json().await?;
        // A browser that went away is noticed by the read loop; nothing to do here.
        let _ = self.down.lock().await.forward(answer).await;
        Ok(())
    }

    /// Frames the gateway answers itself (the same error frames the core
    /// would produce), straight to the browser.
    async fn local(&self, frames: Vec<crate::host::Delivery>) {
        let mut down = self.down.lock().await;
        for f in frames {
            let _ = down.sink.send(Message::Text(f.frame.into())).await;
        }
    }

    async fn close_upstream(&self) {
        let _ = self
            .bridge
            .http
            .post(self.url("close", None))
            .timeout(UPSTREAM_GRACE)
            .send()
            .await;
    }
}

async fn connect(bridge: &Bridge) -> Result<Connected, UpstreamError> {
    let res = bridge
        .http
        .post(format!("{}/connect", bridge.upstream))
        .timeout(UPSTREAM_GRACE)
        .send()
        .await?;
    if res.status() != StatusCode::OK {
        return Err(UpstreamError::Status(res.status()));
    }
    Ok(res.json().await?)
}

async fn serve(bridge: Arc<Bridge>, socket: WebSocket, _slot: IpSlot) {
    let mut rate = FrameRate::new(&bridge.limits, std::time::Instant::now());
    let (mut sink, mut stream) = socket.split();
    let connected = match connect(&bridge).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a connection upstream");
            // 1011: the browser reconnects (to us or another edge) and resumes.
            let _ = sink
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1011,
                    reason: "signaling host unavailable".into(),
                })))
                .await;
            return;
        }
    };
    let conn = Arc::new(Connection {
        bridge,
        conn: connected.conn,
        poll: Duration::from_millis(connected.poll_ms),
        down: Mutex::new(Downstream { sink, acked: 0 }),
    });
    let poller = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.poll_forever().await })
    };
    tokio::pin!(poller);

    // Frames from one socket go upstream strictly in order, one at a time.
    let ended: Option<UpstreamError> = loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            e = &mut poller => break e.ok(),
        };
        let result = match msg {
            Some(Ok(Message::Text(text))) if text.len() > MAX_FRAME_BYTES => {
                // Never forwarded: the host would refuse it too.
                conn.local(local_error(
                    &conn.conn,
                    ErrorCode::FrameTooLarge,
                    format!(
                        "frame is {} bytes; the limit is {MAX_FRAME_BYTES}",
                        text.len()
                    ),
                ))
                .await;
                Ok(())
            }
            Some(Ok(Message::Text(text))) => {
                // Over the rate the frame waits, and the socket is not read
                // meanwhile (see crate::edge::socket_limits).
                if let Some(wait) = rate.take(std::time::Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                conn.send(text.to_string()).await
            }
            Some(Ok(Message::Binary(_))) => {
                conn.local(local_error(
                    &conn.conn,
                    ErrorCode::BadRequest,
                    "binary frames are not part of protocol v1; send JSON text".into(),
                ))
                .await;
                Ok(())
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
            Some(Ok(_)) => Ok(()), // ping/pong are answered by the WebSocket layer
        };
        if let Err(e) = result {
            break Some(e);
        }
    };
    poller.abort();
    match ended {
        // The browser left: tell the host now so peers see it away at once.
        None => conn.close_upstream().await,
        Some(e) => {
            tracing::info!(conn = %conn.conn, error = %e, "upstream connection ended");
            conn.close_upstream().await;
            let mut down = conn.down.lock().await;
            let _ = down
                .sink
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1011,
                    reason: "signaling host connection ended".into(),
                })))
                .await;
        }
    }
}

/// The SDK probes regions from the directory next to its signaling URL, so
/// the gateway passes the host's directory through.
async fn relay_directory(State(bridge): State<Arc<Bridge>>) -> Response {
    pass(bridge.http.get(&bridge.relays).timeout(UPSTREAM_GRACE)).await
}

/// Relays may heartbeat through the gateway; the host checks the signature.
async fn heartbeat(State(bridge): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = bridge
        .http
        .post(format!("{}/heartbeat", bridge.relays))
        .timeout(UPSTREAM_GRACE)
        .body(body);
    if let Some(sig) = headers.get(SIGNATURE_HEADER) {
        req = req.header(SIGNATURE_HEADER, sig.as_bytes());
    }
    pass(req).await
}

/// Status, content type and body of the host's answer, as they are.
async fn pass(req: reqwest::RequestBuilder) -> Response {
    let res = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return routes::error(StatusCode::BAD_GATEWAY, "unavailable", e.to_string());
        }
    };
    let status = res.status();
    let ctype = res.headers().get("content-type").cloned();
    match res.bytes().await {
        Ok(body) => {
            let mut out = (status, body).into_response();
            if let Some(c) = ctype {
                out.headers_mut().insert("content-type", c);
            }
            out
        }
        Err(e) => routes::error(StatusCode::BAD_GATEWAY, "unavailable", e.to_string()),
    }
}

async fn dev_token(State(bridge): State<Arc<Bridge>>, q: TokenQueryResult) -> Response {
    match &bridge.dev_secret {
        Some(secret) => routes::mint_dev_token(secret, q),
        None => routes::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "dev tokens are off (tern gateway --dev-tokens)",
        ),
    }
}

/// The gateway is healthy when its signaling host is.
async fn healthz(State(bridge): State<Arc<Bridge>>) -> Response {
    let url = format!("{}/healthz", bridge.relays.trim_end_matches("/v1/relays"));
    pass(bridge.http.get(url).timeout(UPSTREAM_GRACE)).await
}

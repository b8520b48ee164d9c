//! Scripted protocol v1 clients, one module per transport: a WebSocket
//! ([`Client`] speaks it itself) and the HTTP transport ([`http`]).
pub mod http;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::token::token;
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A scripted protocol v1 client over whichever transport its URL names:
/// `ws://…/v1/signal` a WebSocket, `http://…/v1/http` the HTTP transport
/// ([`http::HttpClient`]), as the browser SDK chooses.
pub struct Client {
    transport: Transport,
}

enum Transport {
    Ws(Box<Ws>),
    Http(http::HttpClient),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let transport = match url.strip_suffix("/v1/http") {
            Some(base) if url.starts_with("http") => {
                Transport::Http(http::HttpClient::connect(base).await)
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

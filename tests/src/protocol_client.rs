//! What a protocol v1 client does, whatever carries the frames: the
//! WebSocket [`crate::Client`] and the HTTP-transport
//! [`crate::HttpClient`] both implement it, so a conformance scenario is
//! written once and run against every host (origin over WebSocket, Spin
//! over HTTP, …).

use std::time::Duration;

use serde_json::Value;

// Used only generically (`impl ProtocolClient`), never as `dyn`, so the
// futures' Send-ness is the implementor's (both are Send).
#[allow(async_fn_in_trait)]
pub trait ProtocolClient {
    /// Send one client frame as JSON text.
    async fn send_text(&mut self, s: String);

    /// The next server frame within `timeout`.
    async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value>;

    /// Let the server see this connection drop (a closed socket, `close`
    /// over HTTP).
    async fn disconnect(self);

    async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await
    }

    async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("expected a frame")
    }

    /// The next frame, which must be of type `ty`.
    async fn expect(&mut self, ty: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["type"], ty, "expected {ty}, got {f}");
        f
    }

    /// Assert nothing arrives for `d`.
    async fn expect_silence(&mut self, d: Duration) {
        if let Ok(f) = self.recv_within(d).await {
            panic!("expected no frame, got {f}");
        }
    }

    /// `join` with a fresh test token; returns `joined`.
    async fn join(&mut self, room: &str, identity: &str) -> Value {
        self.send(
            serde_json::json!({"type":"join","room":room,"token":crate::token(room, identity, 600)}),
        )
        .await;
        self.expect("joined").await
    }
}

impl ProtocolClient for crate::Client {
    async fn send_text(&mut self, s: String) {
        crate::Client::send_text(self, s).await
    }
    async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        crate::Client::recv_within(self, timeout).await
    }
    async fn disconnect(self) {
        self.close().await
    }
}

impl ProtocolClient for crate::HttpClient {
    async fn send_text(&mut self, s: String) {
        crate::HttpClient::send_text(self, s).await
    }
    async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        crate::HttpClient::recv_within(self, timeout).await
    }
    async fn disconnect(self) {
        self.close().await
    }
}

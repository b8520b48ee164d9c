//! Process-wide state of an origin and the calls into the component.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use crate::component::{Delivery, HeartbeatError, SignalingHost};
use crate::gateway::Connections;
use crate::store::EmbeddedStore;

pub struct App {
    pub host: Arc<SignalingHost>,
    pub store: EmbeddedStore,
    pub conns: Connections,
    /// This edge's name.
    pub edge: String,
    /// Random per process start; keeps connection ids unique across restarts.
    pub boot: String,
    pub signaling: edge_signaling::Config,
    /// `GET /v1/dev/token` is served only under `tern up`.
    pub dev_tokens: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

impl App {
    /// Run the component for one frame on a blocking thread (wasm calls and
    /// store transactions are synchronous).
    pub async fn handle_frame(&self, conn: &str, frame: String) -> Vec<Delivery> {
        let host = self.host.clone();
        let conn = conn.to_string();
        let mut entropy = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut entropy);
        let c = conn.clone();
        let r =
            tokio::task::spawn_blocking(move || host.handle_frame(now_ms(), &c, &frame, &entropy))
                .await;
        match r {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                // A trap or host failure: the frame had no effect. Say so.
                tracing::error!(conn = %conn, error = %e, "signaling component failed");
                internal_error(&conn)
            }
            Err(e) => {
                tracing::error!(conn = %conn, error = %e, "signaling task failed");
                internal_error(&conn)
            }
        }
    }

    pub async fn handle_disconnect(&self, conn: &str) -> Vec<Delivery> {
        let host = self.host.clone();
        let conn = conn.to_string();
        match tokio::task::spawn_blocking(move || host.handle_disconnect(now_ms(), &conn)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "signaling component failed on disconnect");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    pub async fn handle_heartbeat(
        &self,
        body: Vec<u8>,
        signature: String,
    ) -> anyhow::Result<Result<(), HeartbeatError>> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.handle_heartbeat(now_ms(), &body, &signature))
            .await?
    }
}

fn internal_error(conn: &str) -> Vec<Delivery> {
    let err = edge_signaling::error::FrameError::new(
        edge_signaling::ErrorCode::Unavailable,
        "signaling failed to handle this frame; it had no effect",
    );
    edge_signaling::Outcome::error(conn, &err)
        .deliveries
        .into_iter()
        .map(|d| Delivery {
            conn: d.conn,
            frame: d.frame,
        })
        .collect()
}

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
    /// Run the component for one frame. The call is synchronous and short
    /// (single-digit to tens of µs: `tern bench signaling`), so it runs on
    /// the async worker itself; a hop to the blocking pool would cost more
    /// than the call.
    pub fn handle_frame(&self, conn: &str, frame: &str) -> Vec<Delivery> {
        let mut entropy = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut entropy);
        match self.host.handle_frame(now_ms(), conn, frame, &entropy) {
            Ok(d) => d,
            Err(e) => {
                // A trap or host failure: the frame had no effect. Say so.
                tracing::error!(conn = %conn, error = %e, "signaling component failed");
                internal_error(conn)
            }
        }
    }

    pub fn handle_disconnect(&self, conn: &str) -> Vec<Delivery> {
        match self.host.handle_disconnect(now_ms(), conn) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "signaling component failed on disconnect");
                Vec::new()
            }
        }
    }

    pub fn handle_heartbeat(
        &self,
        body: &[u8],
        signature: &str,
    ) -> anyhow::Result<Result<(), HeartbeatError>> {
        self.host.handle_heartbeat(now_ms(), body, signature)
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

//! Glue between the wasm component model and the sans-IO signaling core.
//!
//! One artifact, two entry points:
//! - `tern:signaling/handler`: origin's WebSocket gateway calls the core per
//!   frame, handing in time and entropy (this file).
//! - `wasi:http/incoming-handler`: hosts without inbound WebSockets (Spin)
//!   send HTTP requests; the HTTP transport (docs/protocol.md) keeps each
//!   connection's server frames in a mailbox in the KV ([`http`]).
//!
//! Both run the same core through [`core`]; all state is in
//! `wasi:keyvalue` (bucket `default`). Settings come from environment
//! variables ([`config`]).

mod bindings;
mod bucket;
mod config;
mod core;
mod http;

use bindings::exports::tern::signaling::handler::{Delivery, Guest, HeartbeatError};

struct Component;
bindings::export!(Component with_types_in bindings);

fn deliveries(d: Vec<edge_signaling::Delivery>) -> Vec<Delivery> {
    d.into_iter()
        .map(|d| Delivery {
            conn: d.conn,
            frame: d.frame,
        })
        .collect()
}

impl Guest for Component {
    fn handle_frame(now_ms: u64, conn: String, frame: String, entropy: Vec<u8>) -> Vec<Delivery> {
        deliveries(core::frame(now_ms, &conn, &frame, &entropy))
    }

    fn handle_disconnect(now_ms: u64, conn: String) -> Vec<Delivery> {
        // Nobody is left to tell about a failure on a closed connection.
        deliveries(core::disconnect(now_ms, &conn).unwrap_or_default())
    }

    fn handle_tick(now_ms: u64) -> Vec<Delivery> {
        // On failure the next tick tries again.
        deliveries(core::tick(now_ms).unwrap_or_default())
    }

    fn handle_heartbeat(
        now_ms: u64,
        body: Vec<u8>,
        signature: String,
    ) -> Result<(), HeartbeatError> {
        core::heartbeat(now_ms, &body, &signature).map_err(|e| match e {
            core::HeartbeatRefusal::Rejected(m) => HeartbeatError::Rejected(m),
            core::HeartbeatRefusal::Unavailable(m) => HeartbeatError::Unavailable(m),
        })
    }
}

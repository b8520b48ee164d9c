//! The relay directory endpoints, as an origin serves them: `GET
//! /v1/relays`, `POST /v1/relays/heartbeat` and `GET /healthz`.

use edge_signaling::kv::{KvError, KvRead};
use edge_signaling::Signaling;
use tern_common::relay::SIGNATURE_HEADER;

use super::{transport, Reply, Request};
use crate::bucket::Bucket;
use crate::{config, core};

/// Heartbeats are small; anything bigger is not one.
const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;

fn directory(now: u64) -> Result<Vec<edge_signaling::directory::RelayView>, KvError> {
    let cfg = config::load()?;
    let bucket = Bucket::open()?;
    Signaling::new(&cfg).relays(now, &bucket)
}

fn store_error(e: KvError) -> Reply {
    Reply::json(
        503,
        serde_json::json!({"code": "unavailable", "message": e.to_string()}).to_string(),
    )
}

/// `GET /v1/relays`: the same JSON as an origin's.
pub fn relays(now: u64) -> Reply {
    match directory(now) {
        Ok(v) => Reply::json(200, serde_json::to_vec(&v).expect("serializes")),
        Err(e) => store_error(e),
    }
}

/// `POST /v1/relays/heartbeat`: 204, 401 (signature, body or clock) or 503.
pub fn heartbeat(now: u64, req: &Request) -> Reply {
    let refuse = |status: u16, code: &str, m: String| {
        Reply::json(
            status,
            serde_json::json!({"code": code, "message": m}).to_string(),
        )
    };
    if req.body.len() > MAX_HEARTBEAT_BYTES {
        return refuse(413, "too_large", "heartbeats are small".into());
    }
    let Some(sig) = req.header(SIGNATURE_HEADER) else {
        return refuse(401, "bad_signature", format!("missing {SIGNATURE_HEADER}"));
    };
    match core::heartbeat(now, &req.body, &sig) {
        Ok(()) => Reply::empty(204),
        Err(core::HeartbeatRefusal::Rejected(m)) => {
            eprintln!("tern: heartbeat refused: {m}");
            refuse(401, "rejected", m)
        }
        Err(core::HeartbeatRefusal::Unavailable(m)) => refuse(503, "unavailable", m),
    }
}

/// `GET /healthz`: `connections` counts this deployment's open HTTP
/// connections (they live in the shared store, not in a process).
pub fn healthz(now: u64) -> Reply {
    let counted = directory(now).and_then(|relays| {
        let conns = Bucket::open()?.list(transport::SEEN_PREFIX)?.len();
        Ok((relays, conns))
    });
    match counted {
        Ok((relays, conns)) => Reply::json(
            200,
            serde_json::json!({
                "status": "ok",
                "edge": config::load().map(|c| c.edge).unwrap_or_default(),
                "connections": conns,
                "relays_healthy": relays.iter().filter(|r| r.healthy).count(),
            })
            .to_string(),
        ),
        Err(e) => store_error(e),
    }
}

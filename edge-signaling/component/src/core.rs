//! Running the sans-IO core against the bucket, with the CAS retry rule.
//! Shared by both entry points (the `tern:signaling/handler` export and the
//! HTTP transport), so they cannot drift apart.

use edge_signaling::apply;
use edge_signaling::error::FrameError;
use edge_signaling::kv::KvError;
use edge_signaling::signaling::HeartbeatFail;
use edge_signaling::{Delivery, ErrorCode, Outcome, Signaling};

use crate::bucket::Bucket;
use crate::config;

/// An `unavailable` error frame for `conn`: the frame had no effect.
pub fn unavailable(conn: &str, e: &KvError) -> Vec<Delivery> {
    error(conn, ErrorCode::Unavailable, e.to_string())
}

/// An error frame for `conn`, exactly as the core would write it.
pub fn error(conn: &str, code: ErrorCode, message: String) -> Vec<Delivery> {
    Outcome::error(conn, &FrameError::new(code, message)).deliveries
}

/// One client frame. Client errors come back as error frames to `conn`.
pub fn frame(now_ms: u64, conn: &str, text: &str, entropy: &[u8]) -> Vec<Delivery> {
    let result = config::load().and_then(|cfg| {
        let mut bucket = Bucket::open()?;
        let s = Signaling::new(&cfg);
        apply::run(&mut bucket, |kv| {
            s.handle_frame(now_ms, conn, text, entropy, kv)
        })
    });
    match result {
        Ok(Some(o)) => o.deliveries,
        Ok(None) => unavailable(conn, &KvError("room kept changing; try again".into())),
        Err(e) => unavailable(conn, &e),
    }
}

/// Connection `conn` went away without `leave`.
pub fn disconnect(now_ms: u64, conn: &str) -> Result<Vec<Delivery>, KvError> {
    let cfg = config::load()?;
    let mut bucket = Bucket::open()?;
    let s = Signaling::new(&cfg);
    let mut failed = None;
    let o = apply::run(&mut bucket, |kv| {
        s.handle_disconnect(now_ms, conn, kv).unwrap_or_else(|e| {
            failed = Some(e);
            Outcome::default()
        })
    })?;
    match (failed, o) {
        (Some(e), _) => Err(e),
        (None, Some(o)) => Ok(o.deliveries),
        (None, None) => Err(KvError("room kept changing".into())),
    }
}

/// The reroute sweep and the call timeout sweep.
pub fn tick(now_ms: u64) -> Result<Vec<Delivery>, KvError> {
    let cfg = config::load()?;
    let mut bucket = Bucket::open()?;
    edge_signaling::reroute::tick(&Signaling::new(&cfg), now_ms, &mut bucket)
}

/// Why a heartbeat was not recorded.
#[derive(Debug)]
pub enum HeartbeatRefusal {
    /// Bad signature, malformed body or clock skew.
    Rejected(String),
    /// The store failed or kept conflicting.
    Unavailable(String),
}

/// A relay heartbeat (POST body and its signature header).
pub fn heartbeat(now_ms: u64, body: &[u8], signature: &str) -> Result<(), HeartbeatRefusal> {
    let unavailable = |e: KvError| HeartbeatRefusal::Unavailable(e.to_string());
    let cfg = config::load().map_err(unavailable)?;
    let mut bucket = Bucket::open().map_err(unavailable)?;
    let s = Signaling::new(&cfg);
    let mut refused = None;
    let applied = apply::run(&mut bucket, |kv| {
        match s.handle_heartbeat(now_ms, body, signature, kv) {
            Ok(o) => o,
            Err(e) => {
                refused = Some(e);
                Outcome::default()
            }
        }
    })
    .map_err(unavailable)?;
    match refused {
        Some(HeartbeatFail::Invalid(e)) => Err(HeartbeatRefusal::Rejected(e.to_string())),
        Some(HeartbeatFail::Kv(e)) => Err(HeartbeatRefusal::Unavailable(e.to_string())),
        None if applied.is_none() => Err(HeartbeatRefusal::Unavailable(
            "relay index kept changing".into(),
        )),
        None => Ok(()),
    }
}

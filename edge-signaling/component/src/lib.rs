//! Glue between the wasm component model and the sans-IO signaling core.
//!
//! Reads come from and writes go to `wasi:keyvalue` (bucket `default`), so
//! whatever backs the host's store (origin's redb or Redis, Spin's KV) is the
//! single source of truth. Settings come from environment variables, which
//! both origin and Spin (`[component.x] environment`) can set.

use edge_signaling::apply::{self, KvStore};
use edge_signaling::kv::{KvError, KvRead};
use edge_signaling::signaling::HeartbeatFail;
use edge_signaling::{Config, Outcome, Signaling};

wit_bindgen::generate!({
    path: "../../wit",
    world: "tern:signaling/signaling",
    generate_all,
});

use exports::tern::signaling::handler::{Delivery, Guest, HeartbeatError};
use wasi::keyvalue::{atomics, store};

/// The bucket every Tern key lives in (Spin's default store).
const BUCKET: &str = "default";

struct Component;
export!(Component);

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config() -> Result<Config, KvError> {
    let api = std::env::var("TERN_API_SECRET")
        .map_err(|_| KvError("component has no TERN_API_SECRET".into()))?;
    let relay = std::env::var("TERN_RELAY_SECRET")
        .map_err(|_| KvError("component has no TERN_RELAY_SECRET".into()))?;
    let mut c = Config::new(api, relay);
    if let Ok(edge) = std::env::var("TERN_EDGE") {
        c.edge = edge;
    }
    if let Some(v) = env("TERN_MAX_ROOM_SIZE") {
        c.max_room_size = v;
    }
    if let Some(v) = env("TERN_RELAY_STALE_MS") {
        c.relay_stale_ms = v;
    }
    if let Some(v) = env("TERN_SESSION_GRACE_MS") {
        c.session_grace_ms = v;
    }
    if let Some(v) = env("TERN_TURN_TTL_SECS") {
        c.turn_ttl_secs = v;
    }
    if let Some(v) = env("TERN_CALL_SWEEP_MS") {
        c.call_sweep_ms = v;
    }
    Ok(c)
}

struct Bucket(store::Bucket);

fn kv_err(e: store::Error) -> KvError {
    KvError(match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(s) => s,
    })
}

impl Bucket {
    fn open() -> Result<Bucket, KvError> {
        store::open(BUCKET).map(Bucket).map_err(kv_err)
    }
}

impl KvRead for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(kv_err)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        // wasi:keyvalue has no prefix listing: page through every key.
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor.as_deref()).map_err(kv_err)?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
}

impl KvStore for Bucket {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).map_err(kv_err)
    }
    fn delete(&mut self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(kv_err)
    }
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        // The handle pins the version we compare against; `swap` fails if the
        // key changed after it was made, so "compare then swap" is atomic.
        let cas = atomics::Cas::new(&self.0, key).map_err(kv_err)?;
        if cas.current().map_err(kv_err)?.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(kv_err(e)),
        }
    }
}

fn deliveries(o: Outcome) -> Vec<Delivery> {
    o.deliveries
        .into_iter()
        .map(|d| Delivery {
            conn: d.conn,
            frame: d.frame,
        })
        .collect()
}

fn unavailable(conn: &str, e: &KvError) -> Vec<Delivery> {
    let err = edge_signaling::error::FrameError::new(
        edge_signaling::ErrorCode::Unavailable,
        e.to_string(),
    );
    deliveries(Outcome::error(conn, &err))
}

impl Guest for Component {
    fn handle_frame(now_ms: u64, conn: String, frame: String, entropy: Vec<u8>) -> Vec<Delivery> {
        let result = config().and_then(|cfg| {
            let mut bucket = Bucket::open()?;
            let s = Signaling::new(&cfg);
            apply::run(&mut bucket, |kv| {
                s.handle_frame(now_ms, &conn, &frame, &entropy, kv)
            })
        });
        match result {
            Ok(Some(o)) => deliveries(o),
            Ok(None) => unavailable(&conn, &KvError("room kept changing; try again".into())),
            Err(e) => unavailable(&conn, &e),
        }
    }

    fn handle_disconnect(now_ms: u64, conn: String) -> Vec<Delivery> {
        let result = config().and_then(|cfg| {
            let mut bucket = Bucket::open()?;
            let s = Signaling::new(&cfg);
            let mut failed = None;
            let o = apply::run(&mut bucket, |kv| {
                s.handle_disconnect(now_ms, &conn, kv).unwrap_or_else(|e| {
                    failed = Some(e);
                    Outcome::default()
                })
            })?;
            match failed {
                Some(e) => Err(e),
                None => Ok(o),
            }
        });
        // Nobody is left to tell about a failure on a closed connection.
        match result {
            Ok(Some(o)) => deliveries(o),
            _ => Vec::new(),
        }
    }

    fn handle_tick(now_ms: u64) -> Vec<Delivery> {
        let result = config().and_then(|cfg| {
            let mut bucket = Bucket::open()?;
            edge_signaling::reroute::tick(&Signaling::new(&cfg), now_ms, &mut bucket)
        });
        match result {
            Ok(d) => d
                .into_iter()
                .map(|d| Delivery {
                    conn: d.conn,
                    frame: d.frame,
                })
                .collect(),
            // The next tick tries again.
            Err(_) => Vec::new(),
        }
    }

    fn handle_heartbeat(
        now_ms: u64,
        body: Vec<u8>,
        signature: String,
    ) -> Result<(), HeartbeatError> {
        let cfg = config().map_err(|e| HeartbeatError::Unavailable(e.to_string()))?;
        let mut bucket = Bucket::open().map_err(|e| HeartbeatError::Unavailable(e.to_string()))?;
        let s = Signaling::new(&cfg);
        let mut refused = None;
        let applied = apply::run(&mut bucket, |kv| {
            match s.handle_heartbeat(now_ms, &body, &signature, kv) {
                Ok(o) => o,
                Err(e) => {
                    refused = Some(e);
                    Outcome::default()
                }
            }
        })
        .map_err(|e| HeartbeatError::Unavailable(e.to_string()))?;
        match refused {
            Some(HeartbeatFail::Invalid(e)) => Err(HeartbeatError::Rejected(e.to_string())),
            Some(HeartbeatFail::Kv(e)) => Err(HeartbeatError::Unavailable(e.to_string())),
            None if applied.is_none() => Err(HeartbeatError::Unavailable(
                "relay index kept changing".into(),
            )),
            None => Ok(()),
        }
    }
}

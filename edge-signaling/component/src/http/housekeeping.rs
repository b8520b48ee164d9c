//! Housekeeping on a serverless host: there is no timer, so it runs in the
//! course of requests. The request that finds the shared tick lease due
//! takes it (compare-and-swap, so one instance per period wins) and runs:
//! the core's tick (moving rooms off lost or draining relays, closing calls
//! by timeout) about every [`TICK_MS`], and the idle-connection sweep about
//! every [`IDLE_SWEEP_MS`]. Any live poll ticks too, so failover goes on
//! while clients only wait, and so do relay heartbeats, so it goes on when
//! no client is left.

use edge_signaling::apply::KvStore;
use edge_signaling::kv::KvRead;
use serde::{Deserialize, Serialize};

use super::transport;
use crate::bucket::Bucket;
use crate::core;

/// The lease key (docs/kv-schema.md).
const LEASE: &str = "http-tick";
/// Period of the core's tick, as origin's timer.
pub const TICK_MS: u64 = 100;
/// A connection that made no request for this long is closed.
pub const IDLE_MS: u64 = 15_000;
/// Period of the idle sweep (it lists every connection).
pub const IDLE_SWEEP_MS: u64 = 1_000;

#[derive(Default, Serialize, Deserialize)]
struct Lease {
    /// When the next tick is due (unix ms).
    tick_due_ms: u64,
    /// When the next idle sweep is due.
    idle_due_ms: u64,
}

/// Run housekeeping if it is due and this request wins the lease. Failures
/// are logged and left for the next tick: a request never fails for them.
pub fn maybe_tick(now: u64) {
    let Ok(mut bucket) = Bucket::open() else {
        return;
    };
    let raw = match bucket.get(LEASE) {
        Ok(r) => r,
        Err(e) => return eprintln!("tern: reading the tick lease: {e}"),
    };
    let lease: Lease = raw
        .as_deref()
        .and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or_default();
    if lease.tick_due_ms > now {
        return;
    }
    let idle_due = lease.idle_due_ms <= now;
    let next = Lease {
        tick_due_ms: now + TICK_MS,
        idle_due_ms: if idle_due {
            now + IDLE_SWEEP_MS
        } else {
            lease.idle_due_ms
        },
    };
    let value = serde_json::to_vec(&next).expect("serializes");
    match bucket.compare_and_swap(LEASE, raw.as_deref(), &value) {
        Ok(true) => {}
        Ok(false) => return, // another request took this period
        Err(e) => return eprintln!("tern: taking the tick lease: {e}"),
    }
    match core::tick(now) {
        Ok(out) => transport::deliver(&mut bucket, now, out),
        Err(e) => eprintln!("tern: tick failed: {e}"),
    }
    if idle_due {
        sweep_idle(&mut bucket, now);
    }
}

/// Close connections that made no request for [`IDLE_MS`].
fn sweep_idle(bucket: &mut Bucket, now: u64) {
    let keys = match bucket.list(transport::SEEN_PREFIX) {
        Ok(k) => k,
        Err(e) => return eprintln!("tern: listing connections: {e}"),
    };
    for key in keys {
        let conn = &key[transport::SEEN_PREFIX.len()..];
        match transport::last_seen(bucket, conn) {
            Ok(Some(at)) if now.saturating_sub(at) <= IDLE_MS => {}
            Ok(_) => {
                if let Err(e) = transport::drop_connection(bucket, now, conn) {
                    eprintln!("tern: closing idle connection {conn}: {e}");
                }
            }
            Err(e) => eprintln!("tern: reading connection {conn}: {e}"),
        }
    }
}

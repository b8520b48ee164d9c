//! Call records for readers: the query behind `GET /v1/calls` and `tern
//! calls` (whose command line is calls_cli.rs), and the retention sweep.
//! The records themselves are written by the signaling core
//! (edge-signaling/src/calls.rs); keys in docs/kv-schema.md "Call records".
//!
//! Reads go to the store natively, not through the component
//! (wasi:keyvalue can only list a whole bucket), and through indexes: ids
//! sort by start time, and the core writes each call's id under its room
//! and under each identity in it (docs/kv-schema.md). redb lists them as
//! key ranges; on Redis each is a sorted set kept with the writes
//! (redis_kv.rs), so neither backend scans the keyspace.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edge_signaling::keys;
use edge_signaling::model::{CallEvent, CallSummary, Quality};
use edge_signaling::record::{self, CallRecord};
use serde::{Deserialize, Serialize};

use crate::edge::{now_ms, App};
use crate::store::Kv;
use crate::store::StoreError;

/// Bucket every signaling key lives in.
const BUCKET: &str = "default";
/// Page size when none is asked for, and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// Records kept when `TERN_CALL_RETENTION_DAYS` is not set.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;
/// How often an origin prunes records past retention.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Which calls to return. Times are unix ms; a call matches the time range
/// when it overlaps `[since_ms, until_ms)` (an open call lasts until now).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Query {
    pub room: Option<String>,
    pub identity: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of calls, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    pub calls: Vec<CallRecord>,
    /// Pass as `cursor` for the next page; absent on the last page. (A page
    /// that ends exactly at the last match still has one, and the next page
    /// is then empty.)
    pub next_cursor: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw)
        .map_err(|e| StoreError::Backend(format!("corrupt call record at {key}: {e}")))
}

/// Every value under `prefix`, decoded, in key order.
fn values<T: serde::de::DeserializeOwned>(kv: &Kv, prefix: &str) -> Result<Vec<T>, StoreError> {
    let mut keys = kv.list_prefix(BUCKET, prefix)?;
    keys.sort();
    let raws = kv.get_many(BUCKET, &keys)?;
    keys.iter()
        .zip(raws)
        .filter_map(|(k, v)| v.map(|v| decode(k, &v)))
        .collect()
}

/// The whole record of call `call`, if it exists.
pub fn load(kv: &Kv, call: &str) -> Result<Option<CallRecord>, StoreError> {
    let key = keys::call(call);
    let Some(raw) = kv.get(BUCKET, &key)? else {
        return Ok(None);
    };
    let summary: CallSummary = decode(&key, &raw)?;
    let events: Vec<CallEvent> = values(kv, &keys::call_events_prefix(call))?;
    let quality: Vec<Quality> = values(kv, &keys::call_quality_prefix(call))?;
    Ok(Some(record::build(summary, events, quality)))
}

/// The index with the fewest candidates for `q`: the room's calls or the
/// identity's when filtered by one, else every call. All three hold call
/// ids, which sort by start time.
fn index_for(q: &Query) -> String {
    match (&q.room, &q.identity) {
        (Some(room), _) => keys::call_by_room_prefix(room),
        (None, Some(identity)) => keys::call_by_identity_prefix(identity),
        (None, None) => keys::CALLS_PREFIX.to_string(),
    }
}

/// Index entries read per round trip while filling a page.
const INDEX_BATCH: usize = 256;

/// Run `q` against the store. Blocking (Redis: network round trips).
///
/// Walks one index newest first from the cursor (and from `until`: ids
/// begin with the start time), loading records until the page is full, so
/// a query costs about what it returns. Only filters the index does not
/// answer (`since`, and the identity when the room picked the index) make it
/// read records that do not match; `since` cannot stop the walk, since a
/// call that started long before it may still have been going.
pub fn query(kv: &Kv, q: &Query, now_ms: u64) -> Result<Page, StoreError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let index = index_for(q);
    let mut before = q.cursor.clone();
    if let Some(u) = q.until_ms {
        // `c-<until>` sorts above every id that started before `until`.
        let bound = format!("c-{u:013}");
        if before.as_ref().is_none_or(|b| *b > bound) {
            before = Some(bound);
        }
    }
    let mut calls = Vec::new();
    loop {
        let ids = kv.page_rev(BUCKET, &index, before.as_deref(), INDEX_BATCH)?;
        let exhausted = ids.len() < INDEX_BATCH;
        for id in &ids {
            before = Some(id.clone());
            // A room or identity holding '/' lists longer names' entries
            // too on a prefix range: those are not call ids.
            if id.contains('/') {
                continue;
            }
            if calls.len() == limit {
                let next_cursor = calls.last().map(|c: &CallRecord| c.call.clone());
                return Ok(Page { calls, next_cursor });
            }
            let Some(rec) = load(kv, id)? else { continue };
            if q.room.as_ref().is_some_and(|r| *r != rec.room)
                || q.identity.as_ref().is_some_and(|i| !rec.has_identity(i))
                || !rec.overlaps(q.since_ms, q.until_ms, now_ms)
            {
                continue;
            }
            calls.push(rec);
        }
        if exhausted {
            return Ok(Page {
                calls,
                next_cursor: None,
            });
        }
    }
}

/// Delete every ended call that started more than `retention_ms` ago, with
/// its index entries. Open calls are kept whatever their age. Returns how
/// many were deleted.
pub fn prune(kv: &Kv, retention_ms: u64, now_ms: u64) -> Result<usize, StoreError> {
    let cutoff = now_ms.saturating_sub(retention_ms);
    // Ids below `c-<cutoff>` started before the cutoff.
    let mut before = format!("c-{cutoff:013}");
    let mut n = 0;
    loop {
        let ids = kv.page_rev(BUCKET, keys::CALLS_PREFIX, Some(&before), INDEX_BATCH)?;
        for id in &ids {
            before = id.clone();
            if kv.get(BUCKET, &keys::call_open(id))?.is_some() {
                continue;
            }
            let Some(rec) = load(kv, id)? else { continue };
            let mut doomed = kv.list_prefix(BUCKET, &keys::call_events_prefix(id))?;
            doomed.extend(kv.list_prefix(BUCKET, &keys::call_quality_prefix(id))?);
            doomed.push(keys::call_by_room(&rec.room, id));
            doomed.extend(
                rec.participants
                    .iter()
                    .map(|p| keys::call_by_identity(&p.identity, id)),
            );
            // The summary last: a crash midway leaves a findable record to
            // prune again, never orphaned events or index entries.
            doomed.push(keys::call(id));
            kv.delete_keys(BUCKET, &doomed)?;
            n += 1;
        }
        if ids.len() < INDEX_BATCH {
            return Ok(n);
        }
    }
}

/// Retention from `TERN_CALL_RETENTION_DAYS` (0 keeps records forever).
pub fn retention_days_from_env() -> anyhow::Result<u64> {
    match std::env::var("TERN_CALL_RETENTION_DAYS") {
        Err(_) => Ok(DEFAULT_RETENTION_DAYS),
        Ok(v) => v
            .parse()
            .with_context(|| format!("TERN_CALL_RETENTION_DAYS={v:?} is not a number of days")),
    }
}

/// Prune records past retention now and then every hour.
pub fn spawn_retention(app: Arc<App>, days: u64) {
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tick.tick().await;
            let kv = app.kv.clone();
            let r = tokio::task::spawn_blocking(move || prune(&kv, days * DAY_MS, now_ms())).await;
            match r {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(calls = n, days, "pruned call records past retention"),
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning call records failed"),
                Err(e) => tracing::warn!(error = %e, "pruning call records panicked"),
            }
        }
    });
}

//! Call records for readers: the query behind `GET /v1/calls` and `tern
//! calls`, the retention sweep, and the CLI's table / JSON lines / CSV
//! output. The records themselves are written by the signaling core
//! (edge-signaling/src/calls.rs); keys in docs/kv-schema.md "Call records".
//!
//! Reads go to the store natively, not through the component
//! (wasi:keyvalue can only list a whole bucket), and through indexes: ids
//! sort by start time, and the core writes each call's id under its room
//! and under each identity in it (docs/kv-schema.md). redb lists them as
//! key ranges; on Redis each is a sorted set kept with the writes
//! (redis_kv.rs), so neither backend scans the keyspace.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edge_signaling::keys;
use edge_signaling::model::{CallEvent, CallSummary, Quality};
use edge_signaling::record::{self, CallRecord};
use serde::{Deserialize, Serialize};

use crate::app::{now_ms, App};
use crate::kv::Kv;
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
const DAY_MS: u64 = 24 * 3600 * 1000;

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

fn list_prefix(kv: &Kv, prefix: &str) -> Result<Vec<String>, StoreError> {
    match kv {
        Kv::Embedded(s) => s.list_prefix(BUCKET, prefix),
        Kv::Redis(r) => r.list_prefix(BUCKET, prefix),
    }
}

/// One page of an index (`call/`, `call-room/<room>/`,
/// `call-identity/<identity>/`): up to `limit` call ids, newest first,
/// below `before`. A redb range or a Redis sorted set: never a scan.
fn page_index(
    kv: &Kv,
    index: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    match kv {
        Kv::Embedded(s) => s.page_prefix_rev(BUCKET, index, before, limit),
        Kv::Redis(r) => r.page_group_rev(BUCKET, index, before, limit),
    }
}

fn get_many(kv: &Kv, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    match kv {
        Kv::Embedded(s) => {
            let snap = s.snapshot()?;
            keys.iter().map(|k| snap.get(BUCKET, k)).collect()
        }
        Kv::Redis(r) => r.get_many(BUCKET, keys),
    }
}

fn delete_keys(kv: &Kv, keys: &[String]) -> Result<(), StoreError> {
    match kv {
        Kv::Embedded(s) => s.delete_keys(BUCKET, keys),
        Kv::Redis(r) => r.delete_keys(BUCKET, keys),
    }
}

/// Every value under `prefix`, decoded, in key order.
fn values<T: serde::de::DeserializeOwned>(kv: &Kv, prefix: &str) -> Result<Vec<T>, StoreError> {
    let mut keys = list_prefix(kv, prefix)?;
    keys.sort();
    let raws = get_many(kv, &keys)?;
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
        let ids = page_index(kv, &index, before.as_deref(), INDEX_BATCH)?;
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
        let ids = page_index(kv, keys::CALLS_PREFIX, Some(&before), INDEX_BATCH)?;
        for id in &ids {
            before = id.clone();
            if kv.get(BUCKET, &keys::call_open(id))?.is_some() {
                continue;
            }
            let Some(rec) = load(kv, id)? else { continue };
            let mut doomed = list_prefix(kv, &keys::call_events_prefix(id))?;
            doomed.extend(list_prefix(kv, &keys::call_quality_prefix(id))?);
            doomed.push(keys::call_by_room(&rec.room, id));
            doomed.extend(
                rec.participants
                    .iter()
                    .map(|p| keys::call_by_identity(&p.identity, id)),
            );
            // The summary last: a crash midway leaves a findable record to
            // prune again, never orphaned events or index entries.
            doomed.push(keys::call(id));
            delete_keys(kv, &doomed)?;
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

// ---- `tern calls` -------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON record per line (the same documents as `GET /v1/calls`).
    Jsonl,
    /// Comma-separated, one call per row, with a header.
    Csv,
}

#[derive(clap::Args)]
pub struct CallsArgs {
    /// Where the embedded store keeps its file (the origin using it must be
    /// stopped: the file is locked while open; use --url instead).
    #[arg(long, default_value = ".tern")]
    data_dir: PathBuf,
    /// Ask a running origin (`http://host:port`) through `GET /v1/calls`
    /// instead of opening a store (--data-dir and --kv are then unused).
    #[arg(long, conflicts_with = "prune_older_than_days")]
    url: Option<String>,
    /// The API secret, for --url.
    #[arg(long, env = "TERN_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// State store, as for `tern serve`: `embedded` or `redis://…`.
    #[arg(long, env = "TERN_KV", default_value = "embedded")]
    kv: String,
    #[arg(long, default_value = "tern:")]
    kv_prefix: String,
    /// Only calls in this room.
    #[arg(long)]
    room: Option<String>,
    /// Only calls this identity took part in.
    #[arg(long)]
    identity: Option<String>,
    /// Only calls still going at or after this time: unix ms, or an age
    /// such as `90m`, `24h`, `7d`.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Only calls that started before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
    /// Most calls to print (newest first).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue after this call id (the `next` printed by a previous run).
    #[arg(long)]
    cursor: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Instead of listing: delete ended calls older than this many days.
    #[arg(long)]
    prune_older_than_days: Option<u64>,
}

/// Unix ms, or an age (`<n>s|m|h|d`) counted back from now.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use unix milliseconds or an age like 90m, 24h, 7d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return Err(format!("{s:?}: the unit of an age is s, m, h or d")),
    };
    Ok(now_ms().saturating_sub(n.saturating_mul(unit_ms)))
}

pub fn run(args: CallsArgs) -> anyhow::Result<()> {
    let q = Query {
        room: args.room.clone(),
        identity: args.identity.clone(),
        since_ms: args.since,
        until_ms: args.until,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
    };
    let page = match &args.url {
        Some(url) => {
            let secret = args
                .api_secret
                .as_deref()
                .context("--url needs the API secret: --api-secret or TERN_API_SECRET")?;
            crate::calls_client::fetch_page(url, secret, &q)?
        }
        None => {
            let kv = open_store(&args)?;
            if let Some(days) = args.prune_older_than_days {
                let n = prune(&kv, days * DAY_MS, now_ms())?;
                kv.flush()?;
                eprintln!("deleted {n} call record(s) older than {days} day(s)");
                return Ok(());
            }
            query(&kv, &q, now_ms())?
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Jsonl => {
            for c in &page.calls {
                serde_json::to_writer(&mut out, c)?;
                writeln!(out)?;
            }
        }
        Format::Csv => write_csv(&mut out, &page.calls)?,
        Format::Table => write_table(&mut out, &page.calls)?,
    }
    if let Some(next) = &page.next_cursor {
        eprintln!("more calls: --cursor {next}");
    }
    Ok(())
}

/// The store `--kv` / `--data-dir` name.
fn open_store(args: &CallsArgs) -> anyhow::Result<Kv> {
    Ok(if args.kv == "embedded" {
        if !args.data_dir.join("tern.redb").exists() {
            anyhow::bail!("no store in {} (see --data-dir)", args.data_dir.display());
        }
        Kv::Embedded(
            crate::store::EmbeddedStore::open(&args.data_dir).with_context(|| {
                "opening the embedded store (if an origin is running on it, use --url with its address)"
            })?,
        )
    } else {
        Kv::Redis(Arc::new(
            crate::redis_kv::RedisKv::connect(&args.kv, &args.kv_prefix)
                .with_context(|| format!("connecting to {}", args.kv))?,
        ))
    })
}

/// `2026-11-26T01:02:03Z` (UTC) from unix ms.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn duration(c: &CallRecord) -> String {
    match c.ended_ms {
        Some(e) => format!("{:.1}s", e.saturating_sub(c.started_ms) as f64 / 1000.0),
        None => "open".into(),
    }
}

fn identities(c: &CallRecord) -> String {
    let mut v: Vec<&str> = c.participants.iter().map(|p| p.identity.as_str()).collect();
    v.dedup();
    v.join(" ")
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_default()
}

/// The columns both the table and the CSV show.
fn row(c: &CallRecord) -> Vec<String> {
    vec![
        c.call.clone(),
        c.room.clone(),
        utc(c.started_ms),
        duration(c),
        c.end_reason.clone().unwrap_or_default(),
        identities(c),
        c.relays.join(">"),
        c.reroutes.len().to_string(),
        c.quality.packets_lost.to_string(),
        opt(c.quality.loss_pct),
        opt(c.quality.jitter_ms_max),
        opt(c.quality.rtt_ms_max),
    ]
}

const HEADER: [&str; 12] = [
    "call",
    "room",
    "started",
    "duration",
    "end",
    "identities",
    "relays",
    "reroutes",
    "lost",
    "loss_pct",
    "jitter_ms_max",
    "rtt_ms_max",
];

fn write_table(out: &mut impl std::io::Write, calls: &[CallRecord]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = calls.iter().map(row).collect();
    let mut width: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &[&str]| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    let upper: Vec<String> = HEADER.iter().map(|h| h.to_uppercase()).collect();
    line(out, &upper.iter().map(String::as_str).collect::<Vec<_>>())?;
    for r in &rows {
        line(out, &r.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// RFC 4180 quoting: only when needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(out: &mut impl std::io::Write, calls: &[CallRecord]) -> std::io::Result<()> {
    writeln!(out, "{}", HEADER.join(","))?;
    for c in calls {
        let cells: Vec<String> = row(c).iter().map(|s| csv_field(s)).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_118_923_456), "2025-11-26T01:02:03Z");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn times_are_unix_ms_or_ages() {
        assert_eq!(parse_time("1234"), Ok(1234));
        let t = parse_time("2h").unwrap();
        let expect = now_ms() - 2 * 3_600_000;
        assert!(t.abs_diff(expect) < 5_000);
        assert!(parse_time("2w").is_err());
        assert!(parse_time("soon").is_err());
    }
}

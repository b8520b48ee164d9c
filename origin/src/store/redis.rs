//! The Redis backend: the same buckets and keys as the embedded store, shared
//! by every origin (edge) pointed at the same Redis, plus the pub/sub channel
//! edges use to hand each other deliveries.
//!
//! Keys are `<prefix><bucket>:<key>` (prefix `tern:` by default), or, with
//! `?layout=spin` on the URL, bucket `default`'s keys bare, as Spin's Redis
//! key-value store writes them, so origins and Spin apps share one keyspace
//! (docs/spin.md). Calls are
//! synchronous (they run on blocking threads, see `App::handle_frame`), over
//! a small pool of connections. With Sentinel, the current primary is looked
//! up from the sentinels at start and again whenever a call fails in a way
//! that says the primary moved (connection refused or reset, `READONLY`,
//! timeout): Tern follows a failover without a restart.
//!
//! Replication to replicas is asynchronous, so a write the primary has
//! taken can be missing on the replica Sentinel promotes. Frames whose
//! writes hold call records therefore wait for a replica to acknowledge
//! them before they are answered ([`RedisKv::wait_replicated`], docs/kv-schema.md
//! "Durability (Redis)").

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_signaling::keys::ordered_group;
use redis::{Client, Connection, RedisResult};

use crate::store::error::StoreError;
use crate::store::sync_gate::{SyncError, SyncGate};

/// How long one Redis call may take before we give up on that node.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Now, in unix ms (when the last error happened).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the primary is.
enum Target {
    Direct(Client),
    Sentinel {
        sentinels: Vec<String>,
        service: String,
    },
}

pub struct RedisKv {
    target: Target,
    /// Client for the current primary (shared with the replica waiter's
    /// threads, which must follow a failover too).
    primary: Arc<Mutex<Client>>,
    idle: Mutex<Vec<Connection>>,
    /// Most connections kept in `idle`.
    pool: usize,
    prefix: String,
    /// Bucket `default` is stored bare, as Spin's Redis store does.
    spin_layout: bool,
    cas: redis::Script,
    /// When a call last failed (unix ms; 0: never).
    last_error_ms: AtomicU64,
    /// Set by [`Self::enable_replica_wait`] (`tern serve`); tools that only
    /// read or restore leave it off.
    replicas: Option<ReplicaWait>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// Compare-and-swap in one atomic step on the server. ARGV[1] is "1" when
/// a value is expected (ARGV[2]), "0" when the key must be absent.
/// Returns {1} on success, {0, current} or {0} (absent) on conflict.
const CAS_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then
    if cur then return {0, cur} else return {0} end
  end
elseif cur then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[3])
return {1}
"#;

impl RedisKv {
    /// `url` is `redis://host:port[/db]` or
    /// `redis+sentinel://host:port[,host:port…]/service`, optionally with
    /// `?layout=spin` (bucket `default` stored bare, as Spin stores it).
    /// `pool`: connections kept idle for reuse, one per call that may be
    /// in flight (see [`crate::store::StoreUrl::Redis`]).
    pub fn connect(url: &str, prefix: &str, pool: usize) -> Result<RedisKv, StoreError> {
        let (url, spin_layout) = match url.split_once('?') {
            Some((base, "layout=spin")) => (base, true),
            Some((_, q)) => {
                return Err(backend(format!(
                    "unknown URL option {q:?} (the one option is layout=spin)"
                )))
            }
            None => (url, false),
        };
        let target = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, service) = rest
                .split_once('/')
                .ok_or_else(|| backend("sentinel URL needs /<service name>"))?;
            if service.is_empty() {
                return Err(backend("sentinel URL needs /<service name>"));
            }
            Target::Sentinel {
                sentinels: hosts.split(',').map(|h| format!("redis://{h}")).collect(),
                service: service.to_string(),
            }
        } else {
            Target::Direct(Client::open(url).map_err(backend)?)
        };
        let primary = resolve_at_start(&target)?;
        let kv = RedisKv {
            target,
            primary: Arc::new(Mutex::new(primary)),
            idle: Mutex::new(Vec::new()),
            prefix: prefix.to_string(),
            pool,
            spin_layout,
            cas: redis::Script::new(CAS_LUA),
            last_error_ms: AtomicU64::new(0),
            replicas: None,
        };
        // Fail at start, not at the first frame, if Redis is unreachable.
        kv.with_conn(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(kv)
    }

    fn key(&self, bucket: &str, key: &str) -> String {
        if self.spin_layout && bucket == SPIN_BUCKET {
            return key.to_string();
        }
        format!("{}{bucket}:{key}", self.prefix)
    }

    /// The sorted set listing the members of one ordered group of call-record
    /// keys (`edge_signaling::keys::ordered_group`). Outside the bucket's
    /// key space, so no key Tern writes can collide with it; backups skip it
    /// (MGET reads no value from a sorted set) and restores rebuild it.
    fn index_key(&self, bucket: &str, group: &str) -> String {
        format!("{}idx:{bucket}:{group}", self.prefix)
    }

    /// SCAN pattern of every key this store holds.
    fn all_keys_pattern(&self) -> String {
        if self.spin_layout {
            // Bare keys have no common prefix: the database is Tern's.
            "*".to_string()
        } else {
            format!("{}*", glob_escape(&self.prefix))
        }
    }

    /// (bucket, key) of a full Redis key.
    fn split_key<'a>(&self, full: &'a str) -> Option<(&'a str, &'a str)> {
        if let Some(rest) = full.strip_prefix(self.prefix.as_str()) {
            if let Some(split) = rest.split_once(':') {
                return Some(split);
            }
        }
        self.spin_layout.then_some((SPIN_BUCKET, full))
    }

    /// A client for the current primary (pub/sub uses its own connection).
    pub fn primary_client(&self) -> Client {
        self.primary.lock().unwrap().clone()
    }

    /// Look the primary up again (after a failover).
    pub fn refresh_primary(&self) -> Result<(), StoreError> {
        let c = resolve(&self.target)?;
        *self.primary.lock().unwrap() = c;
        self.idle.lock().unwrap().clear();
        Ok(())
    }

    fn open(&self) -> RedisResult<Connection> {
        let client = self.primary_client();
        let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    /// Run `f` on a pooled connection. If it fails because the primary is
    /// gone or demoted, re-resolve the primary and try once more.
    /// When a call last failed (unix ms), 0 if never.
    pub fn last_error_ms(&self) -> u64 {
        self.last_error_ms.load(Ordering::Relaxed)
    }

    /// [`Self::try_with_conn`], remembering when it failed.
    fn with_conn<R>(
        &self,
        f: impl FnMut(&mut Connection) -> RedisResult<R>,
    ) -> Result<R, StoreError> {
        let r = self.try_with_conn(f);
        if r.is_err() {
            self.last_error_ms.store(unix_ms(), Ordering::Relaxed);
        }
        r
    }

    fn try_with_conn<R>(
        &self,
        mut f: impl FnMut(&mut Connection) -> RedisResult<R>,
    ) -> Result<R, StoreError> {
        for attempt in 0..2 {
            let pooled = self.idle.lock().unwrap().pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => match self.open() {
                    Ok(c) => c,
                    Err(e) if attempt == 0 => {
                        tracing::warn!(error = %e, "redis connect failed; looking up the primary again");
                        let _ = self.refresh_primary();
                        continue;
                    }
                    Err(e) => return Err(backend(e)),
                },
            };
            match f(&mut conn) {
                Ok(r) => {
                    let mut idle = self.idle.lock().unwrap();
                    if idle.len() < self.pool {
                        idle.push(conn);
                    }
                    return Ok(r);
                }
                Err(e) if attempt == 0 && primary_moved(&e) => {
                    tracing::warn!(error = %e, "redis primary unavailable; looking it up again");
                    let _ = self.refresh_primary();
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend("primary unavailable"))
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.key(bucket, key);
        self.with_conn(|c| redis::cmd("GET").arg(&k).query(c))
    }

    /// SET, and for a call-record key also its entry in the group's sorted
    /// set, both in one MULTI (one round trip; never one without the other).
    pub fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write_many(&[Pending {
            bucket,
            key,
            value: Some(value),
        }])
    }

    /// Apply several writes in one MULTI: one round trip, all or none.
    /// A signaling call's plain writes go this way (`HostState` in
    /// component.rs): a join's five used to be five round trips.
    pub fn write_many(&self, writes: &[Pending<'_>]) -> Result<(), StoreError> {
        for chunk in writes.chunks(500) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for w in chunk {
                self.add_write(&mut pipe, w.bucket, w.key, w.value);
            }
            self.with_conn(|c| pipe.query::<()>(c))?;
        }
        Ok(())
    }

    /// One write into a pipeline: SET or DEL, with the key's entry in its
    /// ordered group's index if it has one.
    fn add_write(&self, pipe: &mut redis::Pipeline, bucket: &str, key: &str, value: Option<&[u8]>) {
        let k = self.key(bucket, key);
        let group = ordered_group(key);
        match value {
            Some(v) => {
                pipe.cmd("SET").arg(&k).arg(v).ignore();
                if let Some((group, member)) = group {
                    pipe.cmd("ZADD")
                        .arg(self.index_key(bucket, group))
                        .arg(0)
                        .arg(member)
                        .ignore();
                }
            }
            None => {
                pipe.cmd("DEL").arg(&k).ignore();
                if let Some((group, member)) = group {
                    pipe.cmd("ZREM")
                        .arg(self.index_key(bucket, group))
                        .arg(member)
                        .ignore();
                }
            }
        }
    }

    pub fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let k = self.key(bucket, key);
        let (flag, exp): (&str, &[u8]) = match expected {
            Some(v) => ("1", v),
            None => ("0", b""),
        };
        let r: Vec<redis::Value> =
            self.with_conn(|c| self.cas.key(&k).arg(flag).arg(exp).arg(value).invoke(c))?;
        match r.as_slice() {
            [redis::Value::Int(1)] => Ok(Ok(())),
            [redis::Value::Int(0)] => Ok(Err(None)),
            [redis::Value::Int(0), redis::Value::BulkString(cur)] => Ok(Err(Some(cur.clone()))),
            other => Err(backend(format!("unexpected CAS reply {other:?}"))),
        }
    }

    pub fn list_keys(&self, bucket: &str) -> Result<Vec<String>, StoreError> {
        self.list_prefix(bucket, "")
    }

    /// Channel an edge listens on for deliveries to its connections.
    pub fn edge_channel(&self, edge: &str) -> String {
        format!("{}edge:{edge}", self.prefix)
    }

    pub fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.with_conn(|c| {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query::<i64>(c)
                .map(|_| ())
        })
    }

    /// Every key under this prefix, for backups: SCAN in batches, each
    /// batch's values with one MGET. NOT a point-in-time snapshot: each
    /// value is as it was when its batch was read; a key present for the
    /// whole scan is seen exactly once, keys created or deleted during it may
    /// or may not be (docs/backups.md says why that is acceptable here).
    /// Keys are `<prefix><bucket>:<key>`; the bucket ends at the first ':'
    /// (with `layout=spin`, any other key is bucket `default`'s).
    pub fn dump<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&str, &str, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let pattern = self.all_keys_pattern();
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self.with_conn(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    self.with_conn(|c| redis::cmd("MGET").arg(&keys).query(c))?;
                for (k, v) in keys.iter().zip(values) {
                    // Gone since SCAN listed it (or not a string value).
                    let Some(v) = v else { continue };
                    let Some((bucket, key)) = self.split_key(k) else {
                        continue;
                    };
                    f(bucket, key, &v)?;
                    n += 1;
                }
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    /// Whether no key exists under this prefix.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let pattern = self.all_keys_pattern();
        self.with_conn(|c| {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                if !keys.is_empty() {
                    return Ok(false);
                }
                if next == 0 {
                    return Ok(true);
                }
                cursor = next;
            }
        })
    }

    /// Write `entries` (bucket, key, value), pipelined 1000 SETs at a time,
    /// with the index entries of call-record keys (see [`Self::index_key`]).
    pub fn load<E: From<StoreError>>(
        &self,
        entries: impl Iterator<Item = Result<(String, String, Vec<u8>), E>>,
    ) -> Result<u64, E> {
        let mut n = 0;
        let mut batch: Vec<(String, String, Vec<u8>)> = Vec::with_capacity(1000);
        let mut entries = entries;
        loop {
            for e in entries.by_ref() {
                let (bucket, key, value) = e?;
                batch.push((bucket, key, value));
                if batch.len() == 1000 {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (bucket, key, v) in &batch {
                pipe.cmd("SET").arg(self.key(bucket, key)).arg(v).ignore();
                if let Some((group, member)) = ordered_group(key) {
                    pipe.cmd("ZADD")
                        .arg(self.index_key(bucket, group))
                        .arg(0)
                        .arg(member)
                        .ignore();
                }
            }
            self.with_conn(|c| pipe.query::<()>(c))?;
            n += batch.len() as u64;
            batch.clear();
        }
        Ok(n)
    }
}

/// Call records (origin/src/calls.rs): listing by prefix, reading and
/// deleting many keys.
///
/// Redis has no ordered key ranges, and SCAN MATCH walks the whole keyspace
/// whatever it matches. So for call-record keys every write also keeps a
/// sorted set per *group* (`edge_signaling::keys::ordered_group`: all
/// calls, one call's events, one room's or identity's calls) whose members
/// all have score 0, so they sort by their bytes, like keys in redb. A
/// group is then listed, or paged newest first, with ZRANGE BYLEX: it
/// costs what it returns.
impl RedisKv {
    /// Keys of `bucket` that start with `prefix`. For a prefix that is an
    /// ordered group: its sorted set, in key order. Otherwise SCAN MATCH, in
    /// no order (Redis walks the whole keyspace; only matches cross the
    /// network).
    pub fn list_prefix(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        if is_group(prefix) {
            let idx = self.index_key(bucket, prefix);
            let members: Vec<String> =
                self.with_conn(|c| redis::cmd("ZRANGE").arg(&idx).arg(0).arg(-1).query(c))?;
            return Ok(members
                .into_iter()
                .map(|m| format!("{prefix}{m}"))
                .collect());
        }
        self.scan_prefix(bucket, prefix)
    }

    /// Up to `limit` members of the ordered group `group` (keys without the
    /// group), in descending order, below `before` when given: one page of
    /// an index, newest first.
    pub fn page_group_rev(
        &self,
        bucket: &str,
        group: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let idx = self.index_key(bucket, group);
        let max = before.map_or_else(|| "+".to_string(), |b| format!("({b}"));
        self.with_conn(|c| {
            redis::cmd("ZRANGE")
                .arg(&idx)
                .arg(&max)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(c)
        })
    }

    /// SCAN MATCH `prefix*` over the bucket.
    fn scan_prefix(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let base = self.key(bucket, "");
        let mut pattern = glob_escape(&base);
        pattern.push_str(&glob_escape(prefix));
        pattern.push('*');
        self.with_conn(|c| {
            let mut keys = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                keys.extend(batch.into_iter().map(|k| k[base.len()..].to_string()));
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })
    }

    /// Values of `keys` (one MGET per 500 keys); `None` where absent.
    pub fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let full: Vec<String> = chunk.iter().map(|k| self.key(bucket, k)).collect();
            let v: Vec<Option<Vec<u8>>> =
                self.with_conn(|c| redis::cmd("MGET").arg(&full).query(c))?;
            out.extend(v);
        }
        Ok(out)
    }

    /// Delete `keys` of `bucket` with their index entries, 500 keys per
    /// MULTI (each key goes together with its entry).
    pub fn delete_keys(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        let writes: Vec<Pending> = keys
            .iter()
            .map(|key| Pending {
                bucket,
                key,
                value: None,
            })
            .collect();
        self.write_many(&writes)
    }
}

/// A write for [`RedisKv::write_many`]: a value to SET, or `None` to DEL.
pub struct Pending<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Whether `prefix` is exactly an ordered group (what a key of the group
/// looks like with its member taken off).
fn is_group(prefix: &str) -> bool {
    ordered_group(&format!("{prefix}x")) == Some((prefix, "x"))
}

/// The bucket Spin's Redis store keeps bare (the only one Tern uses).
const SPIN_BUCKET: &str = "default";

/// `s` with Redis glob characters escaped, for SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn resolve(target: &Target) -> Result<Client, StoreError> {
    match target {
        Target::Direct(c) => Ok(c.clone()),
        Target::Sentinel { sentinels, service } => {
            let mut s = redis::sentinel::Sentinel::build(sentinels.clone()).map_err(backend)?;
            s.master_for(service, None).map_err(backend)
        }
    }
}

/// How long a starting origin keeps asking Sentinel for the primary.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// [`resolve`] at start. Right after a failover, Sentinel may know no primary
/// for a moment (the replica is being promoted): an origin started (or
/// restarted by systemd) in that moment should wait for it, not exit.
fn resolve_at_start(target: &Target) -> Result<Client, StoreError> {
    let deadline = std::time::Instant::now() + START_PATIENCE;
    loop {
        match resolve(target) {
            Err(e)
                if matches!(target, Target::Sentinel { .. })
                    && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "Sentinel names no primary yet; asking again");
                std::thread::sleep(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// Errors after which the primary may be somewhere else.
fn primary_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

/// How often the replica watcher asks the primary for its replicas (ROLE).
const REPLICA_POLL: Duration = Duration::from_secs(1);

/// What the replica waiter (a [`SyncGate`] whose "sync" is a WAIT) and the
/// replica watcher thread share.
#[derive(Default)]
struct ReplicaState {
    /// Replicas connected to the primary at the last ROLE poll. Zero: there
    /// is nothing to wait for, and frames are answered at once.
    connected: AtomicU64,
    /// Set when no replica acknowledged within the timeout. While set,
    /// frames are answered without waiting (each would otherwise pay the
    /// whole timeout), until the watcher sees a replica caught up again.
    lagging: AtomicBool,
    /// Set when the store is dropped: the watcher exits.
    stop: AtomicBool,
}

struct ReplicaWait {
    state: Arc<ReplicaState>,
    gate: SyncGate,
}

impl RedisKv {
    /// Make [`Self::wait_replicated`] wait for one replica to acknowledge
    /// (at most `timeout`). Starts the waiter thread (one WAIT for every
    /// frame that wrote since the previous one: group commit, as on the
    /// embedded store) and the watcher thread (one ROLE a second: how many
    /// replicas the primary has, and whether a lagging one caught up).
    pub fn enable_replica_wait(&mut self, timeout: Duration) -> Result<(), StoreError> {
        let state = Arc::new(ReplicaState::default());
        // Know the replicas before the first frame.
        let mut last_offset = 0;
        poll_replicas(&self.primary, &state, &mut last_offset);
        let channel = format!("{}durable", self.prefix);
        let (primary, st) = (self.primary.clone(), state.clone());
        let mut conn: Option<Connection> = None;
        let gate = SyncGate::new(move || {
            let acked = replicate(&primary, &mut conn, &channel, timeout).map_err(|e| {
                format!("redis: waiting for a replica to acknowledge failed: {e}")
            })?;
            if acked >= 1 {
                return Ok(());
            }
            st.lagging.store(true, Ordering::Relaxed);
            Err(format!(
                "no Redis replica acknowledged within {} ms; answering without waiting until one catches up",
                timeout.as_millis()
            ))
        })
        .map_err(backend)?;
        let (primary, st) = (self.primary.clone(), state.clone());
        std::thread::Builder::new()
            .name("tern-replicas".into())
            .spawn(move || {
                while !st.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(REPLICA_POLL);
                    poll_replicas(&primary, &st, &mut last_offset);
                }
            })
            .map_err(backend)?;
        self.replicas = Some(ReplicaWait { state, gate });
        Ok(())
    }

    /// Whether answers wait for a replica at all now, so a caller can tell
    /// without starting a wait (see [`Self::wait_replicated`]).
    pub fn waits_for_replicas(&self) -> bool {
        self.replicas.as_ref().is_some_and(|r| {
            r.state.connected.load(Ordering::Relaxed) != 0
                && !r.state.lagging.load(Ordering::Relaxed)
        })
    }

    /// Call right after writes that must reach a replica before they are
    /// acknowledged. `None`: nothing to wait for (waiting not enabled, the
    /// primary has no replica, or the replicas lag, see
    /// [`ReplicaState::lagging`]). Otherwise a future that resolves once a
    /// WAIT that began after these writes has returned; awaiting holds no
    /// thread, and every frame waiting meanwhile shares that WAIT.
    pub fn wait_replicated(
        &self,
    ) -> Option<impl Future<Output = Result<(), SyncError>> + Send + 'static> {
        let r = self.replicas.as_ref()?;
        if r.state.connected.load(Ordering::Relaxed) == 0 || r.state.lagging.load(Ordering::Relaxed)
        {
            return None;
        }
        Some(r.gate.wait_durable())
    }
}

impl Drop for RedisKv {
    fn drop(&mut self) {
        if let Some(r) = &self.replicas {
            r.state.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// One WAIT covering every write the primary had replied to before it
/// began; returns how many replicas acknowledged.
///
/// WAIT only covers the earlier writes *of the connection that sends it*
/// (Redis waits for the offset of that client's last propagated command),
/// and Tern's writes go over a pool of connections. So the WAIT goes on a
/// connection of its own, right after a PUBLISH on it: PUBLISH is
/// propagated to replicas, which moves this connection's offset to the end
/// of the replication stream, past every write already replied to on any
/// connection. (A PUBLISH rather than a SET: no key appears in the store,
/// and nobody subscribes to the channel.)
fn replicate(
    primary: &Mutex<Client>,
    conn: &mut Option<Connection>,
    channel: &str,
    timeout: Duration,
) -> RedisResult<i64> {
    if conn.is_none() {
        let client = primary.lock().unwrap().clone();
        let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(timeout + IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("just opened");
    let r = redis::pipe()
        .cmd("PUBLISH")
        .arg(channel)
        .arg("")
        .ignore()
        .cmd("WAIT")
        .arg(1)
        // Whole milliseconds, at least 1 (WAIT 0 would block forever).
        .arg(timeout.as_millis().max(1) as u64)
        .query::<(i64,)>(c)
        .map(|(n,)| n);
    if r.is_err() {
        // Reconnect next time, to whichever node is primary by then.
        *conn = None;
    }
    r
}

/// Ask the primary (ROLE: one cheap command, no INFO text to parse) how
/// many replicas it has, and clear `lagging` once one of them has
/// acknowledged at least the offset the primary had at the previous poll
/// (it is at most a poll interval behind). Failures leave the state as it
/// was: the store's own calls report them.
fn poll_replicas(primary: &Mutex<Client>, st: &ReplicaState, last_offset: &mut u64) {
    let client = primary.lock().unwrap().clone();
    // On a primary: ["master", offset, [[ip, port, acked offset], ...]].
    // Any other role does not have this shape and is skipped.
    type Role = (String, u64, Vec<(String, String, String)>);
    let role = client
        .get_connection_with_timeout(IO_TIMEOUT)
        .and_then(|mut c| {
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            redis::cmd("ROLE").query::<Role>(&mut c)
        });
    let Ok((role, offset, replicas)) = role else {
        return;
    };
    if role != "master" {
        return;
    }
    st.connected.store(replicas.len() as u64, Ordering::Relaxed);
    let caught_up = replicas
        .iter()
        .any(|(_, _, acked)| acked.parse::<u64>().is_ok_and(|a| a >= *last_offset));
    if caught_up && st.lagging.swap(false, Ordering::Relaxed) {
        tracing::info!("a Redis replica caught up; call records wait for it again");
    }
    *last_offset = offset;
}

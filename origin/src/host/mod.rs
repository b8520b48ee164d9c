//! Hosting the signaling component with wasmtime.
//!
//! The component is compiled once and pre-instantiated (`InstancePre`); each
//! call gets a fresh `Store` and instance from the pooling allocator, so no
//! state survives in the instance between frames (docs/architecture.md:
//! stateless functions). The host implements `wasi:keyvalue@0.2.0-draft2` (store,
//! atomics and batch's get-many) over the embedded store or Redis ([`Kv`]), plus WASI for what Rust's std needs
//! (environment variables carry the component's settings).

use std::collections::BTreeMap;

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::store::{Durability, Kv, Transaction};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tern:signaling/signaling",
    with: {
        "wasi:keyvalue/store.bucket": BucketHandle,
        "wasi:keyvalue/atomics.cas": CasHandle,
    },
});

pub use exports::tern::signaling::handler::{Delivery, HeartbeatError};
use wasi::keyvalue::{atomics, batch, store as kvstore};

/// The component as built by origin's build script.
pub static SIGNALING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/signaling.wasm"));

/// An open bucket (the guest's `bucket` resource).
pub struct BucketHandle {
    name: String,
}

/// A compare-and-swap in progress: the value the guest saw.
pub struct CasHandle {
    bucket: String,
    key: String,
    seen: Option<Vec<u8>>,
}

/// Per-call host state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// wasi:http state (`tern spin` serves requests through it).
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    kv: Kv,
    /// Every store call is its own transaction (`tern spin`): an HTTP
    /// request may run for a whole long poll (see
    /// [`crate::store::transaction`]).
    autocommit: bool,
    /// The call's store transaction, opened at its first store access and
    /// finished (or, after a trap, dropped) when the call returns.
    txn: Option<Box<dyn Transaction>>,
    /// The call wrote a call record key, so its commit must be durable
    /// before its deliveries (the acknowledgement) go out: a crash may lose
    /// no acknowledged call event (docs/kv-schema.md "Durability").
    durable: bool,
}

impl HostState {
    fn new(kv: Kv, env: &[(String, String)], autocommit: bool) -> HostState {
        HostState {
            wasi: WasiCtx::builder().envs(env).build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            kv,
            autocommit,
            txn: None,
            durable: false,
        }
    }

    /// State for a host whose calls commit each store operation on its own
    /// (the `autocommit` field); `env` is the component's environment.
    pub(crate) fn per_operation(kv: Kv, env: &[(String, String)]) -> HostState {
        HostState::new(kv, env, true)
    }

    /// The call's transaction, opened on first use.
    fn txn(&mut self) -> &mut dyn Transaction {
        if self.txn.is_none() {
            self.txn = Some(if self.autocommit {
                self.kv.autocommit()
            } else {
                self.kv.begin()
            });
        }
        self.txn.as_deref_mut().expect("just opened")
    }

    /// End the call: finish its transaction if it returned (`ok`), drop it
    /// (nothing lands) if it trapped. What the answer must wait for.
    fn end_call(&mut self, ok: bool) -> anyhow::Result<Durability> {
        let durable = std::mem::take(&mut self.durable);
        match self.txn.take() {
            Some(t) if ok => Ok(t.finish(durable)?),
            _ => Ok(Durability::Now),
        }
    }

    fn read(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, kvstore::Error> {
        self.txn().get(bucket, key).map_err(other)
    }

    /// [`Self::read`] for many keys: one round trip on Redis.
    fn read_many(
        &mut self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, kvstore::Error> {
        self.txn().get_many(bucket, keys).map_err(other)
    }

    fn write(
        &mut self,
        bucket: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), kvstore::Error> {
        self.durable |= edge_signaling::keys::needs_durable_write(key);
        let t = self.txn();
        match value {
            Some(v) => t.set(bucket, key, v),
            None => t.delete(bucket, key),
        }
        .map_err(other)
    }

    fn cas(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, kvstore::Error> {
        self.txn()
            .compare_and_swap(bucket, key, expected, value)
            .map_err(other)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // One resource table for both: streams cross between wasi:io and
        // wasi:http.
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The component makes no outgoing requests; as on Spin without
/// `allowed_outbound_hosts`, an attempt is denied.
struct DenyOutbound;

type SendFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

fn other(e: impl std::fmt::Display) -> kvstore::Error {
    kvstore::Error::Other(e.to_string())
}

/// Buckets the component may open; anything else is `no-such-store`, as on
/// Spin where stores must be declared.
const BUCKETS: &[&str] = &["default"];

impl kvstore::Host for HostState {
    fn open(&mut self, identifier: String) -> Result<Resource<BucketHandle>, kvstore::Error> {
        if !BUCKETS.contains(&identifier.as_str()) {
            return Err(kvstore::Error::NoSuchStore);
        }
        self.table
            .push(BucketHandle { name: identifier })
            .map_err(other)
    }
}

impl HostState {
    fn bucket_name(&self, b: &Resource<BucketHandle>) -> Result<String, kvstore::Error> {
        Ok(self.table.get(b).map_err(other)?.name.clone())
    }
}

impl kvstore::HostBucket for HostState {
    fn get(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, kvstore::Error> {
        let name = self.bucket_name(&b)?;
        self.read(&name, &key)
    }
    fn set(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), kvstore::Error> {
        let name = self.bucket_name(&b)?;
        self.write(&name, &key, Some(&value))
    }
    fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> Result<(), kvstore::Error> {
        let name = self.bucket_name(&b)?;
        self.write(&name, &key, None)
    }
    fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> Result<bool, kvstore::Error> {
        let name = self.bucket_name(&b)?;
        Ok(self.read(&name, &key)?.is_some())
    }
    fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> Result<kvstore::KeyResponse, kvstore::Error> {
        // One page holds everything: the embedded store lives on one machine.
        let name = self.bucket_name(&b)?;
        if cursor.is_some() {
            return Ok(kvstore::KeyResponse {
                keys: vec![],
                cursor: None,
            });
        }
        let keys = self.txn().list_keys(&name).map_err(other)?;
        Ok(kvstore::KeyResponse { keys, cursor: None })
    }
    fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, kvstore::Error> {
        let name = self.bucket_name(&b)?;
        let values = self.read_many(&name, &keys)?;
        Ok(keys.into_iter().zip(values).collect())
    }
}

impl atomics::HostCas for HostState {
    fn new(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> Result<Resource<CasHandle>, kvstore::Error> {
        let bucket = self.bucket_name(&b)?;
        let seen = self.read(&bucket, &key)?;
        self.table
            .push(CasHandle { bucket, key, seen })
            .map_err(other)
    }
    fn current(&mut self, c: Resource<CasHandle>) -> Result<Option<Vec<u8>>, kvstore::Error> {
        Ok(self.table.get(&c).map_err(other)?.seen.clone())
    }
    fn drop(&mut self, c: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> Result<i64, kvstore::Error> {
        // Stored as decimal text. Retried CAS: the embedded store is local, so
        // contention is between this process's threads only.
        let name = self.bucket_name(&b)?;
        loop {
            let cur = self.read(&name, &key)?;
            let n: i64 = match &cur {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| other("value is not a decimal integer"))?,
            };
            let next = n
                .checked_add(delta)
                .ok_or_else(|| other("increment overflows"))?;
            if self
                .cas(&name, &key, cur.as_deref(), next.to_string().as_bytes())?
                .is_ok()
            {
                return Ok(next);
            }
        }
    }

    fn swap(&mut self, c: Resource<CasHandle>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let h = self
            .table
            .delete(c)
            .map_err(|e| atomics::CasError::StoreError(other(e)))?;
        match self
            .cas(&h.bucket, &h.key, h.seen.as_deref(), &value)
            .map_err(atomics::CasError::StoreError)?
        {
            Ok(()) => Ok(()),
            Err(now) => {
                let fresh = CasHandle {
                    bucket: h.bucket,
                    key: h.key,
                    seen: now,
                };
                let r = self
                    .table
                    .push(fresh)
                    .map_err(|e| atomics::CasError::StoreError(other(e)))?;
                Err(atomics::CasError::CasFailed(r))
            }
        }
    }
}

/// What a component call returned, and what its answer must wait for
/// before it goes out (call records made durable).
pub struct Answered<T> {
    pub value: T,
    pub durability: Durability,
}

/// A compiled, linked signaling component ready to instantiate per call.
pub struct SignalingHost {
    engine: Engine,
    pre: SignalingPre<HostState>,
    env: Vec<(String, String)>,
    kv: Kv,
    /// Idle instances. The component keeps no state between calls (the
    /// core is a pure function of its inputs and the KV), so an instance may
    /// serve several calls; it is retired after [`MAX_REUSE`] calls, or at
    /// once after a trap, so nothing a call could leave behind (heap growth,
    /// a poisoned allocator) lives long.
    idle: std::sync::Mutex<Vec<Pooled>>,
}

struct Pooled {
    store: Store<HostState>,
    instance: Signaling,
    uses: u32,
}

/// Calls one instance serves before it is dropped.
pub const MAX_REUSE: u32 = 1000;
/// Instances in the pooling allocator: an upper bound on calls in flight.
pub const MAX_INSTANCES: u32 = 256;
/// Idle instances kept for reuse; beyond this they are dropped, which gives
/// their pool slots back.
pub const MAX_IDLE: usize = 64;
/// Tables per instance the pool makes room for. The component defines two
/// (its module's, and the shim wit-component adds for indirect calls);
/// the pool counts tables, not instances, so with room for only one per
/// instance it ran out at half of [`MAX_INSTANCES`]: when a resume storm
/// first filled every call slot, joins failed with "maximum concurrent
/// limit of 256 for tables reached".
const TABLES_PER_INSTANCE: u32 = 4;

impl SignalingHost {
    /// Compile `wasm` and link it against WASI and the key-value store.
    /// `env` becomes the component's environment (its settings).
    pub fn new(wasm: &[u8], env: BTreeMap<String, String>, kv: Kv) -> anyhow::Result<Self> {
        let mut config = Config::new();
        let mut pool = PoolingAllocationConfig::default();
        // Instances live for one call; a modest pool covers every worker
        // thread with room to spare.
        pool.total_component_instances(MAX_INSTANCES)
            .total_memories(MAX_INSTANCES)
            .total_tables(MAX_INSTANCES * TABLES_PER_INSTANCE)
            .max_memory_size(64 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, wasm)
            .map_err(anyhow::Error::from)
            .context("compiling the signaling component")?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Signaling::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        // The same artifact exports wasi:http/incoming-handler for Spin, so
        // it imports wasi:http/types. This host only calls
        // `tern:signaling/handler`, which never touches them, but they must
        // link (traps would not do: wasmtime would also stub the resources
        // wasi:keyvalue/atomics shares with wasi:keyvalue/store).
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
        let pre = SignalingPre::new(linker.instantiate_pre(&component)?)?;
        Ok(SignalingHost {
            engine,
            pre,
            env: env.into_iter().collect(),
            kv,
            idle: Default::default(),
        })
    }

    /// Run `f` on an instance: a pooled one if idle, else a fresh one.
    /// Returns its result and what the answer must wait for.
    fn with_instance<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &Signaling) -> wasmtime::Result<R>,
    ) -> anyhow::Result<Answered<R>> {
        let pooled = self.idle.lock().unwrap().pop();
        let mut p = match pooled {
            Some(p) => p,
            None => {
                let (store, instance) = self.instantiate()?;
                Pooled {
                    store,
                    instance,
                    uses: 0,
                }
            }
        };
        let r = f(&mut p.store, &p.instance);
        // The call's writes land only if it returned; after a trap they
        // are dropped with its transaction (and the instance is retired).
        let durability = p.store.data_mut().end_call(r.is_ok())?;
        let value = r.map_err(anyhow::Error::from)?;
        p.uses += 1;
        if p.uses < MAX_REUSE {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < MAX_IDLE {
                idle.push(p);
            }
        }
        Ok(Answered { value, durability })
    }

    fn instantiate(&self) -> anyhow::Result<(Store<HostState>, Signaling)> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.kv.clone(), &self.env, false),
        );
        let instance = self.pre.instantiate(&mut store)?;
        Ok((store, instance))
    }

    pub fn handle_frame(
        &self,
        now_ms: u64,
        conn: &str,
        frame: &str,
        entropy: &[u8],
    ) -> anyhow::Result<Answered<Vec<Delivery>>> {
        self.with_instance(|store, inst| {
            inst.tern_signaling_handler()
                .call_handle_frame(store, now_ms, conn, frame, entropy)
        })
    }

    pub fn handle_disconnect(
        &self,
        now_ms: u64,
        conn: &str,
    ) -> anyhow::Result<Answered<Vec<Delivery>>> {
        self.with_instance(|store, inst| {
            inst.tern_signaling_handler()
                .call_handle_disconnect(store, now_ms, conn)
        })
    }

    pub fn handle_tick(&self, now_ms: u64) -> anyhow::Result<Answered<Vec<Delivery>>> {
        self.with_instance(|store, inst| {
            inst.tern_signaling_handler()
                .call_handle_tick(store, now_ms)
        })
    }

    pub fn handle_heartbeat(
        &self,
        now_ms: u64,
        body: &[u8],
        signature: &str,
    ) -> anyhow::Result<Result<(), HeartbeatError>> {
        // A heartbeat writes no call records: nothing to wait for.
        self.with_instance(|store, inst| {
            inst.tern_signaling_handler()
                .call_handle_heartbeat(store, now_ms, body, signature)
        })
        .map(|a| a.value)
    }
}

/// Link `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) for `tern spin`,
/// whose linker is async (wasi:http) but whose key-value calls are not.
pub fn add_keyvalue_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    Signaling::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool really holds [`MAX_INSTANCES`] instances at once (the edge
    /// asserts its calls in flight and the idle list fit in that): with
    /// room for one table per instance it ran out at half.
    #[test]
    fn the_pool_holds_every_instance_it_promises_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let kv = crate::store::open(&crate::store::StoreUrl::Embedded {
            dir: dir.path().to_path_buf(),
        })
        .unwrap();
        let host = SignalingHost::new(SIGNALING_WASM, BTreeMap::new(), kv).unwrap();
        let n = MAX_INSTANCES as usize;
        let held: Vec<_> = (0..n)
            .map(|i| {
                host.instantiate()
                    .unwrap_or_else(|e| panic!("instance {i} of {n}: {e:#}"))
            })
            .collect();
        assert_eq!(held.len(), n);
    }
}

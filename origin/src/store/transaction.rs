//! One signaling call's view of the store.
//!
//! The component's `wasi:keyvalue` calls during one host call (a frame, a
//! tick, a heartbeat) go through one [`Transaction`]; the host opens it at
//! the call's first store access and, when the call returns, either
//! finishes it (its writes land) or drops it (after a trap: none land).
//! What finishing returns, a [`Durability`], is how the answer learns it
//! must wait before it goes out: call records are acknowledged only once
//! they are durable (docs/kv-schema.md, "Durability").
//!
//! Three kinds, each with its backend's reasons:
//! - embedded: reads from one snapshot until the first write, then from
//!   the call's single write transaction (so the guest reads its own
//!   writes); commits when the call returns, without fsync, and waits for
//!   the store's group commit if it wrote call records;
//! - Redis: reads go to the server; plain writes wait in the call and go
//!   out together in one MULTI before the next read or swap, or at the end
//!   (a join's five writes in one round trip); waits for a replica if it
//!   wrote call records;
//! - autocommit (`tern spin`): each operation is its own transaction,
//!   since an HTTP request may wait in a long poll for seconds and must
//!   neither hold the embedded store's one writer nor read a stale
//!   snapshot.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::store::embedded::{Batch, EmbeddedStore, Snapshot};
use crate::store::error::StoreError;
use crate::store::kv::Kv;
use crate::store::redis::{Pending, RedisKv};
use crate::store::sync_gate::SyncError;

/// A wait for durability, begun when the answer starts waiting.
type Wait = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send>> + Send>;

/// What must happen before a call's answer may be acknowledged.
pub enum Durability {
    /// Nothing: the writes are as durable as they need to be.
    Now,
    /// Wait for a group-commit fsync or a replica's WAIT first. The wait
    /// begins (its ticket is taken) when [`Durability::reached`] is
    /// called, which the edge does as soon as the call returns: still
    /// after the commit, so the sync covers it, and a caller that never
    /// acknowledges (a benchmark of the call alone) starts no sync.
    Wait(Wait),
}

impl Durability {
    fn wait<F>(begin: impl FnOnce() -> F + Send + 'static) -> Durability
    where
        F: Future<Output = Result<(), SyncError>> + Send + 'static,
    {
        Durability::Wait(Box::new(move || Box::pin(begin())))
    }

    /// Resolve once the writes are durable.
    pub async fn reached(self) -> Result<(), SyncError> {
        match self {
            Durability::Now => Ok(()),
            Durability::Wait(begin) => begin().await,
        }
    }

    /// Whether the answer has to wait.
    pub fn must_wait(&self) -> bool {
        matches!(self, Durability::Wait(_))
    }
}

/// The store operations of one signaling call.
pub trait Transaction: Send {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values of `keys`, in order (one round trip where the backend
    /// is across the network).
    fn get_many(
        &mut self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(bucket, k)).collect()
    }

    fn set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;

    fn delete(&mut self, bucket: &str, key: &str) -> Result<(), StoreError>;

    /// Set `key` to `value` if it holds `expected` (`None`: absent).
    /// `Ok(Err(current))`: it held `current` instead and nothing changed.
    fn compare_and_swap(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError>;

    fn list_keys(&mut self, bucket: &str) -> Result<Vec<String>, StoreError>;

    /// The call returned: its writes land. `durable`: it wrote keys that
    /// must be durable before its answer goes out.
    fn finish(self: Box<Self>, durable: bool) -> Result<Durability, StoreError>;
}

impl Kv {
    /// A transaction for one signaling call.
    pub fn begin(&self) -> Box<dyn Transaction> {
        match self {
            Kv::Embedded(store) => Box::new(EmbeddedCall {
                store: store.clone(),
                snapshot: None,
                batch: None,
            }),
            Kv::Redis(redis) => Box::new(RedisCall {
                redis: redis.clone(),
                pending: Vec::new(),
            }),
        }
    }

    /// A "transaction" whose every operation commits on its own.
    pub fn autocommit(&self) -> Box<dyn Transaction> {
        Box::new(Autocommit { kv: self.clone() })
    }
}

/// See the module's first paragraph, "embedded".
struct EmbeddedCall {
    store: EmbeddedStore,
    /// The call's read transaction, until a write transaction takes over.
    /// A swap that loses opens the write transaction too, so reads after
    /// it (the guest's retry) see the current state, not the snapshot.
    snapshot: Option<Snapshot>,
    batch: Option<Batch>,
}

impl EmbeddedCall {
    fn batch(&mut self) -> Result<&mut Batch, StoreError> {
        if self.batch.is_none() {
            self.snapshot = None;
            self.batch = Some(self.store.begin()?);
        }
        Ok(self.batch.as_mut().expect("just opened"))
    }
}

impl Transaction for EmbeddedCall {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(b) = &self.batch {
            return b.get(bucket, key);
        }
        if self.snapshot.is_none() {
            self.snapshot = Some(self.store.snapshot()?);
        }
        self.snapshot
            .as_ref()
            .expect("just opened")
            .get(bucket, key)
    }

    fn set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.batch()?.set(bucket, key, value)
    }

    fn delete(&mut self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.batch()?.delete(bucket, key)
    }

    fn compare_and_swap(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        self.batch()?.compare_and_swap(bucket, key, expected, value)
    }

    fn list_keys(&mut self, bucket: &str) -> Result<Vec<String>, StoreError> {
        self.store.list_keys(bucket)
    }

    fn finish(self: Box<Self>, durable: bool) -> Result<Durability, StoreError> {
        let Some(batch) = self.batch else {
            return Ok(Durability::Now);
        };
        batch.commit()?;
        Ok(if durable {
            // Committed, not yet fsynced: a sync that begins after this
            // commit makes it durable.
            let store = self.store;
            Durability::wait(move || store.wait_durable())
        } else {
            Durability::Now
        })
    }
}

/// See the module's first paragraph, "Redis".
struct RedisCall {
    redis: Arc<RedisKv>,
    /// Plain writes not yet sent: (bucket, key, value or `None` to delete).
    pending: Vec<(String, String, Option<Vec<u8>>)>,
}

impl RedisCall {
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let writes: Vec<Pending> = pending
            .iter()
            .map(|(bucket, key, value)| Pending {
                bucket,
                key,
                value: value.as_deref(),
            })
            .collect();
        self.redis.write_many(&writes)
    }
}

impl Transaction for RedisCall {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.flush()?;
        self.redis.get(bucket, key)
    }

    fn get_many(
        &mut self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.flush()?;
        self.redis.get_many(bucket, keys)
    }

    fn set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.pending
            .push((bucket.into(), key.into(), Some(value.to_vec())));
        Ok(())
    }

    fn delete(&mut self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.pending.push((bucket.into(), key.into(), None));
        Ok(())
    }

    fn compare_and_swap(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        self.flush()?;
        self.redis.compare_and_swap(bucket, key, expected, value)
    }

    fn list_keys(&mut self, bucket: &str) -> Result<Vec<String>, StoreError> {
        self.flush()?;
        self.redis.list_keys(bucket)
    }

    fn finish(mut self: Box<Self>, durable: bool) -> Result<Durability, StoreError> {
        self.flush()?;
        // The writes are on the primary only: wait for a replica (when
        // there are replicas and waiting is on).
        if !durable || !self.redis.waits_for_replicas() {
            return Ok(Durability::Now);
        }
        let redis = self.redis.clone();
        Ok(Durability::wait(move || async move {
            match redis.wait_replicated() {
                Some(wait) => wait.await,
                None => Ok(()),
            }
        }))
    }
}

/// See the module's first paragraph, "autocommit".
struct Autocommit {
    kv: Kv,
}

impl Transaction for Autocommit {
    fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(bucket, key)
    }

    fn get_many(
        &mut self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.kv.get_many(bucket, keys)
    }

    fn set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.kv.set(bucket, key, value)
    }

    fn delete(&mut self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.kv.delete_keys(bucket, &[key.to_string()])
    }

    fn compare_and_swap(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        self.kv.compare_and_swap(bucket, key, expected, value)
    }

    fn list_keys(&mut self, bucket: &str) -> Result<Vec<String>, StoreError> {
        self.kv.list_keys(bucket)
    }

    fn finish(self: Box<Self>, _durable: bool) -> Result<Durability, StoreError> {
        Ok(Durability::Now)
    }
}

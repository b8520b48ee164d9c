//! The state store an origin runs on: the embedded redb store (one machine,
//! zero setup) or Redis (several edges, replicas, Sentinel). Both hold the
//! same buckets and keys (docs/kv-schema.md).

use std::sync::Arc;

use edge_signaling::kv::{KvError, KvRead};

use crate::redis_kv::RedisKv;
use crate::store::{EmbeddedStore, StoreError};

#[derive(Clone)]
pub enum Kv {
    Embedded(EmbeddedStore),
    Redis(Arc<RedisKv>),
}

impl Kv {
    /// Calls on a remote store block on the network, so they belong on a
    /// blocking thread, not on an async worker.
    pub fn is_remote(&self) -> bool {
        matches!(self, Kv::Redis(_))
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Kv::Embedded(s) => s.get(bucket, key),
            Kv::Redis(r) => r.get(bucket, key),
        }
    }

    pub fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        match self {
            Kv::Embedded(s) => s.set(bucket, key, value),
            Kv::Redis(r) => r.set(bucket, key, value),
        }
    }

    pub fn list_keys(&self, bucket: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Kv::Embedded(s) => s.list_keys(bucket),
            Kv::Redis(r) => r.list_keys(bucket),
        }
    }

    /// Whether the store failed a call within the last `window_ms`.
    pub fn failed_within(&self, now_ms: u64, window_ms: u64) -> bool {
        match self {
            Kv::Embedded(_) => false,
            Kv::Redis(r) => {
                let at = r.last_error_ms();
                at != 0 && now_ms.saturating_sub(at) < window_ms
            }
        }
    }

    /// Call right after a commit that must be durable before it is
    /// acknowledged; resolves once it is. Embedded store: a store sync
    /// (fsync) that began after the commit has finished, shared with other
    /// waiters. Redis: a replica has acknowledged the writes (WAIT, shared
    /// the same way), when the primary has replicas and waiting is enabled;
    /// otherwise at once, since the writes are on the server already and
    /// Redis persists them by its own policy (docs/kv-schema.md
    /// "Durability").
    pub fn wait_durable(
        &self,
    ) -> impl std::future::Future<Output = Result<(), crate::sync_gate::SyncError>> + Send + 'static
    {
        use futures_util::future::Either;
        // Taken now, not when first polled: the ticket must follow the commit.
        let wait = match self {
            Kv::Embedded(s) => Some(Either::Left(s.wait_durable())),
            Kv::Redis(r) => r.wait_replicated().map(Either::Right),
        };
        async move {
            match wait {
                Some(w) => w.await,
                None => Ok(()),
            }
        }
    }

    /// Make recent writes durable (embedded store; Redis persists itself).
    pub fn flush(&self) -> Result<(), StoreError> {
        match self {
            Kv::Embedded(s) => s.flush(),
            Kv::Redis(_) => Ok(()),
        }
    }

    /// `embedded` or `redis` (recorded in backup manifests).
    pub fn kind(&self) -> &'static str {
        match self {
            Kv::Embedded(_) => "embedded",
            Kv::Redis(_) => "redis",
        }
    }

    /// What a [`Kv::dump`] promises: `snapshot` (one read transaction) or
    /// `per-key` (Redis SCAN; see `RedisKv::dump`).
    pub fn consistency(&self) -> &'static str {
        match self {
            Kv::Embedded(_) => "snapshot",
            Kv::Redis(_) => "per-key",
        }
    }

    /// Visit every (bucket, key, value) for a backup. Blocking.
    pub fn dump<E: From<StoreError>>(
        &self,
        f: impl FnMut(&str, &str, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        match self {
            Kv::Embedded(s) => s.dump(f),
            Kv::Redis(r) => r.dump(f),
        }
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            Kv::Embedded(s) => s.is_empty(),
            Kv::Redis(r) => r.is_empty(),
        }
    }

    /// Write restored entries. Blocking.
    pub fn load<E: From<StoreError>>(
        &self,
        entries: impl Iterator<Item = Result<(String, String, Vec<u8>), E>>,
    ) -> Result<u64, E> {
        match self {
            Kv::Embedded(s) => s.load(entries),
            Kv::Redis(r) => r.load(entries),
        }
    }

    /// Read-only view of one bucket, as the signaling core reads it.
    pub fn reader(&self, bucket: &str) -> Reader<'_> {
        Reader {
            kv: self,
            bucket: bucket.to_string(),
        }
    }
}

pub struct Reader<'a> {
    kv: &'a Kv,
    bucket: String,
}

impl KvRead for Reader<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.kv
            .get(&self.bucket, key)
            .map_err(|e| KvError(e.to_string()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let keys = self
            .kv
            .list_keys(&self.bucket)
            .map_err(|e| KvError(e.to_string()))?;
        Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
    }
}

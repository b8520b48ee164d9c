//! [`Kv`]: an open store, whichever backend it is. The backend is matched
//! here and in [`crate::store::transaction`] only; everything else asks a
//! `Kv`.

use std::sync::Arc;

use edge_signaling::kv::{KvError, KvRead};

use crate::store::embedded::EmbeddedStore;
use crate::store::error::StoreError;
use crate::store::redis::RedisKv;

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

    /// The values of `keys`, in order: one snapshot on the embedded store,
    /// one round trip on Redis.
    pub fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match self {
            Kv::Embedded(s) => {
                let snap = s.snapshot()?;
                keys.iter().map(|k| snap.get(bucket, k)).collect()
            }
            Kv::Redis(r) => r.get_many(bucket, keys),
        }
    }

    /// Set `key` to `value` if it holds `expected`; `Ok(Err(current))` if
    /// it held something else (nothing changed).
    pub fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        match self {
            Kv::Embedded(s) => s.compare_and_swap(bucket, key, expected, value),
            Kv::Redis(r) => r.compare_and_swap(bucket, key, expected, value),
        }
    }

    pub fn delete_keys(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        match self {
            Kv::Embedded(s) => s.delete_keys(bucket, keys),
            Kv::Redis(r) => r.delete_keys(bucket, keys),
        }
    }

    /// Keys starting with `prefix`: a key range on the embedded store, an
    /// index on Redis for ordered groups (docs/kv-schema.md), else a scan.
    pub fn list_prefix(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Kv::Embedded(s) => s.list_prefix(bucket, prefix),
            Kv::Redis(r) => r.list_prefix(bucket, prefix),
        }
    }

    /// One page of an ordered index (`call/`, `call-room/<room>/`, …): up
    /// to `limit` last key parts, newest first, below `before`. A redb
    /// range or a Redis sorted set: never a scan.
    pub fn page_rev(
        &self,
        bucket: &str,
        index: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Kv::Embedded(s) => s.page_prefix_rev(bucket, index, before, limit),
            Kv::Redis(r) => r.page_group_rev(bucket, index, before, limit),
        }
    }

    /// The channel between edges (Redis pub/sub), where the store has one.
    pub fn bus(&self) -> Option<&Arc<RedisKv>> {
        match self {
            Kv::Embedded(_) => None,
            Kv::Redis(r) => Some(r),
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

impl From<EmbeddedStore> for Kv {
    fn from(s: EmbeddedStore) -> Kv {
        Kv::Embedded(s)
    }
}

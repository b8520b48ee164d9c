//! The core's store over `wasi:keyvalue@0.2.0-draft2` (bucket `default`), so
//! whatever backs the host's store (origin's redb or Redis, Spin's KV) is
//! the single source of truth.

use edge_signaling::apply::KvStore;
use edge_signaling::kv::{KvError, KvRead};

use crate::wasi::keyvalue::{atomics, batch, store};

/// The bucket every Tern key lives in (Spin's default store).
const BUCKET: &str = "default";

pub struct Bucket(store::Bucket);

fn kv_err(e: store::Error) -> KvError {
    KvError(match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(s) => s,
    })
}

impl Bucket {
    pub fn open() -> Result<Bucket, KvError> {
        store::open(BUCKET).map(Bucket).map_err(kv_err)
    }
}

impl KvRead for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(kv_err)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let found = batch::get_many(&self.0, keys).map_err(kv_err)?;
        if found.len() != keys.len() {
            return Err(KvError(format!(
                "get-many answered {} of {} keys",
                found.len(),
                keys.len()
            )));
        }
        Ok(found.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
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

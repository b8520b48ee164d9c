//! The core's store over `wasi:keyvalue@0.2.0-draft2` (bucket `default`), so
//! whatever backs the host's store (origin's redb or Redis, Spin's KV) is
//! the single source of truth.
//!
//! It takes the hosts' stores as they behave, not as the interface reads
//! (docs/spin.md, "Spin's key-value stores"):
//! - `get-many` may answer only the keys it found, in any order (Spin's
//!   SQLite store), so answers are matched by key; and it may fail outright
//!   (Spin's Redis store sends `KEYS k1 k2 …`, which Redis refuses), so a
//!   failed batch is read again one key at a time. One key is always read
//!   with `get`: `KEYS k` would answer as a pattern match, not an error.
//! - `swap` may report a write that landed as failed (Spin's Redis store
//!   ends each swap with `UNWATCH <key>`, which Redis refuses), so every
//!   swapped value carries a write token no other write has, and a failed
//!   swap whose key now holds exactly that value is a success.

use edge_signaling::apply::KvStore;
use edge_signaling::kv::{KvError, KvRead};

use crate::bindings::wasi::keyvalue::{atomics, batch, store};

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
        if keys.len() < 2 {
            return keys.iter().map(|k| self.get(k)).collect();
        }
        let Ok(found) = batch::get_many(&self.0, keys) else {
            return keys.iter().map(|k| self.get(k)).collect();
        };
        let mut found: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys.iter().map(|k| found.remove(k).flatten()).collect())
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
        let written = with_write_token(value, wasip2::random::random::get_random_u64());
        match atomics::swap(cas, &written) {
            Ok(()) => Ok(true),
            // Either the key changed, or the host misreported a swap that
            // landed: the fresh handle's value tells which.
            Err(atomics::CasError::CasFailed(fresh)) => {
                Ok(fresh.current().map_err(kv_err)?.as_deref() == Some(&written[..]))
            }
            Err(atomics::CasError::StoreError(e)) => Err(kv_err(e)),
        }
    }
}

/// `value` (a JSON record) followed by `token` written as 32 characters of
/// JSON whitespace, two bits each: every reader parses the record as before
/// (JSON allows whitespace after a value), and two writes of the same
/// record differ. Random 64 bits make a repeat within a key's life
/// negligible.
fn with_write_token(value: &[u8], mut token: u64) -> Vec<u8> {
    const DIGITS: [u8; 4] = [b' ', b'\t', b'\n', b'\r'];
    let mut out = Vec::with_capacity(value.len() + 32);
    out.extend_from_slice(value);
    for _ in 0..32 {
        out.push(DIGITS[(token & 3) as usize]);
        token >>= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_token_keeps_the_record_and_tells_writes_apart() {
        let room = br#"{"members":[],"relay":"a-1"}"#;
        let a = with_write_token(room, 1);
        let b = with_write_token(room, 2);
        assert_ne!(a, b);
        assert_eq!(&a[..room.len()], room);
        let parsed: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_slice::<serde_json::Value>(room).unwrap()
        );
        let n: u64 = serde_json::from_slice(&with_write_token(b"1733", u64::MAX)).unwrap();
        assert_eq!(n, 1733);
    }
}

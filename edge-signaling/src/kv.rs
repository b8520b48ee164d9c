//! The core's view of the key-value store: reads come in through [`KvRead`],
//! writes go out as [`Write`] values for the host to apply.

/// A store failure, as reported by the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key-value store: {0}")]
pub struct KvError(pub String);

/// Read access to the store. Hosts implement this over their backend
/// (embedded redb, Redis, Spin KV, a Durable Object).
pub trait KvRead {
    /// The value at `key`; `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// The values of `keys`, in their order. A backend across the network
    /// answers in one round trip (the relay directory reads five keys per
    /// relay on every join); the default asks one key at a time.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Keys starting with `prefix`, in any order. Used only off the hot path
    /// (the reroute sweep after a relay is lost), so a backend may scan.
    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError>;
}

/// A store a host can write to.
pub trait KvStore: KvRead {
    /// Set `key` to `value`, whoever wrote it last.
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Remove `key`; absent is fine.
    fn delete(&mut self, key: &str) -> Result<(), KvError>;
    /// Returns false (and changes nothing) if `key` no longer holds `expected`.
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError>;
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`, whoever wrote it last.
    Put {
        /// Key to set.
        key: String,
        /// Bytes to store: a JSON record, or empty for a marker.
        value: Vec<u8>,
    },
    /// Remove `key` (absent is fine).
    Delete {
        /// Key to remove.
        key: String,
    },
    /// Set `key` to `value` only if it still holds `expected` (None: absent).
    /// If it does not, the whole outcome must be discarded and the input
    /// handled again on fresh reads.
    Cas {
        /// Key to swap.
        key: String,
        /// Raw value the input was handled on (`None`: absent).
        expected: Option<Vec<u8>>,
        /// Bytes to store if `key` still holds `expected`.
        value: Vec<u8>,
    },
}

/// An in-memory store for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemoryKv {
    /// Every key and its value, in key order (so `list` is a range scan).
    pub map: std::collections::BTreeMap<String, Vec<u8>>,
}

impl KvRead for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.get(key).cloned())
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(self
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

impl KvStore for MemoryKv {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.map.insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<(), KvError> {
        self.map.remove(key);
        Ok(())
    }
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        if self.map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        self.map.insert(key.to_string(), value.to_vec());
        Ok(true)
    }
}

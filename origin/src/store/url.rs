//! Naming a store (`--kv`, `--data-dir`) and opening it: the one place a
//! command's flags become a backend.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::embedded::{self, EmbeddedStore};
use crate::store::error::StoreError;
use crate::store::kv::Kv;
use crate::store::redis::RedisKv;

/// Where state lives, as `--kv` and `--data-dir` name it.
#[derive(Debug, Clone)]
pub enum StoreUrl {
    /// The embedded store in this directory.
    Embedded { dir: PathBuf },
    /// Redis (`redis://…`) or Sentinel (`redis+sentinel://…`), keys under
    /// `prefix`, frames with call records waiting up to `replica_wait` for
    /// a replica (zero: not at all).
    Redis {
        url: String,
        prefix: String,
        replica_wait: Duration,
        /// Connections kept open for reuse: one per call that may be in
        /// flight. With fewer (it was 16), every call beyond the pool
        /// opened a connection and closed it after: when an edge took over
        /// a dead edge's thousand sessions, it opened hundreds of
        /// connections to Redis in a second.
        connections: usize,
    },
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Embedded { dir } => write!(f, "embedded in {}", dir.display()),
            StoreUrl::Redis { url, .. } => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` without a password (`redis://:secret@host` -> `redis://:***@host`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl StoreUrl {
    /// An embedded store whose directory holds no store file yet (opening
    /// it would create one).
    pub fn is_missing(&self) -> bool {
        match self {
            StoreUrl::Embedded { dir } => !embedded::exists(dir),
            StoreUrl::Redis { .. } => false,
        }
    }
}

/// Open the store `url` names (blocking: Redis connects here).
pub fn open(url: &StoreUrl) -> Result<Kv, StoreError> {
    Ok(match url {
        StoreUrl::Embedded { dir } => Kv::Embedded(EmbeddedStore::open(dir)?),
        StoreUrl::Redis {
            url,
            prefix,
            replica_wait,
            connections,
        } => {
            let mut r = RedisKv::connect(url, prefix, *connections)?;
            if !replica_wait.is_zero() {
                r.enable_replica_wait(*replica_wait)?;
            }
            Kv::Redis(Arc::new(r))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_leaves_in_a_url() {
        assert_eq!(redact_url("redis://:pw@h:6379"), "redis://…@h:6379");
        assert_eq!(redact_url("embedded"), "embedded");
    }
}

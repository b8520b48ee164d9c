//! The state store an origin runs on: the embedded redb store (one machine,
//! zero setup) or Redis (several edges, replicas, Sentinel). Both hold the
//! same buckets and keys (docs/kv-schema.md).
//!
//! Which backend a store is matters only in here: the rest of origin holds
//! a [`Kv`] and asks it, or opens a per-call [`Transaction`] through it.
//!
//! * [`url`]: `--kv` / `--data-dir` as a [`StoreUrl`], and opening it.
//! * [`kv`]: [`Kv`], an open store of either kind.
//! * [`transaction`]: one signaling call's view of the store.
//! * [`embedded`]: redb, one file, group commit ([`sync_gate`]).
//! * [`redis`]: Redis or Sentinel, ordered-group indexes, replica waits.
//! * [`error`]: the store error, [`StoreError`].

pub mod embedded;
pub mod error;
pub mod kv;
pub mod redis;
pub mod sync_gate;
pub mod transaction;
pub mod url;

pub use embedded::FLUSH_INTERVAL;
pub use error::StoreError;
pub use kv::Kv;
pub use transaction::{Durability, Transaction};
pub use url::{open, redact_url, StoreUrl};

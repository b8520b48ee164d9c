//! Tern's signaling core, protocol v1 (docs/protocol.md).
//!
//! The core is sans-IO: a host hands it one input (a frame from a connection,
//! a disconnect, a relay heartbeat), the current time, some entropy and a
//! read-only view of the key-value store; it returns an [`Outcome`]: the KV
//! writes to apply and the frames to deliver to connections. It never reads a
//! clock, never draws random numbers and keeps no state between calls, so a
//! host may create it per frame and throw it away, and tests drive it with
//! simulated time.
//!
//! Consistency: every write except one is to a key with a single writer. The
//! one shared key per call is the room roster, written with compare-and-swap
//! ([`Write::Cas`]); a host that sees the swap fail simply runs the same input
//! again on fresh reads (see [`apply`]).

#![warn(missing_docs, unreachable_pub)]

pub mod apply;
pub mod call_sweep;
pub mod calls;
pub mod config;
pub mod directory;
pub mod error;
pub mod frame;
pub mod health;
pub mod keys;
pub mod kv;
pub mod loss;
pub mod model;
pub mod outcome;
pub mod record;
pub mod reroute;
pub mod signaling;
pub mod token;

pub use apply::run;
pub use config::Config;
pub use error::ErrorCode;
pub use kv::{KvError, KvRead, KvStore, Write};
pub use outcome::{Delivery, Outcome};
pub use signaling::Signaling;

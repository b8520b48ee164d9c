//! Shared vocabulary between Tern's signaling plane and its media relays.
//!
//! * [`credentials`]: the TURN REST credential scheme (the one coturn's
//!   `use-auth-secret` accepts), minted by signaling and checked by relays.
//! * [`relay`]: the relay directory record a relay heartbeats into the
//!   signaling plane, and how a heartbeat is signed and verified.
//! * [`secret`]: how long a shared secret must be.
//!
//! Everything here is pure computation so that it builds for wasm targets.

#![warn(missing_docs, unreachable_pub)]

pub mod credentials;
pub mod relay;
pub mod secret;

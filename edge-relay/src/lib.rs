//! tern-relay's TURN engine (RFC 8656 over UDP, STUN RFC 8489), sans-IO.
//!
//! The engine ([`Relay`]) is a plain state machine in the shape of
//! quinn-proto and str0m: the host feeds it datagrams, driver answers and
//! time, and drains transmits, events and the next timeout. The driver (one
//! epoll loop per core, plus tokio for TCP/TLS, heartbeats and admin) lives
//! in [`server`] (feature `server`, on by default).
//!
//! Modules, one concept each:
//! * [`stun`]: message codec (parse, build, integrity, fingerprint)
//! * [`auth`]: long-term credentials with TURN REST usernames, stateless nonces
//! * [`policy`]: which peer addresses may be relayed to
//! * [`allocation`]: one allocation's permissions and channels
//! * [`quota`]: bandwidth token bucket, per-IP Allocate rate limit
//! * [`stats`]: counters for traffic, drops by reason, auth, quota hits
//! * [`engine`]: the [`Relay`] state machine tying them together

#![warn(missing_docs, unreachable_pub)]

pub mod allocation;
pub mod auth;
pub mod engine;
pub mod policy;
pub mod quota;
#[cfg(feature = "server")]
pub mod server;
pub mod stats;
pub mod stun;

/// The maps on the packet path (allocations by 5-tuple and relayed address,
/// permissions, channels). foldhash instead of std's SipHash: nine lookups
/// per relayed packet (four on a remembered local route) made SipHash ~3 %
/// of the relay's CPU in a profile.
/// Its seed is random per map, so an attacker cannot precompute colliding
/// keys; and every key is inserted only after authentication.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use allocation::{AllocationId, FiveTuple, Transport};
pub use engine::{
    BindError, Config, Event, Family, Forward, Relay, ReleaseReason, Route, Transmit,
    CHANNEL_DATA_HEADROOM,
};
pub use policy::PeerPolicy;
pub use quota::Bandwidth;
pub use stats::{AuthOutcome, DropReason, Quota, Stats};

#[cfg(test)]
mod tests;

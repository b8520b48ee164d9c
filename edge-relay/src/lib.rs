//! tern-relay's TURN engine (RFC 8656 over UDP, STUN RFC 8489), sans-IO.
//!
//! The engine ([`Relay`]) is a plain state machine in the shape of
//! quinn-proto and str0m: the host feeds it datagrams, driver answers and
//! time, and drains transmits, events and the next timeout. The tokio driver
//! lives in [`server`] (feature `server`, on by default); a later recvmmsg driver reuses the
//! same engine.
//!
//! Modules, one concept each:
//! * [`stun`]: message codec (parse, build, integrity, fingerprint)
//! * [`auth`]: long-term credentials with TURN REST usernames, stateless nonces
//! * [`policy`]: which peer addresses may be relayed to
//! * [`allocation`]: one allocation's permissions and channels
//! * [`quota`]: bandwidth token bucket, per-IP Allocate rate limit
//! * [`stats`]: counters for traffic, drops by reason, auth, quota hits
//! * [`engine`]: the [`Relay`] state machine tying them together

pub mod allocation;
pub mod auth;
pub mod engine;
pub mod policy;
pub mod quota;
#[cfg(feature = "server")]
pub mod server;
pub mod stats;
pub mod stun;

pub use allocation::{AllocationId, FiveTuple, Transport};
pub use engine::{
    BindError, Config, Event, Family, Forward, Relay, ReleaseReason, Transmit,
    CHANNEL_DATA_HEADROOM,
};
pub use policy::PeerPolicy;
pub use quota::Bandwidth;
pub use stats::{AuthOutcome, DropReason, Quota, Stats};

#[cfg(test)]
mod tests;

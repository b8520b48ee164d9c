//! tern-loadgen: a TURN load generator and a small TURN client library.
//!
//! * [`client`]: sans-IO TURN client (Allocate with the 401 dance,
//!   CreatePermission, ChannelBind, Refresh, ChannelData framing), usable by
//!   tests on its own.
//! * [`harness`]: N pairs of clients on real sockets, set up against a
//!   relay; [`traffic`] runs a measurement step over them, [`search`] finds
//!   the highest zero-loss rate.
//! * [`forwarder`] + [`bare`]: the bare recvmmsg/sendmmsg forwarder used as
//!   the physical floor in benchmarks, and its client.
//! * [`stun`]: the client's own minimal STUN codec.
//! * [`payload`], [`stats`], [`procstat`], [`mmsg`], [`epoll`]: probe
//!   packets, latency histogram, /proc readings, batched syscalls,
//!   level-triggered epoll.
//!
//! Linux only (recvmmsg/sendmmsg, /proc).

pub mod bare;
pub mod client;
pub mod forwarder;
pub mod harness;
pub mod op;
pub mod payload;
pub mod procstat;
pub mod search;
pub mod session;
pub mod stats;
pub mod stun;
pub mod traffic;

pub use client::{ClientError, TurnClient};
pub use harness::{Harness, SetupConfig, SetupReport, Target};
pub use search::{SearchConfig, SearchReport};
pub use session::{Session, SessionEvent};
pub use traffic::{StepConfig, StepReport};

/// Why a load run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client {client}: {error}")]
    Client { client: usize, error: ClientError },
    #[error("setup timed out in the {phase} phase: {done} of {total} clients done")]
    SetupTimeout {
        done: usize,
        total: usize,
        phase: &'static str,
    },
    #[error("bad configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests;

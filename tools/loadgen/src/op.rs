//! A TURN client's operations and why one failed: shared by the client's
//! state machine and the sessions built on it.

use std::net::SocketAddr;

/// Sends of a request before it times out (RFC 8489's Rc).
pub const MAX_SENDS: u32 = 7;

/// The request a transaction carries, so a 401/438 can resend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission { peer: SocketAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{op:?} got error {code}")]
    Rejected { op: Op, code: u16 },
    #[error("{op:?} timed out after {MAX_SENDS} sends")]
    Timeout { op: Op },
    #[error("{op:?}: success answer without a usable {what}")]
    BadAnswer { op: Op, what: &'static str },
    #[error("{0:?} needs an allocation first")]
    NotAllocated(Op),
}

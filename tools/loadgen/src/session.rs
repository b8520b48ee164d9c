//! What the load generator needs from a relay client, whichever relay it is:
//! a TURN server ([`crate::client::TurnClient`]) or the bare forwarder
//! ([`crate::bare::BareClient`]). Both are sans-IO; the runner owns sockets
//! and clocks.

use std::net::SocketAddr;
use std::time::Instant;

use crate::op::ClientError;

/// Progress of one client, drained with [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Allocated { relayed: SocketAddr },
    PermissionCreated { peer: SocketAddr },
    ChannelBound { peer: SocketAddr, channel: u16 },
    Failed(ClientError),
}

pub trait Session {
    /// Ask for a relayed address.
    fn allocate(&mut self, now: Instant);
    /// Let `peer` in and give it `channel`, so media flows as ChannelData.
    fn bind(&mut self, now: Instant, peer: SocketAddr, channel: u16);
    /// Give the allocation back (TURN: Refresh with LIFETIME 0), so the
    /// relay's state and the client's 5-tuple are free for the next run.
    fn release(&mut self, now: Instant);
    /// A datagram from the server that is not ChannelData.
    fn handle_control(&mut self, now: Instant, datagram: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    fn poll_event(&mut self) -> Option<SessionEvent>;
}

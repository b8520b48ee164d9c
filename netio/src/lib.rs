//! Batched UDP I/O for Linux.
//!
//! * [`epoll`]: a level-triggered epoll. mio is edge-triggered only, which
//!   makes every reader drain its socket until EAGAIN: with thousands of
//!   sockets that each get one datagram per wakeup, that is one wasted
//!   syscall per packet.
//! * [`mmsg`]: recvmmsg/sendmmsg batches with buffers allocated once.
//! * [`waker`]: an eventfd that wakes an epoll loop from another thread.
//! * [`refusal`]: ICMP port-unreachable answers on an unconnected socket.
//!
//! Shared by tern-relay's datapath and tern-loadgen (the generator and the
//! bare forwarder the relay is benchmarked against), so both measure the
//! same I/O code.

pub mod epoll;
pub mod mmsg;
pub mod refusal;
mod sockaddr;
pub mod waker;

pub use epoll::Epoll;
pub use mmsg::{RecvBatch, SendBatch};
pub use waker::Waker;

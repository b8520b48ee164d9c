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

/// Ask for a receive buffer of `bytes` on socket `fd` (SO_RCVBUF; the kernel
/// caps it at net.core.rmem_max and doubles it for its own bookkeeping).
pub fn set_receive_buffer(fd: std::os::fd::RawFd, bytes: usize) -> std::io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v)
}

/// setsockopt for the many options whose value is a C int.
fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

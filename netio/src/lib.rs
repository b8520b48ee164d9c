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

#![warn(missing_docs, unreachable_pub)]

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

/// Datagrams the kernel dropped on socket `fd` so far because its receive
/// buffer was full (SO_MEMINFO's drop counter). A load generator reads it
/// to tell its own losses from the relay's.
pub fn receive_drops(fd: std::os::fd::RawFd) -> std::io::Result<u64> {
    // SK_MEMINFO_VARS is 9 today; room for counters newer kernels add.
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
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

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_full_receive_buffer_counts_what_it_drops() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(super::receive_drops(rx.as_raw_fd()).unwrap(), 0);
        super::set_receive_buffer(rx.as_raw_fd(), 1).unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        assert!(super::receive_drops(rx.as_raw_fd()).unwrap() > 0);
    }
}

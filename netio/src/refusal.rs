//! "Port unreachable" answers to datagrams sent from an unconnected socket.
//!
//! When a UDP server process dies on a host that is still up, the host's
//! kernel answers every datagram to its port with ICMP port unreachable. An
//! unconnected socket never hears of it unless IP_RECVERR (IPV6_RECVERR) is
//! on; then each such ICMP lands on the socket's error queue with the
//! address the refused datagram was sent to, and the socket polls as
//! errored (EPOLLERR). Signaling's relay prober uses this to tell a crashed
//! relay within one probe round trip instead of waiting out a silence.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sockaddr;

/// Ask for ICMP errors on `fd` (a UDP socket of the given family).
pub fn enable(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    crate::set_int_option(fd, level, name, 1)
}

/// What one entry of the error queue says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedError {
    /// The datagram to this address was refused (port unreachable).
    Refused(SocketAddr),
    /// Some other ICMP error (host unreachable, too big, …), ignored here:
    /// only a refusal says a process is gone from a live host.
    Other,
}

/// Take one entry off `fd`'s error queue (non-blocking; `WouldBlock` when
/// it is empty).
pub fn recv(fd: RawFd) -> io::Result<QueuedError> {
    // SAFETY: zeroed plain-data structs; recvmsg writes at most the sizes
    // we declare into buffers we own.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 64];
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at the buffers above, alive for the call.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel just wrote, with the
    // libc macros, within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let c = unsafe { &*cmsg };
        let recverr = (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR)
            || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
        if recverr {
            let ee = unsafe { &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err) };
            let from_icmp = matches!(
                ee.ee_origin,
                libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6
            );
            if from_icmp && ee.ee_errno == libc::ECONNREFUSED as u32 {
                if let Some(to) = sockaddr::read(&name) {
                    return Ok(QueuedError::Refused(to));
                }
            }
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(QueuedError::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    #[test]
    fn a_datagram_to_a_closed_port_comes_back_refused() {
        // A port that was just free: nothing listens there.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let open = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        enable(s.as_raw_fd(), false).unwrap();
        s.send_to(b"x", open.local_addr().unwrap()).unwrap();
        s.send_to(b"x", closed).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = loop {
            match recv(s.as_raw_fd()) {
                Ok(e) => break e,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no ICMP error queued");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, QueuedError::Refused(closed));
        // The datagram to the open port was delivered, not refused.
        assert_eq!(
            recv(s.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}

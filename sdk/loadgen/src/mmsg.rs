//! recvmmsg/sendmmsg batches (Linux), the only unsafe code in the crate.
//!
//! One syscall moves up to a batch of datagrams; buffers, iovecs and address
//! storage are allocated once and reused, so the forwarding loop does not
//! allocate. IPv4 only: the benchmark runs on 127.0.0.0/8.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Largest datagram a slot holds; media packets are far smaller.
pub const SLOT: usize = 2048;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// Receive side: `n` slots, each with `headroom` spare bytes in front of the
/// datagram (room to prepend a ChannelData header without a copy).
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    headroom: usize,
}

impl RecvBatch {
    pub fn new(n: usize, headroom: usize) -> Self {
        let mut b = RecvBatch {
            bufs: vec![0u8; n * SLOT],
            // SAFETY: plain old data, zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            headroom,
        };
        // The Vecs never grow after this, so the pointers stay valid for the
        // life of the batch even when the struct itself moves.
        for i in 0..n {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * SLOT + headroom..].as_mut_ptr().cast(),
                iov_len: SLOT - headroom,
            });
        }
        for i in 0..n {
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// One non-blocking recvmmsg; `Ok(0)` means nothing was waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, sized as
        // declared in their iovecs.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }

    /// Datagram `i` of the last receive (without headroom) and its sender.
    pub fn get(&self, i: usize) -> (SocketAddrV4, &[u8]) {
        let len = self.hdrs[i].msg_len as usize;
        let start = i * SLOT + self.headroom;
        (
            from_sockaddr(&self.addrs[i]),
            &self.bufs[start..start + len],
        )
    }

    /// Slot `i` including its headroom: `(sender, slot, datagram length)`.
    pub fn slot_mut(&mut self, i: usize) -> (SocketAddrV4, &mut [u8], usize) {
        let len = self.hdrs[i].msg_len as usize;
        let from = from_sockaddr(&self.addrs[i]);
        let slot = &mut self.bufs[i * SLOT..(i + 1) * SLOT];
        (from, slot, len)
    }
}

/// Send side: datagrams to many destinations from one socket in one syscall.
pub struct SendBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
}

impl SendBatch {
    pub fn new(n: usize) -> Self {
        let mut b = SendBatch {
            bufs: vec![0u8; n * SLOT],
            // SAFETY: plain old data, zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            len: 0,
        };
        for i in 0..n {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: 0,
            });
        }
        for i in 0..n {
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    pub fn is_full(&self) -> bool {
        self.len == self.hdrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue one datagram to `to`; `fill` writes it into the slot and returns
    /// its length. The caller flushes before the batch is full.
    pub fn push(&mut self, to: SocketAddrV4, fill: impl FnOnce(&mut [u8]) -> usize) {
        let i = self.len;
        let n = fill(&mut self.bufs[i * SLOT..(i + 1) * SLOT]);
        self.iovs[i].iov_len = n;
        self.addrs[i] = to_sockaddr(to);
        self.len += 1;
    }

    /// Send everything queued. Returns how many datagrams were not sent:
    /// on a full socket buffer the rest of the batch is dropped (as a relay
    /// would: late media is worthless); a datagram the kernel refuses for
    /// its own reason (e.g. ECONNREFUSED left by an old ICMP) is skipped.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let (mut at, mut dropped) = (0, 0);
        while at < self.len {
            // SAFETY: headers `at..len` point at initialised slots we own.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[at..].as_mut_ptr(),
                    (self.len - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                at += r as usize;
            } else if is_would_block() {
                dropped += self.len - at;
                break;
            } else {
                dropped += 1;
                at += 1;
            }
        }
        self.len = 0;
        dropped
    }
}

fn is_would_block() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

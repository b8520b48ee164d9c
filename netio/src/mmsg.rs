//! recvmmsg/sendmmsg batches.
//!
//! One syscall moves up to a batch of datagrams; buffers, iovecs and address
//! storage are allocated once and reused, so a forwarding loop built on them
//! does not allocate. IPv4 and IPv6.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sockaddr;

/// Receive side: `n` slots of `slot` bytes, each with `headroom` spare bytes
/// in front of the datagram (room to prepend a header, e.g. ChannelData's,
/// without a copy).
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    slot: usize,
    headroom: usize,
}

// SAFETY: the raw pointers in the headers point into the batch's own heap
// buffers, which move with it; nothing is shared between threads.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize, slot: usize, headroom: usize) -> Self {
        assert!(headroom < slot, "headroom must leave room for data");
        let mut b = RecvBatch {
            bufs: vec![0u8; n * slot],
            // SAFETY: plain old data, zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            slot,
            headroom,
        };
        // The Vecs never grow after this, so the pointers stay valid for the
        // life of the batch even when the struct itself moves.
        for i in 0..n {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * slot + headroom..].as_mut_ptr().cast(),
                iov_len: slot - headroom,
            });
        }
        for i in 0..n {
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Slots in the batch.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// One non-blocking recvmmsg; `Ok(0)` means nothing was waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_into(fd, 0, self.hdrs.len())
    }

    /// One non-blocking recvmmsg into slots `first..first + max` only, so a
    /// caller can gather from several sockets into one batch. Returns how
    /// many datagrams arrived (in slots `first..`).
    pub fn recv_into(&mut self, fd: RawFd, first: usize, max: usize) -> io::Result<usize> {
        let end = (first + max).min(self.hdrs.len());
        if first >= end {
            return Ok(0);
        }
        for h in &mut self.hdrs[first..end] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, sized as
        // declared in their iovecs; `first..end` is in bounds.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs[first..].as_mut_ptr(),
                (end - first) as u32,
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

    /// Datagram `i` of the last receive (without headroom) and its sender
    /// (`None` for an address family other than IPv4/IPv6).
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let len = self.hdrs[i].msg_len as usize;
        let start = i * self.slot + self.headroom;
        (
            sockaddr::read(&self.addrs[i]),
            &self.bufs[start..start + len],
        )
    }

    /// Datagram `i` with its headroom in front: `(sender, headroom + datagram)`.
    pub fn slot_mut(&mut self, i: usize) -> (Option<SocketAddr>, &mut [u8]) {
        let len = self.hdrs[i].msg_len as usize;
        let from = sockaddr::read(&self.addrs[i]);
        let start = i * self.slot;
        (from, &mut self.bufs[start..start + self.headroom + len])
    }
}

/// Send side: datagrams to many destinations from one socket in one syscall.
pub struct SendBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    slot: usize,
    len: usize,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(n: usize, slot: usize) -> Self {
        let mut b = SendBatch {
            bufs: vec![0u8; n * slot],
            // SAFETY: plain old data, zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            slot,
            len: 0,
        };
        for i in 0..n {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * slot..].as_mut_ptr().cast(),
                iov_len: 0,
            });
        }
        for i in 0..n {
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Largest datagram one slot holds.
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    pub fn is_full(&self) -> bool {
        self.len == self.hdrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue one datagram to `to`; `fill` writes it into the slot (of
    /// [`SendBatch::slot_size`] bytes) and returns its length. The caller
    /// flushes before the batch is full.
    pub fn push(&mut self, to: SocketAddr, fill: impl FnOnce(&mut [u8]) -> usize) {
        let i = self.len;
        let n = fill(&mut self.bufs[i * self.slot..(i + 1) * self.slot]);
        self.iovs[i].iov_len = n;
        self.hdrs[i].msg_hdr.msg_namelen = sockaddr::write(to, &mut self.addrs[i]);
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
            } else if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_carry_datagrams_and_senders_both_ways() {
        for ip in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(a) = UdpSocket::bind(ip) else { continue }; // no IPv6 here
            let b = UdpSocket::bind(ip).unwrap();
            let mut tx = SendBatch::new(8, 64);
            for i in 0..5u8 {
                tx.push(b.local_addr().unwrap(), |s| {
                    s[..3].copy_from_slice(&[i, i, i]);
                    3
                });
            }
            assert_eq!(tx.flush(a.as_raw_fd()), 0);
            let mut rx = RecvBatch::new(4, 64, 4);
            // Loopback delivery is synchronous: all five are queued now.
            assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 4);
            for i in 0..4 {
                let (from, d) = rx.get(i);
                assert_eq!(from, Some(a.local_addr().unwrap()));
                assert_eq!(d, &[i as u8; 3]);
            }
            let (_, slot) = rx.slot_mut(2);
            assert_eq!(slot.len(), 4 + 3);
            assert_eq!(rx.recv_into(b.as_raw_fd(), 3, 5).unwrap(), 1);
            assert_eq!(rx.get(3).1, &[4u8; 3]);
            assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 0);
        }
    }
}

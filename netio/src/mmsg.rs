//! recvmmsg/sendmmsg batches.
//!
//! One syscall moves up to a batch of datagrams; buffers, iovecs and address
//! storage are allocated once and reused, so a forwarding loop built on them
//! does not allocate. IPv4 and IPv6.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sockaddr;

/// Buffers, address storage, iovecs and headers for `n` datagrams of up to
/// `slot` bytes, wired together once. The Vecs never grow after this, so the
/// pointers stay valid for the life of the batch even when it moves.
struct Slots {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    slot: usize,
}

impl Slots {
    /// Each iovec starts `offset` bytes into its slot and spans `len` bytes.
    fn new(n: usize, slot: usize, offset: usize, len: usize) -> Self {
        let mut s = Slots {
            bufs: vec![0u8; n * slot],
            // SAFETY: plain old data, zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovs: Vec::with_capacity(n),
            hdrs: Vec::with_capacity(n),
            slot,
        };
        for i in 0..n {
            s.iovs.push(libc::iovec {
                iov_base: s.bufs[i * slot + offset..].as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for i in 0..n {
            // SAFETY: plain old data, zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut s.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut s.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            s.hdrs.push(h);
        }
        s
    }
}

// SAFETY: the raw pointers in the headers point into the batch's own heap
// buffers, which move with it; nothing is shared between threads.
unsafe impl Send for Slots {}

/// Receive side: `n` slots of `slot` bytes, each with `headroom` spare bytes
/// in front of the datagram (room to prepend a header, e.g. ChannelData's,
/// without a copy).
pub struct RecvBatch {
    s: Slots,
    headroom: usize,
}

impl RecvBatch {
    /// `n` slots of `slot` bytes each, of which the first `headroom` bytes
    /// stay free in front of the received datagram.
    pub fn new(n: usize, slot: usize, headroom: usize) -> Self {
        assert!(headroom < slot, "headroom must leave room for data");
        RecvBatch {
            s: Slots::new(n, slot, headroom, slot - headroom),
            headroom,
        }
    }

    /// Slots in the batch.
    pub fn capacity(&self) -> usize {
        self.s.hdrs.len()
    }

    /// One non-blocking recvmmsg; `Ok(0)` means nothing was waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_into(fd, 0, self.s.hdrs.len())
    }

    /// One non-blocking recvmmsg into slots `first..first + max` only, so a
    /// caller can gather from several sockets into one batch. Returns how
    /// many datagrams arrived (in slots `first..`).
    pub fn recv_into(&mut self, fd: RawFd, first: usize, max: usize) -> io::Result<usize> {
        let end = (first + max).min(self.s.hdrs.len());
        if first >= end {
            return Ok(0);
        }
        for h in &mut self.s.hdrs[first..end] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, sized as
        // declared in their iovecs; `first..end` is in bounds.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.s.hdrs[first..].as_mut_ptr(),
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
        let len = self.s.hdrs[i].msg_len as usize;
        let start = i * self.s.slot + self.headroom;
        (
            sockaddr::read(&self.s.addrs[i]),
            &self.s.bufs[start..start + len],
        )
    }

    /// Datagram `i` with its headroom in front: `(sender, headroom + datagram)`.
    pub fn slot_mut(&mut self, i: usize) -> (Option<SocketAddr>, &mut [u8]) {
        let len = self.s.hdrs[i].msg_len as usize;
        let from = sockaddr::read(&self.s.addrs[i]);
        let start = i * self.s.slot;
        (from, &mut self.s.bufs[start..start + self.headroom + len])
    }
}

/// Send side: datagrams to many destinations from one socket in one syscall.
pub struct SendBatch {
    s: Slots,
    len: usize,
}

impl SendBatch {
    /// Room for `n` queued datagrams of up to `slot` bytes each.
    pub fn new(n: usize, slot: usize) -> Self {
        SendBatch {
            s: Slots::new(n, slot, 0, 0),
            len: 0,
        }
    }

    /// Largest datagram one slot holds.
    pub fn slot_size(&self) -> usize {
        self.s.slot
    }

    /// Every slot is queued: [`SendBatch::flush`] before the next push.
    pub fn is_full(&self) -> bool {
        self.len == self.s.hdrs.len()
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue one datagram to `to`; `fill` writes it into the slot (of
    /// [`SendBatch::slot_size`] bytes) and returns its length. The caller
    /// flushes before the batch is full.
    pub fn push(&mut self, to: SocketAddr, fill: impl FnOnce(&mut [u8]) -> usize) {
        let i = self.len;
        let n = fill(&mut self.s.bufs[i * self.s.slot..(i + 1) * self.s.slot]);
        self.s.iovs[i].iov_len = n;
        self.s.hdrs[i].msg_hdr.msg_namelen = sockaddr::write(to, &mut self.s.addrs[i]);
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
                    self.s.hdrs[at..].as_mut_ptr(),
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

//! Wake an epoll loop from another thread: an eventfd the loop watches.
//! Used when a channel into the loop gets a message (TCP/TLS input, metrics
//! requests, stop); UDP traffic never goes through it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd an epoll loop watches, which any thread may make readable.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A fresh non-blocking eventfd, not readable until [`Waker::wake`].
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Make the fd readable (wakes a level-triggered epoll until [`Waker::reset`]).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter saturated)
        // means it is readable already, which is all a wake needs.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Clear the readiness; call before looking at what the wakers sent, so
    /// a wake that races with the look is not lost.
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN is fine.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

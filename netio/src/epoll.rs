//! A level-triggered epoll, because mio (edge-triggered only) makes every
//! reader drain its socket until EAGAIN: with thousands of sockets that each
//! get one datagram per wakeup, that is one wasted syscall per packet.
//! Level-triggered, a reader takes what it wants (one datagram, or one
//! recvmmsg batch) and epoll reports the socket again if more is waiting.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A level-triggered epoll instance with a reusable buffer for ready events.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    /// An epoll that reports up to `capacity` ready descriptors per [`Epoll::wait`].
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: fd is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            ready: 0,
        })
    }

    /// Watch `fd` for input (level-triggered), reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stop watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout` (`None`: forever; zero: just look). Returns the
    /// number of ready tokens, read them with [`Epoll::token`].
    ///
    /// Uses epoll_pwait2 (nanosecond timeout, Linux 5.11+) so the generator
    /// can sleep until the next packet is due instead of spinning; falls
    /// back to millisecond epoll_wait on older kernels.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the buffer holds `events.len()` entries; `ts` outlives the
        // call; a null sigmask means "do not change it".
        let mut n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            let ms = timeout.map_or(-1, |d| {
                d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            });
            // SAFETY: as above.
            n = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    self.events.len() as i32,
                    ms,
                )
            };
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            self.ready = 0;
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.ready = n as usize;
        Ok(self.ready)
    }

    /// Make this thread's timed sleeps precise to ~1 µs instead of the
    /// default 50 µs slack, so paced sends leave on time.
    pub fn tighten_timer_slack() {
        // SAFETY: prctl with PR_SET_TIMERSLACK only affects this thread.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        }
    }

    /// Token of ready entry `i`, for `i` below what the last [`Epoll::wait`] returned.
    pub fn token(&self, i: usize) -> u64 {
        debug_assert!(i < self.ready);
        self.events[i].u64
    }
}

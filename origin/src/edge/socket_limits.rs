//! What one browser, or one address, may ask of an edge's sockets: frames
//! per second per socket and sockets per client address. (What a socket
//! may make the edge hold for it is [`crate::edge::outbound`].)
//!
//! Frames over the rate are not refused but delayed: the edge stops reading
//! the socket until the frame's turn comes, so TCP pushes back on the
//! sender. An honest client in a burst (a joiner's offers and ICE
//! candidates to fifteen peers) loses nothing; a flood costs the edge one
//! frame's work per interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits an edge applies to its WebSocket clients (flags of `tern serve`).
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Sustained frames per second one socket may send (0 = no limit).
    pub frames_per_sec: u32,
    /// Frames one socket may send at once after being quiet.
    pub frame_burst: u32,
    /// Sockets open at once from one client address (IPv6: one /64);
    /// more get 429 before the upgrade (0 = no limit).
    pub sockets_per_ip: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            // A call's signaling is a few frames a second; a joiner in a
            // full room sends an offer and its ICE candidates to each of 15
            // peers at once, a few hundred frames.
            frames_per_sec: 100,
            frame_burst: 400,
            // A school or an office behind one NAT address.
            sockets_per_ip: 200,
        }
    }
}

/// A token bucket over frames, in the caller's time.
#[derive(Debug)]
pub struct FrameRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl FrameRate {
    pub fn new(limits: &SocketLimits, now: Instant) -> Self {
        FrameRate {
            per_sec: limits.frames_per_sec as f64,
            burst: limits.frame_burst.max(1) as f64,
            tokens: limits.frame_burst.max(1) as f64,
            last: now,
        }
    }

    /// Take one frame's token at `now`: `None` if the frame may go now,
    /// else how long to wait before it may (its token is already taken).
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        if self.per_sec <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_sec))
    }
}

/// Sockets open per client address.
#[derive(Debug, Default)]
pub struct SocketsPerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open socket's place in [`SocketsPerIp`]; dropping it frees it.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<SocketsPerIp>,
    key: IpAddr,
}

impl SocketsPerIp {
    /// A place for one more socket from `ip`, or `None` if it has `max`
    /// open already (`max` 0: no limit).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let key = address_key(ip);
        let mut open = self.open.lock().expect("not poisoned");
        let n = open.entry(key).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What one client counts as: its IPv4 address, or the /64 of its IPv6
/// address (one host gets a whole /64, so counting single addresses would
/// limit nothing). An IPv4-mapped address is its IPv4 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_beyond_the_burst_wait_their_turn() {
        let limits = SocketLimits {
            frames_per_sec: 10,
            frame_burst: 3,
            sockets_per_ip: 0,
        };
        let t0 = Instant::now();
        let mut rate = FrameRate::new(&limits, t0);
        for _ in 0..3 {
            assert_eq!(rate.take(t0), None);
        }
        let wait = rate.take(t0).expect("over the burst");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        let wait = rate.take(t0).expect("the next waits longer");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // After a quiet second the burst is back, no more.
        let t1 = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            assert_eq!(rate.take(t1), None);
        }
        assert!(rate.take(t1).is_some());
        let mut free = FrameRate::new(
            &SocketLimits {
                frames_per_sec: 0,
                ..limits
            },
            t0,
        );
        assert!((0..10_000).all(|_| free.take(t0).is_none()), "0 = no limit");
    }

    #[test]
    fn sockets_per_address_are_counted_per_ipv4_address_and_ipv6_64() {
        let table = Arc::new(SocketsPerIp::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = table.admit(ip("198.51.100.1"), 2).unwrap();
        let _b = table.admit(ip("::ffff:198.51.100.1"), 2).unwrap();
        assert!(table.admit(ip("198.51.100.1"), 2).is_none());
        assert!(
            table.admit(ip("198.51.100.2"), 2).is_some(),
            "another address"
        );
        drop(a);
        assert!(
            table.admit(ip("198.51.100.1"), 2).is_some(),
            "a closed socket frees its place"
        );

        let _c = table.admit(ip("2001:db8:1:2::1"), 1).unwrap();
        assert!(
            table.admit(ip("2001:db8:1:2:ffff::9"), 1).is_none(),
            "same /64"
        );
        assert!(table.admit(ip("2001:db8:1:3::1"), 1).is_some());
        assert!(
            table.admit(ip("2001:db8:1:2::1"), 0).is_some(),
            "0 = no limit"
        );
    }
}

//! Limits that keep one client (or one source address) from taking more than
//! its share: a per-allocation bandwidth token bucket and a per-source-IP
//! Allocate rate limit. Both are plain arithmetic on host-supplied time, and
//! neither allocates on the packet path.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Bytes per second an allocation may relay (both directions together) and
/// how much it may burst above that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub bytes_per_sec: u64,
    pub burst_bytes: u64,
}

impl Bandwidth {
    /// `kbps` kilobits per second with one second of burst.
    pub fn kbps(kbps: u64) -> Self {
        let bytes_per_sec = kbps * 1000 / 8;
        Bandwidth {
            bytes_per_sec,
            burst_bytes: bytes_per_sec,
        }
    }
}

/// A token bucket in bytes. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(now: Instant, limit: &Bandwidth) -> Self {
        TokenBucket {
            tokens: limit.burst_bytes,
            last: now,
        }
    }

    /// Take `bytes` if available; false means "over the limit, drop".
    pub fn take(&mut self, now: Instant, bytes: u64, limit: &Bandwidth) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let refill = elapsed * u128::from(limit.bytes_per_sec) / 1_000_000_000;
        // Only move `last` when at least a byte was earned, so frequent small
        // packets do not round the refill away.
        if refill > 0 {
            self.tokens =
                (u128::from(self.tokens) + refill).min(u128::from(limit.burst_bytes)) as u64;
            self.last = now;
        }
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

/// Slots in the per-IP rate table. Fixed so that spoofed sources cannot grow
/// it: memory is 16 bytes x SLOTS whatever arrives.
const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    second: u64,
    count: u32,
}

/// Allocate attempts per source IP per (unix) second, counted in a fixed
/// hashed table. Two addresses that share a slot share a budget: with 4096
/// slots that is rare, and the worst outcome is an early 'slow down' for one
/// of them. IPv6 sources are counted per /64, since one host can own a whole
/// /64. (Over UDP a source address can be spoofed, so a flood can exhaust a
/// victim's budget; the victim's browser retries, and nothing is amplified.)
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: u32,
    key: u64,
    slots: Box<[Slot]>,
}

impl RateLimiter {
    /// `per_second == 0` disables the limit. `key` salts the slot hash so an
    /// attacker cannot aim collisions at a chosen address.
    pub fn new(per_second: u32, key: [u8; 32]) -> Self {
        let key = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        RateLimiter {
            per_second,
            key,
            slots: vec![Slot::default(); if per_second == 0 { 0 } else { SLOTS }]
                .into_boxed_slice(),
        }
    }

    /// Count one attempt from `ip` at `unix_secs`; false means over the limit.
    pub fn allow(&mut self, ip: IpAddr, unix_secs: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let mut h = DefaultHasher::new();
        self.key.hash(&mut h);
        match ip {
            IpAddr::V4(v4) => v4.octets().hash(&mut h),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets().hash(&mut h),
                None => v6.octets()[..8].hash(&mut h),
            },
        }
        let slot = &mut self.slots[(h.finish() as usize) % SLOTS];
        if slot.second != unix_secs {
            *slot = Slot {
                second: unix_secs,
                count: 0,
            };
        }
        slot.count = slot.count.saturating_add(1);
        slot.count <= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let limit = Bandwidth {
            bytes_per_sec: 1000,
            burst_bytes: 500,
        };
        let mut b = TokenBucket::new(t0, &limit);
        assert!(b.take(t0, 500, &limit));
        assert!(!b.take(t0, 1, &limit));
        assert!(b.take(t0 + Duration::from_millis(100), 100, &limit));
        assert!(!b.take(t0 + Duration::from_millis(100), 1, &limit));
        // A long pause refills only up to the burst.
        assert!(!b.take(t0 + Duration::from_secs(10), 501, &limit));
        assert!(b.take(t0 + Duration::from_secs(10), 500, &limit));
    }

    #[test]
    fn rate_limiter_counts_per_ip_per_second() {
        let mut r = RateLimiter::new(3, [1; 32]);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        assert!((0..3).all(|_| r.allow(a, 100)));
        assert!(!r.allow(a, 100));
        assert!(r.allow(b, 100), "other addresses are unaffected");
        assert!(r.allow(a, 101), "a new second, a new budget");
        // One /64 is one budget.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!((0..3).all(|i| r.allow(v6(&format!("2001:db8::{i}")), 100)));
        assert!(!r.allow(v6("2001:db8::ffff"), 100));
        assert!(RateLimiter::new(0, [0; 32]).allow(a, 1), "0 disables");
    }
}

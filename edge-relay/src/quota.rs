//! Limits that keep one client (or one source address) from taking more than
//! its share: a per-allocation bandwidth token bucket and a per-source-IP
//! Allocate rate limit. Both are plain arithmetic on host-supplied time, and
//! neither allocates on the packet path.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::stats::Quota;

/// Bytes per second an allocation may relay (both directions together) and
/// how much it may burst above that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained rate in bytes/s; the token bucket refills at this rate.
    pub bytes_per_sec: u64,
    /// Bucket size in bytes: what may pass at once after a quiet spell.
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
    /// A full bucket (`limit.burst_bytes` tokens) as of `now`.
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

/// The address a per-IP budget is kept for: IPv4 as is (also when mapped
/// into IPv6), IPv6 by its /64, since one host can own a whole /64.
pub fn budget_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
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
        budget_key(ip).hash(&mut h);
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

/// The quota counts every engine of one relay process shares: allocations
/// in total and per REST username, and Allocate attempts per source IP. A
/// multi-core relay runs one engine per core (each owning the allocations
/// of the clients the kernel steers to it), but a user's quota and the
/// server's capacity are per process, not per core.
///
/// Behind a mutex: it is touched by Allocate requests and releases only,
/// never by relayed packets, so contention is rare and short. One engine on
/// its own (tests, the single-threaded driver) just holds the only handle.
#[derive(Debug, Clone)]
pub struct Ledger(Arc<Mutex<LedgerState>>);

#[derive(Debug)]
struct LedgerState {
    total: usize,
    per_user: HashMap<String, usize>,
    allocate_rate: RateLimiter,
}

impl Ledger {
    /// `allocate_rate_per_ip` and `key` as for [`RateLimiter::new`].
    pub fn new(allocate_rate_per_ip: u32, key: [u8; 32]) -> Self {
        Ledger(Arc::new(Mutex::new(LedgerState {
            total: 0,
            per_user: HashMap::new(),
            allocate_rate: RateLimiter::new(allocate_rate_per_ip, key),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        // A panic while holding the lock leaves counts that are still
        // consistent (every update is a single statement), so go on.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one Allocate attempt from `ip`; false means over the rate.
    pub fn allow_allocate(&self, ip: IpAddr, unix_secs: u64) -> bool {
        self.lock().allocate_rate.allow(ip, unix_secs)
    }

    /// Take one allocation for `username` unless that would exceed
    /// `max_total` or `max_per_user` (0: no per-user limit).
    pub fn reserve(
        &self,
        username: &str,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<(), Quota> {
        let mut s = self.lock();
        if s.total >= max_total {
            return Err(Quota::TotalAllocations);
        }
        let user = s.per_user.get(username).copied().unwrap_or(0);
        if max_per_user > 0 && user >= max_per_user {
            return Err(Quota::UserAllocations);
        }
        s.total += 1;
        *s.per_user.entry(username.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Give back an allocation taken by [`Ledger::reserve`].
    pub fn release(&self, username: &str) {
        let mut s = self.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_user.get_mut(username) {
            *n -= 1;
            if *n == 0 {
                s.per_user.remove(username);
            }
        }
    }

    /// Allocations held across all engines sharing this ledger.
    pub fn total(&self) -> usize {
        self.lock().total
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

    #[test]
    fn budgets_are_per_ipv4_address_and_per_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(budget_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(budget_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(budget_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(budget_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn ledger_is_one_budget_for_every_handle() {
        let a = Ledger::new(0, [0; 32]);
        let b = a.clone();
        assert_eq!(a.reserve("u", 3, 2), Ok(()));
        assert_eq!(b.reserve("u", 3, 2), Ok(()));
        assert_eq!(a.reserve("u", 3, 2), Err(Quota::UserAllocations));
        assert_eq!(b.reserve("v", 3, 2), Ok(()));
        assert_eq!(a.reserve("w", 3, 0), Err(Quota::TotalAllocations));
        b.release("u");
        assert_eq!(a.total(), 2);
        assert_eq!(
            a.reserve("u", 3, 2),
            Ok(()),
            "a released slot is free again"
        );
    }
}

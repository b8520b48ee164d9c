//! Latency histogram: 1 µs buckets up to 100 ms (one-way latency on a
//! loopback relay is tens of µs; anything past 100 ms is counted in the last
//! bucket and still shows in `max`). Fixed size, so recording a sample is an
//! index increment on the receive path.

const BUCKETS: usize = 100_000;

pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        let b = ((ns / 1000) as usize).min(BUCKETS - 1);
        self.counts[b] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in µs: upper edge of its bucket.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return (i + 1) as f64;
            }
        }
        self.max_us()
    }

    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(us * 1000 - 500);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 50.0);
        assert_eq!(h.quantile_us(0.99), 99.0);
        assert_eq!(h.max_us(), 99.5);
        h.record(10_000_000_000);
        assert_eq!(h.quantile_us(1.0), BUCKETS as f64);
        assert_eq!(h.max_us(), 10_000_000.0);
    }
}

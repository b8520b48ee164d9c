//! Is a relay answering probes far slower than it usually does?
//!
//! An overloaded relay (or a congested path to it) shows it in queueing
//! delay before it drops anything: its STUN answers come later. Each edge
//! keeps, per relay, the median of the last [`WINDOW`] probe round trips
//! (2 s at 10 probes/s; a median, so a few late answers are not a trend) and
//! a slow-moving baseline of that median learned while the relay was normal.
//! The relay is *slow* when the median exceeds the baseline by
//! max([`MIN_EXCESS_MS`], the baseline itself), i.e. its RTT at least
//! doubled and grew by 30 ms: a voice call feels that, and loopback or
//! same-region noise of a few ms never reaches it. It is normal again below
//! half that excess (hysteresis, so it does not flap).

use std::collections::VecDeque;

/// Round trips in the median.
pub const WINDOW: usize = 20;
/// The smallest RTT growth that counts, in ms.
pub const MIN_EXCESS_MS: f64 = 30.0;
/// Weight of each new median in the baseline: a time constant of 200
/// samples (20 s of probes), so the baseline follows a relay that moved, not
/// a relay that is filling up.
const BASELINE_WEIGHT: f64 = 0.005;

#[derive(Debug, Default)]
pub struct RttTrend {
    window: VecDeque<f64>,
    baseline_ms: Option<f64>,
    slow: bool,
}

impl RttTrend {
    /// Add one round trip; returns the new verdict when it changed
    /// (`Some(true)`: became slow, `Some(false)`: recovered).
    pub fn sample(&mut self, rtt_ms: f64) -> Option<bool> {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(rtt_ms);
        if self.window.len() < WINDOW {
            return None;
        }
        let median = self.median();
        let Some(base) = self.baseline_ms else {
            self.baseline_ms = Some(median);
            return None;
        };
        let excess = MIN_EXCESS_MS.max(base);
        let was = self.slow;
        if self.slow {
            self.slow = median > base + excess / 2.0;
        } else {
            self.slow = median > base + excess;
        }
        // Learn only from normal times: a slow period must not become the
        // new normal.
        if !self.slow {
            self.baseline_ms = Some(base + (median - base) * BASELINE_WEIGHT);
        }
        (self.slow != was).then_some(self.slow)
    }

    fn median(&self) -> f64 {
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Forget everything (the relay stopped answering: a new life).
    /// The relay's usual RTT, once learned.
    pub fn baseline_ms(&self) -> Option<f64> {
        self.baseline_ms
    }

    pub fn reset(&mut self) {
        *self = RttTrend::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut RttTrend, rtt: f64, n: usize) -> Vec<bool> {
        (0..n).filter_map(|_| t.sample(rtt)).collect()
    }

    #[test]
    fn a_relay_whose_rtt_doubles_by_30_ms_is_slow_until_it_recovers() {
        let mut t = RttTrend::default();
        assert!(feed(&mut t, 0.3, 200).is_empty(), "a steady loopback RTT");
        // Noise of a few ms, even many late answers short of a majority:
        // not a trend.
        for i in 0..200 {
            let rtt = if i % 3 == 0 { 25.0 } else { 0.4 };
            assert_eq!(t.sample(rtt), None);
        }
        // Queueing: +60 ms. Slow once the median moves (half a window).
        assert_eq!(feed(&mut t, 60.0, WINDOW), [true]);
        // The slow period is not learnt as normal: still slow, then back.
        assert_eq!(feed(&mut t, 60.0, 500), Vec::<bool>::new());
        assert_eq!(feed(&mut t, 0.3, WINDOW), [false]);
    }

    #[test]
    fn a_far_relay_needs_its_rtt_doubled() {
        let mut t = RttTrend::default();
        feed(&mut t, 80.0, 100);
        assert!(
            feed(&mut t, 150.0, 100).is_empty(),
            "+70 ms on 80 is not double"
        );
        let mut t = RttTrend::default();
        feed(&mut t, 80.0, 100);
        assert_eq!(feed(&mut t, 170.0, 100), [true]);
    }
}

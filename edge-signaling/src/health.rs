//! Phi-accrual failure detection for relays (Hayashibara et al., "The φ
//! Accrual Failure Detector", 2004), as used by Cassandra and Akka.
//!
//! Instead of one fixed timeout, φ says how unlikely it is that a relay
//! which heartbeats with the inter-arrival times seen so far is still alive
//! given how long it has now been silent. A relay with a steady 250 ms beat
//! is suspected after ~0.4 s of silence; one with a jittery beat gets more
//! slack, so jitter does not cause false failovers.

/// Inter-arrival samples kept per relay.
pub const HISTORY: usize = 32;
/// Suspect a relay at φ ≥ 8: about a 1-in-10⁸ chance of a false positive
/// under the observed distribution.
pub const PHI_THRESHOLD: f64 = 8.0;
/// Floor for the standard deviation, so a perfectly regular beat (loopback)
/// does not make a few ms of scheduling noise look like a failure.
pub const MIN_STD_MS: f64 = 25.0;
/// Fewer samples than this: too little history, rely on the hard timeout.
pub const MIN_SAMPLES: usize = 3;
/// A relay whose recent heartbeats arrive this irregularly (standard
/// deviation of the last [`TREND_SAMPLES`] intervals, in ms) is degrading:
/// an overloaded or starved process shows it in its heartbeat rhythm before
/// it stops. It is drained pre-emptively (predictive drain).
pub const DEGRADED_JITTER_MS: f64 = 120.0;
/// Recent heartbeat intervals the degradation check looks at (the worst one
/// left out).
pub const TREND_SAMPLES: usize = 8;
/// A relay silent this long is gone whatever else is true (and no longer
/// counts when judging whether the whole fleet went silent at once).
pub const GONE_MS: u64 = 10_000;
/// How long a relay reported silent by its callers stays out of rotation.
pub const SUSPECT_MS: u64 = 30_000;
/// Stall reports count together when they are this close in time.
pub const STALL_WINDOW_MS: u64 = 2_000;
/// Rooms whose callers must agree that audio stalled on a relay before it
/// is suspected fleet-wide: one room's reports move only that room, since
/// its callers could be one person (or one attacker) on several sockets.
pub const FLEET_STALL_ROOMS: usize = 2;
/// How far apart those rooms' verdicts may be.
pub const FLEET_STALL_WINDOW_MS: u64 = 10_000;
/// Most rooms remembered per relay (the oldest go first).
pub const FLEET_STALL_MEMORY: usize = 32;

/// CPU utilization samples kept per relay (one per heartbeat).
pub const CPU_SAMPLES: usize = 5;
/// A relay this busy (median utilization of the last [`CPU_SAMPLES`]
/// heartbeats, percent of its threads' capacity) takes no new calls; its
/// live calls stay.
pub const BUSY_PERCENT: u16 = 85;
/// A relay this busy sheds calls: packets queue and drop before long.
pub const OVERLOADED_PERCENT: u16 = 95;
/// Shedding aims to bring an overloaded relay down to this.
pub const SHED_TARGET_PERCENT: u16 = 80;
/// Between two sheds of one relay: long enough for its heartbeats to show
/// the effect of the last one (the median needs a few samples), so a relay
/// is never emptied because the measurement lagged.
pub const SHED_INTERVAL_MS: u64 = 2_000;

/// One utilization sample from a heartbeat's load: process CPU (100 = one
/// core) over the capacity of the relay's datapath threads.
pub fn cpu_sample(cpu_percent: Option<f64>, threads: Option<u32>) -> Option<u16> {
    let cpu = cpu_percent?;
    let capacity = f64::from(threads.unwrap_or(1).max(1)) * 100.0;
    Some((cpu / capacity * 100.0).clamp(0.0, 1000.0).round() as u16)
}

/// Keep the last [`CPU_SAMPLES`] samples.
pub fn record_cpu(history: &mut Vec<u16>, sample: u16) {
    if history.len() == CPU_SAMPLES {
        history.remove(0);
    }
    history.push(sample);
}

/// Sustained utilization: the median of a full window of samples, so one
/// busy interval (a burst of allocations, a compaction) is not a trend.
/// `None` until the window is full.
pub fn utilization(history: &[u16]) -> Option<u16> {
    if history.len() < CPU_SAMPLES {
        return None;
    }
    let mut s = history.to_vec();
    s.sort_unstable();
    Some(s[s.len() / 2])
}

/// How many of an overloaded relay's `rooms` one shed moves: the share of
/// its load above [`SHED_TARGET_PERCENT`], at least one room.
pub fn rooms_to_shed(rooms: usize, utilization: u16) -> usize {
    if rooms == 0 || utilization <= SHED_TARGET_PERCENT {
        return 0;
    }
    let share = f64::from(utilization - SHED_TARGET_PERCENT) / f64::from(utilization);
    ((rooms as f64 * share).ceil() as usize).clamp(1, rooms)
}

/// True when the recent heartbeat rhythm shows the relay degrading. The
/// single worst interval is left out: one hiccup (a GC-like pause, a busy
/// host for a moment) is not a trend.
pub fn degrading(intervals: &[u32]) -> bool {
    if intervals.len() < TREND_SAMPLES {
        return false;
    }
    let mut recent = intervals[intervals.len() - TREND_SAMPLES..].to_vec();
    recent.sort_unstable();
    recent.pop();
    let n = recent.len() as f64;
    let mean = recent.iter().map(|&i| i as f64).sum::<f64>() / n;
    let var = recent
        .iter()
        .map(|&i| (i as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var.sqrt() > DEGRADED_JITTER_MS
}

/// φ after `silent_ms` without a heartbeat, given recent `intervals` (ms).
/// `None` while there is too little history.
pub fn phi(intervals: &[u32], silent_ms: u64) -> Option<f64> {
    if intervals.len() < MIN_SAMPLES {
        return None;
    }
    let n = intervals.len() as f64;
    let mean = intervals.iter().map(|&i| i as f64).sum::<f64>() / n;
    let var = intervals
        .iter()
        .map(|&i| (i as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt().max(MIN_STD_MS);
    // Logistic approximation of the normal CDF's tail (accurate to ~1e-4
    // over the range that matters), as in Akka's implementation.
    let y = (silent_ms as f64 - mean) / std;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if silent_ms as f64 > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    Some(-p_later.max(f64::MIN_POSITIVE).log10())
}

/// Add the interval since the previous heartbeat to `history`. A gap longer
/// than `reset_after_ms` is an outage, not jitter: history starts over so
/// the relay is not judged by it after it comes back.
pub fn record(history: &mut Vec<u32>, interval_ms: u64, reset_after_ms: u64) {
    if interval_ms > reset_after_ms {
        history.clear();
        return;
    }
    if history.len() == HISTORY {
        history.remove(0);
    }
    history.push(interval_ms as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_is_the_median_of_a_full_window_over_the_threads() {
        assert_eq!(cpu_sample(Some(190.0), Some(2)), Some(95));
        assert_eq!(cpu_sample(Some(50.0), None), Some(50));
        assert_eq!(cpu_sample(None, Some(4)), None);
        let mut h = Vec::new();
        for s in [99, 99, 99, 99] {
            record_cpu(&mut h, s);
        }
        assert_eq!(utilization(&h), None, "too few samples");
        record_cpu(&mut h, 10);
        assert_eq!(
            utilization(&h),
            Some(99),
            "one quiet interval is not a trend"
        );
        for s in [10, 10] {
            record_cpu(&mut h, s);
        }
        assert_eq!(h.len(), CPU_SAMPLES);
        assert_eq!(utilization(&h), Some(10));
    }

    #[test]
    fn a_shed_moves_the_share_above_the_target() {
        assert_eq!(rooms_to_shed(10, 100), 2);
        assert_eq!(rooms_to_shed(100, 96), 17);
        assert_eq!(rooms_to_shed(3, 96), 1);
        assert_eq!(rooms_to_shed(1, 300), 1);
        assert_eq!(rooms_to_shed(0, 100), 0);
        assert_eq!(rooms_to_shed(10, 80), 0);
    }

    #[test]
    fn steady_beat_is_suspected_soon_after_it_stops() {
        let beat = [250u32; 20];
        assert!(phi(&beat, 250).unwrap() < 1.0);
        assert!(phi(&beat, 300).unwrap() < PHI_THRESHOLD);
        let t = (250..2000)
            .find(|&t| phi(&beat, t).unwrap() >= PHI_THRESHOLD)
            .unwrap();
        assert!((350..450).contains(&t), "suspected after {t} ms of silence");
    }

    #[test]
    fn jittery_beat_gets_more_slack() {
        let jittery: Vec<u32> = (0..20)
            .map(|i| if i % 2 == 0 { 150 } else { 450 })
            .collect();
        let steady = [300u32; 20];
        let first = |h: &[u32]| {
            (0..5000)
                .find(|&t| phi(h, t).unwrap() >= PHI_THRESHOLD)
                .unwrap()
        };
        assert!(first(&jittery) > first(&steady) + 300);
    }

    #[test]
    fn an_irregular_recent_beat_is_degrading() {
        let mut h = vec![250u32; 20];
        assert!(!degrading(&h));
        let mut one_hiccup = h.clone();
        one_hiccup.push(1000);
        assert!(!degrading(&one_hiccup), "one long interval is not a trend");
        h.extend([50, 600, 80, 550, 100, 700, 60, 500]);
        assert!(degrading(&h));
    }

    #[test]
    fn too_little_history_gives_no_verdict_and_outages_reset_it() {
        assert_eq!(phi(&[250, 250], 10_000), None);
        let mut h = vec![250; 5];
        record(&mut h, 5_000, 1_500);
        assert!(h.is_empty());
        for _ in 0..40 {
            record(&mut h, 250, 1_500);
        }
        assert_eq!(h.len(), HISTORY);
    }
}

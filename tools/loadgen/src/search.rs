//! Finding the highest zero-loss rate: double the aggregate rate from a
//! starting point until a step loses packets, then bisect between the last
//! clean rate and the first lossy one down to a relative resolution.
//!
//! A step only counts as clean when nothing was lost, the generator kept its
//! schedule and its own socket refused nothing. A rate the generator could
//! not drive bounds the search like a lossy one (the bisection finds the
//! highest rate the generator drives and the relay carries), and the report
//! says so: the relay's own ceiling is then at least the answer, so a
//! ceiling of the generator is not mistaken for one of the relay. (Stopping
//! at the first such rate instead threw away everything between the last
//! doubling and it: a generator that manages 240,000 packets/s reported
//! 128,000.) With `attempts` > 1 a lossy rate is tried
//! again before it counts as lossy: on a shared machine one preemption of
//! the relay can drop a burst at a rate it otherwise carries, while a real
//! ceiling loses every time.

use std::time::Duration;

use crate::harness::Harness;
use crate::traffic::{StepConfig, StepReport};
use crate::LoadError;

#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub start_pps: f64,
    pub max_pps: f64,
    /// Stop bisecting when high/low is within this factor (e.g. 0.05 = 5 %).
    pub resolution: f64,
    /// Pause between steps so queues empty and late packets are not counted.
    pub settle: Duration,
    /// Tries per rate before it counts as lossy (at least 1).
    pub attempts: u32,
    /// Also require p99 one-way latency at or below this (µs) for a step to
    /// count: zero loss bought with tens of milliseconds of queueing is
    /// useless for voice.
    pub max_p99_us: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SearchReport {
    /// Highest aggregate rate with zero loss (None: even the start lost).
    pub zero_loss_pps: Option<f64>,
    /// The best clean step's measurements.
    pub best: Option<StepReport>,
    /// True when the rate that bounded the search failed only because the
    /// generator could not drive it: the relay carried `zero_loss_pps` and
    /// may carry more.
    pub generator_limited: bool,
    /// True when every rate up to `max_pps` was clean: the answer is a floor.
    pub reached_max: bool,
    pub steps: Vec<StepReport>,
}

fn clean(r: &StepReport, max_p99_us: Option<f64>) -> bool {
    r.lost == 0
        && r.send_errors == 0
        && !r.generator_limited
        && max_p99_us.is_none_or(|m| r.p99_us <= m)
}

impl Harness {
    /// [`search`] with this harness's steps.
    pub fn search(
        &mut self,
        step: &StepConfig,
        cfg: &SearchConfig,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<SearchReport, LoadError> {
        let mut epoch = 1000;
        search(cfg, |rate| {
            epoch += 1;
            let r = self.step(
                &StepConfig {
                    rate,
                    ..step.clone()
                },
                epoch,
            )?;
            on_step(&r);
            std::thread::sleep(cfg.settle);
            Ok(r)
        })
    }
}

/// The search itself, over `step`, which measures one rate.
pub fn search(
    cfg: &SearchConfig,
    mut step: impl FnMut(f64) -> Result<StepReport, LoadError>,
) -> Result<SearchReport, LoadError> {
    let mut report = SearchReport::default();
    let attempts = cfg.attempts.max(1);
    let mut run = |rate: f64, report: &mut SearchReport| {
        let mut r = step(rate)?;
        report.steps.push(r.clone());
        for _ in 1..attempts {
            if clean(&r, cfg.max_p99_us) || driven_short(&r) {
                break;
            }
            r = step(rate)?;
            report.steps.push(r.clone());
        }
        Ok::<_, LoadError>(r)
    };
    let (mut low, mut high): (Option<StepReport>, Option<f64>) = (None, None);
    let mut rate = cfg.start_pps;
    // Ramp up.
    while rate <= cfg.max_pps {
        let r = run(rate, &mut report)?;
        if clean(&r, cfg.max_p99_us) {
            low = Some(r);
            if rate >= cfg.max_pps {
                break;
            }
            // The last doubling lands on the maximum rather than skip
            // everything between the previous rate and it.
            rate = (rate * 2.0).min(cfg.max_pps);
        } else {
            report.generator_limited = only_short(&r, cfg.max_p99_us);
            high = Some(rate);
            break;
        }
    }
    // Bisect between the last clean rate and the first that was not.
    if let Some(mut hi) = high {
        while let Some(lo) = low.as_ref().map(|l| l.offered_pps) {
            if hi / lo <= 1.0 + cfg.resolution {
                break;
            }
            let mid = (lo * hi).sqrt();
            let r = run(mid, &mut report)?;
            if clean(&r, cfg.max_p99_us) {
                low = Some(r);
            } else {
                report.generator_limited = only_short(&r, cfg.max_p99_us);
                hi = mid;
            }
        }
    }
    report.reached_max = high.is_none() && low.is_some();
    report.zero_loss_pps = low.as_ref().map(|l| l.offered_pps);
    report.best = low;
    Ok(report)
}

/// The generator did not send what the step asked for.
fn driven_short(r: &StepReport) -> bool {
    r.generator_limited || r.send_errors > 0
}

/// The step failed only because of the generator (it sent too little, or
/// its own sockets dropped what came back): the relay lost nothing of what
/// it got, in time. (Lossy or slow beyond that: the relay failed at what it
/// was sent, so it is the limit.)
fn only_short(r: &StepReport, max_p99_us: Option<f64>) -> bool {
    driven_short(r) && r.lost == r.generator_drops && max_p99_us.is_none_or(|m| r.p99_us <= m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay that carries up to `relay` pkt/s, driven by a generator that
    /// sends up to `generator` pkt/s.
    fn model(relay: f64, generator: f64) -> impl FnMut(f64) -> Result<StepReport, LoadError> {
        move |rate| {
            let sent_pps = rate.min(generator);
            Ok(StepReport {
                offered_pps: rate,
                sent_pps,
                lost: if sent_pps > relay { 10 } else { 0 },
                generator_limited: sent_pps < 0.95 * rate,
                ..Default::default()
            })
        }
    }

    /// A generator that sends whatever is asked but cannot read back more
    /// than `reader` pkt/s (its socket drops the rest), before a relay that
    /// carries up to `relay`.
    fn slow_reader(relay: f64, reader: f64) -> impl FnMut(f64) -> Result<StepReport, LoadError> {
        move |rate| {
            let generator_drops = if rate > reader { 10 } else { 0 };
            let relay_lost = if rate > relay { 10 } else { 0 };
            Ok(StepReport {
                offered_pps: rate,
                sent_pps: rate,
                lost: generator_drops + relay_lost,
                generator_drops,
                generator_limited: generator_drops > 0,
                ..Default::default()
            })
        }
    }

    fn cfg() -> SearchConfig {
        SearchConfig {
            start_pps: 4_000.0,
            max_pps: 256_000.0,
            resolution: 0.05,
            settle: Duration::ZERO,
            attempts: 1,
            max_p99_us: None,
        }
    }

    #[test]
    fn a_relay_ceiling_below_the_generator_is_found_and_not_flagged() {
        let r = search(&cfg(), model(150_000.0, 240_000.0)).unwrap();
        let z = r.zero_loss_pps.unwrap();
        assert!((150_000.0 / 1.05..=150_000.0).contains(&z), "{z}");
        assert!(!r.generator_limited && !r.reached_max);
    }

    #[test]
    fn a_generator_ceiling_bounds_the_search_and_is_reported() {
        // The relay would carry 300,000; the generator manages 240,000.
        let r = search(&cfg(), model(300_000.0, 240_000.0)).unwrap();
        let z = r.zero_loss_pps.unwrap();
        // Not the 128,000 of the last doubling: bisected up to what the
        // generator drives (within 5 % resolution, and 5 % schedule slack).
        assert!(z > 128_000.0 * 1.5 && z <= 240_000.0 / 0.95, "{z}");
        assert!(r.generator_limited);
    }

    #[test]
    fn losses_in_the_generators_own_socket_are_its_limit_not_the_relays() {
        let r = search(&cfg(), slow_reader(300_000.0, 200_000.0)).unwrap();
        let z = r.zero_loss_pps.unwrap();
        assert!((200_000.0 / 1.05..=200_000.0).contains(&z), "{z}");
        assert!(r.generator_limited, "the bound was the generator's");
        // Where the relay loses too, the relay is the limit.
        let r = search(&cfg(), slow_reader(150_000.0, 200_000.0)).unwrap();
        assert!(!r.generator_limited);
    }

    #[test]
    fn every_rate_clean_up_to_the_maximum_is_a_floor() {
        let r = search(&cfg(), model(1e9, 1e9)).unwrap();
        assert_eq!(r.zero_loss_pps, Some(256_000.0));
        assert!(r.reached_max && !r.generator_limited);
        // A maximum off the doubling ladder is tried too.
        let c = SearchConfig {
            max_pps: 400_000.0,
            ..cfg()
        };
        let r = search(&c, model(1e9, 1e9)).unwrap();
        assert_eq!(r.zero_loss_pps, Some(400_000.0));
        let r = search(&c, model(300_000.0, 1e9)).unwrap();
        let z = r.zero_loss_pps.unwrap();
        assert!(z > 256_000.0 && z <= 300_000.0, "{z}");
    }
}

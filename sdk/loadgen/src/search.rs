//! Finding the highest zero-loss rate: double the aggregate rate from a
//! starting point until a step loses packets, then bisect between the last
//! clean rate and the first lossy one down to a relative resolution.
//!
//! A step only counts as clean when nothing was lost, the generator kept its
//! schedule and its own socket refused nothing; a step the generator could
//! not drive ends the search (reported, so a ceiling of the generator is not
//! mistaken for one of the relay). With `attempts` > 1 a lossy rate is tried
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
    /// True when the search stopped because the generator fell behind.
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
    pub fn search(
        &mut self,
        step: &StepConfig,
        cfg: &SearchConfig,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<SearchReport, LoadError> {
        let mut report = SearchReport::default();
        let mut epoch = 1000;
        let mut run = |h: &mut Harness, rate: f64, report: &mut SearchReport| {
            epoch += 1;
            let r = h.step(
                &StepConfig {
                    rate,
                    ..step.clone()
                },
                epoch,
            )?;
            on_step(&r);
            report.steps.push(r.clone());
            std::thread::sleep(cfg.settle);
            Ok::<_, LoadError>(r)
        };
        let attempts = cfg.attempts.max(1);
        let mut run = |h: &mut Harness, rate: f64, report: &mut SearchReport| {
            let mut r = run(h, rate, report)?;
            for _ in 1..attempts {
                if clean(&r, cfg.max_p99_us) || r.generator_limited || r.send_errors > 0 {
                    break;
                }
                r = run(h, rate, report)?;
            }
            Ok::<_, LoadError>(r)
        };
        let (mut low, mut high): (Option<StepReport>, Option<f64>) = (None, None);
        let mut rate = cfg.start_pps;
        // Ramp up.
        while rate <= cfg.max_pps {
            let r = run(self, rate, &mut report)?;
            if clean(&r, cfg.max_p99_us) {
                low = Some(r);
                rate *= 2.0;
            } else {
                report.generator_limited = r.generator_limited || r.send_errors > 0;
                high = Some(rate);
                break;
            }
        }
        // Bisect, unless the generator itself is the limit.
        if let (Some(h), false) = (high, report.generator_limited) {
            let mut hi = h;
            while let Some(lo) = low.as_ref().map(|l| l.offered_pps) {
                if hi / lo <= 1.0 + cfg.resolution {
                    break;
                }
                let mid = (lo * hi).sqrt();
                let r = run(self, mid, &mut report)?;
                if clean(&r, cfg.max_p99_us) {
                    low = Some(r);
                } else if r.generator_limited || r.send_errors > 0 {
                    report.generator_limited = true;
                    break;
                } else {
                    hi = mid;
                }
            }
        }
        report.reached_max = high.is_none() && low.is_some();
        report.zero_loss_pps = low.as_ref().map(|l| l.offered_pps);
        report.best = low;
        Ok(report)
    }
}

//! RFC 2544 throughput: the highest offered rate at which the device under test delivers every
//! frame (section 26.1), found by binary search over rate-limited trials; and the same search at
//! a loss tolerance, which is what operators usually quote.
//!
//! A virtio transmit queue pushes back instead of dropping, so a generator may fail to *offer* a
//! rate at all: the device then carries less than asked without losing a frame. A trial passes
//! only when its loss is within the tolerance AND the generator really offered the rate (within
//! [`OFFER_SLACK`]); otherwise a backpressured device would "pass" every rate.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How far below the target rate the offered rate may fall in a passing trial.
pub const OFFER_SLACK: f64 = 0.01;

/// What one rate-limited trial did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Rate asked for, packets per second.
    pub target_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
}

impl TrialResult {
    pub fn offered_pps(&self) -> f64 {
        crate::num::per_second(self.sent, self.seconds)
    }

    pub fn received_pps(&self) -> f64 {
        crate::num::per_second(self.received, self.seconds)
    }

    pub fn loss_ratio(&self) -> f64 {
        crate::num::loss_ratio(self.sent, self.received)
    }

    /// Within `loss_tolerance` (a ratio; 0 for RFC 2544's zero loss) at the target rate.
    pub fn passes(&self, loss_tolerance: f64) -> bool {
        self.sent > 0
            && self.loss_ratio() <= loss_tolerance
            && self.offered_pps() >= self.target_pps * (1.0 - OFFER_SLACK)
    }
}

/// Parameters of one search.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    /// Highest rate to try (the first trial).
    pub max_pps: f64,
    /// A rate known to pass (0 when none is known).
    pub min_pps: f64,
    /// The search stops when the passing and failing rates are this close.
    pub resolution_pps: f64,
    /// Loss ratio allowed in a passing trial.
    pub loss_tolerance: f64,
    /// Upper bound on trials, whatever the resolution.
    pub max_trials: usize,
}

/// What a search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub loss_tolerance: f64,
    /// The highest passing rate (0 when none passed).
    pub throughput_pps: f64,
    /// The trial at that rate, if any ran.
    pub best: Option<TrialResult>,
    /// Every trial, in order.
    pub trials: Vec<TrialResult>,
}

/// Binary search for the highest passing rate in `[min_pps, max_pps]`; `trial(rate)` runs one
/// trial at `rate` packets per second.
pub fn search(s: &Search, mut trial: impl FnMut(f64) -> Result<TrialResult>) -> Result<Outcome> {
    let mut trials = Vec::new();
    let mut best: Option<TrialResult> = None;
    let first = trial(s.max_pps)?;
    trials.push(first);
    if first.passes(s.loss_tolerance) {
        return Ok(Outcome {
            loss_tolerance: s.loss_tolerance,
            throughput_pps: s.max_pps,
            best: Some(first),
            trials,
        });
    }
    let (mut lo, mut hi) = (s.min_pps.clamp(0.0, s.max_pps), s.max_pps);
    let resolution = s.resolution_pps.max(1.0);
    while hi - lo > resolution && trials.len() < s.max_trials.max(1) {
        let mid = (lo + hi) / 2.0;
        let r = trial(mid)?;
        trials.push(r);
        if r.passes(s.loss_tolerance) {
            lo = mid;
            best = Some(r);
        } else {
            hi = mid;
        }
    }
    Ok(Outcome {
        loss_tolerance: s.loss_tolerance,
        throughput_pps: if best.is_some() {
            lo
        } else {
            s.min_pps.max(0.0)
        },
        best,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that carries `knee` pps without loss and drops everything above it; its
    /// generator cannot offer more than `gen_max`.
    fn fake(knee: f64, gen_max: f64) -> impl FnMut(f64) -> Result<TrialResult> {
        move |rate| {
            let offered = rate.min(gen_max);
            let sent = crate::num::floor_u64(offered.round());
            let carried = crate::num::floor_u64(offered.min(knee).round());
            Ok(TrialResult {
                target_pps: rate,
                sent,
                received: carried,
                seconds: 1.0,
            })
        }
    }

    fn params(max: f64, tol: f64) -> Search {
        Search {
            max_pps: max,
            min_pps: 0.0,
            resolution_pps: max / 1000.0,
            loss_tolerance: tol,
            max_trials: 40,
        }
    }

    #[test]
    fn zero_loss_search_finds_the_knee_of_the_loss_curve() {
        let o = search(&params(20e6, 0.0), fake(7.3e6, 1e9)).unwrap();
        assert!(o.throughput_pps <= 7.3e6, "{}", o.throughput_pps);
        assert!(
            o.throughput_pps >= 7.3e6 - 20e6 / 1000.0,
            "{}",
            o.throughput_pps
        );
        let best = o.best.unwrap();
        assert_eq!(best.loss_ratio(), 0.0);
        // Every trial above the knee failed, every one at or below passed.
        for t in &o.trials {
            assert_eq!(t.passes(0.0), t.target_pps <= 7.3e6 + 1.0, "{t:?}");
        }
    }

    #[test]
    fn loss_tolerance_moves_the_answer_up_the_curve() {
        // loss(r) = (r - knee) / r above the knee: 1% loss at r = knee / 0.99.
        let o = search(&params(20e6, 0.01), fake(7.3e6, 1e9)).unwrap();
        let expect = 7.3e6 / 0.99;
        assert!(o.throughput_pps <= expect + 1.0, "{}", o.throughput_pps);
        assert!(
            o.throughput_pps >= expect - 20e6 / 1000.0,
            "{}",
            o.throughput_pps
        );
    }

    #[test]
    fn a_rate_the_device_carries_at_the_top_passes_at_once() {
        let o = search(&params(5e6, 0.0), fake(7.3e6, 1e9)).unwrap();
        assert_eq!(o.trials.len(), 1);
        assert_eq!(o.throughput_pps, 5e6);
    }

    #[test]
    fn test_backpressured_generator_does_not_pass_rates_it_could_not_offer() {
        // No loss ever, but the generator only gets 4 Mpps out: throughput is 4 Mpps, not 20.
        let o = search(&params(20e6, 0.0), fake(1e9, 4e6)).unwrap();
        assert!(
            o.throughput_pps <= 4e6 / (1.0 - OFFER_SLACK) + 1.0,
            "{}",
            o.throughput_pps
        );
        assert!(
            o.throughput_pps >= 4e6 - 20e6 / 1000.0,
            "{}",
            o.throughput_pps
        );
    }

    #[test]
    fn test_device_that_loses_everything_has_zero_throughput() {
        let o = search(&params(10e6, 0.0), fake(0.0, 1e9)).unwrap();
        assert_eq!(o.throughput_pps, 0.0);
        assert!(o.best.is_none());
    }

    #[test]
    fn the_trial_budget_bounds_the_search() {
        let mut p = params(10e6, 0.0);
        p.resolution_pps = 1.0;
        p.max_trials = 5;
        let o = search(&p, fake(3e6, 1e9)).unwrap();
        assert_eq!(o.trials.len(), 5);
    }
}

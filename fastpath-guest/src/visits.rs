//! What a visit to a peer's queue costs, and how many frames a visit should carry.
//!
//! Every visit enters a protected view and leaves it (with the mprotect backend: two protection
//! changes and a TLB flush, thousands of cycles; with PKU: two WRPKRU, tens). The work inside a
//! visit costs tens of cycles per frame. So a visit must carry enough frames that entering and
//! leaving stay a small share of it: [`Visits`] measures both sides of every visit and keeps a
//! target number of frames per visit at which the switch is at most [`SWITCH_SHARE`] of the
//! visit, bounded by the queue (and never waiting longer than [`MAX_WAIT`] for it to fill).

use std::time::Duration;

/// The largest share of a visit's cycles that entering and leaving the view may take.
pub const SWITCH_SHARE: f64 = 0.08;
/// The longest a receiver lets frames wait for a fuller visit (a latency bound at low rates).
/// At 60 Mpps it is also what bounds a visit: 150 us is ~9000 frames, enough for a ~20 000-cycle
/// mprotect switch to stay under 10 % of a visit at ~27 cycles a frame; at 100 us (6000 frames)
/// the zero-copy bench measured 9.1-10.2 % (8.7-9.1 % at 150 us, p50 latency 54 -> 64 us).
pub const MAX_WAIT: Duration = Duration::from_micros(150);
/// The fewest frames a visit aims at.
pub const MIN_TARGET: usize = 32;

/// Measured cost of the visits to one channel's peer queue, in TSC cycles.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct VisitStats {
    pub visits: u64,
    pub frames: u64,
    /// Entering the view (from the call to the first instruction inside).
    pub enter_cycles: u64,
    /// The work inside the view.
    pub work_cycles: u64,
    /// Leaving the view.
    pub leave_cycles: u64,
}

impl VisitStats {
    /// Cycles of one view switch in and out, on average.
    pub fn switch_cycles(&self) -> f64 {
        (self.enter_cycles + self.leave_cycles) as f64 / self.visits.max(1) as f64
    }

    /// Share of the visits' cycles spent entering and leaving.
    pub fn switch_share(&self) -> f64 {
        let sw = (self.enter_cycles + self.leave_cycles) as f64;
        sw / (sw + self.work_cycles as f64).max(1.0)
    }

    pub fn frames_per_visit(&self) -> f64 {
        self.frames as f64 / self.visits.max(1) as f64
    }

    /// Work cycles per frame.
    pub fn work_per_frame(&self) -> f64 {
        self.work_cycles as f64 / self.frames.max(1) as f64
    }
}

/// Visit accounting and the adaptive target of one channel.
#[derive(Debug, Clone)]
pub struct Visits {
    pub stats: VisitStats,
    /// Frames per visit that keep the switch under [`SWITCH_SHARE`].
    target: usize,
    /// Upper bound of the target: what the queue can hold in flight.
    cap: usize,
    /// Smoothed switch and per-frame costs.
    switch_avg: f64,
    frame_avg: f64,
}

impl Visits {
    /// For a queue of `queue_size` entries.
    pub fn new(queue_size: u16) -> Visits {
        let mut v = Visits {
            stats: VisitStats::default(),
            target: MIN_TARGET,
            cap: MIN_TARGET,
            switch_avg: 0.0,
            frame_avg: 0.0,
        };
        v.set_capacity(usize::from(queue_size));
        v
    }

    /// The peer's queue holds `frames` frames (several to a buffer when they are packed as
    /// records): a visit may carry up to 7/8 of them. The rest is room for the sender while a
    /// visit starts: the visit hands buffers back burst by burst, so it need not be more.
    pub fn set_capacity(&mut self, frames: usize) {
        self.cap = (frames * 7 / 8).max(MIN_TARGET);
        self.target = self.target.min(self.cap);
    }

    /// Frames a visit should carry now.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Records a visit: TSC readings before entering, at the start of the work, at its end and
    /// after leaving, and how many frames it moved.
    pub fn record(&mut self, t0: u64, t1: u64, t2: u64, t3: u64, frames: usize) {
        let (enter, work, leave) = (
            t1.saturating_sub(t0),
            t2.saturating_sub(t1),
            t3.saturating_sub(t2),
        );
        let s = &mut self.stats;
        s.visits += 1;
        s.frames += frames as u64;
        s.enter_cycles += enter;
        s.work_cycles += work;
        s.leave_cycles += leave;
        if frames == 0 {
            return;
        }
        let a = 0.125;
        let sw = (enter + leave) as f64;
        let pf = work as f64 / frames as f64;
        if self.switch_avg == 0.0 {
            (self.switch_avg, self.frame_avg) = (sw, pf);
        } else {
            self.switch_avg += a * (sw - self.switch_avg);
            self.frame_avg += a * (pf - self.frame_avg);
        }
        self.target = target_for(self.switch_avg, self.frame_avg, self.cap);
    }
}

/// Frames per visit at which a switch of `switch` cycles is [`SWITCH_SHARE`] of the visit, with
/// `per_frame` cycles of work per frame: switch / (switch + n * per_frame) <= share.
// n is finite and clamped to [MIN_TARGET, cap] (both usize) before the cast: it neither
// truncates nor loses a sign.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn target_for(switch: f64, per_frame: f64, cap: usize) -> usize {
    if per_frame <= 0.0 || !switch.is_finite() || !per_frame.is_finite() {
        return cap;
    }
    let n = (switch * (1.0 - SWITCH_SHARE) / (SWITCH_SHARE * per_frame))
        .ceil()
        .clamp(MIN_TARGET as f64, cap as f64);
    n as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_the_switch_under_its_share() {
        // 5000-cycle switch, 50 cycles per frame: 5000 / (5000 + n * 50) <= 0.08 => n >= 1150.
        let n = target_for(5000.0, 50.0, 4096);
        assert_eq!(n, 1150);
        let share = 5000.0 / (5000.0 + n as f64 * 50.0);
        assert!(share <= SWITCH_SHARE + 1e-9, "{share}");
    }

    #[test]
    fn target_is_bounded_by_the_queue_and_below() {
        assert_eq!(target_for(1e9, 1.0, 3072), 3072);
        assert_eq!(target_for(10.0, 100.0, 3072), MIN_TARGET);
        assert_eq!(target_for(10.0, 0.0, 3072), 3072);
    }

    #[test]
    fn visits_adapt_to_measured_costs() {
        let mut v = Visits::new(4096);
        assert_eq!(v.target(), MIN_TARGET);
        // Each visit: enter 2000, work 32 frames x 40 cycles, leave 2000.
        for _ in 0..50 {
            v.record(0, 2000, 2000 + 32 * 40, 4000 + 32 * 40, 32);
        }
        assert_eq!(v.target(), target_for(4000.0, 40.0, 3072));
        assert_eq!(v.stats.visits, 50);
        assert!((v.stats.switch_cycles() - 4000.0).abs() < 1e-9);
        assert!(v.stats.switch_share() > 0.7);
    }
}

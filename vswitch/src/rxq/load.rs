//! A queue's load: the TSC cycles poll threads spent on bursts from it ([`QueueLoad`]), and the
//! history of a cumulative counter over the last [`INTERVALS`] intervals ([`History`]).
//!
//! As in Open vSwitch, the load that counts is that of the last few completed intervals (6 of
//! 10 s by default, `--pmd-rxq-interval`): long enough that a burst of traffic does not move
//! queues around, short enough that yesterday's traffic does not either. The poll loop only
//! adds to a counter; the switch closes intervals (about every `interval` seconds, from its
//! housekeeping) and everything else is computed from the closed ones.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Completed intervals kept: the window `pmd-rxq-show` reports and rebalancing plans on.
pub const INTERVALS: usize = 6;
/// Length of one interval unless `--pmd-rxq-interval` says otherwise (Open vSwitch's).
pub const DEFAULT_INTERVAL_SECS: u32 = 10;
/// What `--pmd-rxq-interval` accepts.
pub const INTERVAL_SECS_RANGE: RangeInclusive<u32> = 1..=3600;

/// The amounts a cumulative counter grew by in each of the last [`INTERVALS`] intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The counter when the last interval closed (or when counting began).
    base: u64,
    /// Growth per interval, a ring; `next` is where the next one goes.
    values: [u64; INTERVALS],
    next: usize,
    /// Intervals closed so far, at most [`INTERVALS`].
    filled: usize,
}

impl History {
    /// A history of a counter that reads `base` now.
    pub fn starting_at(base: u64) -> History {
        History {
            base,
            values: [0; INTERVALS],
            next: 0,
            filled: 0,
        }
    }

    /// Closes an interval: the counter reads `now`. The oldest interval is forgotten once
    /// [`INTERVALS`] are kept. A counter that went backwards (it never should) counts as 0.
    pub fn close(&mut self, now: u64) {
        self.values[self.next] = now.saturating_sub(self.base);
        self.base = now;
        self.next = (self.next + 1) % INTERVALS;
        self.filled = (self.filled + 1).min(INTERVALS);
    }

    /// Growth over the kept intervals.
    pub fn sum(&self) -> u64 {
        self.values.iter().fold(0u64, |a, &v| a.saturating_add(v))
    }

    /// How many intervals are kept (0 until the first closes).
    pub fn intervals(&self) -> usize {
        self.filled
    }
}

impl Default for History {
    fn default() -> Self {
        History::starting_at(0)
    }
}

/// One polled queue's load. The counter has one writer at a time, the poll thread serving the
/// queue: a move hands the queue over only after the old thread has acknowledged it stopped
/// polling, so its last store happens before the new thread's first. The history is the
/// control plane's alone. Aligned to a cache line so that threads polling neighbouring queues
/// never write the same line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueLoad {
    cycles: AtomicU64,
    history: Mutex<History>,
}

impl QueueLoad {
    /// Adds the cycles of one burst. Called by the polling thread only: a plain load and
    /// store, no locked instruction.
    #[inline]
    pub fn add(&self, cycles: u64) {
        let c = &self.cycles;
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(cycles),
            Ordering::Relaxed,
        );
    }

    /// Cycles counted since the queue was created.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Closes an interval of this queue's history at the counter's current value.
    pub fn close_interval(&self) {
        let now = self.cycles();
        self.lock().close(now);
    }

    /// Cycles over the kept intervals, and how many intervals that is.
    pub fn window(&self) -> (u64, usize) {
        let h = self.lock();
        (h.sum(), h.intervals())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_history_counts_growth_per_interval() {
        let mut h = History::starting_at(1000);
        assert_eq!((h.sum(), h.intervals()), (0, 0));
        h.close(1100);
        h.close(1100);
        h.close(1400);
        assert_eq!((h.sum(), h.intervals()), (400, 3));
    }

    #[test]
    fn test_history_forgets_the_oldest_interval() {
        let mut h = History::default();
        let mut total = 0;
        for i in 1..=INTERVALS as u64 {
            total += i * 10;
            h.close(total);
        }
        assert_eq!(h.sum(), total);
        // One more interval pushes out the first (10).
        total += 1000;
        h.close(total);
        assert_eq!(h.intervals(), INTERVALS);
        assert_eq!(h.sum(), total - 10);
        // A full window of idle intervals leaves nothing.
        for _ in 0..INTERVALS {
            h.close(total);
        }
        assert_eq!(h.sum(), 0);
    }

    #[test]
    fn test_history_counter_going_backwards_counts_zero() {
        let mut h = History::starting_at(500);
        h.close(100);
        assert_eq!(h.sum(), 0);
        h.close(160);
        assert_eq!(h.sum(), 60);
    }

    #[test]
    fn test_queue_load_window() {
        let q = QueueLoad::default();
        q.add(300);
        q.close_interval();
        q.add(200);
        assert_eq!(q.cycles(), 500);
        // The open interval's 200 cycles are not in the window yet.
        assert_eq!(q.window(), (300, 1));
        q.close_interval();
        assert_eq!(q.window(), (500, 2));
    }

    #[test]
    fn test_queue_load_fills_a_cache_line() {
        assert_eq!(std::mem::align_of::<QueueLoad>(), 64);
    }
}

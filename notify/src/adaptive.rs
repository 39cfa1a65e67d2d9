//! `adaptive`: NAPI's answer to "poll or sleep?" — poll the shared word for a budget, then
//! register, re-check and sleep in FUTEX_WAIT. Under load the receiver is woken by a cache-line
//! transfer, as with `spin`; when idle it costs no core, as with `futex`. The notifier is the
//! same as theirs: it makes a system call only when the receiver may be asleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::{ticks, Deadline};
use crate::waiter::{sleep_until_changed, Cursor};
use crate::{tsc, Notifier, SharedWord, WaitOutcome};

/// Poll-then-sleep notifier; see the module documentation.
#[derive(Debug)]
pub struct AdaptiveNotifier {
    word: SharedWord,
    cursor: Cursor,
    budget: Duration,
    budget_ticks: u64,
    woke_polling: AtomicU64,
    woke_sleeping: AtomicU64,
}

impl AdaptiveNotifier {
    /// The polling budget [`crate::Strategy::build`] uses: about what one sleep costs (a
    /// futex wake-up took ~20 µs at p50 on this project's VMs, `examples/wakeup_latency`).
    /// Polling for as long as a sleep would cost is the ski-rental rule: whatever the gap
    /// until the next notify, the receiver spends at most twice what the best choice in
    /// hindsight would have.
    pub const DEFAULT_BUDGET: Duration = Duration::from_micros(20);

    /// Polls for `budget` before each sleep.
    pub fn new(word: SharedWord, budget: Duration) -> AdaptiveNotifier {
        AdaptiveNotifier {
            word,
            cursor: Cursor::new(),
            budget,
            budget_ticks: ticks(budget),
            woke_polling: AtomicU64::new(0),
            woke_sleeping: AtomicU64::new(0),
        }
    }

    /// The polling budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Waits that ended while polling, and waits that ended after sleeping: the operator's
    /// view of whether the budget fits the traffic.
    pub fn wakeups(&self) -> (u64, u64) {
        (
            self.woke_polling.load(Ordering::Relaxed),
            self.woke_sleeping.load(Ordering::Relaxed),
        )
    }

    fn polled(&self) -> WaitOutcome {
        self.woke_polling.fetch_add(1, Ordering::Relaxed);
        WaitOutcome::Notified
    }
}

impl Notifier for AdaptiveNotifier {
    fn notify(&self) {
        self.word.notify();
    }

    fn wait(&self, timeout: Option<Duration>) -> WaitOutcome {
        if self.cursor.poll(&self.word) {
            return self.polled();
        }
        if timeout == Some(Duration::ZERO) {
            // A poll: no clock, no sleep (a receiver asks this once per loop).
            return WaitOutcome::TimedOut;
        }
        let deadline = Deadline::after(timeout);
        let poll_end = tsc::now()
            .saturating_add(self.budget_ticks)
            .min(deadline.tsc());
        while tsc::now() < poll_end {
            std::hint::spin_loop();
            if self.cursor.poll(&self.word) {
                return self.polled();
            }
        }
        match sleep_until_changed(&self.word, self.cursor.seen(), &deadline) {
            Some(seq) => {
                self.cursor.advance(seq);
                self.woke_sleeping.fetch_add(1, Ordering::Relaxed);
                WaitOutcome::Notified
            }
            None => WaitOutcome::TimedOut,
        }
    }

    fn name(&self) -> &'static str {
        "adaptive"
    }
}

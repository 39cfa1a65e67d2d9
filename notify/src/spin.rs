//! `spin`: the receiver polls the shared word with PAUSE between reads. The lowest wake-up
//! latency (a cache-line transfer), at the price of a core spent polling for the whole wait.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::waiter::Cursor;
use crate::{tsc, Notifier, SharedWord, WaitOutcome};

/// Busy-polling notifier; see the module documentation.
#[derive(Debug)]
pub struct SpinNotifier {
    word: SharedWord,
    cursor: Cursor,
}

impl SpinNotifier {
    pub fn new(word: SharedWord) -> SpinNotifier {
        // Calibrate the clock now, not during the first timed wait.
        tsc::hz();
        SpinNotifier {
            word,
            cursor: Cursor::new(),
        }
    }
}

impl Notifier for SpinNotifier {
    fn notify(&self) {
        self.word.notify();
    }

    fn wait(&self, timeout: Option<Duration>) -> WaitOutcome {
        if self.cursor.poll(&self.word) {
            return WaitOutcome::Notified;
        }
        if timeout == Some(Duration::ZERO) {
            // A poll: no clock, no sleep (a receiver asks this once per loop).
            return WaitOutcome::TimedOut;
        }
        let deadline = Deadline::after(timeout);
        loop {
            if deadline.expired() {
                // One last look: a notify that landed with the deadline still counts.
                return WaitOutcome::from_notified(self.cursor.poll(&self.word));
            }
            std::hint::spin_loop();
            if self.cursor.poll(&self.word) {
                return WaitOutcome::Notified;
            }
        }
    }

    fn name(&self) -> &'static str {
        "spin"
    }
}

//! `futex`: the receiver sleeps in the kernel on the shared word (FUTEX_WAIT, shared across
//! processes) until a notify changes it; our analogue of MONITOR/MWAIT on a shared variable.
//! No core burnt while idle; a wake-up costs the notifier one FUTEX_WAKE and the receiver a
//! trip through the scheduler.

use std::time::Duration;

use crate::deadline::Deadline;
use crate::waiter::{sleep_until_changed, Cursor};
use crate::{tsc, Notifier, SharedWord, WaitOutcome};

/// Sleeping notifier on the shared word; see the module documentation.
#[derive(Debug)]
pub struct FutexNotifier {
    word: SharedWord,
    cursor: Cursor,
}

impl FutexNotifier {
    pub fn new(word: SharedWord) -> FutexNotifier {
        tsc::hz();
        FutexNotifier {
            word,
            cursor: Cursor::new(),
        }
    }
}

impl Notifier for FutexNotifier {
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
        match sleep_until_changed(&self.word, self.cursor.seen(), &deadline) {
            Some(seq) => WaitOutcome::from_notified(self.cursor.advance(seq)),
            None => WaitOutcome::TimedOut,
        }
    }

    fn name(&self) -> &'static str {
        "futex"
    }
}

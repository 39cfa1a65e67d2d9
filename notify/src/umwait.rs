//! `umwait`: the receiver arms UMONITOR on the shared word's cache line and waits in UMWAIT
//! (C0.1) until the notifier's store to the word, or a TSC deadline. The closest user-mode
//! analogue of the design's MONITOR/MWAIT: no system call on either side, and the core idles
//! instead of spinning (though no other thread can use it). Only on CPUs with WAITPKG;
//! [`UmwaitNotifier::new`] refuses elsewhere.
//!
//! Untested on this project's machines (none has WAITPKG): correct by construction only.
//! The protocol is the SDM's: check, arm the monitor, check again (a store between the first
//! check and the arming would not trigger the monitor), then wait.

use std::time::Duration;

use crate::deadline::{ticks, Deadline};
use crate::sys::waitpkg::Waitpkg;
use crate::waiter::Cursor;
use crate::{tsc, Error, Notifier, SharedWord, WaitOutcome};

/// Longest single UMWAIT before the loop re-checks the deadline (the OS may cut it shorter
/// through IA32_UMWAIT_CONTROL; the loop copes either way).
const SLICE: Duration = Duration::from_micros(100);

/// UMONITOR/UMWAIT notifier; see the module documentation.
#[derive(Debug)]
pub struct UmwaitNotifier {
    word: SharedWord,
    cursor: Cursor,
    cpu: Waitpkg,
    slice_ticks: u64,
}

impl UmwaitNotifier {
    /// Fails with [`Error::Unavailable`] if the CPU lacks WAITPKG.
    pub fn new(word: SharedWord) -> Result<UmwaitNotifier, Error> {
        let cpu = Waitpkg::detect().ok_or(Error::Unavailable {
            strategy: "umwait",
            reason: UNAVAILABLE,
        })?;
        Ok(UmwaitNotifier {
            word,
            cursor: Cursor::new(),
            cpu,
            slice_ticks: ticks(SLICE),
        })
    }
}

/// Why `umwait` may be unavailable.
pub(crate) const UNAVAILABLE: &str = "the CPU lacks WAITPKG, CPUID.(EAX=7,ECX=0):ECX[5]";

impl Notifier for UmwaitNotifier {
    fn notify(&self) {
        // The notifier's locked add to `seq` is the store the receiver's monitor waits for.
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
                return WaitOutcome::from_notified(self.cursor.poll(&self.word));
            }
            self.cpu.umonitor(self.word.seq());
            if self.cursor.poll(&self.word) {
                return WaitOutcome::Notified;
            }
            let until = tsc::now()
                .saturating_add(self.slice_ticks)
                .min(deadline.tsc());
            self.cpu.umwait(until);
            if self.cursor.poll(&self.word) {
                return WaitOutcome::Notified;
            }
        }
    }

    fn name(&self) -> &'static str {
        "umwait"
    }
}

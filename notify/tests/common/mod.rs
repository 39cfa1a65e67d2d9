//! Helpers shared by the notify integration tests.
#![allow(dead_code)]

use std::fmt::Display;
use std::fs::File;
use std::time::{Duration, Instant};

use notify::{EventFd, Notifier, SharedWord, Strategy, WaitOutcome};

/// Longest any single wait in a test may take before the test fails: generous, because the
/// machine is shared and a thread can be descheduled for a while, yet bounded, so that a lost
/// wake-up fails the test instead of hanging it.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Waits for a notify the caller knows was sent (or is about to be). Fails the test if none
/// comes within [`WAIT_LIMIT`], and also if the wait only returned at its deadline: a waiter
/// whose wake-up was lost still finds the notify in its last check at the deadline, so a lost
/// wake-up shows as a wait of the whole limit, not as a timeout.
pub fn expect_notified(rx: &dyn Notifier, what: impl Display) {
    let t0 = Instant::now();
    let r = rx.wait(Some(WAIT_LIMIT));
    let took = t0.elapsed();
    assert_eq!(
        r,
        WaitOutcome::Notified,
        "{}: {what}: no notify within {WAIT_LIMIT:?}",
        rx.name()
    );
    assert!(
        took < WAIT_LIMIT,
        "{}: {what}: woken only at the deadline ({took:?}): lost wake-up",
        rx.name()
    );
}

/// Exclusive run of a test that busy-polls, across test threads and test binaries of the whole
/// workspace (the same lock file as `nfv_tests::serial::heavy`): this machine has two cores,
/// and two pollers at once starve each other. The kernel drops the `flock` if we die.
pub struct Heavy {
    _file: File,
}

pub fn heavy() -> Heavy {
    let path = std::env::temp_dir().join("nfv-dataplane-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Heavy { _file: file }
}

/// Takes the heavy lock if `strategy` polls.
pub fn lock_for(strategy: Strategy) -> Option<Heavy> {
    strategy.polls().then(heavy)
}

/// The two ends of one channel, built separately as two processes would.
pub struct Pair {
    pub tx: Box<dyn Notifier>,
    pub rx: Box<dyn Notifier>,
    pub word: SharedWord,
    pub eventfd: EventFd,
}

/// A channel for `strategy`, or None (with a loud SKIPPED line) if this machine cannot run it.
pub fn pair(strategy: Strategy) -> Option<Pair> {
    if let Err(e) = strategy.check_available() {
        eprintln!("SKIPPED ({strategy}): {e}");
        return None;
    }
    let word = SharedWord::private();
    let efd = EventFd::new().expect("eventfd");
    let tx = strategy.build(&word, Some(&efd)).expect("build tx");
    let rx = strategy.build(&word, Some(&efd)).expect("build rx");
    Some(Pair {
        tx,
        rx,
        word,
        eventfd: efd,
    })
}

/// Stress rounds: `NOTIFY_STRESS_ROUNDS` or `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("NOTIFY_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: reproducible jitter without a dependency.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random pause that lands the other side's notify anywhere around this side going to
    /// sleep: mostly nothing or a few microseconds (the window between the last check and the
    /// futex sleep), sometimes tens of microseconds (past an adaptive budget), rarely a yield.
    pub fn pause(&mut self) {
        let r = self.next();
        let us = match r % 16 {
            0..=5 => 0,
            6..=12 => r % 5,
            13 | 14 => r % 60,
            _ => {
                std::thread::yield_now();
                0
            }
        };
        if us > 0 {
            spin_for(Duration::from_micros(us));
        }
    }
}

/// Busy-waits (short pauses only: this is how the sender jitters its timing).
pub fn spin_for(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
}

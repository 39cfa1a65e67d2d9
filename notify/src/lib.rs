//! Notification and timing primitives shared by the switch, the fast path and the benchmark.
//!
//! - [`tsc`]: the time-stamp counter, the clock of every poll loop and latency figure.
//! - [`Notifier`]: how a sender tells a receiver that shares memory with it "there is work",
//!   and how the receiver waits for it. One trait, one strategy per channel ([`Strategy`]):
//!   [`SpinNotifier`] (PAUSE loop), [`FutexNotifier`] (FUTEX_WAIT on a shared word, across
//!   processes), [`UmwaitNotifier`] (UMONITOR/UMWAIT, CPUs with WAITPKG), [`EventFdNotifier`]
//!   (the vhost-user kick/call path) and [`AdaptiveNotifier`] (poll for a budget, then sleep,
//!   like NAPI).
//! - [`SharedWord`]: the 64-byte slot in shared memory the word-based strategies use, and its
//!   lost-wake-up-free protocol ([`word`]); [`ShmRegion`], a memfd mapping to put it in;
//!   [`EventFd`].
//! - [`latency`]: the wake-up latency benchmark of every strategy ([`measure_wakeup`]).
//!
//! A channel's two sides each build their own notifier on the same slot (or eventfd): the
//! sender calls [`Notifier::notify`] after publishing its work, the receiver
//! [`Notifier::wait`]s. Notifications are hints that coalesce; the queue is the truth, so the
//! receiver drains its queue after every wake-up.
//!
//! ```
//! use std::time::Duration;
//! use notify::{SharedWord, Strategy, WaitOutcome};
//!
//! // Between processes: `SharedWord::in_region` (or `SharedWord::new` on the page both sides
//! // map). Between threads, a private slot will do.
//! let word = SharedWord::private();
//! let strategy: Strategy = "adaptive".parse()?;
//! let sender = strategy.build(&word, None)?;
//! let receiver = strategy.build(&word, None)?;
//! std::thread::scope(|s| {
//!     s.spawn(|| sender.notify());
//!     assert_eq!(receiver.wait(Some(Duration::from_secs(10))), WaitOutcome::Notified);
//! });
//! # Ok::<(), notify::Error>(())
//! ```
#![deny(unsafe_code)]

use std::time::Duration;

pub mod adaptive;
mod deadline;
pub mod error;
pub mod eventfd;
pub mod futex;
pub mod latency;
pub mod shm;
pub mod spin;
pub mod strategy;
mod sys;
pub mod tsc;
pub mod umwait;
mod waiter;
pub mod word;

pub use adaptive::AdaptiveNotifier;
pub use error::Error;
pub use eventfd::EventFdNotifier;
pub use futex::FutexNotifier;
pub use latency::{measure_wakeup, measure_wakeup_with, LatencySummary, WakeupConfig};
pub use shm::ShmRegion;
pub use spin::SpinNotifier;
pub use strategy::Strategy;
pub use sys::eventfd::EventFd;
pub use umwait::UmwaitNotifier;
pub use word::{notifier_at, SharedWord, Slot, SLOT_ALIGN, SLOT_SIZE};

/// One side of a notification channel.
///
/// Semantics, for every strategy: `wait` returns [`WaitOutcome::Notified`] only after at least
/// one `notify` that happened after the previous `wait` (on the same notifier) returned, and
/// [`WaitOutcome::TimedOut`] at the deadline otherwise; it never returns early and never
/// misses a notify (no lost wake-up), whatever the interleaving with the waiter going to sleep.
/// Notifies coalesce: several before a wait make it return once. A notify concurrent with a
/// wait's return may count for that wait or the next. What the sender wrote before `notify`
/// is visible to the receiver after the `wait` that saw it returns.
///
/// Any number of notifiers may notify; each waiting thread uses a notifier of its own (the
/// notifier remembers what its last wait consumed).
pub trait Notifier: Send + Sync {
    /// Tells the receiver there is work. Never blocks; cheap when the receiver is polling.
    fn notify(&self);

    /// Waits for a notify, at most `timeout` (None: no limit). `Some(Duration::ZERO)` polls.
    fn wait(&self, timeout: Option<Duration>) -> WaitOutcome;

    /// The strategy's configuration name ([`Strategy::name`]).
    fn name(&self) -> &'static str;
}

/// How a wait ended. Often ignored: a receiver drains its queue after any wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// At least one notify happened since the previous wait returned.
    Notified,
    /// The timeout passed without one.
    TimedOut,
}

impl WaitOutcome {
    pub(crate) fn from_notified(notified: bool) -> WaitOutcome {
        if notified {
            WaitOutcome::Notified
        } else {
            WaitOutcome::TimedOut
        }
    }

    pub fn is_notified(self) -> bool {
        self == WaitOutcome::Notified
    }
}

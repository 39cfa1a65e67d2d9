//! What every waiter on a [`SharedWord`] shares: its cursor (the sequence its last wait
//! returned for) and the kernel sleep with the register-then-recheck protocol of
//! [`crate::word`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::deadline::{Deadline, Remaining};
use crate::sys::futex::{self, Woke};
use crate::SharedWord;

/// The sequence value a waiter has already returned for. Starts at zero, the value of a fresh
/// slot, so notifies sent before the receiver built its notifier are not lost: its first wait
/// returns at once if any notify happened since the slot was zeroed.
///
/// Only the waiting side touches it; an atomic only so that notifiers stay `Sync`.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    seen: AtomicU32,
}

impl Cursor {
    pub(crate) fn new() -> Cursor {
        Cursor::default()
    }

    /// The sequence the last wait returned for.
    pub(crate) fn seen(&self) -> u32 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Whether a notify happened since the last wait returned; if so, consumes it (and every
    /// other pending one: notifies coalesce). Acquire: what the sender wrote before notifying
    /// is visible after this returns true.
    #[inline]
    pub(crate) fn poll(&self, word: &SharedWord) -> bool {
        self.advance(word.seq().load(Ordering::Acquire))
    }

    /// Consumes up to `seq` if it differs from the last value seen.
    #[inline]
    pub(crate) fn advance(&self, seq: u32) -> bool {
        if seq != self.seen() {
            self.seen.store(seq, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Sleeps in FUTEX_WAIT until `word`'s sequence differs from `seen` (returns it) or the
/// deadline passes (None). Never loses a notify: it registers as a waiter before its last
/// check of the sequence, and the kernel re-checks the sequence before it sleeps.
pub(crate) fn sleep_until_changed(
    word: &SharedWord,
    seen: u32,
    deadline: &Deadline,
) -> Option<u32> {
    if deadline.remaining() == Remaining::Expired {
        let v = word.seq().load(Ordering::Acquire);
        return (v != seen).then_some(v);
    }
    let _registered = word.register_waiter();
    loop {
        // SeqCst, after the SeqCst registration: the notifier either sees us registered or we
        // see its increment.
        let v = word.seq().load(Ordering::SeqCst);
        if v != seen {
            return Some(v);
        }
        let timeout = match deadline.remaining() {
            Remaining::Forever => None,
            Remaining::Left(d) => Some(d),
            Remaining::Expired => return None,
        };
        if let Woke::Failed(_) = futex::wait(word.seq(), seen, timeout) {
            // Futexes worked when the notifier was built (Strategy checks); if the kernel now
            // refuses, degrade to short sleeps rather than a hot loop, deadline still honoured.
            std::thread::sleep(
                timeout
                    .unwrap_or(Duration::MAX)
                    .min(Duration::from_micros(50)),
            );
        }
    }
}

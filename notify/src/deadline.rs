//! The end of one wait: cheap to test in a spin loop (a TSC read), never early (confirmed by the
//! monotonic clock, which FUTEX_WAIT and ppoll time out against, so a TSC calibrated a little
//! fast cannot end a wait before its deadline).

use std::time::{Duration, Instant};

use crate::tsc;

/// What is left of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remaining {
    Forever,
    Left(Duration),
    Expired,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    end: Option<Instant>,
    /// TSC value at which `end` is (approximately) reached; u64::MAX for no deadline.
    end_tsc: u64,
}

impl Deadline {
    /// `timeout` from now; None (or a timeout past the clock's range) waits forever.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        let Some(timeout) = timeout else {
            return Deadline::forever();
        };
        let now_tsc = tsc::now();
        let Some(end) = Instant::now().checked_add(timeout) else {
            return Deadline::forever();
        };
        Deadline {
            end: Some(end),
            end_tsc: now_tsc.saturating_add(ticks(timeout)),
        }
    }

    pub(crate) fn forever() -> Deadline {
        Deadline {
            end: None,
            end_tsc: u64::MAX,
        }
    }

    /// For spin loops: one TSC read while the deadline is far; the monotonic clock decides once
    /// the TSC says it has passed.
    #[inline]
    pub(crate) fn expired(&self) -> bool {
        match self.end {
            None => false,
            Some(end) => tsc::now() >= self.end_tsc && Instant::now() >= end,
        }
    }

    /// For sleeping strategies: the timeout to hand to the kernel.
    pub(crate) fn remaining(&self) -> Remaining {
        match self.end {
            None => Remaining::Forever,
            Some(end) => match end.checked_duration_since(Instant::now()) {
                Some(d) if !d.is_zero() => Remaining::Left(d),
                _ => Remaining::Expired,
            },
        }
    }

    /// The deadline as a TSC value (u64::MAX for none), for UMWAIT and spin budgets.
    pub(crate) fn tsc(&self) -> u64 {
        self.end_tsc
    }
}

/// A duration in TSC ticks (saturating).
pub(crate) fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().saturating_mul(u128::from(tsc::hz())) / 1_000_000_000)
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forever_never_expires() {
        let d = Deadline::after(None);
        assert!(!d.expired());
        assert_eq!(d.remaining(), Remaining::Forever);
        assert_eq!(
            Deadline::after(Some(Duration::MAX)).remaining(),
            Remaining::Forever
        );
    }

    #[test]
    fn zero_expires_at_once_and_a_deadline_is_never_early() {
        assert!(Deadline::after(Some(Duration::ZERO)).expired());
        assert_eq!(
            Deadline::after(Some(Duration::ZERO)).remaining(),
            Remaining::Expired
        );
        let t0 = Instant::now();
        let d = Deadline::after(Some(Duration::from_millis(3)));
        assert!(matches!(d.remaining(), Remaining::Left(_)));
        while !d.expired() {
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(t0.elapsed() >= Duration::from_millis(3));
        assert_eq!(d.remaining(), Remaining::Expired);
    }

    #[test]
    fn ticks_match_the_calibrated_rate() {
        assert_eq!(ticks(Duration::from_secs(1)), tsc::hz());
        assert_eq!(ticks(Duration::ZERO), 0);
        assert_eq!(ticks(Duration::MAX), u64::MAX);
    }
}

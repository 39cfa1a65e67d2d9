//! FUTEX_WAIT and FUTEX_WAKE on a 32-bit word, shared (never `FUTEX_PRIVATE_FLAG`), so that a
//! waiter and a waker in different processes, mapping the word at different addresses, meet on
//! the same kernel wait queue (keyed by the page, not the address).
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Why FUTEX_WAIT returned. Every reason sends the caller back to re-check its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// FUTEX_WAKE (or a spurious wake-up).
    Woken,
    /// The word did not hold `expected` when the kernel checked it (EAGAIN).
    Changed,
    /// The relative timeout passed (ETIMEDOUT).
    TimedOut,
    /// A signal interrupted the sleep (EINTR).
    Interrupted,
    /// Anything else (ENOSYS under a seccomp filter, ...): the caller must not rely on
    /// sleeping.
    Failed(i32),
}

/// Sleeps while `*word == expected`, for at most `timeout` (None: no limit).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Woke {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned atomic for the duration of the call; FUTEX_WAIT
    // only reads it (atomically, inside the kernel); `ts_ptr` is null or points at `ts`, alive
    // until the call returns; uaddr2/val3 are unused by FUTEX_WAIT.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return Woke::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        libc::EAGAIN => Woke::Changed,
        libc::ETIMEDOUT => Woke::TimedOut,
        libc::EINTR => Woke::Interrupted,
        e => Woke::Failed(e),
    }
}

/// Wakes every waiter sleeping on `word`. Returns how many woke, or -1 if the call failed.
pub(crate) fn wake_all(word: &AtomicU32) -> i64 {
    // SAFETY: `word` is a live, aligned atomic; FUTEX_WAKE does not access it beyond using its
    // address as the wait-queue key; the remaining arguments are unused by FUTEX_WAKE.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

/// Whether futexes work here (they may not under a restrictive seccomp filter).
pub(crate) fn works() -> bool {
    let w = AtomicU32::new(0);
    wake_all(&w) >= 0 && wait(&w, 1, Some(Duration::ZERO)) == Woke::Changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_refuses_when_the_word_moved() {
        let w = AtomicU32::new(7);
        assert_eq!(wait(&w, 6, None), Woke::Changed);
        assert!(works());
    }

    #[test]
    fn wait_times_out_and_wake_wakes() {
        let w = AtomicU32::new(0);
        let t0 = Instant::now();
        assert_eq!(wait(&w, 0, Some(Duration::from_millis(5))), Woke::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(5));
        std::thread::scope(|s| {
            s.spawn(|| {
                // Bounded: a lost wake-up fails the assertion after 10 s instead of hanging.
                while w.load(Ordering::SeqCst) == 0 {
                    let r = wait(&w, 0, Some(Duration::from_secs(10)));
                    assert_ne!(r, Woke::TimedOut);
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            w.store(1, Ordering::SeqCst);
            wake_all(&w);
        });
    }
}

//! The time-stamp counter: a cycle clock cheap enough to read twice per poll-loop iteration, and
//! its frequency, calibrated once against the monotonic clock.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Current TSC value.
#[inline]
pub fn now() -> u64 {
    // SAFETY: RDTSC has no memory effects and exists on every x86_64 CPU; the intrinsic is
    // unsafe only because it is a raw instruction.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second, measured once (about 20 ms) and cached.
pub fn hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| calibrate(Duration::from_millis(20)))
}

fn calibrate(window: Duration) -> u64 {
    let t0 = Instant::now();
    let c0 = now();
    while t0.elapsed() < window {
        std::hint::spin_loop();
    }
    let c1 = now();
    let ns = t0.elapsed().as_nanos().max(1);
    u64::try_from(u128::from(c1.wrapping_sub(c0)) * 1_000_000_000 / ns).unwrap_or(u64::MAX)
}

/// Converts a TSC interval to nanoseconds.
pub fn to_ns(cycles: u64) -> u64 {
    u64::try_from(u128::from(cycles) * 1_000_000_000 / u128::from(hz().max(1))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_advances_and_calibrates_to_a_plausible_rate() {
        let a = now();
        let b = now();
        assert!(b >= a);
        let hz = hz();
        // Any x86_64 server from the last 15 years: 500 MHz .. 10 GHz.
        assert!((500_000_000..10_000_000_000).contains(&hz), "tsc hz {hz}");
        let ns = to_ns(hz);
        assert!((990_000_000..=1_010_000_000).contains(&ns), "{ns}");
    }
}

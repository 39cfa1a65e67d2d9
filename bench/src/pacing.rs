//! TSC pacing: how many packets a generator may send by now to hold a given rate, so that
//! RFC 2544 trials and latency-at-a-rate runs offer exactly the load they claim.
//!
//! The pacer keeps no per-packet timer: it compares packets sent against the cycles elapsed since
//! the window started, so a generator that fell behind (preempted, back-pressured) catches up in
//! bursts of at most its burst size rather than losing the time.

/// A rate limit, or none.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: u64,
    /// TSC cycles between two packets; `None`: send as fast as possible.
    cycles_per_packet: Option<f64>,
}

impl Pacer {
    /// Paces from `start_tsc` at `rate_pps` packets per second (`None`: unlimited), with a TSC
    /// of `tsc_hz`.
    pub fn new(start_tsc: u64, rate_pps: Option<f64>, tsc_hz: u64) -> Pacer {
        Pacer {
            start: start_tsc,
            cycles_per_packet: rate_pps.filter(|r| *r > 0.0).map(|r| tsc_hz as f64 / r),
        }
    }

    /// Packets that may go now, beyond the `sent` already sent, at most `burst`.
    #[inline]
    pub fn due(&self, now_tsc: u64, sent: u64, burst: usize) -> usize {
        let Some(cpp) = self.cycles_per_packet else {
            return burst;
        };
        // Packet k (0-based) is due at start + k * cpp.
        let elapsed = now_tsc.saturating_sub(self.start) as f64;
        let allowed = crate::num::floor_u64(elapsed / cpp) + 1;
        usize::try_from(allowed.saturating_sub(sent))
            .unwrap_or(usize::MAX)
            .min(burst)
    }

    pub fn is_limited(&self) -> bool {
        self.cycles_per_packet.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_always_allows_a_full_burst() {
        let p = Pacer::new(1000, None, 1_000_000_000);
        assert_eq!(p.due(1000, 0, 32), 32);
        assert_eq!(p.due(1000, u64::MAX, 32), 32);
        assert!(!p.is_limited());
    }

    #[test]
    fn one_mpps_at_1ghz_is_one_packet_per_thousand_cycles() {
        let p = Pacer::new(0, Some(1e6), 1_000_000_000);
        assert_eq!(p.due(0, 0, 32), 1);
        assert_eq!(p.due(999, 1, 32), 0);
        assert_eq!(p.due(1000, 1, 32), 1);
        assert_eq!(p.due(10_500, 1, 32), 10);
        // Far behind: capped at the burst.
        assert_eq!(p.due(1_000_000, 1, 32), 32);
    }

    #[test]
    fn a_paced_loop_sends_the_rate() {
        let hz = 2_000_000_000u64;
        let p = Pacer::new(0, Some(3.3e6), hz);
        let mut sent = 0u64;
        // Poll every 700 cycles for one simulated second.
        let mut t = 0;
        while t < hz {
            sent += p.due(t, sent, 32) as u64;
            t += 700;
        }
        assert!((3_299_000..=3_301_000).contains(&sent), "{sent}");
    }
}

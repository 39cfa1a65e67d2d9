//! Latency of packets: TSC timestamps carried in the packets, differences recorded in an HDR
//! histogram (in TSC cycles, 3 significant digits), percentiles reported in nanoseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded: about 30 s at 3 GHz. A larger difference (a clock mix-up) is
/// clamped, not dropped, so it still shows in p99.9.
const MAX_CYCLES: u64 = 1 << 36;

/// The latency percentiles of a result row, in nanoseconds. `None` when no packet carried a
/// timestamp through (nothing received).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyNs {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
}

/// Latencies of one measurement window.
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            // 1..=2^36 with 3 significant digits: about 1 MiB of counters, allocated once
            // before a window starts, never on the packet path.
            hist: Histogram::new_with_bounds(1, MAX_CYCLES, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
        }
    }

    /// Records one packet's latency: the TSC difference between its timestamp and now.
    #[inline]
    pub fn record(&mut self, sent_tsc: u64, now_tsc: u64) {
        let d = now_tsc.saturating_sub(sent_tsc).clamp(1, MAX_CYCLES);
        self.hist.saturating_record(d);
    }

    /// The recorded values as (TSC cycles, count) pairs: how a latency crosses a process.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Adds values given as (TSC cycles, count) pairs.
    pub fn add_pairs(&mut self, pairs: &[(u64, u64)]) {
        for &(v, n) in pairs {
            let _ = self.hist.record_n(v.clamp(1, MAX_CYCLES), n);
        }
    }

    /// Packets recorded.
    pub fn samples(&self) -> u64 {
        self.hist.len()
    }

    /// p50, p99 and p99.9 in nanoseconds.
    pub fn percentiles(&self) -> LatencyNs {
        if self.hist.is_empty() {
            return LatencyNs {
                p50: None,
                p99: None,
                p999: None,
            };
        }
        let at = |q: f64| Some(notify::tsc::to_ns(self.hist.value_at_quantile(q)));
        LatencyNs {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_nanoseconds() {
        let mut l = Latency::new();
        let hz = notify::tsc::hz();
        // 1000 packets of 1 µs .. 1000 µs.
        for i in 1..=1000u64 {
            l.record(0, i * hz / 1_000_000);
        }
        assert_eq!(l.samples(), 1000);
        let p = l.percentiles();
        let (p50, p99, p999) = (p.p50.unwrap(), p.p99.unwrap(), p.p999.unwrap());
        assert!(p50 <= p99 && p99 <= p999);
        assert!((495_000..=505_000).contains(&p50), "p50 {p50}");
        assert!((985_000..=995_000).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn empty_window_has_no_percentiles() {
        let p = Latency::new().percentiles();
        assert_eq!(p.p50, None);
        assert_eq!(p.p999, None);
    }

    #[test]
    fn clock_going_backwards_counts_as_the_smallest_latency() {
        let mut l = Latency::new();
        l.record(100, 50);
        assert_eq!(l.samples(), 1);
    }
}

//! Wake-up latency of each strategy: the time from the sender's notify to the receiver running
//! again, measured with the TSC on two threads pinned to two cores.
//!
//! One sample: the receiver announces it is about to wait and waits; the sender lets it settle
//! for a gap (so a sleeping strategy is really asleep; a gap shorter than `adaptive`'s budget
//! measures its polling path instead), writes the TSC into its own cache line of the shared
//! memory, and notifies; the receiver, once woken, reads the TSC again and records the
//! difference (in cycles, HDR histogram, 3 significant digits; reported in nanoseconds).
//! Every sample carries a fresh stamp, so a wait that returned without a notify (a spurious
//! wake-up) is caught, and a lost wake-up shows as a timeout; both fail the run.
//!
//! Both threads poll while they wait for each other: run it on otherwise idle cores.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::deadline::{ticks, Deadline};
use crate::{tsc, Error, EventFd, SharedWord, Strategy, WaitOutcome};

/// Highest latency recorded, in cycles (about 20 s at 3 GHz); larger ones are clamped.
const MAX_CYCLES: u64 = 1 << 36;

/// How to run [`measure_wakeup_with`].
#[derive(Debug, Clone)]
pub struct WakeupConfig {
    /// Samples recorded (after the warm-up).
    pub samples: usize,
    /// Samples run first and not recorded (page faults, frequency ramp, first calibrations).
    pub warmup: usize,
    /// How long the receiver waits before each notify.
    pub gap: Duration,
    /// Cores of the sender and the receiver; None (or cores that do not exist) leaves the
    /// threads unpinned, which the summary says.
    pub cores: Option<(usize, usize)>,
    /// A wake-up (or the receiver's readiness) that takes longer fails the run.
    pub timeout: Duration,
}

impl Default for WakeupConfig {
    fn default() -> Self {
        WakeupConfig {
            samples: 20_000,
            warmup: 1_000,
            gap: Duration::from_micros(100),
            cores: Some((0, 1)),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Wake-up latency percentiles of one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub strategy: &'static str,
    pub samples: u64,
    /// The receiver's wait before each notify.
    pub gap_ns: u64,
    /// Whether both threads were pinned to their cores.
    pub pinned: bool,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl LatencySummary {
    /// One JSON object (no serde: this crate stays dependency-light).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"strategy\":\"{}\",\"samples\":{},\"gap_ns\":{},\"pinned\":{},\"min_ns\":{},\
             \"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\
             \"mean_ns\":{:.1}}}",
            self.strategy,
            self.samples,
            self.gap_ns,
            self.pinned,
            self.min_ns,
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.mean_ns
        )
    }
}

/// A JSON array of summaries.
pub fn to_json(rows: &[LatencySummary]) -> String {
    let items: Vec<String> = rows.iter().map(LatencySummary::to_json).collect();
    format!("[{}]", items.join(","))
}

/// A plain-text table of summaries, one row each.
pub fn table(rows: &[LatencySummary]) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n",
        "strategy",
        "gap_us",
        "samples",
        "pinned",
        "min_ns",
        "p50_ns",
        "p99_ns",
        "p99.9_ns",
        "max_ns",
        "mean_ns"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<10} {:>8.1} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10.0}",
            r.strategy,
            r.gap_ns as f64 / 1000.0,
            r.samples,
            if r.pinned { "yes" } else { "no" },
            r.min_ns,
            r.p50_ns,
            r.p99_ns,
            r.p999_ns,
            r.max_ns,
            r.mean_ns
        );
    }
    out
}

/// Wake-up latency of `strategy` over `samples` samples, with the defaults of
/// [`WakeupConfig`] (sender on core 0, receiver on core 1, 100 µs gap).
pub fn measure_wakeup(strategy: Strategy, samples: usize) -> Result<LatencySummary, Error> {
    measure_wakeup_with(
        strategy,
        &WakeupConfig {
            samples,
            ..WakeupConfig::default()
        },
    )
}

/// Cache-line padding: the stamp and the handshake must not share a line with each other or
/// with the notification slot, as in a real queue.
#[repr(align(64))]
struct Padded<T>(T);

struct Bench {
    /// TSC at the notify of the current sample.
    stamp: Padded<AtomicU64>,
    /// Samples the receiver is ready for (it has returned from the previous one).
    ready: Padded<AtomicU64>,
    abort: AtomicBool,
}

/// Wake-up latency of `strategy` as `cfg` says.
pub fn measure_wakeup_with(
    strategy: Strategy,
    cfg: &WakeupConfig,
) -> Result<LatencySummary, Error> {
    let fail = |what: String| Error::Benchmark {
        strategy: strategy.name(),
        what,
    };
    if cfg.samples == 0 {
        return Err(fail("no samples requested".into()));
    }
    let word = SharedWord::private();
    let eventfd = match strategy {
        Strategy::EventFd => Some(EventFd::new()?),
        _ => None,
    };
    // Two notifiers on the same slot, as two processes would build them.
    let receiver = strategy.build(&word, eventfd.as_ref())?;
    let sender = strategy.build(&word, eventfd.as_ref())?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_CYCLES, 3)
        .map_err(|e| fail(format!("histogram: {e}")))?;
    let bench = Bench {
        stamp: Padded(AtomicU64::new(0)),
        ready: Padded(AtomicU64::new(0)),
        abort: AtomicBool::new(false),
    };
    let total = u64::try_from(cfg.warmup.saturating_add(cfg.samples)).unwrap_or(u64::MAX);
    let warmup = u64::try_from(cfg.warmup).unwrap_or(u64::MAX);
    let cores = pick_cores(cfg.cores);
    let gap_ticks = ticks(cfg.gap);
    tsc::hz();

    let (rx_result, tx_result) = std::thread::scope(|s| {
        let bench = &bench;
        let hist = &mut hist;
        let receiver = &receiver;
        let sender = &sender;
        let rx = s.spawn(move || -> Result<bool, String> {
            let pinned = cores.is_some_and(|(_, c)| core_affinity::set_for_current(c));
            let mut last_stamp = 0;
            for i in 0..total {
                bench.ready.0.store(i + 1, Ordering::Release);
                match receiver.wait(Some(cfg.timeout)) {
                    WaitOutcome::Notified => {
                        let now = tsc::now();
                        let sent = bench.stamp.0.load(Ordering::Acquire);
                        if sent == last_stamp {
                            bench.abort.store(true, Ordering::Relaxed);
                            return Err(format!(
                                "sample {i}: wait returned without a new notify (spurious wake-up)"
                            ));
                        }
                        last_stamp = sent;
                        if i >= warmup {
                            hist.saturating_record(now.saturating_sub(sent).clamp(1, MAX_CYCLES));
                        }
                    }
                    WaitOutcome::TimedOut => {
                        bench.abort.store(true, Ordering::Relaxed);
                        return Err(format!(
                            "sample {i}: no wake-up within {:?} (a lost wake-up, or the sender \
                             was starved of CPU)",
                            cfg.timeout
                        ));
                    }
                }
            }
            Ok(pinned)
        });
        let tx = s.spawn(move || -> Result<bool, String> {
            let pinned = cores.is_some_and(|(c, _)| core_affinity::set_for_current(c));
            for i in 0..total {
                let deadline = Deadline::after(Some(cfg.timeout));
                while bench.ready.0.load(Ordering::Acquire) <= i {
                    if bench.abort.load(Ordering::Relaxed) {
                        return Err("receiver gave up".into());
                    }
                    if deadline.expired() {
                        bench.abort.store(true, Ordering::Relaxed);
                        return Err(format!(
                            "sample {i}: receiver not ready within {:?}",
                            cfg.timeout
                        ));
                    }
                    std::hint::spin_loop();
                }
                let until = tsc::now().saturating_add(gap_ticks);
                while tsc::now() < until {
                    std::hint::spin_loop();
                }
                bench.stamp.0.store(tsc::now(), Ordering::Release);
                sender.notify();
            }
            Ok(pinned)
        });
        (rx.join(), tx.join())
    });
    let rx_pinned = rx_result
        .map_err(|_| fail("receiver thread panicked".into()))?
        .map_err(&fail)?;
    let tx_pinned = tx_result
        .map_err(|_| fail("sender thread panicked".into()))?
        .map_err(&fail)?;

    let ns = |cycles: u64| tsc::to_ns(cycles);
    Ok(LatencySummary {
        strategy: strategy.name(),
        samples: hist.len(),
        gap_ns: u64::try_from(cfg.gap.as_nanos()).unwrap_or(u64::MAX),
        pinned: rx_pinned && tx_pinned,
        min_ns: ns(hist.min()),
        p50_ns: ns(hist.value_at_quantile(0.5)),
        p90_ns: ns(hist.value_at_quantile(0.9)),
        p99_ns: ns(hist.value_at_quantile(0.99)),
        p999_ns: ns(hist.value_at_quantile(0.999)),
        max_ns: ns(hist.max()),
        mean_ns: hist.mean() * 1e9 / tsc::hz() as f64,
    })
}

/// The sender's and the receiver's core, if both exist here.
fn pick_cores(
    wanted: Option<(usize, usize)>,
) -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    let (tx, rx) = wanted?;
    let ids = core_affinity::get_core_ids()?;
    let find = |id: usize| ids.iter().copied().find(|c| c.id == id);
    Some((find(tx)?, find(rx)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> LatencySummary {
        LatencySummary {
            strategy: "futex",
            samples: 3,
            gap_ns: 100_000,
            pinned: true,
            min_ns: 1,
            p50_ns: 2,
            p90_ns: 3,
            p99_ns: 4,
            p999_ns: 5,
            max_ns: 6,
            mean_ns: 2.5,
        }
    }

    #[test]
    fn json_and_table_carry_every_percentile() {
        let j = to_json(&[summary(), summary()]);
        assert!(j.starts_with("[{\"strategy\":\"futex\""), "{j}");
        assert!(
            j.contains("\"p999_ns\":5") && j.contains("\"mean_ns\":2.5"),
            "{j}"
        );
        let t = table(&[summary()]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("p99.9_ns") && t.contains("futex"), "{t}");
    }

    #[test]
    fn test_zero_samples_is_an_error() {
        let cfg = WakeupConfig {
            samples: 0,
            ..WakeupConfig::default()
        };
        assert!(matches!(
            measure_wakeup_with(Strategy::Futex, &cfg),
            Err(Error::Benchmark { .. })
        ));
    }
}

//! The wake-up benchmark runs end to end for every strategy available here, and its summary
//! is consistent. Small sample counts: this checks the harness, the example measures.

mod common;

use std::time::Duration;

use notify::{measure_wakeup_with, Strategy, WakeupConfig};

#[test]
fn measure_wakeup_runs_every_available_strategy() {
    let _heavy = common::heavy();
    let cfg = WakeupConfig {
        samples: 500,
        warmup: 50,
        gap: Duration::from_micros(30),
        ..WakeupConfig::default()
    };
    for s in Strategy::available() {
        let r = measure_wakeup_with(s, &cfg).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{}", r.to_json());
        assert_eq!(r.strategy, s.name());
        assert_eq!(r.samples, 500);
        assert!(r.min_ns <= r.p50_ns, "{r:?}");
        assert!(r.p50_ns <= r.p90_ns && r.p90_ns <= r.p99_ns, "{r:?}");
        assert!(r.p99_ns <= r.p999_ns && r.p999_ns <= r.max_ns, "{r:?}");
        assert!(r.p50_ns > 0 && r.p50_ns < 1_000_000_000, "{r:?}");
        assert_eq!(r.gap_ns, 30_000);
    }
}

//! One row from several rounds of the same (scenario, size): the median trial's figures as the
//! headline (so Mpps, Gbit/s, loss, packets and duration stay consistent with each other), and
//! every figure's median, min, max and spread over the rounds beside it.

use crate::report::{Row, RowStats};
use crate::stats::{self, Summary};

/// The row of `rounds` (one entry per round, `None` where the trial failed); `None` when every
/// round failed.
pub fn row(
    scenario: &str,
    size: u32,
    rate_pps: Option<f64>,
    rounds: &[Option<Row>],
) -> Option<Row> {
    let ok: Vec<&Row> = rounds.iter().flatten().collect();
    let mut by_mpps = ok.clone();
    by_mpps.sort_by(|a, b| a.mpps.total_cmp(&b.mpps));
    let mid = by_mpps.get(by_mpps.len().checked_sub(1)? / 2)?;
    let mut row = (*mid).clone();
    debug_assert_eq!(
        (row.scenario.as_str(), row.frame_size, row.rate_limit_mpps),
        (scenario, size, rate_pps.map(|r| r / 1e6))
    );
    let all = |f: fn(&Row) -> f64| -> Option<Summary> {
        stats::summarize(&ok.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let latency = |f: fn(&Row) -> Option<u64>| -> Option<Summary> {
        let v: Vec<f64> = ok.iter().filter_map(|r| f(r)).map(|x| x as f64).collect();
        stats::summarize(&v)
    };
    let mpps = all(|r| r.mpps)?;
    row.stats = Some(RowStats {
        mpps,
        cycles_per_packet: all(|r| r.cycles_per_packet)?,
        latency_p50_ns: latency(|r| r.latency_ns.p50),
        latency_p99_ns: latency(|r| r.latency_ns.p99),
        latency_p999_ns: latency(|r| r.latency_ns.p999),
    });
    row.noisy = mpps.noisy;
    row.trials = rounds.len();
    row.mpps_per_round = rounds.iter().map(|r| r.as_ref().map(|r| r.mpps)).collect();
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Latency;
    use crate::scenario::Measurement;

    fn trial(mpps: u64, cycles: f64) -> Option<Row> {
        let m = Measurement {
            sent: mpps * 1_000_000,
            received: mpps * 1_000_000,
            seconds: 1.0,
            cycles_per_packet: cycles,
            cycles_of: "loop",
            latency: Latency::new(),
            errors: 0,
            detail: Some(format!("{mpps}")),
        };
        Some(Row::new("switch", 64, None, &m))
    }

    #[test]
    fn the_headline_is_the_median_trial_and_stats_cover_every_round() {
        let rounds = [trial(10, 90.0), None, trial(14, 70.0), trial(12, 80.0)];
        let r = row("switch", 64, None, &rounds).unwrap();
        // The median trial by Mpps, whole: its detail and packets come with it.
        assert_eq!(r.mpps, 12.0);
        assert_eq!(r.detail.as_deref(), Some("12"));
        assert_eq!(r.packets_received, 12_000_000);
        let s = r.stats.unwrap();
        assert_eq!((s.mpps.min, s.mpps.max, s.mpps.trials), (10.0, 14.0, 3));
        assert_eq!(s.cycles_per_packet.median, 80.0);
        assert_eq!(s.latency_p50_ns, None);
        assert!(r.noisy, "(14 - 10) / 12 is above 15 %");
        assert_eq!(r.trials, 4);
        assert_eq!(r.mpps_per_round, [Some(10.0), None, Some(14.0), Some(12.0)]);
    }

    #[test]
    fn an_even_count_takes_the_lower_middle_trial() {
        let r = row("switch", 64, None, &[trial(10, 1.0), trial(11, 1.0)]).unwrap();
        assert_eq!(r.mpps, 10.0);
        assert_eq!(r.stats.unwrap().mpps.median, 10.5);
        assert!(!r.noisy);
    }

    #[test]
    fn every_round_failed_gives_no_row() {
        assert_eq!(row("switch", 64, None, &[None, None]), None);
        assert_eq!(row("switch", 64, None, &[]), None);
    }
}

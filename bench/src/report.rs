//! Result rows: the JSON schema of `bench run` (one object per scenario and frame size), the
//! table printed for an operator, and the file they are written to.
//!
//! Rows keep full precision: the rate figures are exact functions of `mpps` and `frame_size`
//! (see [`crate::linerate`]), which `tests/json_schema.rs` checks on real output.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::latency::LatencyNs;
use crate::linerate::RateFigures;
use crate::scenario::Measurement;

/// One (scenario, frame size) result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub frame_size: u32,
    /// Packets received per second, in millions.
    pub mpps: f64,
    /// Frame bits received per second (no preamble or gap), in Gbit/s.
    pub gbps: f64,
    /// `mpps` as a percentage of 10GbE line rate at this frame size.
    pub line_rate_10g_pct: f64,
    /// `mpps` as a percentage of 40GbE line rate at this frame size.
    pub line_rate_40g_pct: f64,
    /// TSC cycles per packet of the part named by `cycles_of`.
    pub cycles_per_packet: f64,
    /// (sent - received) / sent.
    pub loss_ratio: f64,
    pub latency_ns: LatencyNs,
    /// `pmd-busy`, `consumer` or `loop` (see the scenario's documentation).
    pub cycles_of: String,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Length of the measured window.
    pub duration_s: f64,
    /// The offered rate when the trial was rate-limited, in Mpps; `null` when unlimited.
    pub rate_limit_mpps: Option<f64>,
    /// Packets whose latency was recorded.
    pub latency_samples: u64,
    /// Packets that arrived out of order.
    pub errors: u64,
    /// How the scenario ran, when it chose (the ring limits' winning configuration).
    #[serde(default)]
    pub detail: Option<String>,
}

impl Row {
    pub fn new(scenario: &str, frame_size: u32, rate_pps: Option<f64>, m: &Measurement) -> Row {
        let f = RateFigures::new(m.pps(), frame_size);
        Row {
            scenario: scenario.to_owned(),
            frame_size,
            mpps: f.mpps,
            gbps: f.gbps,
            line_rate_10g_pct: f.line_rate_10g_pct,
            line_rate_40g_pct: f.line_rate_40g_pct,
            cycles_per_packet: m.cycles_per_packet,
            loss_ratio: m.loss_ratio(),
            latency_ns: m.latency.percentiles(),
            cycles_of: m.cycles_of.to_owned(),
            packets_sent: m.sent,
            packets_received: m.received,
            duration_s: m.seconds,
            rate_limit_mpps: rate_pps.map(|r| r / 1e6),
            latency_samples: m.latency.samples(),
            errors: m.errors,
            detail: m.detail.clone(),
        }
    }
}

fn ns(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Loss as an operator reads it: exact zero, or a percentage.
pub fn loss_text(ratio: f64) -> String {
    if ratio == 0.0 {
        "0".into()
    } else if ratio >= 0.001 {
        format!("{:.2}%", ratio * 100.0)
    } else {
        format!("{:.1e}%", ratio * 100.0)
    }
}

/// The results table, one line per row, and a line per note (unavailable scenarios).
pub fn table(rows: &[Row], notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<17} {:>5} {:>8} {:>7} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "scenario",
        "size",
        "Mpps",
        "Gbit/s",
        "%10G",
        "%40G",
        "cyc/pkt",
        "loss",
        "p50 ns",
        "p99 ns",
        "p99.9 ns"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<17} {:>5} {:>8.3} {:>7.2} {:>6.1} {:>6.1} {:>9.1} {:>9} {:>8} {:>8} {:>9}",
            r.scenario,
            r.frame_size,
            r.mpps,
            r.gbps,
            r.line_rate_10g_pct,
            r.line_rate_40g_pct,
            r.cycles_per_packet,
            loss_text(r.loss_ratio),
            ns(r.latency_ns.p50),
            ns(r.latency_ns.p99),
            ns(r.latency_ns.p999),
        );
    }
    for line in fastpath_ratios(rows)
        .into_iter()
        .chain(crate::limits::limit_ratios(rows))
        .chain(crate::limits::details(rows))
    {
        let _ = writeln!(s, "{line}");
    }
    for n in notes {
        let _ = writeln!(s, "{n}");
    }
    s
}

/// For each frame size with a `switch` row and at least one fast-path row: the fast path's
/// packet rate as a multiple of the switch path's between the same two guests, from this run.
pub fn fastpath_ratios(rows: &[Row]) -> Vec<String> {
    let find = |name: &str, size: u32| {
        rows.iter()
            .find(|r| r.scenario == name && r.frame_size == size)
    };
    let mut out = Vec::new();
    for sw in rows.iter().filter(|r| r.scenario == "switch") {
        if sw.mpps <= 0.0 {
            continue;
        }
        let parts: Vec<String> = [
            ("copy", "fastpath-copy"),
            ("zero-copy", "fastpath-zerocopy"),
        ]
        .iter()
        .filter_map(|&(label, name)| {
            find(name, sw.frame_size).map(|r| format!("{label} {:.2}x", r.mpps / sw.mpps))
        })
        .collect();
        if !parts.is_empty() {
            out.push(format!(
                "fast path / switch path at {} B, this run: {}",
                sw.frame_size,
                parts.join(", ")
            ));
        }
    }
    out
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Output {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::Output {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Latency;

    fn measurement(sent: u64, received: u64, seconds: f64) -> Measurement {
        Measurement {
            sent,
            received,
            seconds,
            cycles_per_packet: 100.0,
            cycles_of: "loop",
            latency: Latency::new(),
            errors: 0,
            detail: None,
        }
    }

    #[test]
    fn a_row_at_10gbe_line_rate() {
        // 14,880,952 packets of 64 B in one second.
        let m = measurement(14_880_953, 14_880_952, 1.0);
        let r = Row::new("ring-limit", 64, None, &m);
        assert!((r.mpps - 14.880_952).abs() < 1e-6);
        assert!((r.line_rate_10g_pct - 100.0).abs() < 1e-4);
        assert!((r.line_rate_40g_pct - 25.0).abs() < 1e-4);
        assert!(r.loss_ratio > 0.0 && r.loss_ratio < 1e-7);
        assert_eq!(r.rate_limit_mpps, None);
        let t = table(&[r], &["note".into()]);
        assert!(t.contains("ring-limit") && t.contains("14.881") && t.contains("note"));
    }

    #[test]
    fn fastpath_ratios_are_per_frame_size_against_the_switch_row() {
        let rows = [
            Row::new("switch", 64, None, &measurement(4_000_000, 4_000_000, 1.0)),
            Row::new(
                "fastpath-copy",
                64,
                None,
                &measurement(9_000_000, 9_000_000, 1.0),
            ),
            Row::new(
                "fastpath-zerocopy",
                64,
                None,
                &measurement(14_000_000, 14_000_000, 1.0),
            ),
            Row::new(
                "switch",
                1518,
                None,
                &measurement(2_000_000, 2_000_000, 1.0),
            ),
            Row::new(
                "fastpath-copy",
                1518,
                None,
                &measurement(3_000_000, 3_000_000, 1.0),
            ),
            Row::new("ring-limit", 128, None, &measurement(5, 5, 1.0)),
        ];
        assert_eq!(
            fastpath_ratios(&rows),
            [
                "fast path / switch path at 64 B, this run: copy 2.25x, zero-copy 3.50x",
                "fast path / switch path at 1518 B, this run: copy 1.50x",
            ]
        );
        assert!(table(&rows, &[]).contains("copy 2.25x, zero-copy 3.50x"));
    }

    #[test]
    fn fastpath_ratios_need_a_switch_row_that_moved_packets() {
        let rows = [
            Row::new("fastpath-copy", 64, None, &measurement(9, 9, 1.0)),
            Row::new("switch", 128, None, &measurement(0, 0, 1.0)),
            Row::new("fastpath-copy", 128, None, &measurement(9, 9, 1.0)),
        ];
        assert!(fastpath_ratios(&rows).is_empty());
    }

    #[test]
    fn loss_reads_as_zero_or_percent() {
        assert_eq!(loss_text(0.0), "0");
        assert_eq!(loss_text(0.25), "25.00%");
        assert_eq!(loss_text(1e-6), "1.0e-4%");
    }

    #[test]
    fn rows_round_trip_through_json() {
        let r = Row::new("syscall", 128, Some(1e6), &measurement(10, 10, 0.5));
        let text = serde_json::to_string(&r).unwrap();
        let back: Row = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(text.contains("\"latency_ns\":{\"p50\":null"));
    }
}

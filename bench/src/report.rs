//! Result rows: the JSON schema of `bench run` (one object per scenario and frame size), the
//! table printed for an operator, and the file they are written to.
//!
//! Rows keep full precision: the rate figures are exact functions of `mpps` and `frame_size`
//! (see [`crate::linerate`]), which `tests/json_schema.rs` checks on real output.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::icount::IcountFigure;
use crate::latency::LatencyNs;
use crate::linerate::RateFigures;
use crate::machine::Machine;
use crate::ratios::{self, Ratio};
use crate::scenario::Measurement;
use crate::stats::Summary;

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
    /// Rounds the (scenario, size) ran in. The figures above are those of one trial, the median
    /// one by Mpps (the lower middle one for an even count), so they agree with each other;
    /// `stats` summarises every figure over the rounds.
    #[serde(default = "one")]
    pub trials: usize,
    /// Mpps of each round in order, `null` where that round's trial failed.
    #[serde(default)]
    pub mpps_per_round: Vec<Option<f64>>,
    #[serde(default)]
    pub stats: Option<RowStats>,
    /// The Mpps spread over the rounds is above 15 %: read the figure as its range.
    #[serde(default)]
    pub noisy: bool,
}

fn one() -> usize {
    1
}

/// Median, min, max and spread of a row's figures over its rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowStats {
    pub mpps: Summary,
    pub cycles_per_packet: Summary,
    /// Over the rounds that recorded latency; `null` when none did.
    pub latency_p50_ns: Option<Summary>,
    pub latency_p99_ns: Option<Summary>,
    pub latency_p999_ns: Option<Summary>,
}

/// What `bench run --json` and `bench demo --json` write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDoc {
    /// 2: this document; 1 was a bare array of rows. `bench icount` writes the same document
    /// with no rows (and 0 trials) and its figures in `icount`.
    pub schema: u32,
    pub machine: Machine,
    /// Rounds requested: every (scenario, size) ran once per round, round-robin.
    pub trials: usize,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    /// The summary of what was noisy, when something was.
    pub noisy: Option<String>,
    /// Instructions per packet of each path and size (`bench icount --json`); absent from a
    /// `bench run` document, and from documents older than it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icount: Vec<IcountFigure>,
}

impl RunDoc {
    pub const SCHEMA: u32 = 2;

    pub fn new(machine: Machine, trials: usize, rows: Vec<Row>) -> RunDoc {
        let ratios = ratios::ratios(&rows);
        let noisy = ratios::noisy_line(&rows, &ratios);
        RunDoc {
            schema: RunDoc::SCHEMA,
            machine,
            trials,
            rows,
            ratios,
            noisy,
            icount: Vec::new(),
        }
    }

    /// Reads a document `bench run --json` wrote.
    pub fn read(path: &Path) -> Result<RunDoc> {
        let bad = |message: String| Error::Input {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let doc: RunDoc = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a `bench run --json` document (schema {}): {e}",
                RunDoc::SCHEMA
            ))
        })?;
        if doc.schema != RunDoc::SCHEMA {
            return Err(bad(format!(
                "schema {} (this bench reads {})",
                doc.schema,
                RunDoc::SCHEMA
            )));
        }
        Ok(doc)
    }
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
            trials: 1,
            mpps_per_round: vec![Some(f.mpps)],
            stats: None,
            noisy: false,
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

/// `12%`, or `40% noisy`; `-` for a single trial.
fn spread_text(r: &Row) -> String {
    match r.stats.as_ref().map(|s| s.mpps) {
        Some(m) if m.trials > 1 => {
            let pct = m
                .spread
                .map_or("-".into(), |x| format!("{:.0}%", x * 100.0));
            if m.noisy {
                format!("{pct} noisy")
            } else {
                pct
            }
        }
        _ => "-".into(),
    }
}

/// The results table: the machine, one line per row (the median trial's figures, the range of
/// Mpps over the rounds), the ratios, the details, what was noisy, and a line per note
/// (unavailable scenarios).
pub fn table(doc: &RunDoc, notes: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", doc.machine.line());
    if let Some(w) = doc.machine.steal_warning() {
        let _ = writeln!(s, "{w}");
    }
    if doc.trials > 1 {
        let _ = writeln!(
            s,
            "{} rounds, round-robin over the scenarios; Mpps is the median trial, min and max \
             over the rounds",
            doc.trials
        );
    }
    let _ = writeln!(
        s,
        "{:<17} {:>5} {:>8} {:>8} {:>8} {:>10} {:>7} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "scenario",
        "size",
        "Mpps",
        "min",
        "max",
        "spread",
        "Gbit/s",
        "%10G",
        "%40G",
        "cyc/pkt",
        "loss",
        "p50 ns",
        "p99 ns",
        "p99.9 ns"
    );
    for r in &doc.rows {
        let (min, max) = r
            .stats
            .as_ref()
            .map_or((r.mpps, r.mpps), |x| (x.mpps.min, x.mpps.max));
        let _ = writeln!(
            s,
            "{:<17} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>7.2} {:>6.1} {:>6.1} {:>9.1} {:>9} {:>8} \
             {:>8} {:>9}",
            r.scenario,
            r.frame_size,
            r.mpps,
            min,
            max,
            spread_text(r),
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
    for line in ratios::lines(&doc.ratios)
        .into_iter()
        .chain(ratios::details(&doc.rows))
        .chain(doc.noisy.clone())
    {
        let _ = writeln!(s, "{line}");
    }
    for n in notes {
        let _ = writeln!(s, "{n}");
    }
    s
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
        let doc = RunDoc::new(Machine::probe(), 1, vec![r]);
        let t = table(&doc, &["note".into()]);
        assert!(t.starts_with("machine: "), "{t}");
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
        let doc = RunDoc::new(Machine::probe(), 1, rows.to_vec());
        assert_eq!(
            ratios::lines(&doc.ratios),
            [
                "fast path / switch path at 64 B, this run: copy 2.25x, zero-copy 3.50x",
                "fast path / switch path at 1518 B, this run: copy 1.50x",
            ]
        );
        assert!(table(&doc, &[]).contains("copy 2.25x, zero-copy 3.50x"));
    }

    #[test]
    fn fastpath_ratios_need_a_switch_row_that_moved_packets() {
        let rows = [
            Row::new("fastpath-copy", 64, None, &measurement(9, 9, 1.0)),
            Row::new("switch", 128, None, &measurement(0, 0, 1.0)),
            Row::new("fastpath-copy", 128, None, &measurement(9, 9, 1.0)),
        ];
        assert!(ratios::ratios(&rows).is_empty());
    }

    #[test]
    fn loss_reads_as_zero_or_percent() {
        assert_eq!(loss_text(0.0), "0");
        assert_eq!(loss_text(0.25), "25.00%");
        assert_eq!(loss_text(1e-6), "1.0e-4%");
    }

    #[test]
    fn instruction_counts_round_trip_and_old_documents_still_read() {
        let mut doc = RunDoc::new(Machine::probe(), 0, Vec::new());
        let run_text = serde_json::to_string(&doc).unwrap();
        assert!(
            !run_text.contains("icount"),
            "a run without counts writes none"
        );
        doc.icount.push(IcountFigure {
            path: "switch".into(),
            size: 64,
            instructions_per_packet: 803.8356,
            method: "callgrind".into(),
            packets: 40_000,
            instructions: [16_074_475, 48_227_899],
        });
        let text = serde_json::to_string(&doc).unwrap();
        let back: RunDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(back.icount, doc.icount);
        // A document written before instruction counts existed.
        let mut old: serde_json::Value = serde_json::from_str(&run_text).unwrap();
        old.as_object_mut().unwrap().remove("icount");
        let back: RunDoc = serde_json::from_value(old).unwrap();
        assert!(back.icount.is_empty());
        // A figure without its raw counts (they are optional).
        let f: IcountFigure = serde_json::from_str(
            r#"{"path":"ring-limit","size":64,"instructions_per_packet":97.5,"method":"callgrind","packets":40000}"#,
        )
        .unwrap();
        assert_eq!(f.instructions, [0, 0]);
        assert_eq!(f.key(), "icount ring-limit@64");
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

//! The ratios a reader judges the fast path by, from the same run: each fast-path mode against
//! the switch path between the same two guests, and each against its own limit (copy against
//! `ring-limit`, a frame copied through shared memory; zero-copy against `ring-limit-desc`, a
//! descriptor through shared memory, the frame read in place). A path above its limit means the
//! limit is not the best transfer this machine allows, and the line says so.
//!
//! With several rounds each ratio is the median of the per-round ratios (a round's path and
//! reference ran minutes apart at most, under the same neighbours), with its range.

use serde::{Deserialize, Serialize};

use crate::report::Row;
use crate::stats::{self, Summary};

/// What a path is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Against {
    /// The switch path: how much faster the fast path is.
    Switch,
    /// The path's limit: how close to it the path gets.
    Limit,
}

/// (label, path scenario, reference scenario, kind)
pub const PAIRS: [(&str, &str, &str, Against); 4] = [
    ("copy", "fastpath-copy", "switch", Against::Switch),
    ("zero-copy", "fastpath-zerocopy", "switch", Against::Switch),
    ("copy", "fastpath-copy", "ring-limit", Against::Limit),
    (
        "zero-copy",
        "fastpath-zerocopy",
        "ring-limit-desc",
        Against::Limit,
    ),
];

/// One ratio of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub label: String,
    pub path: String,
    pub reference: String,
    pub against: Against,
    pub frame_size: u32,
    /// Over the rounds where both rows moved packets.
    pub ratio: Summary,
}

impl Ratio {
    /// `fastpath-zerocopy/switch@64`: how `bench check` matches ratios between runs.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.path, self.reference, self.frame_size)
    }
}

/// Every ratio the rows allow, in frame-size order.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let find = |name: &str, size: u32| {
        rows.iter()
            .find(|r| r.scenario == name && r.frame_size == size)
    };
    let mut out = Vec::new();
    for size in sizes(rows) {
        for &(label, path, reference, against) in &PAIRS {
            let (Some(p), Some(r)) = (find(path, size), find(reference, size)) else {
                continue;
            };
            let per_round: Vec<f64> = p
                .mpps_per_round
                .iter()
                .zip(&r.mpps_per_round)
                .filter_map(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
                    _ => None,
                })
                .collect();
            if let Some(ratio) = stats::summarize(&per_round) {
                out.push(Ratio {
                    label: label.to_owned(),
                    path: path.to_owned(),
                    reference: reference.to_owned(),
                    against,
                    frame_size: size,
                    ratio,
                });
            }
        }
    }
    out
}

fn sizes(rows: &[Row]) -> Vec<u32> {
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.frame_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// `2.25x`, or with several rounds `2.25x (2.10-2.40)`, `, noisy` inside when it moved > 15 %.
pub fn ratio_text(s: &Summary) -> String {
    if s.trials <= 1 {
        return format!("{:.2}x", s.median);
    }
    let noisy = if s.noisy { ", noisy" } else { "" };
    format!("{:.2}x ({:.2}-{:.2}{noisy})", s.median, s.min, s.max)
}

/// The table's ratio lines: per frame size, one against the switch and one against the limits.
pub fn lines(ratios: &[Ratio]) -> Vec<String> {
    let mut sizes: Vec<u32> = ratios.iter().map(|r| r.frame_size).collect();
    sizes.dedup();
    let mut out = Vec::new();
    for kind in [Against::Switch, Against::Limit] {
        for &size in &sizes {
            let these: Vec<&Ratio> = ratios
                .iter()
                .filter(|r| r.frame_size == size && r.against == kind)
                .collect();
            let Some(first) = these.first() else {
                continue;
            };
            let when = match first.ratio.trials {
                1 => "this run".to_owned(),
                n => format!("median of {n} rounds"),
            };
            let parts: Vec<String> = these
                .iter()
                .map(|r| match kind {
                    Against::Switch => format!("{} {}", r.label, ratio_text(&r.ratio)),
                    Against::Limit => {
                        let flag = if r.ratio.median > 1.0 {
                            " (ABOVE ITS LIMIT: the limit is wrong)"
                        } else {
                            ""
                        };
                        format!(
                            "{} {} of {}{flag}",
                            r.label,
                            ratio_text(&r.ratio),
                            r.reference
                        )
                    }
                })
                .collect();
            let what = match kind {
                Against::Switch => "fast path / switch path",
                Against::Limit => "fast path / its limit",
            };
            out.push(format!("{what} at {size} B, {when}: {}", parts.join(", ")));
        }
    }
    out
}

/// The rows' details (the ring's winning configuration, the views' costs), one line each.
pub fn details(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            r.detail
                .as_ref()
                .map(|d| format!("  {} {} B: {d}", r.scenario, r.frame_size))
        })
        .collect()
}

/// The summary of what moved too much to be read as one number; `None` when nothing did.
pub fn noisy_line(rows: &[Row], ratios: &[Ratio]) -> Option<String> {
    let mut what: Vec<String> = rows
        .iter()
        .filter(|r| r.noisy)
        .map(|r| format!("{} {} B", r.scenario, r.frame_size))
        .collect();
    what.extend(
        ratios
            .iter()
            .filter(|r| r.ratio.noisy)
            .map(|r| format!("{}/{} at {} B", r.label, r.reference, r.frame_size)),
    );
    (!what.is_empty()).then(|| {
        format!(
            "noisy (spread (max - min) / median above {:.0}% over the rounds): {}. Read those \
             as their range, not as one number; rerun with more --trials or on a quieter machine.",
            stats::NOISY_SPREAD * 100.0,
            what.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: &str, size: u32, mpps: u64) -> Row {
        let n = mpps * 1_000_000;
        let m = crate::scenario::Measurement {
            sent: n,
            received: n,
            seconds: 1.0,
            cycles_per_packet: 100.0,
            cycles_of: "loop",
            latency: crate::latency::Latency::new(),
            errors: 0,
            detail: None,
        };
        Row::new(s, size, None, &m)
    }

    fn limit_lines(rows: &[Row]) -> Vec<String> {
        lines(&ratios(rows))
            .into_iter()
            .filter(|l| l.contains("its limit"))
            .collect()
    }

    #[test]
    fn paths_are_compared_with_their_own_limit() {
        let rows = [
            row("fastpath-copy", 64, 20),
            row("ring-limit", 64, 80),
            row("fastpath-zerocopy", 64, 45),
            row("ring-limit-desc", 64, 50),
        ];
        assert_eq!(
            limit_lines(&rows),
            vec![
                "fast path / its limit at 64 B, this run: copy 0.25x of ring-limit, zero-copy 0.90x of ring-limit-desc"
            ]
        );
    }

    #[test]
    fn a_path_above_its_limit_is_flagged() {
        let rows = [
            row("fastpath-zerocopy", 64, 60),
            row("ring-limit-desc", 64, 50),
        ];
        let l = limit_lines(&rows);
        assert!(
            l[0].contains("1.20x of ring-limit-desc (ABOVE ITS LIMIT"),
            "{l:?}"
        );
    }

    #[test]
    fn no_line_without_the_limit_row() {
        assert!(lines(&ratios(&[row("fastpath-copy", 64, 20)])).is_empty());
    }

    #[test]
    fn ratios_pair_rounds_and_skip_failed_ones() {
        let mut p = row("fastpath-zerocopy", 64, 1);
        let mut s = row("switch", 64, 1);
        p.mpps_per_round = vec![Some(30.0), Some(10.0), None, Some(33.0)];
        s.mpps_per_round = vec![Some(10.0), Some(10.0), Some(10.0), Some(11.0)];
        let r = ratios(&[s, p]);
        assert_eq!(r.len(), 1);
        let x = &r[0].ratio;
        // Rounds 0, 1 and 3: 3.0, 1.0, 3.0.
        assert_eq!((x.trials, x.median, x.min, x.max), (3, 3.0, 1.0, 3.0));
        assert!(x.noisy);
        assert_eq!(r[0].key(), "fastpath-zerocopy/switch@64");
        let l = lines(&r);
        assert_eq!(
            l,
            ["fast path / switch path at 64 B, median of 3 rounds: zero-copy 3.00x (1.00-3.00, noisy)"]
        );
        assert!(noisy_line(&[], &r)
            .unwrap()
            .contains("zero-copy/switch at 64 B"));
    }
}

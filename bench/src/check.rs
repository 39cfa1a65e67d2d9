//! `bench check`: a run against a saved baseline, figure by figure. A ratio (fast path / switch,
//! path / its limit) that fell by more than [`RATIO_DROP`], or instructions per packet that grew
//! by more than [`ICOUNT_GROWTH`], fail the check. Ratios are compared rather than Mpps because a
//! ratio of two scenarios of the same round cancels most of what the neighbours do; instruction
//! counts do not move with the neighbours at all, which is why CI checks those.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::report::RunDoc;

// Instruction counts: `icount PATH@SIZE` lines, compared with [`ICOUNT_GROWTH`].

/// A ratio may fall this much (relative) before the check fails.
pub const RATIO_DROP: f64 = 0.10;
/// Instructions per packet may grow this much (relative) before the check fails.
pub const ICOUNT_GROWTH: f64 = 0.05;

/// Which way a figure may not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Lower is worse (a ratio).
    Lower,
    /// Higher is worse (instructions per packet).
    Higher,
}

/// One figure of both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub figure: String,
    pub baseline: f64,
    /// `None`: the current run does not have it (not compared, not a failure).
    pub current: Option<f64>,
    pub worse: Worse,
    pub tolerance: f64,
}

impl Line {
    /// Relative change from the baseline.
    pub fn change(&self) -> Option<f64> {
        let c = self.current?;
        (self.baseline != 0.0).then(|| c / self.baseline - 1.0)
    }

    pub fn failed(&self) -> bool {
        match (self.change(), self.worse) {
            (Some(x), Worse::Lower) => x < -self.tolerance,
            (Some(x), Worse::Higher) => x > self.tolerance,
            (None, _) => false,
        }
    }
}

/// The lines of `baseline`'s figures (name, value) against `current`'s.
pub fn lines(
    baseline: &[(String, f64)],
    current: &[(String, f64)],
    worse: Worse,
    tolerance: f64,
) -> Vec<Line> {
    baseline
        .iter()
        .map(|(figure, b)| Line {
            figure: figure.clone(),
            baseline: *b,
            current: current.iter().find(|(f, _)| f == figure).map(|(_, c)| *c),
            worse,
            tolerance,
        })
        .collect()
}

/// The side-by-side table, and whether every compared figure held.
pub fn report(lines: &[Line]) -> (String, bool) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<46} {:>12} {:>12} {:>8}  verdict",
        "figure", "baseline", "current", "change"
    );
    let mut ok = true;
    for l in lines {
        let (cur, change) = match (l.current, l.change()) {
            (Some(c), Some(x)) => (format!("{c:.3}"), format!("{:+.1}%", x * 100.0)),
            (Some(c), None) => (format!("{c:.3}"), "-".into()),
            (None, _) => ("-".into(), "-".into()),
        };
        let verdict = if l.current.is_none() {
            "not in this run".to_owned()
        } else if l.failed() {
            ok = false;
            let dir = match l.worse {
                Worse::Lower => "fell",
                Worse::Higher => "grew",
            };
            format!("FAIL: {dir} more than {:.0}%", l.tolerance * 100.0)
        } else {
            "ok".to_owned()
        };
        let _ = writeln!(
            s,
            "{:<46} {:>12.3} {:>12} {:>8}  {verdict}",
            l.figure, l.baseline, cur, change
        );
    }
    (s, ok)
}

/// `bench check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The figures to hold: a document `bench run --json` (or `bench icount --json`) wrote.
    #[arg(long, value_name = "FILE.json")]
    pub baseline: PathBuf,
    /// The run to check, a document of the same kind: its ratios (medians over the rounds) and
    /// instruction counts are compared with the baseline's.
    #[arg(long, value_name = "FILE.json", conflicts_with = "icount")]
    pub current: Option<PathBuf>,
    /// Instead of --current: count the baseline's paths and sizes now (`bench icount`, under
    /// callgrind) and compare those. Deterministic, so CI runs it.
    #[arg(long)]
    pub icount: bool,
    /// With --icount: scratch directory for the counts.
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
}

/// The ratios of a document by key, medians over the rounds.
pub fn ratio_figures(doc: &RunDoc) -> Vec<(String, f64)> {
    doc.ratios
        .iter()
        .map(|r| (r.key(), r.ratio.median))
        .collect()
}

/// The instruction counts of a document by key (`icount PATH@SIZE`).
pub fn icount_figures(doc: &RunDoc) -> Vec<(String, f64)> {
    doc.icount
        .iter()
        .map(|f| (f.key(), f.instructions_per_packet))
        .collect()
}

/// Every line of `base` against `cur`: ratios (lower is worse), then instruction counts (higher
/// is worse); figures of `cur` the baseline lacks are listed as notes.
pub fn compare(base: &RunDoc, cur: &RunDoc) -> (Vec<Line>, Vec<String>) {
    let mut all = lines(
        &ratio_figures(base),
        &ratio_figures(cur),
        Worse::Lower,
        RATIO_DROP,
    );
    all.extend(lines(
        &icount_figures(base),
        &icount_figures(cur),
        Worse::Higher,
        ICOUNT_GROWTH,
    ));
    let known: Vec<(String, f64)> = ratio_figures(base)
        .into_iter()
        .chain(icount_figures(base))
        .collect();
    let extra = ratio_figures(cur)
        .into_iter()
        .chain(icount_figures(cur))
        .filter(|(f, _)| !known.iter().any(|(k, _)| k == f))
        .map(|(f, v)| format!("{f} = {v:.3}: not in the baseline (not compared)"))
        .collect();
    (all, extra)
}

/// Runs the check; exit code 1 when a figure moved past its tolerance.
pub fn main(a: CheckArgs) -> Result<ExitCode> {
    let base = RunDoc::read(&a.baseline)?;
    let cur = if a.icount {
        current_icount(&base, &a.work_dir)?
    } else {
        let Some(cur_path) = &a.current else {
            return Err(Error::BadArgument(
                "bench check needs --current FILE.json (the run to check against --baseline), \
                 or --icount to count instructions now"
                    .into(),
            ));
        };
        RunDoc::read(cur_path)?
    };
    let (mut all, extra) = compare(&base, &cur);
    if a.icount {
        // Only the counts were measured: the baseline's ratios are not this check's business.
        all.retain(|l| l.worse == Worse::Higher);
    }
    finish(&all, &extra, &base, &cur)
}

/// `bench icount` over the baseline's paths and sizes.
fn current_icount(base: &RunDoc, work_dir: &std::path::Path) -> Result<RunDoc> {
    if base.icount.is_empty() {
        return Err(Error::BadArgument(
            "--icount: the baseline has no instruction counts (write one with `bench icount \
             --json FILE.json`)"
                .into(),
        ));
    }
    let mut paths = Vec::new();
    let mut sizes = Vec::new();
    for f in &base.icount {
        let p = crate::icount::IcountPath::from_name(&f.path)?;
        if !paths.contains(&p) {
            paths.push(p);
        }
        if !sizes.contains(&f.size) {
            sizes.push(f.size);
        }
    }
    crate::icount::run(&paths, &sizes, work_dir)
}

fn finish(all: &[Line], extra: &[String], base: &RunDoc, cur: &RunDoc) -> Result<ExitCode> {
    if !all.iter().any(|l| l.current.is_some()) {
        return Err(Error::BadArgument(
            "the baseline and this run share no figure: nothing to check (run the same \
             scenarios and sizes, or --icount)"
                .into(),
        ));
    }
    println!("baseline {}", base.machine.line());
    println!("current  {}", cur.machine.line());
    if !base.icount.is_empty() || !cur.icount.is_empty() {
        println!(
            "instructions per packet counted by: baseline {}, current {}",
            methods(base),
            methods(cur)
        );
    }
    let (text, ok) = report(all);
    print!("{text}");
    for e in extra {
        println!("{e}");
    }
    if ok {
        println!("check passed: no ratio fell more than {:.0}%, no instruction count grew more than {:.0}%", RATIO_DROP * 100.0, ICOUNT_GROWTH * 100.0);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("check FAILED");
        Ok(ExitCode::FAILURE)
    }
}

/// The counting methods of a document's figures (`callgrind`), or `-`.
fn methods(doc: &RunDoc) -> String {
    let mut m: Vec<&str> = doc.icount.iter().map(|f| f.method.as_str()).collect();
    m.dedup();
    if m.is_empty() {
        "-".into()
    } else {
        m.join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icount::IcountFigure;
    use crate::machine::Machine;

    fn icount_doc(figures: &[(&str, u32, f64)]) -> RunDoc {
        let mut d = RunDoc::new(Machine::probe(), 0, Vec::new());
        d.icount = figures
            .iter()
            .map(|&(path, size, ipp)| IcountFigure {
                path: path.into(),
                size,
                instructions_per_packet: ipp,
                method: "callgrind".into(),
                packets: 40_000,
                instructions: [0, 0],
            })
            .collect();
        d
    }

    #[test]
    fn an_icount_baseline_fails_at_six_percent_growth_and_passes_at_four() {
        let base = icount_doc(&[("switch", 64, 800.0), ("ring-limit", 1518, 250.0)]);
        let grew = icount_doc(&[("switch", 64, 848.0), ("ring-limit", 1518, 250.0)]);
        let (l, extra) = compare(&base, &grew);
        assert!(extra.is_empty());
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].figure, "icount switch@64");
        assert!(l[0].failed() && !l[1].failed());
        let (text, ok) = report(&l);
        assert!(!ok && text.contains("FAIL: grew more than 5%"), "{text}");
        let held = icount_doc(&[("switch", 64, 832.0), ("fastpath-copy", 64, 340.0)]);
        let (l, extra) = compare(&base, &held);
        let (text, ok) = report(&l);
        assert!(ok, "{text}");
        assert!(text.contains("not in this run"), "{text}");
        assert_eq!(
            extra,
            ["icount fastpath-copy@64 = 340.000: not in the baseline (not compared)"]
        );
        assert_eq!(methods(&held), "callgrind");
    }

    fn figs(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(n, x)| ((*n).to_owned(), *x)).collect()
    }

    #[test]
    fn a_ratio_that_fell_more_than_ten_percent_fails() {
        let l = lines(
            &figs(&[("zc/switch@64", 3.0), ("copy/switch@64", 2.0)]),
            &figs(&[("zc/switch@64", 2.6), ("copy/switch@64", 1.85)]),
            Worse::Lower,
            RATIO_DROP,
        );
        assert!(l[0].failed(), "-13 %");
        assert!(!l[1].failed(), "-7.5 %");
        let (text, ok) = report(&l);
        assert!(!ok);
        assert!(text.contains("FAIL: fell more than 10%"), "{text}");
        assert!(text.contains("-13.3%"), "{text}");
    }

    #[test]
    fn instructions_that_grew_more_than_five_percent_fail() {
        let l = lines(
            &figs(&[("switch@64", 100.0), ("ring-limit@64", 20.0)]),
            &figs(&[("switch@64", 106.0), ("ring-limit@64", 10.0)]),
            Worse::Higher,
            ICOUNT_GROWTH,
        );
        assert!(l[0].failed());
        assert!(!l[1].failed(), "fewer instructions is better");
    }

    #[test]
    fn a_figure_missing_from_the_run_is_listed_not_failed() {
        let l = lines(&figs(&[("x", 1.0)]), &[], Worse::Lower, RATIO_DROP);
        let (text, ok) = report(&l);
        assert!(ok);
        assert!(text.contains("not in this run"), "{text}");
    }
}

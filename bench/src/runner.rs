//! Running scenarios: the (scenario x frame size) matrix behind `bench run` and `bench demo`,
//! in interleaved rounds, and the RFC 2544 searches behind `bench rfc2544`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linerate::RateFigures;
use crate::progress::Progress;
use crate::report::{self, Row};
use crate::rfc2544::{self, Search, TrialResult};
use crate::rounds;
use crate::scenario::{Entry, Env, Scenario, Trial};

/// The trial parameters a matrix shares.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub duration: Duration,
    pub warmup: Duration,
    pub rate_pps: Option<f64>,
    /// Rounds: every (scenario, size) runs once per round.
    pub trials: usize,
}

/// What a matrix produced.
pub struct Outcome {
    /// One per (scenario, size) with at least one good trial: the median trial, with the
    /// statistics of every round.
    pub rows: Vec<Row>,
    /// Lines for the operator: scenarios that could not run, and why.
    pub notes: Vec<String>,
    /// Trials that failed, and scenarios that were unavailable.
    pub failures: usize,
}

/// Runs every entry at every size, `plan.trials` times, round-robin (A B C A B C ...): a slow
/// phase of the machine then lowers one round of every scenario rather than every trial of one,
/// and the per-round ratios pair trials taken under the same neighbours. Each round sets every
/// scenario up again and tears it down before the next, so at most two busy threads exist at
/// any time; a scenario unavailable in the first round is not tried again.
pub fn run_matrix(entries: &[&Entry], sizes: &[u32], plan: &Plan, env: &Env) -> Outcome {
    let trials = plan.trials.max(1);
    let mut progress = Progress::new(entries.len() * sizes.len() * trials);
    let mut notes = Vec::new();
    let mut failures = 0;
    // rounds[entry][size][round]
    let mut rounds: Vec<Vec<Vec<Option<Row>>>> = vec![vec![Vec::new(); sizes.len()]; entries.len()];
    let mut unavailable = vec![false; entries.len()];
    for round in 0..trials {
        for (ei, e) in entries.iter().enumerate() {
            if unavailable[ei] {
                continue;
            }
            let suffix = if trials > 1 {
                format!(" (round {}/{trials})", round + 1)
            } else {
                String::new()
            };
            let mut scenario: Box<dyn Scenario> = match e.open(env) {
                Ok(s) => s,
                Err(err) => {
                    unavailable[ei] = matches!(err, Error::Unavailable { .. });
                    let note = format!("{}: {err}{suffix}", e.name);
                    progress.note(&note);
                    notes.push(note);
                    failures += 1;
                    for r in &mut rounds[ei] {
                        r.push(None);
                    }
                    continue;
                }
            };
            for (si, &size) in sizes.iter().enumerate() {
                let trial = Trial {
                    frame_size: size,
                    duration: plan.duration,
                    warmup: plan.warmup,
                    rate_pps: plan.rate_pps,
                };
                let step = progress.start(
                    &format!("{} {size} B{suffix}", e.name),
                    (plan.duration + plan.warmup).as_secs_f64(),
                );
                let row = match scenario.run(&trial) {
                    Ok(m) => {
                        let row = Row::new(e.name, size, plan.rate_pps, &m);
                        step.finish(&format!(
                            "{:.3} Mpps, {:.1}% of 10GbE, loss {}",
                            row.mpps,
                            row.line_rate_10g_pct,
                            report::loss_text(row.loss_ratio)
                        ));
                        Some(row)
                    }
                    Err(err) => {
                        step.finish(&format!("FAILED: {err}"));
                        notes.push(format!("{} {size} B: {err}{suffix}", e.name));
                        failures += 1;
                        None
                    }
                };
                rounds[ei][si].push(row);
            }
        }
    }
    let mut rows = Vec::new();
    for (ei, e) in entries.iter().enumerate() {
        for (si, &size) in sizes.iter().enumerate() {
            rows.extend(rounds::row(e.name, size, plan.rate_pps, &rounds[ei][si]));
        }
    }
    Outcome {
        rows,
        notes,
        failures,
    }
}

/// Options of one RFC 2544 run.
#[derive(Debug, Clone, Copy)]
pub struct Rfc2544Plan {
    pub frame_size: u32,
    pub trial: Duration,
    pub warmup: Duration,
    /// Loss ratio for the second search (the first is zero loss).
    pub loss_tolerance: f64,
    /// Resolution as a fraction of the maximum rate.
    pub resolution: f64,
    pub max_trials: usize,
}

/// What `bench rfc2544 --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rfc2544Doc {
    pub scenario: String,
    pub frame_size: u32,
    /// The unlimited-rate trial that bounds the search.
    pub max_offered_mpps: f64,
    pub zero_loss: SearchDoc,
    pub at_tolerance: SearchDoc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchDoc {
    pub loss_tolerance: f64,
    pub throughput_mpps: f64,
    pub line_rate_10g_pct: f64,
    pub line_rate_40g_pct: f64,
    pub trials: Vec<TrialResult>,
}

fn search_doc(o: &rfc2544::Outcome, size: u32) -> SearchDoc {
    let f = RateFigures::new(o.throughput_pps, size);
    SearchDoc {
        loss_tolerance: o.loss_tolerance,
        throughput_mpps: f.mpps,
        line_rate_10g_pct: f.line_rate_10g_pct,
        line_rate_40g_pct: f.line_rate_40g_pct,
        trials: o.trials.clone(),
    }
}

/// RFC 2544 throughput of one scenario at one size: an unlimited trial bounds the rate, then a
/// zero-loss search and a search at the tolerance (which starts from the zero-loss answer).
pub fn rfc2544(entry: &Entry, p: &Rfc2544Plan, env: &Env) -> Result<Rfc2544Doc> {
    let mut scenario = entry.open(env)?;
    let mut progress = Progress::new(0);
    let expect = (p.trial + p.warmup).as_secs_f64();
    let mut run_trial = |rate: Option<f64>, progress: &mut Progress| -> Result<TrialResult> {
        let what = match rate {
            Some(r) => format!("{} {} B at {:.3} Mpps", entry.name, p.frame_size, r / 1e6),
            None => format!("{} {} B unlimited", entry.name, p.frame_size),
        };
        let step = progress.start(&what, expect);
        let m = scenario.run(&Trial {
            frame_size: p.frame_size,
            duration: p.trial,
            warmup: p.warmup,
            rate_pps: rate,
        })?;
        let t = TrialResult {
            target_pps: rate.unwrap_or(0.0),
            sent: m.sent,
            received: m.received,
            seconds: m.seconds,
        };
        step.finish(&format!(
            "offered {:.3} Mpps, received {:.3} Mpps, loss {}",
            t.offered_pps() / 1e6,
            t.received_pps() / 1e6,
            report::loss_text(t.loss_ratio())
        ));
        Ok(t)
    };
    let max = run_trial(None, &mut progress)?.offered_pps();
    if max <= 0.0 {
        return Err(Error::measurement(
            entry.name,
            "the unlimited trial sent nothing: no rate to search",
        ));
    }
    let mut search = Search {
        max_pps: max,
        min_pps: 0.0,
        resolution_pps: max * p.resolution,
        loss_tolerance: 0.0,
        max_trials: p.max_trials,
    };
    let zero = rfc2544::search(&search, |r| run_trial(Some(r), &mut progress))?;
    search.loss_tolerance = p.loss_tolerance;
    search.min_pps = zero.throughput_pps;
    let tol = rfc2544::search(&search, |r| run_trial(Some(r), &mut progress))?;
    Ok(Rfc2544Doc {
        scenario: entry.name.to_owned(),
        frame_size: p.frame_size,
        max_offered_mpps: max / 1e6,
        zero_loss: search_doc(&zero, p.frame_size),
        at_tolerance: search_doc(&tol, p.frame_size),
    })
}

/// The RFC 2544 summary printed at the end.
pub fn rfc2544_table(d: &Rfc2544Doc) -> String {
    let line = |name: &str, s: &SearchDoc| {
        format!(
            "{name:<22} {:>9.3} Mpps  {:>6.1}% of 10GbE  {:>6.1}% of 40GbE  ({} trials)\n",
            s.throughput_mpps,
            s.line_rate_10g_pct,
            s.line_rate_40g_pct,
            s.trials.len()
        )
    };
    let mut out = format!(
        "RFC 2544 throughput, {} at {} B (unlimited trial offered {:.3} Mpps)\n",
        d.scenario, d.frame_size, d.max_offered_mpps
    );
    out += &line("zero loss", &d.zero_loss);
    out += &line(
        &format!(
            "loss <= {}",
            report::loss_text(d.at_tolerance.loss_tolerance)
        ),
        &d.at_tolerance,
    );
    out
}

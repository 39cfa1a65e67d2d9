//! `bench compare`: the same-generator loop against DPDK testpmd (two `net_vhost` ports, io
//! forwarding), Open vSwitch with DPDK (two `dpdkvhostuser` ports, port-to-port flows) and the
//! vswitch, in one run, with the ratios.
//!
//! The loop itself is `bench/loop_bench.sh`, run as is and read through the `LOOP_BENCH_JSON`
//! line it prints last. It is not re-implemented here on purpose: bringing up OVS-DPDK
//! (ovsdb, ovs-vswitchd, hugepages, hugetlbfs, DPDK file prefixes) and driving testpmd's prompt
//! is shell work the script already does and the test suite already exercises; a second copy in
//! Rust would drift from the one the README's numbers come from. What this module adds is the
//! part the script cannot do well: finding which peers exist before anything starts, reporting
//! the missing ones (never a made-up figure for them), and the line-rate view of the results.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linerate::RateFigures;
use crate::stats::{self, Summary};

/// The loop's frames (testpmd `--txpkts=64`).
pub const LOOP_FRAME_SIZE: u32 = 64;
/// The Debian package's OVS-DPDK daemon.
const OVS_VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// Prefix of the script's machine-readable line.
const JSON_PREFIX: &str = "LOOP_BENCH_JSON ";

/// The backends, in the order the script runs them.
pub const BACKENDS: [&str; 3] = ["testpmd", "ovs", "vswitch"];

/// Options of `bench compare`.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration_s: u32,
    pub warmup_s: u32,
    pub runs: u32,
    pub work_dir: PathBuf,
    pub json: Option<PathBuf>,
    pub script: PathBuf,
    /// Run the pollers at nice -20 (the script's default).
    pub nice: bool,
    /// Packed virtqueues on the generator's virtio-user ports (`packed_vq=1`), so every
    /// backend serves packed rings (the script's `-P`).
    pub packed: bool,
}

/// One measured run, as the script reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopRun {
    pub backend: String,
    pub run: u32,
    pub mpps: f64,
    pub rx_packets: u64,
    pub seconds: f64,
    pub cycles_per_packet: Option<f64>,
    #[serde(default)]
    pub mpps_1s_median: Option<f64>,
    #[serde(default)]
    pub mpps_1s_min: Option<f64>,
    #[serde(default)]
    pub loadavg_1m: Option<f64>,
}

/// Per-backend summary, as the script reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSummary {
    pub runs: u32,
    pub mpps_median: f64,
    pub mpps_min: f64,
    pub mpps_max: f64,
    pub cycles_per_packet_median: Option<f64>,
}

/// The script's whole result document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopDoc {
    pub benchmark: String,
    pub frame_bytes: u32,
    pub runs: Vec<LoopRun>,
    pub summary: BTreeMap<String, LoopSummary>,
    pub ratios: BTreeMap<String, f64>,
    /// The ring layout of the generator's ports: "split" or "packed" (scripts before `-P` said
    /// nothing: split).
    #[serde(default)]
    pub ring: Option<String>,
}

/// What `bench compare --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareDoc {
    pub frame_size: u32,
    /// The virtqueue layout every backend served: "split" or "packed".
    #[serde(default)]
    pub ring: String,
    /// Backend -> why it was not measured (not installed, not built).
    pub missing: BTreeMap<String, String>,
    /// Backends that were started but produced no measurement.
    pub failed: Vec<String>,
    /// Backend -> median Mpps and its line-rate shares.
    pub results: BTreeMap<String, CompareRow>,
    /// `vswitch/testpmd`, `vswitch/ovs`: the median of the per-round ratios (run r of the
    /// vswitch against run r of the peer; the script runs the backends round-robin).
    pub ratios: BTreeMap<String, f64>,
    /// The same ratios with their range over the rounds.
    #[serde(default)]
    pub ratio_stats: BTreeMap<String, Summary>,
    /// The script's own document.
    #[serde(rename = "loop")]
    pub loop_doc: Option<LoopDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    /// Median over the runs.
    pub mpps: f64,
    /// Mpps over the runs: median, min, max, spread, noisy (> 15 %).
    #[serde(default)]
    pub stats: Option<Summary>,
    pub line_rate_10g_pct: f64,
    pub line_rate_40g_pct: f64,
    pub cycles_per_packet: Option<f64>,
    pub runs: u32,
}

/// Finds the `LOOP_BENCH_JSON` line in the script's output and parses it.
pub fn parse_loop_output(stdout: &str) -> Result<LoopDoc> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(JSON_PREFIX))
        .ok_or_else(|| {
            Error::Compare(
                "loop_bench.sh printed no LOOP_BENCH_JSON line (see its log above)".into(),
            )
        })?;
    serde_json::from_str(line)
        .map_err(|e| Error::Compare(format!("loop_bench.sh's LOOP_BENCH_JSON line: {e}")))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The vswitch and vswitchctl binaries: `$VSWITCH`/`$VSWITCHCTL`, else beside this executable
/// (cargo puts every binary of the workspace in one directory).
fn vswitch_binaries() -> std::result::Result<(PathBuf, PathBuf), String> {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_default();
    let pick = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join(name))
    };
    let (sw, ctl) = (pick("VSWITCH", "vswitch"), pick("VSWITCHCTL", "vswitchctl"));
    for p in [&sw, &ctl] {
        if !is_executable(p) {
            return Err(format!(
                "{} is not built: run `cargo build --release` (or set VSWITCH and VSWITCHCTL)",
                p.display()
            ));
        }
    }
    Ok((sw, ctl))
}

/// What [`find_peers`] found.
pub struct Peers {
    /// Backends that can run.
    pub available: Vec<&'static str>,
    /// Backend -> why it cannot.
    pub missing: BTreeMap<String, String>,
    /// The vswitch and vswitchctl binaries, when built.
    pub vswitch: Option<(PathBuf, PathBuf)>,
}

/// Which backends can run here, and why the others cannot.
pub fn find_peers() -> Peers {
    let mut ok = Vec::new();
    let mut missing = BTreeMap::new();
    let testpmd = which("dpdk-testpmd").is_some();
    if testpmd {
        ok.push("testpmd");
    } else {
        missing.insert(
            "testpmd".into(),
            "dpdk-testpmd not found on PATH (apt-get install dpdk)".into(),
        );
    }
    let ovs_tools = [
        "ovsdb-tool",
        "ovsdb-server",
        "ovs-vsctl",
        "ovs-appctl",
        "ovs-ofctl",
    ];
    match ovs_tools.iter().find(|t| which(t).is_none()) {
        Some(t) => {
            missing.insert(
                "ovs".into(),
                format!("{t} not found on PATH (apt-get install openvswitch-switch-dpdk)"),
            );
        }
        None if !is_executable(Path::new(OVS_VSWITCHD_DPDK)) => {
            missing.insert(
                "ovs".into(),
                format!("{OVS_VSWITCHD_DPDK} not found (apt-get install openvswitch-switch-dpdk)"),
            );
        }
        None => ok.push("ovs"),
    }
    let bins = match vswitch_binaries() {
        Ok(b) => {
            ok.push("vswitch");
            Some(b)
        }
        Err(why) => {
            missing.insert("vswitch".into(), why);
            None
        }
    };
    Peers {
        available: ok,
        missing,
        vswitch: bins,
    }
}

/// Builds the result document from the script's output and what was missing.
pub fn summarize(
    doc: Option<LoopDoc>,
    asked: &[&str],
    missing: BTreeMap<String, String>,
) -> CompareDoc {
    let mut results = BTreeMap::new();
    let mut failed = Vec::new();
    for b in asked {
        match doc.as_ref().and_then(|d| d.summary.get(*b)) {
            Some(s) => {
                let f = RateFigures::new(s.mpps_median * 1e6, LOOP_FRAME_SIZE);
                results.insert(
                    (*b).to_owned(),
                    CompareRow {
                        mpps: s.mpps_median,
                        stats: None,
                        line_rate_10g_pct: f.line_rate_10g_pct,
                        line_rate_40g_pct: f.line_rate_40g_pct,
                        cycles_per_packet: s.cycles_per_packet_median,
                        runs: s.runs,
                    },
                );
            }
            None => failed.push((*b).to_owned()),
        }
    }
    let per_run = |b: &str| -> BTreeMap<u32, f64> {
        doc.iter()
            .flat_map(|d| &d.runs)
            .filter(|r| r.backend == b)
            .map(|r| (r.run, r.mpps))
            .collect()
    };
    for (b, row) in results.iter_mut() {
        let v: Vec<f64> = per_run(b).into_values().collect();
        row.stats = stats::summarize(&v);
    }
    let mut ratios = BTreeMap::new();
    let mut ratio_stats = BTreeMap::new();
    if results.contains_key("vswitch") {
        let v = per_run("vswitch");
        for other in ["testpmd", "ovs"] {
            if !results.contains_key(other) {
                continue;
            }
            let o = per_run(other);
            let paired: Vec<f64> = v
                .iter()
                .filter_map(|(run, x)| o.get(run).filter(|y| **y > 0.0).map(|y| x / y))
                .collect();
            if let Some(s) = stats::summarize(&paired) {
                ratios.insert(format!("vswitch/{other}"), s.median);
                ratio_stats.insert(format!("vswitch/{other}"), s);
            }
        }
    }
    CompareDoc {
        ring: doc
            .as_ref()
            .and_then(|d| d.ring.clone())
            .unwrap_or_else(|| "split".to_owned()),
        frame_size: LOOP_FRAME_SIZE,
        missing,
        failed,
        results,
        ratios,
        ratio_stats,
        loop_doc: doc,
    }
}

/// The table printed at the end.
pub fn table(d: &CompareDoc) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "same-generator loop, {} B frames, {} rings (aggregate through the backend)",
        d.frame_size, d.ring
    );
    let _ = writeln!(
        s,
        "{:<9} {:>8} {:>8} {:>8} {:>10} {:>6} {:>6} {:>9} {:>5}",
        "backend", "Mpps", "min", "max", "spread", "%10G", "%40G", "cyc/pkt", "runs"
    );
    for b in BACKENDS {
        if let Some(r) = d.results.get(b) {
            let c = r
                .cycles_per_packet
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
            let st = r.stats.unwrap_or(Summary {
                median: r.mpps,
                min: r.mpps,
                max: r.mpps,
                spread: None,
                noisy: false,
                trials: 1,
            });
            let spread = match st.spread {
                Some(x) if st.trials > 1 => {
                    format!("{:.0}%{}", x * 100.0, if st.noisy { " noisy" } else { "" })
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<9} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>6.1} {:>6.1} {:>9} {:>5}",
                b,
                r.mpps,
                st.min,
                st.max,
                spread,
                r.line_rate_10g_pct,
                r.line_rate_40g_pct,
                c,
                r.runs
            );
        } else if let Some(why) = d.missing.get(b) {
            let _ = writeln!(s, "{b:<9} not measured: missing: {why}");
        } else if d.failed.iter().any(|f| f == b) {
            let _ = writeln!(s, "{b:<9} not measured: the run failed (see the log above)");
        }
    }
    for (k, v) in &d.ratios {
        match d.ratio_stats.get(k) {
            Some(st) if st.trials > 1 => {
                let _ = writeln!(
                    s,
                    "ratio {k}: {}, median of {} paired rounds",
                    crate::ratios::ratio_text(st),
                    st.trials
                );
            }
            _ => {
                let _ = writeln!(s, "ratio {k}: {v:.3}");
            }
        }
    }
    if d.ratios.is_empty() {
        let _ = writeln!(
            s,
            "no ratio: the vswitch and at least one peer must both be measured"
        );
    }
    s
}

/// Runs the comparison.
pub fn run(o: &Options) -> Result<CompareDoc> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Compare(
            "run as root: the loop reserves hugepages, mounts hugetlbfs and starts OVS".into(),
        ));
    }
    if !o.script.is_file() {
        return Err(Error::Compare(format!(
            "{} not found (point --script at bench/loop_bench.sh of this repository)",
            o.script.display()
        )));
    }
    let Peers {
        available: ok,
        missing,
        vswitch: bins,
    } = find_peers();
    for (b, why) in &missing {
        eprintln!("[bench] compare: {b} is missing and will not be measured: {why}");
    }
    if !ok.contains(&"testpmd") {
        return Err(Error::Compare(
            "dpdk-testpmd is missing, and it is the generator of every loop: nothing can be \
             measured (apt-get install dpdk)"
                .into(),
        ));
    }
    let mut cmd = Command::new("bash");
    cmd.arg(&o.script)
        .arg("-d")
        .arg(o.duration_s.to_string())
        .arg("-u")
        .arg(o.warmup_s.to_string())
        .arg("-r")
        .arg(o.runs.to_string())
        .arg("-w")
        .arg(&o.work_dir);
    if !o.nice {
        cmd.arg("-N");
    }
    if o.packed {
        cmd.arg("-P");
    }
    cmd.args(&ok);
    if let Some((sw, ctl)) = &bins {
        cmd.env("VSWITCH", sw).env("VSWITCHCTL", ctl);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!(
        "[bench] compare: bash {} -d {} -u {} -r {} -w {}{} {}",
        o.script.display(),
        o.duration_s,
        o.warmup_s,
        o.runs,
        o.work_dir.display(),
        if o.packed { " -P" } else { "" },
        ok.join(" ")
    );
    let mut child = cmd
        .spawn()
        .map_err(Error::io(format!("starting bash {}", o.script.display())))?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(Error::io("reading loop_bench.sh's output"))?;
            if !line.starts_with(JSON_PREFIX) {
                eprintln!("{line}");
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(Error::io("waiting for loop_bench.sh"))?;
    let doc = match parse_loop_output(&out) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("[bench] compare: {e}");
            None
        }
    };
    if !status.success() {
        eprintln!("[bench] compare: loop_bench.sh exited with {status}");
    }
    Ok(summarize(doc, &ok, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"
backend   run     Mpps  1s-med  1s-min  cycles/pkt  loadavg
testpmd     1    18.50   18.51   18.40           -     2.00
vswitch     1    12.00   12.01   11.90        80.5     2.10
LOOP_BENCH_JSON {"benchmark":"loop","frame_bytes":64,"duration_s":10.0,"warmup_s":3.0,"tx_first_bursts":64,"runs":[{"backend":"testpmd","run":1,"mpps":18.5,"rx_packets":185000000,"seconds":10.0,"cycles_per_packet":null,"mpps_1s_median":18.51,"mpps_1s_min":18.4,"loadavg_1m":2.0},{"backend":"vswitch","run":1,"mpps":12.0,"rx_packets":120000000,"seconds":10.0,"cycles_per_packet":80.5,"mpps_1s_median":12.01,"mpps_1s_min":11.9,"loadavg_1m":2.1}],"summary":{"testpmd":{"runs":1,"mpps_median":18.5,"mpps_min":18.5,"mpps_max":18.5,"cycles_per_packet_median":null},"vswitch":{"runs":1,"mpps_median":12.0,"mpps_min":12.0,"mpps_max":12.0,"cycles_per_packet_median":80.5}},"ratios":{"vswitch/testpmd":0.649}}
"#;

    #[test]
    fn the_scripts_json_line_is_parsed() {
        let d = parse_loop_output(OUTPUT).unwrap();
        assert_eq!(d.frame_bytes, 64);
        assert_eq!(d.runs.len(), 2);
        assert_eq!(d.summary["vswitch"].cycles_per_packet_median, Some(80.5));
        assert_eq!(d.ratios["vswitch/testpmd"], 0.649);
    }

    #[test]
    fn test_output_without_json_line() {
        let e = parse_loop_output("no results\n").unwrap_err().to_string();
        assert!(e.contains("LOOP_BENCH_JSON"), "{e}");
    }

    #[test]
    fn missing_peers_are_reported_not_measured() {
        let d = parse_loop_output(OUTPUT).unwrap();
        let mut missing = BTreeMap::new();
        missing.insert("ovs".to_owned(), "ovs-vsctl not found".to_owned());
        let c = summarize(Some(d), &["testpmd", "vswitch"], missing);
        assert!(!c.results.contains_key("ovs"));
        assert!((c.ratios["vswitch/testpmd"] - 12.0 / 18.5).abs() < 1e-9);
        assert!(!c.ratios.contains_key("vswitch/ovs"));
        // 18.5 Mpps of 64 B frames is 124.3% of 10GbE line rate.
        assert!((c.results["testpmd"].line_rate_10g_pct - 124.32).abs() < 0.01);
        let t = table(&c);
        assert!(
            t.contains("ovs       not measured: missing: ovs-vsctl not found"),
            "{t}"
        );
        assert!(t.contains("ratio vswitch/testpmd: 0.649"), "{t}");
    }

    fn loop_run(backend: &str, run: u32, mpps: f64) -> LoopRun {
        LoopRun {
            backend: backend.into(),
            run,
            mpps,
            rx_packets: 1,
            seconds: 1.0,
            cycles_per_packet: None,
            mpps_1s_median: None,
            mpps_1s_min: None,
            loadavg_1m: None,
        }
    }

    #[test]
    fn ratios_are_medians_of_paired_rounds() {
        let mut d = parse_loop_output(OUTPUT).unwrap();
        // Rounds: vswitch/testpmd 12/18.5, 20/10 = 2.0, 6/10 = 0.6: median 0.649, where the
        // ratio of the medians (12 / 10) would be 1.2.
        d.runs.extend([
            loop_run("testpmd", 2, 10.0),
            loop_run("vswitch", 2, 20.0),
            loop_run("testpmd", 3, 10.0),
            loop_run("vswitch", 3, 6.0),
        ]);
        let c = summarize(Some(d), &["testpmd", "vswitch"], BTreeMap::new());
        assert!((c.ratios["vswitch/testpmd"] - 12.0 / 18.5).abs() < 1e-9);
        let st = c.ratio_stats["vswitch/testpmd"];
        assert_eq!((st.trials, st.min, st.max), (3, 0.6, 2.0));
        assert!(st.noisy);
        let v = c.results["vswitch"].stats.unwrap();
        assert_eq!((v.min, v.max, v.trials), (6.0, 20.0, 3));
        assert!(
            table(&c).contains("median of 3 paired rounds"),
            "{}",
            table(&c)
        );
    }

    #[test]
    fn test_backend_that_produced_nothing_is_a_failure() {
        let c = summarize(None, &["testpmd", "vswitch"], BTreeMap::new());
        assert_eq!(c.failed, vec!["testpmd".to_owned(), "vswitch".to_owned()]);
        assert!(c.ratios.is_empty());
        assert!(table(&c).contains("the run failed"));
    }
}

//! The `bench` command line: `demo`, `run`, `rfc2544`, `compare`, `check`, `icount`, `list`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::compare;
use crate::error::{Error, Result};
use crate::linerate::{self, line_rate_pps, LINK_10G_BPS, LINK_40G_BPS};
use crate::machine::{self, Machine};
use crate::pin::Cores;
use crate::plot;
use crate::report::{self, RunDoc};
use crate::runner::{self, Plan, Rfc2544Plan};
use crate::scenario::{self, Env, REGISTRY};

const ABOUT: &str = "Line-rate benchmark of the NFV dataplane: the switch, the shared-memory \
limit and the per-packet transition baselines, against 10GbE and 40GbE line rate.";

const AFTER_HELP: &str = "\
Line rate for a frame of S bytes is link_bps / ((S + 20) * 8): at 64 B, 14.88 Mpps on 10GbE and
59.52 Mpps on 40GbE. Gbit/s counts frame bits; the %10G/%40G columns count the 20 bytes of
preamble and gap a NIC would spend too.

The machine has two cores: every scenario uses at most two busy threads, pinned with --cores
(generator, peer). Machines are shared and noisy: compare figures from one run. On a busy
machine `nice -n -20 bench ...` keeps other work from preempting the pollers.

EXAMPLES:
  bench demo                                   every scenario briefly at 64 B, a table (< 1 min)
  bench run --scenario ring-limit --size 64
  bench run --scenario all --size 64,128,256,512,1024,1518 --duration 2 \\
            --json results.json --plot results.svg
  bench run --scenario switch --size 64 --rate 2.5   latency at 2.5 Mpps offered
  bench rfc2544 --scenario switch --size 64 --loss-tolerance 0.1
  sudo bench compare --duration 10             testpmd vs OVS-DPDK vs vswitch, same generator
  bench list                                   the scenarios and their status";

#[derive(Debug, Parser)]
#[command(name = "bench", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Every scenario briefly at 64 B: starts a vswitch and built-in guests in this process,
    /// prints the table. Needs nothing but the build.
    #[command(after_help = "EXAMPLE:\n  bench demo\n  bench demo --duration 1 --json demo.json")]
    Demo(DemoArgs),
    /// Scenarios x frame sizes: Mpps, Gbit/s, line-rate %, cycles/packet, loss, latency.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// RFC 2544 throughput: binary search for the highest rate with zero loss, and with loss
    /// within a tolerance.
    #[command(after_help = RFC2544_HELP)]
    Rfc2544(Rfc2544Args),
    /// The same-generator loop against dpdk-testpmd, OVS-DPDK and the vswitch in one run
    /// (bench/loop_bench.sh), with ratios. Needs root; missing peers are reported.
    #[command(after_help = COMPARE_HELP)]
    Compare(CompareArgs),
    /// Compares a run with a saved baseline: fails (exit 1) when a ratio fell by more than
    /// 10 % or instructions per packet grew by more than 5 %, printing each figure side by side.
    #[command(after_help = CHECK_HELP)]
    Check(crate::check::CheckArgs),
    /// Instructions per packet of each path (switch, fast path copy and zero-copy, ring limits)
    /// at each frame size, counted under callgrind: a figure the neighbours do not move.
    #[command(after_help = ICOUNT_HELP)]
    Icount(crate::icount::IcountArgs),
    /// Lists the scenarios.
    List,
    /// Wake-up latency of each notification strategy the fast path can use (spin, futex,
    /// eventfd, adaptive; umwait where the CPU has WAITPKG): sender and receiver on the two
    /// cores, p50/p99/p99.9.
    #[command(after_help = "EXAMPLE:\n  bench wakeup --samples 20000 --json wakeup.json")]
    Wakeup(WakeupArgs),
    /// One fast-path guest of the fastpath-* scenarios, driven by them over stdin/stdout.
    #[command(hide = true)]
    FastpathPeer(crate::peer::PeerArgs),
    /// Exactly N packets through one path on one thread, for `bench icount` under callgrind.
    #[command(hide = true)]
    IcountWorker(crate::icount::WorkerArgs),
}

const ICOUNT_HELP: &str = "\
Each (path, size) runs `bench icount-worker` under valgrind's callgrind twice, with 20000 and
60000 packets, counting only the path's pump function; the difference of the counts over the
40000 extra packets is the figure. Deterministic: the same build gives the same figures on any
machine with the same CPU features. Needs valgrind (apt-get install valgrind).

EXAMPLES:
  bench icount                                    every path at 64 and 1518 B
  bench icount --path switch,ring-limit --size 64
  bench icount --json docs/raw/icount.json        regenerate the committed baseline";

const CHECK_HELP: &str = "\
EXAMPLES:
  bench run --scenario all --json base.json          once, on a good build
  bench run --scenario all --json new.json           after a change, same machine kind
  bench check --baseline base.json --current new.json
  bench check --icount --baseline docs/raw/icount.json   counts the baseline's paths and sizes
                                                         now (callgrind) and compares (CI)";

const RUN_HELP: &str = "\
SCENARIOS: switch, fastpath-copy, fastpath-zerocopy, ring-limit, ring-limit-desc, syscall,
kvm-exit, mprotect-view, or all (`bench list` says what each one measures).

JSON (--json): a document (schema 2) {schema, machine, trials, rows, ratios, noisy}. machine
is what the table header prints (CPU, flags, TSC, cores, kernel, hugepages, view backend,
notification, steal and load during the run). rows has one object per (scenario, size), with
scenario, frame_size, mpps, gbps, line_rate_10g_pct, line_rate_40g_pct, cycles_per_packet,
loss_ratio, latency_ns {p50, p99, p999} (null when nothing arrived), cycles_of, packets_sent,
packets_received, duration_s, rate_limit_mpps, latency_samples, errors, detail: the median
trial's, with mpps_per_round, stats {median, min, max, spread, noisy, trials} per figure and
noisy. cycles_per_packet counts TSC cycles of the part named by cycles_of: pmd-busy (the
switch's poll thread, iterations that moved packets), consumer (the ring's consumer core, busy
all the window) or loop (the baseline's one thread). ratios are medians of per-round ratios.

EXAMPLES:
  bench run --scenario ring-limit --size 64
  bench run --scenario switch,syscall --size 64,1518 --duration 5 --json r.json
  bench run --scenario all --size 64,128,256,512,1024,1518 --plot r.svg   (writes r.svg and r.png)

EXIT STATUS: 0 when every scenario ran; 1 when one could not (the notes under the table say
why: e.g. no /dev/kvm); 2 on a usage error.";

const RFC2544_HELP: &str = "\
An unlimited trial bounds the search; each step then runs a rate-limited trial (TSC pacing).
A trial passes when its loss is within the tolerance AND the generator really offered the rate
(a virtio queue pushes back rather than drops, so an unoffered rate proves nothing).

EXAMPLES:
  bench rfc2544 --scenario switch --size 64
  bench rfc2544 --scenario switch --size 1518 --duration 5 --loss-tolerance 0.01 --json t.json";

const COMPARE_HELP: &str = "\
Runs bench/loop_bench.sh (testpmd generator with two virtio-user ports; backends: dpdk-testpmd
with two net_vhost ports in io mode, OVS-DPDK with two dpdkvhostuser ports and port-to-port
flows, the vswitch) and reads its LOOP_BENCH_JSON line. Backends whose software is missing are
listed as missing, never estimated.

EXAMPLES:
  sudo target/release/bench compare
  sudo target/release/bench compare --duration 20 --runs 3 --json compare.json";

/// Options every measuring command shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Cores for the generator and the peer (the switch's poll thread, the ring's consumer).
    #[arg(
        long,
        value_name = "GEN,PEER",
        value_delimiter = ',',
        default_value = "0,1"
    )]
    pub cores: Vec<usize>,
    /// Directory for the switch's sockets (a fresh subdirectory is used and removed).
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
}

impl Common {
    fn env(&self) -> Result<Env> {
        let [generator, peer] = self.cores[..] else {
            return Err(Error::BadArgument(format!(
                "--cores {:?}: expected two cores, GEN,PEER (e.g. 0,1)",
                self.cores
            )));
        };
        let cores = Cores { generator, peer };
        // The two-core scenarios check the peer core when they open; a one-core machine still
        // runs the single-thread baselines.
        cores.check_generator()?;
        Ok(Env {
            cores,
            work_dir: self
                .work_dir
                .join(format!("nfv-bench-{}", std::process::id())),
        })
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Measured seconds per scenario and round.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub duration: f64,
    /// Warm-up seconds before each measurement.
    #[arg(long, value_name = "SECS", default_value_t = 0.3)]
    pub warmup: f64,
    /// Rounds: every scenario runs once per round, round-robin; the table gives the median
    /// trial and the range.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub trials: usize,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario names, comma-separated, or `all`.
    #[arg(
        long,
        short = 's',
        value_name = "S[,S...]",
        value_delimiter = ',',
        required = true
    )]
    pub scenario: Vec<String>,
    /// Frame sizes in bytes (64..=1518), comma-separated.
    #[arg(
        long,
        value_name = "N[,N...]",
        value_delimiter = ',',
        default_value = "64"
    )]
    pub size: Vec<u32>,
    /// Measured seconds per (scenario, size).
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 2.0)]
    pub duration: f64,
    /// Warm-up seconds before each measurement (not counted).
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    pub warmup: f64,
    /// Rounds: every (scenario, size) runs once per round, round-robin (A B C A B C ...); the
    /// table and JSON give the median trial, min, max and spread, ratios as the median of the
    /// per-round ratios.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub trials: usize,
    /// Offered rate in Mpps (TSC-paced); default: as fast as the generator goes.
    #[arg(long, value_name = "MPPS")]
    pub rate: Option<f64>,
    /// Write the rows as JSON (one object per scenario and size).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plot Mpps against frame size with the 10GbE/40GbE line-rate curves: writes FILE.svg and
    /// FILE.png (give either name).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct Rfc2544Args {
    /// The scenario.
    #[arg(long, short = 's', value_name = "S")]
    pub scenario: String,
    /// Frame size in bytes (64..=1518).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub size: u32,
    /// Seconds per trial.
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 2.0)]
    pub duration: f64,
    /// Warm-up seconds before each trial.
    #[arg(long, value_name = "SECS", default_value_t = 0.2)]
    pub warmup: f64,
    /// Loss allowed by the second search, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 0.1)]
    pub loss_tolerance: f64,
    /// Stop when the search interval is this small, in percent of the maximum rate.
    #[arg(long, value_name = "PCT", default_value_t = 1.0)]
    pub resolution: f64,
    /// At most this many trials per search.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub max_trials: usize,
    /// Write the searches and every trial as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Measuring window per backend, seconds.
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 10)]
    pub duration: u32,
    /// Warm-up per backend, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub warmup: u32,
    /// Rounds: each runs every backend once (fresh), round-robin; medians, spreads and
    /// per-round ratios are compared.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// Work directory for sockets and logs.
    #[arg(long, value_name = "DIR", default_value = "/tmp/nfv-loopbench")]
    pub work_dir: PathBuf,
    /// Write the comparison as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The loop script.
    #[arg(long, value_name = "PATH", default_value_os_t = default_script())]
    pub script: PathBuf,
    /// Do not raise the pollers' priority (the script runs them at nice -20 by default).
    #[arg(long)]
    pub no_nice: bool,
    /// Packed virtqueues (VIRTIO_F_RING_PACKED) on the generator's ports: every backend then
    /// serves packed rings.
    #[arg(long)]
    pub packed: bool,
}

fn default_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loop_bench.sh")
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    if v.is_finite() && (0.0..=3600.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(Error::BadArgument(format!(
            "{what} {v}: expected seconds between 0 and 3600"
        )))
    }
}

fn positive_secs(v: f64, what: &str) -> Result<Duration> {
    let d = secs(v, what)?;
    if d < Duration::from_millis(10) {
        return Err(Error::BadArgument(format!(
            "{what} {v}: expected at least 0.01 seconds"
        )));
    }
    Ok(d)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo(a) => demo(a),
        Cmd::Run(a) => run(a),
        Cmd::Rfc2544(a) => rfc(a),
        Cmd::Compare(a) => cmp(a),
        Cmd::FastpathPeer(a) => crate::peer::main(a).map(|()| ExitCode::SUCCESS),
        Cmd::Wakeup(a) => wakeup(a),
        Cmd::Check(a) => crate::check::main(a),
        Cmd::Icount(a) => crate::icount::main(a),
        Cmd::IcountWorker(a) => crate::icount::worker_main(a),
        Cmd::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Args)]
pub struct WakeupArgs {
    /// Wake-ups measured per strategy.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// How long the receiver waits before each notify, microseconds: long enough for the
    /// sleeping strategies to sleep.
    #[arg(long, default_value_t = 100)]
    gap_us: u64,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn wakeup(a: WakeupArgs) -> Result<ExitCode> {
    let cores = Cores::default();
    let mut rows = Vec::new();
    for s in notify::Strategy::available() {
        eprintln!("[bench] wakeup: {} ({} samples)", s.name(), a.samples);
        let cfg = notify::latency::WakeupConfig {
            samples: a.samples,
            gap: Duration::from_micros(a.gap_us),
            cores: Some((cores.generator, cores.peer)),
            ..notify::latency::WakeupConfig::default()
        };
        rows.push(
            notify::measure_wakeup_with(s, &cfg)
                .map_err(|e| Error::measurement("wakeup", e.to_string()))?,
        );
    }
    print!("{}", notify::latency::table(&rows));
    for s in notify::Strategy::ALL {
        if !s.is_available() {
            println!("{}: not available on this machine", s.name());
        }
    }
    if let Some(p) = &a.json {
        std::fs::write(p, notify::latency::to_json(&rows))
            .map_err(Error::io(format!("writing {}", p.display())))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn list() {
    for e in REGISTRY {
        println!("{:<18}\n    {}", e.name, e.summary);
    }
}

/// Removes the scratch directory of a command when it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn outputs(doc: &RunDoc, json: Option<&PathBuf>, plot_file: Option<&PathBuf>) -> Result<()> {
    let rows = &doc.rows;
    if let Some(p) = json {
        report::write_json(p, doc)?;
        eprintln!("[bench] results: {}", p.display());
    }
    if let Some(p) = plot_file {
        let (svg, png) = plot::paths(p);
        plot::write(rows, "Mpps against frame size", &svg, &png)?;
        eprintln!("[bench] plot: {} and {}", svg.display(), png.display());
    }
    Ok(())
}

fn demo(a: DemoArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let env = a.common.env()?;
    let _scratch = Scratch(env.work_dir.clone());
    let plan = Plan {
        duration: positive_secs(a.duration, "--duration")?,
        warmup: secs(a.warmup, "--warmup")?,
        rate_pps: None,
        trials: trials(a.trials)?,
    };
    let entries: Vec<_> = REGISTRY.iter().collect();
    eprintln!(
        "[bench] demo: {} scenarios at 64 B, {} rounds, {:.1} s each after {:.1} s warm-up; \
         generator on core {}, peer on core {}. Line rate at 64 B: {:.2} Mpps (10GbE), {:.2} \
         Mpps (40GbE).",
        entries.len(),
        plan.trials,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        env.cores.generator,
        env.cores.peer,
        line_rate_pps(LINK_10G_BPS, 64) / 1e6,
        line_rate_pps(LINK_40G_BPS, 64) / 1e6,
    );
    let (out, doc) = measured(&entries, &[64], &plan, &env);
    print!("{}", report::table(&doc, &out.notes));
    outputs(&doc, a.json.as_ref(), None)?;
    eprintln!(
        "[bench] demo done in {:.1} s. More: bench run --scenario all --size \
         64,128,256,512,1024,1518 --json r.json --plot r.svg",
        t0.elapsed().as_secs_f64()
    );
    Ok(if doc.rows.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn trials(n: usize) -> Result<usize> {
    if (1..=100).contains(&n) {
        Ok(n)
    } else {
        Err(Error::BadArgument(format!(
            "--trials {n}: expected 1 to 100 rounds"
        )))
    }
}

/// Runs the matrix with the machine probed before and its steal and load measured over it.
fn measured(
    entries: &[&scenario::Entry],
    sizes: &[u32],
    plan: &Plan,
    env: &Env,
) -> (runner::Outcome, RunDoc) {
    let mut machine = Machine::probe();
    let start = machine::read_cpu_times();
    let mut out = runner::run_matrix(entries, sizes, plan, env);
    machine.finish(start);
    let doc = RunDoc::new(machine, plan.trials, std::mem::take(&mut out.rows));
    (out, doc)
}

fn run(a: RunArgs) -> Result<ExitCode> {
    let entries = scenario::resolve(&a.scenario)?;
    let mut sizes = Vec::new();
    for &s in &a.size {
        let s = linerate::check_frame_size(s)?;
        if !sizes.contains(&s) {
            sizes.push(s);
        }
    }
    let rate_pps = match a.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 && r <= 1000.0 => Some(r * 1e6),
        Some(r) => {
            return Err(Error::BadArgument(format!(
                "--rate {r}: expected Mpps above 0 and at most 1000"
            )))
        }
    };
    let plan = Plan {
        duration: positive_secs(a.duration, "--duration")?,
        warmup: secs(a.warmup, "--warmup")?,
        rate_pps,
        trials: trials(a.trials)?,
    };
    let env = a.common.env()?;
    let _scratch = Scratch(env.work_dir.clone());
    let (out, doc) = measured(&entries, &sizes, &plan, &env);
    print!("{}", report::table(&doc, &out.notes));
    outputs(&doc, a.json.as_ref(), a.plot.as_ref())?;
    Ok(if out.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn rfc(a: Rfc2544Args) -> Result<ExitCode> {
    let entry = scenario::find(&a.scenario)?;
    let pct = |v: f64, what: &str, max: f64| {
        if v.is_finite() && v >= 0.0 && v <= max {
            Ok(v / 100.0)
        } else {
            Err(Error::BadArgument(format!(
                "{what} {v}: expected a percentage from 0 to {max}"
            )))
        }
    };
    let plan = Rfc2544Plan {
        frame_size: linerate::check_frame_size(a.size)?,
        trial: positive_secs(a.duration, "--duration")?,
        warmup: secs(a.warmup, "--warmup")?,
        loss_tolerance: pct(a.loss_tolerance, "--loss-tolerance", 100.0)?,
        resolution: pct(a.resolution, "--resolution", 50.0)?.max(1e-4),
        max_trials: a.max_trials.max(1),
    };
    let env = a.common.env()?;
    let _scratch = Scratch(env.work_dir.clone());
    let doc = runner::rfc2544(entry, &plan, &env)?;
    print!("{}", runner::rfc2544_table(&doc));
    if let Some(p) = &a.json {
        report::write_json(p, &doc)?;
        eprintln!("[bench] results: {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cmp(a: CompareArgs) -> Result<ExitCode> {
    if a.duration == 0 || a.warmup == 0 || a.runs == 0 {
        return Err(Error::BadArgument(
            "--duration, --warmup and --runs must be at least 1".into(),
        ));
    }
    let doc = compare::run(&compare::Options {
        duration_s: a.duration,
        warmup_s: a.warmup,
        runs: a.runs,
        work_dir: a.work_dir,
        json: a.json.clone(),
        script: a.script,
        nice: !a.no_nice,
        packed: a.packed,
    })?;
    print!("{}", compare::table(&doc));
    if let Some(p) = &a.json {
        report::write_json(p, &doc)?;
        eprintln!("[bench] results: {}", p.display());
    }
    Ok(
        if doc.results.contains_key("vswitch") && doc.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_parses_lists() {
        let c = Cli::try_parse_from([
            "bench",
            "run",
            "--scenario",
            "switch,ring-limit",
            "--size",
            "64,1518",
            "--duration",
            "1",
            "--cores",
            "1,0",
        ])
        .unwrap();
        let Cmd::Run(r) = c.command else {
            panic!("not run")
        };
        assert_eq!(r.scenario, ["switch", "ring-limit"]);
        assert_eq!(r.size, [64, 1518]);
        assert_eq!(r.common.cores, [1, 0]);
    }

    #[test]
    fn test_zero_duration() {
        assert!(positive_secs(0.0, "--duration").is_err());
        assert!(secs(f64::NAN, "--warmup").is_err());
        assert!(secs(0.0, "--warmup").is_ok());
    }
}

//! `bench icount`: instructions per packet of each path, a figure that does not move with the
//! neighbours. Each (path, size) runs `bench icount-worker` ([`worker`]) under callgrind twice,
//! with [`N1`] and [`N2`] packets, counting only the path's `pump_*` function
//! (`--toggle-collect`); (I2 - I1) / (N2 - N1) cancels whatever the pump does once (its first
//! burst's cold paths, the stall checks' setup) and leaves the cost of one more packet, the same
//! on every run of the same build.
//!
//! Callgrind is the method everywhere: hardware counters (`perf stat -e instructions`) are
//! `<not supported>` on the VMs this project runs on, and callgrind counts exactly (user-space
//! instructions of the counted function and its callees, on that thread; system calls' kernel
//! work is not counted).

pub mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::report::{self, RunDoc};

/// Packets of the first and the second counted run.
pub const N1: u64 = 20_000;
pub const N2: u64 = 60_000;
/// The method written into every figure.
pub const METHOD: &str = "callgrind";

/// A path the worker can pump on one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IcountPath {
    Switch,
    FastpathCopy,
    FastpathZerocopy,
    RingLimit,
    RingLimitDesc,
}

impl IcountPath {
    pub const ALL: [IcountPath; 5] = [
        IcountPath::Switch,
        IcountPath::FastpathCopy,
        IcountPath::FastpathZerocopy,
        IcountPath::RingLimit,
        IcountPath::RingLimitDesc,
    ];

    /// The scenario's name.
    pub fn name(self) -> &'static str {
        match self {
            IcountPath::Switch => "switch",
            IcountPath::FastpathCopy => "fastpath-copy",
            IcountPath::FastpathZerocopy => "fastpath-zerocopy",
            IcountPath::RingLimit => "ring-limit",
            IcountPath::RingLimitDesc => "ring-limit-desc",
        }
    }

    /// The worker function callgrind counts.
    pub fn pump(self) -> &'static str {
        match self {
            IcountPath::Switch => "pump_switch",
            IcountPath::FastpathCopy => "pump_fastpath_copy",
            IcountPath::FastpathZerocopy => "pump_fastpath_zerocopy",
            IcountPath::RingLimit => "pump_ring_limit",
            IcountPath::RingLimitDesc => "pump_ring_limit_desc",
        }
    }

    pub fn from_name(name: &str) -> Result<IcountPath> {
        IcountPath::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = IcountPath::ALL.iter().map(|p| p.name()).collect();
                Error::BadArgument(format!(
                    "no instruction count for path `{name}` (counted: {}, or all)",
                    known.join(", ")
                ))
            })
    }
}

/// One figure of a `bench icount` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IcountFigure {
    pub path: String,
    /// Frame size in bytes.
    pub size: u32,
    pub instructions_per_packet: f64,
    /// How the instructions were counted: `callgrind`.
    pub method: String,
    /// Packets the figure is the cost of: N2 - N1.
    pub packets: u64,
    /// The counted instructions of the two runs, N1 and N2 packets.
    #[serde(default)]
    pub instructions: [u64; 2],
}

impl IcountFigure {
    /// The figure's name in `bench check`.
    pub fn key(&self) -> String {
        format!("icount {}@{}", self.path, self.size)
    }
}

/// The total `Ir` of a callgrind output file: its `totals:` line, else its `summary:` line.
pub fn parse_callgrind_total(text: &str) -> Option<u64> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(key)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    field("totals:").or_else(|| field("summary:"))
}

/// Instructions per packet from two counts: (i2 - i1) / (n2 - n1). `None` when the second run
/// did not count more packets, or fewer instructions (then the pump was not what was counted).
pub fn per_packet(i1: u64, n1: u64, i2: u64, n2: u64) -> Option<f64> {
    let dn = n2.checked_sub(n1).filter(|&d| d > 0)?;
    let di = i2.checked_sub(i1)?;
    Some(di as f64 / dn as f64)
}

/// `bench icount-worker` (hidden): pumps one path.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub path: IcountPath,
    #[arg(long)]
    pub size: u32,
    #[arg(long)]
    pub packets: u64,
    /// Scratch directory for the fast path's switch sockets.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
}

pub fn worker_main(a: WorkerArgs) -> Result<ExitCode> {
    let size = crate::linerate::check_frame_size(a.size)?;
    if a.packets == 0 {
        return Err(Error::BadArgument("--packets must be at least 1".into()));
    }
    let p = worker::run(a.path, size as usize, a.packets, &a.work_dir)?;
    println!(
        "{}",
        serde_json::json!({"path": a.path.name(), "size": size, "sent": p.sent,
                           "received": p.received})
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench icount`.
#[derive(Debug, Args)]
pub struct IcountArgs {
    /// Paths, comma-separated, or `all`: switch, fastpath-copy, fastpath-zerocopy, ring-limit,
    /// ring-limit-desc.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub path: Vec<String>,
    /// Frame sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,1518")]
    pub size: Vec<u32>,
    /// Write the figures as JSON (a `bench run` document with an `icount` list): the baseline
    /// of `bench check`.
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// Scratch directory (callgrind outputs, the fast path's sockets).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
}

/// Resolves `--path`: names or `all`, duplicates dropped.
pub fn resolve(names: &[String]) -> Result<Vec<IcountPath>> {
    let mut out = Vec::new();
    for n in names {
        let add = if n == "all" {
            IcountPath::ALL.to_vec()
        } else {
            vec![IcountPath::from_name(n)?]
        };
        for p in add {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::BadArgument(
            "no path given: --path NAME,... or all".into(),
        ));
    }
    Ok(out)
}

/// Fails clearly when valgrind is missing.
pub fn check_valgrind() -> Result<String> {
    let out = Command::new("valgrind").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => Err(Error::BadArgument(
            "bench icount counts instructions with callgrind, and `valgrind` is not installed \
             or does not run (Debian: apt-get install valgrind)"
                .into(),
        )),
    }
}

/// Counts one run of `packets` packets: the total `Ir` callgrind reports for the pump.
fn count(path: IcountPath, size: u32, packets: u64, dir: &Path) -> Result<u64> {
    let exe = std::env::current_exe().map_err(Error::io("finding our own executable"))?;
    let out = dir.join(format!("callgrind-{}-{size}-{packets}.out", path.name()));
    let pump = path.pump();
    let o = Command::new("valgrind")
        .args(["--tool=callgrind", "-q", "--collect-atstart=no"])
        // With or without the symbol hash, never a closure inside the pump (that would toggle
        // counting off inside it).
        .arg(format!("--toggle-collect=*::{pump}"))
        .arg(format!("--toggle-collect=*::{pump}::h*"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["icount-worker", "--path", path.name()])
        .args([
            "--size",
            &size.to_string(),
            "--packets",
            &packets.to_string(),
        ])
        .arg("--work-dir")
        .arg(dir)
        .output()
        .map_err(Error::io("running valgrind"))?;
    let what = format!("{} at {size} B, {packets} packets", path.name());
    if !o.status.success() {
        return Err(Error::measurement(
            "icount",
            format!(
                "{what}: the worker under callgrind failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ));
    }
    let text =
        std::fs::read_to_string(&out).map_err(Error::io(format!("reading {}", out.display())))?;
    let _ = std::fs::remove_file(&out);
    match parse_callgrind_total(&text) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(Error::measurement(
            "icount",
            format!(
                "{what}: callgrind counted nothing in `{pump}` (is the binary built with its \
                 symbols?)"
            ),
        )),
    }
}

/// Instructions per packet of `path` at `size`.
pub fn measure(path: IcountPath, size: u32, dir: &Path) -> Result<IcountFigure> {
    let i1 = count(path, size, N1, dir)?;
    let i2 = count(path, size, N2, dir)?;
    let ipp = per_packet(i1, N1, i2, N2).ok_or_else(|| {
        Error::measurement(
            "icount",
            format!(
                "{} at {size} B: {i2} instructions for {N2} packets, {i1} for {N1}: not a count \
                 of the packets",
                path.name()
            ),
        )
    })?;
    Ok(IcountFigure {
        path: path.name().to_owned(),
        size,
        instructions_per_packet: ipp,
        method: METHOD.to_owned(),
        packets: N2 - N1,
        instructions: [i1, i2],
    })
}

/// Measures every (path, size), printing each figure as it comes; the document of them.
pub fn run(paths: &[IcountPath], sizes: &[u32], work_dir: &Path) -> Result<RunDoc> {
    let version = check_valgrind()?;
    let dir = work_dir.join(format!("nfv-icount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut machine = Machine::probe();
    let start = crate::machine::read_cpu_times();
    eprintln!(
        "[bench] icount: {} path(s) x {} size(s), {N1} and {N2} packets each under {METHOD} \
         ({version})",
        paths.len(),
        sizes.len()
    );
    let mut figures = Vec::new();
    let result = (|| {
        for &p in paths {
            for &s in sizes {
                let s = crate::linerate::check_frame_size(s)?;
                let f = measure(p, s, &dir)?;
                eprintln!(
                    "[bench] icount {:<18} {:>5} B  {:>10.1} instructions/packet",
                    f.path, f.size, f.instructions_per_packet
                );
                figures.push(f);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    machine.finish(start);
    let mut doc = RunDoc::new(machine, 0, Vec::new());
    doc.icount = figures;
    Ok(doc)
}

/// The figures as a table.
pub fn table(figures: &[IcountFigure]) -> String {
    let mut s = format!(
        "{:<18} {:>5} {:>14}  method\n",
        "path", "size", "instr/packet"
    );
    for f in figures {
        s += &format!(
            "{:<18} {:>5} {:>14.1}  {}\n",
            f.path, f.size, f.instructions_per_packet, f.method
        );
    }
    s
}

pub fn main(a: IcountArgs) -> Result<ExitCode> {
    let paths = resolve(&a.path)?;
    let doc = run(&paths, &a.size, &a.work_dir)?;
    println!("{}", doc.machine.line());
    print!("{}", table(&doc.icount));
    if let Some(p) = &a.json {
        report::write_json(p, &doc)?;
        eprintln!("[bench] results: {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 4242\n\
cmd:  target/release/bench icount-worker --path switch --size 64 --packets 20000\npart: 1\n\n\
desc: I1 cache: \ndesc: Timerange: Basic block 0 - 1234\ntrigger: Program termination\n\n\
positions: line\nevents: Ir\nsummary: 31337000\n\n\nfl=(1) ???\nfn=(1) pump_switch\n0 12\n\
totals: 31337000\n";

    #[test]
    fn the_totals_line_of_a_callgrind_file() {
        assert_eq!(parse_callgrind_total(OUT), Some(31_337_000));
        let summary_only = OUT.replace("totals: 31337000\n", "");
        assert_eq!(parse_callgrind_total(&summary_only), Some(31_337_000));
        assert_eq!(parse_callgrind_total("events: Ir\n"), None);
        assert_eq!(parse_callgrind_total("totals: lots\n"), None);
    }

    #[test]
    fn per_packet_is_the_difference_over_the_extra_packets() {
        // 1 M instructions of setup and 250 per packet.
        let (i1, i2) = (1_000_000 + 250 * N1, 1_000_000 + 250 * N2);
        assert_eq!(per_packet(i1, N1, i2, N2), Some(250.0));
        assert_eq!(per_packet(100, 10, 103, 12), Some(1.5));
        assert_eq!(per_packet(i2, N2, i1, N1), None, "fewer packets");
        assert_eq!(per_packet(i2, N1, i1, N2), None, "fewer instructions");
        assert_eq!(per_packet(1, 5, 2, 5), None, "no extra packet");
    }

    #[test]
    fn paths_resolve_by_name_or_all() {
        let all = resolve(&["all".into()]).unwrap();
        assert_eq!(all, IcountPath::ALL);
        let two = resolve(&["ring-limit".into(), "switch".into(), "ring-limit".into()]).unwrap();
        assert_eq!(two, [IcountPath::RingLimit, IcountPath::Switch]);
        let e = resolve(&["kvm-exit".into()]).unwrap_err().to_string();
        assert!(
            e.contains("kvm-exit") && e.contains("fastpath-zerocopy"),
            "{e}"
        );
        for p in IcountPath::ALL {
            assert_eq!(IcountPath::from_name(p.name()).unwrap(), p);
            assert!(p.pump().starts_with("pump_"));
        }
    }
}

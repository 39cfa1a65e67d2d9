//! The machine a result came from, carried in every table and JSON document: what the CPU is and
//! which of its features change our paths (protection keys choose the view backend, WAITPKG the
//! notifier), how the kernel is set up, and how busy the neighbours were while the run went on
//! (steal time from `/proc/stat`, load average from `/proc/loadavg`).
//!
//! The CPU behind our VMs changes between sessions, so a figure without this line cannot be
//! compared with another.

use serde::{Deserialize, Serialize};

/// CPU flags that change which code runs or what it costs.
pub const FLAGS: [&str; 5] = ["pku", "ospke", "waitpkg", "constant_tsc", "avx512f"];

/// Steal above this share of the run's CPU time is reported: the figures were taken while the
/// host gave our vCPUs to someone else.
pub const STEAL_WARN_PCT: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_vendor: String,
    pub cpu_model: String,
    /// Of [`FLAGS`], the ones this CPU has.
    pub flags: Vec<String>,
    pub tsc_hz: u64,
    pub cores: usize,
    pub kernel: String,
    /// 2 MiB hugepages reserved and free when the run started.
    pub hugepages_total: u64,
    pub hugepages_free: u64,
    /// The protected-view backend the fast path chooses here (`pku` or `mprotect`).
    pub view_backend: String,
    /// The notification strategy the fast-path scenarios run (and whether UMWAIT exists).
    pub notify: String,
    /// Measured over the run; `None` before it ended or where /proc could not be read.
    pub steal_pct: Option<f64>,
    pub loadavg_1m: Option<f64>,
}

/// The /proc/stat CPU totals at one instant: (steal, all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub steal: u64,
    pub total: u64,
}

impl Machine {
    /// Probes this machine. Files that cannot be read leave their fields empty.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu_vendor, cpu_model, flags) = parse_cpuinfo(&cpuinfo);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let umwait = if notify::Strategy::Umwait.is_available() {
            "UMWAIT available"
        } else {
            "no UMWAIT"
        };
        Machine {
            cpu_vendor,
            cpu_model,
            flags,
            tsc_hz: notify::tsc::hz(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            hugepages_total: meminfo_value(&meminfo, "HugePages_Total").unwrap_or(0),
            hugepages_free: meminfo_value(&meminfo, "HugePages_Free").unwrap_or(0),
            view_backend: eptp_views::Backend::detect().name().to_owned(),
            notify: format!("adaptive (pause, then futex; {umwait})"),
            steal_pct: None,
            loadavg_1m: None,
        }
    }

    /// Records the neighbours' share over the run that started at `start`.
    pub fn finish(&mut self, start: Option<CpuTimes>) {
        let end = read_cpu_times();
        self.steal_pct = match (start, end) {
            (Some(a), Some(b)) => steal_pct(a, b),
            _ => None,
        };
        self.loadavg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
    }

    /// One line for the table's header.
    pub fn line(&self) -> String {
        let mut s = format!(
            "machine: {} {}, {} cores, TSC {:.2} GHz, flags [{}], kernel {}, hugepages {}/{} free, \
             views {}, notify {}",
            self.cpu_vendor,
            self.cpu_model,
            self.cores,
            self.tsc_hz as f64 / 1e9,
            self.flags.join(" "),
            self.kernel,
            self.hugepages_free,
            self.hugepages_total,
            self.view_backend,
            self.notify
        );
        if let Some(p) = self.steal_pct {
            s += &format!(", steal {p:.1}%");
        }
        if let Some(l) = self.loadavg_1m {
            s += &format!(", load {l:.2}");
        }
        s
    }

    /// The warning a run with too much steal gets, if it did.
    pub fn steal_warning(&self) -> Option<String> {
        let p = self.steal_pct?;
        (p > STEAL_WARN_PCT).then(|| {
            format!(
                "WARNING: {p:.1}% of this run's CPU time was stolen by the host (above \
                 {STEAL_WARN_PCT}%): the neighbours were busy, figures are low and noisy"
            )
        })
    }
}

/// (vendor, model name, the [`FLAGS`] present) from /proc/cpuinfo's first processor.
pub fn parse_cpuinfo(text: &str) -> (String, String, Vec<String>) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let have = field("flags");
    let have: Vec<&str> = have.split_whitespace().collect();
    let flags = FLAGS
        .iter()
        .filter(|f| have.contains(f))
        .map(|f| (*f).to_owned())
        .collect();
    (field("vendor_id"), field("model name"), flags)
}

fn meminfo_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// The aggregate `cpu` line of /proc/stat.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    // counted in user, so the total stops at steal.
    if v.len() < 8 {
        return None;
    }
    Some(CpuTimes {
        steal: v[7],
        total: v[..8].iter().sum(),
    })
}

pub fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Steal as a percentage of the CPU time between two samples; `None` when no time passed.
pub fn steal_pct(a: CpuTimes, b: CpuTimes) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    let steal = b.steal.checked_sub(a.steal)?;
    (total > 0).then(|| 100.0 * steal as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str =
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n\
                           flags\t\t: fpu constant_tsc avx512f pku\n\nprocessor\t: 1\n";

    #[test]
    fn cpuinfo_gives_vendor_model_and_the_flags_that_matter() {
        let (v, m, f) = parse_cpuinfo(CPUINFO);
        assert_eq!((v.as_str(), m.as_str()), ("AuthenticAMD", "AMD EPYC 9R14"));
        assert_eq!(f, ["pku", "constant_tsc", "avx512f"]);
    }

    #[test]
    fn empty_cpuinfo_gives_empty_fields() {
        assert_eq!(parse_cpuinfo(""), (String::new(), String::new(), vec![]));
    }

    #[test]
    fn steal_is_a_share_of_the_time_between_samples() {
        let a = parse_cpu_times("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n").unwrap();
        let b = parse_cpu_times("cpu  150 0 50 1230 0 0 0 70 9 9\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                steal: 50,
                total: 1000
            }
        );
        assert_eq!(steal_pct(a, b), Some(4.0));
        assert_eq!(steal_pct(b, b), None);
    }

    #[test]
    fn truncated_proc_stat_is_refused() {
        assert_eq!(parse_cpu_times("cpu  1 2 3\n"), None);
        assert_eq!(parse_cpu_times("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(parse_cpu_times(""), None);
    }

    #[test]
    fn steal_above_two_percent_is_warned() {
        let mut m = Machine::probe();
        m.steal_pct = Some(2.5);
        assert!(m.steal_warning().unwrap().contains("2.5%"));
        m.steal_pct = Some(1.0);
        assert!(m.steal_warning().is_none());
        assert!(m.line().contains("steal 1.0%"));
    }

    #[test]
    fn meminfo_hugepages() {
        let t = "MemTotal: 1 kB\nHugePages_Total:      24\nHugePages_Free:       20\n";
        assert_eq!(meminfo_value(t, "HugePages_Total"), Some(24));
        assert_eq!(meminfo_value(t, "HugePages_Free"), Some(20));
        assert_eq!(meminfo_value(t, "HugePages_Rsvd"), None);
    }
}

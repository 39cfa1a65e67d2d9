//! Core lists (`0,2-3`): parsing, formatting, and the cores this process may run on.

/// Core ids beyond this are surely typos; the bound also keeps `0-4000000000` from
/// allocating a huge list before the availability check rejects it.
const MAX_CORE_ID: usize = 4095;

/// Parses a core list such as `1`, `0,1`, `2-5`, `0,2-3` into core ids in the given order.
/// Rejects empty items, reversed ranges and cores named twice.
pub fn parse_core_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    let parse = |s: &str| -> Result<usize, String> {
        let s = s.trim();
        let n: usize = s
            .parse()
            .map_err(|_| format!("`{s}` is not a core number"))?;
        if n > MAX_CORE_ID {
            return Err(format!("core {n} is beyond {MAX_CORE_ID}"));
        }
        Ok(n)
    };
    if list.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    for item in list.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let n = parse(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range `{}` runs backwards", item.trim()));
        }
        for core in lo..=hi {
            if cores.contains(&core) {
                return Err(format!("core {core} is named twice"));
            }
            cores.push(core);
        }
    }
    Ok(cores)
}

/// Formats core ids compactly (`0-3,6`), the inverse of [`parse_core_list`].
pub fn format_core_list(cores: &[usize]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        if sorted[i] == start {
            out.push(start.to_string());
        } else {
            out.push(format!("{start}-{}", sorted[i]));
        }
        i += 1;
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(",")
    }
}

/// The cores this process may run on, ascending: its scheduler affinity as the kernel
/// reports it (`Cpus_allowed_list`, which also reflects cgroup cpusets), falling back to
/// `0..available_parallelism` where /proc is not mounted.
pub fn available_cores() -> Vec<usize> {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_core_list(list).ok())
        });
    let mut cores = from_proc.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    });
    cores.sort_unstable();
    cores
}

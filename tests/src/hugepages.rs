//! 2 MB hugepages for the DPDK peers: reserving them and mounting a hugetlbfs of our own.
//!
//! DPDK's vhost-user frontend (`net_virtio_user`) shares its memory with the backend by file
//! descriptor, and runs fastest on hugepages. Reserving pages and mounting hugetlbfs needs root;
//! without it [`ensure_hugepages`] returns `None` and callers fall back to `--no-huge`.
//!
//! The page pool is global to the machine and other tests (or `bench/loop_bench.sh`) may reserve
//! at the same time, so the read-modify-write of the pool size and the mount run under an
//! exclusive `flock` on [`LOCK_FILE`], the same file the benchmark script locks with `flock(1)`.
//! The pool is only ever raised, never lowered: lowering could pull pages from under a running
//! peer.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the hugetlbfs (pagesize=2M) used by the tests and the benchmark is mounted.
pub const HUGE_DIR: &str = "/dev/hugepages-nfv";

/// Lock serialising pool changes and the mount across processes (also used by
/// `bench/loop_bench.sh`).
pub const LOCK_FILE: &str = "/tmp/nfv-hugepages.lock";

const SYSFS_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
const PROC_NR: &str = "/proc/sys/vm/nr_hugepages";

/// State of the 2 MB page pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Pages reserved and not in use.
    pub free: u64,
}

/// Makes sure `n_2m` free 2 MB hugepages exist and a hugetlbfs (pagesize=2M) is mounted at
/// [`HUGE_DIR`]; returns the mount point, or `None` (with the reason on stderr) when that is not
/// possible here: not root, no 2 MB hugepage support, or the kernel could not find the memory.
///
/// Idempotent: pages already free count, an existing mount is reused. Safe when several
/// processes call it at once.
pub fn ensure_hugepages(n_2m: u64) -> Option<PathBuf> {
    match try_ensure(n_2m) {
        Ok(dir) => Some(dir),
        Err(why) => {
            eprintln!("hugepages: {why}; falling back to --no-huge");
            None
        }
    }
}

fn try_ensure(n_2m: u64) -> Result<PathBuf, String> {
    // Without root DPDK could not use the (root-owned) mount anyway.
    if !is_root() {
        return Err("not root: cannot reserve hugepages or mount hugetlbfs".into());
    }
    let dir = PathBuf::from(HUGE_DIR);
    // Fast path: a mount and enough free pages are already there.
    if is_hugetlbfs_2m(&dir) && pool().map(|p| p.free >= n_2m).unwrap_or(false) {
        return Ok(dir);
    }
    if !Path::new(SYSFS_2M).is_dir() {
        return Err("the kernel offers no 2 MB hugepages".into());
    }
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("open {LOCK_FILE}: {e}"))?;
    lock.lock().map_err(|e| format!("lock {LOCK_FILE}: {e}"))?;

    let before = pool().ok_or("cannot read the 2 MB hugepage pool")?;
    if before.free < n_2m {
        // Grow by the shortfall: pages in use by others stay theirs.
        let target = before.total + (n_2m - before.free);
        fs::write(nr_hugepages_file(), format!("{target}\n"))
            .map_err(|e| format!("raise nr_hugepages to {target}: {e}"))?;
    }
    let after = pool().ok_or("cannot read the 2 MB hugepage pool")?;
    if after.free < n_2m {
        return Err(format!(
            "wanted {n_2m} free 2 MB hugepages, the kernel gave {} free of {} (memory fragmented or short)",
            after.free, after.total
        ));
    }

    if !is_hugetlbfs_2m(&dir) {
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() && !is_hugetlbfs_2m(&dir) {
            return Err(format!(
                "mount hugetlbfs at {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(dir)
}

/// The current 2 MB page pool, or `None` when the kernel has none.
pub fn pool() -> Option<Pool> {
    let read = |name: &str| -> Option<u64> {
        fs::read_to_string(Path::new(SYSFS_2M).join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(Pool {
        total: read("nr_hugepages")?,
        free: read("free_hugepages")?,
    })
}

/// `/proc/sys/vm/nr_hugepages` sizes the pool of the default page size; use it when that is
/// 2 MB, and the per-size sysfs knob otherwise.
fn nr_hugepages_file() -> PathBuf {
    let default_is_2m = fs::read_to_string("/proc/meminfo")
        .map(|m| {
            m.lines()
                .any(|l| l.starts_with("Hugepagesize:") && l.contains(" 2048 kB"))
        })
        .unwrap_or(false);
    if default_is_2m {
        PathBuf::from(PROC_NR)
    } else {
        Path::new(SYSFS_2M).join("nr_hugepages")
    }
}

/// True when `dir` is a mount point of hugetlbfs with 2 MB pages.
pub fn is_hugetlbfs_2m(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let want = dir.to_string_lossy();
    mounts.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 4
            && f[1] == want
            && f[2] == "hugetlbfs"
            && (f[3]
                .split(',')
                .any(|o| o == "pagesize=2M" || o == "pagesize=2048k")
                || !f[3].contains("pagesize="))
    })
}

/// Effective uid 0, read from `/proc/self/status` (the crate has no `unsafe` for `geteuid`).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_readable_when_the_kernel_has_2m_pages() {
        if Path::new(SYSFS_2M).is_dir() {
            let p = pool().expect("pool");
            assert!(p.free <= p.total);
        }
    }

    #[test]
    fn a_plain_directory_is_not_hugetlbfs() {
        assert!(!is_hugetlbfs_2m(&std::env::temp_dir()));
    }
}

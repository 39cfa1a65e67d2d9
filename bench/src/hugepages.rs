//! 2 MiB hugepages for the fast-path regions while a fast-path scenario runs.
//!
//! A dedicated region on 4 KiB pages makes every view switch of the mprotect backend rewrite one
//! page-table entry per present page: measured here (AMD EPYC, kernel 6.18) ~290 cycles per extra
//! page, 150k cycles to close and reopen 2 MiB, against ~6k on one 2 MiB hugepage. On a machine
//! with no free hugepages the fast path then spends a third of the receiver's time in the kernel,
//! so, as root, the scenario reserves the few it needs and gives them back when it ends (and
//! says so on stderr). `NFV_BENCH_NO_HUGEPAGES=1` turns this off, to measure the 4 KiB case.
//!
//! The reservation is process-wide and counted: scenarios open at the same time share it, the
//! last one to close restores the previous pool size.

use std::sync::Mutex;

const NR: &str = "/proc/sys/vm/nr_hugepages";
const MEMINFO: &str = "/proc/meminfo";

/// Hugepages the two fast-path guests of a scenario need: the owner's dedicated region (used
/// ring, rings and buffers on pages of their own: 3 for a 1024-entry queue, 6 for 4096) with
/// room to spare.
pub const PAGES: u64 = 24;

struct Pool {
    users: usize,
    /// The pool size we raised, to restore when the last user goes.
    restore: Option<u64>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    users: 0,
    restore: None,
});

/// Keeps the reservation while alive.
pub struct Reservation(());

/// `HugePages_Free` from /proc/meminfo text.
pub fn free_pages(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Makes sure `pages` hugepages are free, raising the pool when we may; never fails (the
/// regions fall back to 4 KiB pages, and the fast-path guest logs that).
pub fn reserve(pages: u64) -> Reservation {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.users += 1;
    if std::env::var_os("NFV_BENCH_NO_HUGEPAGES").is_some_and(|v| v != "0") {
        return Reservation(());
    }
    let free = std::fs::read_to_string(MEMINFO)
        .ok()
        .and_then(|m| free_pages(&m))
        .unwrap_or(0);
    if free >= pages {
        return Reservation(());
    }
    let Some(total) = read_u64(NR) else {
        return Reservation(());
    };
    let want = total + (pages - free);
    match std::fs::write(NR, want.to_string()) {
        Ok(()) => {
            let got = read_u64(NR).unwrap_or(total);
            eprintln!(
                "[bench] reserved {} 2 MiB hugepages for the fast-path regions ({NR}: {total} -> {got}; restored when the scenario ends)",
                got.saturating_sub(total)
            );
            if pool.restore.is_none() {
                pool.restore = Some(total);
            }
        }
        Err(e) => eprintln!(
            "[bench] no free 2 MiB hugepages and cannot reserve any ({NR}: {e}): fast-path regions on 4 KiB pages, view switches cost ~25x more"
        ),
    }
    Reservation(())
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.users -= 1;
        if pool.users > 0 {
            return;
        }
        if let Some(total) = pool.restore.take() {
            if let Err(e) = std::fs::write(NR, total.to_string()) {
                eprintln!("[bench] could not restore {NR} to {total}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pages_from_meminfo() {
        let m = "MemTotal: 1 kB\nHugePages_Total:      64\nHugePages_Free:       12\n";
        assert_eq!(free_pages(m), Some(12));
        assert_eq!(free_pages("MemTotal: 1 kB\n"), None);
    }
}

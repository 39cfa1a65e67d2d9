//! Pinning busy threads to cores. A benchmark never runs more than two busy pollers (this
//! machine has two cores): the generator on one core, the peer (the switch's PMD, the ring's
//! consumer) on the other. A thread is pinned for a trial and gets its CPU set back afterwards,
//! so the command's main thread does not stay on one core between trials.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The two cores a benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cores {
    /// The generator: the built-in guests' thread, the ring's producer, the baselines' loop.
    pub generator: usize,
    /// The peer: the switch's poll thread, the ring's consumer.
    pub peer: usize,
}

impl Default for Cores {
    fn default() -> Self {
        Cores {
            generator: 0,
            peer: 1,
        }
    }
}

/// Cores the calling thread may run on.
pub fn allowed() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

impl Cores {
    /// Checks the generator core exists for this process.
    pub fn check_generator(&self) -> Result<()> {
        let ids = allowed();
        if ids.contains(&self.generator) {
            Ok(())
        } else {
            Err(Error::BadArgument(format!(
                "core {} is not available to this process (available: {ids:?}); pick the \
                 generator's core with --cores GEN,PEER",
                self.generator
            )))
        }
    }

    /// Checks both cores exist for this process and differ (the two-core scenarios). Call it
    /// before pinning anything.
    pub fn check(&self) -> Result<()> {
        if self.generator == self.peer {
            return Err(Error::BadArgument(format!(
                "--cores {0},{0}: the generator and the peer need two different cores \
                 (two busy pollers on one core starve each other)",
                self.generator
            )));
        }
        let ids = allowed();
        for c in [self.generator, self.peer] {
            if !ids.contains(&c) {
                return Err(Error::BadArgument(format!(
                    "core {c} is not available to this process (available: {ids:?}); \
                     pick two with --cores A,B"
                )));
            }
        }
        Ok(())
    }
}

/// The calling thread's previous CPU set, restored on drop.
pub struct Pinned {
    previous: Option<CpuSet>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(set) = self.previous.take() {
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

/// Pins the calling thread to `core` until the guard drops. A failure is an error: an unpinned
/// poller measures the scheduler, not the data path.
pub fn current(core: usize) -> Result<Pinned> {
    let previous = sched_getaffinity(Pid::from_raw(0)).ok();
    let mut set = CpuSet::new();
    set.set(core)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set))
        .map_err(|e| {
            Error::BadArgument(format!(
                "cannot pin a thread to core {core}: {e} (is it in this process's CPU set? \
                 see taskset)"
            ))
        })?;
    Ok(Pinned { previous })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_is_undone_when_the_guard_drops() {
        let before = allowed();
        let first = before[0];
        {
            let _g = current(first).unwrap();
            assert_eq!(allowed(), vec![first]);
        }
        assert_eq!(allowed(), before);
    }

    #[test]
    fn test_same_core_twice() {
        let c = Cores {
            generator: 0,
            peer: 0,
        };
        assert!(c.check().is_err());
    }

    #[test]
    fn test_core_that_does_not_exist() {
        let c = Cores {
            generator: 0,
            peer: 100_000,
        };
        assert!(c.check().unwrap_err().to_string().contains("not available"));
    }
}

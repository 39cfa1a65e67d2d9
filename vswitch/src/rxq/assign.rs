//! The placement plan: which poll thread should serve each queue, by measured load.
//!
//! Open vSwitch's `cycles` assignment: the queues, heaviest first, each to the thread with the
//! least load so far. Ties go to the queue's current thread (so equal queues are never swapped
//! and a balanced switch plans no moves), then to the lowest id. Queues that cannot move
//! (an uplink's receive queue belongs to its thread) and queues with no measured load stay where
//! they are and count toward their thread: with nothing measured there is nothing to base a
//! move on. Greedy is not optimal, so a plan is worth applying only when it lowers the busiest
//! thread's load ([`Plan::improves`]); otherwise the current placement is at least as good.

/// A queue as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Busy cycles over the measuring window.
    pub load: u64,
    /// The poll thread serving it now.
    pub pmd: usize,
    /// It cannot move.
    pub pinned: bool,
}

/// Where each queue goes, and what that does to each thread's load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The poll thread of each queue, in the order the queues were given.
    pub pmd_of: Vec<usize>,
    /// Each thread's load (the sum of its queues') now.
    pub before: Vec<u64>,
    /// Each thread's load under the plan.
    pub after: Vec<u64>,
}

impl Plan {
    /// Whether the plan lowers the busiest thread's load.
    pub fn improves(&self) -> bool {
        let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
        max(&self.after) < max(&self.before)
    }

    /// The queues (indices into the plan's input) that change thread.
    pub fn moves<'a>(&'a self, queues: &'a [Placed]) -> impl Iterator<Item = usize> + 'a {
        queues
            .iter()
            .zip(&self.pmd_of)
            .enumerate()
            .filter(|(_, (q, &to))| q.pmd != to)
            .map(|(i, _)| i)
    }
}

/// Plans the placement of `queues` on `pmds` poll threads.
pub fn plan(queues: &[Placed], pmds: usize) -> Plan {
    let mut before = vec![0u64; pmds];
    let mut after = vec![0u64; pmds];
    let mut pmd_of: Vec<usize> = queues.iter().map(|q| q.pmd).collect();
    for q in queues {
        if let Some(b) = before.get_mut(q.pmd) {
            *b = b.saturating_add(q.load);
        }
        if q.pinned || q.load == 0 {
            if let Some(a) = after.get_mut(q.pmd) {
                *a = a.saturating_add(q.load);
            }
        }
    }
    let mut order: Vec<usize> = (0..queues.len())
        .filter(|&i| !queues[i].pinned && queues[i].load > 0)
        .collect();
    // Stable: equal loads keep the order they were given in.
    order.sort_by(|&a, &b| queues[b].load.cmp(&queues[a].load));
    for i in order {
        let q = queues[i];
        let Some(to) = (0..pmds).min_by_key(|&p| (after[p], p != q.pmd, p)) else {
            break;
        };
        pmd_of[i] = to;
        after[to] = after[to].saturating_add(q.load);
    }
    Plan {
        pmd_of,
        before,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(load: u64, pmd: usize) -> Placed {
        Placed {
            load,
            pmd,
            pinned: false,
        }
    }

    fn pinned(load: u64, pmd: usize) -> Placed {
        Placed {
            load,
            pmd,
            pinned: true,
        }
    }

    #[test]
    fn test_assign_heaviest_first_to_least_loaded() {
        // Two heavy and two light queues, both heavy ones on pmd 0.
        let queues = [q(90, 0), q(30, 1), q(80, 0), q(20, 1)];
        let p = plan(&queues, 2);
        // 90 -> pmd 0 (tie, its own), 80 -> pmd 1 (0 < 90), 30 -> pmd 1 (80 < 90),
        // 20 -> pmd 0 (90 < 110).
        assert_eq!(p.pmd_of, vec![0, 1, 1, 0]);
        assert_eq!(p.before, vec![170, 50]);
        assert_eq!(p.after, vec![110, 110]);
        assert!(p.improves());
        assert_eq!(p.moves(&queues).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn test_assign_balanced_switch_plans_no_moves() {
        let queues = [q(50, 1), q(50, 0), q(10, 0), q(10, 1)];
        let p = plan(&queues, 2);
        assert_eq!(p.pmd_of, vec![1, 0, 0, 1]);
        assert_eq!(p.moves(&queues).count(), 0);
        assert!(!p.improves());
    }

    #[test]
    fn test_assign_keeps_a_better_current_placement() {
        // 3+3 | 2+2+2 is perfect; greedy makes 3+2+2 | 3+2, which is worse.
        let queues = [q(3, 0), q(3, 0), q(2, 1), q(2, 1), q(2, 1)];
        let p = plan(&queues, 2);
        assert_eq!(p.before, vec![6, 6]);
        assert_eq!(p.after.iter().max(), Some(&7));
        assert!(!p.improves(), "{p:?}");
    }

    #[test]
    fn test_assign_pinned_queue_counts_and_stays() {
        // An uplink's 100 on pmd 0 stays; the movable queues go around it.
        let queues = [pinned(100, 0), q(60, 0), q(50, 0)];
        let p = plan(&queues, 2);
        assert_eq!(p.pmd_of, vec![0, 1, 1]);
        assert_eq!(p.after, vec![100, 110]);
        assert!(p.improves());
        // Pinned even where moving it would be better.
        let queues = [pinned(100, 0), pinned(100, 0)];
        assert_eq!(plan(&queues, 2).pmd_of, vec![0, 0]);
    }

    #[test]
    fn test_assign_unmeasured_queues_stay() {
        // Idle queues weigh nothing: the one measured queue has nothing to gain either.
        let queues = [q(0, 0), q(0, 0), q(0, 0), q(40, 0)];
        let p = plan(&queues, 2);
        assert_eq!(p.pmd_of, vec![0, 0, 0, 0]);
        assert!(!p.improves());
        // Idle queues on a busy thread stay there while the measured ones spread.
        let queues = [q(0, 0), q(30, 0), q(0, 0), q(40, 0)];
        assert_eq!(plan(&queues, 2).pmd_of, vec![0, 1, 0, 0]);
    }

    #[test]
    fn test_assign_equal_queues_are_never_swapped() {
        // The first 70 on pmd 0 could go to either empty thread: it stays, and so does the
        // second on pmd 1 (swapping them would move two queues for nothing).
        let queues = [q(0, 0), q(0, 0), q(70, 0), q(70, 1), q(5, 0)];
        let p = plan(&queues, 2);
        assert_eq!(p.pmd_of, vec![0, 0, 0, 1, 0]);
        assert_eq!(p.moves(&queues).count(), 0);
        let queues = [q(70, 1), q(70, 0)];
        assert_eq!(plan(&queues, 2).pmd_of, vec![1, 0]);
    }

    #[test]
    fn test_assign_one_pmd_moves_nothing() {
        let queues = [q(90, 0), q(10, 0)];
        let p = plan(&queues, 1);
        assert_eq!(p.pmd_of, vec![0, 0]);
        assert!(!p.improves());
    }

    #[test]
    fn test_assign_no_pmds_or_no_queues() {
        let queues = [q(90, 0)];
        let p = plan(&queues, 0);
        assert_eq!(p.pmd_of, vec![0]);
        assert!(!p.improves());
        let p = plan(&[], 2);
        assert!(p.pmd_of.is_empty());
        assert_eq!(p.after, vec![0, 0]);
        assert!(!p.improves());
    }

    #[test]
    fn test_assign_three_pmds() {
        let queues = [q(10, 0), q(40, 0), q(30, 0), q(20, 0), q(25, 0)];
        let p = plan(&queues, 3);
        // 40 -> 0, 30 -> 1, 25 -> 2, 20 -> 2 (25 < 30 < 40), 10 -> 1 (30 < 40, 45).
        assert_eq!(p.pmd_of, vec![1, 0, 1, 2, 2]);
        assert_eq!(p.after, vec![40, 40, 45]);
        assert!(p.improves());
    }
}

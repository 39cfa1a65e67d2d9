//! Queue placement on a running switch: closing the load-measuring intervals, what
//! `pmd-rxq-show` reports, and `pmd-rxq-rebalance`, which moves queues between poll threads by
//! the plan of [`crate::rxq::assign`].
//!
//! A move goes through the poll threads' command queues like every other change: the old
//! thread stops polling the queue and acknowledges (it does so between two iterations, so it
//! holds no burst of the queue any more), and only then is the new thread told to poll it. No
//! two threads ever poll the queue, and nothing is dropped: meanwhile its frames wait in the
//! guest's ring. Frames a destination receives from the queue stay in order in each of its
//! receive queues; a destination with several queue pairs may get those after the move in
//! another of its receive queues, since each poll thread delivers to the queue of its own
//! index (as Open vSwitch's per-thread transmit queues do).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{DevEntry, PortEntry, Switch};
use crate::ctl::{
    PmdLoad, PmdRxqs, RebalanceArgs, RebalanceReply, RxqInfo, RxqKind, RxqMove, RxqShowReply,
};
use crate::pmd::Command;
use crate::port::Port;
use crate::rxq::{self, History, Placed, QueueLoad};

/// The switch's clock for queue loads: when the next interval closes, the length of the kept
/// intervals, and each poll thread's busy cycles in them.
pub(super) struct Placement {
    interval: Duration,
    interval_secs: u32,
    /// Lock order: after the switch's `ports` and `devices`.
    clock: Mutex<Clock>,
}

struct Clock {
    next_close: Instant,
    /// TSC cycles per interval: the window the shares are of.
    wall: History,
    /// Busy cycles of each poll thread per interval.
    busy: Vec<History>,
}

impl Placement {
    /// Intervals of `interval_secs` for `pmds` poll threads, the first starting now.
    pub(super) fn new(interval_secs: u32, pmds: usize) -> Placement {
        let interval = Duration::from_secs(u64::from(interval_secs.max(1)));
        Placement {
            interval,
            interval_secs,
            clock: Mutex::new(Clock {
                next_close: Instant::now() + interval,
                wall: History::starting_at(notify::tsc::now()),
                busy: (0..pmds).map(|_| History::default()).collect(),
            }),
        }
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue some poll thread polls.
struct Polled<'a> {
    name: &'a str,
    /// Virtqueue index, or 0 for an uplink's receive queue.
    queue: u16,
    pmd: usize,
    load: &'a QueueLoad,
    running: bool,
    /// The port, for a queue that can move (a guest's); `None` for an uplink's.
    movable: Option<&'a Arc<Port>>,
}

/// Every polled queue: the guests' transmit queues that have a thread, then the uplinks'
/// receive queues.
fn polled<'a>(
    ports: &'a BTreeMap<String, PortEntry>,
    devices: &'a BTreeMap<String, DevEntry>,
) -> Vec<Polled<'a>> {
    let mut out = Vec::new();
    for e in ports.values() {
        let p = &e.port;
        let assigned = p.status().pmd_of_queue.clone();
        for (slot, pmd) in assigned.into_iter().enumerate() {
            let (Some(pmd), Some(load), Ok(queue)) =
                (pmd, p.rxq_load.get(slot), u16::try_from(slot))
            else {
                continue;
            };
            out.push(Polled {
                name: p.name(),
                queue,
                pmd,
                load,
                running: p.slots[slot].is_running(),
                movable: Some(p),
            });
        }
    }
    for d in devices.values() {
        if let DevEntry::Uplink(u) = d {
            out.push(Polled {
                name: &u.name,
                queue: 0,
                pmd: u.rx_pmd,
                load: &u.rxq_load,
                running: true,
                movable: None,
            });
        }
    }
    out
}

/// `part` as a percentage of `whole`, to two decimals; 0 for an empty window.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    // f64 holds any cycle count of a window exactly enough for a share.
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

impl Switch {
    /// Closes a load interval when one is due; the housekeeping thread calls this often
    /// (about every 100 ms), so an interval is at most that much longer than configured, and
    /// its measured length (TSC) is what the shares are of.
    pub(super) fn close_load_interval(&self) {
        let now = Instant::now();
        if now < self.placement.clock().next_close {
            return;
        }
        let ports = self.ports();
        let devices = self.devices();
        let mut clock = self.placement.clock();
        for e in ports.values() {
            for load in e.port.rxq_load.iter().skip(1).step_by(2) {
                load.close_interval();
            }
        }
        for d in devices.values() {
            if let DevEntry::Uplink(u) = d {
                u.rxq_load.close_interval();
            }
        }
        for (h, pmd) in clock.busy.iter_mut().zip(&self.pmds) {
            h.close(pmd.counters.busy_cycles.load(Ordering::Relaxed));
        }
        clock.wall.close(notify::tsc::now());
        let interval = self.placement.interval;
        clock.next_close += interval;
        if clock.next_close <= now {
            // The thread was held up for more than an interval: start afresh from now.
            clock.next_close = now + interval;
        }
    }

    /// `pmd-rxq-show`.
    pub(super) fn rxq_show(&self) -> RxqShowReply {
        let ports = self.ports();
        let devices = self.devices();
        let clock = self.placement.clock();
        let window = clock.wall.sum();
        let mut pmds: Vec<PmdRxqs> = self
            .pmds
            .iter()
            .zip(&clock.busy)
            .map(|(p, busy)| PmdRxqs {
                id: p.id,
                core: p.core,
                busy_cycles: busy.sum(),
                busy_percent: percent(busy.sum(), window),
                queues: Vec::new(),
            })
            .collect();
        for q in polled(&ports, &devices) {
            let (cycles, _) = q.load.window();
            if let Some(p) = pmds.get_mut(q.pmd) {
                p.queues.push(RxqInfo {
                    port: q.name.to_owned(),
                    queue: q.queue,
                    kind: if q.movable.is_some() {
                        RxqKind::Vhost
                    } else {
                        RxqKind::Uplink
                    },
                    pinned: q.movable.is_none(),
                    running: q.running,
                    busy_cycles: cycles,
                    usage_percent: percent(cycles, window),
                });
            }
        }
        RxqShowReply {
            interval_secs: self.placement.interval_secs,
            intervals: clock.wall.intervals(),
            window_cycles: window,
            tsc_hz: Some(notify::tsc::hz()),
            pmds,
        }
    }

    /// `pmd-rxq-rebalance`: plans on the last intervals' loads and, unless a dry run, makes the
    /// moves when the plan lowers the busiest thread's load.
    pub(super) fn rxq_rebalance(&self, args: &RebalanceArgs) -> Result<RebalanceReply, String> {
        let npmd = self.pmds.len();
        if npmd < 2 {
            return Err(format!(
                "pmd-rxq-rebalance needs at least two poll threads to move queues between; \
                 this switch runs {npmd} (start it with more cores in --pmd-cores)"
            ));
        }
        // Held until the moves are made: no port comes or goes in the meantime.
        let ports = self.ports();
        let devices = self.devices();
        let (window, intervals) = {
            let clock = self.placement.clock();
            (clock.wall.sum(), clock.wall.intervals())
        };
        if intervals == 0 {
            return Err(format!(
                "no queue load measured yet: the first {}-second interval has not ended; \
                 retry after it (see pmd-rxq-show)",
                self.placement.interval_secs
            ));
        }
        let queues = polled(&ports, &devices);
        let placed: Vec<Placed> = queues
            .iter()
            .map(|q| Placed {
                load: q.load.window().0,
                pmd: q.pmd,
                pinned: q.movable.is_none(),
            })
            .collect();
        let plan = rxq::plan(&placed, npmd);
        let improves = plan.improves();
        let moves: Vec<usize> = if improves {
            plan.moves(&placed).collect()
        } else {
            Vec::new()
        };
        let after = if improves { &plan.after } else { &plan.before };
        let mut reply = RebalanceReply {
            dry_run: args.dry_run,
            applied: false,
            intervals,
            moves: moves
                .iter()
                .map(|&i| RxqMove {
                    port: queues[i].name.to_owned(),
                    queue: queues[i].queue,
                    from_pmd: queues[i].pmd,
                    to_pmd: plan.pmd_of[i],
                    usage_percent: percent(placed[i].load, window),
                })
                .collect(),
            pmds: plan
                .before
                .iter()
                .zip(after)
                .enumerate()
                .map(|(id, (&b, &a))| PmdLoad {
                    id,
                    before_percent: percent(b, window),
                    after_percent: percent(a, window),
                })
                .collect(),
        };
        let busiest = |f: fn(&PmdLoad) -> f64| reply.pmds.iter().map(f).fold(0.0, f64::max);
        let (before_max, after_max) = (busiest(|p| p.before_percent), busiest(|p| p.after_percent));
        if args.dry_run || moves.is_empty() {
            tracing::info!(
                "pmd-rxq-rebalance{}: {} move(s) planned, busiest poll thread {before_max:.2}% -> \
                 {after_max:.2}%",
                if args.dry_run { " (dry run)" } else { "" },
                moves.len()
            );
            return Ok(reply);
        }
        for (done, (&i, m)) in moves.iter().zip(&reply.moves).enumerate() {
            let Some(port) = queues[i].movable else {
                continue;
            };
            self.move_queue(port, m.queue, m.from_pmd, m.to_pmd)
                .map_err(|e| {
                    format!(
                        "pmd-rxq-rebalance stopped: {e} ({done} of {} moves made before)",
                        moves.len()
                    )
                })?;
            tracing::info!(
                "pmd-rxq-rebalance: port {} queue {} moved from pmd{} to pmd{} ({:.2}% of a \
                 poll thread)",
                m.port,
                m.queue,
                m.from_pmd,
                m.to_pmd,
                m.usage_percent
            );
        }
        tracing::info!(
            "pmd-rxq-rebalance: moved {} queue(s), busiest poll thread {before_max:.2}% -> \
             {after_max:.2}% (estimated from the last {intervals} interval(s))",
            moves.len()
        );
        reply.applied = true;
        Ok(reply)
    }

    /// Moves queue `slot` of `port` from poll thread `from` to `to`: `from` stops polling it and
    /// acknowledges, then `to` starts.
    fn move_queue(
        &self,
        port: &Arc<Port>,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), String> {
        let name = port.name();
        let (Some(old), Some(new)) = (self.pmds.get(from), self.pmds.get(to)) else {
            return Err(format!(
                "{name} queue {slot}: no poll thread {from} or {to}"
            ));
        };
        let id = port.id;
        if let Err(e) = old.command(|done| Command::UnpollQueue { id, slot, done }) {
            // The stop is still queued on the old thread: queue the poll back behind it, so
            // that the queue ends up polled by that thread again, and never by two.
            let p = port.clone();
            old.post(|done| Command::PollQueue {
                port: p,
                slot,
                done,
            });
            return Err(format!("{name} queue {slot} stays on pmd{from}: {e}"));
        }
        let p = port.clone();
        let started = new.command(|done| Command::PollQueue {
            port: p,
            slot,
            done,
        });
        // Recorded either way: a thread that answers late still applies the command.
        if let Some(q) = port.status().pmd_of_queue.get_mut(usize::from(slot)) {
            *q = Some(to);
        }
        started.map_err(|e| format!("{name} queue {slot}: pmd{to} has not confirmed it: {e}"))
    }
}

//! A poll thread: its loop (commands between iterations, then one poll of every assigned
//! queue), its counters, and the control plane's [`PmdHandle`] on it.
//!
//! Commands are applied between two iterations, never during a poll: when the control plane
//! has a command's acknowledgement, the thread holds no burst of any queue and has published
//! everything it took. That is what lets a queue move from one thread to another
//! ([`Command::UnpollQueue`] on the old, then [`Command::PollQueue`] on the new) without two
//! threads ever polling it and without losing or reordering a frame: until the new thread's
//! first poll the frames wait in the guest's ring, and the new thread starts where the old one
//! stopped (the queue's state lives in its slot, not in the thread).
//!
//! Each poll that yields packets reads the TSC once and adds the cycles since the previous
//! reading to that queue's [`crate::rxq::QueueLoad`]: an empty poll costs nothing extra, and
//! the few cycles of empty polls just before a busy one are counted with it (an empty poll
//! costs tens of cycles, a burst thousands).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;

use super::forward::{Forwarder, Shared};
use crate::port::Port;
use crate::uplink::UplinkPort;
use crate::vxlan::VxlanPort;

/// Commands from the control plane to a poll thread.
pub enum Command {
    /// Make the port known (as a destination) and poll the listed queue slots of it.
    AddPort {
        port: Arc<Port>,
        poll: Vec<u16>,
        done: SyncSender<()>,
    },
    /// Make an uplink known (as a destination when bridged); receive from it when `poll`.
    AddUplink {
        port: Arc<UplinkPort>,
        poll: bool,
        done: SyncSender<Result<(), String>>,
    },
    /// Make a tunnel known (its uplink first).
    AddVxlan {
        port: Arc<VxlanPort>,
        done: SyncSender<Result<(), String>>,
    },
    /// Forget the port: stop polling it and delivering to it.
    DelPort { id: u16, done: SyncSender<()> },
    /// Start polling queue slot `slot` of a port the thread knows (a queue moved here).
    PollQueue {
        port: Arc<Port>,
        slot: u16,
        done: SyncSender<()>,
    },
    /// Stop polling queue slot `slot` of port `id`; the port stays a destination.
    UnpollQueue {
        id: u16,
        slot: u16,
        done: SyncSender<()>,
    },
}

/// A poll thread's counters, written by it alone, read by `vswitchctl pmd-stats`.
#[derive(Default)]
pub struct PmdCounters {
    pub packets: AtomicU64,
    pub busy_cycles: AtomicU64,
    pub idle_cycles: AtomicU64,
    pub iterations: AtomicU64,
}

/// The control plane's handle on a poll thread.
pub struct PmdHandle {
    pub id: usize,
    pub core: Option<usize>,
    pub counters: Arc<PmdCounters>,
    pub commands: Arc<ArrayQueue<Command>>,
    /// Names of the queues it polls, for `pmd-stats`.
    pub rx_queues: Arc<Mutex<Vec<String>>>,
    pub thread: Mutex<Option<JoinHandle<()>>>,
}

impl PmdHandle {
    /// Starts poll thread `id`, pinned to `core` when given.
    pub fn start(
        id: usize,
        core: Option<usize>,
        sleep_max_us: u64,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let counters = Arc::new(PmdCounters::default());
        let commands = Arc::new(ArrayQueue::new(64));
        let rx_queues = Arc::new(Mutex::new(Vec::new()));
        let mut pmd = Pmd {
            id,
            sleep_max_us,
            commands: commands.clone(),
            counters: counters.clone(),
            rx_queues: rx_queues.clone(),
            polls: Vec::new(),
            uplink_polls: Vec::new(),
            fwd: Forwarder::new(id, shared),
        };
        let thread = std::thread::Builder::new()
            .name(format!("pmd{id}"))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        tracing::warn!("pmd{id}: could not pin to core {c}; running unpinned");
                    }
                }
                tracing::info!("pmd{id} polling on core {core:?}");
                pmd.run();
            })?;
        Ok(PmdHandle {
            id,
            core,
            counters,
            commands,
            rx_queues,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a command without waiting for it: for a thread that did not answer in time,
    /// whose commands are still applied in order once it does.
    pub fn post(&self, make: impl FnOnce(SyncSender<()>) -> Command) {
        // Nobody waits for this answer: the channel's other end is gone, so the thread's
        // `send` fails harmlessly.
        let (tx, _) = std::sync::mpsc::sync_channel(1);
        self.push(make(tx));
    }

    /// Sends a command and waits until the thread has applied it. A thread that does not answer
    /// within a few seconds is reported (it would mean a wedged poll loop).
    pub fn command(&self, make: impl FnOnce(SyncSender<()>) -> Command) -> Result<(), String> {
        self.command_with(make)
    }

    /// [`PmdHandle::command`] for commands that answer with a value.
    pub fn command_with<T>(
        &self,
        make: impl FnOnce(SyncSender<T>) -> Command,
    ) -> Result<T, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.push(make(tx));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .map_err(|_| format!("pmd{} did not apply a command within 5 s", self.id))
    }

    fn push(&self, mut cmd: Command) {
        loop {
            match self.commands.push(cmd) {
                Ok(()) => break,
                Err(back) => {
                    cmd = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

struct Pmd {
    id: usize,
    /// Longest nap when idle, in microseconds (0: never sleep).
    sleep_max_us: u64,
    commands: Arc<ArrayQueue<Command>>,
    counters: Arc<PmdCounters>,
    rx_queues: Arc<Mutex<Vec<String>>>,
    /// Queue slots this thread polls: (port, slot index).
    polls: Vec<(Arc<Port>, u16)>,
    /// Uplinks this thread receives from.
    uplink_polls: Vec<Arc<UplinkPort>>,
    fwd: Forwarder,
}

impl Pmd {
    fn run(&mut self) {
        let mut packets = 0u64;
        let mut busy = 0u64;
        let mut idle = 0u64;
        let mut iterations = 0u64;
        let mut last_work = notify::tsc::now();
        let idle_before_nap = notify::tsc::hz() / 1000;
        let mut nap = 0u64;
        while !self.fwd.stopping() {
            if let Some(cmd) = self.commands.pop() {
                self.apply(cmd);
            }
            let t0 = notify::tsc::now();
            // The TSC at the end of the last poll that yielded packets (or the start).
            let mut mark = t0;
            let mut n = 0usize;
            for (port, slot) in &self.polls {
                let k = self.fwd.poll(port, *slot);
                if k > 0 {
                    let t = notify::tsc::now();
                    if let Some(load) = port.rxq_load.get(usize::from(*slot)) {
                        load.add(t.wrapping_sub(mark));
                    }
                    mark = t;
                    n += k;
                }
            }
            for up in &self.uplink_polls {
                let k = self.fwd.poll_uplink(up.id);
                if k > 0 {
                    let t = notify::tsc::now();
                    up.rxq_load.add(t.wrapping_sub(mark));
                    mark = t;
                    n += k;
                }
            }
            let t1 = notify::tsc::now();
            let dt = t1.wrapping_sub(t0);
            if n > 0 {
                packets += n as u64;
                busy += dt;
                last_work = t1;
                nap = 0;
            } else {
                idle += dt;
                // Like Open vSwitch's pmd-sleep-max: after a millisecond without work, nap,
                // longer each time up to the configured maximum, so an idle switch leaves the
                // core to others; the first packets after a pause wait at most one nap.
                if self.sleep_max_us > 0 && t1.wrapping_sub(last_work) > idle_before_nap {
                    nap = (nap * 2).clamp(10, self.sleep_max_us);
                    std::thread::sleep(std::time::Duration::from_micros(nap));
                }
            }
            iterations += 1;
            // Publish every 64 iterations: cheap stores, fresh enough for an operator.
            if iterations & 63 == 0 {
                self.publish(packets, busy, idle, iterations);
            }
        }
        self.publish(packets, busy, idle, iterations);
        tracing::info!("pmd{} stopped", self.id);
    }

    fn publish(&self, packets: u64, busy: u64, idle: u64, iterations: u64) {
        let c = &self.counters;
        c.packets.store(packets, Ordering::Relaxed);
        c.busy_cycles.store(busy, Ordering::Relaxed);
        c.idle_cycles.store(idle, Ordering::Relaxed);
        c.iterations.store(iterations, Ordering::Relaxed);
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::AddPort { port, poll, done } => {
                for s in poll {
                    self.polls.push((port.clone(), s));
                }
                self.fwd.add_port(port);
                let _ = done.send(());
            }
            Command::AddUplink { port, poll, done } => {
                let r = self.fwd.add_uplink(port.clone());
                if r.is_ok() && poll {
                    self.uplink_polls.push(port);
                }
                let _ = done.send(r);
            }
            Command::AddVxlan { port, done } => {
                let _ = done.send(self.fwd.add_vxlan(port));
            }
            Command::DelPort { id, done } => {
                self.polls.retain(|(p, _)| p.id != id);
                self.uplink_polls.retain(|u| u.id != id);
                self.fwd.del_port(id);
                let _ = done.send(());
            }
            Command::PollQueue { port, slot, done } => {
                let known = self
                    .polls
                    .iter()
                    .any(|(p, s)| p.id == port.id && *s == slot);
                if !known && usize::from(slot) < port.slots.len() {
                    self.polls.push((port, slot));
                }
                let _ = done.send(());
            }
            Command::UnpollQueue { id, slot, done } => {
                self.polls.retain(|(p, s)| !(p.id == id && *s == slot));
                let _ = done.send(());
            }
        }
        let mut names: Vec<String> = self
            .polls
            .iter()
            .map(|(p, s)| format!("{} queue {}", p.name(), s))
            .collect();
        for up in &self.uplink_polls {
            names.push(format!("{} rx", up.name));
        }
        *self.rx_queues.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }
}

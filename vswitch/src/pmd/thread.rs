//! A poll thread: its loop (commands between iterations, then one poll of every assigned
//! queue), its counters, and the control plane's [`PmdHandle`] on it.

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
        let mut cmd = make(tx);
        loop {
            match self.commands.push(cmd) {
                Ok(()) => break,
                Err(back) => {
                    cmd = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .map_err(|_| format!("pmd{} did not apply a command within 5 s", self.id))
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
    /// Uplinks this thread receives from (port ids).
    uplink_polls: Vec<u16>,
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
            let mut n = 0usize;
            for (port, slot) in &self.polls {
                n += self.fwd.poll(port, *slot);
            }
            for &u in &self.uplink_polls {
                n += self.fwd.poll_uplink(u);
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
                let id = port.id;
                let r = self.fwd.add_uplink(port);
                if r.is_ok() && poll {
                    self.uplink_polls.push(id);
                }
                let _ = done.send(r);
            }
            Command::AddVxlan { port, done } => {
                let _ = done.send(self.fwd.add_vxlan(port));
            }
            Command::DelPort { id, done } => {
                self.polls.retain(|(p, _)| p.id != id);
                self.uplink_polls.retain(|&u| u != id);
                self.fwd.del_port(id);
                let _ = done.send(());
            }
        }
        let mut names: Vec<String> = self
            .polls
            .iter()
            .map(|(p, s)| format!("{} queue {}", p.name(), s))
            .collect();
        for &u in &self.uplink_polls {
            if let Some(up) = self.fwd.uplink(u) {
                names.push(format!("{} rx", up.name));
            }
        }
        *self.rx_queues.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }
}

//! Poll-mode threads: each polls the guest transmit queues assigned to it, switches every burst
//! (learn the source, look up the destination, flood the rest) and delivers it into the
//! destinations' receive queues.
//!
//! The loop does no allocation, takes no blocking lock and makes no system call per packet:
//! per burst it takes the source queue's and each destination queue's slot with `try_lock`
//! (one uncontended atomic each), copies each frame once from the source guest's buffer into the
//! destination guest's buffer, publishes each used ring once, and notifies each guest at most
//! once — and only when the guest asked for interrupts (a polling guest never costs a syscall).
//! Configuration changes arrive through a lock-free command queue, checked once per iteration.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_queue::ArrayQueue;
use vhost_user::net::MAX_FRAME;
use vhost_user::virtq::{Chain, DeviceQueue, RxTally, BURST};

use crate::eth::{self, EthHeader, Mac, HEADER_PEEK};
use crate::fdb::Fdb;
use crate::port::{bump, Drop, Port, MAX_PORTS};

/// Switch-wide state the poll threads read.
pub struct Shared {
    pub fdb: Fdb,
    /// Seconds since start, advanced by the housekeeping thread; the FDB's clock.
    pub now_secs: AtomicU32,
    pub stop: AtomicBool,
}

/// Commands from the control plane to a poll thread.
pub enum Command {
    /// Make the port known (as a destination) and poll the listed queue slots of it.
    AddPort {
        port: Arc<Port>,
        poll: Vec<u16>,
        done: SyncSender<()>,
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

/// Destination of a frame within a burst.
const FLOOD: u16 = u16::MAX;
const DROPPED: u16 = u16::MAX - 1;
const DONE: u16 = u16::MAX - 2;

struct Pmd {
    id: usize,
    /// Longest nap when idle, in microseconds (0: never sleep).
    sleep_max_us: u64,
    commands: Arc<ArrayQueue<Command>>,
    counters: Arc<PmdCounters>,
    rx_queues: Arc<Mutex<Vec<String>>>,
    /// Queue slots this thread polls: (port, slot index).
    polls: Vec<(Arc<Port>, u16)>,
    fwd: Forwarder,
}

/// The switching state of a poll thread: what it knows of the ports, and the per-burst work.
/// Public so benchmarks can drive it on one thread without the loop around it.
pub struct Forwarder {
    id: usize,
    shared: Arc<Shared>,
    /// Every port, indexed by id (destinations).
    ports: Vec<Option<Arc<Port>>>,
    /// Per-frame destination of the current burst.
    dest: [u16; BURST],
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
        while !self.fwd.shared.stop.load(Ordering::Relaxed) {
            if let Some(cmd) = self.commands.pop() {
                self.apply(cmd);
            }
            let t0 = notify::tsc::now();
            let mut n = 0usize;
            for (port, slot) in &self.polls {
                n += self.fwd.poll(port, *slot);
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
            Command::DelPort { id, done } => {
                self.polls.retain(|(p, _)| p.id != id);
                self.fwd.ports[usize::from(id)] = None;
                let _ = done.send(());
            }
        }
        let names = self
            .polls
            .iter()
            .map(|(p, s)| format!("{} queue {}", p.name(), s))
            .collect();
        *self.rx_queues.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }
}

impl Forwarder {
    /// The forwarder of poll thread `id` (it writes that thread's counter blocks).
    pub fn new(id: usize, shared: Arc<Shared>) -> Forwarder {
        Forwarder {
            id,
            shared,
            ports: (0..MAX_PORTS).map(|_| None).collect(),
            dest: [0; BURST],
        }
    }

    /// Makes a port known as a destination.
    pub fn add_port(&mut self, port: Arc<Port>) {
        let id = usize::from(port.id);
        self.ports[id] = Some(port);
    }

    /// Polls one guest transmit queue: one burst, switched and delivered. Returns the number
    /// of frames taken from the guest.
    #[inline]
    pub fn poll(&mut self, port: &Port, slot: u16) -> usize {
        let s = &port.slots[usize::from(slot)];
        if !s.is_running() {
            return 0;
        }
        let Some(mut guard) = s.try_lock() else {
            return 0;
        };
        let Some(q) = guard.as_mut() else {
            return 0;
        };
        let n = q.pop_tx_burst();
        if n > 0 {
            self.switch_burst(port, q);
        }
        q.complete_burst();
        n
    }

    /// Decides a destination for each frame of the burst, then delivers.
    fn switch_burst(&mut self, port: &Port, q: &DeviceQueue) {
        let hdr = q.features().hdr_len;
        let chains = q.burst();
        let counters = &port.counters[self.id];
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        let fdb = &self.shared.fdb;
        let vlan = port.vlan;
        // Bursts are usually one flow: remember the last source learned and the last lookup.
        // MACs are handled as 48-bit words (byte 0 lowest); 0 is never a valid source or
        // unicast destination, so it means "none yet".
        let mut learned = 0u64;
        let mut looked_up = (0u64, FLOOD);
        let mut rx_bytes = 0u64;
        let mut tagged = 0u64;
        let mut too_big = 0u64;
        let mut same_port = 0u64;
        for (i, c) in chains.iter().enumerate() {
            let len = c.len() - hdr;
            rx_bytes += len as u64;
            let Some(h) = header_of(c, hdr) else {
                self.dest[i] = DROPPED;
                continue;
            };
            if len > MAX_FRAME {
                too_big += 1;
                self.dest[i] = DROPPED;
                continue;
            }
            if vlan != 0 && h.tagged {
                tagged += 1;
                self.dest[i] = DROPPED;
                continue;
            }
            if h.src != learned && h.src & 1 == 0 {
                fdb.learn(vlan, mac_bytes(h.src), port.id, now);
                learned = h.src;
            }
            self.dest[i] = if h.dst & 1 != 0 {
                FLOOD
            } else {
                let out = if looked_up.0 == h.dst {
                    looked_up.1
                } else {
                    let out = fdb.lookup(vlan, mac_bytes(h.dst), now).unwrap_or(FLOOD);
                    looked_up = (h.dst, out);
                    out
                };
                if out == port.id {
                    same_port += 1;
                    DROPPED
                } else if out != FLOOD && self.ports[usize::from(out)].is_none() {
                    // Learned on a port that has gone away since: unknown again.
                    FLOOD
                } else {
                    out
                }
            };
        }
        bump(&counters.rx_packets, chains.len() as u64);
        bump(&counters.rx_bytes, rx_bytes);
        counters.drop(Drop::VlanTagged, tagged);
        counters.drop(Drop::RxTooBig, too_big);
        counters.drop(Drop::SamePort, same_port);

        let n = chains.len();
        let mut flood = [0usize; BURST];
        let mut nflood = 0;
        let mut group = [0usize; BURST];
        for i in 0..n {
            let d = self.dest[i];
            if d == FLOOD {
                flood[nflood] = i;
                nflood += 1;
                continue;
            }
            if d >= DONE {
                continue;
            }
            // Deliver every frame of the burst going to `d` in one pass over its queue.
            let mut k = 0;
            for j in i..n {
                if self.dest[j] == d {
                    group[k] = j;
                    k += 1;
                    self.dest[j] = DONE;
                }
            }
            if let Some(dport) = &self.ports[usize::from(d)] {
                deliver(self.id, dport, group[..k].iter().map(|&j| &chains[j]), hdr);
            }
        }
        if nflood > 0 {
            for p in self.ports.iter().flatten() {
                if p.id != port.id && p.vlan == vlan {
                    deliver(self.id, p, flood[..nflood].iter().map(|&j| &chains[j]), hdr);
                }
            }
        }
    }
}

/// What the switch reads of a frame's header, MACs as 48-bit words (byte 0 lowest, so bit 0 is
/// the group bit).
struct Header {
    dst: u64,
    src: u64,
    tagged: bool,
}

const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// The header of the frame in chain `c` after its `skip`-byte virtio-net header: two word loads
/// when it is contiguous (the usual case), the general parser otherwise.
#[inline(always)]
fn header_of(c: &Chain, skip: usize) -> Option<Header> {
    if let Some((w0, w1)) = c.head_words(skip) {
        let et = u16::from_be(((w1 >> 32) & 0xffff) as u16);
        return Some(Header {
            dst: w0 & MAC_MASK,
            src: ((w0 >> 48) | (w1 << 16)) & MAC_MASK,
            tagged: et == eth::ETHERTYPE_VLAN || et == eth::ETHERTYPE_QINQ,
        });
    }
    let (peek, got) = c.peek::<HEADER_PEEK>(skip);
    let h = EthHeader::parse(&peek[..got]).ok()?;
    Some(Header {
        dst: mac_word(h.dst),
        src: mac_word(h.src),
        tagged: h.is_tagged(),
    })
}

fn mac_word(m: Mac) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

fn mac_bytes(w: u64) -> Mac {
    let b = w.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// How many times a PMD retries a destination queue held by another PMD before dropping: the
/// holder keeps it for one burst at most.
const BUSY_SPINS: u32 = 4096;

/// Enqueues frames into one of the destination port's receive queues, flushes once, notifies
/// at most once.
fn deliver<'a>(pmd: usize, d: &Port, frames: impl ExactSizeIterator<Item = &'a Chain>, hdr: usize) {
    let counters = &d.counters[pmd];
    let pairs = d.queue_pairs().max(1);
    let mut slot = 2 * (pmd % pairs);
    if !d.slots[slot].is_running() {
        slot = 0;
    }
    let s = &d.slots[slot];
    if frames.len() == 0 {
        return;
    }
    if !s.is_running() {
        counters.drop(Drop::TxNotReady, frames.len() as u64);
        return;
    }
    let mut guard = None;
    for _ in 0..BUSY_SPINS {
        if let Some(g) = s.try_lock() {
            guard = Some(g);
            break;
        }
        std::hint::spin_loop();
    }
    let Some(mut guard) = guard else {
        counters.drop(Drop::TxQueueBusy, frames.len() as u64);
        return;
    };
    let Some(q) = guard.as_mut() else {
        counters.drop(Drop::TxNotReady, frames.len() as u64);
        return;
    };
    let mut t = RxTally::default();
    q.enqueue_burst(frames, hdr, &mut t);
    q.flush();
    bump(&counters.tx_packets, t.packets);
    bump(&counters.tx_bytes, t.bytes);
    counters.drop(Drop::TxNoBuffers, t.no_buffers);
    counters.drop(Drop::TxTooBig, t.too_small);
    counters.drop(Drop::TxBadBuffers, t.bad_buffers);
}

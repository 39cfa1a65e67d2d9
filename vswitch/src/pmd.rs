//! Poll-mode threads: each polls the guest transmit queues and uplink receive queues assigned
//! to it, switches every burst (learn the source, look up the destination, flood the rest) and
//! delivers it: into guests' receive queues, into an uplink's device buffers, or encapsulated
//! into a VXLAN tunnel's uplink.
//!
//! A burst is either descriptor chains from a guest ([`ChainBurst`]) or bytes from a device
//! ([`ByteBurst`]: frames in mbufs, or inner frames after decapsulation). The classification
//! and the grouping by destination are one generic function over both ([`Frames`]), compiled
//! once per kind, so the guest-to-guest path runs the same code it always did.
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

use std::net::Ipv4Addr;

use crossbeam_queue::ArrayQueue;
use vhost_user::net::MAX_FRAME;
use vhost_user::virtq::{Chain, DeviceQueue, RxError, RxTally, Source, BURST};

use crate::capture::{self, Tap};
use crate::eth::{self, EthHeader, Mac, HEADER_PEEK};
use crate::fdb::Fdb;
use crate::netdev::{DevIo, TxBufError, TxOutcome};
use crate::port::{bump, CounterBlock, Drop, Port, MAX_PORTS};
use crate::uplink::{UplinkPort, UplinkRole};
use crate::vxlan::{VxlanPort, MAX_REMOTES};
use crate::wire::{self, OuterHeader, Underlay, UnderlayError, VXLAN_MTU_OVERHEAD, VXLAN_OVERHEAD};

/// Switch-wide state the poll threads read.
pub struct Shared {
    pub fdb: Fdb,
    /// Seconds since start, advanced by the housekeeping thread; the FDB's clock.
    pub now_secs: AtomicU32,
    pub stop: AtomicBool,
}

impl Shared {
    /// State for poll threads with an FDB of `fdb_capacity` entries aging after `aging_secs`,
    /// its clock at 0, not stopping.
    pub fn new(fdb_capacity: usize, aging_secs: u32) -> Shared {
        Shared {
            fdb: Fdb::new(fdb_capacity, aging_secs),
            now_secs: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

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
    /// Uplinks this thread receives from (port ids).
    uplink_polls: Vec<u16>,
    fwd: Forwarder,
}

/// A port as a destination.
pub enum Dest {
    Vhost(Arc<Port>),
    Uplink(Arc<UplinkPort>),
    Vxlan(Arc<VxlanPort>),
}

impl Dest {
    #[inline]
    fn id(&self) -> u16 {
        match self {
            Dest::Vhost(p) => p.id,
            Dest::Uplink(u) => u.id,
            Dest::Vxlan(t) => t.id,
        }
    }

    #[inline]
    fn vlan(&self) -> u16 {
        match self {
            Dest::Vhost(p) => p.vlan,
            Dest::Uplink(u) => u.vlan,
            Dest::Vxlan(t) => t.vlan,
        }
    }

    /// Whether the port is a member of the switch (an underlay uplink is not).
    #[inline]
    fn is_member(&self) -> bool {
        !matches!(self, Dest::Uplink(u) if u.role == UplinkRole::Underlay)
    }

    #[inline]
    fn is_tunnel(&self) -> bool {
        matches!(self, Dest::Vxlan(_))
    }

    #[inline]
    fn tap(&self) -> &Tap {
        match self {
            Dest::Vhost(p) => &p.tap,
            Dest::Uplink(u) => &u.tap,
            Dest::Vxlan(t) => &t.tap,
        }
    }
}

/// A poll thread's own state for one uplink: its I/O handle on the device and the tunnels the
/// uplink carries.
struct UplinkIo {
    port: Arc<UplinkPort>,
    io: Box<dyn DevIo>,
    mac: Mac,
    /// Largest frame the device carries (IP MTU + Ethernet header).
    max_frame: usize,
    /// IP MTU.
    mtu: usize,
    tunnels: Vec<Arc<VxlanPort>>,
    /// The second of the last ARP round for unresolved remotes (+1; 0: never).
    arp_tick: u32,
}

/// The switching state of a poll thread: what it knows of the ports, and the per-burst work.
/// Public so benchmarks can drive it on one thread without the loop around it.
pub struct Forwarder {
    id: usize,
    shared: Arc<Shared>,
    /// Every port, indexed by id (destinations).
    ports: Vec<Option<Dest>>,
    /// This thread's I/O on each uplink, indexed by port id.
    uplinks: Vec<Option<UplinkIo>>,
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
            if let Some(Some(up)) = self.fwd.uplinks.get(usize::from(u)) {
                names.push(format!("{} rx", up.port.name));
            }
        }
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
            uplinks: (0..MAX_PORTS).map(|_| None).collect(),
            dest: [0; BURST],
        }
    }

    /// Makes a port known as a destination.
    pub fn add_port(&mut self, port: Arc<Port>) {
        let id = usize::from(port.id);
        self.ports[id] = Some(Dest::Vhost(port));
    }

    /// Makes an uplink known: opens this thread's I/O on its device (call it on the thread that
    /// will use the forwarder: a DPDK device registers the thread).
    pub fn add_uplink(&mut self, port: Arc<UplinkPort>) -> Result<(), String> {
        let id = usize::from(port.id);
        let io = port
            .dev
            .io(self.id)
            .map_err(|e| format!("uplink {}: {e}", port.name))?;
        let mtu = port.dev.mtu();
        self.uplinks[id] = Some(UplinkIo {
            mac: port.dev.mac(),
            max_frame: mtu + eth::HEADER_LEN,
            mtu,
            io,
            tunnels: Vec::new(),
            arp_tick: 0,
            port: port.clone(),
        });
        self.ports[id] = Some(Dest::Uplink(port));
        Ok(())
    }

    /// Makes a tunnel known; its uplink must be known already.
    pub fn add_vxlan(&mut self, port: Arc<VxlanPort>) -> Result<(), String> {
        let Some(Some(up)) = self.uplinks.get_mut(usize::from(port.uplink)) else {
            return Err(format!(
                "tunnel {}: its uplink {} is not known to pmd{}",
                port.name, port.uplink_name, self.id
            ));
        };
        up.tunnels.push(port.clone());
        let id = usize::from(port.id);
        self.ports[id] = Some(Dest::Vxlan(port));
        Ok(())
    }

    /// Forgets a port of any kind (and, for an uplink, this thread's I/O on it).
    pub fn del_port(&mut self, id: u16) {
        let i = usize::from(id);
        if let Some(Dest::Vxlan(t)) = &self.ports[i] {
            if let Some(Some(up)) = self.uplinks.get_mut(usize::from(t.uplink)) {
                up.tunnels.retain(|x| x.id != id);
            }
        }
        self.ports[i] = None;
        self.uplinks[i] = None;
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
            let src = Src {
                id: port.id,
                vlan: port.vlan,
                counters: &port.counters[self.id],
                tunnel: false,
                tap: &port.tap,
            };
            let frames = ChainBurst {
                chains: q.burst(),
                hdr: q.features().hdr_len,
            };
            self.switch_burst(&src, frames);
        }
        q.complete_burst();
        n
    }

    /// Polls one uplink's receive queue: one burst, switched (bridged) or decapsulated and
    /// switched (underlay), delivered, and the device's buffers given back. Returns the number
    /// of frames taken from the device.
    pub fn poll_uplink(&mut self, id: u16) -> usize {
        // Taken out for the burst, so its frames can be read while other uplinks are written.
        let Some(mut up) = self.uplinks.get_mut(usize::from(id)).and_then(Option::take) else {
            return 0;
        };
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        let (n, dropped) = up.io.rx();
        let mut replies = ArpReplies::default();
        if n > 0 || dropped > 0 {
            let c = &up.port.counters[self.id];
            // Frames the device could not hand over count as received and dropped here; the
            // others are counted by the switching pass (bridged) or right here (underlay,
            // whose switching pass counts the tunnel's).
            bump(&c.rx_packets, dropped);
            c.drop(Drop::RxTooBig, dropped);
            match up.port.role {
                UplinkRole::Bridged => {
                    let mut b = ByteBurst::new();
                    for i in 0..n {
                        b.push(up.io.frame(i));
                    }
                    let src = Src {
                        id: up.port.id,
                        vlan: up.port.vlan,
                        counters: c,
                        tunnel: false,
                        tap: &up.port.tap,
                    };
                    self.switch_burst(&src, &b);
                }
                UplinkRole::Underlay => {
                    let mut bytes = 0u64;
                    for i in 0..n {
                        bytes += up.io.frame(i).len() as u64;
                    }
                    bump(&c.rx_packets, n as u64);
                    bump(&c.rx_bytes, bytes);
                    self.decap_burst(&up, n, now, &mut replies);
                }
            }
            up.io.rx_release();
        }
        if up.arp_tick != now.wrapping_add(1) && !up.tunnels.is_empty() {
            up.arp_tick = now.wrapping_add(1);
            resolve_remotes(&up, now, &mut replies);
        }
        if replies.n > 0 {
            send_arp(self.id, &mut up, &replies);
        }
        self.uplinks[usize::from(id)] = Some(up);
        n
    }

    /// Sorts an underlay burst: VXLAN for one of the uplink's tunnels is decapsulated and
    /// switched as that tunnel's frames, ARP for a VTEP address is answered (after the burst),
    /// anything else is dropped and counted on the uplink.
    fn decap_burst(&mut self, up: &UplinkIo, n: usize, now: u32, replies: &mut ArpReplies) {
        let c = &up.port.counters[self.id];
        let mut drops = [0u64; Drop::COUNT];
        // Per frame: the tunnel (index in up.tunnels, NONE if not VXLAN for us), the remote,
        // the inner frame's range.
        const NONE: u8 = u8::MAX;
        let mut tunnel = [NONE; BURST];
        let mut remote = [0u8; BURST];
        let mut inner = [(0usize, 0usize); BURST];
        let mut seen = 0u64;
        for i in 0..n {
            let f = up.io.frame(i);
            match wire::parse_underlay(f) {
                Ok(Underlay::Vxlan(v)) => {
                    let Some(k) = up
                        .tunnels
                        .iter()
                        .position(|t| t.vni == v.vni && t.local == v.dst_ip)
                    else {
                        let ours = up.tunnels.iter().any(|t| t.local == v.dst_ip);
                        let why = if ours {
                            Drop::RxUnknownVni
                        } else {
                            Drop::RxNotVxlan
                        };
                        drops[why as usize] += 1;
                        continue;
                    };
                    let t = &up.tunnels[k];
                    let Some(r) = t.remote_index(v.src_ip) else {
                        drops[Drop::RxUnknownVtep as usize] += 1;
                        continue;
                    };
                    t.remotes[r].learn_mac(v.outer_src_mac);
                    // k < tunnels on one uplink, r < MAX_REMOTES: both fit a byte.
                    tunnel[i] = u8::try_from(k).unwrap_or(NONE);
                    remote[i] = u8::try_from(r).unwrap_or(0);
                    inner[i] = (v.inner_start, v.inner_end);
                    seen |= 1u64 << k.min(63);
                }
                Ok(Underlay::Arp(a)) => handle_arp(up, &a, replies),
                Err(e) => {
                    let why = match e {
                        UnderlayError::Runt => Drop::RxRunt,
                        UnderlayError::NotVxlan => Drop::RxNotVxlan,
                        UnderlayError::Truncated => Drop::RxTruncatedOuter,
                        UnderlayError::BadIpv4 => Drop::RxBadOuterIpv4,
                        UnderlayError::BadVxlan => Drop::RxBadVxlan,
                        UnderlayError::InnerRunt => Drop::RxInnerRunt,
                        UnderlayError::BadArp => Drop::RxBadArp,
                    };
                    drops[why as usize] += 1;
                }
            }
        }
        for d in Drop::UNDERLAY_PORT {
            c.drop(d, drops[d as usize]);
        }
        // One switching pass per tunnel that had frames (usually one).
        for (k, t) in up.tunnels.iter().enumerate() {
            if seen & (1u64 << k.min(63)) == 0 {
                continue;
            }
            let mut b = ByteBurst::new();
            let mut learned = (0u64, u8::MAX);
            for i in 0..n {
                if usize::from(tunnel[i]) != k {
                    continue;
                }
                let (s, e) = inner[i];
                let f = &up.io.frame(i)[s..e];
                // Which remote VTEP the inner source lives behind (once per run of one MAC).
                let src = mac_word([f[6], f[7], f[8], f[9], f[10], f[11]]);
                if (src, remote[i]) != learned && src & 1 == 0 {
                    t.vteps.learn(0, mac_bytes(src), u16::from(remote[i]), now);
                    learned = (src, remote[i]);
                }
                b.push(f);
            }
            let src = Src {
                id: t.id,
                vlan: t.vlan,
                counters: &t.counters[self.id],
                tunnel: true,
                tap: &t.tap,
            };
            self.switch_burst(&src, &b);
        }
    }

    /// Decides a destination for each frame of the burst, then delivers.
    #[inline]
    fn switch_burst<F: Frames>(&mut self, src: &Src, frames: F) {
        let n = frames.count();
        if src.tap.wants(capture::RX) {
            tap_burst(src.tap, frames, 0..n);
        }
        let counters = src.counters;
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        let fdb = &self.shared.fdb;
        let vlan = src.vlan;
        // Bursts are usually one flow: remember the last source learned and the last lookup.
        // MACs are handled as 48-bit words (byte 0 lowest); 0 is never a valid source or
        // unicast destination, so it means "none yet".
        let mut learned = 0u64;
        let mut looked_up = (0u64, FLOOD);
        let mut rx_bytes = 0u64;
        let mut tagged = 0u64;
        let mut too_big = 0u64;
        let mut same_port = 0u64;
        let mut runts = 0u64;
        let mut split = 0u64;
        for (i, (len, h)) in frames.heads().enumerate() {
            rx_bytes += len as u64;
            let Some(h) = h else {
                runts += 1;
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
                fdb.learn(vlan, mac_bytes(h.src), src.id, now);
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
                if out == src.id {
                    same_port += 1;
                    DROPPED
                } else if out == FLOOD {
                    FLOOD
                } else {
                    match &self.ports[usize::from(out)] {
                        // Learned on a port that has gone away since: unknown again.
                        None => FLOOD,
                        Some(d) if src.tunnel && d.is_tunnel() => {
                            split += 1;
                            DROPPED
                        }
                        Some(_) => out,
                    }
                }
            };
        }
        bump(&counters.rx_packets, n as u64);
        bump(&counters.rx_bytes, rx_bytes);
        counters.drop(Drop::VlanTagged, tagged);
        counters.drop(Drop::RxTooBig, too_big);
        counters.drop(Drop::SamePort, same_port);
        counters.drop(Drop::RxRunt, runts);
        counters.drop(Drop::TunnelToTunnel, split);

        let Forwarder {
            id,
            ports,
            uplinks,
            dest,
            ..
        } = self;
        let mut flood = [0usize; BURST];
        let mut nflood = 0;
        let mut group = [0usize; BURST];
        for i in 0..n {
            let d = dest[i];
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
            for (j, dj) in dest.iter_mut().enumerate().take(n).skip(i) {
                if *dj == d {
                    group[k] = j;
                    k += 1;
                    *dj = DONE;
                }
            }
            if let Some(dport) = &ports[usize::from(d)] {
                deliver(*id, dport, uplinks, frames, &group[..k], now);
            }
        }
        if nflood > 0 {
            for p in ports.iter().flatten() {
                if p.id() != src.id
                    && p.vlan() == vlan
                    && p.is_member()
                    && !(src.tunnel && p.is_tunnel())
                {
                    deliver(*id, p, uplinks, frames, &flood[..nflood], now);
                }
            }
        }
    }
}

/// The port a burst came from.
struct Src<'a> {
    id: u16,
    vlan: u16,
    counters: &'a CounterBlock,
    /// A tunnel: its frames never go into another tunnel.
    tunnel: bool,
    tap: &'a Tap,
}

/// A burst of frames as the switch classifies and delivers it. Implementors are small `Copy`
/// handles passed by value, so that their fields live in registers through the per-frame loop.
trait Frames: Copy {
    fn count(self) -> usize;
    /// Length and header of each frame, in order: what classification reads, as one pass.
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)>;
    /// Length of frame `i` (without any virtio-net header).
    fn frame_len(self, i: usize) -> usize;
    /// The switch's view of frame `i`'s header; `None` when it is shorter than one.
    fn header(self, i: usize) -> Option<Header>;
    /// Copies the first `out.len()` bytes of frame `i` into `out` (at most
    /// [`Frames::frame_len`]; fewer for a capture's snaplen).
    fn copy_to(self, i: usize, out: &mut [u8]);
    /// Places frames `idx` into a guest's receive queue (not flushed).
    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally);
}

/// A guest's transmit burst: chains, each behind a virtio-net header of `hdr` bytes.
#[derive(Clone, Copy)]
struct ChainBurst<'a> {
    chains: &'a [Chain],
    hdr: usize,
}

impl Frames for ChainBurst<'_> {
    #[inline(always)]
    fn count(self) -> usize {
        self.chains.len()
    }

    #[inline(always)]
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)> {
        let hdr = self.hdr;
        // The queue refuses chains shorter than the header and an Ethernet header.
        self.chains
            .iter()
            .map(move |c| (c.len() - hdr, header_of(c, hdr)))
    }

    #[inline(always)]
    fn frame_len(self, i: usize) -> usize {
        // The queue refuses chains shorter than the header and an Ethernet header.
        self.chains[i].len() - self.hdr
    }

    #[inline(always)]
    fn header(self, i: usize) -> Option<Header> {
        header_of(&self.chains[i], self.hdr)
    }

    #[inline]
    fn copy_to(self, i: usize, out: &mut [u8]) {
        self.chains[i].read(self.hdr, out);
    }

    #[inline]
    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally) {
        q.enqueue_burst(idx.iter().map(|&j| &self.chains[j]), self.hdr, t);
    }
}

/// Frames as bytes in our own (device) memory.
struct ByteBurst<'a> {
    frames: [&'a [u8]; BURST],
    n: usize,
}

impl<'a> ByteBurst<'a> {
    fn new() -> Self {
        ByteBurst {
            frames: [&[]; BURST],
            n: 0,
        }
    }

    fn push(&mut self, f: &'a [u8]) {
        if self.n < BURST {
            self.frames[self.n] = f;
            self.n += 1;
        }
    }
}

impl Frames for &ByteBurst<'_> {
    #[inline(always)]
    fn count(self) -> usize {
        self.n
    }

    #[inline(always)]
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)> {
        self.frames[..self.n]
            .iter()
            .map(|f| (f.len(), header_of_bytes(f)))
    }

    #[inline(always)]
    fn frame_len(self, i: usize) -> usize {
        self.frames[i].len()
    }

    #[inline(always)]
    fn header(self, i: usize) -> Option<Header> {
        header_of_bytes(self.frames[i])
    }

    #[inline]
    fn copy_to(self, i: usize, out: &mut [u8]) {
        let f = self.frames[i];
        let n = f.len().min(out.len());
        out[..n].copy_from_slice(&f[..n]);
    }

    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally) {
        for (pos, &j) in idx.iter().enumerate() {
            let f = self.frames[j];
            match q.enqueue(Source::Bytes(f)) {
                Ok(()) => {
                    t.packets += 1;
                    t.bytes += f.len() as u64;
                }
                Err(RxError::NoBuffers) | Err(RxError::Broken) => {
                    // Out of buffers: the rest would find none either.
                    t.no_buffers += (idx.len() - pos) as u64;
                    break;
                }
                Err(RxError::BufferTooSmall) => t.too_small += 1,
                Err(RxError::BadChain) => t.bad_buffers += 1,
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

/// The header from the frame's first 16 bytes as two little-endian words.
#[inline(always)]
fn header_of_words(w0: u64, w1: u64) -> Header {
    let et = u16::from_be(((w1 >> 32) & 0xffff) as u16);
    Header {
        dst: w0 & MAC_MASK,
        src: ((w0 >> 48) | (w1 << 16)) & MAC_MASK,
        tagged: et == eth::ETHERTYPE_VLAN || et == eth::ETHERTYPE_QINQ,
    }
}

/// The header of the frame in chain `c` after its `skip`-byte virtio-net header: two word loads
/// when it is contiguous (the usual case), the general parser otherwise.
#[inline(always)]
fn header_of(c: &Chain, skip: usize) -> Option<Header> {
    if let Some((w0, w1)) = c.head_words(skip) {
        return Some(header_of_words(w0, w1));
    }
    let (peek, got) = c.peek::<HEADER_PEEK>(skip);
    let h = EthHeader::parse(&peek[..got]).ok()?;
    Some(Header {
        dst: mac_word(h.dst),
        src: mac_word(h.src),
        tagged: h.is_tagged(),
    })
}

/// The header of a frame in our memory.
#[inline(always)]
fn header_of_bytes(f: &[u8]) -> Option<Header> {
    if let Some(b) = f.get(..16) {
        let w = |o: usize| {
            u64::from_le_bytes([
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
                b[o + 4],
                b[o + 5],
                b[o + 6],
                b[o + 7],
            ])
        };
        return Some(header_of_words(w(0), w(8)));
    }
    let h = EthHeader::parse(f).ok()?;
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

/// Copies frames `idx` of a burst into an attached capture. Out of line: the loop pays for
/// it only while a capture runs.
#[cold]
#[inline(never)]
fn tap_burst<F: Frames>(tap: &Tap, frames: F, idx: impl Iterator<Item = usize>) {
    let Some(mut w) = tap.writer() else {
        tap.drop_frames(idx.count() as u64);
        return;
    };
    for i in idx {
        w.push(frames.frame_len(i), |out| frames.copy_to(i, out));
    }
}

/// How many times a PMD retries a destination queue held by another PMD before dropping: the
/// holder keeps it for one burst at most.
const BUSY_SPINS: u32 = 4096;

/// Delivers frames `idx` of a burst to one destination port.
#[inline(always)]
fn deliver<F: Frames>(
    pmd: usize,
    d: &Dest,
    uplinks: &mut [Option<UplinkIo>],
    frames: F,
    idx: &[usize],
    now: u32,
) {
    if d.tap().wants(capture::TX) {
        tap_burst(d.tap(), frames, idx.iter().copied());
    }
    match d {
        Dest::Vhost(p) => deliver_vhost(pmd, p, frames, idx),
        Dest::Uplink(u) => match uplinks[usize::from(u.id)].as_mut() {
            Some(up) => deliver_uplink(pmd, up, frames, idx),
            None => u.counters[pmd].drop(Drop::TxNotReady, idx.len() as u64),
        },
        Dest::Vxlan(t) => match uplinks[usize::from(t.uplink)].as_mut() {
            Some(up) => deliver_vxlan(pmd, t, up, frames, idx, now),
            None => t.counters[pmd].drop(Drop::TxNotReady, idx.len() as u64),
        },
    }
}

/// Enqueues frames into one of the destination port's receive queues, flushes once, notifies
/// at most once.
#[inline(always)]
fn deliver_vhost<F: Frames>(pmd: usize, d: &Port, frames: F, idx: &[usize]) {
    let counters = &d.counters[pmd];
    let pairs = d.queue_pairs().max(1);
    let mut slot = 2 * (pmd % pairs);
    if !d.slots[slot].is_running() {
        slot = 0;
    }
    let s = &d.slots[slot];
    if idx.is_empty() {
        return;
    }
    if !s.is_running() {
        counters.drop(Drop::TxNotReady, idx.len() as u64);
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
        counters.drop(Drop::TxQueueBusy, idx.len() as u64);
        return;
    };
    let Some(q) = guard.as_mut() else {
        counters.drop(Drop::TxNotReady, idx.len() as u64);
        return;
    };
    let mut t = RxTally::default();
    frames.to_vhost(q, idx, &mut t);
    q.flush();
    bump(&counters.tx_packets, t.packets);
    bump(&counters.tx_bytes, t.bytes);
    counters.drop(Drop::TxNoBuffers, t.no_buffers);
    counters.drop(Drop::TxTooBig, t.too_small);
    counters.drop(Drop::TxBadBuffers, t.bad_buffers);
}

/// Copies frames into the uplink device's buffers and sends them as one burst.
fn deliver_uplink<F: Frames>(pmd: usize, up: &mut UplinkIo, frames: F, idx: &[usize]) {
    let mut too_big = 0u64;
    let mut no_bufs = 0u64;
    for (pos, &j) in idx.iter().enumerate() {
        let len = frames.frame_len(j);
        if len > up.max_frame {
            too_big += 1;
            continue;
        }
        match up.io.tx_buf(len) {
            Ok(b) => frames.copy_to(j, b),
            Err(TxBufError::TooBig) => too_big += 1,
            Err(TxBufError::NoBuffers) => {
                no_bufs += (idx.len() - pos) as u64;
                break;
            }
        }
    }
    let o = up.io.tx_flush();
    let c = &up.port.counters[pmd];
    count_tx(c, &o, 0);
    c.drop(Drop::TxExceedsMtu, too_big);
    c.drop(Drop::TxNoDeviceBuffers, no_bufs);
}

fn count_tx(c: &CounterBlock, o: &TxOutcome, overhead: u64) {
    bump(&c.tx_packets, o.sent);
    bump(&c.tx_bytes, o.sent_bytes.saturating_sub(overhead * o.sent));
    c.drop(Drop::TxDeviceFull, o.full);
    c.drop(Drop::TxQueueBusy, o.busy);
}

/// Encapsulates frames for the tunnel's remote VTEPs (the one an inner MAC was learned behind,
/// or all of them) and sends them through the uplink as one burst.
fn deliver_vxlan<F: Frames>(
    pmd: usize,
    t: &VxlanPort,
    up: &mut UplinkIo,
    frames: F,
    idx: &[usize],
    now: u32,
) {
    let c = &t.counters[pmd];
    let max_inner = up.mtu.saturating_sub(VXLAN_MTU_OVERHEAD);
    // The outer headers toward each remote whose MAC is known, built once per burst.
    let mut outer: [Option<OuterHeader>; MAX_REMOTES] = [None; MAX_REMOTES];
    for (o, r) in outer.iter_mut().zip(t.remotes.iter()) {
        *o = r
            .mac()
            .map(|mac| OuterHeader::new(up.mac, mac, t.local, r.ip, t.vni));
    }
    let nremotes = t.remotes.len();
    let mut too_big = 0u64;
    let mut no_bufs = 0u64;
    let mut unresolved = 0u64;
    let mut arp = ArpReplies::default();
    let mut looked_up = (0u64, u16::MAX);
    for &j in idx {
        let len = frames.frame_len(j);
        if len > max_inner {
            too_big += 1;
            continue;
        }
        let Some(h) = frames.header(j) else { continue };
        let target = if h.dst & 1 != 0 {
            None
        } else if looked_up.0 == h.dst {
            Some(looked_up.1)
        } else {
            let r = t.vteps.lookup(0, mac_bytes(h.dst), now);
            looked_up = (h.dst, r.unwrap_or(u16::MAX));
            r
        };
        let (first, last) = match target {
            Some(r) if usize::from(r) < nremotes => (usize::from(r), usize::from(r) + 1),
            _ => (0, nremotes),
        };
        for (r, o) in outer.iter().enumerate().take(last).skip(first) {
            let Some(o) = o else {
                unresolved += 1;
                if t.remotes[r].arp_due(now) {
                    arp.push(ArpTask::Request {
                        local: t.local,
                        target: t.remotes[r].ip,
                    });
                }
                continue;
            };
            match up.io.tx_buf(VXLAN_OVERHEAD + len) {
                Ok(b) => {
                    let (hdr, inner) = b.split_at_mut(VXLAN_OVERHEAD);
                    frames.copy_to(j, inner);
                    o.write(hdr, len, wire::entropy_port(inner));
                }
                Err(TxBufError::TooBig) => too_big += 1,
                Err(TxBufError::NoBuffers) => no_bufs += 1,
            }
        }
    }
    let o = up.io.tx_flush();
    count_tx(c, &o, VXLAN_OVERHEAD as u64);
    c.drop(Drop::TxExceedsTunnelMtu, too_big);
    c.drop(Drop::TxNoDeviceBuffers, no_bufs);
    c.drop(Drop::TxVtepUnresolved, unresolved);
    if arp.n > 0 {
        send_arp(pmd, up, &arp);
    }
}

/// An ARP packet to send after a burst.
#[derive(Clone, Copy)]
enum ArpTask {
    /// Who has `target`? Tell `local`.
    Request { local: Ipv4Addr, target: Ipv4Addr },
    /// `local` is at our MAC, to the asker.
    Reply {
        local: Ipv4Addr,
        asker_mac: Mac,
        asker_ip: Ipv4Addr,
    },
}

/// ARP packets to send, at most a burst's worth.
struct ArpReplies {
    tasks: [ArpTask; BURST],
    n: usize,
}

impl Default for ArpReplies {
    fn default() -> Self {
        ArpReplies {
            tasks: [ArpTask::Request {
                local: Ipv4Addr::UNSPECIFIED,
                target: Ipv4Addr::UNSPECIFIED,
            }; BURST],
            n: 0,
        }
    }
}

impl ArpReplies {
    fn push(&mut self, t: ArpTask) {
        if self.n < BURST {
            self.tasks[self.n] = t;
            self.n += 1;
        }
    }
}

/// Learns a remote VTEP's MAC from its ARP, and answers requests for our VTEP addresses.
fn handle_arp(up: &UplinkIo, a: &wire::ArpRx, out: &mut ArpReplies) {
    for t in &up.tunnels {
        if let Some(r) = t.remote_index(a.spa) {
            t.remotes[r].learn_mac(a.sha);
        }
    }
    if a.oper == wire::arp::REQUEST && up.tunnels.iter().any(|t| t.local == a.tpa) {
        out.push(ArpTask::Reply {
            local: a.tpa,
            asker_mac: a.sha,
            asker_ip: a.spa,
        });
    }
}

/// Once a second: an ARP request for every remote VTEP whose MAC is not known yet.
fn resolve_remotes(up: &UplinkIo, now: u32, out: &mut ArpReplies) {
    for t in &up.tunnels {
        for r in t.remotes.iter() {
            if r.mac().is_none() && r.arp_due(now) {
                out.push(ArpTask::Request {
                    local: t.local,
                    target: r.ip,
                });
            }
        }
    }
}

fn send_arp(pmd: usize, up: &mut UplinkIo, tasks: &ArpReplies) {
    let mut no_bufs = 0;
    for task in &tasks.tasks[..tasks.n] {
        let Ok(b) = up.io.tx_buf(wire::MIN_ETH_FRAME) else {
            no_bufs += 1;
            continue;
        };
        match *task {
            ArpTask::Request { local, target } => {
                wire::write_arp(b, wire::arp::REQUEST, up.mac, local, [0; 6], target)
            }
            ArpTask::Reply {
                local,
                asker_mac,
                asker_ip,
            } => wire::write_arp(b, wire::arp::REPLY, up.mac, local, asker_mac, asker_ip),
        };
    }
    let o = up.io.tx_flush();
    let c = &up.port.counters[pmd];
    count_tx(c, &o, 0);
    c.drop(Drop::TxNoDeviceBuffers, no_bufs);
}

//! The switching state of a poll thread ([`Forwarder`]): the ports it knows, receiving a burst
//! from a guest queue or an uplink (decapsulating an underlay's VXLAN), classifying each frame
//! (learn the source, look up the destination) and handing each destination its frames.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use vhost_user::net::MAX_FRAME;
use vhost_user::virtq::BURST;

use super::arp::{handle_arp, resolve_remotes, send_arp, ArpReplies};
use super::deliver::{deliver, tap_burst};
use super::dest::{Dest, UplinkIo};
use super::frames::{mac_bytes, mac_word, ByteBurst, ChainBurst, Frames};
use crate::announce::rarp_frame;
use crate::capture::{self, Tap};
use crate::eth;
use crate::fdb::Fdb;
use crate::port::{bump, CounterBlock, Drop, Port, MAX_PORTS};
use crate::uplink::{UplinkPort, UplinkRole};
use crate::vxlan::VxlanPort;
use crate::wire::{self, Underlay, UnderlayError};

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

/// Destination of a frame within a burst.
const FLOOD: u16 = u16::MAX;
const DROPPED: u16 = u16::MAX - 1;
const DONE: u16 = u16::MAX - 2;

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

    /// Whether the switch is stopping (the loop's exit condition).
    pub(super) fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
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
        if let Some(mac) = port.announce.take() {
            self.announce(port, mac);
        }
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
                keep_local: false,
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

    /// Switches a RARP from `mac` as if the guest had sent it through `port` (a guest that
    /// has just migrated here): the FDB learns where the MAC is now, and the segment hears it.
    #[cold]
    #[inline(never)]
    fn announce(&mut self, port: &Port, mac: [u8; 6]) {
        let f = rarp_frame(mac);
        let mut b = ByteBurst::new();
        b.push(&f);
        let src = Src {
            id: port.id,
            vlan: port.vlan,
            counters: &port.counters[self.id],
            tunnel: false,
            keep_local: false,
            tap: &port.tap,
        };
        self.switch_burst(&src, &b);
        port.announce.sent.fetch_add(1, Ordering::Relaxed);
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
                        keep_local: false,
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
                if !t.evpn && (src, remote[i]) != learned && src & 1 == 0 {
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
                keep_local: t.evpn,
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
                let mac = mac_bytes(h.src);
                if !src.keep_local || fdb.lookup(vlan, mac, now).is_none_or(|p| p == src.id) {
                    fdb.learn(vlan, mac, src.id, now);
                }
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
    /// An EVPN tunnel: a source MAC live on another port stays there. Moves onto the tunnel
    /// are the control plane's (a route with a higher MAC mobility sequence, installed by
    /// zebra), not the data plane's, as with a Linux vxlan device set `nolearning`:
    /// otherwise a migrated guest's first flooded frame makes the old host withdraw its route
    /// before the new host outbids it.
    keep_local: bool,
    tap: &'a Tap,
}

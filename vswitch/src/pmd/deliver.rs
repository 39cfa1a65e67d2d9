//! Delivering frames of a burst to one destination: a guest's receive queue, an uplink's
//! device, or a tunnel (encapsulated, through its uplink). Also the capture of a burst.

use vhost_user::virtq::RxTally;

use super::arp::{send_arp, ArpReplies, ArpTask};
use super::dest::{count_tx, Dest, UplinkIo};
use super::frames::{mac_bytes, Frames};
use crate::capture::{self, Tap};
use crate::netdev::TxBufError;
use crate::port::{bump, Drop, Port};
use crate::vxlan::{VxlanPort, MAX_REMOTES};
use crate::wire::{self, OuterHeader, VXLAN_MTU_OVERHEAD, VXLAN_OVERHEAD};

/// Copies frames `idx` of a burst into an attached capture. Out of line: the loop pays for
/// it only while a capture runs.
#[cold]
#[inline(never)]
pub(super) fn tap_burst<F: Frames>(tap: &Tap, frames: F, idx: impl Iterator<Item = usize>) {
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
pub(super) fn deliver<F: Frames>(
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
    // Per burst: which slots hold a remote (and which of those flood), and the outer headers
    // toward each remote whose MAC is known. An EVPN slot may change between bursts, never
    // inside one.
    let mut outer: [Option<OuterHeader>; MAX_REMOTES] = [None; MAX_REMOTES];
    let mut used = [false; MAX_REMOTES];
    let mut flood = [false; MAX_REMOTES];
    for (i, r) in t.remotes.iter().enumerate().take(MAX_REMOTES) {
        let Some(ip) = r.addr() else { continue };
        used[i] = true;
        flood[i] = r.floods();
        outer[i] = r
            .mac()
            .map(|mac| OuterHeader::new(up.mac, mac, t.local, ip, t.vni));
    }
    let nremotes = t.remotes.len().min(MAX_REMOTES);
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
        let (first, last, all) = match target {
            Some(r) if usize::from(r) < nremotes && used[usize::from(r)] => {
                (usize::from(r), usize::from(r) + 1, false)
            }
            _ => (0, nremotes, true),
        };
        for (r, o) in outer.iter().enumerate().take(last).skip(first) {
            if all && !flood[r] {
                continue;
            }
            let Some(o) = o else {
                unresolved += 1;
                if let Some(ip) = t.remotes[r].addr() {
                    if t.remotes[r].arp_due(now) {
                        arp.push(ArpTask::Request {
                            local: t.local,
                            target: ip,
                        });
                    }
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

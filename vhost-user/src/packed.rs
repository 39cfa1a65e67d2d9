//! The packed ring layout of [`crate::virtq::DeviceQueue`] (virtio 1.1+, "Packed Virtqueues"):
//! one descriptor ring the driver makes descriptors available in and the device writes them
//! back used in, with a wrap counter on each side, and two event suppression structures.
//!
//! Shared with the split layout: chains ([`Chain`], [`append_buffer`], [`Writer`]), their
//! validation and counters, the dirty log, the burst shape. Particular here, with its fate:
//! - a head whose avail/used bits do not say "available" for our lap (both set, both clear, or
//!   the other lap's) is not available: we wait, as for an empty split ring;
//! - a descriptor inside a chain not marked available for its lap (a lying wrap counter), or a
//!   chain that runs past the queue size: the chain's extent is unknown, so nothing after it
//!   can be found either: the queue is broken (counted, logged) until the frontend resets it;
//! - a buffer id not below the queue size: the chain is skipped and counted, never returned
//!   (the driver has no such id to take back);
//! - every other bad chain (unmapped, wrong direction, indirect misuse, too long, too short)
//!   goes back used with length 0 and is counted, as in a split ring.
//!
//! Used descriptors become visible to the driver the moment their flags are written, so they are
//! kept in a shadow list and written at the flush, the first of a flush last (a multi-buffer
//! packet is seen whole or not at all). With IN_ORDER, a transmit burst goes back as one used
//! descriptor carrying the last buffer's id.
#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::chain::{log_filled, write_packet, Chain, ChainError, Source, MAX_CHAIN_BYTES};
use crate::dirty_log::QueueLog;
use crate::memory::GuestMemory;
use crate::packed_ring::{
    advance, check_packed_layout, packed_desc_ring_bytes, used_flags, RawPackedRing,
    EVENT_AREA_BYTES, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
};
use crate::ring::{need_event, prefetch, DESC_SIZE, VRING_DESC_F_WRITE};
use crate::virtq::{
    QueueCounters, QueueFeatures, RxError, RxTally, BURST, ETH_VLAN_HLEN, MAX_MRG_CHAINS,
};
use walk::{PackedWalker, Take};

/// Used descriptors a queue holds back between flushes before it writes them out anyway: a
/// burst of the largest merged packets.
const SHADOW: usize = BURST * MAX_MRG_CHAINS;

/// Where a packed queue's three areas are, in the frontend's virtual address space
/// (`SET_VRING_ADDR`: descriptor ring, driver area, device area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    pub size: u16,
    pub desc_uva: u64,
    pub driver_uva: u64,
    pub device_uva: u64,
}

/// A ring position and the wrap counter of its lap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPos {
    pub pos: u16,
    pub wrap: bool,
}

impl RingPos {
    /// Bits 0-14 the position, bit 15 the wrap counter: the vhost-user vring base encoding.
    pub fn encode(self) -> u16 {
        self.pos | (u16::from(self.wrap) << 15)
    }

    pub fn decode(v: u16) -> RingPos {
        RingPos {
            pos: v & 0x7fff,
            wrap: v & 0x8000 != 0,
        }
    }
}

/// A used descriptor waiting for the flush.
#[derive(Debug, Clone, Copy, Default)]
struct Used {
    id: u16,
    len: u32,
    /// Ring descriptors the buffer took.
    ndesc: u32,
}

/// The device side of one packed virtqueue.
pub(crate) struct PackedQueue {
    walker: PackedWalker,
    ring: RawPackedRing,
    mem: Arc<GuestMemory>,
    size: u16,
    features: QueueFeatures,
    in_order: bool,
    /// Next position to take from.
    avail: RingPos,
    /// Next position a used descriptor goes to (past the shadow list once it is written).
    used: RingPos,
    shadow: Box<[Used]>,
    shadow_len: usize,
    /// Descriptors written used since the last notification decision.
    unsignalled: u32,
    broken: bool,
    call: Option<nix::sys::eventfd::EventFd>,
    counters: Arc<QueueCounters>,
    burst: Box<[Chain]>,
    burst_len: usize,
    rx: Box<[Chain]>,
    record: Vec<u8>,
    log: Option<Box<QueueLog>>,
    /// Guest-physical addresses of the descriptor ring and the device area, for the dirty log
    /// (`None` when the frontend's addresses do not translate: then nothing to log there).
    desc_gpa: Option<u64>,
    device_gpa: Option<u64>,
}

// SAFETY: the raw pointers in `ring` and in the chains point into `mem`, which the queue owns a
// reference to; a queue is used by one thread at a time, and everything it touches in shared
// memory is accessed with volatile/atomic operations.
unsafe impl Send for PackedQueue {}

impl PackedQueue {
    /// Builds the device side of a packed queue; `base` is where the driver's next available
    /// descriptor is (position and wrap counter), `used` where the next used one goes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mem: Arc<GuestMemory>,
        layout: PackedLayout,
        features: QueueFeatures,
        in_order: bool,
        base: RingPos,
        used: RingPos,
        call: Option<nix::sys::eventfd::EventFd>,
        counters: Arc<QueueCounters>,
    ) -> Result<PackedQueue, &'static str> {
        let n = layout.size;
        check_packed_layout(n, layout.desc_uva, layout.driver_uva, layout.device_uva)?;
        if base.pos >= n || used.pos >= n {
            return Err("vring base position is not below the queue size");
        }
        let desc = mem
            .uva_to_host(layout.desc_uva, packed_desc_ring_bytes(n) as u64)
            .ok_or("descriptor ring is not inside one guest memory region")?;
        let driver = mem
            .uva_to_host(layout.driver_uva, EVENT_AREA_BYTES as u64)
            .ok_or("driver event area is not inside one guest memory region")?;
        let device = mem
            .uva_to_host(layout.device_uva, EVENT_AREA_BYTES as u64)
            .ok_or("device event area is not inside one guest memory region")?;
        check_packed_layout(n, desc as u64, driver as u64, device as u64)?;
        // SAFETY: the three areas were translated with their full lengths inside regions of
        // `mem`, which the queue keeps alive through its Arc; size and alignment checked above.
        let ring = unsafe { RawPackedRing::new(desc, driver, device, n) };
        let q = PackedQueue {
            walker: PackedWalker {
                ring,
                mem: mem.clone(),
                size: n,
                indirect: features.indirect,
                hot: mem.hot_span(),
            },
            ring,
            desc_gpa: mem.uva_to_gpa(layout.desc_uva),
            device_gpa: mem.uva_to_gpa(layout.device_uva),
            mem,
            size: n,
            features,
            in_order,
            avail: base,
            used,
            shadow: vec![Used::default(); SHADOW].into_boxed_slice(),
            shadow_len: 0,
            unsignalled: 0,
            broken: false,
            call,
            counters,
            burst: (0..BURST).map(|_| Chain::new()).collect(),
            burst_len: 0,
            rx: (0..MAX_MRG_CHAINS).map(|_| Chain::new()).collect(),
            record: Vec::new(),
            log: None,
        };
        // We poll: kicks are wasted work for the driver.
        q.ring.set_device_event(0, RING_EVENT_FLAGS_DISABLE);
        Ok(q)
    }

    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    pub(crate) fn features(&self) -> QueueFeatures {
        self.features
    }

    pub(crate) fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    pub(crate) fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(crate) fn call_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.call.as_ref().map(|c| c.as_fd())
    }

    /// Next available position (the low half of `GET_VRING_BASE`).
    pub(crate) fn avail_pos(&self) -> RingPos {
        self.avail
    }

    /// Next used position, past every used descriptor held back (the high half of
    /// `GET_VRING_BASE`).
    pub(crate) fn used_pos(&self) -> RingPos {
        self.shadow[..self.shadow_len]
            .iter()
            .fold(self.used, |p, u| step(p, u.ndesc, self.size))
    }

    pub(crate) fn set_log(&mut self, log: Option<QueueLog>) {
        if let Some(l) = &log {
            if l.logs_used() {
                // The device area was written at start; mark it and the whole ring once.
                if let Some(g) = self.desc_gpa {
                    l.log().mark(g, packed_desc_ring_bytes(self.size) as u64);
                }
                if let Some(g) = self.device_gpa {
                    l.log().mark(g, EVENT_AREA_BYTES as u64);
                }
            }
        }
        self.log = log.map(Box::new);
    }

    pub(crate) fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// Breaks the queue for good (until the frontend sets it up again).
    #[cold]
    fn break_ring(&mut self, e: ChainError) {
        self.broken = true;
        self.counters.count(e);
        tracing::error!(
            "packed ring broken at position {} (wrap {}): {}; queue stopped until the frontend resets it",
            self.avail.pos,
            self.avail.wrap,
            e.name()
        );
    }

    /// Whether the queue may be read at all now.
    #[inline]
    fn usable(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if self.mem.poisoned() {
            self.break_ring(ChainError::MemoryTruncated);
            return false;
        }
        true
    }

    /// Holds a used descriptor back for the flush (writing the list out first when it is full).
    #[inline]
    fn push_used(&mut self, id: u16, len: u32, ndesc: u32) {
        if self.shadow_len == SHADOW {
            self.write_used();
        }
        self.shadow[self.shadow_len] = Used { id, len, ndesc };
        self.shadow_len += 1;
    }

    /// Writes the used descriptors held back, the first one's flags last.
    fn write_used(&mut self) {
        let n = self.shadow_len;
        if n == 0 {
            return;
        }
        self.shadow_len = 0;
        let first = self.used;
        let mut p = step(first, self.shadow[0].ndesc, self.size);
        let logs_ring = self.log.as_deref().is_some_and(QueueLog::logs_used);
        for k in 1..n {
            let u = self.shadow[k];
            self.ring
                .write_used(p.pos, u.id, u.len, used_desc_flags(p.wrap, u.len));
            if logs_ring {
                self.log_desc(p.pos);
            }
            p = step(p, u.ndesc, self.size);
        }
        let u0 = self.shadow[0];
        self.ring.write_used(
            first.pos,
            u0.id,
            u0.len,
            used_desc_flags(first.wrap, u0.len),
        );
        if logs_ring {
            self.log_desc(first.pos);
        }
        let total: u32 = self.shadow[..n].iter().map(|u| u.ndesc).sum();
        self.unsignalled = self.unsignalled.saturating_add(total);
        self.used = p;
    }

    fn log_desc(&mut self, pos: u16) {
        if let (Some(l), Some(g)) = (self.log.as_deref_mut(), self.desc_gpa) {
            l.wrote(g + (DESC_SIZE as u64) * u64::from(pos), DESC_SIZE as u64);
        }
    }

    /// Entries available now: chains from our position, up to a queue's worth (does not
    /// consume).
    pub(crate) fn available(&mut self) -> u16 {
        if !self.usable() {
            return 0;
        }
        let mut at = self.avail;
        let mut n = 0u16;
        let mut scratch = Chain::new();
        while n < self.size {
            match self.walker.take(at, false, &mut scratch) {
                Take::Chain { ndesc, .. } => {
                    n += 1;
                    at = step(at, ndesc, self.size);
                    if at == self.avail {
                        break;
                    }
                }
                Take::Nothing | Take::Broken(_) => break,
            }
        }
        n
    }

    /// See [`crate::virtq::DeviceQueue::walk_available`].
    pub(crate) fn walk_available(&mut self, n: usize, writable: bool) -> usize {
        if !self.usable() {
            return 0;
        }
        let mut at = self.avail;
        let mut ok = 0;
        for _ in 0..n.min(usize::from(self.size)) {
            match self.walker.take(at, writable, &mut self.rx[0]) {
                Take::Chain { ndesc, res, .. } => {
                    ok += usize::from(res.is_ok());
                    at = step(at, ndesc, self.size);
                }
                Take::Nothing | Take::Broken(_) => break,
            }
        }
        ok
    }

    /// See [`crate::virtq::DeviceQueue::pop_tx_burst`].
    pub(crate) fn pop_tx_burst(&mut self) -> usize {
        debug_assert_eq!(self.burst_len, 0, "complete_burst not called");
        if !self.usable() {
            return 0;
        }
        let min_len = self.features.hdr_len + 14;
        let head_end = self.features.hdr_len + ETH_VLAN_HLEN;
        let mut k = 0;
        let mut taken = 0;
        let mut skipped = false;
        let first_shadow = self.shadow_len;
        while taken < BURST {
            let at = self.avail;
            prefetch(self.ring.desc_addr(step(at, 1, self.size).pos));
            match self.walker.take(at, false, &mut self.burst[k]) {
                Take::Nothing => break,
                Take::Broken(e) => {
                    self.break_ring(e);
                    break;
                }
                Take::Chain { id, ndesc, res } => {
                    taken += 1;
                    self.avail = step(at, ndesc, self.size);
                    let res = res.and_then(|()| {
                        if self.burst[k].len() < min_len {
                            Err(ChainError::TooShort)
                        } else {
                            Ok(())
                        }
                    });
                    match res {
                        Ok(()) => {
                            let s0 = self.burst[k].segs[0];
                            prefetch(s0.ptr);
                            prefetch(s0.ptr.wrapping_add((s0.len as usize).min(head_end) - 1));
                            k += 1;
                        }
                        Err(ChainError::IdOutOfRange) => {
                            self.refuse(id, ChainError::IdOutOfRange);
                            skipped = true;
                            continue;
                        }
                        Err(e) => self.refuse(id, e),
                    }
                    self.push_used(id, 0, ndesc);
                }
            }
        }
        // IN_ORDER: the whole burst goes back as one used descriptor with the last id (the
        // driver takes every buffer before it as used too). Not when a chain was skipped (its
        // descriptors were never returned) or the list was written out midway.
        let m = self.shadow_len;
        if self.in_order && !skipped && first_shadow == 0 && m > 1 {
            let total: u32 = self.shadow[..m].iter().map(|u| u.ndesc).sum();
            if total <= u32::from(self.size) {
                let last = self.shadow[m - 1];
                self.shadow[0] = Used {
                    id: last.id,
                    len: 0,
                    ndesc: total,
                };
                self.shadow_len = 1;
            }
        }
        self.burst_len = k;
        k
    }

    /// Counts a refused chain.
    fn refuse(&self, id: u16, e: ChainError) {
        self.counters.count(e);
        tracing::debug!("refused packed descriptor chain with id {id}: {}", e.name());
    }

    pub(crate) fn burst(&self) -> &[Chain] {
        &self.burst[..self.burst_len]
    }

    pub(crate) fn complete_burst(&mut self) {
        self.burst_len = 0;
        self.flush();
    }

    /// Writes the used descriptors held back and notifies the driver when its event
    /// suppression structure asks for it: at most one notification per flush.
    pub(crate) fn flush(&mut self) {
        if self.shadow_len == 0 {
            return;
        }
        self.write_used();
        if let Some(l) = self.log.as_deref_mut() {
            l.commit_writes();
        }
        let Some(call) = &self.call else {
            self.unsignalled = 0;
            return;
        };
        // The used flags must be visible before we read the driver's suppression state, or we
        // race with a driver that just re-enabled notifications and sleeps forever.
        fence(Ordering::SeqCst);
        let (off_wrap, flags) = self.ring.driver_event();
        let n = self.unsignalled.min(u32::from(self.size));
        self.unsignalled = 0;
        let notify = match flags & 3 {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.features.event_idx => {
                let new = self.used.pos;
                // n <= size <= 32768.
                let old = new.wrapping_sub(u16::try_from(n).unwrap_or(0));
                let mut off = off_wrap & 0x7fff;
                if (off_wrap & 0x8000 != 0) != self.used.wrap {
                    off = off.wrapping_sub(self.size);
                }
                need_event(off, new, old)
            }
            // ENABLE, DESC without EVENT_IDX, and the reserved value: notify (a spare
            // notification costs the driver little; a missing one stalls it).
            _ => true,
        };
        if notify {
            self.counters.notifications.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = call.write(1) {
                tracing::debug!("call eventfd write failed: {e}");
            }
        }
    }

    /// See [`crate::virtq::DeviceQueue::enqueue_sources`]: here each frame goes through
    /// [`Self::enqueue`].
    pub(crate) fn enqueue_sources<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = Source<'a>>,
        tally: &mut RxTally,
    ) {
        let mut frames = frames;
        while let Some(src) = frames.next() {
            let len = src.len() as u64;
            match self.enqueue(src) {
                Ok(()) => {
                    tally.packets += 1;
                    tally.buffers += 1;
                    tally.bytes += len;
                }
                Err(RxError::NoBuffers) => tally.no_buffers += 1,
                Err(RxError::Broken) => {
                    tally.no_buffers += 1 + frames.len() as u64;
                    break;
                }
                Err(RxError::BufferTooSmall) => tally.too_small += 1,
                Err(RxError::BadChain) => tally.bad_buffers += 1,
            }
        }
    }

    /// See [`crate::virtq::DeviceQueue::enqueue`].
    pub(crate) fn enqueue(&mut self, src: Source<'_>) -> Result<(), RxError> {
        if !self.usable() {
            return Err(RxError::Broken);
        }
        let hdr_len = self.features.hdr_len;
        let need = hdr_len + src.len();
        let max_chains = if self.features.mrg_rxbuf {
            MAX_MRG_CHAINS
        } else {
            1
        };
        let mut ids = [(0u16, 0u32); MAX_MRG_CHAINS];
        let mut cursor = self.avail;
        let mut nchains = 0usize;
        let mut cap = 0usize;
        while cap < need && nchains < max_chains {
            match self.walker.take(cursor, true, &mut self.rx[nchains]) {
                Take::Nothing => break,
                Take::Broken(e) => {
                    self.break_ring(e);
                    return Err(RxError::Broken);
                }
                Take::Chain { id, ndesc, res } => match res {
                    Ok(()) => {
                        ids[nchains] = (id, ndesc);
                        cursor = step(cursor, ndesc, self.size);
                        cap += self.rx[nchains].len();
                        nchains += 1;
                    }
                    Err(e) => {
                        // Give back what this packet had gathered (unfilled) and the bad chain
                        // itself; the packet is dropped.
                        for &(h, nd) in &ids[..nchains] {
                            self.push_used(h, 0, nd);
                        }
                        self.avail = step(cursor, ndesc, self.size);
                        self.refuse(id, e);
                        if e != ChainError::IdOutOfRange {
                            self.push_used(id, 0, ndesc);
                        }
                        return Err(RxError::BadChain);
                    }
                },
            }
        }
        if cap < need {
            return Err(self
                .counters
                .short_of_buffers(self.features.mrg_rxbuf, nchains));
        }
        // nchains <= MAX_MRG_CHAINS (16).
        let hdr = crate::net::rx_header(u16::try_from(nchains).unwrap_or(u16::MAX));
        write_packet(&self.rx[..nchains], &hdr[..hdr_len], src);
        let mut left = need;
        for (c, &(id, nd)) in ids[..nchains].iter().enumerate() {
            let n = left.min(self.rx[c].len());
            left -= n;
            if let Some(log) = self.log.as_deref_mut() {
                log_filled(log, &self.rx[c], n);
            }
            // n <= chain len <= MAX_CHAIN_BYTES.
            self.push_used(id, u32::try_from(n).unwrap_or(MAX_CHAIN_BYTES), nd);
        }
        self.avail = cursor;
        Ok(())
    }

    /// See [`crate::virtq::DeviceQueue::enqueue_records`]: on a packed ring each frame is a
    /// record of its own in a buffer of its own, through [`Self::enqueue`].
    pub(crate) fn enqueue_records<F: AsRef<[u8]>>(&mut self, frames: &[F], tally: &mut RxTally) {
        let mut rec = std::mem::take(&mut self.record);
        for (i, f) in frames.iter().enumerate() {
            let f = f.as_ref();
            if f.is_empty() || f.len() > crate::records::MAX_RECORD_FRAME {
                tally.too_small += 1;
                continue;
            }
            rec.clear();
            crate::records::push(&mut rec, f);
            match self.enqueue(Source::Bytes(&rec)) {
                Ok(()) => {
                    tally.packets += 1;
                    tally.buffers += 1;
                    tally.bytes += f.len() as u64;
                }
                Err(RxError::NoBuffers) => tally.no_buffers += 1,
                Err(RxError::Broken) => {
                    tally.no_buffers += (frames.len() - i) as u64;
                    break;
                }
                Err(RxError::BufferTooSmall) => tally.too_small += 1,
                Err(RxError::BadChain) => tally.bad_buffers += 1,
            }
        }
        self.record = rec;
    }
}

/// `p` advanced by `n` descriptors.
#[inline(always)]
fn step(p: RingPos, n: u32, size: u16) -> RingPos {
    let (pos, wrap) = advance(p.pos, p.wrap, n, size);
    RingPos { pos, wrap }
}

/// Flags of a used descriptor written in lap `wrap`: WRITE says the device wrote data into it.
#[inline(always)]
fn used_desc_flags(wrap: bool, len: u32) -> u16 {
    used_flags(wrap) | if len > 0 { VRING_DESC_F_WRITE } else { 0 }
}

#[path = "packed_walk.rs"]
mod walk;

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;

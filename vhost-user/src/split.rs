//! The split ring layout of [`crate::virtq::DeviceQueue`]: descriptor table, available ring,
//! used ring (virtio 1.x section 2.7). The hostile-input rules are those of [`crate::virtq`];
//! what is particular here is the avail index (a queue ahead means a broken ring) and the used
//! ring published by one index store per flush.
#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::chain::{log_filled, write_packet, Chain, ChainError, Source, Walker, MAX_CHAIN_BYTES};
use crate::dirty_log::QueueLog;
use crate::memory::GuestMemory;
use crate::ring::{
    copy_bytes, need_event, prefetch, RawRing, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
};
use crate::virtq::{
    QueueCounters, QueueFeatures, QueueLayout, RxError, RxTally, BURST, ETH_VLAN_HLEN,
    MAX_MRG_CHAINS,
};

/// The device side of one split virtqueue.
pub(crate) struct SplitQueue {
    walker: Walker,
    ring: RawRing,
    mem: Arc<GuestMemory>,
    size: u16,
    features: QueueFeatures,
    last_avail: u16,
    avail_cache: u16,
    used_idx: u16,
    published_used: u16,
    signalled_used: u16,
    signalled_valid: bool,
    avail_event_at: u16,
    broken: bool,
    call: Option<nix::sys::eventfd::EventFd>,
    counters: Arc<QueueCounters>,
    burst: Box<[Chain; BURST]>,
    burst_len: usize,
    rx: Box<[Chain]>,
    /// A record built for a frame that takes the general path of
    /// [`Self::enqueue_records`]: allocated once, at the first such frame.
    record: Vec<u8>,
    /// The dirty log while a migration wants our writes logged; `None` costs a branch per
    /// burst and per flush.
    log: Option<Box<QueueLog>>,
}

// SAFETY: the raw pointers in `ring` and in the chains point into `mem`, which the queue owns a
// reference to; a queue is used by one thread at a time (it moves between threads by value or
// behind a mutex), and everything it touches in shared memory is accessed with volatile/atomic
// operations.
unsafe impl Send for SplitQueue {}

impl SplitQueue {
    /// Builds the device side of a queue over guest memory. The areas must lie in guest memory,
    /// each inside one region, with the alignment the spec requires.
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: QueueLayout,
        features: QueueFeatures,
        base: u16,
        call: Option<nix::sys::eventfd::EventFd>,
        counters: Arc<QueueCounters>,
    ) -> Result<SplitQueue, &'static str> {
        let n = layout.size;
        crate::ring::check_layout(n, layout.desc_uva, layout.avail_uva, layout.used_uva)?;
        let desc = mem
            .uva_to_host(layout.desc_uva, crate::ring::desc_table_bytes(n) as u64)
            .ok_or("descriptor table is not inside one guest memory region")?;
        let avail = mem
            .uva_to_host(layout.avail_uva, crate::ring::avail_ring_bytes(n) as u64)
            .ok_or("available ring is not inside one guest memory region")?;
        let used = mem
            .uva_to_host(layout.used_uva, crate::ring::used_ring_bytes(n) as u64)
            .ok_or("used ring is not inside one guest memory region")?;
        // Host alignment follows from guest alignment only if the region's base is aligned;
        // regions are page-aligned mappings, but check rather than assume.
        crate::ring::check_layout(n, desc as u64, avail as u64, used as u64)?;
        // SAFETY: the three areas were translated with their full lengths inside regions of
        // `mem`, which the queue keeps alive through its Arc; size and alignment checked above.
        let ring = unsafe { RawRing::new(desc, avail, used, n) };
        let mut q = SplitQueue {
            walker: Walker {
                ring,
                mem: mem.clone(),
                size: n,
                indirect: features.indirect,
                hot: mem.hot_span(),
            },
            ring,
            mem,
            size: n,
            features,
            last_avail: base,
            avail_cache: base,
            used_idx: base,
            published_used: base,
            signalled_used: base,
            signalled_valid: false,
            avail_event_at: base,
            broken: false,
            call,
            counters,
            burst: Box::new(std::array::from_fn(|_| Chain::new())),
            burst_len: 0,
            rx: (0..MAX_MRG_CHAINS).map(|_| Chain::new()).collect(),
            record: Vec::new(),
            log: None,
        };
        // A frontend reconnecting after we died may have consumed used entries we published past
        // `base`; the ring's used index is the truth about what went back to the guest.
        let ring_used = q.ring.used_idx();
        if ring_used != base {
            tracing::warn!(
                "vring base {base} differs from the ring's used index {ring_used}; resuming from the used index"
            );
            q.last_avail = ring_used;
            q.avail_cache = ring_used;
            q.used_idx = ring_used;
            q.published_used = ring_used;
            q.signalled_used = ring_used;
            q.avail_event_at = ring_used;
        }
        q.suppress_kicks();
        Ok(q)
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Next avail index to consume: what `GET_VRING_BASE` reports.
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    pub fn features(&self) -> QueueFeatures {
        self.features
    }

    /// The guest memory this queue reads and writes.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Starts (or, with `None`, stops) logging this queue's writes into guest memory. The
    /// whole used ring is marked at once, for the writes made outside bursts (flags,
    /// `avail_event`) since the queue started.
    pub fn set_log(&mut self, log: Option<QueueLog>) {
        if let Some(l) = &log {
            l.mark_used_ring(self.size);
        }
        self.log = log.map(Box::new);
    }

    /// Whether the queue's writes are being logged.
    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// We poll, so kicks are wasted work for the guest (a VM exit each, for a VM): say so in the
    /// used flags, and with EVENT_IDX put `avail_event` just behind us, where the driver will
    /// not reach it for 65535 more entries.
    fn suppress_kicks(&mut self) {
        self.ring.set_used_flags(VRING_USED_F_NO_NOTIFY);
        if self.features.event_idx {
            self.ring.set_avail_event(self.last_avail.wrapping_sub(1));
            self.avail_event_at = self.last_avail;
        }
    }

    /// Entries the guest has made available and we have not consumed; marks the queue broken
    /// when the guest claims more than the queue holds.
    #[inline]
    fn refresh_avail(&mut self) -> u16 {
        if self.broken {
            return 0;
        }
        if self.mem.poisoned() {
            self.broken = true;
            self.counters.count(ChainError::MemoryTruncated);
            tracing::error!(
                "guest memory file shrunk under a running queue: queue stopped until the frontend resets it"
            );
            return 0;
        }
        let idx = self.ring.avail_idx();
        let n = idx.wrapping_sub(self.last_avail);
        if n > self.size {
            self.broken = true;
            self.counters.count(ChainError::AvailOverrun);
            tracing::error!(
                "guest avail index {idx} is {n} entries ahead of a queue of {}: queue stopped until the frontend resets it",
                self.size
            );
            return 0;
        }
        self.avail_cache = idx;
        n
    }

    /// Entries available now (does not consume).
    pub fn available(&mut self) -> u16 {
        self.refresh_avail()
    }

    /// Reads and validates the next `n` available chains (at most what is available) as
    /// receive (`writable`) or transmit buffers, with the walk [`Self::pop_tx_burst`] and
    /// [`Self::enqueue`] use, without consuming them, counting errors or touching the used ring;
    /// returns how many were valid. The descriptor-read part of the data path alone, for cost
    /// breakdowns (`fastpath-guest/benches/breakdown.rs`); the data path never calls it.
    pub fn walk_available(&mut self, n: usize, writable: bool) -> usize {
        let want = usize::from(self.refresh_avail()).min(n);
        let mut ok = 0;
        for i in (0u16..).take(want) {
            let head = self.ring.avail_entry(self.last_avail.wrapping_add(i));
            if self.walker.walk(head, writable, &mut self.rx[0]).is_ok() {
                ok += 1;
            }
        }
        ok
    }

    /// Returns a refused chain to the guest with length 0 and counts why.
    fn refuse(&mut self, head: u16, e: ChainError) {
        self.counters.count(e);
        tracing::debug!("refused descriptor chain at head {head}: {}", e.name());
        if head < self.size {
            self.push_used(head, 0);
        }
    }

    /// Takes up to [`BURST`] transmitted packets from the guest. Malformed chains are returned
    /// used and counted here; the good ones are then visible through [`Self::burst`]. Every chain
    /// taken must be given back with [`Self::complete_burst`] before the next call.
    pub fn pop_tx_burst(&mut self) -> usize {
        debug_assert_eq!(self.burst_len, 0, "complete_burst not called");
        // The guest's avail index is read again only once what it said last time is consumed:
        // its line is written by the guest's core, so each read can be a transfer.
        let avail = match self.avail_cache.wrapping_sub(self.last_avail) {
            _ if self.broken => 0,
            0 => self.refresh_avail(),
            known => known,
        };
        let want = usize::from(avail).min(BURST);
        let min_len = self.features.hdr_len + crate::net::MIN_FRAME;
        let head_end = self.features.hdr_len + ETH_VLAN_HLEN;
        // Start every cache miss of the burst early so they overlap: descriptors first, then
        // each frame's first line as soon as its chain is walked (the switch reads the headers
        // next).
        let ring = self.ring;
        let last = self.last_avail;
        let mut heads = [0u16; BURST];
        for (i, h) in heads.iter_mut().enumerate().take(want) {
            #[allow(clippy::cast_possible_truncation)] // i < BURST
            let i = i as u16;
            *h = ring.avail_entry(last.wrapping_add(i));
            prefetch(ring.desc_addr(*h));
        }
        // Locals, not fields: the ring stores below could alias `self` as far as the compiler
        // knows, which would make it reload every field after each one.
        let walker = &self.walker;
        let burst: &mut [Chain; BURST] = &mut self.burst;
        let counters = &self.counters;
        let mut used_idx = self.used_idx;
        let mut k = 0;
        for &head in &heads[..want] {
            // k <= the heads seen so far < BURST.
            let c = &mut burst[k & (BURST - 1)];
            let res = walker.walk(head, false, c).and_then(|_| {
                if c.len() < min_len {
                    Err(ChainError::TooShort)
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => {
                    // The virtio-net header and the Ethernet header (with a VLAN tag) the
                    // switch reads next: two lines where the header sits just before a
                    // cache-line-aligned frame (DPDK and Linux buffers), one where the frame
                    // follows the header (ours). Not a line more: a line the reader leaves alone
                    // is one the writer's core must take back for its next lap.
                    let s0 = c.segs[0];
                    prefetch(s0.ptr);
                    prefetch(s0.ptr.wrapping_add((s0.len as usize).min(head_end) - 1));
                    k += 1;
                }
                Err(e) => {
                    counters.count(e);
                    tracing::debug!("refused descriptor chain at head {head}: {}", e.name());
                    if head >= walker.size {
                        continue;
                    }
                }
            }
            // Used entries go in avail order (VIRTIO_F_IN_ORDER), refused chains with length 0
            // like the others; they become visible to the guest only at the flush in
            // `complete_burst`, so the buffers stay ours until then.
            // Left alone when the entry already says so: an in-order driver gets the same heads
            // back lap after lap, and its cached copy of the line then stays valid.
            ring.set_used_elem_if_changed(used_idx, u32::from(head), 0);
            used_idx = used_idx.wrapping_add(1);
        }
        // want <= BURST.
        self.last_avail = self
            .last_avail
            .wrapping_add(u16::try_from(want).unwrap_or(0));
        self.used_idx = used_idx;
        self.burst_len = k;
        k
    }

    /// The chains taken by the last [`Self::pop_tx_burst`].
    pub fn burst(&self) -> &[Chain] {
        &self.burst[..self.burst_len]
    }

    /// Gives the chains of the last burst back to the guest (length 0: we wrote nothing into
    /// them): publishes the used index and notifies the guest if it asked.
    pub fn complete_burst(&mut self) {
        self.burst_len = 0;
        self.flush();
    }

    /// Like [`Self::complete_burst`], but publishes only once `every` used entries are
    /// waiting: the used index's line then moves to the guest's core once per `every` entries
    /// instead of once per burst. The caller publishes the rest with [`Self::flush`] before it
    /// stops working on the queue (the end of a visit).
    pub fn complete_burst_every(&mut self, every: u16) {
        self.burst_len = 0;
        if self.used_idx.wrapping_sub(self.published_used) >= every {
            self.flush();
        }
    }

    #[inline]
    fn push_used(&mut self, head: u16, len: u32) {
        self.ring
            .set_used_elem_if_changed(self.used_idx, u32::from(head), len);
        self.used_idx = self.used_idx.wrapping_add(1);
    }

    /// Publishes used entries written since the last flush and notifies the guest when it wants
    /// to hear about them (EVENT_IDX or the NO_INTERRUPT flag): at most one notification per
    /// flush, and a flush per burst.
    pub fn flush(&mut self) {
        if self.used_idx == self.published_used {
            return;
        }
        self.ring.set_used_idx(self.used_idx);
        if let Some(l) = self.log.as_deref_mut() {
            l.commit(self.size, self.published_used, self.used_idx);
        }
        self.published_used = self.used_idx;
        if self.features.event_idx
            && self.last_avail.wrapping_sub(self.avail_event_at) > self.size / 2
        {
            // Keep avail_event behind us as we advance (see suppress_kicks).
            self.ring.set_avail_event(self.last_avail.wrapping_sub(1));
            self.avail_event_at = self.last_avail;
            if let Some(l) = &self.log {
                l.mark_avail_event(self.size);
            }
        }
        let Some(call) = &self.call else { return };
        // The used index store must be visible before we read the guest's suppression state,
        // or we race with a driver that just re-enabled interrupts and sleeps forever.
        fence(Ordering::SeqCst);
        let notify = if self.features.event_idx {
            let old = self.signalled_used;
            let valid = self.signalled_valid;
            self.signalled_used = self.used_idx;
            self.signalled_valid = true;
            !valid || need_event(self.ring.used_event(), self.used_idx, old)
        } else {
            self.ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0
        };
        if notify {
            self.counters.notifications.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = call.write(1) {
                tracing::debug!("call eventfd write failed: {e}");
            }
        }
    }

    /// The call eventfd, for tests and for re-arming.
    pub fn call_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.call.as_ref().map(|c| c.as_fd())
    }

    /// [`crate::virtq::DeviceQueue::enqueue_burst`] for packets from anywhere: chains of another queue or bytes of
    /// our own (a fast-path sender copying its frames into a peer's receive queue). Frames are
    /// taken in order; after the queue runs out of buffers the rest are counted in
    /// `tally.no_buffers` and not placed.
    ///
    /// The loop handles the usual case inline — one buffer per frame, taken straight from the
    /// avail ring, a frame contiguous at its source — and hands anything else to
    /// [`Self::enqueue`], which covers every case.
    pub fn enqueue_sources<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = Source<'a>>,
        tally: &mut RxTally,
    ) {
        let hdr_len = self.features.hdr_len;
        let hdr = crate::net::rx_header(1);
        let mut frames = frames.peekable();
        // Frames are placed in runs: the first pass claims a buffer for each frame of the run
        // (reading and checking its descriptor, translating it, starting the load of its
        // lines), the second copies; so the buffers' cache misses overlap instead of coming
        // one frame at a time. A frame that does not fit the simple case ends the run and goes
        // through `enqueue`, in order.
        let mut run: [(*mut u8, *const u8, u16, u32, u64); BURST] =
            [(std::ptr::null_mut(), std::ptr::null(), 0, 0, 0); BURST];
        while frames.peek().is_some() {
            let mut n = 0;
            while n < BURST {
                let Some(&src) = frames.peek() else { break };
                if self.last_avail == self.avail_cache {
                    self.refresh_avail();
                    if self.last_avail == self.avail_cache {
                        break;
                    }
                }
                let head = self.ring.avail_entry(self.last_avail);
                let Some(from) = src.contiguous() else {
                    break;
                };
                if head >= self.size {
                    break;
                }
                let need = hdr_len + src.len();
                let d = self.ring.read_desc(head);
                if d.flags != VRING_DESC_F_WRITE || (d.len as usize) < need {
                    break;
                }
                let Some(dst) = self.mem.gpa_to_host(d.addr, need as u64) else {
                    break;
                };
                prefetch(dst);
                prefetch(dst.wrapping_add(need.min(128) - 1));
                // need <= d.len, a u32.
                run[n] = (
                    dst,
                    from,
                    head,
                    u32::try_from(need).unwrap_or(d.len),
                    d.addr,
                );
                self.last_avail = self.last_avail.wrapping_add(1);
                frames.next();
                n += 1;
            }
            for &(dst, from, head, need, _) in &run[..n] {
                let len = need as usize - hdr_len;
                // SAFETY: [dst, dst + need) was translated inside one region of our mapped guest
                // memory; `from` is readable for `len` bytes (the tail of one segment of a
                // source chain, kept mapped by the borrow of its queue).
                unsafe {
                    copy_bytes(dst, hdr.as_ptr(), hdr_len);
                    copy_bytes(dst.add(hdr_len), from, len);
                }
                self.push_used(head, need);
                tally.packets += 1;
                tally.buffers += 1;
                tally.bytes += len as u64;
            }
            if let Some(l) = self.log.as_deref_mut() {
                for &(_, _, _, need, gpa) in &run[..n] {
                    l.wrote(gpa, u64::from(need));
                }
            }
            if n == BURST {
                continue;
            }
            // The run ended on a frame the simple case does not cover (or on empty buffers).
            let Some(src) = frames.next() else { break };
            let len = src.len() as u64;
            match self.enqueue(src) {
                Ok(()) => {
                    tally.packets += 1;
                    tally.buffers += 1;
                    tally.bytes += len;
                }
                Err(RxError::NoBuffers) | Err(RxError::Broken) => {
                    // Out of buffers: the rest of the frames are dropped the same way.
                    let rest = 1 + frames.len() as u64;
                    if self.broken || self.last_avail == self.avail_cache {
                        tally.no_buffers += rest;
                        break;
                    }
                    tally.no_buffers += 1;
                }
                Err(RxError::BufferTooSmall) => tally.too_small += 1,
                Err(RxError::BadChain) => tally.bad_buffers += 1,
            }
        }
    }

    /// Places one packet (a virtio-net header is written in front of it) into the guest's receive
    /// buffers. Used entries are written but not published: call [`Self::flush`] after the burst.
    pub fn enqueue(&mut self, src: Source<'_>) -> Result<(), RxError> {
        let hdr_len = self.features.hdr_len;
        let need = hdr_len + src.len();
        let mut cursor = self.last_avail;
        let mut nchains = 0usize;
        let mut cap = 0usize;
        let max_chains = if self.features.mrg_rxbuf {
            MAX_MRG_CHAINS
        } else {
            1
        };
        while cap < need && nchains < max_chains {
            if cursor == self.avail_cache {
                self.refresh_avail();
                if self.broken {
                    return Err(RxError::Broken);
                }
                if cursor == self.avail_cache {
                    break;
                }
            }
            let head = self.ring.avail_entry(cursor);
            match self.walker.walk(head, true, &mut self.rx[nchains]) {
                Ok(()) => {
                    cursor = cursor.wrapping_add(1);
                    cap += self.rx[nchains].len();
                    nchains += 1;
                }
                Err(e) => {
                    // Give back what this packet had gathered (unfilled, length 0) and the bad
                    // chain itself, so the ring stays in order; the packet is dropped.
                    for c in 0..nchains {
                        let h = self.rx[c].head;
                        self.push_used(h, 0);
                    }
                    self.last_avail = cursor.wrapping_add(1);
                    self.refuse(head, e);
                    return Err(RxError::BadChain);
                }
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
        for c in 0..nchains {
            let (h, l) = (self.rx[c].head, self.rx[c].len());
            let n = left.min(l);
            left -= n;
            // n <= chain len <= MAX_CHAIN_BYTES.
            self.push_used(h, u32::try_from(n).unwrap_or(MAX_CHAIN_BYTES));
            if let Some(log) = self.log.as_deref_mut() {
                log_filled(log, &self.rx[c], n);
            }
        }
        self.last_avail = cursor;
        Ok(())
    }
}

#[path = "virtq_records.rs"]
mod records;

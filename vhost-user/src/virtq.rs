//! The device side of a split virtqueue: taking descriptor chains from a guest, returning them
//! used, and telling the guest (or not) — burst-oriented, as the switch's poll loop and the fast
//! path use it.
//!
//! Guest rings are hostile and change under us. The rules, each with its fate and counter:
//! - every descriptor is copied out once and only the copy is used (a guest rewriting a
//!   descriptor after we read it changes nothing we do);
//! - a head or `next` index past the queue size, a chain longer than the queue (a loop), an
//!   indirect table inside an indirect table, an indirect table of bad length, a buffer outside
//!   guest memory, a descriptor of the wrong direction, a TX chain shorter than the virtio-net
//!   header: the chain goes back used with length 0, is counted, and the queue goes on;
//! - an avail index more than a queue ahead of what we consumed: the queue is broken (counted and
//!   logged) and not touched again until the frontend sets it up afresh;
//! - nothing a guest writes makes us allocate, loop without bound, or panic.
#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crate::memory::GuestMemory;
use crate::ring::{
    copy_bytes, need_event, prefetch, Descriptor, IndirectTable, RawRing, DESC_SIZE,
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
};

const DESC_SIZE_U32: u32 = 16;
const _: () = assert!(DESC_SIZE == 16);

/// Packets taken from or given to a queue per burst.
pub const BURST: usize = 32;
/// Buffer segments one chain may have (a descriptor that straddles two memory regions is two).
pub const MAX_SEGS: usize = 16;
/// Receive chains one packet may span with MRG_RXBUF (a 9018-byte frame in 1 KiB buffers).
pub const MAX_MRG_CHAINS: usize = 16;
/// Largest number of bytes a chain may describe; beyond any frame we carry.
pub const MAX_CHAIN_BYTES: u32 = 1 << 20;

/// Why a chain or a queue was refused. Each is a counter in [`QueueCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum ChainError {
    /// A head index from the avail ring is not below the queue size.
    HeadOutOfRange,
    /// A `next` index is not below the queue (or indirect table) size.
    NextOutOfRange,
    /// More descriptors than the queue (or table) holds: a loop.
    ChainLoop,
    /// An indirect descriptor inside an indirect table.
    NestedIndirect,
    /// An indirect descriptor although INDIRECT_DESC was not negotiated, or with NEXT set.
    IndirectNotAllowed,
    /// An indirect table whose length is 0 or not a multiple of 16.
    IndirectBadLength,
    /// A buffer (or indirect table) outside guest memory.
    AddressUnmapped,
    /// A device-writable buffer in a TX chain, or a device-readable one in an RX chain.
    WrongDirection,
    /// More buffer segments than [`MAX_SEGS`], or more bytes than [`MAX_CHAIN_BYTES`].
    ChainTooLong,
    /// A TX chain shorter than the virtio-net header plus an Ethernet header.
    TooShort,
    /// The avail index ran more than a queue ahead: the ring is broken.
    AvailOverrun,
    /// The guest shrank its memory file under the queue: the ring is broken.
    MemoryTruncated,
}

impl ChainError {
    pub const COUNT: usize = 12;
    pub const ALL: [ChainError; Self::COUNT] = [
        ChainError::HeadOutOfRange,
        ChainError::NextOutOfRange,
        ChainError::ChainLoop,
        ChainError::NestedIndirect,
        ChainError::IndirectNotAllowed,
        ChainError::IndirectBadLength,
        ChainError::AddressUnmapped,
        ChainError::WrongDirection,
        ChainError::ChainTooLong,
        ChainError::TooShort,
        ChainError::AvailOverrun,
        ChainError::MemoryTruncated,
    ];

    /// Counter name, as `vswitchctl stats` shows it.
    pub fn name(self) -> &'static str {
        match self {
            ChainError::HeadOutOfRange => "head_out_of_range",
            ChainError::NextOutOfRange => "next_out_of_range",
            ChainError::ChainLoop => "chain_loop",
            ChainError::NestedIndirect => "nested_indirect",
            ChainError::IndirectNotAllowed => "indirect_not_allowed",
            ChainError::IndirectBadLength => "indirect_bad_length",
            ChainError::AddressUnmapped => "address_unmapped",
            ChainError::WrongDirection => "wrong_direction",
            ChainError::ChainTooLong => "chain_too_long",
            ChainError::TooShort => "too_short",
            ChainError::AvailOverrun => "avail_overrun",
            ChainError::MemoryTruncated => "memory_truncated",
        }
    }
}

/// Outcome of [`DeviceQueue::enqueue_burst`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxTally {
    pub packets: u64,
    pub bytes: u64,
    pub no_buffers: u64,
    pub too_small: u64,
    pub bad_buffers: u64,
}

/// Why a packet could not be placed in a receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxError {
    /// The guest has not posted enough receive buffers (the usual drop under overload).
    NoBuffers,
    /// Without MRG_RXBUF, the next buffer is too small for the frame.
    BufferTooSmall,
    /// The buffers the guest posted were malformed (counted per [`ChainError`]).
    BadChain,
    /// The queue is broken (see [`ChainError::AvailOverrun`]).
    Broken,
}

/// Error counters of one queue, shared with the control plane. Touched only when something goes
/// wrong (or once per notification), never per good packet.
#[derive(Debug, Default)]
pub struct QueueCounters {
    errors: [AtomicU64; ChainError::COUNT],
    pub notifications: AtomicU64,
    pub rx_no_buffers: AtomicU64,
    pub rx_buffer_too_small: AtomicU64,
}

impl QueueCounters {
    pub fn count(&self, e: ChainError) {
        self.errors[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, e: ChainError) -> u64 {
        self.errors[e as usize].load(Ordering::Relaxed)
    }

    /// Sum of all chain errors.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// (name, value) of every non-zero counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = ChainError::ALL
            .iter()
            .map(|e| (e.name(), self.get(*e)))
            .collect();
        v.push(("rx_no_buffers", self.rx_no_buffers.load(Ordering::Relaxed)));
        v.push((
            "rx_buffer_too_small",
            self.rx_buffer_too_small.load(Ordering::Relaxed),
        ));
        v.retain(|(_, n)| *n != 0);
        v
    }
}

/// One contiguous piece of a guest buffer, in host memory.
#[derive(Debug, Clone, Copy)]
struct Seg {
    ptr: *mut u8,
    len: u32,
}

const EMPTY_SEG: Seg = Seg {
    ptr: std::ptr::null_mut(),
    len: 0,
};

/// A validated descriptor chain: its head index and its buffer segments.
///
/// A `Chain` only exists inside the queue that walked it (and is only handed out by reference
/// borrowed from that queue), so its host pointers always point into memory the queue keeps
/// mapped.
#[derive(Debug)]
pub struct Chain {
    head: u16,
    len: u32,
    nsegs: u8,
    segs: [Seg; MAX_SEGS],
}

impl Chain {
    fn new() -> Self {
        Chain {
            head: 0,
            len: 0,
            nsegs: 0,
            segs: [EMPTY_SEG; MAX_SEGS],
        }
    }

    /// Head descriptor index.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Total bytes described by the chain.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn segs(&self) -> &[Seg] {
        &self.segs[..usize::from(self.nsegs)]
    }

    /// The 16 bytes at `offset` as two little-endian words, when they lie in the first segment
    /// (the usual place of a frame's Ethernet header). Two loads instead of sixteen.
    #[inline(always)]
    pub fn head_words(&self, offset: usize) -> Option<(u64, u64)> {
        let s0 = self.segs[0];
        if self.nsegs == 0 || (s0.len as usize) < offset.saturating_add(16) {
            return None;
        }
        // SAFETY: [ptr + offset, ptr + offset + 16) lies inside the first segment of mapped guest
        // memory, which the borrow of the owning queue keeps mapped; unaligned loads.
        unsafe {
            let p = s0.ptr.add(offset);
            Some((
                u64::from_le(std::ptr::read_unaligned(p.cast::<u64>())),
                u64::from_le(std::ptr::read_unaligned(p.add(8).cast::<u64>())),
            ))
        }
    }

    /// The `N` bytes at `offset` (a frame's headers), zero-padded past the end of the chain, and
    /// how many were real. One unaligned load when they lie in one segment (the usual case):
    /// cheaper than a general copy and friendly to store forwarding when the caller then picks
    /// fields out of the array.
    #[inline]
    pub fn peek<const N: usize>(&self, offset: usize) -> ([u8; N], usize) {
        let s0 = self.segs[0];
        if self.nsegs > 0 && (s0.len as usize) >= offset.saturating_add(N) {
            // SAFETY: [ptr + offset, ptr + offset + N) lies inside the first segment of mapped
            // guest memory, which the borrow of the owning queue keeps mapped.
            let a = unsafe { std::ptr::read_unaligned(s0.ptr.add(offset).cast::<[u8; N]>()) };
            return (a, N);
        }
        let mut off = offset;
        for s in self.segs() {
            let l = s.len as usize;
            if off < l {
                if l - off >= N {
                    // SAFETY: [ptr + off, ptr + off + N) lies inside this segment of mapped
                    // guest memory, which the borrow of the owning queue keeps mapped.
                    let a = unsafe { std::ptr::read_unaligned(s.ptr.add(off).cast::<[u8; N]>()) };
                    return (a, N);
                }
                break;
            }
            off -= l;
        }
        let mut a = [0u8; N];
        let n = self.read(offset, &mut a);
        (a, n)
    }

    /// Host address of byte `offset` when every byte from there to the end of the chain lies in
    /// one segment (the usual layout: header and frame in one buffer, or the frame in the last).
    #[inline(always)]
    fn contiguous_from(&self, mut offset: usize) -> Option<*const u8> {
        let s0 = self.segs[0];
        if self.nsegs == 1 && (s0.len as usize) > offset {
            return Some(s0.ptr.wrapping_add(offset).cast_const());
        }
        let segs = self.segs();
        for (i, s) in segs.iter().enumerate() {
            let l = s.len as usize;
            if offset < l {
                return (i + 1 == segs.len()).then(|| s.ptr.wrapping_add(offset).cast_const());
            }
            offset -= l;
        }
        None
    }

    /// Copies bytes `[offset, offset + out.len())` of the chain into `out`; returns how many were
    /// copied (fewer at the end of the chain).
    pub fn read(&self, mut offset: usize, out: &mut [u8]) -> usize {
        let mut done = 0;
        for s in self.segs() {
            let l = s.len as usize;
            if offset >= l {
                offset -= l;
                continue;
            }
            let n = (l - offset).min(out.len() - done);
            // SAFETY: the segment was translated from the owning queue's guest memory, which the
            // borrow of that queue keeps mapped; offset + n <= seg len; `out` is our own buffer.
            unsafe { copy_bytes(out.as_mut_ptr().add(done), s.ptr.add(offset), n) };
            done += n;
            offset = 0;
            if done == out.len() {
                break;
            }
        }
        done
    }
}

/// Where a packet to enqueue comes from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// A chain from another (or the same) queue, skipping its first `skip` bytes (its header).
    Chain(&'a Chain, usize),
    /// Bytes in our own memory.
    Bytes(&'a [u8]),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Chain(c, skip) => c.len().saturating_sub(*skip),
            Source::Bytes(b) => b.len(),
        }
    }
}

/// Negotiated properties a queue needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueFeatures {
    pub event_idx: bool,
    pub indirect: bool,
    pub mrg_rxbuf: bool,
    /// virtio-net header length (10 or 12).
    pub hdr_len: usize,
}

/// What walking a chain needs: the ring, the memory, the queue size. Kept apart from the
/// queue's mutable state so a walk can fill the queue's own scratch chains.
struct Walker {
    ring: RawRing,
    mem: Arc<GuestMemory>,
    size: u16,
    indirect: bool,
}

impl Walker {
    /// Walks the chain starting at `head` into `out`, validating every descriptor.
    ///
    /// Most chains are one descriptor of the right direction in one region: that case is
    /// handled inline; anything else (and anything wrong) takes the general walk, which reads
    /// the descriptors afresh and checks everything.
    #[inline(always)]
    fn walk(&self, head: u16, writable: bool, out: &mut Chain) -> Result<(), ChainError> {
        if head < self.size {
            let d = self.ring.read_desc(head);
            let want = if writable { VRING_DESC_F_WRITE } else { 0 };
            if d.flags == want && d.len != 0 && d.len <= MAX_CHAIN_BYTES {
                if let Some(p) = self.mem.gpa_to_host(d.addr, u64::from(d.len)) {
                    out.head = head;
                    out.len = d.len;
                    out.nsegs = 1;
                    out.segs[0] = Seg { ptr: p, len: d.len };
                    return Ok(());
                }
            }
        }
        self.walk_slow(head, writable, out)
    }

    #[cold]
    #[inline(never)]
    fn walk_slow(&self, head: u16, writable: bool, out: &mut Chain) -> Result<(), ChainError> {
        out.head = head;
        out.len = 0;
        out.nsegs = 0;
        if head >= self.size {
            return Err(ChainError::HeadOutOfRange);
        }
        let mut table: Option<IndirectTable> = None;
        let mut idx = u32::from(head);
        let mut budget = u32::from(self.size);
        loop {
            if budget == 0 {
                return Err(ChainError::ChainLoop);
            }
            budget -= 1;
            let d: Descriptor = match &table {
                None => self
                    .ring
                    .read_desc(u16::try_from(idx).map_err(|_| ChainError::NextOutOfRange)?),
                Some(t) => t.read(idx).ok_or(ChainError::NextOutOfRange)?,
            };
            if d.flags & VRING_DESC_F_INDIRECT != 0 {
                if table.is_some() {
                    return Err(ChainError::NestedIndirect);
                }
                if !self.indirect || d.flags & VRING_DESC_F_NEXT != 0 {
                    return Err(ChainError::IndirectNotAllowed);
                }
                if d.len == 0 || !d.len.is_multiple_of(DESC_SIZE_U32) {
                    return Err(ChainError::IndirectBadLength);
                }
                let n = d.len / DESC_SIZE_U32;
                let p = self
                    .mem
                    .gpa_to_host(d.addr, u64::from(d.len))
                    .ok_or(ChainError::AddressUnmapped)?;
                // SAFETY: the whole table (n * 16 bytes) was translated inside one region of the
                // memory this queue keeps mapped.
                let t = unsafe { IndirectTable::new(p, n) };
                table = Some(t);
                idx = 0;
                budget = n;
                continue;
            }
            if (d.flags & VRING_DESC_F_WRITE != 0) != writable {
                return Err(ChainError::WrongDirection);
            }
            let total = out.len.checked_add(d.len).ok_or(ChainError::ChainTooLong)?;
            if total > MAX_CHAIN_BYTES {
                return Err(ChainError::ChainTooLong);
            }
            let mut addr = d.addr;
            let mut left = u64::from(d.len);
            while left > 0 {
                let (p, n) = self
                    .mem
                    .gpa_to_host_partial(addr, left)
                    .ok_or(ChainError::AddressUnmapped)?;
                let k = usize::from(out.nsegs);
                if k == MAX_SEGS {
                    return Err(ChainError::ChainTooLong);
                }
                out.segs[k] = Seg {
                    ptr: p,
                    // n <= left <= d.len, a u32.
                    len: u32::try_from(n).map_err(|_| ChainError::ChainTooLong)?,
                };
                out.nsegs += 1;
                left -= n;
                addr = addr.wrapping_add(n);
            }
            out.len = total;
            if d.flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            idx = u32::from(d.next);
            let limit = table.as_ref().map_or(u32::from(self.size), |t| t.len());
            if idx >= limit {
                return Err(ChainError::NextOutOfRange);
            }
        }
    }
}

/// The device side of one split virtqueue.
pub struct DeviceQueue {
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
    burst: Box<[Chain]>,
    burst_len: usize,
    rx: Box<[Chain]>,
}

// SAFETY: the raw pointers in `ring` and in the chains point into `mem`, which the queue owns a
// reference to; a queue is used by one thread at a time (it moves between threads by value or
// behind a mutex), and everything it touches in shared memory is accessed with volatile/atomic
// operations.
unsafe impl Send for DeviceQueue {}

/// Where a queue's three areas are, in the frontend's virtual address space, and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub size: u16,
    pub desc_uva: u64,
    pub avail_uva: u64,
    pub used_uva: u64,
}

impl DeviceQueue {
    /// Builds the device side of a queue over guest memory. The areas must lie in guest memory,
    /// each inside one region, with the alignment the spec requires.
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: QueueLayout,
        features: QueueFeatures,
        base: u16,
        call: Option<nix::sys::eventfd::EventFd>,
        counters: Arc<QueueCounters>,
    ) -> Result<DeviceQueue, &'static str> {
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
        let mut q = DeviceQueue {
            walker: Walker {
                ring,
                mem: mem.clone(),
                size: n,
                indirect: features.indirect,
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
            burst: (0..BURST).map(|_| Chain::new()).collect(),
            burst_len: 0,
            rx: (0..MAX_MRG_CHAINS).map(|_| Chain::new()).collect(),
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
        let avail = self.refresh_avail();
        let want = usize::from(avail).min(BURST);
        let min_len = self.features.hdr_len + crate::net::MIN_FRAME;
        // Start every cache miss of the burst early so they overlap: descriptors first, then
        // each frame's first line as soon as its chain is walked (the switch reads the headers
        // next).
        let mut heads = [0u16; BURST];
        for (i, h) in (0u16..).zip(heads.iter_mut()).take(want) {
            *h = self.ring.avail_entry(self.last_avail.wrapping_add(i));
            prefetch(self.ring.desc_addr(*h));
        }
        // Locals, not fields: the ring stores below could alias `self` as far as the compiler
        // knows, which would make it reload every field after each one.
        let ring = self.ring;
        let walker = &self.walker;
        let burst = &mut self.burst;
        let counters = &self.counters;
        let mut used_idx = self.used_idx;
        let mut k = 0;
        for &head in &heads[..want] {
            let res = walker.walk(head, false, &mut burst[k]).and_then(|_| {
                if burst[k].len() < min_len {
                    Err(ChainError::TooShort)
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => {
                    // Header and start of the frame: usually two lines (the virtio-net header
                    // sits just before a cache-line-aligned frame in DPDK and Linux buffers).
                    let s0 = burst[k].segs[0];
                    prefetch(s0.ptr);
                    prefetch(s0.ptr.wrapping_add((s0.len as usize).min(128) - 1));
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
            ring.set_used_elem(used_idx, u32::from(head), 0);
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

    #[inline]
    fn push_used(&mut self, head: u16, len: u32) {
        self.ring.set_used_elem(self.used_idx, u32::from(head), len);
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
        self.published_used = self.used_idx;
        if self.features.event_idx
            && self.last_avail.wrapping_sub(self.avail_event_at) > self.size / 2
        {
            // Keep avail_event behind us as we advance (see suppress_kicks).
            self.ring.set_avail_event(self.last_avail.wrapping_sub(1));
            self.avail_event_at = self.last_avail;
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

    /// Places frames taken from other queues' chains (each without its first `skip` bytes, its
    /// virtio-net header) into this queue's receive buffers, and tallies the outcome. Used
    /// entries are written but not published: call [`Self::flush`] after.
    ///
    /// The loop handles the usual case inline — one buffer per frame, taken straight from the
    /// avail ring, a frame contiguous at its source — and hands anything else to
    /// [`Self::enqueue`], which covers every case.
    pub fn enqueue_burst<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = &'a Chain>,
        skip: usize,
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
        let mut run: [(*mut u8, *const u8, u16, u32); BURST] =
            [(std::ptr::null_mut(), std::ptr::null(), 0, 0); BURST];
        while frames.peek().is_some() {
            let mut n = 0;
            while n < BURST {
                let Some(&c) = frames.peek() else { break };
                if self.last_avail == self.avail_cache {
                    self.refresh_avail();
                    if self.last_avail == self.avail_cache {
                        break;
                    }
                }
                let head = self.ring.avail_entry(self.last_avail);
                let Some(from) = c.contiguous_from(skip) else {
                    break;
                };
                if head >= self.size {
                    break;
                }
                let need = hdr_len + c.len().saturating_sub(skip);
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
                run[n] = (dst, from, head, u32::try_from(need).unwrap_or(d.len));
                self.last_avail = self.last_avail.wrapping_add(1);
                frames.next();
                n += 1;
            }
            for &(dst, from, head, need) in &run[..n] {
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
                tally.bytes += len as u64;
            }
            if n == BURST {
                continue;
            }
            // The run ended on a frame the simple case does not cover (or on empty buffers).
            let Some(c) = frames.next() else { break };
            let len = c.len().saturating_sub(skip) as u64;
            match self.enqueue(Source::Chain(c, skip)) {
                Ok(()) => {
                    tally.packets += 1;
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
            return Err(if !self.features.mrg_rxbuf && nchains == 1 {
                self.counters
                    .rx_buffer_too_small
                    .fetch_add(1, Ordering::Relaxed);
                RxError::BufferTooSmall
            } else {
                self.counters.rx_no_buffers.fetch_add(1, Ordering::Relaxed);
                RxError::NoBuffers
            });
        }
        // nchains <= MAX_MRG_CHAINS (16).
        let hdr = crate::net::rx_header(u16::try_from(nchains).unwrap_or(u16::MAX));
        let contiguous = match src {
            Source::Bytes(b) => Some(b.as_ptr()),
            Source::Chain(c, skip) => c.contiguous_from(skip),
        };
        let rx = &self.rx;
        match (contiguous, nchains, rx[0].segs()) {
            // The common case: the frame is contiguous at the source and one destination
            // buffer holds header and frame: two copies, no bookkeeping.
            (Some(from), 1, [d]) => {
                // SAFETY: `d` is a translated segment of our mapped guest memory with
                // d.len >= need = hdr_len + len (one chain, one segment, cap >= need); `from`
                // is readable for the source's length (our slice, or the tail of one segment
                // of the source chain, kept mapped by its borrow).
                unsafe {
                    copy_bytes(d.ptr, hdr.as_ptr(), hdr_len);
                    copy_bytes(d.ptr.add(hdr_len), from, need - hdr_len);
                }
            }
            _ => {
                let mut w = Writer::new(&rx[..nchains]);
                w.write(&hdr[..hdr_len]);
                match src {
                    Source::Bytes(b) => w.write(b),
                    Source::Chain(c, skip) => w.copy_chain(c, skip),
                }
            }
        }
        let mut left = need;
        for c in 0..nchains {
            let (h, l) = (self.rx[c].head, self.rx[c].len());
            let n = left.min(l);
            left -= n;
            // n <= chain len <= MAX_CHAIN_BYTES.
            self.push_used(h, u32::try_from(n).unwrap_or(MAX_CHAIN_BYTES));
        }
        self.last_avail = cursor;
        Ok(())
    }
}

/// Writes sequentially across the segments of a list of chains.
struct Writer<'a> {
    chains: &'a [Chain],
    chain: usize,
    seg: usize,
    off: usize,
}

impl<'a> Writer<'a> {
    fn new(chains: &'a [Chain]) -> Self {
        Writer {
            chains,
            chain: 0,
            seg: 0,
            off: 0,
        }
    }

    /// The current destination segment with room left, advancing past full ones.
    #[inline]
    fn current(&mut self) -> Option<Seg> {
        loop {
            let c = self.chains.get(self.chain)?;
            match c.segs().get(self.seg) {
                Some(s) if self.off < s.len as usize => return Some(*s),
                Some(_) => {
                    self.seg += 1;
                    self.off = 0;
                }
                None => {
                    self.chain += 1;
                    self.seg = 0;
                    self.off = 0;
                }
            }
        }
    }

    /// Copies from `src` until done or out of room.
    ///
    /// # Safety
    /// `src` is readable for `len` bytes for the whole call.
    #[inline]
    unsafe fn write_raw(&mut self, mut src: *const u8, mut len: usize) {
        while len > 0 {
            let Some(s) = self.current() else { return };
            let n = (s.len as usize - self.off).min(len);
            // SAFETY: the destination segment was translated from the queue's mapped guest
            // memory (off + n <= its length); the caller guarantees `len` readable bytes at src.
            unsafe {
                copy_bytes(s.ptr.add(self.off), src, n);
            }
            self.off += n;
            src = src.wrapping_add(n);
            len -= n;
        }
    }

    fn write(&mut self, b: &[u8]) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.write_raw(b.as_ptr(), b.len()) }
    }

    fn copy_chain(&mut self, c: &Chain, mut skip: usize) {
        for s in c.segs() {
            let l = s.len as usize;
            if skip >= l {
                skip -= l;
                continue;
            }
            // SAFETY: the source segment is readable guest memory of the queue `c` was borrowed
            // from, which that borrow keeps mapped; skip < l.
            unsafe { self.write_raw(s.ptr.add(skip), l - skip) };
            skip = 0;
        }
    }
}

#[cfg(test)]
#[path = "virtq_tests.rs"]
mod tests;

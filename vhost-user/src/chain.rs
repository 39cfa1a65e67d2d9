//! Descriptor chains: walking one out of a guest's ring with every check (a chain is only ever
//! built by [`Walker::walk`]), reading a validated chain's bytes, writing into receive chains,
//! and the reasons a chain is refused.
//!
//! Guest rings are hostile and change under us: each descriptor is copied out once, and only the
//! copy is used (see [`crate::virtq`] for the rules and their counters).
#![allow(unsafe_code)]

use std::sync::Arc;

use crate::memory::{GuestMemory, Span};
use crate::ring::{
    copy_bytes, Descriptor, IndirectTable, RawRing, DESC_SIZE, VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};

const DESC_SIZE_U32: u32 = 16;
const _: () = assert!(DESC_SIZE == 16);

/// Buffer segments one chain may have (a descriptor that straddles two memory regions is two).
pub const MAX_SEGS: usize = 16;
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
    /// More descriptors than the queue (or table) holds: a loop (split), or a chain running
    /// past the end of the queue (packed: the ring is broken).
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
    /// Packed ring: a buffer id not below the queue size (the driver cannot get it back).
    IdOutOfRange,
    /// Packed ring: a descriptor inside a chain whose avail/used flags do not say "available"
    /// for its lap (a lying wrap counter): the chain's extent is unknown, the ring is broken.
    WrapMismatch,
}

impl ChainError {
    pub const COUNT: usize = 14;
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
        ChainError::IdOutOfRange,
        ChainError::WrapMismatch,
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
            ChainError::IdOutOfRange => "id_out_of_range",
            ChainError::WrapMismatch => "wrap_mismatch",
        }
    }
}

/// One contiguous piece of a guest buffer, in host memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    pub(crate) ptr: *mut u8,
    pub(crate) len: u32,
    /// Guest-physical address of `ptr`: what the dirty log of a migration marks.
    pub(crate) gpa: u64,
}

pub(crate) const EMPTY_SEG: Seg = Seg {
    ptr: std::ptr::null_mut(),
    len: 0,
    gpa: 0,
};

/// A validated descriptor chain: its head index and its buffer segments.
///
/// A `Chain` only exists inside the queue that walked it (and is only handed out by reference
/// borrowed from that queue), so its host pointers always point into memory the queue keeps
/// mapped.
#[derive(Debug)]
pub struct Chain {
    pub(crate) head: u16,
    pub(crate) len: u32,
    pub(crate) nsegs: u8,
    pub(crate) segs: [Seg; MAX_SEGS],
}

impl Chain {
    pub(crate) fn new() -> Self {
        Chain {
            head: 0,
            len: 0,
            nsegs: 0,
            segs: [EMPTY_SEG; MAX_SEGS],
        }
    }

    /// Makes this the chain of one buffer: `len` bytes at host `ptr`, guest-physical `gpa`,
    /// under descriptor (or buffer id) `head`. The fast case of both layouts' walks.
    #[inline(always)]
    pub(crate) fn set_one(&mut self, head: u16, ptr: *mut u8, len: u32, gpa: u64) {
        self.head = head;
        self.len = len;
        self.nsegs = 1;
        self.segs[0] = Seg { ptr, len, gpa };
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

    pub(crate) fn segs(&self) -> &[Seg] {
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
    pub(crate) fn contiguous_from(&self, mut offset: usize) -> Option<*const u8> {
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
    pub(crate) fn len(&self) -> usize {
        match self {
            Source::Chain(c, skip) => c.len().saturating_sub(*skip),
            Source::Bytes(b) => b.len(),
        }
    }

    /// Where the packet starts when it is one contiguous run of bytes (a source chain of one
    /// segment past `skip`, or bytes of our own): the case a burst copies without a walk.
    pub(crate) fn contiguous(&self) -> Option<*const u8> {
        match self {
            Source::Bytes(b) => Some(b.as_ptr()),
            Source::Chain(c, skip) => c.contiguous_from(*skip),
        }
    }
}

/// What walking a chain needs: the ring, the memory, the queue size. Kept apart from the
/// queue's mutable state so a walk can fill the queue's own scratch chains.
pub(crate) struct Walker {
    pub(crate) ring: RawRing,
    pub(crate) mem: Arc<GuestMemory>,
    pub(crate) size: u16,
    pub(crate) indirect: bool,
    /// `mem`'s largest region, tried first (`mem` keeps it mapped).
    pub(crate) hot: Span,
}

impl Walker {
    /// Walks the chain starting at `head` into `out`, validating every descriptor.
    ///
    /// Most chains are one descriptor of the right direction in one region: that case is
    /// handled inline; anything else (and anything wrong) takes the general walk, which reads
    /// the descriptors afresh and checks everything.
    #[inline(always)]
    pub(crate) fn walk(
        &self,
        head: u16,
        writable: bool,
        out: &mut Chain,
    ) -> Result<(), ChainError> {
        if head < self.size {
            let d = self.ring.read_desc(head);
            let want = if writable { VRING_DESC_F_WRITE } else { 0 };
            if d.flags == want && d.len != 0 && d.len <= MAX_CHAIN_BYTES {
                let len = u64::from(d.len);
                if let Some(p) = self
                    .hot
                    .to_host(d.addr, len)
                    .or_else(|| self.mem.gpa_to_host(d.addr, len))
                {
                    out.set_one(head, p, d.len, d.addr);
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
            append_buffer(&self.mem, out, d.addr, d.len)?;
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

/// Appends the guest buffer `[addr, addr + len)` to `out` as one or more segments (one per
/// memory region it crosses), with the checks every layout shares: inside guest memory, at most
/// [`MAX_SEGS`] segments and [`MAX_CHAIN_BYTES`] bytes in all.
pub(crate) fn append_buffer(
    mem: &GuestMemory,
    out: &mut Chain,
    mut addr: u64,
    len: u32,
) -> Result<(), ChainError> {
    let total = out.len.checked_add(len).ok_or(ChainError::ChainTooLong)?;
    if total > MAX_CHAIN_BYTES {
        return Err(ChainError::ChainTooLong);
    }
    let mut left = u64::from(len);
    while left > 0 {
        let (p, n) = mem
            .gpa_to_host_partial(addr, left)
            .ok_or(ChainError::AddressUnmapped)?;
        let k = usize::from(out.nsegs);
        if k == MAX_SEGS {
            return Err(ChainError::ChainTooLong);
        }
        out.segs[k] = Seg {
            ptr: p,
            // n <= left <= len, a u32.
            len: u32::try_from(n).map_err(|_| ChainError::ChainTooLong)?,
            gpa: addr,
        };
        out.nsegs += 1;
        left -= n;
        addr = addr.wrapping_add(n);
    }
    out.len = total;
    Ok(())
}

/// Writes a received packet into the receive chains `rx`, which hold at least
/// `hdr.len() + src.len()` bytes: the virtio-net header `hdr`, then the packet. The usual case —
/// the packet contiguous at its source, one destination buffer of one segment — is two copies
/// and no bookkeeping; anything else goes through a [`Writer`].
#[inline]
pub(crate) fn write_packet(rx: &[Chain], hdr: &[u8], src: Source<'_>) {
    match (src.contiguous(), rx) {
        (Some(from), [c]) if c.nsegs == 1 && c.segs[0].len as usize >= hdr.len() + src.len() => {
            let d = c.segs[0];
            // SAFETY: `d` is a translated segment of mapped guest memory (kept mapped by the
            // borrow of its queue) with room for header and packet, checked just above; `from`
            // is readable for the source's length (our slice, or the tail of one segment of the
            // source chain, kept mapped by its borrow).
            unsafe {
                copy_bytes(d.ptr, hdr.as_ptr(), hdr.len());
                copy_bytes(d.ptr.add(hdr.len()), from, src.len());
            }
        }
        _ => {
            let mut w = Writer::new(rx);
            w.write(hdr);
            match src {
                Source::Bytes(b) => w.write(b),
                Source::Chain(c, skip) => w.copy_chain(c, skip),
            }
        }
    }
}

/// Records in the dirty log the first `n` bytes written into chain `c` (the writer fills a
/// chain's segments in order).
#[inline]
pub(crate) fn log_filled(log: &mut crate::dirty_log::QueueLog, c: &Chain, n: usize) {
    let mut k = n;
    for s in c.segs() {
        let w = k.min(s.len as usize);
        log.wrote(s.gpa, w as u64);
        k -= w;
    }
}

/// Writes sequentially across the segments of a list of chains.
pub(crate) struct Writer<'a> {
    chains: &'a [Chain],
    chain: usize,
    seg: usize,
    off: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(chains: &'a [Chain]) -> Self {
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

    pub(crate) fn write(&mut self, b: &[u8]) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.write_raw(b.as_ptr(), b.len()) }
    }

    pub(crate) fn copy_chain(&mut self, c: &Chain, mut skip: usize) {
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

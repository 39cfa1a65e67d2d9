//! Raw access to the three areas of a split virtqueue (descriptor table, available ring, used
//! ring) in memory shared with another party that may write it at any moment.
//!
//! This is the only module that dereferences ring pointers. Every access is a volatile copy or an
//! atomic load/store of one field: nothing here creates a reference into shared memory, and
//! every index is masked with `size - 1` (sizes are powers of two, checked at construction), so
//! no value the peer writes can move an access outside the areas validated when the ring was
//! built.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

/// Descriptor flag: the chain continues at `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// Used-ring flag: the device does not want kicks.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// Avail-ring flag: the driver does not want interrupts.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Largest queue the spec allows for a split ring.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Size in bytes of one descriptor.
pub const DESC_SIZE: usize = 16;

/// Bytes of the descriptor table of a queue of `n` entries.
pub const fn desc_table_bytes(n: u16) -> usize {
    DESC_SIZE * n as usize
}

/// Bytes of the available ring (flags, idx, ring[n], used_event).
pub const fn avail_ring_bytes(n: u16) -> usize {
    6 + 2 * n as usize
}

/// Bytes of the used ring (flags, idx, ring[n] of (id, len), avail_event).
pub const fn used_ring_bytes(n: u16) -> usize {
    6 + 8 * n as usize
}

/// One descriptor, copied out of shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Descriptor {
    /// Decodes the two little-endian 64-bit words of a descriptor.
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // deliberate: unpacking bit fields
    fn from_words(addr: u64, rest: u64) -> Self {
        let rest = u64::from_le(rest);
        Descriptor {
            addr: u64::from_le(addr),
            len: rest as u32,
            flags: (rest >> 32) as u16,
            next: (rest >> 48) as u16,
        }
    }

    /// Reads a descriptor at `p` with exactly two 8-byte volatile loads (one copy, never
    /// re-read), or sixteen byte loads when `p` is not 8-aligned (an unaligned indirect table).
    ///
    /// # Safety
    /// `p` points to 16 readable bytes.
    #[inline(always)]
    unsafe fn read_at(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes; the u64 loads are only used when the
        // pointer is 8-aligned.
        unsafe {
            if (p as usize).is_multiple_of(8) {
                let w = p.cast::<u64>();
                Descriptor::from_words(ptr::read_volatile(w), ptr::read_volatile(w.add(1)))
            } else {
                Descriptor::from_bytes(ptr::read_volatile(p.cast::<[u8; 16]>()))
            }
        }
    }

    fn from_bytes(b: [u8; 16]) -> Self {
        let mut a8 = [0u8; 8];
        a8.copy_from_slice(&b[0..8]);
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&b[8..12]);
        Descriptor {
            addr: u64::from_le_bytes(a8),
            len: u32::from_le_bytes(a4),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }

    #[cfg(test)]
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Pointers to a split ring's areas, valid for as long as the memory holding them is mapped.
#[derive(Debug, Clone, Copy)]
pub struct RawRing {
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    mask: u16,
    size: u16,
}

// SAFETY: the pointers refer to shared memory accessed only with volatile/atomic operations;
// the owner (a queue holding the memory's `Arc`) decides which thread uses the ring.
unsafe impl Send for RawRing {}

impl RawRing {
    /// # Safety
    /// `size` is a power of two no larger than [`MAX_QUEUE_SIZE`]; `desc` points to
    /// [`desc_table_bytes`]`(size)` bytes aligned to 16, `avail` to [`avail_ring_bytes`] aligned
    /// to 2, `used` to [`used_ring_bytes`] aligned to 4, all mapped readable and writable for as
    /// long as this `RawRing` (or a copy) is used.
    pub unsafe fn new(desc: *mut u8, avail: *mut u8, used: *mut u8, size: u16) -> Self {
        debug_assert!(size.is_power_of_two() && size <= MAX_QUEUE_SIZE);
        debug_assert!((desc as usize).is_multiple_of(16) && (avail as usize).is_multiple_of(2));
        debug_assert!((used as usize).is_multiple_of(4));
        RawRing {
            desc,
            avail,
            used,
            mask: size - 1,
            size,
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Host address of the descriptor table (for prefetching and layout checks).
    pub fn desc_ptr(&self) -> *const u8 {
        self.desc
    }

    fn u16_at(&self, p: *mut u8) -> &AtomicU16 {
        // SAFETY: callers pass a pointer inside an area validated at construction, at an even
        // offset from a base aligned to at least 2; AtomicU16 has the size and alignment of u16,
        // and the area is live while `self` is used. All access to the word is atomic, so the
        // shared reference to the atomic cell is sound even though the peer writes it.
        unsafe { AtomicU16::from_ptr(p.cast()) }
    }

    /// Host address of descriptor `i` (index masked), for prefetching.
    #[inline]
    pub fn desc_addr(&self, i: u16) -> *const u8 {
        self.desc
            .wrapping_add(DESC_SIZE * usize::from(i & self.mask))
            .cast_const()
    }

    /// Descriptor `i` of the table (index masked).
    #[inline]
    pub fn read_desc(&self, i: u16) -> Descriptor {
        let off = DESC_SIZE * usize::from(i & self.mask);
        // SAFETY: off + 16 <= desc_table_bytes(size) because the index is masked.
        unsafe { Descriptor::read_at(self.desc.add(off)) }
    }

    /// Writes descriptor `i` (driver side).
    #[inline]
    pub fn write_desc(&self, i: u16, d: Descriptor) {
        let off = DESC_SIZE * usize::from(i & self.mask);
        let hi = u64::from(d.len) | u64::from(d.flags) << 32 | u64::from(d.next) << 48;
        // SAFETY: as in `read_desc`; the area is writable and 16-aligned (checked at
        // construction), so both words are aligned. Two word stores: a volatile [u8; 16] write
        // is sixteen byte stores.
        unsafe {
            let p = self.desc.add(off).cast::<u64>();
            ptr::write_volatile(p, d.addr.to_le());
            ptr::write_volatile(p.add(1), hi.to_le());
        }
    }

    /// Writes descriptor `i` only when it differs from what is there (driver side). A queue that
    /// reuses its descriptors in order finds them unchanged, and the device's cached copy of the
    /// line stays valid: no cache-line transfer per packet for the descriptor table.
    #[inline]
    pub fn write_desc_if_changed(&self, i: u16, d: Descriptor) {
        if self.read_desc(i) != d {
            self.write_desc(i, d);
        }
    }

    #[inline]
    pub fn avail_flags(&self) -> u16 {
        self.u16_at(self.avail).load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_avail_flags(&self, v: u16) {
        self.u16_at(self.avail).store(v, Ordering::Relaxed)
    }

    /// The driver's published avail index; acquire so ring entries read after it are current.
    #[inline]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY (pointer arithmetic): offset 2 is inside the avail area.
        self.u16_at(self.avail.wrapping_add(2))
            .load(Ordering::Acquire)
    }

    /// Publishes the avail index (driver side); release orders the entries written before it.
    #[inline]
    pub fn set_avail_idx(&self, v: u16) {
        self.u16_at(self.avail.wrapping_add(2))
            .store(v, Ordering::Release)
    }

    #[inline]
    pub fn avail_entry(&self, i: u16) -> u16 {
        let off = 4 + 2 * usize::from(i & self.mask);
        self.u16_at(self.avail.wrapping_add(off))
            .load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_avail_entry(&self, i: u16, head: u16) {
        let off = 4 + 2 * usize::from(i & self.mask);
        self.u16_at(self.avail.wrapping_add(off))
            .store(head, Ordering::Relaxed)
    }

    /// Like [`Self::set_avail_entry`], leaving the line untouched when it already says `head`.
    #[inline]
    pub fn set_avail_entry_if_changed(&self, i: u16, head: u16) {
        if self.avail_entry(i) != head {
            self.set_avail_entry(i, head);
        }
    }

    /// `used_event` (EVENT_IDX): the used index at which the driver wants an interrupt.
    #[inline]
    pub fn used_event(&self) -> u16 {
        let off = 4 + 2 * usize::from(self.size);
        self.u16_at(self.avail.wrapping_add(off))
            .load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_used_event(&self, v: u16) {
        let off = 4 + 2 * usize::from(self.size);
        self.u16_at(self.avail.wrapping_add(off))
            .store(v, Ordering::Relaxed)
    }

    #[inline]
    pub fn used_flags(&self) -> u16 {
        self.u16_at(self.used).load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_used_flags(&self, v: u16) {
        self.u16_at(self.used).store(v, Ordering::Relaxed)
    }

    /// The device's published used index; acquire so entries read after it are current.
    #[inline]
    pub fn used_idx(&self) -> u16 {
        self.u16_at(self.used.wrapping_add(2))
            .load(Ordering::Acquire)
    }

    /// Publishes the used index (device side); release orders the entries written before it.
    #[inline]
    pub fn set_used_idx(&self, v: u16) {
        self.u16_at(self.used.wrapping_add(2))
            .store(v, Ordering::Release)
    }

    /// Used element `i`: (id, len).
    #[inline]
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let off = 4 + 8 * usize::from(i & self.mask);
        // SAFETY: off + 8 <= used_ring_bytes(size) (masked index); the base is 4-aligned and so
        // is off, so both u32 reads are aligned; volatile reads form no reference.
        unsafe {
            let p = self.used.add(off).cast::<u32>();
            (
                u32::from_le(ptr::read_volatile(p)),
                u32::from_le(ptr::read_volatile(p.add(1))),
            )
        }
    }

    #[inline]
    pub fn set_used_elem(&self, i: u16, id: u32, len: u32) {
        let off = 4 + 8 * usize::from(i & self.mask);
        // SAFETY: as in `used_elem`; the area is writable.
        unsafe {
            let p = self.used.add(off).cast::<u32>();
            ptr::write_volatile(p, id.to_le());
            ptr::write_volatile(p.add(1), len.to_le());
        }
    }

    /// Like [`Self::set_used_elem`], leaving the line untouched when it already holds the entry
    /// (an in-order queue that returns its buffers with the same lengths writes the same entries
    /// lap after lap; skipping them keeps the driver's cached copy valid).
    #[inline]
    pub fn set_used_elem_if_changed(&self, i: u16, id: u32, len: u32) {
        if self.used_elem(i) != (id, len) {
            self.set_used_elem(i, id, len);
        }
    }

    /// Host address of used element `i` (index masked), for prefetching.
    #[inline]
    pub fn used_elem_addr(&self, i: u16) -> *const u8 {
        self.used
            .wrapping_add(4 + 8 * usize::from(i & self.mask))
            .cast_const()
    }

    /// `avail_event` (EVENT_IDX): the avail index at which the device wants a kick.
    #[inline]
    pub fn avail_event(&self) -> u16 {
        let off = 4 + 8 * usize::from(self.size);
        self.u16_at(self.used.wrapping_add(off))
            .load(Ordering::Relaxed)
    }

    #[inline]
    pub fn set_avail_event(&self, v: u16) {
        let off = 4 + 8 * usize::from(self.size);
        self.u16_at(self.used.wrapping_add(off))
            .store(v, Ordering::Relaxed)
    }
}

/// An indirect descriptor table: `n` descriptors at a host address inside guest memory.
#[derive(Debug, Clone, Copy)]
pub struct IndirectTable {
    base: *const u8,
    n: u32,
}

impl IndirectTable {
    /// # Safety
    /// `base` points to `n * 16` readable bytes that stay mapped while the table is used.
    pub unsafe fn new(base: *const u8, n: u32) -> Self {
        IndirectTable { base, n }
    }

    pub fn len(&self) -> u32 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Descriptor `i`, or `None` past the end of the table.
    #[inline]
    pub fn read(&self, i: u32) -> Option<Descriptor> {
        if i >= self.n {
            return None;
        }
        // SAFETY: i < n, so the 16 bytes at base + 16 * i are inside the table.
        Some(unsafe { Descriptor::read_at(self.base.add(DESC_SIZE * i as usize)) })
    }
}

/// Copies `len` bytes between two host addresses in mapped memory.
///
/// Frames are mostly small: up to 64 bytes the copy is inline, as a few unaligned 16/8/4-byte
/// loads all done before the stores (so overlapping ranges still copy correctly), which avoids a
/// call into libc's memmove per header and per 64-byte frame. Longer copies use memmove.
///
/// # Safety
/// Both ranges are mapped for `len` bytes (source readable, destination writable) for the whole
/// call. They may be written concurrently by a guest: the copy then sees some mix of old and new
/// bytes, which for packet payload is the guest's own problem and never ours.
#[inline(always)]
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: every access below is inside [src, src + len) or [dst, dst + len), which the
    // caller guarantees are mapped; unaligned reads/writes need no alignment.
    unsafe {
        if len > 64 {
            ptr::copy(src, dst, len);
        } else if len >= 32 {
            let a = ptr::read_unaligned(src.cast::<u128>());
            let b = ptr::read_unaligned(src.add(16).cast::<u128>());
            let c = ptr::read_unaligned(src.add(len - 32).cast::<u128>());
            let d = ptr::read_unaligned(src.add(len - 16).cast::<u128>());
            ptr::write_unaligned(dst.cast::<u128>(), a);
            ptr::write_unaligned(dst.add(16).cast::<u128>(), b);
            ptr::write_unaligned(dst.add(len - 32).cast::<u128>(), c);
            ptr::write_unaligned(dst.add(len - 16).cast::<u128>(), d);
        } else if len >= 16 {
            let a = ptr::read_unaligned(src.cast::<u128>());
            let b = ptr::read_unaligned(src.add(len - 16).cast::<u128>());
            ptr::write_unaligned(dst.cast::<u128>(), a);
            ptr::write_unaligned(dst.add(len - 16).cast::<u128>(), b);
        } else if len >= 8 {
            let a = ptr::read_unaligned(src.cast::<u64>());
            let b = ptr::read_unaligned(src.add(len - 8).cast::<u64>());
            ptr::write_unaligned(dst.cast::<u64>(), a);
            ptr::write_unaligned(dst.add(len - 8).cast::<u64>(), b);
        } else if len >= 4 {
            let a = ptr::read_unaligned(src.cast::<u32>());
            let b = ptr::read_unaligned(src.add(len - 4).cast::<u32>());
            ptr::write_unaligned(dst.cast::<u32>(), a);
            ptr::write_unaligned(dst.add(len - 4).cast::<u32>(), b);
        } else {
            let mut tmp = [0u8; 4];
            for (i, t) in tmp.iter_mut().enumerate().take(len) {
                *t = *src.add(i);
            }
            for (i, t) in tmp.iter().enumerate().take(len) {
                *dst.add(i) = *t;
            }
        }
    }
}

/// Asks the CPU to start loading the cache line holding `p`. A hint only: it never faults and
/// has no effect on memory, whatever the address (so any pointer, even a guest's, is fine).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    // SAFETY: PREFETCHT0 is architecturally a hint that cannot fault or change memory, even for
    // invalid addresses; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
}

/// Asks the CPU to fetch the cache line holding `p` for writing (PREFETCHW): a line another core
/// holds is then invalidated there ahead of the store, instead of stalling the store queue when
/// the store comes. A hint like [`prefetch`]: never faults, whatever the address.
#[inline(always)]
pub fn prefetch_write(p: *const u8) {
    // SAFETY: PREFETCHW is a hint that cannot fault or change memory, even for invalid
    // addresses; CPUs without it (pre-Broadwell Intel) execute the 0F 0D opcode as a NOP.
    unsafe {
        std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
    }
}

/// Ring layout checks shared by the device and the driver: the queue size and the alignment of
/// each area, as the virtio spec (2.7) requires.
pub fn check_layout(size: u16, desc: u64, avail: u64, used: u64) -> Result<(), &'static str> {
    if size == 0 {
        return Err("queue size 0");
    }
    if !size.is_power_of_two() {
        return Err("queue size is not a power of two");
    }
    if size > MAX_QUEUE_SIZE {
        return Err("queue size above 32768");
    }
    if !desc.is_multiple_of(16) {
        return Err("descriptor table not 16-byte aligned");
    }
    if !avail.is_multiple_of(2) {
        return Err("available ring not 2-byte aligned");
    }
    if !used.is_multiple_of(4) {
        return Err("used ring not 4-byte aligned");
    }
    Ok(())
}

/// `vring_need_event` from the virtio spec: true when the index moved past `event`.
#[inline]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_spec_cases() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 3));
        assert!(!need_event(10, 10, 3));
        assert!(need_event(65535, 0, 65534));
    }

    #[test]
    fn test_layout_queue_size_rejects() {
        assert!(check_layout(0, 0, 0, 0).is_err());
        assert!(check_layout(100, 0, 0, 0).is_err());
        assert!(check_layout(256, 8, 0, 0).is_err());
        assert!(check_layout(256, 0, 1, 0).is_err());
        assert!(check_layout(256, 0, 0, 2).is_err());
        assert!(check_layout(32768, 0, 0, 0).is_ok());
    }

    #[test]
    fn copy_bytes_every_small_length_and_overlap() {
        for len in 0..200usize {
            let src: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut dst = vec![0u8; len + 2];
            // SAFETY: both buffers hold at least len bytes.
            unsafe { copy_bytes(dst.as_mut_ptr().add(1), src.as_ptr(), len) };
            assert_eq!(&dst[1..=len], &src[..], "len {len}");
            assert_eq!(dst[0], 0);
            assert_eq!(dst[len + 1], 0);
            // Overlapping (forward by 3): must behave like memmove.
            let mut buf: Vec<u8> = (0..len + 3).map(|i| i as u8).collect();
            let want: Vec<u8> = buf[..len].to_vec();
            let p = buf.as_mut_ptr();
            // SAFETY: [p, p+len) and [p+3, p+3+len) are inside buf.
            unsafe { copy_bytes(p.add(3), p, len) };
            assert_eq!(&buf[3..3 + len], &want[..], "overlap len {len}");
        }
    }

    #[test]
    fn descriptor_bytes_roundtrip() {
        let d = Descriptor {
            addr: 0x1122_3344_5566_7788,
            len: 0x99aa_bbcc,
            flags: 0xddee,
            next: 0x0102,
        };
        assert_eq!(Descriptor::from_bytes(d.to_bytes()), d);
    }
}

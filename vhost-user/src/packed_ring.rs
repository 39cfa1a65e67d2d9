//! Raw access to the areas of a packed virtqueue (virtio 1.1+, "Packed Virtqueues"): the
//! descriptor ring and the two event suppression structures, in memory shared with another
//! party that may write it at any moment.
//!
//! Like [`crate::ring`] for split rings, this is the only module that dereferences packed ring
//! pointers: every access is a volatile copy or an atomic load/store of one field, no reference
//! into shared memory is ever made, and every position is reduced below the queue size, so no
//! value the peer writes can move an access outside the areas validated when the ring was built.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::ring::{Descriptor, DESC_SIZE, MAX_QUEUE_SIZE};

/// Descriptor flag (packed): the driver's avail bit.
pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag (packed): the used bit.
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;
/// Event suppression flags: notify on every event.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression flags: never notify.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression flags: notify when the descriptor at `off_wrap` is reached (EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Bytes of an event suppression structure.
pub const EVENT_AREA_BYTES: usize = 4;

/// Bytes of the descriptor ring of a queue of `n` entries.
pub const fn packed_desc_ring_bytes(n: u16) -> usize {
    DESC_SIZE * n as usize
}

/// The avail/used bits of a descriptor the driver makes available in a lap whose wrap counter is
/// `wrap` (and that the device writes back used in the same lap).
#[inline(always)]
pub const fn avail_flags(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL
    } else {
        VRING_PACKED_DESC_F_USED
    }
}

/// The avail/used bits of a used descriptor written in a lap whose wrap counter is `wrap`.
#[inline(always)]
pub const fn used_flags(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED
    } else {
        0
    }
}

/// Whether `flags` say "available" in a lap whose wrap counter is `wrap`: the avail bit equals
/// the wrap counter and the used bit does not. Both bits set, or both clear, is never available.
#[inline(always)]
pub const fn is_avail(flags: u16, wrap: bool) -> bool {
    flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) == avail_flags(wrap)
}

/// Whether `flags` say "used" in a lap whose wrap counter is `wrap` (driver side).
#[inline(always)]
pub const fn is_used(flags: u16, wrap: bool) -> bool {
    flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) == used_flags(wrap)
}

/// One packed descriptor, copied out of shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl PackedDesc {
    /// An entry of an indirect table read with the split layout (the table has the packed
    /// layout: bytes 12..14 are the id, 14..16 the flags).
    pub fn from_split_layout(d: Descriptor) -> Self {
        PackedDesc {
            addr: d.addr,
            len: d.len,
            id: d.flags,
            flags: d.next,
        }
    }
}

/// Pointers to a packed ring's areas, valid for as long as the memory holding them is mapped.
#[derive(Debug, Clone, Copy)]
pub struct RawPackedRing {
    desc: *mut u8,
    driver: *mut u8,
    device: *mut u8,
    size: u16,
}

// SAFETY: the pointers refer to shared memory accessed only with volatile/atomic operations;
// the owner (a queue holding the memory's `Arc`) decides which thread uses the ring.
unsafe impl Send for RawPackedRing {}

impl RawPackedRing {
    /// # Safety
    /// `1 <= size <= MAX_QUEUE_SIZE`; `desc` points to [`packed_desc_ring_bytes`]`(size)` bytes
    /// aligned to 16, `driver` and `device` to [`EVENT_AREA_BYTES`] bytes aligned to 4, all
    /// mapped readable and writable for as long as this ring (or a copy) is used.
    pub unsafe fn new(desc: *mut u8, driver: *mut u8, device: *mut u8, size: u16) -> Self {
        debug_assert!((1..=MAX_QUEUE_SIZE).contains(&size));
        debug_assert!((desc as usize).is_multiple_of(16));
        debug_assert!((driver as usize).is_multiple_of(4) && (device as usize).is_multiple_of(4));
        RawPackedRing {
            desc,
            driver,
            device,
            size,
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Byte offset of descriptor `pos` (reduced below the size: callers keep positions below
    /// it, the reduction is what makes a wrong one harmless).
    #[inline(always)]
    fn off(&self, pos: u16) -> usize {
        let i = if pos < self.size {
            pos
        } else {
            pos % self.size
        };
        DESC_SIZE * usize::from(i)
    }

    fn u16_at(&self, p: *mut u8) -> &AtomicU16 {
        // SAFETY: callers pass a pointer inside an area validated at construction, at an even
        // offset from a base aligned to at least 4; AtomicU16 has the size and alignment of u16
        // and the area is live while `self` is used. All access to the word is atomic.
        unsafe { AtomicU16::from_ptr(p.cast()) }
    }

    /// Host address of descriptor `pos`, for prefetching.
    #[inline]
    pub fn desc_addr(&self, pos: u16) -> *const u8 {
        self.desc.wrapping_add(self.off(pos)).cast_const()
    }

    /// The flags of descriptor `pos`; acquire, so the fields read after them are at least as
    /// new.
    #[inline(always)]
    pub fn flags(&self, pos: u16) -> u16 {
        self.u16_at(self.desc.wrapping_add(self.off(pos) + 14))
            .load(Ordering::Acquire)
    }

    /// Descriptor `pos`: the flags first (acquire), then the rest, each field read once.
    #[inline(always)]
    pub fn read_desc(&self, pos: u16) -> PackedDesc {
        let off = self.off(pos);
        let flags = self.flags(pos);
        // SAFETY: off + 16 <= packed_desc_ring_bytes(size) (reduced position); the ring is
        // 16-aligned, so the u64 at +0, the u32 at +8 and the u16 at +12 are aligned.
        unsafe {
            let p = self.desc.add(off);
            PackedDesc {
                addr: u64::from_le(ptr::read_volatile(p.cast::<u64>())),
                len: u32::from_le(ptr::read_volatile(p.add(8).cast::<u32>())),
                id: u16::from_le(ptr::read_volatile(p.add(12).cast::<u16>())),
                flags,
            }
        }
    }

    /// Writes a used descriptor (device side): id and length, then the flags with release, so
    /// a driver that sees the flags sees the rest.
    #[inline(always)]
    pub fn write_used(&self, pos: u16, id: u16, len: u32, flags: u16) {
        let off = self.off(pos);
        // SAFETY: as in `read_desc`; the area is writable.
        unsafe {
            let p = self.desc.add(off);
            ptr::write_volatile(p.add(8).cast::<u32>(), len.to_le());
            ptr::write_volatile(p.add(12).cast::<u16>(), id.to_le());
        }
        self.u16_at(self.desc.wrapping_add(off + 14))
            .store(flags.to_le(), Ordering::Release);
    }

    /// Writes an available descriptor (driver side): everything but the flags, then the flags
    /// with release.
    #[inline]
    pub fn write_desc(&self, pos: u16, d: PackedDesc) {
        let off = self.off(pos);
        // SAFETY: as in `read_desc`; the area is writable.
        unsafe {
            let p = self.desc.add(off);
            ptr::write_volatile(p.cast::<u64>(), d.addr.to_le());
            ptr::write_volatile(p.add(8).cast::<u32>(), d.len.to_le());
            ptr::write_volatile(p.add(12).cast::<u16>(), d.id.to_le());
        }
        self.u16_at(self.desc.wrapping_add(off + 14))
            .store(d.flags.to_le(), Ordering::Release);
    }

    /// The driver event suppression structure (read by the device): (off_wrap, flags).
    #[inline]
    pub fn driver_event(&self) -> (u16, u16) {
        (
            self.u16_at(self.driver).load(Ordering::Relaxed),
            self.u16_at(self.driver.wrapping_add(2))
                .load(Ordering::Relaxed),
        )
    }

    #[inline]
    pub fn set_driver_event(&self, off_wrap: u16, flags: u16) {
        self.u16_at(self.driver).store(off_wrap, Ordering::Relaxed);
        self.u16_at(self.driver.wrapping_add(2))
            .store(flags, Ordering::Release);
    }

    /// The device event suppression structure (written by the device): (off_wrap, flags).
    #[inline]
    pub fn device_event(&self) -> (u16, u16) {
        (
            self.u16_at(self.device).load(Ordering::Relaxed),
            self.u16_at(self.device.wrapping_add(2))
                .load(Ordering::Acquire),
        )
    }

    #[inline]
    pub fn set_device_event(&self, off_wrap: u16, flags: u16) {
        self.u16_at(self.device).store(off_wrap, Ordering::Relaxed);
        self.u16_at(self.device.wrapping_add(2))
            .store(flags, Ordering::Release);
    }
}

/// Packed ring layout checks: the size (any value 1..=32768: packed sizes need not be powers of
/// two) and the alignment of each area (16 for the descriptors, 4 for the event structures).
pub fn check_packed_layout(
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
) -> Result<(), &'static str> {
    if size == 0 {
        return Err("queue size 0");
    }
    if size > MAX_QUEUE_SIZE {
        return Err("queue size above 32768");
    }
    if !desc.is_multiple_of(16) {
        return Err("descriptor ring not 16-byte aligned");
    }
    if !driver.is_multiple_of(4) {
        return Err("driver event suppression area not 4-byte aligned");
    }
    if !device.is_multiple_of(4) {
        return Err("device event suppression area not 4-byte aligned");
    }
    Ok(())
}

/// Advances a ring position by `n` descriptors, flipping the wrap counter at each lap.
#[inline(always)]
pub fn advance(pos: u16, wrap: bool, n: u32, size: u16) -> (u16, bool) {
    let size32 = u32::from(size);
    let total = u32::from(pos) + n;
    if total < size32 {
        // total < size <= u16::MAX.
        return (u16::try_from(total).unwrap_or(0), wrap);
    }
    let laps = total / size32;
    // The remainder is below size.
    let p = u16::try_from(total % size32).unwrap_or(0);
    (p, wrap ^ (laps % 2 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avail_and_used_bits_per_lap() {
        assert!(is_avail(VRING_PACKED_DESC_F_AVAIL, true));
        assert!(!is_avail(VRING_PACKED_DESC_F_AVAIL, false));
        assert!(is_avail(VRING_PACKED_DESC_F_USED, false));
        assert!(!is_avail(VRING_PACKED_DESC_F_USED, true));
        let both = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
        assert!(!is_avail(both, true) && !is_avail(both, false));
        assert!(!is_avail(0, true) && !is_avail(0, false));
        assert!(is_used(both, true) && is_used(0, false));
    }

    #[test]
    fn advance_flips_wrap_per_lap() {
        assert_eq!(advance(0, true, 1, 256), (1, true));
        assert_eq!(advance(255, true, 1, 256), (0, false));
        assert_eq!(advance(250, false, 10, 256), (4, true));
        assert_eq!(advance(3, true, 2 * 5, 5), (3, true));
        assert_eq!(advance(3, true, 3 * 5 + 1, 5), (4, false));
        assert_eq!(advance(0, true, 0, 1), (0, true));
        assert_eq!(advance(0, true, 1, 1), (0, false));
    }

    #[test]
    fn test_packed_layout_rejects() {
        assert!(check_packed_layout(0, 0, 0, 0).is_err());
        assert!(check_packed_layout(256, 8, 0, 0).is_err());
        assert!(check_packed_layout(256, 0, 2, 0).is_err());
        assert!(check_packed_layout(256, 0, 0, 2).is_err());
        assert!(check_packed_layout(100, 0, 4, 8).is_ok(), "any size");
        assert!(check_packed_layout(32768, 0, 0, 0).is_ok());
    }
}

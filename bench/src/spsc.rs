//! A single-producer single-consumer ring of fixed-size slots in shared memory: one memfd mapped
//! twice, the producer writing through one mapping and the consumer reading through the other,
//! as two processes (or two VMs) sharing memory would. It is the least a packet move between two
//! cores can cost, so `ring-limit` and `ring-limit-desc` measure it as this machine's limit.
//!
//! Layout: the producer's index at offset 0 and the consumer's at offset 128 (their own cache
//! line pairs, so adjacent-line prefetch does not couple them), slots from offset 4096, then an
//! optional byte pool the producer fills and the consumer reads in place (the buffers a
//! descriptor ring points into). Indices count slots ever published/released; each side caches
//! the other's index and reloads it only when it runs out, and publishes once per batch
//! (Lamport's ring with cached indices).
//!
//! The ways of moving a cache line to the other core that the limit sweeps live here too: a
//! write-prefetch of the slots the producer fills next, a prefetch of the slots the consumer
//! reads next, non-temporal stores, skipping a store whose bytes are already there (the line then
//! stays shared instead of bouncing), and the slot stride.
//!
//! Safety rests on the split: [`channel`] hands out exactly one [`Producer`] and one
//! [`Consumer`]; the producer writes only slots the consumer has released, the consumer reads
//! only slots the producer has published, and the Release/Acquire pair on the indices orders the
//! slot bytes with them (an `sfence` first when non-temporal stores were used).
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use vhost_user::mmap::{create_memfd, Mapping};
use vhost_user::ring::copy_bytes;

const HEAD: usize = 0;
const TAIL: usize = 128;
const SLOTS_OFFSET: usize = 4096;

/// 2 MiB: the size of the hugepages a ring is backed by when the machine has free ones.
const HUGE_PAGE: usize = 2 << 20;

/// Creates a ring of `slots` (a power of two) slots of `stride` bytes each, and a pool of
/// `pool` bytes after them. With `huge`, on 2 MiB hugepages when free ones are there (as the
/// fast path's dedicated regions are), else on 4 KiB pages: [`Producer::huge`] says which.
/// A pool of 4096 buffers of 1.5 KiB spans 1 536 pages of 4 KiB, more than the TLB holds, so
/// at big frames the page size alone moves the limit.
pub fn channel(
    slots: usize,
    stride: usize,
    pool: usize,
    huge: bool,
) -> io::Result<(Producer, Consumer)> {
    if !slots.is_power_of_two() || stride == 0 || !stride.is_multiple_of(16) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ring slots must be a power of two and slot strides a non-zero multiple of 16",
        ));
    }
    let pool_offset = slots
        .checked_mul(stride)
        .and_then(|b| b.checked_add(SLOTS_OFFSET))
        .map(|b| b.next_multiple_of(4096))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring too large"))?;
    let len = pool_offset
        .checked_add(pool.next_multiple_of(4096))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pool too large"))?;
    let (fd, len, huge) = match huge.then(|| {
        let l = len.next_multiple_of(HUGE_PAGE);
        create_memfd("bench-spsc-ring", l as u64, true).map(|fd| (fd, l))
    }) {
        Some(Ok((fd, l))) => (fd, l, true),
        _ => (
            create_memfd("bench-spsc-ring", len as u64, false)?,
            len,
            false,
        ),
    };
    let ring = |map| Ring {
        map,
        mask: slots - 1,
        slots,
        stride,
        pool_offset,
        pool,
        huge,
    };
    let p = ring(Mapping::map_shared(&fd, len)?);
    let c = ring(Mapping::map_shared(&fd, len)?);
    Ok((
        Producer {
            ring: p,
            head: 0,
            cached_tail: 0,
            writable: 0,
            streamed: false,
        },
        Consumer {
            ring: c,
            tail: 0,
            cached_head: 0,
            readable: 0,
        },
    ))
}

/// One side's mapping of the ring.
struct Ring {
    map: Mapping,
    mask: usize,
    slots: usize,
    stride: usize,
    pool_offset: usize,
    pool: usize,
    /// On 2 MiB hugepages.
    huge: bool,
}

impl Ring {
    fn index(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is HEAD or TAIL, 8-byte aligned offsets inside the page-aligned mapping,
        // which lives as long as `self`. AtomicU64 has u64's layout, the memory starts zeroed
        // (a valid u64), and every access to it, from either mapping, is atomic.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Address of the slot of index `idx`.
    #[inline]
    fn slot(&self, idx: u64) -> *mut u8 {
        // Wrapping to usize keeps the low bits, which is all the mask looks at.
        #[allow(clippy::cast_possible_truncation)]
        let i = (idx as usize) & self.mask;
        self.map
            .as_ptr()
            .wrapping_add(SLOTS_OFFSET + i * self.stride)
    }

    /// Address of pool byte `off`, when `[off, off + len)` lies in the pool.
    #[inline]
    fn pool_at(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        (end <= self.pool).then(|| self.map.as_ptr().wrapping_add(self.pool_offset + off))
    }
}

/// Asks for the line at `p` in a writable state, without waiting for it.
#[inline(always)]
fn prefetch_write(p: *const u8) {
    // SAFETY: a prefetch never faults and touches no architectural state; `p` need not be
    // valid. PREFETCHW is a hint (a NOP on CPUs without it).
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
}

/// Asks for the line at `p` in the cache, without waiting for it.
#[inline(always)]
fn prefetch_read(p: *const u8) {
    // SAFETY: as for prefetch_write: a hint that never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
}

/// Two unaligned little-endian u64 stores at `p`.
///
/// # Safety
/// `[p, p + 16)` is mapped, writable, and touched by no one else meanwhile.
#[inline(always)]
unsafe fn store_words(p: *mut u8, words: [u64; 2]) {
    // SAFETY: the caller's contract.
    unsafe {
        std::ptr::write_unaligned(p.cast::<u64>(), words[0].to_le());
        std::ptr::write_unaligned(p.add(8).cast::<u64>(), words[1].to_le());
    }
}

/// The writing side.
pub struct Producer {
    ring: Ring,
    head: u64,
    cached_tail: u64,
    /// Slots known free from `head` on (see [`Producer::free`]).
    writable: usize,
    /// A non-temporal store happened since the last publish (it needs an `sfence`).
    streamed: bool,
}

impl Producer {
    /// Whether the ring is on 2 MiB hugepages (see [`channel`]).
    pub fn huge(&self) -> bool {
        self.ring.huge
    }

    /// Slots free for writing, reloading the consumer's index when fewer than `want` are known.
    #[inline]
    pub fn free(&mut self, want: usize) -> usize {
        let known = self.ring.slots - crate::num::small(self.head - self.cached_tail);
        self.writable = if known >= want {
            known
        } else {
            self.cached_tail = self.ring.index(TAIL).load(Ordering::Acquire);
            self.ring.slots - crate::num::small(self.head - self.cached_tail)
        };
        self.writable
    }

    /// Copies `data` into the `i`-th free slot. `i` below what [`Producer::free`] returned.
    #[inline]
    pub fn write(&mut self, i: usize, data: &[u8]) {
        assert!(i < self.writable && data.len() <= self.ring.stride);
        let p = self.ring.slot(self.head + i as u64);
        // SAFETY: the slot is inside the mapping (index masked, stride >= len); it is free
        // (i < writable: the consumer released it, Acquire on its index), so only this side
        // touches it until `publish`.
        unsafe { copy_bytes(p, data.as_ptr(), data.len()) };
    }

    /// Like [`Producer::write`], with non-temporal stores in 16-byte chunks (the last chunk
    /// padded with zeros): the lines go to memory without being taken from the consumer first.
    #[inline]
    pub fn write_stream(&mut self, i: usize, data: &[u8]) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        assert!(i < self.writable && data.len().next_multiple_of(16) <= self.ring.stride);
        let p = self.ring.slot(self.head + i as u64).cast::<__m128i>();
        let whole = data.len() / 16;
        // SAFETY: the slot is free (as in `write`), 16-byte aligned (stride and offset are
        // multiples of 16) and at least `len` rounded up to 16 bytes long; the loads read
        // inside `data`.
        unsafe {
            for k in 0..whole {
                _mm_stream_si128(
                    p.add(k),
                    _mm_loadu_si128(data.as_ptr().cast::<__m128i>().add(k)),
                );
            }
            let rest = data.len() % 16;
            if rest != 0 {
                let mut last = [0u8; 16];
                last[..rest].copy_from_slice(&data[whole * 16..]);
                _mm_stream_si128(
                    p.add(whole),
                    _mm_loadu_si128(last.as_ptr().cast::<__m128i>()),
                );
            }
        }
        self.streamed = true;
    }

    /// Stores `data` at `off` inside the `i`-th free slot only where the slot does not already
    /// hold it: a line whose bytes do not change is not taken from the consumer's cache.
    #[inline]
    pub fn write_if_changed(&mut self, i: usize, off: usize, data: &[u8]) {
        assert!(i < self.writable && off + data.len() <= self.ring.stride);
        let p = self.ring.slot(self.head + i as u64).wrapping_add(off);
        // SAFETY: inside the free slot (asserted), which only this side touches until publish.
        unsafe {
            if std::slice::from_raw_parts(p, data.len()) != data {
                copy_bytes(p, data.as_ptr(), data.len());
            }
        }
    }

    /// Overwrites `data.len()` bytes at `off` of the `i`-th free slot.
    #[inline]
    pub fn patch(&mut self, i: usize, off: usize, data: &[u8]) {
        assert!(i < self.writable && off + data.len() <= self.ring.stride);
        let p = self.ring.slot(self.head + i as u64).wrapping_add(off);
        // SAFETY: inside the free slot (asserted).
        unsafe { copy_bytes(p, data.as_ptr(), data.len()) };
    }

    /// Stores two little-endian words at `off` of the `i`-th free slot (after
    /// [`Producer::write`]: the per-packet fields). Straight from registers: a 16-byte copy out of
    /// a buffer just written by two 8-byte stores cannot take their bytes from the store queue,
    /// so it waits until they, and every store before them, reached the cache, slot misses
    /// included.
    #[inline]
    pub fn patch_words(&mut self, i: usize, off: usize, words: [u64; 2]) {
        assert!(i < self.writable && off + 16 <= self.ring.stride);
        let p = self.ring.slot(self.head + i as u64).wrapping_add(off);
        // SAFETY: inside the free slot (asserted); unaligned stores need no alignment.
        unsafe { store_words(p, words) };
    }

    /// Write-prefetches the `i`-th slot from `head` on (any `i`: a hint, never an access).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        prefetch_write(self.ring.slot(self.head + i as u64));
    }

    /// Writes `data` at pool offset `off`. The caller owns that part of the pool (in the
    /// descriptor ring: the buffer of a slot it holds).
    #[inline]
    pub fn pool_write(&mut self, off: usize, data: &[u8]) {
        let p = self.ring.pool_at(off, data.len()).expect("inside the pool");
        // SAFETY: inside the pool (checked); the consumer reads this part only after the slot
        // that points at it is published, and no longer once it released that slot.
        unsafe { copy_bytes(p, data.as_ptr(), data.len()) };
    }

    /// Stores two little-endian words at pool offset `off` (see [`Producer::patch_words`]).
    #[inline]
    pub fn pool_write_words(&mut self, off: usize, words: [u64; 2]) {
        let p = self.ring.pool_at(off, 16).expect("inside the pool");
        // SAFETY: inside the pool (checked); ownership as for `pool_write`.
        unsafe { store_words(p, words) };
    }

    /// Write-prefetches pool byte `off`.
    #[inline]
    pub fn pool_prefetch(&self, off: usize) {
        if let Some(p) = self.ring.pool_at(off, 1) {
            prefetch_write(p);
        }
    }

    /// Hands the first `n` written slots to the consumer.
    #[inline]
    pub fn publish(&mut self, n: usize) {
        assert!(n <= self.writable);
        if self.streamed {
            // SAFETY: sfence has no preconditions; it orders the streaming stores before the
            // index store that publishes them.
            unsafe { std::arch::x86_64::_mm_sfence() };
            self.streamed = false;
        }
        self.head += n as u64;
        self.writable -= n;
        self.ring.index(HEAD).store(self.head, Ordering::Release);
    }
}

/// The reading side.
pub struct Consumer {
    ring: Ring,
    tail: u64,
    cached_head: u64,
    readable: usize,
}

impl Consumer {
    /// Slots ready to read, reloading the producer's index when fewer than `want` are known.
    #[inline]
    pub fn available(&mut self, want: usize) -> usize {
        let known = crate::num::small(self.cached_head - self.tail);
        self.readable = if known >= want {
            known
        } else {
            self.cached_head = self.ring.index(HEAD).load(Ordering::Acquire);
            crate::num::small(self.cached_head - self.tail)
        };
        self.readable
    }

    /// Calls `f` with the first `len` bytes of the `i`-th ready slot, in place. `i` below what
    /// [`Consumer::available`] returned.
    #[inline]
    pub fn peek<R>(&self, i: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(i < self.readable && len <= self.ring.stride);
        let p = self.ring.slot(self.tail + i as u64);
        // SAFETY: the slot is inside the mapping; it was published (Acquire on the producer's
        // index, i < readable) and is not released yet, so the producer does not write it while
        // the slice lives (it ends with `f`).
        f(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// Calls `f` with pool bytes `[off, off + len)` in place, or `None` when the range is not
    /// inside the pool (a descriptor from the other side is not trusted).
    #[inline]
    pub fn peek_pool<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let p = self.ring.pool_at(off, len)?;
        // SAFETY: inside the pool (checked); the producer does not write a buffer while the
        // slot that points at it is published and unreleased (the caller holds such a slot).
        Some(f(unsafe { std::slice::from_raw_parts(p, len) }))
    }

    /// Prefetches the `i`-th slot from `tail` on (a hint, never an access).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        prefetch_read(self.ring.slot(self.tail + i as u64));
    }

    /// Prefetches pool byte `off`.
    #[inline]
    pub fn pool_prefetch(&self, off: usize) {
        if let Some(p) = self.ring.pool_at(off, 1) {
            prefetch_read(p);
        }
    }

    /// Returns the first `n` read slots to the producer.
    #[inline]
    pub fn release(&mut self, n: usize) {
        assert!(n <= self.readable);
        self.tail += n as u64;
        self.readable -= n;
        self.ring.index(TAIL).store(self.tail, Ordering::Release);
    }

    /// Slots released so far.
    pub fn consumed(&self) -> u64 {
        self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq_of(b: &[u8]) -> u64 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        u64::from_le_bytes(s)
    }

    /// Sends `n` slots through a ring with writer `w`, checking order and the last byte.
    fn cross_threads(n: u64, w: fn(&mut Producer, usize, &[u8])) {
        let (mut p, mut c) = channel(64, 64, 0, false).unwrap();
        let t = std::thread::spawn(move || {
            let mut sent = 0u64;
            while sent < n {
                let k = p.free(8).min(8).min(crate::num::small(n - sent));
                for i in 0..k {
                    let mut b = [0u8; 64];
                    b[..8].copy_from_slice(&(sent + i as u64).to_le_bytes());
                    b[63] = 0xa5;
                    w(&mut p, i, &b);
                    p.prefetch(i + 8);
                }
                p.publish(k);
                sent += k as u64;
            }
        });
        let mut next = 0u64;
        while next < n {
            let k = c.available(8).min(8);
            for i in 0..k {
                c.prefetch(i + 8);
                let (s, last) = c.peek(i, 64, |b| (seq_of(b), b[63]));
                assert_eq!(s, next);
                assert_eq!(last, 0xa5);
                next += 1;
            }
            c.release(k);
        }
        t.join().unwrap();
        assert_eq!(c.consumed(), n);
    }

    #[test]
    fn two_hundred_thousand_slots_cross_threads_in_order() {
        cross_threads(200_000, |p, i, b| p.write(i, b));
    }

    #[test]
    fn streamed_slots_cross_threads_in_order() {
        cross_threads(200_000, |p, i, b| p.write_stream(i, b));
    }

    #[test]
    fn unchanged_bytes_are_kept_and_changed_ones_written() {
        let (mut p, mut c) = channel(4, 64, 0, false).unwrap();
        for round in 0..3u8 {
            let k = p.free(4);
            assert_eq!(k, 4);
            for i in 0..4 {
                p.write_if_changed(i, 8, &[round / 2, 7, 7, 7]);
            }
            p.publish(4);
            assert_eq!(c.available(4), 4);
            for i in 0..4 {
                assert_eq!(c.peek(i, 12, |b| b[8..12].to_vec()), [round / 2, 7, 7, 7]);
            }
            c.release(4);
        }
    }

    #[test]
    fn patched_fields_land_over_the_copied_frame() {
        let (mut p, mut c) = channel(4, 64, 0, false).unwrap();
        p.free(1);
        p.write(0, &[1u8; 64]);
        p.patch_words(0, 22, [0x0909_0909_0909_0909, 0x0909_0909_0909_0909]);
        p.publish(1);
        c.available(1);
        c.peek(0, 64, |b| {
            assert_eq!(&b[..22], &[1u8; 22]);
            assert_eq!(&b[22..38], &[9u8; 16]);
            assert_eq!(&b[38..], &[1u8; 26]);
        });
    }

    #[test]
    fn the_pool_is_read_in_place_through_the_other_mapping() {
        let (mut p, c) = channel(4, 16, 8192, false).unwrap();
        p.pool_write(4000, &[3u8; 200]);
        assert_eq!(
            c.peek_pool(4000, 200, |b| b.iter().all(|&x| x == 3)),
            Some(true)
        );
    }

    #[test]
    fn test_pool_range_past_the_end_is_refused() {
        let (_p, c) = channel(4, 16, 4096, false).unwrap();
        assert_eq!(c.peek_pool(4000, 97, |_| ()), None);
        assert_eq!(c.peek_pool(usize::MAX, 2, |_| ()), None);
    }

    #[test]
    fn a_full_ring_has_no_free_slot_until_the_consumer_releases() {
        let (mut p, mut c) = channel(4, 64, 0, false).unwrap();
        assert_eq!(p.free(1), 4);
        for i in 0..4 {
            p.write(i, &[0x40; 64]);
        }
        p.publish(4);
        assert_eq!(p.free(1), 0);
        assert_eq!(c.available(1), 4);
        c.release(1);
        assert_eq!(p.free(1), 1);
    }

    #[test]
    #[should_panic]
    fn test_write_beyond_the_free_slots() {
        let (mut p, _c) = channel(4, 64, 0, false).unwrap();
        p.free(1);
        p.write(4, &[0u8; 64]);
    }

    #[test]
    fn a_ring_asked_for_on_hugepages_works_on_whichever_pages_it_got() {
        // 2 MiB pages when the machine has a free one, else 4 KiB: the same ring either way.
        let (mut p, mut c) = channel(4, 64, 4096, true).unwrap();
        assert_eq!(p.free(4), 4);
        p.write(0, b"on any page size");
        p.publish(1);
        assert_eq!(c.available(4), 1);
        assert_eq!(c.peek(0, 16, |b| b.to_vec()), b"on any page size".to_vec());
        let free = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| crate::hugepages::free_pages(&m))
            .unwrap_or(0);
        if free == 0 {
            assert!(
                !p.huge(),
                "no free hugepage, yet the ring says it is on one"
            );
        }
    }

    #[test]
    fn test_slot_count_not_a_power_of_two() {
        assert!(channel(3, 64, 0, false).is_err());
    }

    #[test]
    fn test_stride_not_a_multiple_of_sixteen() {
        assert!(channel(4, 24, 0, false).is_err());
    }
}

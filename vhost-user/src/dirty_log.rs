//! The dirty-page log of live migration: the bitmap a frontend shares with `SET_LOG_BASE`, one
//! bit per 4 KiB page of guest-physical memory, in which the backend marks every page it writes
//! while the frontend has `VHOST_F_LOG_ALL` acked. The frontend (QEMU) reads and clears the bits
//! with atomic exchanges and copies the pages they name to the migration destination.
//!
//! - [`DirtyLog`] is the mapped bitmap. It is checked to cover the whole memory table when it
//!   is installed and again whenever the table changes; [`DirtyLog::mark`] still bounds every
//!   byte it touches, so no frontend choice makes us write outside the mapping.
//! - [`QueueLog`] is a queue's view of it: the ranges one burst wrote, merged page-wise as they
//!   come and marked at the burst's flush (an atomic byte OR per bitmap byte, not one per write),
//!   and the used ring's guest-physical address (`log_guest_addr` of `SET_VRING_ADDR`).
//!
//! Bits are set after the data they cover is written (Release OR): a frontend that sees a bit,
//! clears it and then copies the page copies what we wrote.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::mmap::{file_size_and_block, Mapping};

/// Bytes of guest memory one bit of the log stands for.
pub const LOG_PAGE_SIZE: u64 = 4096;
const PAGE_SHIFT: u32 = 12;

/// Ranges a queue collects before it must mark them (a burst of 32 merged frames needs fewer).
const PENDING: usize = 64;

/// Bytes of log needed to cover guest-physical addresses below `end`.
pub fn log_bytes_for(end: u64) -> u64 {
    end.div_ceil(LOG_PAGE_SIZE).div_ceil(8)
}

/// Bytes of log the memory table needs: one bit per page up to its highest guest address.
pub fn log_bytes_needed(mem: &GuestMemory) -> u64 {
    let end = mem
        .regions()
        .map(|r| r.desc.guest_phys_addr + r.desc.memory_size) // validated not to overflow
        .max()
        .unwrap_or(0);
    log_bytes_for(end)
}

/// The mapped dirty bitmap (`SET_LOG_BASE`).
#[derive(Debug)]
pub struct DirtyLog {
    /// Before `map`: the shield must go before the unmap.
    shield: Option<crate::sigbus::Guard>,
    map: Mapping,
    /// Where the bitmap starts in the mapping (the message's `mmap_offset`).
    offset: usize,
    /// Bitmap bytes (the message's `mmap_size`).
    len: usize,
    /// Marks that fell past the bitmap (never for a table the log was checked against).
    outside: AtomicU64,
    _fd: OwnedFd,
}

impl DirtyLog {
    /// Maps `size` bytes of log at `offset` in `fd`. The file must hold `offset + size` bytes;
    /// the caller checks `size` against the memory table ([`DirtyLog::check_covers`]).
    pub fn map(fd: OwnedFd, size: u64, offset: u64) -> Result<DirtyLog> {
        if size == 0 {
            return Err(Error::Protocol("SET_LOG_BASE with a log of 0 bytes".into()));
        }
        let (file_size, blk) = file_size_and_block(&fd).map_err(Error::Mmap)?;
        if offset >= file_size {
            return Err(Error::Protocol(format!(
                "SET_LOG_BASE: log offset {offset} is past the end of its {file_size}-byte file"
            )));
        }
        let end = offset
            .checked_add(size)
            .filter(|&e| e <= file_size)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "SET_LOG_BASE: a log of {size} bytes at offset {offset} does not fit its \
                     {file_size}-byte file"
                ))
            })?;
        let map_len = end
            .div_ceil(blk)
            .checked_mul(blk)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(Error::Invalid("log larger than the address space"))?;
        let map = Mapping::map_shared(&fd.as_fd(), map_len).map_err(Error::Mmap)?;
        // The frontend may shrink the file later: a write past its new end must not kill us.
        let shield = crate::sigbus::register(map.as_ptr(), map.len(), crate::usize_of(blk));
        Ok(DirtyLog {
            shield,
            map,
            offset: crate::usize_of(offset),
            len: crate::usize_of(size),
            outside: AtomicU64::new(0),
            _fd: fd,
        })
    }

    /// Bitmap bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Refuses a log that does not have a bit for every page of `mem`.
    pub fn check_covers(&self, mem: &GuestMemory) -> Result<()> {
        let need = log_bytes_needed(mem);
        if self.len() < need {
            return Err(Error::Protocol(format!(
                "dirty log of {} bytes is too small for the memory table, which needs {need} \
                 (one bit per 4 KiB page up to its highest guest address)",
                self.len
            )));
        }
        Ok(())
    }

    /// Marks every page of `[gpa, gpa + len)` dirty.
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa >> PAGE_SHIFT;
        let last = gpa.saturating_add(len - 1) >> PAGE_SHIFT;
        self.mark_pages(first, last);
    }

    /// Marks pages `first..=last`: one atomic OR per bitmap byte.
    fn mark_pages(&self, first: u64, last: u64) {
        let fb = first / 8;
        let lb = last / 8;
        let bytes = self.len as u64;
        if lb >= bytes {
            self.outside.fetch_add(1, Ordering::Relaxed);
            if fb >= bytes {
                return;
            }
        }
        for b in fb..=lb.min(bytes - 1) {
            let lo = if b == fb { first % 8 } else { 0 };
            let hi = if b == lb { last % 8 } else { 7 };
            // lo <= hi < 8: the mask is the bits lo..=hi.
            let mask = (0xffu8 << lo) & (0xffu8 >> (7 - hi));
            // SAFETY: b < self.len and offset + len <= map.len() (checked in `map`), so the byte
            // is inside the mapping, which lives as long as `&self`; the frontend accesses the
            // bitmap atomically too, and any byte address is aligned for AtomicU8.
            let cell = unsafe {
                AtomicU8::from_ptr(self.map.as_ptr().add(self.offset + crate::usize_of(b)))
            };
            cell.fetch_or(mask, Ordering::Release);
        }
    }

    /// Marks that fell past the bitmap.
    pub fn outside(&self) -> u64 {
        self.outside.load(Ordering::Relaxed)
    }

    /// Whether the frontend shrank the log's file under us.
    pub fn poisoned(&self) -> bool {
        self.shield.as_ref().is_some_and(|g| g.poisoned())
    }

    /// Reads bitmap byte `i` (tests and diagnostics).
    pub fn byte(&self, i: usize) -> Option<u8> {
        if i >= self.len {
            return None;
        }
        // SAFETY: i < len, inside the mapping as in `mark_pages`.
        let cell = unsafe { AtomicU8::from_ptr(self.map.as_ptr().add(self.offset + i)) };
        Some(cell.load(Ordering::Acquire))
    }
}

/// Byte offset of used element `i` in a used ring (after `flags` and `idx`).
const fn used_elem_offset(i: u16) -> u64 {
    4 + 8 * i as u64
}

/// One queue's logging: the log, the used ring's guest-physical address (when the frontend set
/// `VHOST_VRING_F_LOG`), and the ranges written since the last flush.
#[derive(Debug)]
pub struct QueueLog {
    log: Arc<DirtyLog>,
    used_gpa: Option<u64>,
    /// Pages (first, last) written since the last flush, merged with their neighbours.
    pending: [(u64, u64); PENDING],
    n: usize,
}

impl QueueLog {
    pub fn new(log: Arc<DirtyLog>, used_gpa: Option<u64>) -> QueueLog {
        QueueLog {
            log,
            used_gpa,
            pending: [(0, 0); PENDING],
            n: 0,
        }
    }

    /// Whether used-ring writes are logged (`VHOST_VRING_F_LOG`).
    pub fn logs_used(&self) -> bool {
        self.used_gpa.is_some()
    }

    pub fn log(&self) -> &Arc<DirtyLog> {
        &self.log
    }

    /// Records that `[gpa, gpa + len)` was written; marked at the next [`QueueLog::commit`].
    #[inline]
    pub fn wrote(&mut self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa >> PAGE_SHIFT;
        let last = gpa.saturating_add(len - 1) >> PAGE_SHIFT;
        if let Some(p) = self.n.checked_sub(1).map(|k| &mut self.pending[k]) {
            // Receive buffers are usually consecutive: grow the last range when they touch.
            if first <= p.1.saturating_add(1) && last.saturating_add(1) >= p.0 {
                p.0 = p.0.min(first);
                p.1 = p.1.max(last);
                return;
            }
        }
        if self.n == PENDING {
            self.commit_buffers();
        }
        self.pending[self.n] = (first, last);
        self.n += 1;
    }

    /// Marks the buffers written since the last commit.
    fn commit_buffers(&mut self) {
        for &(first, last) in &self.pending[..self.n] {
            self.log.mark_pages(first, last);
        }
        self.n = 0;
    }

    /// Marks the writes recorded with [`QueueLog::wrote`] since the last commit (a packed ring
    /// records its used descriptors there too).
    pub fn commit_writes(&mut self) {
        self.commit_buffers();
    }

    /// Marks the buffer writes of the burst, and the used elements `from..to` (ring positions,
    /// wrapping at `size`) with the used index, which the caller has just published.
    pub fn commit(&mut self, size: u16, from: u16, to: u16) {
        self.commit_buffers();
        let Some(used) = self.used_gpa else { return };
        let count = to.wrapping_sub(from).min(size);
        if count == 0 {
            return;
        }
        let start = from % size;
        let n1 = count.min(size - start);
        self.log.mark(
            used.wrapping_add(used_elem_offset(start)),
            8 * u64::from(n1),
        );
        if count > n1 {
            self.log.mark(
                used.wrapping_add(used_elem_offset(0)),
                8 * u64::from(count - n1),
            );
        }
        // The used index.
        self.log.mark(used.wrapping_add(2), 2);
    }

    /// Marks the whole used ring (flags, elements, index, `avail_event`): when logging starts
    /// on a queue, so the writes a queue makes outside bursts are covered.
    pub fn mark_used_ring(&self, size: u16) {
        if let Some(used) = self.used_gpa {
            self.log
                .mark(used, crate::ring::used_ring_bytes(size) as u64);
        }
    }

    /// Marks the `avail_event` field after the used elements.
    pub fn mark_avail_event(&self, size: u16) {
        if let Some(used) = self.used_gpa {
            self.log.mark(used.wrapping_add(used_elem_offset(size)), 2);
        }
    }
}

impl Drop for QueueLog {
    fn drop(&mut self) {
        // A queue taken away mid-burst still reports what it wrote.
        self.commit_buffers();
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::message::MemRegionDesc;
    use crate::mmap::create_memfd;

    fn log(bytes: u64) -> Arc<DirtyLog> {
        let fd = create_memfd("log", bytes, false).unwrap();
        Arc::new(DirtyLog::map(fd, bytes, 0).unwrap())
    }

    fn bits(l: &DirtyLog) -> Vec<u64> {
        let mut v = Vec::new();
        for i in 0..l.len() as usize {
            let b = l.byte(i).unwrap();
            for k in 0..8 {
                if b & (1 << k) != 0 {
                    v.push(i as u64 * 8 + k);
                }
            }
        }
        v
    }

    #[test]
    fn marks_exactly_the_pages_a_write_touches() {
        let l = log(64);
        l.mark(0, 1);
        assert_eq!(bits(&l), vec![0]);
        // Straddles pages 1 and 2 by one byte on each side.
        l.mark(2 * 4096 - 1, 2);
        assert_eq!(bits(&l), vec![0, 1, 2]);
        // Ends on the last byte of page 9: page 10 is untouched.
        l.mark(7 * 4096 + 10, 3 * 4096 - 10);
        assert_eq!(bits(&l), vec![0, 1, 2, 7, 8, 9]);
        // Crosses a bitmap byte: pages 15..=17.
        l.mark(15 * 4096 + 4095, 4096 + 2);
        assert_eq!(bits(&l), vec![0, 1, 2, 7, 8, 9, 15, 16, 17]);
        // A long write covering whole bitmap bytes: pages 30..=49.
        l.mark(30 * 4096, 20 * 4096);
        let want: Vec<u64> = [0, 1, 2, 7, 8, 9, 15, 16, 17]
            .into_iter()
            .chain(30..50)
            .collect();
        assert_eq!(bits(&l), want);
        assert_eq!(l.outside(), 0);
    }

    #[test]
    fn test_mark_past_the_log_is_bounded() {
        let l = log(1); // pages 0..8
        l.mark(7 * 4096, 2 * 4096);
        assert_eq!(bits(&l), vec![7]);
        l.mark(u64::MAX - 10, 100);
        assert_eq!(l.outside(), 2);
    }

    #[test]
    fn queue_log_batches_until_commit_and_merges() {
        let l = log(16);
        let mut q = QueueLog::new(l.clone(), None);
        q.wrote(4096, 2048);
        q.wrote(4096 + 2048, 4096); // pages 1..=2, merged with the last
        q.wrote(40 * 4096, 1);
        assert_eq!(q.n, 2);
        assert!(bits(&l).is_empty(), "nothing marked before the flush");
        q.commit(256, 0, 0);
        assert_eq!(bits(&l), vec![1, 2, 40]);
    }

    #[test]
    fn queue_log_drains_when_full() {
        let l = log(64);
        let mut q = QueueLog::new(l.clone(), None);
        for k in 0..(PENDING as u64 + 1) {
            q.wrote(k * 3 * 4096, 1);
        }
        assert_eq!(bits(&l).len(), PENDING);
        drop(q);
        assert_eq!(bits(&l).len(), PENDING + 1);
    }

    #[test]
    fn used_ring_logged_at_log_guest_addr() {
        let l = log(1024);
        // The used ring of a 256-entry queue at gpa 0x10_0ffc: its index (offset 2) ends page
        // 0x100, its first element (offset 4) starts page 0x101.
        let used = 0x10_0ffc;
        let mut q = QueueLog::new(l.clone(), Some(used));
        q.commit(256, 0, 1);
        assert_eq!(bits(&l), vec![0x100, 0x101]);
        // A publish that wraps: elements 254, 255 and 0, all on the ring's first page.
        let l = log(1024);
        let mut q = QueueLog::new(l.clone(), Some(0x20_0000));
        q.commit(256, 254, 257);
        assert_eq!(bits(&l), vec![0x200]);
        let l = log(1024);
        let q = QueueLog::new(l.clone(), Some(0x20_0000 + 4096 - 8));
        q.mark_avail_event(256);
        assert_eq!(bits(&l), vec![0x201]);
    }

    #[test]
    fn used_ring_not_logged_without_vring_f_log() {
        let l = log(64);
        let mut q = QueueLog::new(l.clone(), None);
        q.commit(256, 0, 10);
        q.mark_used_ring(256);
        q.mark_avail_event(256);
        assert!(bits(&l).is_empty());
    }

    #[test]
    fn test_log_fd_too_small_for_memory() {
        let fd = create_memfd("log", 4096, false).unwrap();
        let l = DirtyLog::map(fd, 16, 0).unwrap();
        let mfd = create_memfd("mem", 1 << 20, false).unwrap();
        let d = MemRegionDesc {
            guest_phys_addr: 1 << 30,
            memory_size: 1 << 20,
            userspace_addr: 0,
            mmap_offset: 0,
        };
        let mem = GuestMemory::from_table(&[d], vec![mfd]).unwrap();
        // (1 GiB + 1 MiB) / 4 KiB / 8.
        assert_eq!(log_bytes_needed(&mem), 32800);
        assert!(matches!(l.check_covers(&mem), Err(Error::Protocol(_))));
        // The file holds 4096 bytes; 16 asked for in a mapping of 4096.
        let fd = create_memfd("log", 4096, false).unwrap();
        assert!(DirtyLog::map(fd, 8192, 0).is_err());
    }

    #[test]
    fn test_log_offset_past_file() {
        let fd = create_memfd("log", 4096, false).unwrap();
        let e = DirtyLog::map(fd, 16, 4096).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        let fd = create_memfd("log", 4096, false).unwrap();
        assert!(DirtyLog::map(fd, u64::MAX, 8).is_err());
        let fd = create_memfd("log", 4096, false).unwrap();
        let l = DirtyLog::map(fd, 16, 4000).unwrap();
        l.mark(0, 1);
        assert_eq!(l.byte(0), Some(1));
    }
}

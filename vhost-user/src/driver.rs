//! The driver side of virtio-net split queues, in memory we own: what a guest's virtio-net driver
//! does. Fast-path guests and the benchmark's built-in guests use it to talk to the switch; tests
//! use it as a mock driver that writes real descriptors into real shared memory, including
//! malformed ones through [`DriverQueue::raw`].
//!
//! The device on the other side is not trusted either: used entries are checked (id in range,
//! id actually outstanding, length within the buffer) before anything is read.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::message::MemRegionDesc;
use crate::mmap::{create_memfd, Mapping};
use crate::ring::{
    avail_ring_bytes, copy_bytes, desc_table_bytes, prefetch, used_ring_bytes, Descriptor, RawRing,
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_WRITE,
};
use crate::shared::SharedBytes;
use crate::virtq::QueueLayout;

/// Guest memory owned by a driver: one shared memory file, mapped here, carved up by a bump
/// allocator. Guest-physical addresses start at `gpa_base`; the frontend-virtual address of the
/// region is where it is mapped in this process.
#[derive(Debug)]
pub struct DriverMemory {
    fd: OwnedFd,
    /// Before `map`: it must be dropped before the unmap. Held, never read: what the shield
    /// does happens in the SIGBUS handler.
    _shield: Option<crate::sigbus::Guard>,
    map: Mapping,
    gpa_base: u64,
    next: usize,
}

impl DriverMemory {
    /// Creates `size` bytes of shareable memory (hugetlbfs when `huge`).
    pub fn new(name: &str, size: usize, huge: bool) -> Result<DriverMemory> {
        DriverMemory::with_gpa_base(name, size, huge, 0x1_0000_0000)
    }

    /// Like [`DriverMemory::new`], at guest-physical address `gpa_base` (a guest with several
    /// regions gives each its own range).
    pub fn with_gpa_base(name: &str, size: usize, huge: bool, gpa_base: u64) -> Result<Self> {
        let fd = create_memfd(name, size as u64, huge).map_err(Error::Mmap)?;
        let map = Mapping::map_shared(&fd, size).map_err(Error::Mmap)?;
        // The device side holds our memory file too and could shrink it: shield the mapping.
        let page = if huge { 2 << 20 } else { 4096 };
        let shield = crate::sigbus::register(map.as_ptr(), map.len(), page);
        Ok(DriverMemory {
            fd,
            _shield: shield,
            map,
            gpa_base,
            next: 0,
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// The region as a frontend describes it in `SET_MEM_TABLE`.
    pub fn region_desc(&self) -> MemRegionDesc {
        MemRegionDesc {
            guest_phys_addr: self.gpa_base,
            memory_size: self.map.len() as u64,
            userspace_addr: self.map.as_ptr() as u64,
            mmap_offset: 0,
        }
    }

    /// The device's view of this memory: a second, independent mapping of the same file, as a
    /// backend process would have.
    pub fn device_view(&self) -> Result<Arc<GuestMemory>> {
        let fd = self.fd.as_fd().try_clone_to_owned()?;
        Ok(Arc::new(GuestMemory::from_table(
            &[self.region_desc()],
            vec![fd],
        )?))
    }

    /// Allocates `len` bytes aligned to `align`; returns (host pointer, guest-physical address).
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<(*mut u8, u64)> {
        let start = self.next.next_multiple_of(align);
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.map.len())
            .ok_or(Error::Rejected(format!(
                "driver memory exhausted: {len} bytes wanted, {} of {} used",
                self.next,
                self.map.len()
            )))?;
        self.next = end;
        Ok((
            self.map.as_ptr().wrapping_add(start),
            self.gpa_base + start as u64,
        ))
    }

    /// Host pointer of a guest-physical range inside this memory.
    pub fn host(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let off = gpa.checked_sub(self.gpa_base)?;
        let end = off.checked_add(len)?;
        (end <= self.map.len() as u64).then(|| self.map.as_ptr().wrapping_add(crate::usize_of(off)))
    }

    /// Writes `data` at guest-physical `gpa` (mock drivers build hostile buffers with it).
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        let p = self
            .host(gpa, data.len() as u64)
            .ok_or(Error::Invalid("write outside driver memory"))?;
        // SAFETY: [p, p + len) is inside our mapping (checked by `host`).
        unsafe { copy_bytes(p, data.as_ptr(), data.len()) };
        Ok(())
    }

    /// Reads from guest-physical `gpa` into `out`.
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<()> {
        let p = self
            .host(gpa, out.len() as u64)
            .ok_or(Error::Invalid("read outside driver memory"))?;
        // SAFETY: [p, p + len) is inside our mapping (checked by `host`).
        unsafe { copy_bytes(out.as_mut_ptr(), p, out.len()) };
        Ok(())
    }
}

/// Errors a driver sees from a misbehaving device, counted rather than trusted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverErrors {
    /// Used id out of range or not outstanding.
    pub bad_used_id: u64,
    /// Used length larger than the buffer.
    pub bad_used_len: u64,
    /// Used index more than a queue ahead.
    pub used_overrun: u64,
    /// Received frames with a malformed header (num_buffers 0 or beyond what arrived).
    pub bad_rx_header: u64,
    /// Packets whose records broke the rules of [`crate::records`] (the rest of the packet is
    /// dropped).
    pub bad_record: u64,
}

/// Where a queue's areas go in its memory: alignment of each, and whether the used ring comes
/// first. The default packs them on 4 KiB pages in the order descriptors, avail, used, buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub rings_align: usize,
    pub used_align: usize,
    pub buffers_align: usize,
    pub used_first: bool,
    /// Transmit queues: bytes of a second, small buffer per descriptor (0: none; else a
    /// multiple of 64), packed back to back in an area of their own before the buffers. A
    /// frame that fits one, virtio-net header included, is sent from descriptor `id`'s small
    /// buffer instead of its big one, so consecutive small frames lie in consecutive lines:
    /// the lines a sender takes for writing and a reader reads then follow each other, which
    /// both cores' stream prefetchers pick up. Big buffers are a few KiB apart and each of
    /// their first lines is a transfer of its own (zero-copy at 64 B: 60.8 against 78.4 Mpps
    /// with 2112- against 128-byte buffers, Intel Xeon, three alternated runs each).
    pub small_slot: u32,
}

impl Default for Areas {
    fn default() -> Self {
        Areas {
            rings_align: 4096,
            used_align: 4096,
            buffers_align: 4096,
            used_first: false,
            small_slot: 0,
        }
    }
}

/// The driver side of one split queue with one fixed-size buffer per descriptor.
pub struct DriverQueue {
    ring: RawRing,
    layout: QueueLayout,
    size: u16,
    buf_size: u32,
    buf_gpa: u64,
    buf_host: *mut u8,
    /// Small transmit buffers ([`Areas::small_slot`]): bytes each (0: none), where the first
    /// one lies.
    small_slot: u32,
    small_gpa: u64,
    small_host: *mut u8,
    /// Frames shorter than this many bytes fit a small buffer with their header (0: none do).
    small_below: usize,
    /// Free descriptors, oldest first: a device that returns buffers in order (ours do) gets
    /// them back in the same order lap after lap, so avail entry `i` always names descriptor
    /// `i % size` and each descriptor keeps its address: neither line needs rewriting, and the
    /// device's cached copies of them stay valid.
    free: VecDeque<u16>,
    outstanding: Vec<bool>,
    avail_idx: u16,
    last_used: u16,
    /// The device's used index as last read: entries up to it are consumed without reading the
    /// index again (a line the device keeps writing), once per batch instead of per entry.
    seen_used: u16,
    /// Buffers taken from the used ring and not yet read to their end by
    /// [`DriverQueue::recv_records`]: (id, used length, offset of the next record). Held back
    /// from the free list until read, so the device cannot refill them meanwhile.
    held: VecDeque<(u16, u32, u32)>,
    /// Transmit in order ([`DriverQueue::set_in_order`]): buffers in flight, descriptor `i`
    /// for avail slot `i` mod size; `free` and `outstanding` are not used.
    in_order: Option<u16>,
    /// In order only: the length each descriptor was last written with (its address follows
    /// from it: the small buffer or the big one), so a send rewrites a descriptor only when its
    /// length changes, without reading the table back; and whether every avail slot already
    /// names its own descriptor (after a lap), so sends leave the avail ring alone. Both lines
    /// then stay valid in the device's cache. Only we write these areas: a device that
    /// scribbles on them misleads itself.
    desc_len: Vec<u32>,
    avail_settled: bool,
    /// virtio-net header length used by this queue's frames (10 or 12); fixed at creation
    /// (`small_below` follows from it).
    hdr_len: usize,
    pub errors: DriverErrors,
}

// SAFETY: the ring and buffers live in a `DriverMemory` mapping that the owner keeps alive for
// the queue's lifetime (see `DriverQueue::new`); one thread uses a queue at a time.
unsafe impl Send for DriverQueue {}

impl DriverQueue {
    /// Lays out a queue of `size` entries and `size` buffers of `buf_size` bytes in `mem`.
    ///
    /// The queue points into `mem`'s mapping: keep `mem` alive as long as the queue.
    pub fn new(mem: &mut DriverMemory, size: u16, buf_size: u32, hdr_len: usize) -> Result<Self> {
        DriverQueue::with_areas(mem, size, buf_size, hdr_len, Areas::default())
    }

    /// Like [`DriverQueue::new`], placing the areas as `areas` says (a dedicated fast-path
    /// queue puts the parts a peer gets different rights to on different pages).
    pub fn with_areas(
        mem: &mut DriverMemory,
        size: u16,
        buf_size: u32,
        hdr_len: usize,
        areas: Areas,
    ) -> Result<Self> {
        crate::ring::check_layout(size, 0, 0, 0).map_err(Error::Invalid)?;
        if !areas.small_slot.is_multiple_of(64) || areas.small_slot >= buf_size {
            return Err(Error::Invalid(
                "small transmit buffers must be whole lines and smaller than the buffers",
            ));
        }
        let mut used_at = None;
        if areas.used_first {
            used_at = Some(mem.alloc(used_ring_bytes(size), areas.used_align)?);
        }
        let (desc, desc_gpa) = mem.alloc(desc_table_bytes(size), areas.rings_align)?;
        let (avail, avail_gpa) = mem.alloc(avail_ring_bytes(size), 4096)?;
        let (used, used_gpa) = match used_at {
            Some(u) => u,
            None => mem.alloc(used_ring_bytes(size), areas.used_align)?,
        };
        let (small_host, small_gpa) = match areas.small_slot {
            0 => (std::ptr::null_mut(), 0),
            n => mem.alloc(usize::from(size) * n as usize, 4096)?,
        };
        // Buffers on pages of their own, so a view can grant them apart from the rings.
        let (bufs, buf_gpa) =
            mem.alloc(usize::from(size) * buf_size as usize, areas.buffers_align)?;
        // SAFETY: the three areas were just allocated in `mem`'s live mapping with exactly the
        // sizes RawRing needs and page alignment; the caller keeps `mem` alive.
        let ring = unsafe { RawRing::new(desc, avail, used, size) };
        let uva = |gpa: u64| gpa - mem.gpa_base + mem.map.as_ptr() as u64;
        Ok(DriverQueue {
            ring,
            layout: QueueLayout {
                size,
                desc_uva: uva(desc_gpa),
                avail_uva: uva(avail_gpa),
                used_uva: uva(used_gpa),
            },
            size,
            buf_size,
            buf_gpa,
            buf_host: bufs,
            small_slot: areas.small_slot,
            small_gpa,
            small_host,
            small_below: match areas.small_slot {
                0 => 0,
                n => (n as usize + 1).saturating_sub(hdr_len),
            },
            free: (0..size).collect(),
            outstanding: vec![false; usize::from(size)],
            avail_idx: 0,
            last_used: 0,
            seen_used: 0,
            held: VecDeque::with_capacity(RX_BATCH),
            in_order: None,
            desc_len: Vec::new(),
            avail_settled: false,
            hdr_len,
            errors: DriverErrors::default(),
        })
    }

    /// Ring addresses as a frontend sends them in `SET_VRING_ADDR` (frontend-virtual).
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The virtio-net header length of this queue's frames (10 or 12).
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// The raw ring, for tests that write malformed descriptors and indices.
    pub fn raw(&self) -> &RawRing {
        &self.ring
    }

    /// Guest-physical address and length of the buffer area.
    pub fn buffer_area(&self) -> (u64, u64) {
        (
            self.buf_gpa,
            u64::from(self.size) * u64::from(self.buf_size),
        )
    }

    /// Guest-physical address of descriptor `id`'s buffer.
    pub fn buf_gpa(&self, id: u16) -> u64 {
        self.buf_gpa + u64::from(id) * u64::from(self.buf_size)
    }

    fn buf_host(&self, id: u16) -> *mut u8 {
        self.buf_host
            .wrapping_add(usize::from(id) * self.buf_size as usize)
    }

    /// Whether a transmitted frame of `len` bytes goes in its descriptor's small buffer.
    #[inline(always)]
    fn fits_small(&self, len: usize) -> bool {
        len < self.small_below
    }

    /// Guest-physical address of the buffer descriptor `id` transmits a `len`-byte frame from:
    /// its small buffer when the frame fits one ([`Areas::small_slot`]), else its buffer.
    pub fn tx_buf_gpa(&self, id: u16, len: usize) -> u64 {
        self.tx_gpa(id, self.fits_small(len))
    }

    #[inline(always)]
    fn tx_gpa(&self, id: u16, small: bool) -> u64 {
        let (_, gpa, stride) = self.tx_area(small);
        gpa + u64::from(id) * stride as u64
    }

    /// Where the transmit buffers of one size class start (host, guest-physical) and how far
    /// apart they are: the small buffers or the big ones.
    #[inline(always)]
    fn tx_area(&self, small: bool) -> (*mut u8, u64, usize) {
        if small {
            (self.small_host, self.small_gpa, self.small_slot as usize)
        } else {
            (self.buf_host, self.buf_gpa, self.buf_size as usize)
        }
    }

    /// Descriptors free for new buffers.
    pub fn free_count(&self) -> usize {
        match self.in_order {
            Some(in_flight) => usize::from(self.size - in_flight),
            None => self.free.len(),
        }
    }

    /// Makes this fresh transmit queue run in order (VIRTIO_F_IN_ORDER, as our own device side
    /// returns chains): avail slot `i` always carries descriptor `i` mod size, and the used
    /// index alone says how many went back — the oldest ones — so a reclaim reads one index
    /// instead of validating every used entry, and a send takes the next descriptor without a
    /// free list. What a device writes in the used entries is then ignored; a used index more
    /// than what is in flight ahead is counted (`used_overrun`) and ignored. A device that
    /// claims buffers back early only reads frames we rewrite: its own loss, never a read or
    /// write of ours out of bounds. Transmit only: returns false (and changes nothing) on a
    /// queue that is not fresh.
    pub fn set_in_order(&mut self) -> bool {
        let fresh = self.avail_idx == 0
            && self.last_used == 0
            && self.free.iter().copied().eq(0..self.size);
        if fresh {
            self.in_order = Some(0);
            self.desc_len = vec![u32::MAX; usize::from(self.size)];
        }
        fresh
    }

    /// Asks the device not to notify (we poll), or to notify again.
    pub fn set_interrupts(&self, enabled: bool) {
        self.ring.set_avail_flags(if enabled {
            0
        } else {
            VRING_AVAIL_F_NO_INTERRUPT
        });
    }

    /// Posts every free descriptor as a device-writable receive buffer and publishes.
    pub fn refill_rx(&mut self) -> usize {
        let mut n = 0;
        while let Some(id) = self.free.pop_front() {
            self.ring.write_desc_if_changed(
                id,
                Descriptor {
                    addr: self.buf_gpa(id),
                    len: self.buf_size,
                    flags: VRING_DESC_F_WRITE,
                    next: 0,
                },
            );
            self.outstanding[usize::from(id)] = true;
            self.push_avail(id);
            n += 1;
        }
        if n > 0 {
            self.publish();
        }
        n
    }

    /// Next used entry, validated: (id, len), its buffer back on the free list. `None` when the
    /// device has returned nothing new.
    fn next_used(&mut self) -> Option<(u16, u32)> {
        let (id, len) = self.take_used()?;
        self.free.push_back(id);
        Some((id, len))
    }

    /// [`Self::next_used`] leaving the buffer off the free list: the caller gives it back.
    fn take_used(&mut self) -> Option<(u16, u32)> {
        loop {
            if self.last_used == self.seen_used {
                let used = self.ring.used_idx();
                let pending = used.wrapping_sub(self.last_used);
                if pending == 0 {
                    return None;
                }
                if pending > self.size {
                    self.errors.used_overrun += 1;
                    return None;
                }
                self.seen_used = used;
            }
            let (id, len) = self.ring.used_elem(self.last_used);
            self.last_used = self.last_used.wrapping_add(1);
            let Some(id) = u16::try_from(id).ok().filter(|&i| i < self.size) else {
                self.errors.bad_used_id += 1;
                continue;
            };
            if !self.outstanding[usize::from(id)] {
                self.errors.bad_used_id += 1;
                continue;
            }
            self.outstanding[usize::from(id)] = false;
            if len > self.buf_size {
                self.errors.bad_used_len += 1;
                return Some((id, 0));
            }
            return Some((id, len));
        }
    }

    /// Reclaims transmitted buffers the device has returned.
    pub fn reclaim(&mut self) -> usize {
        if let Some(in_flight) = self.in_order {
            let used = self.ring.used_idx();
            let back = used.wrapping_sub(self.last_used);
            if back > in_flight {
                if back != 0 {
                    self.errors.used_overrun += 1;
                }
                return 0;
            }
            self.last_used = used;
            self.seen_used = used;
            self.in_order = Some(in_flight - back);
            return usize::from(back);
        }
        let mut n = 0;
        while self.next_used().is_some() {
            n += 1;
        }
        n
    }

    /// Receives up to `max` frames, calling `f` with each frame (virtio-net header stripped,
    /// copied out into `scratch`, mergeable buffers gathered there), and refills the ring.
    ///
    /// Works in batches: takes up to [`RX_BATCH`] used entries, prefetches the start of each
    /// one's buffer (the header and a minimum frame, which the device just wrote from another
    /// core), then copies them out, so the cache misses overlap instead of following each other.
    pub fn recv(&mut self, max: usize, scratch: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> usize {
        self.recv_batches::<false>(max, scratch, |r| {
            if let Received::Gathered(b) = r {
                f(b)
            }
        })
    }

    /// [`Self::recv`] without the copy: a frame in one buffer is handed to `f` where it lies,
    /// as [`SharedBytes`] the receiver reads by copy what it needs of (a fast-path receiver
    /// looks at headers only); a frame merged from several buffers is gathered into `scratch`.
    pub fn recv_in_place(
        &mut self,
        max: usize,
        scratch: &mut Vec<u8>,
        f: impl FnMut(Received<'_>),
    ) -> usize {
        self.recv_batches::<true>(max, scratch, f)
    }

    fn recv_batches<const IN_PLACE: bool>(
        &mut self,
        max: usize,
        scratch: &mut Vec<u8>,
        mut f: impl FnMut(Received<'_>),
    ) -> usize {
        let mut n = 0;
        let mut batch = [(0u16, 0u32); RX_BATCH];
        while n < max {
            let want = (max - n).min(RX_BATCH);
            let mut k = 0;
            while k < want {
                let Some(e) = self.next_used() else { break };
                batch[k] = e;
                k += 1;
            }
            if k == 0 {
                break;
            }
            for &(id, len) in &batch[..k] {
                let p = self.buf_host(id);
                prefetch(p);
                // The second line only when it is copied out: in place, a receiver reads the
                // headers, in the first line; pulling a line the device just wrote costs a
                // cross-core transfer, and 2 x 32 prefetches outrun the line-fill buffers.
                if !IN_PLACE && len > 64 {
                    prefetch(p.wrapping_add(64));
                }
            }
            let mut j = 0;
            while j < k {
                let (id, len) = batch[j];
                j += 1;
                // Further buffers of a merged frame: the next entries of the batch, then the ring.
                let next = |q: &mut Self, j: &mut usize| {
                    if *j < k {
                        *j += 1;
                        Some(batch[*j - 1])
                    } else {
                        q.next_used()
                    }
                };
                if self.rx_one::<IN_PLACE>(id, len, scratch, &mut j, next, &mut f) {
                    n += 1;
                }
            }
            // Buffers go back every REFILL_EVERY frames of a long receive, not only at its
            // end, so the device can go on filling while we work through the rest.
            if self.free.len() >= REFILL_EVERY {
                self.refill_rx();
            }
        }
        self.refill_rx();
        n
    }

    /// One received frame starting in buffer `id`: validated, then handed to `f` in place (with
    /// `IN_PLACE`, when it is in one buffer) or gathered into `scratch`. False when it was
    /// malformed (counted).
    #[inline(always)]
    fn rx_one<const IN_PLACE: bool>(
        &mut self,
        id: u16,
        len: u32,
        scratch: &mut Vec<u8>,
        j: &mut usize,
        next: impl Fn(&mut Self, &mut usize) -> Option<(u16, u32)>,
        f: &mut impl FnMut(Received<'_>),
    ) -> bool {
        let len = len as usize;
        if len < self.hdr_len {
            self.errors.bad_rx_header += 1;
            return false;
        }
        let p = self.buf_host(id);
        // SAFETY: buffer `id` is inside our mapping and `len <= buf_size` was checked by
        // next_used; the device may still scribble on it, which only affects the bytes (read
        // by copy, here and through SharedBytes).
        let first = unsafe { SharedBytes::new(p.add(self.hdr_len), len - self.hdr_len) };
        let num_buffers = if self.hdr_len == 12 {
            // SAFETY: as above; hdr_len (12) <= len bytes of the buffer.
            let b = unsafe { SharedBytes::new(p, self.hdr_len) }.peek::<12>(0).0;
            u16::from_le_bytes([b[10], b[11]])
        } else {
            1
        };
        if num_buffers == 0 {
            self.errors.bad_rx_header += 1;
            return false;
        }
        if IN_PLACE && num_buffers == 1 {
            f(Received::Shared(first));
            return true;
        }
        scratch.clear();
        first.append_to(scratch);
        for _ in 1..num_buffers {
            let Some((id2, len2)) = next(self, j) else {
                self.errors.bad_rx_header += 1;
                return false;
            };
            // SAFETY: as above for buffer id2.
            unsafe { SharedBytes::new(self.buf_host(id2), len2 as usize) }.append_to(scratch);
        }
        f(Received::Gathered(scratch));
        true
    }
}

#[path = "driver_tx.rs"]
mod tx;

#[path = "driver_records.rs"]
mod records;

/// A frame [`DriverQueue::recv_in_place`] hands out.
pub enum Received<'a> {
    /// In its receive buffer, which the device could still write: read by copy.
    Shared(SharedBytes<'a>),
    /// Gathered from several buffers into our own memory.
    Gathered(&'a [u8]),
}

/// Freed buffers [`DriverQueue::recv`] gathers before it posts them again within one call.
const REFILL_EVERY: usize = 8 * RX_BATCH;

/// Used entries [`DriverQueue::recv`] takes and prefetches at a time.
pub const RX_BATCH: usize = 32;

//! The driver side's transmit path: frames queued into transmit buffers (copied there, or
//! built in place by zero-copy senders), descriptors and avail entries written only where they
//! change, the avail index published once per burst.
#![allow(unsafe_code)]

use super::DriverQueue;
use crate::ring::{copy_bytes, prefetch_write, Descriptor};

/// How many free buffers ahead of the one being filled [`DriverQueue::push_tx_with`] prefetches
/// for writing: far enough for a cross-core transfer (~100 ns) to finish at tens of Mpps.
const TX_PREFETCH_AHEAD: usize = 8;
const TX_PREFETCH_AHEAD_U16: u16 = 8;
const _: () = assert!(TX_PREFETCH_AHEAD == TX_PREFETCH_AHEAD_U16 as usize);

impl DriverQueue {
    /// Appends `head` to the avail ring without publishing it (the entry is left alone when it
    /// already says `head`).
    pub fn push_avail(&mut self, head: u16) {
        if !self.avail_settled {
            self.ring.set_avail_entry_if_changed(self.avail_idx, head);
        }
        self.avail_idx = self.avail_idx.wrapping_add(1);
        if self.in_order.is_some() && self.avail_idx & (self.size - 1) == 0 {
            // In order, slot i has carried descriptor i since the first lap.
            self.avail_settled = true;
        }
    }

    /// Publishes the avail entries pushed so far.
    pub fn publish(&self) {
        self.ring.set_avail_idx(self.avail_idx);
    }

    /// The avail index we have published or will publish next.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Queues one frame for transmission: virtio-net header (zeroed) and frame in one buffer.
    /// Returns false when no descriptor is free or the frame does not fit.
    pub fn push_tx(&mut self, frame: &[u8]) -> bool {
        self.push_tx_lines(frame.len(), 2, |_, buf| {
            // SAFETY: `buf` is exactly frame.len() writable bytes; `frame` is our own slice.
            unsafe { copy_bytes(buf.as_mut_ptr(), frame.as_ptr(), frame.len()) }
        })
    }

    /// Queues a `len`-byte frame that `fill` writes in place, into the transmit buffer itself
    /// (zero-copy senders build frames there; `fill` also gets the descriptor id, so a sender
    /// that knows what a buffer held last time can rewrite only the fields that change).
    /// Returns false when no descriptor is free or the frame does not fit.
    ///
    /// The buffer is ours until the device returns it; the device only reads transmit buffers,
    /// so nobody else writes the bytes `fill` sees.
    ///
    /// The first two lines of the buffer a few frames ahead are prefetched for writing, as
    /// [`Self::push_tx`] does; a sender that rewrites only a few fields of a frame already in
    /// place uses [`Self::push_tx_rewrite`].
    #[inline]
    pub fn push_tx_with(&mut self, len: usize, fill: impl FnOnce(u16, &mut [u8])) -> bool {
        self.push_tx_lines(len, 2, fill)
    }

    /// [`Self::push_tx_with`] for a `fill` that rewrites only fields in the buffer's first line
    /// (header and the frame's first bytes) of a frame it wrote there on an earlier lap: only
    /// that line is prefetched for writing. Taking the second line too takes it away from the
    /// device's core, which reads and prefetches it, for nothing: that cost the zero-copy bench
    /// 10 % (56.5 against 63.0 Mpps at 64 B, Intel Xeon, two alternated runs each). A `fill`
    /// that writes whole frames wants [`Self::push_tx_with`]: its second line then misses
    /// (single-threaded, buffers past the L2: 104 against 48 cycles a frame).
    #[inline]
    pub fn push_tx_rewrite(&mut self, len: usize, fill: impl FnOnce(u16, &mut [u8])) -> bool {
        self.push_tx_lines(len, 1, fill)
    }

    /// Queues a frame as [`Self::push_tx_with`] does, prefetching the first `lines` (1 or 2)
    /// lines of the buffer a few frames ahead for writing.
    #[inline(always)]
    fn push_tx_lines(
        &mut self,
        len: usize,
        lines: usize,
        fill: impl FnOnce(u16, &mut [u8]),
    ) -> bool {
        let total = self.hdr_len + len;
        if total > self.buf_size as usize {
            return false;
        }
        let mask = self.size - 1;
        let (id, ahead) = match &mut self.in_order {
            Some(in_flight) => {
                if *in_flight == self.size {
                    return false;
                }
                *in_flight += 1;
                let id = self.avail_idx & mask;
                let ahead = usize::from(self.size - *in_flight) > TX_PREFETCH_AHEAD;
                (
                    id,
                    ahead.then_some(id.wrapping_add(TX_PREFETCH_AHEAD_U16) & mask),
                )
            }
            None => {
                let Some(id) = self.free.pop_front() else {
                    return false;
                };
                (id, self.free.get(TX_PREFETCH_AHEAD).copied())
            }
        };
        // A frame's size class picks the buffer (the small one or the big one); the frames
        // ahead are taken to be of this one's.
        let small = self.fits_small(len);
        let (base, _, stride) = self.tx_area(small);
        // Start taking the lines of a buffer a few frames ahead away from the device's core,
        // which read them last lap, so that store does not wait for the transfer.
        if let Some(ahead) = ahead {
            prefetch_buffer(base.wrapping_add(usize::from(ahead) * stride), lines);
        }
        self.build_tx(id, small, len, fill);
        self.push_avail(id);
        true
    }

    /// Queues frames of the lengths `sizes` gives, each built in place by `fill(i, id, frame)`
    /// as [`Self::push_tx_lines`] builds one (`i`: its place in this run), until one does not
    /// fit or no descriptor is free. Returns how many were queued and their bytes.
    ///
    /// In order, what a ring needs per frame beyond building it is done once per run: the
    /// room is counted once, the in-flight count and avail index move once, and the avail
    /// entries are visited only while they do not yet name their own descriptors (the first
    /// lap). Out of order, frames go one by one.
    pub fn push_tx_many(
        &mut self,
        sizes: impl Iterator<Item = usize>,
        lines: usize,
        mut fill: impl FnMut(usize, u16, &mut [u8]),
    ) -> (usize, u64) {
        let (mut n, mut bytes) = (0u16, 0u64);
        let Some(in_flight) = self.in_order else {
            for len in sizes {
                if !self.push_tx_lines(len, lines, |id, b| fill(usize::from(n), id, b)) {
                    break;
                }
                n += 1;
                bytes += len as u64;
            }
            return (usize::from(n), bytes);
        };
        let room = self.size - in_flight;
        let mask = self.size - 1;
        let start = self.avail_idx;
        for len in sizes {
            if n == room || self.hdr_len + len > self.buf_size as usize {
                break;
            }
            let id = start.wrapping_add(n) & mask;
            let small = self.fits_small(len);
            // Only buffers that are ours by then: one in flight is still the device's to read.
            if room - n - 1 > TX_PREFETCH_AHEAD_U16 {
                let (base, _, stride) = self.tx_area(small);
                let ahead = id.wrapping_add(TX_PREFETCH_AHEAD_U16) & mask;
                prefetch_buffer(base.wrapping_add(usize::from(ahead) * stride), lines);
            }
            self.build_tx(id, small, len, |id, b| fill(usize::from(n), id, b));
            n += 1;
            bytes += len as u64;
        }
        if !self.avail_settled {
            for k in 0..n {
                let slot = start.wrapping_add(k);
                self.ring.set_avail_entry_if_changed(slot, slot & mask);
            }
            // In order, slot i has carried descriptor i since the first lap ended.
            if usize::from(start & mask) + usize::from(n) >= usize::from(self.size) {
                self.avail_settled = true;
            }
        }
        self.avail_idx = start.wrapping_add(n);
        self.in_order = Some(in_flight + n);
        (usize::from(n), bytes)
    }

    /// Writes frame `id` of `len` bytes (its small buffer when `small`) in place: a zeroed
    /// virtio-net header, the frame by `fill`, and the descriptor where it changed. The caller
    /// has checked that it fits and owns descriptor `id`; the avail ring is its business too.
    #[inline(always)]
    fn build_tx(&mut self, id: u16, small: bool, len: usize, fill: impl FnOnce(u16, &mut [u8])) {
        let total = self.hdr_len + len;
        let (base, _, stride) = self.tx_area(small);
        let p = base.wrapping_add(usize::from(id) * stride);
        // SAFETY: buffer `id` (its small one when `small`) is `stride` >= total bytes inside
        // our mapping; we own it until the device returns it (it is not outstanding), and the
        // device only reads it.
        let frame = unsafe {
            // A virtio-net header is 12 or 10 bytes: fixed-size stores, not a call into memset.
            match self.hdr_len {
                12 => {
                    std::ptr::write_unaligned(p.cast::<u64>(), 0);
                    std::ptr::write_unaligned(p.add(8).cast::<u32>(), 0);
                }
                10 => {
                    std::ptr::write_unaligned(p.cast::<u64>(), 0);
                    std::ptr::write_unaligned(p.add(8).cast::<u16>(), 0);
                }
                n => std::ptr::write_bytes(p, 0, n),
            }
            std::slice::from_raw_parts_mut(p.add(self.hdr_len), len)
        };
        fill(id, frame);
        // total <= buf_size, a u32.
        let len = u32::try_from(total).unwrap_or(self.buf_size);
        let desc = |q: &Self| Descriptor {
            addr: q.tx_gpa(id, small),
            len,
            flags: 0,
            next: 0,
        };
        // The length decides the buffer too: an unchanged length is an unchanged descriptor,
        // and its address is not even computed.
        let i = usize::from(id);
        match self.desc_len.get(i).copied() {
            Some(last) if last == len => {}
            Some(_) => {
                self.desc_len[i] = len;
                self.ring.write_desc(id, desc(self));
            }
            None => self.ring.write_desc_if_changed(id, desc(self)),
        }
        if self.in_order.is_none() {
            self.outstanding[usize::from(id)] = true;
        }
    }
}

/// Starts taking the first `lines` (1 or 2) lines of a transmit buffer a few frames ahead away
/// from the device's core, which read them last lap, so the stores into it do not wait for the
/// transfer.
#[inline(always)]
fn prefetch_buffer(q: *mut u8, lines: usize) {
    prefetch_write(q);
    if lines > 1 {
        prefetch_write(q.wrapping_add(64));
    }
}

//! The device side of a copy-mode fast-path channel: frames packed as records
//! ([`crate::records`]), many to a receive buffer.
#![allow(unsafe_code)]

use super::SplitQueue;
use crate::chain::Source;
use crate::records::{record_len, MAX_RECORD_FRAME, RECORD_HDR};
use crate::ring::{copy_bytes, prefetch_write, VRING_DESC_F_WRITE};
use crate::virtq::{RxError, RxTally};

/// How far ahead of the record being written the destination is fetched for writing: lines the
/// receiver read last lap sit in its core's cache, and each costs a cross-core transfer.
const WRITE_AHEAD: usize = 256;

/// A receive buffer of the usual kind: one device-writable descriptor, translated.
#[derive(Clone, Copy)]
struct Slot {
    dst: *mut u8,
    head: u16,
    cap: usize,
    /// Guest-physical address of `dst`, for the dirty log.
    gpa: u64,
}

impl SplitQueue {
    /// Places `frames` into this queue's receive buffers as records, packed: a buffer of the
    /// usual kind (one device-writable descriptor) takes as many whole frames as fit after its
    /// virtio-net header. A frame that fits no such buffer (bigger than the next one, or the
    /// next buffer is a chain, or malformed) goes through [`Self::enqueue`] alone, as one
    /// record, with every check and counter of that path: so hostile buffers are refused
    /// and counted as anywhere else, and a frame bigger than a buffer spans several with
    /// MRG_RXBUF.
    ///
    /// Frames are taken in order; an empty frame, or one longer than a record can carry, is
    /// counted in `tally.too_small` and skipped; after the queue runs out of buffers the rest
    /// are counted in `tally.no_buffers`. Used entries are written but not published: call
    /// [`Self::flush`] after.
    pub fn enqueue_records<F: AsRef<[u8]>>(&mut self, frames: &[F], tally: &mut RxTally) {
        let hdr_len = self.features.hdr_len;
        let hdr = crate::net::rx_header(1);
        // Read once: the stores into guest memory below could alias the field as far as the
        // compiler knows, and a reload per buffer is what logging off must not cost.
        let logging = self.log.is_some();
        let mut i = 0;
        let mut cur = self.usual_buffer(self.last_avail);
        while i < frames.len() {
            let len = frames[i].as_ref().len();
            if len == 0 || len > MAX_RECORD_FRAME {
                tally.too_small += 1;
                i += 1;
                continue;
            }
            let Some(slot) = cur.filter(|s| s.cap >= hdr_len + record_len(len)) else {
                if !self.enqueue_one_record(frames[i].as_ref(), tally) {
                    tally.no_buffers += (frames.len() - i - 1) as u64;
                    break;
                }
                i += 1;
                cur = self.usual_buffer(self.last_avail);
                continue;
            };
            self.last_avail = self.last_avail.wrapping_add(1);
            // The next buffer's descriptor and first lines load while this one fills.
            cur = self.usual_buffer(self.last_avail);
            let mut off = hdr_len;
            // SAFETY: [dst, dst + cap) was translated inside one region of our mapped guest
            // memory (`usual_buffer`), and hdr_len <= cap.
            unsafe { copy_bytes(slot.dst, hdr.as_ptr(), hdr_len) };
            while i < frames.len() {
                let f = frames[i].as_ref();
                let l = f.len();
                if l == 0 || l > MAX_RECORD_FRAME || off + record_len(l) > slot.cap {
                    break;
                }
                if off + WRITE_AHEAD < slot.cap {
                    prefetch_write(slot.dst.wrapping_add(off + WRITE_AHEAD));
                }
                // l <= MAX_RECORD_FRAME (u16::MAX), checked above: the fallback is never taken.
                let lh = u16::try_from(l).unwrap_or(u16::MAX).to_le_bytes();
                // SAFETY: off + 2 + l <= cap, inside the translated buffer; `f` is our slice.
                unsafe {
                    copy_bytes(slot.dst.add(off), lh.as_ptr(), RECORD_HDR);
                    copy_bytes(slot.dst.add(off + RECORD_HDR), f.as_ptr(), l);
                }
                off += record_len(l);
                i += 1;
                tally.packets += 1;
                tally.bytes += l as u64;
            }
            // off <= cap, which came from a u32 descriptor length.
            self.push_used(slot.head, u32::try_from(off).unwrap_or(u32::MAX));
            if logging {
                if let Some(l) = self.log.as_deref_mut() {
                    l.wrote(slot.gpa, off as u64);
                }
            }
            tally.buffers += 1;
        }
    }

    /// The buffer at avail position `at` when it is of the usual kind — one device-writable
    /// descriptor inside guest memory, room for a header and a byte of record — translated,
    /// its first lines fetched for writing; does not consume it.
    #[inline]
    fn usual_buffer(&mut self, at: u16) -> Option<Slot> {
        if at == self.avail_cache {
            self.refresh_avail();
            if at == self.avail_cache {
                return None;
            }
        }
        let head = self.ring.avail_entry(at);
        if head >= self.size {
            return None;
        }
        let d = self.ring.read_desc(head);
        let cap = d.len as usize;
        if d.flags != VRING_DESC_F_WRITE || cap < self.features.hdr_len + record_len(1) {
            return None;
        }
        let dst = self.mem.gpa_to_host(d.addr, u64::from(d.len))?;
        for k in 0..cap.min(WRITE_AHEAD).div_ceil(64) {
            prefetch_write(dst.wrapping_add(k * 64));
        }
        Some(Slot {
            dst,
            head,
            cap,
            gpa: d.addr,
        })
    }

    /// One frame as one record through [`Self::enqueue`] (every check, MRG_RXBUF merging);
    /// false when the queue has no buffers left for it (or is broken).
    fn enqueue_one_record(&mut self, frame: &[u8], tally: &mut RxTally) -> bool {
        let mut rec = std::mem::take(&mut self.record);
        rec.clear();
        crate::records::push(&mut rec, frame);
        let r = self.enqueue(Source::Bytes(&rec));
        self.record = rec;
        match r {
            Ok(()) => {
                tally.packets += 1;
                tally.buffers += 1;
                tally.bytes += frame.len() as u64;
                true
            }
            Err(RxError::NoBuffers) | Err(RxError::Broken) => {
                tally.no_buffers += 1;
                // Out of buffers for good, or only this frame did not fit what is there.
                !(self.broken || self.last_avail == self.avail_cache)
            }
            Err(RxError::BufferTooSmall) => {
                tally.too_small += 1;
                true
            }
            Err(RxError::BadChain) => {
                tally.bad_buffers += 1;
                true
            }
        }
    }
}

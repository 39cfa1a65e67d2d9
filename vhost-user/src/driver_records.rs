//! The driver side of a copy-mode fast-path channel: frames received packed as records
//! ([`crate::records`]), many to a buffer, read where they lie.
#![allow(unsafe_code)]

use super::{DriverQueue, Received, REFILL_EVERY, RX_BATCH};
use crate::records;
use crate::ring::prefetch;
use crate::shared::SharedBytes;

/// How far ahead of the record being read the buffer is fetched: the device wrote those lines
/// from the other core.
const READ_AHEAD: usize = 256;

impl DriverQueue {
    /// Receives up to `max` frames carried as records, calling `f` with each: in place
    /// ([`Received::Shared`]) for the records of a one-buffer packet, gathered into `scratch`
    /// for the one record of a merged packet. A buffer read part-way when `max` is reached is
    /// held (off the free list, so the device cannot refill it) and read on from where it
    /// stopped by the next call. Packets that break the record rules are counted in
    /// `errors.bad_record`, their records before the bad one delivered; buffers go back to the
    /// device as they are read.
    pub fn recv_records(
        &mut self,
        max: usize,
        scratch: &mut Vec<u8>,
        mut f: impl FnMut(Received<'_>),
    ) -> usize {
        let mut n = 0;
        while n < max {
            if self.held.is_empty() {
                // A batch of used entries, their first lines loading together.
                while self.held.len() < RX_BATCH {
                    let Some((id, len)) = self.take_used() else {
                        break;
                    };
                    let p = self.buf_host(id);
                    prefetch(p);
                    prefetch(p.wrapping_add(64));
                    self.held.push_back((id, len, 0));
                }
                if self.held.is_empty() {
                    break;
                }
            }
            n += self.read_front(max - n, scratch, &mut f);
            if self.free.len() >= REFILL_EVERY {
                self.refill_rx();
            }
        }
        self.refill_rx();
        n
    }

    /// Reads up to `budget` (>= 1) frames of the first held buffer; gives the buffer back when
    /// it has been read to its end (or was malformed).
    fn read_front(
        &mut self,
        budget: usize,
        scratch: &mut Vec<u8>,
        f: &mut impl FnMut(Received<'_>),
    ) -> usize {
        let Some(&(id, len, off)) = self.held.front() else {
            return 0;
        };
        let (len, mut off) = (len as usize, off as usize);
        let p = self.buf_host(id);
        if off == 0 {
            // First look at this packet: its virtio-net header.
            if len < self.hdr_len {
                self.errors.bad_rx_header += 1;
                self.release_front();
                return 0;
            }
            let num_buffers = if self.hdr_len == 12 {
                // SAFETY: buffer `id` is inside our mapping and 12 <= len <= buf_size (checked
                // by take_used); read by copy, whatever the device writes meanwhile.
                let b = unsafe { SharedBytes::new(p, 12) }.peek::<12>(0).0;
                u16::from_le_bytes([b[10], b[11]])
            } else {
                1
            };
            match num_buffers {
                0 => {
                    self.errors.bad_rx_header += 1;
                    self.release_front();
                    return 0;
                }
                1 => off = self.hdr_len,
                nb => return self.read_merged(nb, scratch, f),
            }
        }
        // SAFETY: as above, [p, p + len) is inside buffer `id`.
        let payload = unsafe { SharedBytes::new(p, len) };
        let mut got = 0;
        let done = loop {
            if got == budget {
                break off >= len;
            }
            match records::next(&payload, off) {
                Ok(Some((frame, next))) => {
                    prefetch(p.wrapping_add(next + READ_AHEAD));
                    f(Received::Shared(frame));
                    got += 1;
                    off = next;
                }
                Ok(None) => break true,
                Err(_) => {
                    self.errors.bad_record += 1;
                    break true;
                }
            }
        };
        if done {
            self.release_front();
        } else if let Some(h) = self.held.front_mut() {
            // off < len <= buf_size, a u32.
            h.2 = u32::try_from(off).unwrap_or(u32::MAX);
        }
        got
    }

    /// A packet of `nb` buffers, the first held: gathered into `scratch`, its one record handed
    /// to `f`. Returns 1, or 0 when it was malformed (counted).
    fn read_merged(
        &mut self,
        nb: u16,
        scratch: &mut Vec<u8>,
        f: &mut impl FnMut(Received<'_>),
    ) -> usize {
        let Some((id, len, _)) = self.held.pop_front() else {
            return 0;
        };
        self.free.push_back(id);
        scratch.clear();
        // SAFETY: buffer `id` is inside our mapping, hdr_len <= len <= buf_size.
        let first = unsafe { SharedBytes::new(self.buf_host(id), len as usize) };
        if let Some(b) = first.sub(self.hdr_len, len as usize - self.hdr_len) {
            b.append_to(scratch);
        }
        for _ in 1..nb {
            let more = match self.held.pop_front() {
                Some((id2, len2, _)) => {
                    self.free.push_back(id2);
                    Some((id2, len2))
                }
                None => self.next_used(),
            };
            let Some((id2, len2)) = more else {
                self.errors.bad_rx_header += 1;
                return 0;
            };
            // SAFETY: as above for buffer id2 (len2 <= buf_size, checked by take_used).
            unsafe { SharedBytes::new(self.buf_host(id2), len2 as usize) }.append_to(scratch);
        }
        match records::single(scratch) {
            Ok(frame) => {
                f(Received::Gathered(frame));
                1
            }
            Err(_) => {
                self.errors.bad_record += 1;
                0
            }
        }
    }

    /// Gives the first held buffer back to the free list.
    fn release_front(&mut self) {
        if let Some((id, _, _)) = self.held.pop_front() {
            self.free.push_back(id);
        }
    }
}

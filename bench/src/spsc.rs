//! A single-producer single-consumer ring of fixed-size slots in shared memory: one memfd mapped
//! twice, the producer writing through one mapping and the consumer reading through the other,
//! as two processes (or two VMs) sharing memory would. It is the least a packet move between two
//! cores can cost, so `ring-limit` measures it as this machine's physical limit.
//!
//! Layout: the producer's index at offset 0 and the consumer's at offset 128 (their own cache
//! line pairs, so adjacent-line prefetch does not couple them), slots from offset 4096. Indices
//! count slots ever published/released; each side caches the other's index and reloads it only
//! when it runs out, and publishes once per batch (Lamport's ring with cached indices).
//!
//! Safety rests on the split: [`channel`] hands out exactly one [`Producer`] and one
//! [`Consumer`]; the producer writes only slots the consumer has released, the consumer reads
//! only slots the producer has published, and the Release/Acquire pair on the indices orders the
//! slot bytes with them.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use vhost_user::mmap::{create_memfd, Mapping};
use vhost_user::ring::copy_bytes;

const HEAD: usize = 0;
const TAIL: usize = 128;
const SLOTS_OFFSET: usize = 4096;

/// Creates a ring of `slots` (a power of two) slots of `slot_bytes` each.
pub fn channel(slots: usize, slot_bytes: usize) -> io::Result<(Producer, Consumer)> {
    if !slots.is_power_of_two() || slot_bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ring slots must be a power of two and slots non-empty",
        ));
    }
    let len = slots
        .checked_mul(slot_bytes)
        .and_then(|b| b.checked_add(SLOTS_OFFSET))
        .map(|b| b.next_multiple_of(4096))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring too large"))?;
    let fd = create_memfd("bench-spsc-ring", len as u64, false)?;
    let ring = |map| Ring {
        map,
        mask: slots - 1,
        slots,
        slot_bytes,
    };
    let p = ring(Mapping::map_shared(&fd, len)?);
    let c = ring(Mapping::map_shared(&fd, len)?);
    Ok((
        Producer {
            ring: p,
            head: 0,
            cached_tail: 0,
            writable: 0,
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
    slot_bytes: usize,
}

impl Ring {
    fn index(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is HEAD or TAIL, 8-byte aligned offsets inside the page-aligned mapping,
        // which lives as long as `self`. AtomicU64 has u64's layout, the memory starts zeroed
        // (a valid u64), and every access to it, from either mapping, is atomic.
        unsafe { &*self.map.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Address of the slot of index `idx`.
    fn slot(&self, idx: u64) -> *mut u8 {
        // Wrapping to usize keeps the low bits, which is all the mask looks at.
        #[allow(clippy::cast_possible_truncation)]
        let i = (idx as usize) & self.mask;
        self.map
            .as_ptr()
            .wrapping_add(SLOTS_OFFSET + i * self.slot_bytes)
    }
}

/// The writing side.
pub struct Producer {
    ring: Ring,
    head: u64,
    cached_tail: u64,
    /// Slots known free from `head` on (see [`Producer::free`]).
    writable: usize,
}

impl Producer {
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
        assert!(i < self.writable && data.len() <= self.ring.slot_bytes);
        let p = self.ring.slot(self.head + i as u64);
        // SAFETY: the slot is inside the mapping (index masked, slot_bytes >= len); it is free
        // (i < writable: the consumer released it, Acquire on its index), so only this side
        // touches it until `publish`.
        unsafe { copy_bytes(p, data.as_ptr(), data.len()) };
    }

    /// Hands the first `n` written slots to the consumer.
    #[inline]
    pub fn publish(&mut self, n: usize) {
        assert!(n <= self.writable);
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

    /// Copies the `i`-th ready slot's first `out.len()` bytes out. `i` below what
    /// [`Consumer::available`] returned.
    #[inline]
    pub fn read(&mut self, i: usize, out: &mut [u8]) {
        assert!(i < self.readable && out.len() <= self.ring.slot_bytes);
        let p = self.ring.slot(self.tail + i as u64);
        // SAFETY: the slot is inside the mapping; it was published (Acquire on the producer's
        // index, i < readable) and is not released yet, so the producer does not write it.
        unsafe { copy_bytes(out.as_mut_ptr(), p, out.len()) };
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

    #[test]
    fn two_hundred_thousand_slots_cross_threads_in_order() {
        let (mut p, mut c) = channel(64, 64).unwrap();
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            let mut sent = 0u64;
            while sent < N {
                let n = p.free(8).min(8).min(crate::num::small(N - sent));
                for i in 0..n {
                    let mut b = [0u8; 64];
                    b[..8].copy_from_slice(&(sent + i as u64).to_le_bytes());
                    b[63] = 0xa5;
                    p.write(i, &b);
                }
                p.publish(n);
                sent += n as u64;
            }
        });
        let mut next = 0u64;
        let mut b = [0u8; 64];
        while next < N {
            let n = c.available(8).min(8);
            for i in 0..n {
                c.read(i, &mut b);
                let mut s = [0u8; 8];
                s.copy_from_slice(&b[..8]);
                assert_eq!(u64::from_le_bytes(s), next);
                assert_eq!(b[63], 0xa5);
                next += 1;
            }
            c.release(n);
        }
        t.join().unwrap();
        assert_eq!(c.consumed(), N);
    }

    #[test]
    fn a_full_ring_has_no_free_slot_until_the_consumer_releases() {
        let (mut p, mut c) = channel(4, 64).unwrap();
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
        let (mut p, _c) = channel(4, 64).unwrap();
        p.free(1);
        p.write(4, &[0u8; 64]);
    }

    #[test]
    fn test_slot_count_not_a_power_of_two() {
        assert!(channel(3, 64).is_err());
    }
}

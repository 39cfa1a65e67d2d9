//! A packed ring driver for tests: posts chains (real descriptors in real shared memory) and
//! reaps used descriptors; hostile tests also write raw descriptor words with it.
#![allow(unsafe_code)]
#![allow(clippy::cast_possible_truncation)]

use crate::driver::DriverMemory;
use crate::packed::{PackedLayout, RingPos};
use crate::packed_ring::{avail_flags, is_used, PackedDesc, RawPackedRing};
use crate::ring::VRING_DESC_F_NEXT;

/// Where a fresh ring starts: position 0, lap 1.
pub(crate) const FRESH: RingPos = RingPos { pos: 0, wrap: true };

/// A packed driver for tests: posts chains, reaps used descriptors.
pub(crate) struct Driver {
    pub(crate) ring: RawPackedRing,
    pub(crate) size: u16,
    pub(crate) next: RingPos,
    pub(crate) used: RingPos,
    /// Descriptors each id's chain took.
    pub(crate) ndesc: Vec<u32>,
    pub(crate) buf_gpa: u64,
    pub(crate) buf_size: u32,
}

impl Driver {
    /// A fresh packed ring of `size` in `mem`, with a buffer of `buf_size` bytes per id; and the
    /// layout a frontend would send.
    pub(crate) fn new(mem: &mut DriverMemory, size: u16, buf_size: u32) -> (Driver, PackedLayout) {
        let (desc, _) = mem.alloc(16 * usize::from(size), 4096).unwrap();
        let (driver, _) = mem.alloc(4, 64).unwrap();
        let (device, _) = mem.alloc(4, 64).unwrap();
        let (_, buf_gpa) = mem
            .alloc(usize::from(size) * buf_size as usize, 4096)
            .unwrap();
        // SAFETY: the areas were just allocated in the live mapping with the sizes and
        // alignment the ring needs; callers keep `mem` alive as long as the driver.
        let ring = unsafe { RawPackedRing::new(desc, driver, device, size) };
        let layout = PackedLayout {
            size,
            desc_uva: desc as u64,
            driver_uva: driver as u64,
            device_uva: device as u64,
        };
        let drv = Driver {
            ring,
            size,
            next: FRESH,
            used: FRESH,
            ndesc: vec![1; usize::from(size)],
            buf_gpa,
            buf_size,
        };
        (drv, layout)
    }

    /// Buffer `id`'s guest-physical address (one `BUF`-byte buffer per id).
    pub(crate) fn buf(&self, id: u16) -> u64 {
        self.buf_gpa + u64::from(id) * u64::from(self.buf_size)
    }

    /// Posts a chain of `(addr, len, flags)` under `id`, the head's flags written last.
    pub(crate) fn post(&mut self, id: u16, descs: &[(u64, u32, u16)]) {
        let start = self.next;
        let mut p = start;
        let mut head = PackedDesc::default();
        for (k, &(addr, len, flags)) in descs.iter().enumerate() {
            let more = if k + 1 < descs.len() {
                VRING_DESC_F_NEXT
            } else {
                0
            };
            let d = PackedDesc {
                addr,
                len,
                id,
                flags: flags | more | avail_flags(p.wrap),
            };
            if k == 0 {
                head = d;
            } else {
                self.ring.write_desc(p.pos, d);
            }
            p = adv(p, 1, self.size);
        }
        self.ring.write_desc(start.pos, head);
        self.ndesc[usize::from(id)] = descs.len() as u32;
        self.next = p;
    }

    /// Posts descriptor words exactly as given at the next position (hostile input).
    pub(crate) fn post_raw(&mut self, d: PackedDesc) {
        self.ring.write_desc(self.next.pos, d);
        self.next = adv(self.next, 1, self.size);
    }

    /// The next used descriptor, if the device wrote one: (id, len).
    pub(crate) fn reap(&mut self) -> Option<(u16, u32)> {
        let d = self.ring.read_desc(self.used.pos);
        if !is_used(d.flags, self.used.wrap) {
            return None;
        }
        let n = self.ndesc.get(usize::from(d.id)).copied().unwrap_or(1);
        self.used = adv(self.used, n, self.size);
        Some((d.id, d.len))
    }

    pub(crate) fn reap_all(&mut self) -> Vec<(u16, u32)> {
        std::iter::from_fn(|| self.reap()).collect()
    }
}

pub(crate) fn adv(p: RingPos, n: u32, size: u16) -> RingPos {
    let (pos, wrap) = crate::packed_ring::advance(p.pos, p.wrap, n, size);
    RingPos { pos, wrap }
}

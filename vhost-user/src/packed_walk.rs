//! Reading chains out of a packed ring: the layout-specific part of a chain walk (the avail/used
//! bits of each descriptor, the chain's extent, the buffer id in its last descriptor, indirect
//! tables in the packed layout). Buffers are checked and appended by the walk every layout
//! shares ([`crate::chain::append_buffer`]).
#![allow(unsafe_code)]

use std::sync::Arc;

use super::{step, RingPos};
use crate::chain::{append_buffer, Chain, ChainError, MAX_CHAIN_BYTES};
use crate::memory::{GuestMemory, Span};
use crate::packed_ring::{is_avail, PackedDesc, RawPackedRing};
use crate::ring::{
    IndirectTable, DESC_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};

/// What the ring holds at a position.
pub(super) enum Take {
    /// Nothing available there.
    Nothing,
    /// A chain of `ndesc` descriptors with buffer id `id`, valid or refused for `res`.
    Chain {
        id: u16,
        ndesc: u32,
        res: Result<(), ChainError>,
    },
    /// The ring is broken at this position.
    Broken(ChainError),
}

/// What reading chains needs: the ring, the memory, the queue size. Kept apart from the
/// queue's mutable state so a walk can fill the queue's own scratch chains.
pub(super) struct PackedWalker {
    pub(super) ring: RawPackedRing,
    pub(super) mem: Arc<GuestMemory>,
    pub(super) size: u16,
    pub(super) indirect: bool,
    /// `mem`'s largest region, tried first (`mem` keeps it mapped), as the split walker does.
    pub(super) hot: Span,
}

impl PackedWalker {
    /// Reads the chain at `at` into `out` with every check. The usual chain (one descriptor of
    /// the right direction, in one region) is handled inline; anything else takes the general
    /// walk.
    #[inline(always)]
    pub(super) fn take(&self, at: RingPos, writable: bool, out: &mut Chain) -> Take {
        let d = self.ring.read_desc(at.pos);
        if !is_avail(d.flags, at.wrap) {
            return Take::Nothing;
        }
        let dir = if writable { VRING_DESC_F_WRITE } else { 0 };
        let plain = d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE);
        if plain == dir && d.len != 0 && d.len <= MAX_CHAIN_BYTES && d.id < self.size {
            let len = u64::from(d.len);
            if let Some(p) = self
                .hot
                .to_host(d.addr, len)
                .or_else(|| self.mem.gpa_to_host(d.addr, len))
            {
                out.set_one(d.id, p, d.len, d.addr);
                return Take::Chain {
                    id: d.id,
                    ndesc: 1,
                    res: Ok(()),
                };
            }
        }
        self.take_slow(at, d, writable, out)
    }

    #[cold]
    #[inline(never)]
    fn take_slow(&self, at: RingPos, first: PackedDesc, writable: bool, out: &mut Chain) -> Take {
        out.len = 0;
        out.nsegs = 0;
        let mut res = Ok(());
        let mut p = at;
        let mut d = first;
        let mut n: u32 = 0;
        loop {
            if n > 0 {
                d = self.ring.read_desc(p.pos);
                if !is_avail(d.flags, p.wrap) {
                    return Take::Broken(ChainError::WrapMismatch);
                }
            }
            n += 1;
            if res.is_ok() {
                res = self.add_desc(d, n, writable, out);
            }
            p = step(p, 1, self.size);
            if d.flags & VRING_DESC_F_NEXT == 0 {
                break;
            }
            if n >= u32::from(self.size) {
                return Take::Broken(ChainError::ChainLoop);
            }
        }
        // The buffer id is in the last descriptor of the chain.
        out.head = d.id;
        if d.id >= self.size {
            res = Err(ChainError::IdOutOfRange);
        }
        Take::Chain {
            id: d.id,
            ndesc: n,
            res,
        }
    }

    /// Adds the `n`th descriptor of a chain (direct, or an indirect table) to `out`.
    fn add_desc(
        &self,
        d: PackedDesc,
        n: u32,
        writable: bool,
        out: &mut Chain,
    ) -> Result<(), ChainError> {
        if d.flags & VRING_DESC_F_INDIRECT == 0 {
            if (d.flags & VRING_DESC_F_WRITE != 0) != writable {
                return Err(ChainError::WrongDirection);
            }
            return append_buffer(&self.mem, out, d.addr, d.len);
        }
        // An indirect descriptor is a list of its own: never chained, never in a chain.
        if !self.indirect || d.flags & VRING_DESC_F_NEXT != 0 || n > 1 {
            return Err(ChainError::IndirectNotAllowed);
        }
        let size = u32::try_from(DESC_SIZE).unwrap_or(16);
        if d.len == 0 || !d.len.is_multiple_of(size) {
            return Err(ChainError::IndirectBadLength);
        }
        let entries = d.len / size;
        // A list longer than the queue is one the spec forbids the driver to make.
        if entries > u32::from(self.size) {
            return Err(ChainError::ChainTooLong);
        }
        let base = self
            .mem
            .gpa_to_host(d.addr, u64::from(d.len))
            .ok_or(ChainError::AddressUnmapped)?;
        // SAFETY: the whole table (entries * 16 bytes) was translated inside one region of the
        // memory this queue keeps mapped.
        let table = unsafe { IndirectTable::new(base, entries) };
        for i in 0..entries {
            let Some(raw) = table.read(i) else {
                return Err(ChainError::NextOutOfRange);
            };
            let e = PackedDesc::from_split_layout(raw);
            if e.flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainError::NestedIndirect);
            }
            // A receive buffer must be device-writable throughout. A transmit one may not be
            // quite: DPDK's virtio PMD (as packaged here) leaves the header entry of its packed
            // transmit indirect tables marked device-writable. Reading a device-writable buffer
            // is only a SHOULD NOT in the spec and harmless to us, so a transmit table reads
            // it; writing a device-readable one stays refused.
            if writable && e.flags & VRING_DESC_F_WRITE == 0 {
                return Err(ChainError::WrongDirection);
            }
            append_buffer(&self.mem, out, e.addr, e.len)?;
        }
        Ok(())
    }
}

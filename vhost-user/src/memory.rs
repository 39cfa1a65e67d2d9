//! Guest memory: the regions a frontend describes in `SET_MEM_TABLE` / `ADD_MEM_REG`, mapped into
//! this process, and translation of guest-physical (descriptor) and frontend-virtual (ring)
//! addresses into host pointers.
//!
//! Every translation is a range check with overflow-checked arithmetic inside one region; a
//! range that leaves its region is either split at the boundary (buffers, see
//! [`GuestMemory::gpa_to_host_partial`]) or refused (rings). A region's file must be at least as
//! long as the region claims, checked before mapping, so touching any translated byte cannot
//! fault on a hole past the end of the file.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::message::MemRegionDesc;
use crate::mmap::{file_size_and_block, Mapping};

/// Most regions a frontend may have mapped at once (`GET_MAX_MEM_SLOTS`).
pub const MAX_MEM_SLOTS: usize = 32;

/// How a region's bytes are mapped into this process.
enum Backing {
    /// Mapped by this crate, read-write, for the region's whole life.
    Owned(Mapping),
    /// Mapped by someone else (the fast path's protected views), who keeps it mapped while
    /// `_keep` lives and decides when it is accessible.
    External {
        base: *mut u8,
        _keep: Arc<dyn std::any::Any + Send + Sync>,
    },
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Owned(m) => write!(f, "Owned({:p}, {})", m.as_ptr(), m.len()),
            Backing::External { base, .. } => write!(f, "External({base:p})"),
        }
    }
}

// SAFETY: the external base pointer refers to a shared mapping kept alive by `_keep` (Send +
// Sync); it is only used to compute addresses, and every access through them goes through the
// raw-pointer accessors of `ring` and `virtq`, which tolerate concurrent writers.
#[allow(unsafe_code)]
unsafe impl Send for Backing {}
// SAFETY: as above; `&Backing` hands out the base address only.
#[allow(unsafe_code)]
unsafe impl Sync for Backing {}

/// One mapped guest memory region.
#[derive(Debug)]
pub struct Region {
    pub desc: MemRegionDesc,
    /// Before `backing`: fields drop in order, and the shield must go before the unmap.
    shield: Option<crate::sigbus::Guard>,
    backing: Backing,
    fd: Option<OwnedFd>,
}

impl Region {
    /// Maps a region described by the frontend. The file must cover `mmap_offset + size`.
    pub fn map(desc: MemRegionDesc, fd: OwnedFd) -> Result<Region> {
        desc.validate()?;
        let (file_size, blk) = file_size_and_block(&fd).map_err(Error::Mmap)?;
        let end = desc.mmap_offset + desc.memory_size; // validate() checked this cannot overflow
        if file_size < end {
            return Err(Error::Rejected(format!(
                "memory region needs {end} bytes of its file but the file has {file_size}"
            )));
        }
        // hugetlbfs only maps whole huge pages; its files are whole pages long, so rounding up
        // stays inside the file. For ordinary files the tail of the last page is harmless: we
        // never touch a byte past `end`.
        let map_len = end
            .div_ceil(blk)
            .checked_mul(blk)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(Error::Invalid(
                "memory region larger than the address space",
            ))?;
        let map = Mapping::map_shared(&fd, map_len).map_err(Error::Mmap)?;
        // The file's length was checked, but the peer may shrink it later: shield the mapping.
        let shield = crate::sigbus::register(map.as_ptr(), map.len(), crate::usize_of(blk));
        Ok(Region {
            desc,
            shield,
            backing: Backing::Owned(map),
            fd: Some(fd),
        })
    }

    /// A region over memory someone else mapped: `base` is the host address of the region's
    /// first byte (guest-physical `desc.guest_phys_addr`, frontend-virtual
    /// `desc.userspace_addr`).
    ///
    /// # Safety
    /// `[base, base + desc.memory_size)` is a mapping of the peer's shared memory that stays
    /// mapped for as long as `keep` is alive. It may be inaccessible at times (a protected view
    /// that is not entered): then any access faults, which is what views are for — so queues
    /// over this region must only be used while the owner has made it accessible.
    #[allow(unsafe_code)]
    pub unsafe fn from_external(
        desc: MemRegionDesc,
        base: *mut u8,
        keep: Arc<dyn std::any::Any + Send + Sync>,
        shield: Option<crate::sigbus::Guard>,
    ) -> Result<Region> {
        desc.validate()?;
        Ok(Region {
            desc,
            shield,
            backing: Backing::External { base, _keep: keep },
            fd: None,
        })
    }

    /// Host address of the region's first byte.
    pub fn host_base(&self) -> *mut u8 {
        match &self.backing {
            // mmap_offset + size <= map.len() was established in `map`.
            Backing::Owned(m) => m
                .as_ptr()
                .wrapping_add(crate::usize_of(self.desc.mmap_offset)),
            Backing::External { base, .. } => *base,
        }
    }

    /// Whether the peer shrank the region's file under us (see [`crate::sigbus`]).
    #[inline]
    pub fn poisoned(&self) -> bool {
        self.shield.as_ref().is_some_and(|g| g.poisoned())
    }

    /// The file behind the region, when this crate mapped it from one.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    #[inline]
    fn gpa_offset(&self, gpa: u64) -> Option<u64> {
        let off = gpa.checked_sub(self.desc.guest_phys_addr)?;
        (off < self.desc.memory_size).then_some(off)
    }

    #[inline]
    fn uva_offset(&self, uva: u64) -> Option<u64> {
        let off = uva.checked_sub(self.desc.userspace_addr)?;
        (off < self.desc.memory_size).then_some(off)
    }
}

/// One region's guest-physical range and where it is mapped, copied out of the table: the
/// translation of a walk's common case in two compares (see [`GuestMemory::hot_span`]). Valid
/// as long as the table it came from, which whoever holds it keeps alive.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    gpa: u64,
    size: u64,
    host: *mut u8,
}

impl Span {
    /// Matches nothing (a table without regions).
    pub const EMPTY: Span = Span {
        gpa: 0,
        size: 0,
        host: std::ptr::null_mut(),
    };

    /// Host pointer for `[gpa, gpa + len)` when it lies in this span.
    #[inline(always)]
    pub fn to_host(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let off = gpa.wrapping_sub(self.gpa);
        (off < self.size && len <= self.size - off)
            .then(|| self.host.wrapping_add(crate::usize_of(off)))
    }
}

/// The frontend's whole memory table. Immutable once built: a changed table is a new
/// `GuestMemory`, swapped in while the queues are stopped, so the data path never sees a table
/// change under its feet.
#[derive(Debug, Default)]
pub struct GuestMemory {
    regions: Vec<Arc<Region>>,
}

impl GuestMemory {
    /// Builds the table from `SET_MEM_TABLE`: one descriptor per region, in order.
    pub fn from_table(descs: &[MemRegionDesc], fds: Vec<OwnedFd>) -> Result<GuestMemory> {
        if descs.len() != fds.len() {
            return Err(Error::FdCount {
                request: "SET_MEM_TABLE",
                got: fds.len(),
                want: descs.len(),
            });
        }
        let mut mem = GuestMemory::default();
        for (d, fd) in descs.iter().zip(fds) {
            mem.insert(Arc::new(Region::map(*d, fd)?))?;
        }
        Ok(mem)
    }

    fn insert(&mut self, r: Arc<Region>) -> Result<()> {
        if self.regions.len() >= MAX_MEM_SLOTS {
            return Err(Error::Rejected(format!(
                "more than {MAX_MEM_SLOTS} memory regions"
            )));
        }
        let d = r.desc;
        for o in &self.regions {
            let od = o.desc;
            let overlap = |a: u64, b: u64| a < b + od.memory_size && b < a + d.memory_size;
            if overlap(d.guest_phys_addr, od.guest_phys_addr) {
                return Err(Error::Invalid(
                    "memory regions overlap in guest-physical space",
                ));
            }
            if overlap(d.userspace_addr, od.userspace_addr) {
                return Err(Error::Invalid(
                    "memory regions overlap in frontend-virtual space",
                ));
            }
        }
        self.regions.push(r);
        self.regions.sort_by_key(|r| r.desc.guest_phys_addr);
        Ok(())
    }

    /// A table of exactly one region.
    pub fn single(region: Region) -> GuestMemory {
        GuestMemory {
            regions: vec![Arc::new(region)],
        }
    }

    /// A copy of this table with one more region (`ADD_MEM_REG`); existing mappings are shared.
    pub fn with_region(&self, desc: MemRegionDesc, fd: OwnedFd) -> Result<GuestMemory> {
        let mut m = GuestMemory {
            regions: self.regions.clone(),
        };
        m.insert(Arc::new(Region::map(desc, fd)?))?;
        Ok(m)
    }

    /// A copy of this table without the region matching `desc` (`REM_MEM_REG`).
    pub fn without_region(&self, desc: &MemRegionDesc) -> Result<GuestMemory> {
        let keep: Vec<_> = self
            .regions
            .iter()
            .filter(|r| {
                !(r.desc.guest_phys_addr == desc.guest_phys_addr
                    && r.desc.memory_size == desc.memory_size
                    && r.desc.userspace_addr == desc.userspace_addr)
            })
            .cloned()
            .collect();
        if keep.len() == self.regions.len() {
            return Err(Error::Invalid(
                "REM_MEM_REG names a region that is not mapped",
            ));
        }
        Ok(GuestMemory { regions: keep })
    }

    /// Whether any region's file was shrunk under us.
    #[inline]
    pub fn poisoned(&self) -> bool {
        self.regions.iter().any(|r| r.poisoned())
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().map(|r| r.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The largest region as a [`Span`]: where nearly every buffer of a guest lies, so walks
    /// try it first without going through the table.
    pub fn hot_span(&self) -> Span {
        self.regions
            .iter()
            .max_by_key(|r| r.desc.memory_size)
            .map_or(Span::EMPTY, |r| Span {
                gpa: r.desc.guest_phys_addr,
                size: r.desc.memory_size,
                host: r.host_base(),
            })
    }

    /// Host pointer for the whole range `[gpa, gpa + len)`, which must lie in one region.
    #[inline]
    pub fn gpa_to_host(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            if let Some(off) = r.gpa_offset(gpa) {
                if len <= r.desc.memory_size - off {
                    return Some(r.host_base().wrapping_add(crate::usize_of(off)));
                }
                return None;
            }
        }
        None
    }

    /// Host pointer for the start of `[gpa, gpa + len)` and how many of its bytes are contiguous
    /// in that region (at least 1, at most `len`). Buffers may legitimately straddle two adjacent
    /// regions; the caller continues at `gpa + returned`.
    #[inline]
    pub fn gpa_to_host_partial(&self, gpa: u64, len: u64) -> Option<(*mut u8, u64)> {
        for r in &self.regions {
            if let Some(off) = r.gpa_offset(gpa) {
                let n = len.min(r.desc.memory_size - off);
                return Some((r.host_base().wrapping_add(crate::usize_of(off)), n));
            }
        }
        None
    }

    /// Host pointer for `[uva, uva + len)` in the frontend's virtual address space (rings).
    pub fn uva_to_host(&self, uva: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            if let Some(off) = r.uva_offset(uva) {
                if len <= r.desc.memory_size - off {
                    return Some(r.host_base().wrapping_add(crate::usize_of(off)));
                }
                return None;
            }
        }
        None
    }

    /// Guest-physical address of a frontend-virtual address.
    pub fn uva_to_gpa(&self, uva: u64) -> Option<u64> {
        self.regions
            .iter()
            .find_map(|r| Some(r.desc.guest_phys_addr + r.uva_offset(uva)?))
    }

    /// Guest-physical range of host memory `[p, p + len)`, when it lies in one region. Used by
    /// the driver side, which owns the memory and publishes addresses of its own buffers.
    pub fn host_to_gpa(&self, p: *const u8, len: u64) -> Option<u64> {
        let a = p as u64;
        self.regions.iter().find_map(|r| {
            let base = r.host_base() as u64;
            let off = a.checked_sub(base)?;
            (off < r.desc.memory_size && len <= r.desc.memory_size - off)
                .then(|| r.desc.guest_phys_addr + off)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmap::create_memfd;

    fn region(gpa: u64, size: u64, uva: u64) -> (MemRegionDesc, OwnedFd) {
        let fd = create_memfd("test", size, false).unwrap();
        (
            MemRegionDesc {
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: uva,
                mmap_offset: 0,
            },
            fd,
        )
    }

    #[test]
    fn translate_inside_and_at_edges() {
        let (d, fd) = region(0x1000_0000, 0x10000, 0x7000_0000);
        let m = GuestMemory::from_table(&[d], vec![fd]).unwrap();
        let base = m.gpa_to_host(0x1000_0000, 1).unwrap();
        assert_eq!(
            m.gpa_to_host(0x1000_0000 + 0xfff0, 0x10),
            Some(base.wrapping_add(0xfff0))
        );
        assert_eq!(m.gpa_to_host(0x1000_0000 + 0xfff0, 0x11), None);
        assert_eq!(m.gpa_to_host(0x0fff_ffff, 1), None);
        assert_eq!(m.gpa_to_host(0x1001_0000, 1), None);
        assert_eq!(
            m.uva_to_host(0x7000_0010, 16),
            Some(base.wrapping_add(0x10))
        );
        assert_eq!(m.uva_to_gpa(0x7000_0010), Some(0x1000_0010));
        assert_eq!(m.host_to_gpa(base.wrapping_add(8), 8), Some(0x1000_0008));
    }

    #[test]
    fn the_hot_span_is_the_largest_region_and_agrees_with_the_table() {
        let (d1, f1) = region(0, 0x10000, 0x7000_0000);
        let (d2, f2) = region(0x10_0000, 0x40000, 0x7100_0000);
        let m = GuestMemory::from_table(&[d1, d2], vec![f1, f2]).unwrap();
        let hot = m.hot_span();
        for (gpa, len) in [
            (0x10_0000, 1),
            (0x13_fff0, 0x10),
            (0x13_fff0, 0x11),
            (0x0fff_ffff, 1),
            (0x8000, 16),
            (u64::MAX, 2),
        ] {
            let t = m.gpa_to_host(gpa, len);
            match hot.to_host(gpa, len) {
                Some(p) => assert_eq!(Some(p), t, "{gpa:#x}+{len:#x}"),
                // Outside the hot region: the table decides (the small region, or nothing).
                None => assert!(t.is_none() || gpa < 0x10000, "{gpa:#x}+{len:#x}"),
            }
        }
        assert!(
            hot.to_host(0x8000, 16).is_none(),
            "the small region is not the hot one"
        );
        assert!(Span::EMPTY.to_host(0, 1).is_none());
        assert!(GuestMemory::default().hot_span().to_host(0, 1).is_none());
    }

    #[test]
    fn test_translate_length_overflow() {
        let (d, fd) = region(0, 0x10000, 0);
        let m = GuestMemory::from_table(&[d], vec![fd]).unwrap();
        assert_eq!(m.gpa_to_host(0x10, u64::MAX), None);
        assert_eq!(m.gpa_to_host(u64::MAX, 2), None);
        assert_eq!(m.uva_to_host(u64::MAX - 1, 4), None);
    }

    #[test]
    fn test_buffer_crossing_regions_is_split() {
        let (d1, f1) = region(0, 0x1000, 0x10_0000);
        let (d2, f2) = region(0x1000, 0x1000, 0x20_0000);
        let m = GuestMemory::from_table(&[d1, d2], vec![f1, f2]).unwrap();
        assert_eq!(
            m.gpa_to_host(0xff0, 0x20),
            None,
            "whole-range translation refuses"
        );
        let (_, n) = m.gpa_to_host_partial(0xff0, 0x20).unwrap();
        assert_eq!(n, 0x10);
        let (_, n) = m.gpa_to_host_partial(0x1000, 0x10).unwrap();
        assert_eq!(n, 0x10);
        assert!(m.gpa_to_host_partial(0x2000, 1).is_none());
    }

    #[test]
    fn test_region_file_shorter_than_region() {
        let fd = create_memfd("short", 4096, false).unwrap();
        let d = MemRegionDesc {
            guest_phys_addr: 0,
            memory_size: 1 << 20,
            userspace_addr: 0,
            mmap_offset: 0,
        };
        assert!(GuestMemory::from_table(&[d], vec![fd]).is_err());
    }

    #[test]
    fn test_region_mmap_offset_past_file() {
        let fd = create_memfd("off", 8192, false).unwrap();
        let d = MemRegionDesc {
            guest_phys_addr: 0,
            memory_size: 4096,
            userspace_addr: 0,
            mmap_offset: 8192,
        };
        assert!(GuestMemory::from_table(&[d], vec![fd]).is_err());
    }

    #[test]
    fn test_mem_table_fd_count_mismatch() {
        let (d, fd) = region(0, 4096, 0);
        assert!(matches!(
            GuestMemory::from_table(&[d, d], vec![fd]),
            Err(Error::FdCount { .. })
        ));
    }

    #[test]
    fn test_regions_overlap() {
        let (d1, f1) = region(0, 0x2000, 0);
        let (d2, f2) = region(0x1000, 0x2000, 0x10_0000);
        assert!(GuestMemory::from_table(&[d1, d2], vec![f1, f2]).is_err());
        let (d1, f1) = region(0, 0x2000, 0);
        let (d2, f2) = region(0x10_0000, 0x2000, 0x1000);
        assert!(GuestMemory::from_table(&[d1, d2], vec![f1, f2]).is_err());
    }

    #[test]
    fn add_and_remove_region() {
        let (d1, f1) = region(0, 0x1000, 0);
        let m = GuestMemory::from_table(&[d1], vec![f1]).unwrap();
        let (d2, f2) = region(0x10000, 0x1000, 0x10000);
        let m2 = m.with_region(d2, f2).unwrap();
        assert!(m2.gpa_to_host(0x10000, 16).is_some());
        let m3 = m2.without_region(&d1).unwrap();
        assert!(m3.gpa_to_host(0, 16).is_none());
        assert!(m3.without_region(&d1).is_err());
    }
}

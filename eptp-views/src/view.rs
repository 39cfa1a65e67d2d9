//! Views: a view is a set of grants, each a page-aligned byte range of one region with a
//! permission. A view is checked once when it is built (ranges inside their regions, whole
//! pages, no overlap) and precomputes the protection changes that enter and leave make, merged
//! so that adjacent ranges cost one system call.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::region::Region;
use crate::sys::{self, Prot};

/// Entries of a view list, the default view 0 included: the size of VMFUNC's EPTP list.
pub const MAX_VIEWS: usize = 512;

/// Index of a view in a view list; 0 is the default view (no peer memory accessible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewIndex(u16);

impl ViewIndex {
    /// The default view: the one a thread is in outside the trampoline.
    pub const DEFAULT: ViewIndex = ViewIndex(0);

    /// Any index, e.g. one received from the hooks; the view list checks its range on use.
    pub const fn new(index: u16) -> Self {
        ViewIndex(index)
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub const fn is_default(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ViewIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a view lets its code do with a granted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    Read,
    ReadWrite,
}

impl Perm {
    pub(crate) fn prot(self) -> Prot {
        match self {
            Perm::Read => Prot::Read,
            Perm::ReadWrite => Prot::ReadWrite,
        }
    }
}

/// One range of a region and its permission.
#[derive(Debug, Clone)]
pub struct Grant {
    pub region: Arc<Region>,
    pub offset: usize,
    pub len: usize,
    pub perm: Perm,
}

impl Grant {
    pub fn new(region: Arc<Region>, offset: usize, len: usize, perm: Perm) -> Self {
        Grant {
            region,
            offset,
            len,
            perm,
        }
    }

    /// The whole region.
    pub fn whole(region: Arc<Region>, perm: Perm) -> Self {
        let len = region.len();
        Grant {
            region,
            offset: 0,
            len,
            perm,
        }
    }

    /// First byte of the granted range (valid once the grant is part of a view).
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr().wrapping_add(self.offset)
    }

    fn check(&self) -> Result<()> {
        let page = sys::page_size();
        let id = self.region.id();
        if self.len == 0 || !self.offset.is_multiple_of(page) || !self.len.is_multiple_of(page) {
            return Err(Error::GrantNotPageAligned {
                id,
                offset: self.offset,
                len: self.len,
                page,
            });
        }
        if self
            .offset
            .checked_add(self.len)
            .is_none_or(|end| end > self.region.len())
        {
            return Err(Error::GrantOutOfRegion {
                id,
                offset: self.offset,
                len: self.len,
                region_len: self.region.len(),
            });
        }
        Ok(())
    }
}

/// `(offset, len, perm)` of one grant within its region.
pub(crate) type Range = (usize, usize, Perm);

/// One protection change of a switch: `offset..offset+len` of `region` to `prot`.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) region: Arc<Region>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) prot: Prot,
}

impl Op {
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        self.region.protect(self.offset, self.len, self.prot)
    }
}

/// A checked set of grants. See the module documentation.
#[derive(Debug, Clone)]
pub struct View {
    grants: Vec<Grant>,
    /// Protection changes that open the view (mprotect backend).
    open: Vec<Op>,
    /// Protection changes that close it again (all to PROT_NONE).
    close: Vec<Op>,
}

impl View {
    /// Checks the grants: at least one; each whole pages inside its region; no two on the same
    /// region overlapping.
    pub fn new(grants: Vec<Grant>) -> Result<View> {
        if grants.is_empty() {
            return Err(Error::EmptyView);
        }
        for g in &grants {
            g.check()?;
        }
        let mut sorted: Vec<&Grant> = grants.iter().collect();
        sorted.sort_by_key(|g| (g.region.as_ptr() as usize, g.offset));
        for w in sorted.windows(2) {
            let (a, b) = (w[0], w[1]);
            if Arc::ptr_eq(&a.region, &b.region) && a.offset + a.len > b.offset {
                return Err(Error::OverlappingGrants {
                    id: a.region.id(),
                    first: a.offset,
                    second: b.offset,
                });
            }
        }
        let open = merge(sorted.iter().map(|g| (g, g.perm.prot())));
        let close = merge(sorted.iter().map(|g| (g, Prot::None)));
        Ok(View {
            grants,
            open,
            close,
        })
    }

    /// The grants, in the order given.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The grant whose range holds `addr`, if any.
    pub fn grant_at(&self, addr: usize) -> Option<&Grant> {
        self.grants.iter().find(|g| {
            let start = g.as_ptr() as usize;
            (start..start + g.len).contains(&addr)
        })
    }

    pub(crate) fn open_ops(&self) -> &[Op] {
        &self.open
    }

    pub(crate) fn close_ops(&self) -> &[Op] {
        &self.close
    }

    /// Grants grouped by region (by identity), each group's ranges sorted by offset: what the
    /// pku backend tags a region's pages with.
    pub(crate) fn by_region(&self) -> Vec<(Arc<Region>, Vec<Range>)> {
        let mut out: Vec<(Arc<Region>, Vec<Range>)> = Vec::new();
        for g in &self.grants {
            match out.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &g.region)) {
                Some((_, v)) => v.push((g.offset, g.len, g.perm)),
                None => out.push((g.region.clone(), vec![(g.offset, g.len, g.perm)])),
            }
        }
        for (_, v) in &mut out {
            v.sort_unstable();
        }
        out
    }
}

/// Merges protection changes of sorted, non-overlapping grants: adjacent ranges of one region
/// that go to the same protection become one change.
fn merge<'a>(items: impl Iterator<Item = (&'a &'a Grant, Prot)>) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    for (g, prot) in items {
        if let Some(last) = ops.last_mut() {
            if Arc::ptr_eq(&last.region, &g.region)
                && last.prot == prot
                && last.offset + last.len == g.offset
            {
                last.len += g.len;
                continue;
            }
        }
        ops.push(Op {
            region: g.region.clone(),
            offset: g.offset,
            len: g.len,
            prot,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::RegionId;

    fn region(pages: usize, id: u64) -> Arc<Region> {
        let len = pages * sys::page_size();
        Arc::new(
            Region::map(
                sys::memfd("eptp-views-test", len).unwrap(),
                len,
                RegionId(id),
            )
            .unwrap(),
        )
    }

    #[test]
    fn view_without_grants_is_refused() {
        assert!(matches!(View::new(vec![]), Err(Error::EmptyView)));
    }

    #[test]
    fn grant_beyond_region_is_refused() {
        let r = region(2, 1);
        let p = sys::page_size();
        let e = View::new(vec![Grant::new(r.clone(), p, 2 * p, Perm::Read)]).unwrap_err();
        assert!(matches!(e, Error::GrantOutOfRegion { .. }), "{e}");
        let e = View::new(vec![Grant::new(r, usize::MAX - p + 1, p, Perm::Read)]).unwrap_err();
        assert!(matches!(e, Error::GrantOutOfRegion { .. }), "{e}");
    }

    #[test]
    fn grant_of_partial_page_is_refused() {
        let r = region(2, 1);
        let e = View::new(vec![Grant::new(r.clone(), 0, 100, Perm::Read)]).unwrap_err();
        assert!(matches!(e, Error::GrantNotPageAligned { .. }), "{e}");
        let e =
            View::new(vec![Grant::new(r.clone(), 8, sys::page_size(), Perm::Read)]).unwrap_err();
        assert!(matches!(e, Error::GrantNotPageAligned { .. }), "{e}");
        let e = View::new(vec![Grant::new(r, 0, 0, Perm::Read)]).unwrap_err();
        assert!(matches!(e, Error::GrantNotPageAligned { .. }), "{e}");
    }

    #[test]
    fn overlapping_grants_are_refused() {
        let r = region(4, 1);
        let p = sys::page_size();
        let e = View::new(vec![
            Grant::new(r.clone(), 2 * p, 2 * p, Perm::ReadWrite),
            Grant::new(r.clone(), 0, 3 * p, Perm::Read),
        ])
        .unwrap_err();
        assert!(
            matches!(e, Error::OverlappingGrants { first: 0, .. }),
            "{e}"
        );
    }

    #[test]
    fn adjacent_grants_merge_into_one_protection_change() {
        let a = region(4, 1);
        let b = region(1, 2);
        let p = sys::page_size();
        let v = View::new(vec![
            Grant::new(a.clone(), 2 * p, p, Perm::ReadWrite),
            Grant::new(a.clone(), 0, p, Perm::Read),
            Grant::new(a.clone(), p, p, Perm::Read),
            Grant::whole(b.clone(), Perm::Read),
        ])
        .unwrap();
        let open: Vec<_> = v
            .open_ops()
            .iter()
            .map(|o| (o.region.id().0, o.offset, o.len, o.prot))
            .collect();
        assert_eq!(open.len(), 3);
        assert!(open.contains(&(1, 0, 2 * p, Prot::Read)));
        assert!(open.contains(&(1, 2 * p, p, Prot::ReadWrite)));
        assert!(open.contains(&(2, 0, p, Prot::Read)));
        let close: Vec<_> = v
            .close_ops()
            .iter()
            .map(|o| (o.region.id().0, o.offset, o.len, o.prot))
            .collect();
        assert_eq!(close.len(), 2);
        assert!(close.contains(&(1, 0, 3 * p, Prot::None)));
        let by = v.by_region();
        let (_, ra) = by.iter().find(|(r, _)| r.id().0 == 1).unwrap();
        assert_eq!(
            ra,
            &vec![
                (0, p, Perm::Read),
                (p, p, Perm::Read),
                (2 * p, p, Perm::ReadWrite)
            ]
        );
        assert!(v
            .grant_at(a.as_ptr() as usize + p + 5)
            .is_some_and(|g| g.offset == p));
        assert!(v.grant_at(a.as_ptr() as usize + 3 * p).is_none());
    }
}

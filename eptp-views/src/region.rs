//! A region: (a page-aligned window of) a peer guest's shared-memory file, mapped into this
//! process by this crate and inaccessible (PROT_NONE) until a view that grants it is entered.
//! The region owns the descriptor and the mapping; grants hold it by `Arc`, so it stays mapped
//! as long as any view (and so any `ViewList`) that grants it lives.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::pkru::Pkey;
use crate::registry;
use crate::sys::{self, Mapping, Prot};
use crate::view::Perm;
use crate::Backend;

/// Creates an anonymous shared-memory file (memfd, close-on-exec) of `len` bytes: the kind of
/// file a guest keeps its memory in and the hooks pass around. `name` shows in /proc/PID/maps.
pub fn memfd(name: &str, len: usize) -> Result<OwnedFd> {
    sys::memfd(name, len).map_err(|e| Error::sys("memfd_create/ftruncate", e))
}

/// Name of a region, chosen by whoever grants it (the hooks); it appears in violation reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u64);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a region's pages are protected, fixed by the first view list that grants it.
#[derive(Debug)]
enum Binding {
    Unbound,
    Mprotect,
    /// Tagged with `key`; `grants` (sorted `(offset, len, perm)`) carry their permission in the
    /// page protections, every other page of the region stays PROT_NONE.
    Pku {
        key: Pkey,
        grants: Vec<(usize, usize, Perm)>,
    },
}

/// A peer's memory, mapped PROT_NONE. See the module documentation.
///
/// A peer that shrinks its file under us turns our accesses into SIGBUS (not a view violation,
/// and fatal): peers' files should be sealed against shrinking (`F_SEAL_SHRINK`, as QEMU's
/// `memory-backend-memfd` does by default); this crate does not check it.
#[derive(Debug)]
pub struct Region {
    id: RegionId,
    file_offset: u64,
    slot: usize,
    // Field order is drop order: unmap, then free the key that tagged the pages, then close.
    mapping: Mapping,
    binding: Mutex<Binding>,
    fd: OwnedFd,
}

impl Region {
    /// Maps the first `len` bytes of `fd` (a memfd of a peer guest), PROT_NONE.
    pub fn map(fd: OwnedFd, len: usize, id: RegionId) -> Result<Region> {
        Region::map_range(fd, 0, len, id)
    }

    /// Maps bytes `file_offset..file_offset+len` of `fd`, PROT_NONE. Both must be whole pages,
    /// and the file must be at least that long (an access beyond its end would be SIGBUS, not a
    /// view violation).
    pub fn map_range(fd: OwnedFd, file_offset: u64, len: usize, id: RegionId) -> Result<Region> {
        let page = sys::page_size();
        if len == 0 || !len.is_multiple_of(page) {
            return Err(Error::RegionLength { id, len, page });
        }
        if !file_offset.is_multiple_of(page as u64) {
            return Err(Error::RegionOffset {
                id,
                offset: file_offset,
                page,
            });
        }
        let file_len =
            sys::file_len(fd.as_fd()).map_err(|e| Error::sys("fstat of the region's file", e))?;
        let end = u64::try_from(len)
            .ok()
            .and_then(|l| file_offset.checked_add(l));
        if end.is_none_or(|end| end > file_len) {
            return Err(Error::RegionBeyondFile {
                id,
                offset: file_offset,
                len,
                file_len,
            });
        }
        let mapping = Mapping::new(fd.as_fd(), file_offset, len)
            .map_err(|e| Error::sys("mmap of the region", e))?;
        let slot = registry::register(mapping.addr(), mapping.addr() + mapping.len(), id.0).ok_or(
            Error::TooManyRegions {
                max: registry::MAX_REGIONS,
            },
        )?;
        Ok(Region {
            id,
            file_offset,
            slot,
            mapping,
            binding: Mutex::new(Binding::Unbound),
            fd,
        })
    }

    pub fn id(&self) -> RegionId {
        self.id
    }

    /// First byte of the mapping. Dereference it only inside a view that grants the bytes.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mapping.addr() as *mut u8
    }

    pub fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Never true: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        self.mapping.len() == 0
    }

    /// Offset of the mapping in the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Whether `addr` lies in the mapping.
    pub fn contains(&self, addr: usize) -> bool {
        (self.mapping.addr()..self.mapping.addr() + self.mapping.len()).contains(&addr)
    }

    /// The memory file, e.g. to pass it on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Switches bytes `offset..offset+len` to `prot` (mprotect backend).
    pub(crate) fn protect(&self, offset: usize, len: usize, prot: Prot) -> std::io::Result<()> {
        self.mapping.protect(offset, len, prot)
    }

    /// Marks the region as switched by mprotect; refused if PKU already tagged it.
    pub(crate) fn bind_mprotect(&self) -> Result<()> {
        let mut b = self
            .binding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*b {
            Binding::Unbound => {
                *b = Binding::Mprotect;
                Ok(())
            }
            Binding::Mprotect => Ok(()),
            Binding::Pku { .. } => Err(Error::BackendMismatch {
                id: self.id,
                bound: Backend::Pku,
                wanted: Backend::Mprotect,
            }),
        }
    }

    /// Tags the region's granted pages with a key of its own (first grant), or checks that a
    /// later view grants exactly the same pages; returns the key.
    pub(crate) fn bind_pku(&self, grants: &[(usize, usize, Perm)]) -> Result<u32> {
        let mut b = self
            .binding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*b {
            Binding::Pku { key, grants: bound } => {
                if bound.as_slice() == grants {
                    Ok(key.get())
                } else {
                    Err(Error::PkuGrantMismatch { id: self.id })
                }
            }
            Binding::Mprotect => Err(Error::BackendMismatch {
                id: self.id,
                bound: Backend::Mprotect,
                wanted: Backend::Pku,
            }),
            Binding::Unbound => {
                let key = Pkey::alloc().map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOSPC) => Error::NoFreeProtectionKey { id: self.id },
                    _ => Error::sys("pkey_alloc", e),
                })?;
                for &(offset, len, perm) in grants {
                    self.mapping
                        .pkey_protect(offset, len, perm.prot(), key.get())
                        .map_err(|e| Error::sys("pkey_mprotect of a granted range", e))?;
                }
                let k = key.get();
                *b = Binding::Pku {
                    key,
                    grants: grants.to_vec(),
                };
                Ok(k)
            }
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Forget the range before it is unmapped, so a later mapping at the same address is
        // not mistaken for this region.
        registry::unregister(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(len: usize) -> OwnedFd {
        sys::memfd("eptp-views-test", len).unwrap()
    }

    #[test]
    fn region_of_zero_length_is_refused() {
        assert!(matches!(
            Region::map(fd(4096), 0, RegionId(1)),
            Err(Error::RegionLength { .. })
        ));
    }

    #[test]
    fn region_of_partial_page_is_refused() {
        assert!(matches!(
            Region::map(fd(8192), 100, RegionId(1)),
            Err(Error::RegionLength { .. })
        ));
    }

    #[test]
    fn region_beyond_end_of_file_is_refused() {
        let page = sys::page_size();
        let r = Region::map(fd(page), 2 * page, RegionId(1));
        assert!(matches!(r, Err(Error::RegionBeyondFile { .. })), "{r:?}");
        let r = Region::map_range(fd(2 * page), u64::MAX - 4095, page, RegionId(1));
        assert!(matches!(r, Err(Error::RegionBeyondFile { .. })), "{r:?}");
    }

    #[test]
    fn region_at_unaligned_offset_is_refused() {
        let r = Region::map_range(fd(3 * 4096), 10, 4096, RegionId(1));
        assert!(matches!(r, Err(Error::RegionOffset { .. })), "{r:?}");
    }

    #[test]
    fn region_is_registered_for_the_fault_handler_while_mapped() {
        let page = sys::page_size();
        let id = 0x7777_0001;
        let r = Region::map_range(fd(3 * page), page as u64, 2 * page, RegionId(id)).unwrap();
        let base = r.as_ptr() as usize;
        assert_eq!(registry::lookup(base), Some(id));
        assert_eq!(registry::lookup(base + 2 * page - 1), Some(id));
        assert!(r.contains(base + page) && !r.contains(base + 2 * page));
        drop(r);
        // Another test may map a region at the same address at once; it has another id.
        assert_ne!(registry::lookup(base), Some(id));
    }
}

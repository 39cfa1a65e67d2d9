//! Shared memory mappings of file descriptors (memfd, hugetlbfs), the one place this crate calls
//! `mmap`/`munmap`.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A `MAP_SHARED` read-write mapping of a whole file prefix, unmapped on drop.
///
/// The mapping is only ever accessed through raw pointers (volatile or atomic accesses for rings,
/// byte copies for buffers): its contents are shared with another process that may change them at
/// any time, so no Rust reference into it is ever created.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; it is not tied to the creating thread, and every
// access goes through raw-pointer operations that tolerate concurrent writers.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out the base pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` shared and read-write.
    pub fn map_shared(fd: &impl AsFd, len: usize) -> io::Result<Mapping> {
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mapping of 0 bytes"))?;
        // SAFETY: a fresh mapping at a kernel-chosen address cannot alias any Rust object; the fd
        // is valid for the call (borrowed); the result is owned by the returned `Mapping`.
        let p = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Mapping { ptr: p.cast(), len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shared u64 at `offset`, when it is 8-aligned and inside the mapping.
    fn word(&self, offset: usize) -> Option<&std::sync::atomic::AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: offset + 8 <= len and the base is page-aligned, so the word is inside the
        // mapping (alive as long as `&self`) and 8-aligned; every access to shared words goes
        // through atomics, so a reference to the atomic cell is sound with a concurrent peer.
        Some(unsafe {
            std::sync::atomic::AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast())
        })
    }

    /// The u64 at `offset` (8-aligned, inside the mapping), read atomically: for counters a
    /// peer updates in shared memory.
    pub fn load_u64(&self, offset: usize) -> Option<u64> {
        Some(
            self.word(offset)?
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Stores the u64 at `offset` atomically.
    pub fn store_u64(&self, offset: usize, v: u64) -> Option<()> {
        self.word(offset)?
            .store(v, std::sync::atomic::Ordering::Relaxed);
        Some(())
    }

    /// Adds to a counter at `offset` that only this process writes (a load and a store, no
    /// locked instruction).
    pub fn bump_u64(&self, offset: usize, n: u64) -> Option<()> {
        let w = self.word(offset)?;
        w.store(
            w.load(std::sync::atomic::Ordering::Relaxed).wrapping_add(n),
            std::sync::atomic::Ordering::Relaxed,
        );
        Some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map_shared`, which nothing
        // else unmaps; every user holds the `Mapping` (through `Arc`s) while it uses the memory.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::error!("munmap of {} bytes failed: {e}", self.len);
        }
    }
}

/// Size and block size (the page size for hugetlbfs files) of a descriptor's file.
pub fn file_size_and_block(fd: &impl AsFd) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let blk = u64::try_from(st.st_blksize).unwrap_or(4096).max(4096);
    Ok((size, blk))
}

/// Creates a memory file of `size` bytes for memory we share with a peer: hugetlbfs-backed when
/// `huge` is set (fails where the machine has no free hugepages), an ordinary memfd otherwise.
pub fn create_memfd(name: &str, size: u64, huge: bool) -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if huge {
        flags |= MFdFlags::MFD_HUGETLB;
    }
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name with NUL"))?;
    let fd = memfd_create(cname.as_c_str(), flags).map_err(io::Error::from)?;
    let len = i64::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd size too large"))?;
    nix::unistd::ftruncate(&fd, len).map_err(io::Error::from)?;
    Ok(fd)
}

//! A memfd region mapped shared: memory two processes (or two threads) both see, for
//! notification slots in tests, the benchmark and any peer that has no region of its own yet.
//! The fast path places its slot in the region it already shares with its peer instead
//! ([`crate::SharedWord::new`]).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::Error;

/// A `MAP_SHARED` mapping of a whole memfd. Hand [`ShmRegion::fd`] to the peer (SCM_RIGHTS or
/// fork/exec inheritance); it maps the same pages with [`ShmRegion::from_fd`].
///
/// Invariant: `ptr` is the start of a live `len`-byte read-write shared mapping of `fd`, owned
/// by this value and unmapped on drop. The memory is shared with other processes, which may
/// write it at any time, so Rust code must only touch it through atomics (as
/// [`crate::SharedWord`] does) or raw-pointer volatile accesses, never `&[u8]`.
#[derive(Debug)]
pub struct ShmRegion {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is process-wide; the struct hands out only raw pointers and slot handles
// whose accesses are atomic.
unsafe impl Send for ShmRegion {}
// SAFETY: as for Send.
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    /// Creates a zero-filled memfd of `len` bytes (close-on-exec) and maps it.
    pub fn create(name: &str, len: usize) -> Result<ShmRegion, Error> {
        let len64 = u64::try_from(len).map_err(|_| Error::BadRegionLength { len: u64::MAX })?;
        if len == 0 {
            return Err(Error::BadRegionLength { len: 0 });
        }
        let cname = CString::new(name.replace('\0', "_")).unwrap_or_default();
        // SAFETY: `cname` is a valid NUL-terminated string; memfd_create has no other memory
        // effects.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        file.set_len(len64)
            .map_err(|e| Error::io("ftruncate memfd", e))?;
        ShmRegion::map(OwnedFd::from(file), len)
    }

    /// Maps the whole of a memfd (or any shared-mappable file) received from the peer.
    pub fn from_fd(fd: OwnedFd) -> Result<ShmRegion, Error> {
        let file = File::from(fd);
        let len64 = file
            .metadata()
            .map_err(|e| Error::io("fstat shared region", e))?
            .len();
        let len = usize::try_from(len64).map_err(|_| Error::BadRegionLength { len: len64 })?;
        if len == 0 {
            return Err(Error::BadRegionLength { len: 0 });
        }
        ShmRegion::map(OwnedFd::from(file), len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<ShmRegion, Error> {
        // SAFETY: a fresh mapping chosen by the kernel (addr = NULL), so no existing memory is
        // replaced; `fd` is a valid descriptor of at least `len` bytes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                "mmap shared region",
                std::io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Error::BadRegionLength { len: 0 })?;
        Ok(ShmRegion { ptr, len, fd })
    }

    /// Start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, to hand to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping this value created and owns; every
        // SharedWord into it holds an Arc on this value, so no handle outlives the unmap.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

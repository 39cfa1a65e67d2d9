//! System-call leaf: memfd creation, the owned mapping of a peer's memory file and its
//! protection changes (mprotect, pkey_mprotect), and the two calls the signal handler may make
//! (raw `write`, `gettid`). Every other module reaches the kernel through here or
//! [`crate::pkru`], so the unsafe code of mappings sits in one place.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Page protection a range can be switched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prot {
    None,
    Read,
    ReadWrite,
}

impl Prot {
    fn bits(self) -> libc::c_int {
        match self {
            Prot::None => libc::PROT_NONE,
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// The system page size, read once.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory effects; _SC_PAGESIZE is a valid name.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(v).ok().filter(|&p| p > 0).unwrap_or(4096)
    })
}

/// Creates an anonymous shared-memory file (memfd, close-on-exec) of `len` bytes.
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call; the flags are
    // valid memfd_create flags. The returned descriptor is checked before use.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create, is open and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open memfd we own; ftruncate has no memory effects in this process.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Size in bytes of the file behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is a valid open descriptor (borrowed); `st` points to writable storage of
    // the size fstat writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    u64::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A shared mapping of (a page-aligned window of) a memory file, created inaccessible
/// (PROT_NONE) and unmapped on drop. Nothing in this process holds Rust references into it:
/// its users go through raw pointers, so changing its protection never invalidates a reference.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset`, PROT_NONE, MAP_SHARED. The caller has checked
    /// that `len` is a positive multiple of the page size and `offset` is page-aligned.
    pub(crate) fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh mapping at a kernel-chosen address (NULL hint, no MAP_FIXED), so no
        // existing memory of this process is replaced; `fd` is open for the duration of the call
        // and the mapping keeps its own reference to the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: p as usize,
            len,
        })
    }

    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len && len > 0 => Ok(self.addr + offset),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    /// Sets the protection of bytes `offset..offset+len` of this mapping (page-aligned).
    pub(crate) fn protect(&self, offset: usize, len: usize, prot: Prot) -> io::Result<()> {
        let addr = self.check(offset, len)?;
        // SAFETY: `addr..addr+len` lies inside this live mapping (checked above), which this
        // process created for a peer's memory and into which no Rust reference exists, so no
        // other memory changes protection and no reference is invalidated.
        if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot.bits()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the protection and the protection key of bytes `offset..offset+len`.
    pub(crate) fn pkey_protect(
        &self,
        offset: usize,
        len: usize,
        prot: Prot,
        key: u32,
    ) -> io::Result<()> {
        let addr = self.check(offset, len)?;
        // SAFETY: as in `protect`: the range lies inside this live mapping and no Rust
        // reference points into it; pkey_mprotect takes (addr, len, prot, pkey) and touches no
        // memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pkey_mprotect,
                addr as *mut libc::c_void,
                len,
                libc::c_long::from(prot.bits()),
                libc::c_long::from(key),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr+len` is exactly the mapping created in `new`, unmapped once here;
        // nothing refers to it any more (the owning Region is being dropped).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Writes all of `buf` to `fd` with raw `write(2)`, retrying on EINTR and short writes, giving
/// up silently on any other error. Async-signal-safe: no allocation, no lock.
pub(crate) fn write_raw(fd: libc::c_int, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice for its length; write(2) only reads it.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        match usize::try_from(n) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf = &buf[n.min(buf.len())..],
        }
    }
}

/// The calling thread's kernel id. Async-signal-safe.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments, cannot fail and has no memory effects.
    let t = unsafe { libc::syscall(libc::SYS_gettid) };
    i32::try_from(t).unwrap_or(-1)
}

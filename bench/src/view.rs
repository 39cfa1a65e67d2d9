//! A protected view realised with mprotect: a region that is inaccessible (`PROT_NONE`) except
//! between entering and leaving the view. This is the fast path's fallback where PKU is missing,
//! reduced to its cost: two system calls (and the TLB shootdown they imply) per switch pair.
//!
//! The borrow checker enforces the view discipline: bytes are only reachable through an
//! [`Entered`] guard, and the guard closes the view when it goes.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};

/// The region behind a view.
pub struct View {
    base: NonNull<c_void>,
    len: usize,
}

impl View {
    /// Maps `len` bytes (a multiple of the page size), populated, then closed.
    pub fn new(len: usize) -> io::Result<View> {
        let nz = NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous private mapping at an address the kernel picks aliases
        // nothing of ours.
        let base = unsafe {
            mmap_anonymous(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
            )
        }
        .map_err(io::Error::from)?;
        let v = View { base, len };
        v.protect(ProtFlags::PROT_NONE)?;
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn protect(&self, prot: ProtFlags) -> io::Result<()> {
        // SAFETY: [base, base + len) is our own mapping; no reference into it exists outside
        // an `Entered` guard, and the guard is gone (or being created) when this runs.
        unsafe { mprotect(self.base, self.len, prot) }.map_err(io::Error::from)
    }

    /// Opens the view (one `mprotect`).
    pub fn enter(&mut self) -> io::Result<Entered<'_>> {
        self.protect(ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
        Ok(Entered {
            view: self,
            open: true,
        })
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and no guard can outlive `self`.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

/// An open view: the region is readable and writable until [`Entered::leave`] (or drop).
pub struct Entered<'a> {
    view: &'a mut View,
    open: bool,
}

impl Entered<'_> {
    fn range(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.view.len),
            "view access {off}+{len} beyond {} bytes",
            self.view.len
        );
        self.view.base.as_ptr().cast::<u8>().wrapping_add(off)
    }

    /// Copies `data` into the region at `off`.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        let p = self.range(off, data.len());
        // SAFETY: in bounds (checked), writable while the view is entered, and only this
        // thread can reach the region (the guard borrows the view mutably).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    /// Copies bytes at `off` out of the region.
    pub fn read(&self, off: usize, out: &mut [u8]) {
        let p = self.range(off, out.len());
        // SAFETY: as in `write`; readable while entered.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
    }

    /// Closes the view (one `mprotect`).
    pub fn leave(mut self) -> io::Result<()> {
        self.open = false;
        self.view.protect(ProtFlags::PROT_NONE)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.view.protect(ProtFlags::PROT_NONE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_inside_the_view_are_there_next_time() {
        let mut v = View::new(2 * 4096).unwrap();
        let mut e = v.enter().unwrap();
        e.write(4096 + 10, b"hello");
        e.leave().unwrap();
        let e = v.enter().unwrap();
        let mut out = [0u8; 5];
        e.read(4096 + 10, &mut out);
        assert_eq!(&out, b"hello");
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn test_write_beyond_the_view() {
        let mut v = View::new(4096).unwrap();
        let mut e = v.enter().unwrap();
        e.write(4090, &[0u8; 10]);
    }
}

//! Helpers shared by the integration tests: regions on fresh memfds, kernel-side probes of a
//! page's protection (so a test can look at a view's state without faulting), and the PKU skip.
#![allow(dead_code)]
#![allow(unsafe_code)]

use std::io::Write;
use std::sync::Arc;

use eptp_views::{memfd, page_size, Backend, Region, RegionId};

/// A region of `pages` pages on a fresh memfd.
pub fn region(pages: usize, id: u64) -> Arc<Region> {
    let len = pages * page_size();
    Arc::new(Region::map(memfd("eptp-views-test", len).unwrap(), len, RegionId(id)).unwrap())
}

/// Whether this thread may read `ptr`, asked of the kernel: `write(2)` from it into a pipe
/// fails with EFAULT where a load would fault (page protection, and protection keys, which the
/// kernel honours when it copies from user memory).
pub fn readable(ptr: *const u8) -> bool {
    let (r, w) = pipe();
    // SAFETY: write(2) only reads `ptr` through the kernel's fault-checked user copy, so an
    // inaccessible address yields EFAULT, never a fault in this process; the fds are ours.
    let n = unsafe { libc::write(w, ptr.cast(), 1) };
    close(r, w);
    n == 1
}

/// Whether this thread may write `ptr`, asked of the kernel: `read(2)` from a pipe into it.
/// Stores `byte` there when it succeeds.
pub fn writable(ptr: *mut u8, byte: u8) -> bool {
    let (r, w) = pipe();
    // SAFETY: writes one byte from a local into our own pipe; read(2) then stores through the
    // kernel's fault-checked user copy, so an inaccessible `ptr` yields EFAULT, not a fault.
    let n = unsafe {
        assert_eq!(libc::write(w, (&byte as *const u8).cast(), 1), 1);
        libc::read(r, ptr.cast(), 1)
    };
    close(r, w);
    n == 1
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 expects.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

fn close(r: i32, w: i32) {
    // SAFETY: closes the two descriptors `pipe` created, once.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
}

/// True when PKU works here; otherwise says loudly, past the test harness's output capture,
/// that `test` was skipped.
pub fn pku_or_skip(test: &str) -> bool {
    if Backend::Pku.available() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: no PKU on this machine: {test} (pku backend) not run"
    );
    false
}

/// Backends to run a test with: mprotect always, pku where available (announced when not).
pub fn backends(test: &str) -> Vec<Backend> {
    let mut v = vec![Backend::Mprotect];
    if pku_or_skip(test) {
        v.push(Backend::Pku);
    }
    v
}

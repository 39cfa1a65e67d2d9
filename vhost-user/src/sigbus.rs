//! Surviving a peer that shrinks its memory file under us.
//!
//! We map a guest's (or a fast-path peer's) memory from a file the peer keeps a descriptor to.
//! The file's length is checked before mapping, but the peer can `ftruncate` it afterwards
//! (nothing obliges a frontend to seal its memfd; hugetlbfs files cannot be sealed at all), and
//! our next access past the new end takes SIGBUS, which would kill the whole switch.
//!
//! Mappings of peer memory are registered here. On SIGBUS inside one, the handler puts fresh
//! anonymous zero memory over the page that faulted (the region's own page size, so hugetlbfs
//! mappings stay aligned), marks the mapping poisoned, and returns: the access is retried and
//! reads zeros. Queues over poisoned memory stop (see [`crate::virtq`]); the peer's port keeps
//! its connection, with broken queues and a counter saying why, like any other broken ring. A
//! SIGBUS anywhere else goes to the previous handler (or the default action) unchanged.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

const SLOTS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    page: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    page: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();

/// A registered mapping; unregisters on drop (drop it before unmapping).
#[derive(Debug)]
pub struct Guard(usize);

impl Guard {
    /// Whether a SIGBUS hit this mapping (the peer shrank its file).
    #[inline]
    pub fn poisoned(&self) -> bool {
        TABLE[self.0].poisoned.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &TABLE[self.0];
        s.start.store(0, Ordering::Release);
        s.poisoned.store(false, Ordering::Relaxed);
    }
}

/// SIGBUS faults absorbed so far.
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

/// Registers `[start, start + len)`, mapped with pages of `page` bytes. `None` when the table
/// is full (the mapping then simply has no shield; logged).
pub fn register(start: *mut u8, len: usize, page: usize) -> Option<Guard> {
    INSTALL.call_once(install);
    let start = start as usize;
    for (i, s) in TABLE.iter().enumerate() {
        // Claim a free slot: publish the length and page before the start, which readers check.
        if s.start.load(Ordering::Relaxed) == 0
            && s.start
                .compare_exchange(0, usize::MAX, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            s.len.store(len, Ordering::Relaxed);
            s.page.store(page.max(4096), Ordering::Relaxed);
            s.poisoned.store(false, Ordering::Relaxed);
            s.start.store(start, Ordering::Release);
            return Some(Guard(i));
        }
    }
    tracing::warn!("SIGBUS shield table full: a mapping of peer memory is unprotected");
    None
}

fn install() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we fill in the handler
    // and flags before installing it, and keep the previous action to chain to. PREVIOUS is
    // written once here, before the handler can run, and only read afterwards.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction =
            handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let prev = std::ptr::addr_of_mut!(PREVIOUS).cast::<libc::sigaction>();
        if libc::sigaction(libc::SIGBUS, &sa, prev) != 0 {
            tracing::warn!(
                "cannot install the SIGBUS handler: a peer shrinking its memory would kill us"
            );
        }
    }
}

/// The handler: async-signal-safe (atomics, `mmap`, `sigaction`; no allocation, no locks).
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in TABLE.iter() {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX {
            continue;
        }
        let len = s.len.load(Ordering::Relaxed);
        if addr < start || addr - start >= len {
            continue;
        }
        let page = s.page.load(Ordering::Relaxed);
        let at = start + (addr - start) / page * page;
        // SAFETY: [at, at + page) lies inside a mapping of peer memory that is registered, so
        // still mapped and owned by us; replacing those pages with anonymous memory changes
        // only what that mapping shows (zeros instead of the file past its new end).
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            s.poisoned.store(true, Ordering::Relaxed);
            FAULTS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        break;
    }
    // Not ours (or the page could not be replaced): the previous action decides.
    // SAFETY: PREVIOUS was filled by `install` before this handler could run.
    unsafe {
        let prev = &*std::ptr::addr_of!(PREVIOUS).cast::<libc::sigaction>();
        if prev.sa_flags & libc::SA_SIGINFO != 0 && prev.sa_sigaction > 1 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev.sa_sigaction);
            f(sig, info, ctx);
            return;
        }
        // Default (or a plain handler we do not call): restore it; the retried access faults
        // again and the kernel applies it.
        libc::sigaction(libc::SIGBUS, prev, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmap::{create_memfd, Mapping};

    #[test]
    fn test_file_shrunk_under_a_mapping_reads_zeros_and_poisons() {
        let fd = create_memfd("sigbus-test", 4 * 4096, false).unwrap();
        let m = Mapping::map_shared(&fd, 4 * 4096).unwrap();
        let g = register(m.as_ptr(), m.len(), 4096).unwrap();
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(m.as_ptr().add(3 * 4096), 7u8) };
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let before = faults();
        // SAFETY: inside the mapping; past the file's end now, which the shield turns into zeros.
        let v = unsafe { std::ptr::read_volatile(m.as_ptr().add(3 * 4096)) };
        assert_eq!(v, 0);
        assert!(g.poisoned());
        assert!(faults() > before);
        // The first page, still in the file, is untouched.
        // SAFETY: inside the mapping and the file.
        unsafe { std::ptr::write_volatile(m.as_ptr(), 1u8) };
        drop(g);
    }
}

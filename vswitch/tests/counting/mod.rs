//! A global allocator for tests that prove a code path allocates nothing: it forwards to the
//! system allocator and, while counting is on for the calling thread, counts every allocation,
//! deallocation and reallocation. A test binary installs it with
//! `#[global_allocator] static A: counting::Counting = counting::Counting;`, then wraps the
//! watched call in [`counted`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

pub struct Counting;

fn note() {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Runs `f` on this thread, counting its allocator calls when `on` (not when off: warm-up
/// rounds that build state lazily). Returns `f`'s result and the count.
pub fn counted<T>(on: bool, f: impl FnOnce() -> T) -> (T, u64) {
    COUNTING.with(|c| c.set(on));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|a| a.replace(0)))
}

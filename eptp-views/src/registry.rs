//! The table of mapped peer regions that the SIGSEGV handler consults: a fixed array of slots,
//! each a small seqlock of atomics, so the handler can look an address up without a lock or an
//! allocation. Writers (mapping and unmapping a region, slow path) serialise on a mutex.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Regions mapped at once in one process.
pub const MAX_REGIONS: usize = 256;

struct Slot {
    /// Even: stable; odd: being rewritten. Bumped twice per write.
    seq: AtomicU64,
    start: AtomicUsize,
    /// Exclusive; 0 marks a free slot.
    end: AtomicUsize,
    id: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            id: AtomicU64::new(0),
        }
    }

    fn write(&self, start: usize, end: usize, id: u64) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.id.store(id, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }
}

static SLOTS: [Slot; MAX_REGIONS] = [const { Slot::new() }; MAX_REGIONS];
static WRITERS: Mutex<()> = Mutex::new(());

/// Records `start..end` as region `id`; returns the slot, or `None` when the table is full.
pub(crate) fn register(start: usize, end: usize, id: u64) -> Option<usize> {
    let _w = WRITERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = SLOTS
        .iter()
        .position(|s| s.end.load(Ordering::Relaxed) == 0)?;
    SLOTS[i].write(start, end, id);
    Some(i)
}

/// Frees a slot returned by [`register`].
pub(crate) fn unregister(slot: usize) {
    let _w = WRITERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = SLOTS.get(slot) {
        s.write(0, 0, 0);
    }
}

/// The region containing `addr`, if any. Async-signal-safe: atomics only, bounded loop. A slot
/// caught mid-rewrite is skipped (it is being mapped or unmapped, so no access to it is a
/// violation of a granted region).
pub(crate) fn lookup(addr: usize) -> Option<u64> {
    for s in &SLOTS {
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            continue;
        }
        let start = s.start.load(Ordering::Relaxed);
        let end = s.end.load(Ordering::Relaxed);
        let id = s.id.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        if end != 0 && (start..end).contains(&addr) {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_registered_ranges_and_forgets_unregistered_ones() {
        // Addresses in the top of the address space, where no real region is mapped.
        let base = usize::MAX - 0x10_0000;
        let a = register(base, base + 0x1000, 901).unwrap();
        let b = register(base + 0x2000, base + 0x3000, 902).unwrap();
        assert_eq!(lookup(base), Some(901));
        assert_eq!(lookup(base + 0xfff), Some(901));
        assert_eq!(lookup(base + 0x1000), None);
        assert_eq!(lookup(base + 0x2800), Some(902));
        unregister(a);
        assert_eq!(lookup(base), None);
        assert_eq!(lookup(base + 0x2800), Some(902));
        unregister(b);
        assert_eq!(lookup(base + 0x2800), None);
    }
}

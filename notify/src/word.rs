//! The shared notification word: one cache line of memory that the sender and the receiver both
//! map, and the protocol that makes "notify" and "wait" on it lose no wake-up.
//!
//! # Layout (64 bytes, 64-byte aligned, zero-initialised)
//!
//! | offset | type | name | written by |
//! |---|---|---|---|
//! | 0 | `u32` | `seq` | every notifier: +1 per notify (wrapping); the futex word |
//! | 4 | `u32` | `waiters` | every waiter: +1 before it may sleep in the kernel, -1 after |
//! | 8..64 | - | reserved | nobody (left zero) |
//!
//! Both fields are only ever accessed atomically, by every party, in every process.
//!
//! # Protocol
//!
//! - notify: `seq.fetch_add(1, SeqCst)`, then `if waiters.load(SeqCst) != 0 { FUTEX_WAKE(seq) }`.
//! - sleep (a waiter that saw `seq == seen`): `waiters.fetch_add(1, SeqCst)`, re-read
//!   `seq` (SeqCst); if it still equals `seen`, `FUTEX_WAIT(seq, seen)`, which the kernel
//!   refuses (EAGAIN) if `seq` moved in the meantime; finally `waiters.fetch_sub(1)`.
//!
//! This is Dekker's pattern: the notifier writes `seq` then reads `waiters`, the waiter writes
//! `waiters` then reads `seq`, all SeqCst, so at least one of them sees the other's write:
//! either the notifier sees the waiter registered and issues the wake, or the waiter sees the
//! new `seq` and does not sleep. The kernel's check of `seq` inside FUTEX_WAIT closes the gap
//! between the re-read and the sleep. Spinning waiters (spin, UMWAIT, adaptive's poll phase)
//! never register, so notifying a polling receiver costs one locked add and one load, no
//! system call. Every word-based strategy notifies the same way, so the receiver alone
//! chooses how it waits.
//!
//! `seq` also carries the memory ordering of the payload: whatever the sender wrote before
//! `notify` (its SeqCst read-modify-write is a release) is visible to a waiter once it has
//! observed the new `seq` (an acquire load).
//!
//! A hostile peer can write anything into the slot. It can then cause spurious wake-ups (the
//! receiver drains an empty queue) or useless FUTEX_WAKE calls (a forged waiter count), but
//! never a hang (every wait is bounded by its deadline or by a change of `seq`) nor memory
//! unsafety (the words are read atomically and only compared).
//!
//! The futex calls never use `FUTEX_PRIVATE_FLAG`: the word may be mapped by another process
//! (at another address), and only a shared futex is keyed by the underlying page.
#![allow(unsafe_code)]

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::shm::ShmRegion;
use crate::sys::futex;
use crate::{Error, Notifier, Strategy};

/// Bytes a notification slot takes in shared memory (one cache line).
pub const SLOT_SIZE: usize = 64;
/// Alignment a notification slot needs in shared memory (a cache line of its own: no false
/// sharing with the payload, and UMWAIT's monitor sees only notification stores).
pub const SLOT_ALIGN: usize = 64;

const SEQ: usize = 0;
const WAITERS: usize = 1;

/// A notification slot owned by this process (heap or static), for threads of one process and
/// for tests. Peers in other processes use [`SharedWord::new`] on their shared mapping instead.
#[repr(C, align(64))]
pub struct Slot {
    words: [AtomicU32; SLOT_SIZE / 4],
}

impl Slot {
    /// A zeroed slot: no notification yet, no waiter.
    pub const fn new() -> Slot {
        Slot {
            words: [const { AtomicU32::new(0) }; SLOT_SIZE / 4],
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new()
    }
}

/// A handle on a notification slot in memory shared with the peer. Cloning it is cheap; every
/// clone and every notifier built from it refers to the same slot.
///
/// Invariant: `base` points at a [`SLOT_SIZE`]-byte, [`SLOT_ALIGN`]-aligned slot, readable and
/// writable for as long as this handle (or a clone) lives, whose words every party only
/// accesses atomically. Either `_owner` keeps the memory alive, or the caller of
/// [`SharedWord::new`] promised to.
#[derive(Clone)]
pub struct SharedWord {
    base: NonNull<AtomicU32>,
    _owner: Option<Arc<dyn Any + Send + Sync>>,
}

// SAFETY: the slot is only accessed through `&AtomicU32`, which is Sync; the invariant keeps the
// memory alive and valid while any handle exists, whichever thread holds it.
unsafe impl Send for SharedWord {}
// SAFETY: as for Send: every access is atomic.
unsafe impl Sync for SharedWord {}

impl fmt::Debug for SharedWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedWord")
            .field("addr", &self.base)
            .field("seq", &self.sequence())
            .field("waiters", &self.waiters().load(Ordering::Relaxed))
            .finish()
    }
}

impl SharedWord {
    /// Wraps a slot at `ptr` in memory shared with the peer (typically a page of the region
    /// both sides map). Fails if `ptr` is null or not 64-byte aligned.
    ///
    /// # Safety
    ///
    /// - `ptr` must be valid for reads and writes of [`SLOT_SIZE`] bytes for as long as the
    ///   returned handle, any clone of it, or any notifier built from it exists (the mapping
    ///   must outlive them);
    /// - in this process, the slot's bytes must only be accessed atomically (through this
    ///   crate), never through a `&[u8]`/`&mut` reference or plain reads and writes. The peer
    ///   process is not bound by this: whatever it writes, see the module's note on hostile
    ///   peers.
    ///
    /// The slot should be zeroed before either side first uses it (a fresh memfd is). That is
    /// not a safety matter: stale contents only cost one early wake-up, or FUTEX_WAKE calls
    /// nobody needed until the waiter count is right again.
    pub unsafe fn new(ptr: *mut u8) -> Result<SharedWord, Error> {
        let Some(base) = NonNull::new(ptr) else {
            return Err(Error::NullSlot);
        };
        if base.as_ptr().align_offset(SLOT_ALIGN) != 0 {
            return Err(Error::MisalignedSlot {
                addr: base.as_ptr().addr(),
            });
        }
        Ok(SharedWord {
            base: base.cast(),
            _owner: None,
        })
    }

    /// Like [`SharedWord::new`], with the owner of the mapping (e.g. the `Arc` of the region
    /// both sides map) kept alive by the handle and every notifier built from it, so the
    /// caller's promise reduces to "`ptr` is inside `keep`'s mapping".
    ///
    /// # Safety
    ///
    /// As for [`SharedWord::new`], except that the memory only has to stay valid as long as
    /// `keep` is alive.
    pub unsafe fn with_owner(
        ptr: *mut u8,
        keep: Arc<dyn Any + Send + Sync>,
    ) -> Result<SharedWord, Error> {
        // SAFETY: the caller's promise covers the memory for as long as `keep` lives, and the
        // handle holds `keep`.
        let mut word = unsafe { SharedWord::new(ptr)? };
        word._owner = Some(keep);
        Ok(word)
    }

    /// A slot on the heap of this process, for threads that share the handle (and tests).
    pub fn private() -> SharedWord {
        SharedWord::from_arc(Arc::new(Slot::new()))
    }

    /// A slot owned by an `Arc`, kept alive by the handle.
    pub fn from_arc(slot: Arc<Slot>) -> SharedWord {
        let base = NonNull::from(&slot.words[0]);
        SharedWord {
            base,
            _owner: Some(slot),
        }
    }

    /// A slot in static memory.
    pub fn from_static(slot: &'static Slot) -> SharedWord {
        SharedWord {
            base: NonNull::from(&slot.words[0]),
            _owner: None,
        }
    }

    /// The slot at `offset` in a shared mapping; the handle keeps the mapping alive.
    pub fn in_region(region: &Arc<ShmRegion>, offset: usize) -> Result<SharedWord, Error> {
        let out_of_region = || Error::SlotOutOfRegion {
            offset,
            region_len: region.len(),
        };
        let end = offset.checked_add(SLOT_SIZE).ok_or_else(out_of_region)?;
        if end > region.len() {
            return Err(out_of_region());
        }
        let ptr = region.as_ptr().wrapping_add(offset);
        // SAFETY: [offset, offset + SLOT_SIZE) lies inside the mapping (checked above); the
        // mapping lives as long as `region`, which the handle keeps in `_owner`; ShmRegion
        // hands out only raw pointers, so no Rust reference to these bytes exists, and this
        // crate accesses them only atomically.
        unsafe { SharedWord::with_owner(ptr, region.clone()) }
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < SLOT_SIZE / 4);
        // SAFETY: by the type's invariant `base` points at SLOT_SIZE live bytes, 64-aligned
        // (hence 4-aligned), accessed only atomically; `index` < 16 keeps the word inside the
        // slot; the reference cannot outlive `self`, which keeps the memory alive.
        unsafe { &*self.base.as_ptr().add(index) }
    }

    /// The notification counter; the futex word.
    pub(crate) fn seq(&self) -> &AtomicU32 {
        self.word(SEQ)
    }

    /// Waiters that may be asleep in FUTEX_WAIT.
    pub(crate) fn waiters(&self) -> &AtomicU32 {
        self.word(WAITERS)
    }

    /// Address of the slot (for placement checks and diagnostics).
    pub fn as_ptr(&self) -> *const u8 {
        self.base.as_ptr().cast_const().cast()
    }

    /// Notifications so far (wrapping at 2^32), with acquire ordering: a poller that sees it
    /// change also sees what the sender wrote before notifying.
    pub fn sequence(&self) -> u32 {
        self.seq().load(Ordering::Acquire)
    }

    /// Signals the receiver. One locked add and one load when the receiver polls; plus one
    /// FUTEX_WAKE system call when a waiter may be asleep. Never blocks.
    #[inline]
    pub fn notify(&self) {
        self.seq().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            futex::wake_all(self.seq());
        }
    }

    /// Registers a waiter that may sleep; the guard deregisters it. After registering, the
    /// caller must re-read `seq` (SeqCst) before sleeping: see the module's protocol.
    pub(crate) fn register_waiter(&self) -> WaiterGuard<'_> {
        self.waiters().fetch_add(1, Ordering::SeqCst);
        WaiterGuard { word: self }
    }
}

/// Builds one side's notifier on the slot at `ptr`, in memory that `keep` keeps mapped (the
/// fast path's doorbell page): [`SharedWord::with_owner`] then [`Strategy::build`]. For the
/// word-based strategies only (`eventfd` needs an fd: use [`Strategy::build`]).
///
/// # Safety
///
/// `ptr` points at [`SLOT_SIZE`] bytes inside a shared mapping that stays mapped while `keep`
/// lives, and this process accesses the slot only through this crate (see
/// [`SharedWord::new`]). Null and misaligned pointers are refused with an error.
pub unsafe fn notifier_at(
    strategy: Strategy,
    ptr: *mut u8,
    keep: Arc<dyn Any + Send + Sync>,
) -> Result<Box<dyn Notifier>, Error> {
    // SAFETY: forwarded verbatim from this function's contract.
    let word = unsafe { SharedWord::with_owner(ptr, keep)? };
    strategy.build(&word, None)
}

/// A registered waiter; dropping it deregisters.
pub(crate) struct WaiterGuard<'a> {
    word: &'a SharedWord,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.word.waiters().fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), SLOT_SIZE);
        assert_eq!(std::mem::align_of::<Slot>(), SLOT_ALIGN);
    }

    #[test]
    fn test_new_rejects_null_slot() {
        // SAFETY: null is rejected before any access.
        let r = unsafe { SharedWord::new(std::ptr::null_mut()) };
        assert!(matches!(r, Err(Error::NullSlot)), "{r:?}");
    }

    #[test]
    fn test_new_rejects_misaligned_slot() {
        let slot = Box::new([Slot::new(), Slot::new()]);
        let p = slot.as_ptr().cast::<u8>().cast_mut().wrapping_add(4);
        // SAFETY: a misaligned pointer is rejected before any access.
        let r = unsafe { SharedWord::new(p) };
        assert!(matches!(r, Err(Error::MisalignedSlot { .. })), "{r:?}");
    }

    #[test]
    fn test_in_region_rejects_slot_past_the_end() {
        let region = Arc::new(ShmRegion::create("notify-test", 4096).expect("memfd"));
        assert!(SharedWord::in_region(&region, 4096 - 64).is_ok());
        for bad in [4096 - 32, 4096, usize::MAX - 8] {
            let r = SharedWord::in_region(&region, bad);
            assert!(
                matches!(
                    r,
                    Err(Error::SlotOutOfRegion { .. } | Error::MisalignedSlot { .. })
                ),
                "offset {bad}: {r:?}"
            );
        }
        let r = SharedWord::in_region(&region, 32);
        assert!(matches!(r, Err(Error::MisalignedSlot { .. })), "{r:?}");
    }

    #[test]
    fn notify_counts_and_clones_share_the_slot() {
        let a = SharedWord::private();
        let b = a.clone();
        assert_eq!(b.sequence(), 0);
        a.notify();
        a.notify();
        assert_eq!(b.sequence(), 2);
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn waiter_guard_registers_and_deregisters() {
        let w = SharedWord::private();
        {
            let _g = w.register_waiter();
            assert_eq!(w.waiters().load(Ordering::SeqCst), 1);
            // A notify with a registered waiter issues FUTEX_WAKE on a word nobody sleeps on:
            // harmless.
            w.notify();
        }
        assert_eq!(w.waiters().load(Ordering::SeqCst), 0);
        assert_eq!(w.sequence(), 1);
    }

    #[test]
    fn slots_in_one_memfd_mapped_twice_are_the_same_slot() {
        let region = Arc::new(ShmRegion::create("notify-test", 4096).expect("memfd"));
        let fd = region.fd().try_clone_to_owned().expect("dup");
        let other = Arc::new(ShmRegion::from_fd(fd).expect("map again"));
        assert_ne!(region.as_ptr(), other.as_ptr());
        let a = SharedWord::in_region(&region, 128).expect("slot");
        let b = SharedWord::in_region(&other, 128).expect("slot");
        a.notify();
        assert_eq!(b.sequence(), 1);
    }
}

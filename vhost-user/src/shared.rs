//! Bytes in memory the other side can still write: a received buffer in a region a peer maps.
//!
//! A frame the device returned lies in a buffer of ours that the device (a peer guest, in the
//! fast path) could go on writing while we look at it. A Rust slice over those bytes would be
//! undefined behaviour, and checking a value read twice is a time-of-check bug, so
//! [`SharedBytes`] hands the bytes out only by copy: the receiver copies what it looks at (a
//! frame's headers, usually) and nothing else, instead of gathering every frame into scratch
//! memory first.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use crate::ring::copy_bytes;

/// `len` bytes at `ptr`, mapped for as long as `'a` (the borrow of the queue that owns them),
/// read only by copy.
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    ptr: *const u8,
    len: usize,
    _mapped: PhantomData<&'a [u8]>,
}

impl<'a> SharedBytes<'a> {
    /// # Safety
    /// `[ptr, ptr + len)` stays mapped and readable for `'a`; its contents may change at any time.
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> SharedBytes<'a> {
        SharedBytes {
            ptr,
            len,
            _mapped: PhantomData,
        }
    }

    /// Bytes of our own, for code that takes either (a gathered frame, tests).
    pub fn from_slice(b: &'a [u8]) -> SharedBytes<'a> {
        // SAFETY: the slice is mapped and readable for 'a; nothing writes it meanwhile (it is
        // borrowed), which is more than `new` asks.
        unsafe { SharedBytes::new(b.as_ptr(), b.len()) }
    }

    /// Bytes `[offset, offset + len)`, when they are all inside.
    #[inline]
    pub fn sub(&self, offset: usize, len: usize) -> Option<SharedBytes<'a>> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: the range is inside [ptr, ptr + self.len), mapped for 'a.
        Some(unsafe { SharedBytes::new(self.ptr.add(offset), len) })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `N` bytes from `offset`, zero-padded past the end, and how many were real: one
    /// load when all `N` are there (the usual case: a frame's headers).
    #[inline]
    pub fn peek<const N: usize>(&self, offset: usize) -> ([u8; N], usize) {
        if self.len >= offset.saturating_add(N) {
            // SAFETY: [ptr + offset, ptr + offset + N) is inside [ptr, ptr + len), mapped for
            // 'a (`new`'s contract); an unaligned read of plain bytes, whatever they hold.
            let a = unsafe { std::ptr::read_unaligned(self.ptr.add(offset).cast::<[u8; N]>()) };
            return (a, N);
        }
        let mut a = [0u8; N];
        let n = self.read(offset, &mut a);
        (a, n)
    }

    /// Copies bytes `[offset, offset + out.len())` into `out`, as many as exist; returns how many.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(out.len());
        if n > 0 {
            // SAFETY: offset + n <= len, so the source range is inside the mapped bytes; `out`
            // holds at least n bytes and is ours, so the two cannot overlap.
            unsafe { copy_bytes(out.as_mut_ptr(), self.ptr.add(offset), n) };
        }
        n
    }

    /// Appends all the bytes to `v`.
    pub fn append_to(&self, v: &mut Vec<u8>) {
        let start = v.len();
        v.reserve(self.len);
        // SAFETY: `reserve` made room for `len` more bytes after `start`, and the source is
        // mapped (`new`'s contract). Every byte up to `start + len` is initialised by the copy
        // before `set_len` (no zeroing first: the copy overwrites all of them).
        unsafe {
            copy_bytes(v.as_mut_ptr().add(start), self.ptr, self.len);
            v.set_len(start + self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(b: &[u8]) -> SharedBytes<'_> {
        // SAFETY: the slice outlives the view and nothing writes it meanwhile.
        unsafe { SharedBytes::new(b.as_ptr(), b.len()) }
    }

    #[test]
    fn peek_pads_past_the_end_and_says_how_many_were_real() {
        let b: Vec<u8> = (1..=20).collect();
        let s = over(&b);
        assert_eq!(s.peek::<4>(2), ([3, 4, 5, 6], 4));
        assert_eq!(s.peek::<4>(18), ([19, 20, 0, 0], 2));
        assert_eq!(s.peek::<4>(25), ([0; 4], 0));
    }

    #[test]
    fn sub_is_inside_or_none() {
        let b: Vec<u8> = (0..10).collect();
        let s = SharedBytes::from_slice(&b);
        assert_eq!(s.sub(2, 3).map(|x| x.peek::<3>(0)), Some(([2, 3, 4], 3)));
        assert!(s.sub(8, 2).is_some());
        assert!(s.sub(8, 3).is_none());
        assert!(s.sub(usize::MAX, 2).is_none());
    }

    #[test]
    fn read_stops_at_the_end_and_an_offset_past_it_reads_nothing() {
        let b: Vec<u8> = (0..10).collect();
        let s = over(&b);
        let mut out = [0xffu8; 8];
        assert_eq!(s.read(6, &mut out), 4);
        assert_eq!(&out[..4], &[6, 7, 8, 9]);
        assert_eq!(out[4], 0xff);
        assert_eq!(s.read(usize::MAX, &mut out), 0);
        let mut v = vec![0xaa];
        s.append_to(&mut v);
        assert_eq!(v.len(), 11);
        assert_eq!(&v[1..], &b[..]);
    }
}

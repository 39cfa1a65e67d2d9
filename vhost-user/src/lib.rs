//! vhost-user, both halves, and the virtqueue engine the switch and the fast path share.
//!
//! - [`message`] and [`connection`]: the wire format and its framing with passed descriptors.
//! - [`memory`]: guest memory regions mapped from the frontend's descriptors, and address
//!   translation with overflow-checked ranges.
//! - [`virtq`]: the device side of a virtqueue, burst-oriented; hostile-input rules live
//!   there. Its two ring layouts: [`split`] (with [`ring`]) and [`packed`] (with
//!   [`packed_ring`]).
//! - [`net`]: the virtio-net header and feature set.
//! - [`records`]: several frames in one receive buffer (copy-mode fast-path channels).
//! - [`shared`]: bytes another party may still write, read by copy only.
//! - [`dirty_log`]: the dirty-page bitmap of live migration and a queue's batched marks.
//! - [`backend`]: the device state machine that answers a frontend.
//! - [`frontend`] and [`driver`]: the driver side, used by fast-path guests, the benchmark's
//!   built-in guests, and tests as a mock driver writing real descriptors.
#![deny(unsafe_code)]

pub mod connection;
pub mod error;
pub mod message;

pub use error::{Error, Result};

// Guest addresses and lengths are u64 on the wire; this crate runs on 64-bit hosts only, where
// every u64 offset into a mapping converts to usize without loss.
const _: () = assert!(usize::BITS == 64, "vhost-user needs a 64-bit host");

/// Lossless on the 64-bit hosts this crate builds for (asserted above).
#[inline]
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn usize_of(v: u64) -> usize {
    v as usize
}
pub mod backend;
pub mod chain;
pub mod dirty_log;
pub mod driver;
pub mod frontend;
pub mod guest;
pub mod memory;
pub mod mmap;
pub mod net;
pub mod packed;
pub mod packed_ring;
#[cfg(test)]
pub(crate) mod packed_test_driver;
pub mod records;
pub mod ring;
pub mod shared;
pub mod sigbus;
pub mod split;
pub mod virtq;

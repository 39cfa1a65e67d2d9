//! The crate's one error type. Every message says what went wrong and what to do about it.
//!
//! Hand-written `Display` rather than `thiserror`: this crate sits at the bottom of the
//! dependency graph and keeps its dependencies to libc, hdrhistogram and core_affinity.

use std::fmt;
use std::io;

/// Everything that can fail while choosing, building or benchmarking a notifier.
#[derive(Debug)]
pub enum Error {
    /// A strategy name that is not one of [`crate::Strategy::ALL`].
    UnknownStrategy { name: String },
    /// A known strategy this machine cannot run (e.g. `umwait` without WAITPKG).
    Unavailable {
        strategy: &'static str,
        reason: &'static str,
    },
    /// `eventfd` was chosen but no eventfd was handed to [`crate::Strategy::build`].
    NeedsEventFd,
    /// A notification slot pointer that is null.
    NullSlot,
    /// A notification slot that does not start a cache line.
    MisalignedSlot { addr: usize },
    /// A slot offset that does not fit in the shared region.
    SlotOutOfRegion { offset: usize, region_len: usize },
    /// A shared region of length zero (or one too large to map).
    BadRegionLength { len: u64 },
    /// A system call failed.
    Io { op: &'static str, source: io::Error },
    /// The wake-up benchmark could not complete a run.
    Benchmark {
        strategy: &'static str,
        what: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownStrategy { name } => write!(
                f,
                "unknown notification strategy `{name}`: choose one of {}",
                crate::Strategy::ALL
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Error::Unavailable { strategy, reason } => write!(
                f,
                "notification strategy `{strategy}` is unavailable on this machine ({reason}); \
                 choose one of: {}",
                crate::Strategy::available()
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Error::NeedsEventFd => write!(
                f,
                "strategy `eventfd` needs the channel's eventfd: create one with EventFd::new() \
                 (or wrap the peer's with EventFd::from_fd) and pass it to Strategy::build"
            ),
            Error::NullSlot => write!(f, "notification slot pointer is null"),
            Error::MisalignedSlot { addr } => write!(
                f,
                "notification slot at {addr:#x} is not 64-byte aligned: place it at the start \
                 of a cache line of its own in the shared region"
            ),
            Error::SlotOutOfRegion { offset, region_len } => write!(
                f,
                "notification slot at offset {offset} does not fit in a shared region of \
                 {region_len} bytes (a slot takes 64)"
            ),
            Error::BadRegionLength { len } => write!(
                f,
                "shared region length {len} cannot be mapped: use a non-zero size that fits \
                 the address space"
            ),
            Error::Io { op, source } => write!(f, "{op}: {source}"),
            Error::Benchmark { strategy, what } => {
                write!(f, "wake-up benchmark of `{strategy}` failed: {what}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

//! The crate's one error type, with the fate of each class: close the connection, or reply with
//! a failure and keep serving.

use std::io;

/// Everything that can go wrong between a vhost-user frontend and backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection")]
    Disconnected,
    #[error("peer closed the connection in the middle of a message ({got} of {want} bytes)")]
    PartialMessage { got: usize, want: usize },
    #[error("unsupported vhost-user protocol version {0} (only version 1 exists)")]
    BadVersion(u32),
    #[error("unknown header flags {0:#x}")]
    UnknownFlags(u32),
    #[error("payload of {0} bytes exceeds the 4096-byte limit")]
    PayloadTooLarge(usize),
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    #[error("{request}: payload is {got} bytes, expected {want}")]
    BadPayloadSize {
        request: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{request}: {got} file descriptors attached, expected {want}")]
    FdCount {
        request: &'static str,
        got: usize,
        want: usize,
    },
    #[error("more file descriptors than the 8 a message may carry (the kernel truncated them)")]
    TruncatedFds,
    #[error("invalid message: {0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Rejected(String),
    #[error("reply mismatch: sent {sent}, got reply to {got}")]
    ReplyMismatch { sent: u32, got: u32 },
    #[error("the backend reported failure ({0}) for {1}")]
    NackFromBackend(u64, &'static str),
    #[error("mapping guest memory: {0}")]
    Mmap(io::Error),
    /// A request no correct frontend sends (or one whose failure leaves the frontend waiting
    /// for a reply we cannot give): the connection is closed.
    #[error("{0}; closing the connection")]
    Protocol(String),
}

impl Error {
    /// True for errors after which the byte stream cannot be trusted or used any more: the
    /// connection is closed. Everything else gets a failure reply and the connection lives on.
    pub fn must_close(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Disconnected
                | Error::PartialMessage { .. }
                | Error::BadVersion(_)
                | Error::UnknownFlags(_)
                | Error::PayloadTooLarge(_)
                | Error::TruncatedFds
                | Error::ReplyMismatch { .. }
                | Error::Protocol(_)
        )
    }

    /// Short stable name of the error class, used as a counter key.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::Disconnected => "disconnected",
            Error::PartialMessage { .. } => "partial_message",
            Error::BadVersion(_) => "bad_version",
            Error::UnknownFlags(_) => "unknown_flags",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnknownRequest(_) => "unknown_request",
            Error::BadPayloadSize { .. } => "bad_payload_size",
            Error::FdCount { .. } => "fd_count",
            Error::TruncatedFds => "truncated_fds",
            Error::Invalid(_) => "invalid",
            Error::Rejected(_) => "rejected",
            Error::ReplyMismatch { .. } => "reply_mismatch",
            Error::NackFromBackend(..) => "nack",
            Error::Mmap(_) => "mmap",
            Error::Protocol(_) => "protocol",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

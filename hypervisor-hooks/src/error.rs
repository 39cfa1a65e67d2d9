//! The crate's error type.

/// What can go wrong between a fast-path guest and the hooks authority.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hooks connection: {0}")]
    Transport(#[from] vhost_user::Error),
    #[error("hooks protocol: {0}")]
    Protocol(String),
    #[error("channel refused: {0}")]
    Refused(String),
    #[error("trampoline verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

//! The crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vhost-user: {0}")]
    VhostUser(#[from] vhost_user::Error),
    #[error("hooks: {0}")]
    Hooks(#[from] hypervisor_hooks::Error),
    #[error("protected view: {0}")]
    Views(#[from] eptp_views::Error),
    #[error("notification: {0}")]
    Notify(#[from] notify::Error),
    #[error("channel: {0}")]
    Channel(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

//! The benchmark's one error type. Messages say what to do, because an operator reads them on a
//! terminal with nothing else to go on.

use std::path::PathBuf;

/// Everything that stops a benchmark command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown scenario `{name}` (known: {known}; `bench list` describes them)")]
    UnknownScenario { name: String, known: String },
    /// The scenario exists but this machine cannot run it (e.g. no /dev/kvm). Never faked.
    #[error("scenario `{scenario}` is unavailable on this machine: {reason}")]
    Unavailable { scenario: String, reason: String },
    #[error("frame size {0} is out of range: expected {min}..={max} bytes", min = crate::linerate::MIN_FRAME, max = crate::linerate::MAX_FRAME)]
    BadFrameSize(u32),
    #[error("{0}")]
    BadArgument(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the in-process switch: {0}")]
    Switch(String),
    #[error("built-in guest {guest}: {source}")]
    Guest {
        guest: String,
        source: vhost_user::Error,
    },
    /// A measurement could not be taken (nothing arrived, a peer stopped answering).
    #[error("{scenario}: {message}")]
    Measurement { scenario: String, message: String },
    #[error("KVM: {0}")]
    Kvm(String),
    #[error("cannot write {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("cannot read {path}: {message}")]
    Input { path: PathBuf, message: String },
    /// `bench check`: figures moved past their tolerance.
    #[error("check: {0}")]
    Regression(String),
    #[error("compare: {0}")]
    Compare(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// This error as the reason `scenario` cannot run here.
    pub fn unavailable(self, scenario: &str) -> Error {
        Error::Unavailable {
            scenario: scenario.to_owned(),
            reason: self.to_string(),
        }
    }

    /// A failed measurement of `scenario`.
    pub fn measurement(scenario: &str, message: impl Into<String>) -> Error {
        Error::Measurement {
            scenario: scenario.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

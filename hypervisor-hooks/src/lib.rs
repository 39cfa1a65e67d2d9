//! The hypervisor hooks: the authority, inside the switch process, that grants fast-path
//! channels between guests. It checks policy, verifies the requesting guest's trampoline, hands
//! out exactly the region a channel needs, records every grant and revokes them.
//!
//! - [`proto`]: the messages; [`wire`]: their framing with passed descriptors.
//! - [`verify`]: trampoline verification (hash against a manifest, scan of executable
//!   mappings for WRPKRU/XRSTOR outside the trampoline).
//! - [`authority`]: the server the switch runs.
#![deny(unsafe_code)]

pub mod error;
pub mod proto;
pub mod wire;

pub use error::{Error, Result};
pub mod authority;
pub mod verify;

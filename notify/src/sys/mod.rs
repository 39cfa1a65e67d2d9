//! System calls and CPU instructions, one small unsafe leaf module each; everything above them
//! is safe code.

pub(crate) mod eventfd;
pub(crate) mod futex;
pub(crate) mod waitpkg;

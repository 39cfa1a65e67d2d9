//! The poll-mode L2 switch (issue 2).
#![forbid(unsafe_code)]

pub mod config;
pub mod ctl;
pub mod fdb;

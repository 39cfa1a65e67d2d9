//! The poll-mode L2 switch: configuration, ports and their vhost-user sessions, the poll-mode
//! threads that forward between guests, MAC learning, and the control socket.
#![forbid(unsafe_code)]

pub mod config;
pub mod ctl;
pub mod eth;
pub mod fdb;
pub mod pmd;
pub mod port;
pub mod session;
pub mod switch;

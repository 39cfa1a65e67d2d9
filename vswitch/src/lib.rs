//! The poll-mode L2 switch: configuration, ports and their vhost-user sessions, uplink ports
//! over network devices (DPDK with the `dpdk` feature) and VXLAN tunnels over them, the
//! poll-mode threads that forward between all of these and the placement of queues on them,
//! MAC learning, and the control socket.
//!
//! Without the `dpdk` feature no line of this crate is `unsafe`; with it, only the leaf module
//! [`dpdk`] is.
#![cfg_attr(not(feature = "dpdk"), forbid(unsafe_code))]
#![cfg_attr(feature = "dpdk", deny(unsafe_code))]

pub mod announce;
pub mod capture;
pub mod config;
pub mod ctl;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod eth;
pub mod evpn;
pub mod fdb;
pub mod metrics;
pub mod netdev;
pub mod pcap;
pub mod pmd;
pub mod port;
pub mod rxq;
pub mod session;
pub mod switch;
pub mod uplink;
pub mod vxlan;
pub mod wire;

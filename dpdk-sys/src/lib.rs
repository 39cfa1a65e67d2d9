//! Raw bindings to the system's DPDK (22.11, as Debian 12's `libdpdk-dev` ships it), generated
//! by bindgen through pkg-config, and C shims (`nfv_*`) for the inline fast-path functions
//! (`rte_eth_rx_burst`, `rte_eth_tx_burst`, mbuf allocation and accessors), each working on a
//! whole burst so that a poll loop makes one foreign call per burst.
//!
//! The crates.io `dpdk-sys` targets DPDK 18.05 and does not build against 22.11; this one binds
//! only what the switch uses. Everything here is `unsafe` to call; the safe layer is the
//! switch's `dpdk` module. Without libdpdk the crate is empty and [`AVAILABLE`] is false.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::cast_possible_truncation
)]
#![allow(unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Whether the crate was built against a DPDK (pkg-config found libdpdk).
#[cfg(not(dpdk_sys_stub))]
pub const AVAILABLE: bool = true;
/// Whether the crate was built against a DPDK (pkg-config found libdpdk).
#[cfg(dpdk_sys_stub)]
pub const AVAILABLE: bool = false;

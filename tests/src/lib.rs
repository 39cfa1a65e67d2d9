//! Harness for the end-to-end tests: finding real peers (DPDK testpmd, QEMU, the guest kernel),
//! starting them, and running heavy tests one at a time.
//!
//! The tests themselves live in `tests/tests/*.rs`. Tests that busy-poll or start peers take
//! [`serial::heavy`] first: this machine has two cores, and two such tests at once starve each
//! other.
#![forbid(unsafe_code)]

pub mod echo_stream;
pub mod guest_image;
pub mod hugepages;
pub mod peers;
pub mod process;
pub mod qemu;
pub mod serial;
pub mod testpmd;

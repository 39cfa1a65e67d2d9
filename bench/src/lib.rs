//! The line-rate benchmark an operator runs (DESIGN.md §7): scenarios from the switch path down
//! to a bare shared-memory ring and the per-packet transition baselines, measured in Mpps,
//! Gbit/s, share of 10GbE and 40GbE line rate, TSC cycles per packet, loss and latency
//! percentiles; RFC 2544 throughput search; the same-generator comparison against DPDK testpmd
//! and OVS-DPDK; JSON results and a plot.
//!
//! - [`scenario`]: the scenarios and their registry (one module each).
//! - [`runner`]: running them over frame sizes, and the RFC 2544 searches ([`rfc2544`]).
//! - [`runner`] runs rounds of trials; [`rounds`] and [`stats`] turn them into rows with
//!   medians and spreads, [`ratios`] into the ratios a reader judges by; [`machine`] says where.
//! - [`linerate`], [`report`], [`plot`]: the figures, the table and JSON, the picture.
//! - [`packet`], [`latency`], [`pacing`], [`pin`]: what every scenario shares.
//! - [`spsc`], [`view`]: the shared-memory ring and the mprotect view (small `unsafe` leaves;
//!   `scenario::kvm_exit` is the third, for the KVM memory slot).
//! - [`compare`]: `bench compare`, around bench/loop_bench.sh.
//! - [`icount`]: `bench icount`, instructions per packet of each path under callgrind; [`check`]
//!   compares them (and the ratios) with a baseline.
#![deny(unsafe_code)]

pub mod check;
pub mod cli;
pub mod compare;
pub mod error;
pub mod hugepages;
pub mod icount;
pub mod latency;
pub mod linerate;
pub mod machine;
pub mod num;
pub mod pacing;
pub mod packet;
pub mod peer;
pub mod pin;
pub mod plot;
pub mod progress;
pub mod ratios;
pub mod report;
pub mod rfc2544;
pub mod rounds;
pub mod runner;
pub mod scenario;
pub mod spsc;
pub mod stats;
pub mod view;

pub use error::{Error, Result};

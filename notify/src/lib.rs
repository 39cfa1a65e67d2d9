//! Notification and timing primitives shared by the switch, the fast path and the benchmark.
//!
//! - [`tsc`]: the time-stamp counter, the clock of every poll loop and latency figure.
//!
//! The notification strategies of issue 3 (spin, futex, UMWAIT, eventfd, adaptive) land here.
#![deny(unsafe_code)]

pub mod tsc;

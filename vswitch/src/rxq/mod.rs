//! Receive-queue placement: how busy each polled queue keeps its poll thread ([`load`]: a
//! cycle counter per queue and its history by interval) and which poll thread should serve
//! which queue ([`assign`]: the greedy plan `vswitchctl pmd-rxq-rebalance` applies).
//!
//! Both are plain data and arithmetic; the switch samples the counters and moves queues
//! (`switch::placement`), the poll loop only adds to a queue's counter.

pub mod assign;
pub mod load;

pub use assign::{plan, Placed, Plan};
pub use load::{History, QueueLoad, DEFAULT_INTERVAL_SECS, INTERVALS, INTERVAL_SECS_RANGE};

//! Line-rate benchmarking (issue 4). Empty until that issue lands.
#![forbid(unsafe_code)]

//! The poll-mode L2 switch (issue 2).
#![forbid(unsafe_code)]

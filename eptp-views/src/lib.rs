//! Protected memory views (issue 3). Empty until that issue lands.
#![forbid(unsafe_code)]

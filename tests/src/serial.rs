//! One heavy test at a time, across test threads and test binaries.
//!
//! A heavy test (busy-polling threads, DPDK, QEMU) holds an exclusive lock (`flock`) on a file in
//! the system temp dir for its whole run. The lock is released when the guard drops, and by the
//! kernel when the process dies, so a crashed test never wedges the rest.

use std::fs::File;

/// Guard for an exclusive run; drop it to let the next heavy test start.
pub struct Heavy {
    _file: File,
}

/// Blocks until no other heavy test runs, then returns the guard.
pub fn heavy() -> Heavy {
    let path = std::env::temp_dir().join("nfv-dataplane-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Heavy { _file: file }
}

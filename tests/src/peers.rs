//! Where the real peers are, and what a test does when one is missing.
//!
//! Outside CI a missing peer makes the test print a loud `SKIPPED` line and pass; under CI
//! (`CI=true`) a missing peer fails the test, because `.ci/run` installs every peer.

use std::path::{Path, PathBuf};

/// True when running under CI (`CI=true` or `CI=1`).
pub fn under_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("yes")
    )
}

/// Finds `name` on `PATH` (or as an absolute path).
pub fn which(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Returns the peer's path, or reports it missing: under CI that is a panic (test failure),
/// otherwise a loud message and `None` so the caller returns early.
pub fn require(name: &str, what: &str) -> Option<PathBuf> {
    match which(name) {
        Some(p) => Some(p),
        None => {
            missing(&format!("{name} ({what})"));
            None
        }
    }
}

/// Reports a missing prerequisite: fails under CI, prints `SKIPPED` otherwise.
pub fn missing(what: &str) {
    if under_ci() {
        panic!("required peer missing under CI: {what}; .ci/run should have installed it");
    }
    eprintln!("\n*** SKIPPED: {what} is not available on this machine; install it (see .ci/run) to run this test ***\n");
}

/// The directory holding the workspace's built binaries (`target/debug` or `target/release`),
/// derived from the running test executable (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent");
    if deps.file_name().map(|n| n == "deps").unwrap_or(false) {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a binary built by this workspace (for example `vswitch`). Panics with a clear message
/// when it has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built; run `cargo build --workspace --bins` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

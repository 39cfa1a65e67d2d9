//! The switching backends and their detection.

use std::fmt;

/// How views are switched.
///
/// - `Mprotect`: enter changes each granted range to its permission with `mprotect`, leave sets
///   them back to PROT_NONE. Works everywhere; costs system calls (and TLB shootdowns) per
///   switch. Protections are **per process**: while one thread is inside a view, every thread of
///   the process can reach that view's grants, so a stray access from another thread in that
///   window is not caught; and enters serialise on a process-wide lock, so only one thread at a
///   time is inside any view.
/// - `Pku`: each granted region carries its own protection key, denied in PKRU by default;
///   enter and leave are one `WRPKRU` each (checked with `RDPKRU`). PKRU is **per thread**: a
///   view is open only for the thread that entered it, other threads still fault, and threads
///   may be inside views concurrently. A thread spawned from inside a view inherits its PKRU,
///   so never spawn threads inside `enter`; signal handlers run with the kernel's default PKRU
///   (all keys closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Mprotect,
    Pku,
}

impl Backend {
    /// The fastest backend this machine supports: `Pku` where the CPU and kernel offer
    /// protection keys, `Mprotect` otherwise.
    pub fn detect() -> Backend {
        if Backend::Pku.available() {
            Backend::Pku
        } else {
            Backend::Mprotect
        }
    }

    /// Whether this backend works here. `Mprotect` always does; `Pku` needs CPUID PKU and OSPKE
    /// and a successful `pkey_alloc` probe (done once).
    pub fn available(self) -> bool {
        match self {
            Backend::Mprotect => true,
            Backend::Pku => crate::pkru::available(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Mprotect => "mprotect",
            Backend::Pku => "pku",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

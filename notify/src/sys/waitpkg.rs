//! WAITPKG (UMONITOR / UMWAIT): user-mode monitor of a cache line and a light sleep until it is
//! written or a TSC deadline passes. The instructions exist only if CPUID.(EAX=7,ECX=0):ECX[5]
//! is set; elsewhere they fault (#UD). [`Waitpkg`] can only be obtained by that check, and the
//! instructions are only reachable through it, so no path executes them on a CPU without them.
//!
//! Untested on the machines of this project so far: none has WAITPKG.
#![allow(unsafe_code)]

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count};
use std::sync::atomic::AtomicU32;

/// UMWAIT's control operand, bit 0: 1 asks for C0.1 (lighter, faster wake-up), 0 for C0.2.
const C0_1: u32 = 1;

/// Proof that this CPU has WAITPKG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waitpkg {
    _private: (),
}

impl Waitpkg {
    /// CPUID leaf 7, sub-leaf 0, ECX bit 5; `None` if absent (or leaf 7 does not exist).
    pub(crate) fn detect() -> Option<Waitpkg> {
        // Safe since Rust 1.87 (no target feature needed); the block keeps older compilers.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU and has no memory effects.
        let max_leaf = unsafe { __cpuid(0) }.eax;
        if max_leaf < 7 {
            return None;
        }
        #[allow(unused_unsafe)]
        // SAFETY: as above; leaf 7 exists (max_leaf >= 7).
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        (leaf7.ecx & (1 << 5) != 0).then_some(Waitpkg { _private: () })
    }

    /// Arms the address monitor on the cache line holding `word`. A store by another agent to
    /// that line after this returns ends the next UMWAIT.
    #[inline]
    pub(crate) fn umonitor(self, word: &AtomicU32) {
        // SAFETY: `self` proves WAITPKG, so the instruction exists; UMONITOR arms the monitor
        // and is checked and ordered like a byte load of the address (SDM), which is valid
        // and mapped because `word` is a live reference; it writes no register or flag. Being
        // ordered as a load, the caller's re-read of the word cannot pass it.
        unsafe {
            asm!("umonitor {0}", in(reg) word.as_ptr(), options(nostack, preserves_flags));
        }
    }

    /// Waits in C0.1 until the monitored line is written, the TSC reaches `deadline_tsc`, the
    /// OS time limit (IA32_UMWAIT_CONTROL) passes, or an interrupt arrives. Returns true if it
    /// ended because of the OS limit (CF set). Callers loop and re-check in every case.
    #[inline]
    pub(crate) fn umwait(self, deadline_tsc: u64) -> bool {
        let hi = u32::try_from(deadline_tsc >> 32).unwrap_or(u32::MAX);
        let lo = u32::try_from(deadline_tsc & 0xffff_ffff).unwrap_or(u32::MAX);
        let cf: u8;
        // SAFETY: `self` proves WAITPKG; UMWAIT reads EDX:EAX and the control register, writes
        // only RFLAGS (hence no preserves_flags), and touches no memory. No `nomem`: the asm
        // must stay a compiler barrier so the caller's re-read of the word is not hoisted
        // above the wait.
        unsafe {
            asm!(
                "umwait {ctrl:e}",
                "setc {cf}",
                ctrl = in(reg) C0_1,
                in("edx") hi,
                in("eax") lo,
                cf = out(reg_byte) cf,
                options(nostack),
            );
        }
        cf != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_kernel() {
        let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let kernel_says = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "waitpkg"));
        assert_eq!(Waitpkg::detect().is_some(), kernel_says);
    }
}

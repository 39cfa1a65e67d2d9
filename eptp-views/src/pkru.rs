//! Memory-protection-key leaf: detection (CPUID PKU/OSPKE and a `pkey_alloc` probe), key
//! allocation, and the only `RDPKRU`/`WRPKRU` instructions of the crate.
//!
//! The two instruction wrappers live in their own executable section, `eptp_trampoline`, whose
//! bounds the linker provides (`__start_`/`__stop_eptp_trampoline`): the guest reports that
//! range to the hooks, which check that no `WRPKRU` (0F 01 EF) exists outside it. Every write is
//! followed by a read-back in the same asm block; a mismatch aborts the process (a view we
//! cannot confirm is a view we must not run in).
//!
//! Untested on real hardware so far: the machines this was written on have no PKU. The tests
//! that exercise it run wherever [`available`] is true.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// PKRU bits of key `k`: access-disable (bit 2k) and write-disable (bit 2k+1).
pub(crate) const fn key_bits(key: u32) -> u32 {
    0b11 << (2 * key)
}

/// Access-disable bit of key `k`.
pub(crate) const fn access_disable(key: u32) -> u32 {
    0b01 << (2 * key)
}

/// True when the CPU has PKU, the OS enabled it (CR4.PKE, seen as OSPKE) and the kernel hands
/// out keys. Probed once.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if !cpu_has_ospke() {
            return false;
        }
        match Pkey::alloc() {
            Ok(k) => {
                drop(k);
                true
            }
            Err(_) => false,
        }
    })
}

/// CPUID leaf 7 subleaf 0: ECX bit 3 = PKU, bit 4 = OSPKE. Both are needed: without OSPKE
/// RDPKRU/WRPKRU raise #UD.
fn cpu_has_ospke() -> bool {
    let max_leaf = std::arch::x86_64::__cpuid(0).eax;
    if max_leaf < 7 {
        return false;
    }
    let ecx = std::arch::x86_64::__cpuid_count(7, 0).ecx;
    let pku = ecx & (1 << 3) != 0;
    let ospke = ecx & (1 << 4) != 0;
    pku && ospke
}

/// An allocated protection key, freed on drop. Allocated with access disabled in the calling
/// thread; every other thread starts from the kernel's default PKRU, which disables all keys but
/// key 0, so the key is closed everywhere until a trampoline opens it.
#[derive(Debug)]
pub(crate) struct Pkey(u32);

impl Pkey {
    pub(crate) fn alloc() -> std::io::Result<Pkey> {
        // SAFETY: pkey_alloc(flags = 0, access_rights) has no memory effects on this process
        // other than setting the new key's bits in this thread's PKRU.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pkey_alloc,
                0 as libc::c_ulong,
                libc::c_ulong::from(PKEY_DISABLE_ACCESS),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        match u32::try_from(r) {
            Ok(k) if (1..16).contains(&k) => Ok(Pkey(k)),
            _ => Err(std::io::Error::from(std::io::ErrorKind::InvalidData)),
        }
    }

    pub(crate) fn get(&self) -> u32 {
        self.0
    }
}

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: frees a key this value allocated, once; pages still tagged with it keep the
        // tag (the owning Region unmaps them before dropping its key).
        unsafe { libc::syscall(libc::SYS_pkey_free, libc::c_ulong::from(self.0)) };
    }
}

const PKEY_DISABLE_ACCESS: u32 = 0x1;

// The trampoline's code: a section of its own, so the linker defines its bounds.
extern "C" {
    static __start_eptp_trampoline: u8;
    static __stop_eptp_trampoline: u8;
}

/// Address range of the trampoline's switching code (the only RDPKRU/WRPKRU of the process),
/// as the guest reports it to the hooks.
pub(crate) fn code_range() -> std::ops::Range<usize> {
    // Referencing the functions keeps their section (and so its bounds) in the link even in a
    // binary that never switches a view.
    std::hint::black_box(wrpkru_checked as fn(u32));
    std::hint::black_box(rdpkru as fn() -> u32);
    let start = std::ptr::addr_of!(__start_eptp_trampoline) as usize;
    let stop = std::ptr::addr_of!(__stop_eptp_trampoline) as usize;
    start..stop
}

/// Reads this thread's PKRU. Only called where [`available`] is true.
#[inline(never)]
#[link_section = "eptp_trampoline"]
pub(crate) fn rdpkru() -> u32 {
    let v: u32;
    // SAFETY: RDPKRU exists and is enabled (callers only run after `available()`; a ViewList
    // with the pku backend cannot be built otherwise). ECX must be 0; it writes EAX and EDX and
    // touches no memory.
    unsafe {
        std::arch::asm!(
            "rdpkru",
            in("ecx") 0u32,
            out("eax") v,
            out("edx") _,
            options(nomem, nostack, preserves_flags),
        );
    }
    v
}

/// Writes `value` to this thread's PKRU and reads it back in the same instruction sequence;
/// aborts unless PKRU holds `value`. The asm block is a compiler memory barrier (no `nomem`):
/// no access to peer memory is moved across a view switch.
#[inline(never)]
#[link_section = "eptp_trampoline"]
pub(crate) fn wrpkru_checked(value: u32) {
    let back: u32;
    // SAFETY: WRPKRU/RDPKRU exist and are enabled (see `rdpkru`). ECX and EDX must be 0 for
    // both (WRPKRU leaves them 0; RDPKRU overwrites EDX). Changing PKRU only changes which
    // pages this thread may access: later accesses may fault (SIGSEGV) or reach peer pages this
    // process mapped itself; no Rust reference points into peer memory, so none is invalidated.
    unsafe {
        std::arch::asm!(
            "wrpkru",
            "rdpkru",
            inout("eax") value => back,
            inout("ecx") 0u32 => _,
            inout("edx") 0u32 => _,
            options(nostack, preserves_flags),
        );
    }
    if back != value {
        crate::sys::write_raw(
            2,
            b"eptp-views: PKRU does not hold the value just written; aborting\n",
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bits_match_the_pkru_layout() {
        assert_eq!(key_bits(0), 0b11);
        assert_eq!(key_bits(1), 0b1100);
        assert_eq!(access_disable(15), 1 << 30);
        // The kernel's default PKRU (all keys but 0 access-disabled).
        let default: u32 = (1..16).map(access_disable).sum();
        assert_eq!(default, 0x5555_5554);
    }

    #[test]
    fn trampoline_section_holds_the_only_wrpkru_of_this_binary() {
        const WRPKRU: [u8; 3] = [0x0f, 0x01, 0xef];
        let range = code_range();
        assert!(!range.is_empty() && range.len() < 256, "{range:x?}");
        assert!(range.contains(&(wrpkru_checked as fn(u32) as usize)));
        assert!(range.contains(&(rdpkru as fn() -> u32 as usize)));
        // SAFETY: the section is part of this executable's code, mapped readable and executable
        // for the life of the process.
        let code = unsafe { std::slice::from_raw_parts(range.start as *const u8, range.len()) };
        assert_eq!(code.windows(3).filter(|w| *w == WRPKRU).count(), 1);
        // What the hooks check: no WRPKRU pattern in this executable's other code.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (mut outside, mut scanned) = (0, 0);
        for line in maps.lines().filter(|l| l.ends_with(exe.to_str().unwrap())) {
            let mut f = line.split_whitespace();
            let (span, perms) = (f.next().unwrap(), f.next().unwrap());
            if !perms.starts_with("r-x") {
                continue;
            }
            let (a, b) = span.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            // SAFETY: an r-x mapping of this executable, listed by the kernel just now; code
            // mappings of the executable are never unmapped while it runs.
            let text = unsafe { std::slice::from_raw_parts(a as *const u8, b - a) };
            scanned += text.len();
            outside += text
                .windows(3)
                .enumerate()
                .filter(|(i, w)| *w == WRPKRU && !range.contains(&(a + i)))
                .count();
        }
        assert!(scanned > range.len(), "found no code mapping of {exe:?}");
        assert_eq!(outside, 0, "WRPKRU byte pattern outside the trampoline");
    }

    #[test]
    fn detection_agrees_with_cpuid() {
        // Whatever the machine, `available` never claims PKU when CPUID denies it.
        if !cpu_has_ospke() {
            assert!(!available());
        }
    }
}

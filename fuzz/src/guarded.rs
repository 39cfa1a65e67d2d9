//! Guest memory for the descriptor-chain targets (split and packed): two adjacent regions of
//! one memfd, every side of each made inaccessible, so any device access outside guest memory
//! faults; and the oracle every chain the device hands out must pass.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost_user::driver::DriverMemory;
use vhost_user::memory::GuestMemory;
use vhost_user::message::MemRegionDesc;
use vhost_user::virtq::MAX_CHAIN_BYTES;

use crate::chains::MEM_SIZE;

pub const PAGE: usize = 4096;
pub const HALF: usize = MEM_SIZE / 2;
/// Frontend-virtual address of region A (region B follows it); rings are placed by it.
pub const UVA_BASE: u64 = 0x7e00_0000_0000;

pub struct World {
    pub mem: DriverMemory,
    pub dev: Arc<GuestMemory>,
    pub gpa: u64,
    pub call: EventFd,
    /// Device views that came out unguarded, kept mapped (see `guarded_device_view`).
    _discarded: Vec<GuestMemory>,
}

static WORLD: OnceLock<World> = OnceLock::new();
pub static ZEROS: [u8; MEM_SIZE] = [0; MEM_SIZE];

pub fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        (0..16384u32)
            .map(|i| u8::try_from(i.wrapping_mul(131) % 251).unwrap_or(0))
            .collect()
    })
}

/// Whether the page at `addr` is (now) inaccessible: maps a `PROT_NONE` page there unless
/// something is mapped already, in which case that mapping must itself be `PROT_NONE`.
fn guard(addr: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no Rust object or
    // mapping of ours can be affected; the page is never unmapped (a guard for the process's
    // lifetime).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p as usize == addr {
        return true;
    }
    if p != libc::MAP_FAILED {
        // A kernel without MAP_FIXED_NOREPLACE put it elsewhere.
        // SAFETY: `p` is the page just mapped, used by nothing.
        unsafe { libc::munmap(p, PAGE) };
        return false;
    }
    // Something is mapped there: fine if nothing can be accessed through it.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().any(|l| {
        let mut it = l.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            return false;
        };
        let Some((a, b)) = range.split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            return false;
        };
        a <= addr && addr < b && perms.starts_with("---")
    })
}

/// Maps the device's view of guest memory with every side of both regions inaccessible.
///
/// `GuestMemory` places its mappings where the kernel chooses (top-down, each new mapping just
/// below the previous one when no hole higher up fits), so the layout is arranged rather than
/// dictated: a `PROT_NONE` spacer page first, then region B (mapped second in address order,
/// first in time: the table lists it first), whose head is protected here, then region A just
/// below it, then a guard page below A. Each side is checked; an attempt that did not come out
/// that way is kept mapped (filling the hole it fell into; returned so that it stays reachable)
/// and the next one tried.
fn guarded_device_view(mem: &DriverMemory, gpa: u64) -> (GuestMemory, Vec<GuestMemory>) {
    let dup = || -> OwnedFd { mem.fd().as_fd().try_clone_to_owned().expect("dup memfd") };
    let half = HALF as u64;
    let b = MemRegionDesc {
        guest_phys_addr: gpa + half,
        memory_size: half,
        userspace_addr: UVA_BASE + half,
        mmap_offset: half,
    };
    let a = MemRegionDesc {
        guest_phys_addr: gpa,
        memory_size: half,
        userspace_addr: UVA_BASE,
        mmap_offset: 0,
    };
    let mut discarded = Vec::new();
    for attempt in 0..32 {
        // SAFETY: a fresh anonymous PROT_NONE page at a kernel-chosen address aliases nothing;
        // it stays mapped for the process's lifetime.
        let spacer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(spacer, libc::MAP_FAILED, "spacer page");
        let dev = GuestMemory::from_table(&[b, a], vec![dup(), dup()]).expect("device view");
        let mut sides = Vec::new();
        for r in dev.regions() {
            let host = r.host_base() as usize;
            let off = r.desc.mmap_offset as usize;
            if off > 0 {
                // SAFETY: [host - off, host) is the head of the region's own mapping
                // (Region::map maps the file from offset 0), page-aligned; it is not guest
                // memory of this region, and the device code under test must never touch it.
                let rc = unsafe {
                    libc::mprotect((host - off) as *mut libc::c_void, off, libc::PROT_NONE)
                };
                sides.push(rc == 0);
            }
        }
        for r in dev.regions() {
            let host = r.host_base() as usize;
            sides.push(guard(host - PAGE));
            sides.push(guard(host + r.desc.memory_size as usize));
        }
        if sides.iter().all(|&ok| ok) {
            return (dev, discarded);
        }
        let at: Vec<_> = dev
            .regions()
            .map(|r| (r.host_base(), r.desc.mmap_offset))
            .collect();
        eprintln!(
            "descriptor_chains: guest memory attempt {attempt} not guarded on every side: \
             spacer {spacer:?}, regions {at:x?}, sides {sides:?}"
        );
        discarded.push(dev);
    }
    eprintln!("descriptor_chains: WARNING: guest memory is not guarded on every side");
    let dev = GuestMemory::from_table(&[b, a], vec![dup(), dup()]).expect("device view");
    (dev, discarded)
}

pub fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let mem = DriverMemory::new("fuzz-chains", MEM_SIZE, false).expect("driver memory");
        let gpa = mem.region_desc().guest_phys_addr;
        let (dev, discarded) = guarded_device_view(&mem, gpa);
        let call =
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
        World {
            mem,
            dev: Arc::new(dev),
            gpa,
            call,
            _discarded: discarded,
        }
    })
}

pub fn check_chain_reads(c: &vhost_user::virtq::Chain, off: usize, min_len: usize) {
    let len = c.len();
    assert!(
        len >= min_len,
        "chain of {len} bytes delivered, below {min_len}"
    );
    assert!(len <= MAX_CHAIN_BYTES as usize, "chain of {len} bytes");
    let mut buf = [0u8; 256];
    let n = c.read(off, &mut buf);
    assert_eq!(
        n,
        buf.len().min(len.saturating_sub(off)),
        "Chain::read at {off} of {len}"
    );
    let (p, k) = c.peek::<18>(off);
    assert_eq!(
        k,
        18.min(len.saturating_sub(off)),
        "Chain::peek at {off} of {len}"
    );
    assert_eq!(&p[..k], &buf[..k], "peek and read disagree");
    assert!(
        p[k..].iter().all(|&b| b == 0),
        "peek past the chain is not zero-padded"
    );
    if let Some((w0, w1)) = c.head_words(off) {
        assert_eq!(k, 18.min(len - off));
        assert!(k >= 16, "head_words past the end of the chain");
        assert_eq!(w0.to_le_bytes(), p[..8], "head_words and peek disagree");
        assert_eq!(w1.to_le_bytes(), p[8..16], "head_words and peek disagree");
    }
}

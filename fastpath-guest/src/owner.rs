//! The owner's side of a channel: a queue dedicated to one peer, in a memory region of its own
//! (rings and buffers, nothing else), which the peer reaches through a view the hooks grant.
//!
//! Copy mode: the owner is the receiver; the dedicated queue is a receive queue the peer fills
//! (as its device). Zero-copy: the owner is the sender; the dedicated queue is a transmit queue
//! the peer consumes in place (as its device).

use std::os::fd::AsFd;
use std::sync::Arc;

use hypervisor_hooks::proto::{GrantRange, Mode, Perm, QueueLayout};
use vhost_user::driver::{Areas, DriverMemory, DriverQueue};

use crate::doorbell::Doorbell;
use crate::error::Result;

/// Guest-physical base of dedicated regions: apart from the guest's vhost-user memory, so a
/// descriptor of one can never be read as the other.
pub const DEDICATED_GPA_BASE: u64 = 0x4000_0000_0000;
const PAGE: u64 = 4096;
/// Zero-copy: bytes of each descriptor's small transmit buffer (`Areas::small_slot`), for frames
/// of up to 116 bytes with a 12-byte virtio-net header (64-byte frames among them), so that
/// consecutive small frames the peer reads lie in consecutive lines.
pub const ZC_SMALL_SLOT: u32 = 128;

/// A dedicated queue, its region and doorbell, on the owner's side.
pub struct Dedicated {
    pub queue: DriverQueue,
    pub doorbell: Arc<Doorbell>,
    pub layout: QueueLayout,
    pub grants: Vec<GrantRange>,
    pub mode: Mode,
    // Last: the queue points into this memory.
    mem: DriverMemory,
}

impl Dedicated {
    /// Lays out a dedicated queue of `size` entries with `buf_size`-byte buffers.
    ///
    /// The region is backed by 2 MiB hugepages when the machine has free ones: a view switch
    /// with the mprotect backend then changes one page-table entry per range instead of one per
    /// 4 KiB page (measured here: ~4 us instead of ~36 us to close and reopen 2 MiB), which is
    /// what makes per-burst view switching affordable. The areas the peer gets different rights
    /// to start on pages of their own: copy mode puts descriptors and avail ring (read) apart from
    /// the used ring and buffers (read-write); zero-copy puts the used ring (read-write) first,
    /// apart from the descriptors, avail ring, small transmit buffers ([`ZC_SMALL_SLOT`]) and
    /// buffers (read). Two ranges either way.
    pub fn new(name: &str, mode: Mode, size: u16, buf_size: u32, hdr_len: usize) -> Result<Self> {
        match Dedicated::build(name, mode, size, buf_size, hdr_len, HUGE) {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::info!(
                    "dedicated queue on 4 KiB pages (no 2 MiB hugepage available: {e}); view switches will cost more"
                );
                Dedicated::build(name, mode, size, buf_size, hdr_len, PAGE)
            }
        }
    }

    fn build(
        name: &str,
        mode: Mode,
        size: u16,
        buf_size: u32,
        hdr_len: usize,
        page: u64,
    ) -> Result<Self> {
        let n = u64::from(size);
        let round = |x: u64| x.div_ceil(page) * page;
        let rings = round(16 * n + 6 + 2 * n + PAGE);
        let used = round(6 + 8 * n);
        let len = match mode {
            // [desc, avail] [used, buffers]
            Mode::Copy => rings + round(6 + 8 * n + PAGE + n * u64::from(buf_size)),
            // [used] [desc, avail, buffers]
            Mode::ZeroCopy => {
                used + round(
                    16 * n + 6 + 2 * n + 3 * PAGE + n * u64::from(ZC_SMALL_SLOT + buf_size),
                )
            }
        };
        let len_usize =
            usize::try_from(len).map_err(|_| crate::Error::Channel("region too large".into()))?;
        let page_usize = usize::try_from(page).unwrap_or(4096);
        let mut mem =
            DriverMemory::with_gpa_base(name, len_usize, page == HUGE, DEDICATED_GPA_BASE)?;
        let areas = match mode {
            Mode::Copy => Areas {
                rings_align: page_usize,
                used_align: page_usize,
                buffers_align: 4096,
                used_first: false,
                small_slot: 0,
            },
            Mode::ZeroCopy => Areas {
                rings_align: page_usize,
                used_align: page_usize,
                buffers_align: 4096,
                used_first: true,
                small_slot: ZC_SMALL_SLOT.min(buf_size.saturating_sub(1) & !63),
            },
        };
        let queue = DriverQueue::with_areas(&mut mem, size, buf_size, hdr_len, areas)?;
        let desc = mem.region_desc();
        let l = queue.layout();
        let layout = QueueLayout {
            region_len: desc.memory_size,
            gpa_base: desc.guest_phys_addr,
            uva_base: desc.userspace_addr,
            queue_size: size,
            desc: l.desc_uva,
            avail: l.avail_uva,
            used: l.used_uva,
            hdr_len: u8::try_from(hdr_len).unwrap_or(12),
            mrg_rxbuf: hdr_len == 12,
        };
        let off = |uva: u64| uva - desc.userspace_addr;
        let (used_off, desc_off) = (off(l.used_uva), off(l.desc_uva));
        let end = desc.memory_size;
        let grants = match mode {
            Mode::Copy => vec![
                GrantRange {
                    offset: 0,
                    len: used_off,
                    perm: Perm::Read,
                },
                GrantRange {
                    offset: used_off,
                    len: end - used_off,
                    perm: Perm::ReadWrite,
                },
            ],
            Mode::ZeroCopy => vec![
                GrantRange {
                    offset: 0,
                    len: desc_off,
                    perm: Perm::ReadWrite,
                },
                GrantRange {
                    offset: desc_off,
                    len: end - desc_off,
                    perm: Perm::Read,
                },
            ],
        };
        let doorbell = Doorbell::create(&format!("{name}-doorbell"))?;
        let mut d = Dedicated {
            queue,
            doorbell,
            layout,
            grants,
            mode,
            mem,
        };
        d.queue.set_interrupts(false);
        match mode {
            Mode::Copy => {
                d.queue.refill_rx();
            }
            // The peer's device side (vhost_user::virtq) returns chains in avail order, refused
            // ones included: reclaims read the used index alone.
            Mode::ZeroCopy => {
                d.queue.set_in_order();
            }
        }
        Ok(d)
    }

    /// The region's file, for the hooks (and through them, the peer).
    pub fn region_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.mem.fd().as_fd()
    }

    /// Whether the region is on 2 MiB hugepages.
    pub fn huge(&self) -> bool {
        self.layout.region_len.is_multiple_of(HUGE)
            && self.grants.iter().all(|g| g.offset % HUGE == 0)
    }
}

const HUGE: u64 = 2 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_mode_grants_two_ranges_covering_the_region() {
        let d = Dedicated::new("t-copy", Mode::Copy, 256, 2048, 12).unwrap();
        assert_eq!(d.grants.len(), 2, "{:?}", d.grants);
        assert_eq!(d.grants[0].perm, Perm::Read);
        assert_eq!(d.grants[1].perm, Perm::ReadWrite);
        let end = d.grants.last().map(|g| g.offset + g.len).unwrap();
        assert_eq!(end, d.layout.region_len);
        assert!(d
            .grants
            .iter()
            .all(|g| g.offset % PAGE == 0 && g.len % PAGE == 0));
        assert_eq!(d.queue.free_count(), 0, "receive buffers posted");
    }

    #[test]
    fn zero_copy_grants_write_only_the_used_ring() {
        let d = Dedicated::new("t-zc", Mode::ZeroCopy, 256, 2048, 12).unwrap();
        let rw: u64 = d
            .grants
            .iter()
            .filter(|g| g.perm == Perm::ReadWrite)
            .map(|g| g.len)
            .sum();
        assert!(rw <= HUGE, "{:?}", d.grants);
        assert_eq!(d.grants[0].perm, Perm::ReadWrite);
        assert_eq!(d.grants.len(), 2);
    }
}

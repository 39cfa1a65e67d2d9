//! The user's side of a channel: the peer's dedicated queue, reached only through a protected
//! view, where this guest acts as the device — filling the peer's receive buffers (copy mode) or
//! consuming the peer's transmitted frames in place (zero-copy).
//!
//! Everything the peer wrote is as hostile as any guest input: the same device-side queue engine
//! the switch uses walks the peer's descriptors, with the same checks, and can only reach the
//! granted region (the queue's memory table is that one region).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use eptp_views::{Grant, Region, RegionId, View, ViewIndex, ViewList};
use hypervisor_hooks::proto::{GrantRange, Perm, QueueLayout};
use vhost_user::memory::GuestMemory;
use vhost_user::message::MemRegionDesc;
use vhost_user::virtq::{DeviceQueue, QueueCounters, QueueFeatures, QueueLayout as VqLayout};

use notify::tsc;

use crate::error::{Error, Result};
use crate::visits::Visits;

/// The peer's queue as this guest sees it: a view and the device side of the queue.
pub struct PeerQueue {
    pub view: ViewIndex,
    queue: DeviceQueue,
    pub counters: Arc<QueueCounters>,
    region: Arc<Region>,
}

impl PeerQueue {
    /// Entries of the peer's queue.
    pub fn size(&self) -> u16 {
        self.queue.size()
    }

    /// Maps the peer's region (inaccessible outside the view), adds the view of the granted
    /// ranges to `views`, and builds the device side of the queue inside it.
    pub fn attach(
        views: &mut ViewList,
        channel: u64,
        fd: OwnedFd,
        layout: &QueueLayout,
        grants: &[GrantRange],
    ) -> Result<PeerQueue> {
        let len = usize::try_from(layout.region_len)
            .map_err(|_| Error::Channel("region too large".into()))?;
        let region = Arc::new(Region::map(fd, len, RegionId(channel))?);
        let gs = grants
            .iter()
            .map(|g| {
                let perm = match g.perm {
                    Perm::Read => eptp_views::Perm::Read,
                    Perm::ReadWrite => eptp_views::Perm::ReadWrite,
                };
                let (off, len) = (usize::try_from(g.offset), usize::try_from(g.len));
                match (off, len) {
                    (Ok(o), Ok(l)) => Ok(Grant::new(region.clone(), o, l, perm)),
                    _ => Err(Error::Channel("grant out of range".into())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let view = views.add(View::new(gs)?)?;
        let desc = MemRegionDesc {
            guest_phys_addr: layout.gpa_base,
            memory_size: layout.region_len,
            userspace_addr: layout.uva_base,
            mmap_offset: 0,
        };
        let keep: Arc<dyn std::any::Any + Send + Sync> = region.clone();
        let page = nix::sys::stat::fstat(region.fd())
            .map(|st| usize::try_from(st.st_blksize).unwrap_or(4096))
            .unwrap_or(4096);
        // The owner can shrink its file under us: shield the mapping (see vhost_user::sigbus).
        let shield = vhost_user::sigbus::register(region.as_ptr(), region.len(), page);
        #[allow(unsafe_code)]
        // SAFETY: `region` maps exactly `region_len` bytes of the peer's region and stays mapped
        // while `keep` (a clone of its Arc) lives, which the GuestMemory holds; the memory is
        // only touched inside `views.enter(view, ..)`, where the view makes it accessible (an
        // access outside is a violation, caught by eptp-views, not undefined behaviour here).
        let r = unsafe {
            vhost_user::memory::Region::from_external(desc, region.as_ptr(), keep, shield)
        }?;
        let mem = Arc::new(GuestMemory::single(r));
        let counters = Arc::new(QueueCounters::default());
        let features = QueueFeatures {
            event_idx: false,
            indirect: false,
            mrg_rxbuf: layout.mrg_rxbuf,
            hdr_len: usize::from(layout.hdr_len),
        };
        let vq = VqLayout {
            size: layout.queue_size,
            desc_uva: layout.desc,
            avail_uva: layout.avail,
            used_uva: layout.used,
        };
        let c = counters.clone();
        // The queue reads and writes ring state when built: inside the view.
        let queue = views
            .enter(view, |_| DeviceQueue::new(mem, vq, features, 0, None, c))?
            .map_err(|e| Error::Channel(format!("peer queue: {e}")))?;
        Ok(PeerQueue {
            view,
            queue,
            counters,
            region,
        })
    }

    /// Runs `f` on the queue inside the view: the only way to touch it.
    #[inline]
    pub fn with<R>(
        &mut self,
        views: &ViewList,
        f: impl FnOnce(&mut DeviceQueue) -> R,
    ) -> Result<R> {
        let q = &mut self.queue;
        Ok(views.enter(self.view, |_| f(q))?)
    }

    /// Like [`Self::with`], timing the visit (entering, the work, leaving) into `visits`; `f`
    /// returns its result and how many frames it moved.
    #[inline]
    pub fn visit<R>(
        &mut self,
        views: &ViewList,
        visits: &mut Visits,
        f: impl FnOnce(&mut DeviceQueue) -> (R, usize),
    ) -> Result<R> {
        let t0 = tsc::now();
        let (r, n, t1, t2) = self.with(views, |q| {
            let t1 = tsc::now();
            let (r, n) = f(q);
            (r, n, t1, tsc::now())
        })?;
        visits.record(t0, t1, t2, tsc::now(), n);
        Ok(r)
    }

    /// Address range of the peer's region in this process (tests touch it outside the view).
    pub fn region_range(&self) -> (usize, usize) {
        (self.region.as_ptr() as usize, self.region.len())
    }

    /// Drops the view; the region is unmapped when the last reference goes.
    pub fn detach(self, views: &mut ViewList) {
        let _ = views.remove(self.view);
    }
}

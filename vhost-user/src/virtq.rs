//! The device side of a virtqueue: taking descriptor chains from a guest, returning them used,
//! and telling the guest (or not) — burst-oriented, as the switch's poll loop and the fast path
//! use it. One engine, two ring layouts: [`crate::split`] (descriptor table, avail and used
//! rings) and [`crate::packed`] (one descriptor ring with wrap counters), behind
//! [`DeviceQueue`]; chains, their checks, counters and the dirty log are shared
//! ([`crate::chain`], [`crate::dirty_log`]).
//!
//! Guest rings are hostile and change under us. The rules, each with its fate and counter:
//! - every descriptor is copied out once and only the copy is used (a guest rewriting a
//!   descriptor after we read it changes nothing we do);
//! - a head or `next` index past the queue size, a chain longer than the queue (a loop), an
//!   indirect table inside an indirect table, an indirect table of bad length, a buffer outside
//!   guest memory, a descriptor of the wrong direction, a TX chain shorter than the virtio-net
//!   header: the chain goes back used with length 0, is counted, and the queue goes on;
//! - an avail index more than a queue ahead of what we consumed (split), a chain running past the
//!   queue or a lying wrap counter inside a chain (packed): the queue is broken (counted and
//!   logged) and not touched again until the frontend sets it up afresh;
//! - nothing a guest writes makes us allocate, loop without bound, or panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::chain::{Chain, ChainError, Source, MAX_CHAIN_BYTES, MAX_SEGS};
use crate::dirty_log::QueueLog;
use crate::memory::GuestMemory;
use crate::packed::PackedQueue;
pub use crate::packed::{PackedLayout, RingPos};
use crate::split::SplitQueue;

/// Packets taken from or given to a queue per burst.
pub const BURST: usize = 32;
const _: () = assert!(BURST.is_power_of_two());

/// Bytes of an Ethernet header with one VLAN tag: what the switch reads of every frame.
pub(crate) const ETH_VLAN_HLEN: usize = 18;
/// Receive chains one packet may span with MRG_RXBUF (a 9018-byte frame in 1 KiB buffers).
pub const MAX_MRG_CHAINS: usize = 16;

/// Outcome of [`DeviceQueue::enqueue_burst`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxTally {
    pub packets: u64,
    pub bytes: u64,
    pub no_buffers: u64,
    pub too_small: u64,
    pub bad_buffers: u64,
    /// Packets written to the used ring (one buffer each, or several merged for a big frame):
    /// one per frame, but for [`DeviceQueue::enqueue_records`], which packs many in one.
    pub buffers: u64,
}

/// Why a packet could not be placed in a receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxError {
    /// The guest has not posted enough receive buffers (the usual drop under overload).
    NoBuffers,
    /// Without MRG_RXBUF, the next buffer is too small for the frame.
    BufferTooSmall,
    /// The buffers the guest posted were malformed (counted per [`ChainError`]).
    BadChain,
    /// The queue is broken (see [`ChainError::AvailOverrun`]).
    Broken,
}

/// Error counters of one queue, shared with the control plane. Touched only when something goes
/// wrong (or once per notification), never per good packet.
#[derive(Debug, Default)]
pub struct QueueCounters {
    errors: [AtomicU64; ChainError::COUNT],
    pub notifications: AtomicU64,
    pub rx_no_buffers: AtomicU64,
    pub rx_buffer_too_small: AtomicU64,
}

impl QueueCounters {
    pub fn count(&self, e: ChainError) {
        self.errors[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, e: ChainError) -> u64 {
        self.errors[e as usize].load(Ordering::Relaxed)
    }

    /// Counts a packet the posted receive buffers could not hold (`nchains` of them gathered):
    /// without MRG_RXBUF one buffer too small, else not enough buffers.
    pub(crate) fn short_of_buffers(&self, mrg_rxbuf: bool, nchains: usize) -> RxError {
        if !mrg_rxbuf && nchains == 1 {
            self.rx_buffer_too_small.fetch_add(1, Ordering::Relaxed);
            RxError::BufferTooSmall
        } else {
            self.rx_no_buffers.fetch_add(1, Ordering::Relaxed);
            RxError::NoBuffers
        }
    }

    /// Sum of all chain errors.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// (name, value) of every non-zero counter.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = ChainError::ALL
            .iter()
            .map(|e| (e.name(), self.get(*e)))
            .collect();
        v.push(("rx_no_buffers", self.rx_no_buffers.load(Ordering::Relaxed)));
        v.push((
            "rx_buffer_too_small",
            self.rx_buffer_too_small.load(Ordering::Relaxed),
        ));
        v.retain(|(_, n)| *n != 0);
        v
    }
}

/// Negotiated properties a queue needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueFeatures {
    pub event_idx: bool,
    pub indirect: bool,
    pub mrg_rxbuf: bool,
    /// virtio-net header length (10 or 12).
    pub hdr_len: usize,
}

/// Where a queue's three areas are, in the frontend's virtual address space, and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub size: u16,
    pub desc_uva: u64,
    pub avail_uva: u64,
    pub used_uva: u64,
}

/// The ring layout of a queue (`VIRTIO_F_RING_PACKED` negotiated or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingLayout {
    #[default]
    Split,
    Packed,
}

impl RingLayout {
    /// As `vswitchctl show` writes it.
    pub fn name(self) -> &'static str {
        match self {
            RingLayout::Split => "split",
            RingLayout::Packed => "packed",
        }
    }
}

/// The device side of one virtqueue, of either layout. Each call picks the layout once (a
/// branch per burst, or per packet for [`Self::enqueue`]); everything below is the layout's own
/// burst loop.
pub struct DeviceQueue(Layout);

// The split queue, the switch's and the fast path's hot one, stays inline: boxing it would put a
// pointer chase in front of every burst.
#[allow(clippy::large_enum_variant)]
enum Layout {
    Split(SplitQueue),
    Packed(Box<PackedQueue>),
}

/// Calls `$m` on whichever layout the queue has.
macro_rules! each {
    ($q:expr, $v:ident => $e:expr) => {
        match $q {
            Layout::Split($v) => $e,
            Layout::Packed($v) => $e,
        }
    };
}

impl DeviceQueue {
    /// Builds the device side of a split queue over guest memory. The areas must lie in guest
    /// memory, each inside one region, with the alignment the spec requires.
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: QueueLayout,
        features: QueueFeatures,
        base: u16,
        call: Option<nix::sys::eventfd::EventFd>,
        counters: Arc<QueueCounters>,
    ) -> Result<DeviceQueue, &'static str> {
        SplitQueue::new(mem, layout, features, base, call, counters)
            .map(|q| DeviceQueue(Layout::Split(q)))
    }

    /// Builds the device side of a packed queue. `base` says where the driver's next available
    /// descriptor is and `used` where our next used one goes (each a position and its wrap
    /// counter; a fresh ring has both at position 0 in lap 1). `in_order`: VIRTIO_F_IN_ORDER
    /// was negotiated.
    #[allow(clippy::too_many_arguments)]
    pub fn new_packed(
        mem: Arc<GuestMemory>,
        layout: PackedLayout,
        features: QueueFeatures,
        in_order: bool,
        base: RingPos,
        used: RingPos,
        call: Option<nix::sys::eventfd::EventFd>,
        counters: Arc<QueueCounters>,
    ) -> Result<DeviceQueue, &'static str> {
        PackedQueue::new(mem, layout, features, in_order, base, used, call, counters)
            .map(|q| DeviceQueue(Layout::Packed(Box::new(q))))
    }

    pub fn ring_layout(&self) -> RingLayout {
        match self.0 {
            Layout::Split(_) => RingLayout::Split,
            Layout::Packed(_) => RingLayout::Packed,
        }
    }

    pub fn size(&self) -> u16 {
        each!(&self.0, q => q.size())
    }

    /// Where the queue stopped, as `GET_VRING_BASE` reports it: for a split ring the next avail
    /// index; for a packed ring the next available position in bits 0-14 with its wrap counter
    /// in bit 15, and the next used position and its wrap counter in bits 16-30 and 31.
    pub fn vring_base(&self) -> u32 {
        match &self.0 {
            Layout::Split(q) => u32::from(q.last_avail()),
            Layout::Packed(q) => {
                u32::from(q.avail_pos().encode()) | u32::from(q.used_pos().encode()) << 16
            }
        }
    }

    /// Next avail index to consume (split), or the next available position with its wrap
    /// counter in bit 15 (packed): the low half of [`Self::vring_base`].
    pub fn last_avail(&self) -> u16 {
        match &self.0 {
            Layout::Split(q) => q.last_avail(),
            Layout::Packed(q) => q.avail_pos().encode(),
        }
    }

    pub fn is_broken(&self) -> bool {
        each!(&self.0, q => q.is_broken())
    }

    pub fn counters(&self) -> &Arc<QueueCounters> {
        each!(&self.0, q => q.counters())
    }

    pub fn features(&self) -> QueueFeatures {
        each!(&self.0, q => q.features())
    }

    /// The guest memory this queue reads and writes.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        each!(&self.0, q => q.memory())
    }

    /// Starts (or, with `None`, stops) logging this queue's writes into guest memory. The
    /// ring areas the queue writes outside bursts are marked at once.
    pub fn set_log(&mut self, log: Option<QueueLog>) {
        each!(&mut self.0, q => q.set_log(log))
    }

    /// Whether the queue's writes are being logged.
    pub fn logging(&self) -> bool {
        each!(&self.0, q => q.logging())
    }

    /// Entries available now (does not consume).
    pub fn available(&mut self) -> u16 {
        each!(&mut self.0, q => q.available())
    }

    /// Reads and validates the next `n` available chains (at most what is available) as
    /// receive (`writable`) or transmit buffers, with the walk [`Self::pop_tx_burst`] and
    /// [`Self::enqueue`] use, without consuming them, counting errors or writing anything back;
    /// returns how many were valid. The descriptor-read part of the data path alone, for cost
    /// breakdowns (`fastpath-guest/benches/breakdown.rs`); the data path never calls it.
    pub fn walk_available(&mut self, n: usize, writable: bool) -> usize {
        each!(&mut self.0, q => q.walk_available(n, writable))
    }

    /// Takes up to [`BURST`] transmitted packets from the guest. Malformed chains are returned
    /// used and counted here; the good ones are then visible through [`Self::burst`]. Every chain
    /// taken must be given back with [`Self::complete_burst`] before the next call.
    #[inline]
    pub fn pop_tx_burst(&mut self) -> usize {
        each!(&mut self.0, q => q.pop_tx_burst())
    }

    /// The chains taken by the last [`Self::pop_tx_burst`].
    #[inline]
    pub fn burst(&self) -> &[Chain] {
        each!(&self.0, q => q.burst())
    }

    /// Gives the chains of the last burst back to the guest (length 0: we wrote nothing into
    /// them), publishes them and notifies the guest if it asked.
    #[inline]
    pub fn complete_burst(&mut self) {
        each!(&mut self.0, q => q.complete_burst())
    }

    /// Like [`Self::complete_burst`], but a split queue publishes only once `every` used entries
    /// wait (the used index's line then crosses cores once per `every` entries); the caller
    /// publishes the rest with [`Self::flush`] before it leaves the queue. A packed queue
    /// completes the burst as usual.
    #[inline]
    pub fn complete_burst_every(&mut self, every: u16) {
        match &mut self.0 {
            Layout::Split(q) => q.complete_burst_every(every),
            Layout::Packed(q) => q.complete_burst(),
        }
    }

    /// Publishes used entries written since the last flush and notifies the guest when it wants
    /// to hear about them (EVENT_IDX, NO_INTERRUPT, or the packed event suppression structure):
    /// at most one notification per flush, and a flush per burst.
    #[inline]
    pub fn flush(&mut self) {
        each!(&mut self.0, q => q.flush())
    }

    /// The call eventfd, for tests and for re-arming.
    pub fn call_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        each!(&self.0, q => q.call_fd())
    }

    /// Places frames taken from other queues' chains (each without its first `skip` bytes, its
    /// virtio-net header) into this queue's receive buffers, and tallies the outcome. Used
    /// entries are written but not published: call [`Self::flush`] after.
    #[inline]
    pub fn enqueue_burst<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = &'a Chain>,
        skip: usize,
        tally: &mut RxTally,
    ) {
        self.enqueue_sources(frames.map(move |c| Source::Chain(c, skip)), tally);
    }

    /// [`Self::enqueue_burst`] for packets from anywhere: chains of another queue or bytes of
    /// our own (a fast-path sender copying its frames into a peer's receive queue). Frames are
    /// taken in order; a frame that finds no buffers is counted in `tally.no_buffers` and not
    /// placed.
    #[inline]
    pub fn enqueue_sources<'a>(
        &mut self,
        frames: impl ExactSizeIterator<Item = Source<'a>>,
        tally: &mut RxTally,
    ) {
        each!(&mut self.0, q => q.enqueue_sources(frames, tally))
    }

    /// Places one packet (a virtio-net header is written in front of it) into the guest's receive
    /// buffers. Used entries are written but not published: call [`Self::flush`] after the burst.
    #[inline]
    pub fn enqueue(&mut self, src: Source<'_>) -> Result<(), RxError> {
        each!(&mut self.0, q => q.enqueue(src))
    }

    /// Places `frames` into this queue's receive buffers as records ([`crate::records`]), as
    /// many to a buffer as fit (split), or one to a buffer (packed). Frames are taken in order;
    /// an empty frame, or one longer than a record can carry, is counted in `tally.too_small`
    /// and skipped. Used entries are written but not published: call [`Self::flush`] after.
    pub fn enqueue_records<F: AsRef<[u8]>>(&mut self, frames: &[F], tally: &mut RxTally) {
        each!(&mut self.0, q => q.enqueue_records(frames, tally))
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
#[path = "virtq_tests.rs"]
mod tests;

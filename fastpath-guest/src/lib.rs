//! The fast-path guest driver: a virtio-net guest of the switch (a vhost-user frontend over its
//! own memory, like DPDK's virtio-user) that can also exchange frames with another fast-path
//! guest directly, through a channel the hooks grant, without the switch on the path.
//!
//! - [`frame`]: the test frames of `fp-pktgen` and `fp-sink`.
//! - [`owner`] / [`user`]: the two sides of a channel (who dedicates a queue, who reaches it
//!   through a protected view and acts as its device).
//! - [`client`]: the connection to the hooks.
//! - [`FastpathGuest`]: all of it together; frames to a peer with a channel take the channel,
//!   everything else the switch.
#![deny(unsafe_code)]

pub mod client;
pub mod doorbell;
pub mod error;
pub mod frame;
pub mod owner;
pub mod user;
pub mod visits;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eptp_views::{Backend, ViewList};
use hypervisor_hooks::proto::{doorbell as db, Mode, Trampoline};
use notify::Notifier;
use vhost_user::driver::Received;
use vhost_user::guest::{Guest, GuestConfig};
use vhost_user::shared::SharedBytes;
use vhost_user::virtq::{Chain, RxTally};

pub use error::{Error, Result};

use client::{Event, HooksClient, QueueSpec};
use doorbell::Doorbell;
use owner::Dedicated;
use user::PeerQueue;
pub use visits::VisitStats;
use visits::Visits;

/// How a fast-path guest is set up.
#[derive(Debug, Clone)]
pub struct FpConfig {
    /// The switch's vhost-user socket for this guest's port.
    pub socket: PathBuf,
    /// The port's name in the switch.
    pub port: String,
    pub mac: [u8; 6],
    /// The hooks socket; without it the guest uses the switch path only.
    pub hooks: Option<PathBuf>,
    /// Ring size of every queue, switch path and channels.
    pub queue_size: u16,
    pub buf_size: u32,
    pub huge: bool,
}

/// Bytes of each buffer unless configured: a 1518-byte frame and its header with room to spare,
/// and one cache line more than 2 KiB so that consecutive buffers do not start in the same
/// cache sets. With a 2 KiB stride every buffer's first line falls in 1/32 of the L2's sets (1/2
/// of L1's), so a queue's worth of headers evicts itself; measured with the zero-copy bench (64 B,
/// 8192 entries, Intel Xeon): 52.6/54.0 Mpps at 2048, 56.1/55.7 at 2112, runs alternated.
pub const DEFAULT_BUF_SIZE: u32 = 2048 + 64;

/// Frames a zero-copy receiver takes before it gives their buffers back (publishes the used
/// index) inside a visit: the sender's publishing granularity (`bench`'s sender publishes every
/// 256), so the used index's line crosses to the sender's core once per 256 frames, not once per
/// burst of 32.
const ZC_USED_EVERY: u16 = 256;

impl FpConfig {
    pub fn new(socket: PathBuf, port: &str, mac: [u8; 6]) -> FpConfig {
        FpConfig {
            socket,
            port: port.to_owned(),
            mac,
            hooks: None,
            queue_size: 256,
            buf_size: DEFAULT_BUF_SIZE,
            huge: false,
        }
    }
}

/// Frames a copy-mode sender places between two publications of the used index.
const PUBLISH_EVERY: usize = 256;

/// A frame received: in our own memory, in place in our receive buffer (copy mode: the peer
/// that wrote it could still write it, so it is read by copy), or in place in a peer's buffer
/// (zero-copy).
pub enum Rx<'a> {
    Bytes(&'a [u8]),
    Shared(SharedBytes<'a>),
    InPlace(&'a Chain, usize),
}

impl Rx<'_> {
    pub fn len(&self) -> usize {
        match self {
            Rx::Bytes(b) => b.len(),
            Rx::Shared(b) => b.len(),
            Rx::InPlace(c, skip) => c.len().saturating_sub(*skip),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's first `N` bytes (its headers), zero-padded past its end, and how many were
    /// real: one load where they lie in one buffer, the usual case.
    #[inline]
    pub fn head<const N: usize>(&self) -> ([u8; N], usize) {
        match self {
            Rx::Bytes(b) => {
                let mut a = [0u8; N];
                let n = b.len().min(N);
                a[..n].copy_from_slice(&b[..n]);
                (a, n)
            }
            Rx::Shared(b) => b.peek::<N>(0),
            Rx::InPlace(c, skip) => c.peek::<N>(*skip),
        }
    }

    /// Copies bytes `[offset, offset + out.len())` of the frame into `out`; returns how many.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> usize {
        match self {
            Rx::Bytes(b) => {
                let n = b.len().saturating_sub(offset).min(out.len());
                if n > 0 {
                    out[..n].copy_from_slice(&b[offset..offset + n]);
                }
                n
            }
            Rx::Shared(b) => b.read(offset, out),
            Rx::InPlace(c, skip) => c.read(skip + offset, out),
        }
    }
}

enum Role {
    /// Copy mode, sender: we are the device of the peer's dedicated receive queue.
    CopyUser(PeerQueue),
    /// Copy mode, receiver: our dedicated receive queue.
    CopyOwner(Box<Dedicated>),
    /// Zero-copy, sender: our dedicated transmit queue.
    ZcOwner(Box<Dedicated>),
    /// Zero-copy, receiver: we are the device of the peer's dedicated transmit queue.
    ZcUser(PeerQueue),
}

/// One live channel.
pub struct Channel {
    pub id: u64,
    pub peer: [u8; 6],
    pub mode: Mode,
    role: Role,
    doorbell: Arc<Doorbell>,
    /// Device-side chain refusals already reported in the doorbell.
    reported_errors: u64,
    /// The last visit to the peer's queue stopped with frames left.
    more: bool,
    /// Wakes the other side.
    wake_peer: Box<dyn Notifier>,
    /// What the other side uses to wake us.
    wait_here: Box<dyn Notifier>,
    /// What our visits to the peer's queue cost, and how many frames one should carry.
    visits: Visits,
    /// Chains we took from the peer's queue (zero-copy receiver), to compare with what the
    /// peer says it sent.
    consumed: u64,
    /// When frames were first seen waiting (TSC), until the visit that takes them.
    pending_since: Option<u64>,
    /// Frames per receive buffer the last copy-mode visit packed (1 until one did).
    per_buffer: usize,
}

impl Channel {
    /// Publishes in the doorbell the chains our device side refused since the last call.
    fn report_device_errors(&mut self) {
        if let Role::CopyUser(p) | Role::ZcUser(p) = &self.role {
            let total = p.counters.total_errors();
            self.doorbell.bump(
                db::DEVICE_ERRORS,
                total.saturating_sub(self.reported_errors),
            );
            self.reported_errors = total;
        }
    }

    /// Accounts a send on this channel in the doorbell and wakes the peer when there is work.
    fn sent(&mut self, n: usize, bytes: u64, dropped: u64) {
        self.report_device_errors();
        self.doorbell.bump(db::SENT_PACKETS, n as u64);
        self.doorbell.bump(db::SENT_BYTES, bytes);
        self.doorbell.bump(db::SENDER_DROPS, dropped);
        if n > 0 {
            self.wake_peer.notify();
        }
    }

    /// Learns from a copy-mode visit that placed `frames` in `buffers` receive buffers how many
    /// frames the peer's queue holds, for the gate and the visit size.
    fn packed(&mut self, frames: usize, buffers: u64) {
        if let (Role::CopyUser(pq), true) = (&self.role, buffers > 0 && frames > 0) {
            let per = u64::try_from(frames).unwrap_or(u64::MAX) / buffers;
            self.per_buffer = usize::try_from(per).unwrap_or(1).max(1);
            self.visits
                .set_capacity(usize::from(pq.size()) * self.per_buffer);
        }
    }

    /// Whether we send on this channel (else we receive).
    pub fn sends(&self) -> bool {
        matches!(self.role, Role::CopyUser(_) | Role::ZcOwner(_))
    }

    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// The cost of our visits to the peer's queue (none when we own the queue).
    pub fn visit_stats(&self) -> VisitStats {
        self.visits.stats
    }

    /// Frames a visit should carry to keep view switches under their share
    /// ([`visits::SWITCH_SHARE`]): what a copy-mode sender should offer per send.
    pub fn visit_target(&self) -> usize {
        self.visits.target()
    }

    /// The peer region's address range in this process, when we are its user.
    pub fn peer_region(&self) -> Option<(usize, usize)> {
        match &self.role {
            Role::CopyUser(p) | Role::ZcUser(p) => Some(p.region_range()),
            _ => None,
        }
    }
}

/// Counters of a fast-path guest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent_switch: u64,
    pub sent_channel: u64,
    /// Frames not sent: no room in the queue (switch or channel).
    pub send_full: u64,
    pub received_switch: u64,
    pub received_channel: u64,
    pub channels_opened: u64,
    pub channels_revoked: u64,
}

/// A fast-path guest.
pub struct FastpathGuest {
    pub net: Guest,
    pub mac: [u8; 6],
    hooks: Option<HooksClient>,
    views: ViewList,
    channels: Vec<Channel>,
    pub counts: Counts,
    scratch: Vec<u8>,
    refused: Vec<(u64, String)>,
    queue_size: u16,
    /// [`visits::MAX_WAIT`] in TSC ticks.
    max_wait_ticks: u64,
}

/// The trampoline of this process: the code of eptp-views that switches views.
pub fn trampoline() -> Trampoline {
    let (start, len) = eptp_views::trampoline_range();
    Trampoline {
        start: start as u64,
        len: len as u64,
    }
}

/// The line a switch's fast-path manifest needs to approve this binary's trampoline:
/// `sha256:<digest>  <program>`.
pub fn manifest_line() -> Result<String> {
    let d = hypervisor_hooks::verify::trampoline_digest(
        i32::try_from(std::process::id()).unwrap_or(0),
        trampoline(),
    )?;
    let prog = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    Ok(format!(
        "sha256:{}  {prog}",
        hypervisor_hooks::verify::hex(&d)
    ))
}

/// For the example binaries: `--print-trampoline` prints [`manifest_line`] and exits.
pub fn handle_print_trampoline() {
    if std::env::args().any(|a| a == "--print-trampoline") {
        match manifest_line() {
            Ok(l) => {
                println!("{l}");
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("cannot read our own trampoline: {e}");
                std::process::exit(1)
            }
        }
    }
}

impl FastpathGuest {
    /// Connects to the switch (and the hooks, when configured).
    pub fn connect(cfg: &FpConfig) -> Result<FastpathGuest> {
        let gcfg = GuestConfig {
            name: format!("fp-{}", cfg.port),
            mem_bytes: (usize::from(cfg.queue_size) * cfg.buf_size as usize * 2 + (1 << 20))
                .next_multiple_of(2 << 20),
            queue_size: cfg.queue_size,
            buf_size: cfg.buf_size,
            huge: cfg.huge,
            ..GuestConfig::default()
        };
        let net = Guest::connect(&cfg.socket, &gcfg)?;
        let hdr_len = net.rx.hdr_len();
        let hooks = match &cfg.hooks {
            Some(p) => Some(HooksClient::connect(
                p,
                &cfg.port,
                cfg.mac,
                trampoline(),
                QueueSpec {
                    size: cfg.queue_size,
                    buf_size: cfg.buf_size,
                    hdr_len,
                },
            )?),
            None => None,
        };
        Ok(FastpathGuest {
            net,
            mac: cfg.mac,
            hooks,
            views: ViewList::new(Backend::detect())?,
            channels: Vec::new(),
            counts: Counts::default(),
            scratch: Vec::with_capacity(16384),
            refused: Vec::new(),
            queue_size: cfg.queue_size,
            max_wait_ticks: u64::try_from(
                notify::tsc::hz() as u128 * visits::MAX_WAIT.as_nanos() / 1_000_000_000,
            )
            .unwrap_or(u64::MAX),
        })
    }

    /// The protected-view backend in use.
    pub fn backend(&self) -> Backend {
        self.views.backend()
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Asks for a channel to `peer` and waits (up to `timeout`) until it is open, refused or
    /// the wait runs out.
    pub fn open_channel(
        &mut self,
        peer: [u8; 6],
        mode: Mode,
        notify: &str,
        timeout: Duration,
    ) -> Result<u64> {
        let hooks = self
            .hooks
            .as_mut()
            .ok_or_else(|| Error::Channel("no hooks socket configured".into()))?;
        let request = hooks.open(peer, mode, notify)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self
                .channels
                .iter()
                .find(|c| c.peer == peer && c.mode == mode && c.sends())
                .map(|c| c.id)
            {
                return Ok(id);
            }
            if let Some(i) = self.refused.iter().position(|(r, _)| *r == request) {
                let (_, reason) = self.refused.swap_remove(i);
                return Err(Error::Channel(reason));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Channel(format!(
                    "no answer from the hooks within {timeout:?}"
                )));
            }
            let ev = self
                .hooks
                .as_ref()
                .and_then(|h| h.wait_event(left.min(Duration::from_millis(50))));
            if let Some(ev) = ev {
                self.handle(ev)?;
            }
        }
    }

    /// Applies what the hooks said since the last call. Cheap when nothing happened: call it
    /// between bursts.
    pub fn poll_events(&mut self) -> Result<()> {
        while let Some(ev) = self.hooks.as_ref().and_then(|h| h.try_event()) {
            self.handle(ev)?;
        }
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Granted {
                request: _,
                channel,
                peer,
                mode,
                notify,
                layout,
                grants,
                region,
                doorbell,
            } => {
                let doorbell = Doorbell::open(doorbell)?;
                let pq = PeerQueue::attach(&mut self.views, channel, region, &layout, &grants)?;
                let (role, wake, wait) = match mode {
                    Mode::Copy => (Role::CopyUser(pq), db::WORD_TO_OWNER, db::WORD_TO_USER),
                    Mode::ZeroCopy => (Role::ZcUser(pq), db::WORD_TO_OWNER, db::WORD_TO_USER),
                };
                self.add_channel(channel, peer, mode, role, doorbell, &notify, wake, wait)?;
            }
            Event::Opened {
                request: _,
                channel,
                peer,
                mode,
                notify,
                dedicated,
            } => {
                let doorbell = dedicated.doorbell.clone();
                let role = match mode {
                    Mode::Copy => Role::CopyOwner(dedicated),
                    Mode::ZeroCopy => Role::ZcOwner(dedicated),
                };
                self.add_channel(
                    channel,
                    peer,
                    mode,
                    role,
                    doorbell,
                    &notify,
                    db::WORD_TO_USER,
                    db::WORD_TO_OWNER,
                )?;
            }
            Event::Refused { request, reason } => self.refused.push((request, reason)),
            Event::Revoked { channel, reason } => {
                tracing::info!("channel {channel} revoked: {reason}; back to the switch path");
                self.drop_channel(channel);
            }
            Event::Disconnected => {
                let ids: Vec<u64> = self.channels.iter().map(|c| c.id).collect();
                for id in ids {
                    self.drop_channel(id);
                }
                self.hooks = None;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_channel(
        &mut self,
        id: u64,
        peer: [u8; 6],
        mode: Mode,
        role: Role,
        doorbell: Arc<Doorbell>,
        notify: &str,
        wake: usize,
        wait: usize,
    ) -> Result<()> {
        let strategy: notify::Strategy = notify.parse()?;
        let keep: Arc<dyn std::any::Any + Send + Sync> = doorbell.clone();
        #[allow(unsafe_code)]
        // SAFETY: both words are 64-byte slots of the doorbell page (offsets 64 and 128 of a
        // page-aligned 4 KiB mapping), which `keep` keeps mapped as long as the notifiers live;
        // both guests touch them only through the notify crate.
        let (wake_peer, wait_here) = unsafe {
            (
                notify::notifier_at(strategy, doorbell.word_ptr(wake), keep.clone())?,
                notify::notifier_at(strategy, doorbell.word_ptr(wait), keep)?,
            )
        };
        self.channels.push(Channel {
            id,
            peer,
            mode,
            role,
            doorbell,
            reported_errors: 0,
            more: false,
            wake_peer,
            wait_here,
            visits: Visits::new(self.queue_size),
            consumed: 0,
            pending_since: None,
            per_buffer: 1,
        });
        self.counts.channels_opened += 1;
        Ok(())
    }

    fn drop_channel(&mut self, id: u64) {
        if let Some(i) = self.channels.iter().position(|c| c.id == id) {
            let ch = self.channels.swap_remove(i);
            match ch.role {
                Role::CopyUser(pq) | Role::ZcUser(pq) => pq.detach(&mut self.views),
                Role::CopyOwner(_) | Role::ZcOwner(_) => {}
            }
            self.counts.channels_revoked += 1;
        }
    }

    /// The queue we dedicated for channel `id`, when we own it: for test tools that play a
    /// misbehaving owner (a real guest has no reason to touch it).
    pub fn dedicated_queue(&mut self, id: u64) -> Option<&mut vhost_user::driver::DriverQueue> {
        self.channels
            .iter_mut()
            .find(|c| c.id == id)
            .and_then(|c| match &mut c.role {
                Role::CopyOwner(d) | Role::ZcOwner(d) => Some(&mut d.queue),
                _ => None,
            })
    }

    /// Tells the peer of channel `id` there is work (what [`FastpathGuest::send`] does after
    /// each burst), for test tools that publish by hand.
    pub fn notify_peer(&self, id: u64) {
        if let Some(c) = self.channels.iter().find(|c| c.id == id) {
            c.wake_peer.notify();
        }
    }

    /// Error counters of the peer queue of channel `id`, when we are its user (its device).
    pub fn peer_queue_counters(&self, id: u64) -> Option<Arc<vhost_user::virtq::QueueCounters>> {
        self.channels
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| match &c.role {
                Role::CopyUser(p) | Role::ZcUser(p) => Some(p.counters.clone()),
                _ => None,
            })
    }

    /// Closes a channel of ours (tells the hooks; the peer is told to stop).
    pub fn close_channel(&mut self, id: u64) -> Result<()> {
        if let Some(h) = &self.hooks {
            h.close(id)?;
        }
        self.drop_channel(id);
        Ok(())
    }

    /// Sends frames to `dst`: through our sending channel to it when there is one, else
    /// through the switch. Returns how many were accepted.
    pub fn send<F: AsRef<[u8]>>(&mut self, dst: [u8; 6], frames: &[F]) -> Result<usize> {
        if self.zc_sender(dst).is_some() {
            let sizes = frames.iter().map(|f| f.as_ref().len());
            let mut it = frames.iter();
            return self.send_in_place(dst, sizes, |_, _, buf| {
                if let Some(f) = it.next() {
                    buf.copy_from_slice(f.as_ref());
                }
            });
        }
        let views = &self.views;
        if let Some(ch) = self
            .channels
            .iter_mut()
            .find(|c| c.peer == dst && c.sends())
        {
            if let Role::CopyUser(pq) = &ch.role {
                // Entering the peer's queue costs a view switch: enter when the peer has posted
                // enough buffers for a visit of the target size (what it says it received, from
                // the doorbell: a hint only, a lie costs the liar latency), or once frames have
                // waited long enough. Entering early finds a handful of buffers and pays the
                // whole switch for them.
                let in_flight = ch
                    .doorbell
                    .get(db::SENT_PACKETS)
                    .wrapping_sub(ch.doorbell.get(db::RECEIVED_PACKETS));
                // Frames go several to a buffer (as records): the peer's queue holds its size
                // times what the last visit packed per buffer.
                // Frames in flight are also held to two visits: room for one visit while the
                // peer drains the last, and no more, or an unpaced sender only builds a
                // standing queue (latency) in a queue that holds thirty times its size.
                let capacity = (u64::from(pq.size()) * ch.per_buffer as u64)
                    .min(2 * ch.visits.target() as u64);
                let free = capacity.saturating_sub(in_flight);
                let want = ch.visits.target().min(frames.len()) as u64;
                let now = notify::tsc::now();
                if free < want {
                    let since = *ch.pending_since.get_or_insert(now);
                    if now.wrapping_sub(since) < self.max_wait_ticks {
                        return Ok(0);
                    }
                }
                ch.pending_since = None;
            }
            let (taken, placed, bytes, buffers) = match &mut ch.role {
                Role::CopyUser(pq) => pq.visit(views, &mut ch.visits, |q| {
                    // Frames packed as records, many to a receive buffer
                    // (vhost_user::records): one descriptor, avail and used entry per buffer
                    // instead of per frame, and the frames of a visit in consecutive lines.
                    // Used entries published every PUBLISH_EVERY frames, not once per visit: a
                    // visit carries thousands, and the peer drains the first ones while we
                    // place the rest instead of waiting for the whole visit.
                    let mut t = RxTally::default();
                    for chunk in frames.chunks(PUBLISH_EVERY) {
                        let before = t;
                        q.enqueue_records(chunk, &mut t);
                        q.flush();
                        if t.no_buffers > before.no_buffers {
                            break;
                        }
                    }
                    // Taken: placed, or refused by the peer's buffers (dropped there and
                    // counted by the queue); once the peer ran out of buffers the rest are
                    // not taken.
                    let len = |x: u64| usize::try_from(x).unwrap_or(usize::MAX).min(frames.len());
                    let placed = len(t.packets);
                    let taken = len(t.packets + t.too_small + t.bad_buffers);
                    ((taken, placed, t.bytes, t.buffers), placed)
                })?,
                _ => (0, 0, 0, 0),
            };
            ch.packed(placed, buffers);
            ch.sent(placed, bytes, (frames.len() - placed) as u64);
            self.counts.sent_channel += placed as u64;
            self.counts.send_full += (frames.len() - taken) as u64;
            return Ok(taken);
        }
        self.net.tx.reclaim();
        let mut n = 0;
        for f in frames {
            if !self.net.tx.push_tx(f.as_ref()) {
                break;
            }
            n += 1;
        }
        self.net.tx.publish();
        self.counts.sent_switch += n as u64;
        self.counts.send_full += (frames.len() - n) as u64;
        Ok(n)
    }

    /// Our zero-copy sending channel to `dst`, if we have one.
    fn zc_sender(&mut self, dst: [u8; 6]) -> Option<&mut Channel> {
        self.channels
            .iter_mut()
            .find(|c| c.peer == dst && c.sends())
            .filter(|c| matches!(c.role, Role::ZcOwner(_)))
    }

    /// Sends frames of the lengths `sizes` gives to `dst`, each written in place by
    /// `fill(i, id, frame)` (`i`: its place in this call; `id`: the buffer's descriptor, so a
    /// sender that remembers what it wrote there can rewrite only what changes). On a
    /// zero-copy channel the frame is built in the transmit buffer the peer reads, so nothing
    /// is copied; on any other path it is built in scratch memory and sent as [`Self::send`]
    /// would. Returns how many were accepted (the first ones).
    ///
    /// On a zero-copy channel a descriptor has two buffers: a small one for frames of up to
    /// [`owner::ZC_SMALL_SLOT`] bytes with their virtio-net header (64-byte frames among them;
    /// the small ones lie back to back, so the peer reads consecutive lines), and a big one.
    /// A sender that remembers what it wrote by `id` remembers it per size class.
    pub fn send_in_place(
        &mut self,
        dst: [u8; 6],
        sizes: impl ExactSizeIterator<Item = usize>,
        fill: impl FnMut(usize, u16, &mut [u8]),
    ) -> Result<usize> {
        self.send_in_place_touching(dst, sizes, false, fill)
    }

    /// [`Self::send_in_place`] for a `fill` that, once a buffer holds its frame, rewrites only
    /// fields in the buffer's first line (a sequence number, a timestamp): the lines it leaves
    /// alone are not taken for writing ahead, and stay shared with the reader's core (see
    /// `vhost_user::driver::DriverQueue::push_tx_rewrite`).
    pub fn rewrite_in_place(
        &mut self,
        dst: [u8; 6],
        sizes: impl ExactSizeIterator<Item = usize>,
        fill: impl FnMut(usize, u16, &mut [u8]),
    ) -> Result<usize> {
        self.send_in_place_touching(dst, sizes, true, fill)
    }

    fn send_in_place_touching(
        &mut self,
        dst: [u8; 6],
        sizes: impl ExactSizeIterator<Item = usize>,
        head_only: bool,
        mut fill: impl FnMut(usize, u16, &mut [u8]),
    ) -> Result<usize> {
        let offered = sizes.len();
        let Some(ch) = self.zc_sender(dst) else {
            let frames: Vec<Vec<u8>> = sizes
                .enumerate()
                .map(|(i, len)| {
                    let mut f = vec![0u8; len];
                    fill(i, u16::MAX, &mut f);
                    f
                })
                .collect();
            return self.send(dst, &frames);
        };
        let Role::ZcOwner(d) = &mut ch.role else {
            return Ok(0);
        };
        d.queue.reclaim();
        // Only the first line is taken for writing ahead when `fill` rewrites only there (see
        // `DriverQueue::push_tx_rewrite`).
        let lines = if head_only { 1 } else { 2 };
        let (n, bytes) = d.queue.push_tx_many(sizes, lines, fill);
        d.queue.publish();
        let dropped = (offered - n) as u64;
        ch.sent(n, bytes, dropped);
        self.counts.sent_channel += n as u64;
        self.counts.send_full += dropped;
        Ok(n)
    }

    /// Receives up to `max` frames from the switch and from every receiving channel, calling
    /// `f` with each. Returns how many.
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(Rx<'_>)) -> Result<usize> {
        let mut total = self
            .net
            .rx
            .recv(max, &mut self.scratch, |b| f(Rx::Bytes(b)));
        self.counts.received_switch += total as u64;
        let views = &self.views;
        for ch in self.channels.iter_mut() {
            let left = max.saturating_sub(total);
            if left == 0 {
                break;
            }
            let (n, bytes) = match &mut ch.role {
                Role::CopyOwner(d) => {
                    let mut bytes = 0u64;
                    // Records, in place: the receiver copies out what it reads of each frame.
                    let n = d.queue.recv_records(left, &mut self.scratch, |r| {
                        let rx = match r {
                            Received::Shared(b) => Rx::Shared(b),
                            Received::Gathered(b) => Rx::Bytes(b),
                        };
                        bytes += rx.len() as u64;
                        f(rx)
                    });
                    (n, bytes)
                }
                Role::ZcUser(pq) => {
                    // The peer's ring is out of reach outside the view, and entering costs
                    // protection changes: enter when enough frames wait to pay for them (what
                    // the peer says it sent, from the doorbell: a hint only, a lie costs the
                    // liar latency), when some have waited long enough, or when the last visit
                    // left some.
                    let now = notify::tsc::now();
                    let sent = ch.doorbell.get(db::SENT_PACKETS);
                    let waiting = sent.wrapping_sub(ch.consumed);
                    let notified = ch.wait_here.wait(Some(Duration::ZERO)).is_notified();
                    if (notified || (waiting > 0 && waiting < 1 << 32))
                        && ch.pending_since.is_none()
                    {
                        ch.pending_since = Some(now);
                    }
                    let waited = ch
                        .pending_since
                        .is_some_and(|t| now.wrapping_sub(t) >= self.max_wait_ticks);
                    let enough = waiting >= ch.visits.target() as u64 && waiting < 1 << 32;
                    if !(ch.more || enough || waited) {
                        continue;
                    }
                    ch.pending_since = None;
                    let (n, bytes, more) = pq.visit(views, &mut ch.visits, |q| {
                        let hdr = q.features().hdr_len;
                        let (mut n, mut bytes) = (0, 0u64);
                        // Drain what is there, up to `left`, in one visit.
                        loop {
                            let k = q.pop_tx_burst();
                            for c in q.burst() {
                                bytes += c.len().saturating_sub(hdr) as u64;
                                f(Rx::InPlace(c, hdr));
                            }
                            // Used entries go back every ZC_USED_EVERY frames, and all of
                            // them before the visit ends.
                            q.complete_burst_every(ZC_USED_EVERY);
                            n += k;
                            if k < vhost_user::virtq::BURST || n >= left {
                                q.flush();
                                let more = k == vhost_user::virtq::BURST;
                                break ((n, bytes, more), n);
                            }
                        }
                    })?;
                    ch.consumed += n as u64
                        + pq.counters
                            .total_errors()
                            .saturating_sub(ch.reported_errors);
                    ch.more = more;
                    (n, bytes)
                }
                _ => (0, 0),
            };
            ch.doorbell.bump(db::RECEIVED_PACKETS, n as u64);
            ch.doorbell.bump(db::RECEIVED_BYTES, bytes);
            ch.report_device_errors();
            total += n;
            self.counts.received_channel += n as u64;
        }
        Ok(total)
    }

    /// Sleeps until a receiving channel is notified or `timeout` passes (for receivers that do
    /// not want to burn a core; the switch path is polled, so keep timeouts short when it
    /// matters).
    pub fn wait(&self, timeout: Duration) {
        match self.channels.iter().find(|c| !c.sends()) {
            Some(ch) => {
                ch.wait_here.wait(Some(timeout));
            }
            None => std::thread::sleep(timeout.min(Duration::from_micros(100))),
        }
    }
}
pub mod cli;

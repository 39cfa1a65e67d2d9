//! The vhost-user backend (device side): the state machine that answers a frontend (QEMU, DPDK
//! virtio-user, a fast-path guest) and hands running virtqueues to the data plane.
//!
//! The data plane sees a port's queues only through [`QueueSlot`]s: a poll thread takes a slot's
//! lock for one burst with `try_lock` (one uncontended atomic per burst, as DPDK's vhost takes
//! its per-queue access lock), and this state machine takes the same lock to install, stop or
//! replace a queue. Whatever the frontend does — new memory table, ring reset, disconnect — the
//! data plane never touches memory that is being unmapped, and the control side never waits
//! longer than one burst.
//!
//! Error fates: a framing error closes the connection ([`Error::must_close`]); a request the
//! device refuses (bad index, bad size, wrong fd count, unsupported) is answered with a failure
//! when the frontend asked for an ack, logged, counted, and the connection goes on.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::EventFd;

use crate::connection::{Connection, Message};
use crate::dirty_log::DirtyLog;
use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::message::{
    self, protocol_features as pf, ConfigMsg, Header, Request, VringAddr,
    VHOST_USER_F_PROTOCOL_FEATURES,
};
use crate::net::{self, NetConfig, DEVICE_FEATURES};
use crate::virtq::{
    DeviceQueue, PackedLayout, QueueCounters, QueueFeatures, QueueLayout, RingLayout, RingPos,
};

mod dispatch;
mod migration;
mod slot;

pub use migration::RarpSink;
pub use slot::QueueSlot;

/// Protocol features this backend offers.
pub const PROTOCOL_FEATURES: u64 = pf::MQ
    | pf::LOG_SHMFD
    | pf::RARP
    | pf::REPLY_ACK
    | pf::NET_MTU
    | pf::BACKEND_REQ
    | pf::CONFIG
    | pf::RESET_DEVICE
    | pf::CONFIGURE_MEM_SLOTS
    | pf::STATUS;

/// Most queue pairs a port may have.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// Static settings of a backend.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Queue pairs offered (`GET_QUEUE_NUM`), 1..=[`MAX_QUEUE_PAIRS`].
    pub queue_pairs: u16,
    /// MAC reported in the config space.
    pub mac: [u8; 6],
    /// MTU reported in the config space (the frontend may lower it with `NET_SET_MTU`).
    pub mtu: u16,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            queue_pairs: 1,
            mac: [0x02, 0, 0, 0, 0, 0x01],
            mtu: 9000,
        }
    }
}

/// Control-side state of one virtqueue.
#[derive(Default)]
struct Vring {
    num: Option<u16>,
    addr: Option<VringAddr>,
    /// Where the ring stopped or is to start (`SET_VRING_BASE` / `GET_VRING_BASE`): the avail
    /// index of a split ring; for a packed ring the avail position and wrap counter in bits
    /// 0-15 and the used ones in bits 16-31.
    base: u32,
    kick: Option<OwnedFd>,
    call: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// A kick fd (or the no-fd flag) arrived: the frontend started the ring.
    started: bool,
    /// What SET_VRING_ENABLE last said; `None` until it says anything.
    enabled: Option<bool>,
    counters: Arc<QueueCounters>,
    /// Why the last start attempt failed, for `show`.
    error: Option<String>,
}

/// What `vswitchctl show` reports about a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    pub connected: bool,
    pub features: u64,
    pub protocol_features: u64,
    pub status: u8,
    pub mtu: u16,
    pub queues: Vec<QueueInfo>,
    pub memory_regions: usize,
}

#[derive(Debug, Clone, Default)]
pub struct QueueInfo {
    pub index: u16,
    pub size: u16,
    pub started: bool,
    pub enabled: bool,
    pub running: bool,
    /// The queue's writes into guest memory are logged (a migration is under way).
    pub logging: bool,
    /// ... and so are its used-ring writes (`VHOST_VRING_F_LOG`).
    pub log_used: bool,
    pub error: Option<String>,
    /// The ring layout the negotiated features give the queue.
    pub layout: RingLayout,
}

/// Message-level counters of a connection (requests served, refused, by class).
#[derive(Debug, Default)]
pub struct BackendCounters {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub unknown: AtomicU64,
}

/// The device state machine for one vhost-user connection.
pub struct Backend {
    cfg: BackendConfig,
    owner: bool,
    features: u64,
    protocol_features: u64,
    /// SET_PROTOCOL_FEATURES has been received on this connection.
    protocol_set: bool,
    status: u8,
    mem: Option<Arc<GuestMemory>>,
    vrings: Vec<Vring>,
    slots: Arc<[QueueSlot]>,
    net_config: NetConfig,
    backend_req: Option<UnixStream>,
    info: Arc<Mutex<DeviceInfo>>,
    counters: Arc<BackendCounters>,
    /// The dirty log of a migration (`SET_LOG_BASE`); queues log into it while LOG_ALL is
    /// acked.
    log: Option<Arc<DirtyLog>>,
    /// `SET_LOG_FD`'s eventfd, kept open.
    log_fd: Option<OwnedFd>,
    /// Where `SEND_RARP` goes.
    rarp: Option<RarpSink>,
}

impl Backend {
    /// A backend for a port. `slots` (from [`Backend::make_slots`]) outlive connections: a port
    /// keeps its slots, and each new connection gets a new `Backend` over them.
    pub fn new(cfg: BackendConfig, slots: Arc<[QueueSlot]>) -> Backend {
        let counters = (0..slots.len()).map(|_| Arc::default()).collect();
        Backend::with_counters(cfg, slots, counters, Arc::default())
    }

    /// Like [`Backend::new`], with counters the caller keeps across connections: queue error
    /// counters (one per slot; missing ones are created) and message counters.
    pub fn with_counters(
        cfg: BackendConfig,
        slots: Arc<[QueueSlot]>,
        counters: Vec<Arc<QueueCounters>>,
        messages: Arc<BackendCounters>,
    ) -> Backend {
        let nq = slots.len();
        let net_config = NetConfig {
            mac: cfg.mac,
            status: net::NET_S_LINK_UP,
            max_virtqueue_pairs: cfg.queue_pairs,
            mtu: cfg.mtu,
        };
        Backend {
            cfg,
            owner: false,
            features: 0,
            protocol_features: 0,
            protocol_set: false,
            status: 0,
            mem: None,
            vrings: (0..nq)
                .map(|i| Vring {
                    counters: counters.get(i).cloned().unwrap_or_default(),
                    ..Vring::default()
                })
                .collect(),
            slots,
            net_config,
            backend_req: None,
            info: Arc::new(Mutex::new(DeviceInfo::default())),
            counters: messages,
            log: None,
            log_fd: None,
            rarp: None,
        }
    }

    /// Queue slots for a port with `queue_pairs` pairs (RX queue 2k, TX queue 2k+1).
    pub fn make_slots(queue_pairs: u16) -> Arc<[QueueSlot]> {
        (0..2 * usize::from(queue_pairs))
            .map(|_| QueueSlot::default())
            .collect()
    }

    /// Shared view of the device state for the control plane.
    pub fn info(&self) -> Arc<Mutex<DeviceInfo>> {
        self.info.clone()
    }

    pub fn counters(&self) -> Arc<BackendCounters> {
        self.counters.clone()
    }

    /// Error counters of queue `i`, which live as long as the backend.
    pub fn queue_counters(&self, i: usize) -> Option<Arc<QueueCounters>> {
        self.vrings.get(i).map(|v| v.counters.clone())
    }

    /// The guest memory currently mapped (for the fast-path hooks).
    pub fn memory(&self) -> Option<Arc<GuestMemory>> {
        self.mem.clone()
    }

    pub fn features(&self) -> u64 {
        self.features
    }

    /// Serves one connection until the frontend goes away or breaks the protocol. Always
    /// leaves every queue stopped and the memory unmapped when it returns.
    pub fn serve(&mut self, conn: &mut Connection) -> Result<()> {
        self.set_connected(true);
        let res = loop {
            let msg = match conn.recv() {
                Ok(m) => m,
                Err(e) => break Err(e),
            };
            if let Err(e) = self.handle_message(conn, msg) {
                if e.must_close() {
                    break Err(e);
                }
            }
        };
        self.reset();
        self.set_connected(false);
        match res {
            Err(Error::Disconnected) => Ok(()),
            other => other,
        }
    }

    fn set_connected(&self, c: bool) {
        let mut i = self.info.lock().unwrap_or_else(|p| p.into_inner());
        if c {
            *i = DeviceInfo::default();
        }
        i.connected = c;
    }

    /// Handles one message and sends its reply.
    pub fn handle_message(&mut self, conn: &mut Connection, msg: Message) -> Result<()> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let hdr = msg.header;
        if hdr.is_reply() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Invalid("frontend sent a reply as a request"));
        }
        let req = match Request::try_from(hdr.request) {
            Ok(r) => r,
            Err(e) => {
                self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}: refused");
                ack(
                    conn,
                    &hdr,
                    self.protocol_features & pf::REPLY_ACK != 0,
                    false,
                )?;
                return Err(e);
            }
        };
        // Whether to ack is decided by the protocol features in force when the request arrived
        // (a reset inside the request must not swallow its own ack).
        let acks = self.protocol_features & pf::REPLY_ACK != 0;
        tracing::debug!(
            "{} ({} bytes, {} fds)",
            req.name(),
            msg.body.len(),
            msg.fds.len()
        );
        let res = self.dispatch(req, msg);
        self.publish_info();
        match res {
            Ok(Reply::Ack) => ack(conn, &hdr, acks, true),
            Ok(Reply::Payload(body)) => conn.send(&hdr.reply_to(body.len()), &body, &[]),
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{} refused: {e}", req.name());
                if dispatch::is_get(req) {
                    // A GET must be answered with its payload; there is no failure payload to
                    // give, so the connection cannot go on in step.
                    return Err(Error::Io(std::io::Error::other(format!(
                        "{} failed: {e}",
                        req.name()
                    ))));
                }
                ack(conn, &hdr, acks, false)?;
                Err(e)
            }
        }
    }

    fn set_features(&mut self, f: u64) -> Result<()> {
        if f & !DEVICE_FEATURES != 0 {
            return Err(Error::Rejected(format!(
                "features {:#x} were not offered",
                f & !DEVICE_FEATURES
            )));
        }
        if f == self.features {
            return Ok(());
        }
        if (f ^ self.features) & net::F_LOG_ALL != 0 {
            tracing::info!(
                "dirty logging {} (VHOST_F_LOG_ALL)",
                if f & net::F_LOG_ALL != 0 { "on" } else { "off" }
            );
        }
        // Header length, ring behaviour and logging depend on the features: restart running
        // queues.
        let running: Vec<usize> = (0..self.vrings.len())
            .filter(|&i| self.stop_queue(i))
            .collect();
        self.features = f;
        for i in running {
            self.try_start(i);
        }
        Ok(())
    }

    /// VIRTIO_F_RING_PACKED is negotiated: every queue has the packed layout.
    fn packed(&self) -> bool {
        self.features & net::F_RING_PACKED != 0
    }

    fn queue_features(&self) -> QueueFeatures {
        QueueFeatures {
            event_idx: self.features & net::F_EVENT_IDX != 0,
            indirect: self.features & net::F_INDIRECT_DESC != 0,
            mrg_rxbuf: self.features & net::F_MRG_RXBUF != 0,
            hdr_len: net::header_len(self.features),
        }
    }

    /// Swaps in a new memory table: running queues are stopped (so nothing uses the old
    /// mapping), then restarted over the new one. The old mapping goes away with its last queue.
    fn replace_memory(&mut self, mem: GuestMemory) {
        let running: Vec<usize> = (0..self.vrings.len())
            .filter(|&i| self.stop_queue(i))
            .collect();
        self.mem = Some(Arc::new(mem));
        for i in running {
            self.try_start(i);
        }
    }

    /// Stops and restarts every running queue, so each picks up what changed (features, log).
    fn restart_running(&mut self) {
        let running: Vec<usize> = (0..self.vrings.len())
            .filter(|&i| self.stop_queue(i))
            .collect();
        for i in running {
            self.try_start(i);
        }
    }

    /// Takes queue `i` away from the data plane (waiting at most for its current burst) and
    /// records where it stopped. Returns whether it was running.
    fn stop_queue(&mut self, i: usize) -> bool {
        match self.slots[i].take() {
            Some(q) => {
                self.vrings[i].base = q.vring_base();
                tracing::debug!(
                    "queue {i} ({} ring) stopped at base {:#x}",
                    q.ring_layout().name(),
                    q.vring_base()
                );
                true
            }
            None => false,
        }
    }

    /// Starts queue `i` when everything it needs has arrived.
    fn try_start(&mut self, i: usize) {
        if self.slots[i].is_running() {
            return;
        }
        let pf_negotiated = self.features & VHOST_USER_F_PROTOCOL_FEATURES != 0;
        let qf = self.queue_features();
        let packed = self.packed();
        let in_order = self.features & net::F_IN_ORDER != 0;
        let log = match (self.vrings[i].addr, self.vrings[i].num) {
            (Some(a), Some(n)) => self.queue_log(&a, n),
            _ => Ok(None),
        };
        let v = &mut self.vrings[i];
        // A ring starts disabled when PROTOCOL_FEATURES is acked, enabled otherwise (QEMU 7.2
        // does not ack the bit, yet sends SET_VRING_ENABLE; DPDK's vhost behaves the same).
        let enabled = v.enabled.unwrap_or(!pf_negotiated);
        let (Some(mem), Some(num), Some(addr)) = (&self.mem, v.num, v.addr) else {
            return;
        };
        if !v.started || !enabled {
            return;
        }
        let log = match log {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("queue {i} cannot start: {e}");
                v.error = Some(e);
                return;
            }
        };
        let call = match v.call.as_ref().map(nonblocking_call_fd).transpose() {
            Ok(c) => c,
            Err(e) => {
                v.error = Some(format!("call fd: {e}"));
                return;
            }
        };
        let made = if packed {
            let layout = PackedLayout {
                size: num,
                desc_uva: addr.desc,
                driver_uva: addr.avail,
                device_uva: addr.used,
            };
            let (avail, used) = packed_base(v.base);
            DeviceQueue::new_packed(
                mem.clone(),
                layout,
                qf,
                in_order,
                avail,
                used,
                call,
                v.counters.clone(),
            )
        } else {
            let layout = QueueLayout {
                size: num,
                desc_uva: addr.desc,
                avail_uva: addr.avail,
                used_uva: addr.used,
            };
            match u16::try_from(v.base) {
                Ok(base) => {
                    DeviceQueue::new(mem.clone(), layout, qf, base, call, v.counters.clone())
                }
                Err(_) => Err("vring base above 65535 on a split ring"),
            }
        };
        match made {
            Ok(mut q) => {
                v.error = None;
                q.set_log(log);
                tracing::info!(
                    "queue {i} running: {} ring, size {num}, base {:#x}, event_idx {}, mrg_rxbuf {}, logging {}",
                    q.ring_layout().name(),
                    v.base,
                    qf.event_idx,
                    qf.mrg_rxbuf,
                    q.logging()
                );
                self.slots[i].install(q);
            }
            Err(e) => {
                tracing::warn!("queue {i} cannot start: {e}");
                v.error = Some(e.to_string());
            }
        }
    }

    /// Back to the state of a fresh connection: queues stopped, memory unmapped, fds closed,
    /// nothing negotiated.
    pub fn reset(&mut self) {
        self.reset_device();
        self.protocol_features = 0;
        self.protocol_set = false;
        self.owner = false;
        self.backend_req = None;
        self.publish_info();
    }

    /// A device reset (status 0, RESET_DEVICE): queues, memory and virtio features go; the
    /// vhost-user session itself (owner, protocol features, backend channel) stays.
    ///
    /// Where each ring stopped survives: QEMU (7.2) stops a device by writing status 0 *before*
    /// `GET_VRING_BASE`, and must still learn each ring's position (or the migration it is
    /// stopping for sends the destination an avail index of 0). A frontend sets the base again
    /// before it starts a ring, and a ring whose used index disagrees resumes from that index.
    fn reset_device(&mut self) {
        for i in 0..self.vrings.len() {
            self.stop_queue(i);
            let counters = self.vrings[i].counters.clone();
            let base = self.vrings[i].base;
            self.vrings[i] = Vring {
                counters,
                base,
                ..Vring::default()
            };
        }
        self.mem = None;
        self.log = None;
        self.log_fd = None;
        self.features = 0;
        self.status = 0;
        self.net_config.mtu = self.cfg.mtu;
    }

    fn get_config(&self, c: ConfigMsg) -> ConfigMsg {
        // Fields past the ones we know (RSS, speed/duplex, ...) read as zero, as for a device
        // without those features.
        const MAX_CONFIG: usize = 256;
        let bytes = self.net_config.to_bytes();
        let off = c.offset as usize;
        let size = c.size as usize;
        if off.checked_add(size).is_none_or(|e| e > MAX_CONFIG) {
            return ConfigMsg {
                offset: c.offset,
                size: 0,
                flags: c.flags,
                payload: vec![],
            };
        }
        let payload = (off..off + size)
            .map(|k| bytes.get(k).copied().unwrap_or(0))
            .collect();
        ConfigMsg { payload, ..c }
    }

    fn publish_info(&self) {
        let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        info.features = self.features;
        info.protocol_features = self.protocol_features;
        info.status = self.status;
        info.mtu = self.net_config.mtu;
        info.memory_regions = self.mem.as_ref().map_or(0, |m| m.regions().count());
        let logging = self.logging();
        info.queues = self
            .vrings
            .iter()
            .enumerate()
            .map(|(i, v)| QueueInfo {
                index: u16::try_from(i).unwrap_or(u16::MAX),
                size: v.num.unwrap_or(0),
                started: v.started,
                enabled: v.enabled.unwrap_or(false),
                running: self.slots[i].is_running(),
                logging: logging && self.slots[i].is_running(),
                log_used: logging
                    && v.addr
                        .is_some_and(|a| a.flags & message::VRING_ADDR_F_LOG != 0),
                error: v.error.clone(),
                layout: if self.packed() {
                    RingLayout::Packed
                } else {
                    RingLayout::Split
                },
            })
            .collect();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            s.take();
        }
    }
}

/// A packed ring's vring base: the avail position and wrap counter in bits 0-15, the used ones
/// in bits 16-31. Frontends that send only the low half (DPDK, older QEMU) resume with the used
/// position equal to the avail one, as a ring with nothing in flight has.
fn packed_base(base: u32) -> (RingPos, RingPos) {
    // Each half is 16 bits by construction.
    let low = u16::try_from(base & 0xffff).unwrap_or(0);
    let high = u16::try_from(base >> 16).unwrap_or(0);
    let avail = RingPos::decode(low);
    let used = if high == 0 {
        avail
    } else {
        RingPos::decode(high)
    };
    (avail, used)
}

/// REPLY_ACK: answer 0 (success) or 1 (failure) when the frontend asked for it and the
/// feature is negotiated.
fn ack(conn: &mut Connection, hdr: &Header, acks: bool, ok: bool) -> Result<()> {
    if hdr.need_reply() && acks {
        let v = message::u64_bytes(u64::from(!ok));
        conn.send(&hdr.reply_to(8), &v, &[])?;
    }
    Ok(())
}

/// Our handle on a frontend's call eventfd, made non-blocking: it is written from a poll thread,
/// which must never wait on a guest. A call fd that does not drain (an eventfd whose counter the
/// guest pushed near its limit, or a socket nobody reads) then costs a failed write, not a
/// frozen switch. (O_NONBLOCK is a property of the open file the frontend shares with us;
/// QEMU and DPDK use their call eventfds non-blocking themselves.)
fn nonblocking_call_fd(fd: &OwnedFd) -> std::io::Result<EventFd> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let dup = fd.try_clone()?;
    let flags = OFlag::from_bits_truncate(fcntl(&dup, FcntlArg::F_GETFL)?);
    fcntl(&dup, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    #[allow(unsafe_code)]
    // SAFETY: EventFd only writes and reads 8-byte counters on the fd; on a file that is not an
    // eventfd those calls fail or reach a file of the frontend's own choosing, and now never
    // block. The fd is our own duplicate.
    Ok(unsafe { EventFd::from_owned_fd(dup) })
}

enum Reply {
    Ack,
    Payload(Vec<u8>),
}

#[cfg(test)]
mod tests;

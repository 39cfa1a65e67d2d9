//! A virtio-net guest in a process: its own memory, one receive and one transmit queue per
//! pair, set up with a backend over vhost-user exactly as QEMU or DPDK's virtio-user would.
//!
//! The benchmark's built-in guests and the fast-path guests are this; tests and benchmarks of the
//! switch also attach one to an in-process [`Backend`] over a socketpair.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::backend::{Backend, BackendConfig, QueueSlot};
use crate::connection::Connection;
use crate::driver::{DriverMemory, DriverQueue};
use crate::error::Result;
use crate::frontend::Frontend;
use crate::message::VHOST_USER_F_PROTOCOL_FEATURES;
use crate::net::{self, F_EVENT_IDX, F_INDIRECT_DESC, F_IN_ORDER, F_MRG_RXBUF, F_VERSION_1};

/// The thread running an in-process backend; it ends when the guest disconnects.
pub type BackendThread = JoinHandle<Result<()>>;

/// How a guest is built.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    pub name: String,
    /// Memory for rings and buffers.
    pub mem_bytes: usize,
    /// Ring size of every queue.
    pub queue_size: u16,
    /// Bytes per buffer (header + frame must fit one buffer to transmit).
    pub buf_size: u32,
    /// Back the memory with hugepages (hugetlbfs memfd).
    pub huge: bool,
    /// Features asked for (masked by what the backend offers).
    pub features: u64,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            name: "guest".into(),
            mem_bytes: 8 << 20,
            queue_size: 256,
            buf_size: 2048,
            huge: false,
            features: F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | F_IN_ORDER,
        }
    }
}

/// A connected guest with one queue pair.
pub struct Guest {
    pub rx: DriverQueue,
    pub tx: DriverQueue,
    /// Negotiated features.
    pub features: u64,
    frontend: Frontend,
    // Declared last: the queues point into this memory, so it must outlive them.
    mem: DriverMemory,
}

impl Guest {
    fn build(cfg: &GuestConfig, mut frontend: Frontend) -> Result<Guest> {
        let mut mem = DriverMemory::new(&cfg.name, cfg.mem_bytes, cfg.huge)?;
        let hdr = net::header_len(cfg.features);
        let rx = DriverQueue::new(&mut mem, cfg.queue_size, cfg.buf_size, hdr)?;
        let tx = DriverQueue::new(&mut mem, cfg.queue_size, cfg.buf_size, hdr)?;
        rx.set_interrupts(false);
        tx.set_interrupts(false);
        let features = frontend.setup_net(
            cfg.features | VHOST_USER_F_PROTOCOL_FEATURES,
            &[(mem.region_desc(), mem.fd().as_fd())],
            &[(0, rx.layout(), None), (1, tx.layout(), None)],
        )?;
        let mut g = Guest {
            rx,
            tx,
            features,
            frontend,
            mem,
        };
        g.rx.refill_rx();
        Ok(g)
    }

    /// Connects to a backend listening on `path` (the switch's server-mode port).
    pub fn connect(path: &Path, cfg: &GuestConfig) -> Result<Guest> {
        Guest::build(cfg, Frontend::connect(path)?)
    }

    /// Connects to a fresh in-process backend on a socketpair; returns the guest, the backend's
    /// queue slots (what a switch's poll thread uses) and the backend's thread.
    pub fn with_backend(
        cfg: &GuestConfig,
        backend: BackendConfig,
    ) -> Result<(Guest, Arc<[QueueSlot]>, BackendThread)> {
        let (a, b) = UnixStream::pair()?;
        let slots = Backend::make_slots(backend.queue_pairs);
        let be_slots = slots.clone();
        let thread = std::thread::spawn(move || {
            Backend::new(backend, be_slots).serve(&mut Connection::new(b))
        });
        let g = Guest::build(cfg, Frontend::from_stream(a))?;
        Ok((g, slots, thread))
    }

    /// The vhost-user connection (tests use it to misbehave).
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    pub fn memory(&self) -> &DriverMemory {
        &self.mem
    }

    /// Whether EVENT_IDX was negotiated.
    pub fn event_idx(&self) -> bool {
        self.features & F_EVENT_IDX != 0
    }
}

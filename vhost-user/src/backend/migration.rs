//! The backend's part in live migration: the dirty log (`SET_LOG_BASE`, `SET_LOG_FD`,
//! `VHOST_F_LOG_ALL`, `VHOST_VRING_F_LOG` with `log_guest_addr`) and the announcement of a
//! guest that has moved (`SEND_RARP`).
//!
//! A frontend that gets any of this wrong is closed ([`Error::Protocol`]): a log that cannot
//! cover guest memory, or a used ring logged outside it, would silently corrupt the guest on
//! the destination, and QEMU waits for `SET_LOG_BASE`'s reply, so a refusal cannot be answered
//! in step anyway.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::Backend;
use crate::dirty_log::{DirtyLog, QueueLog, LOG_PAGE_SIZE};
use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::message::{parse_rarp_mac, protocol_features as pf, LogRegion, VringAddr};
use crate::net;
use crate::ring::used_ring_bytes;

/// What the backend calls on `SEND_RARP`: the switch announces the MAC from the port.
pub type RarpSink = Box<dyn FnMut([u8; 6]) + Send>;

/// Every failure of a logging request closes the connection.
fn fatal(e: Error) -> Error {
    match e {
        Error::Protocol(_) => e,
        other => Error::Protocol(format!("SET_LOG_BASE: {other}")),
    }
}

impl Backend {
    /// `SET_LOG_BASE`: maps the log and hands it to the running queues.
    pub(super) fn set_log_base(&mut self, body: &[u8], mut fds: Vec<OwnedFd>) -> Result<LogRegion> {
        if self.protocol_features & pf::LOG_SHMFD == 0 {
            return Err(Error::Protocol(
                "SET_LOG_BASE without the LOG_SHMFD protocol feature".into(),
            ));
        }
        if fds.len() != 1 {
            return Err(Error::Protocol(format!(
                "SET_LOG_BASE carries {} file descriptors, expected the log's one",
                fds.len()
            )));
        }
        let r = LogRegion::parse(body).map_err(fatal)?;
        let Some(mem) = self.mem.clone() else {
            return Err(Error::Protocol(
                "SET_LOG_BASE before SET_MEM_TABLE: logging switched on with no guest memory \
                 to log"
                    .into(),
            ));
        };
        let fd = fds.pop().ok_or(Error::Invalid("no fd"))?;
        let log = DirtyLog::map(fd, r.mmap_size, r.mmap_offset).map_err(fatal)?;
        log.check_covers(&mem)?;
        tracing::info!(
            "dirty log mapped: {} bytes at offset {} (covers {} MiB of guest memory)",
            r.mmap_size,
            r.mmap_offset,
            r.mmap_size.saturating_mul(8 * LOG_PAGE_SIZE) >> 20
        );
        self.log = Some(Arc::new(log));
        self.restart_running();
        Ok(r)
    }

    /// `SET_LOG_FD`: the frontend's eventfd for log notifications. We never need to signal it
    /// (the log is polled by the frontend), but keep it open as the spec expects.
    pub(super) fn set_log_fd(&mut self, mut fds: Vec<OwnedFd>) -> Result<()> {
        if fds.len() != 1 {
            return Err(Error::FdCount {
                request: "SET_LOG_FD",
                got: fds.len(),
                want: 1,
            });
        }
        self.log_fd = fds.pop();
        Ok(())
    }

    /// Checks `SET_VRING_ADDR`'s logging part: a used ring to log must lie in guest memory.
    pub(super) fn check_vring_log(&self, a: &VringAddr, num: Option<u16>) -> Result<()> {
        if a.flags & crate::message::VRING_ADDR_F_LOG == 0 {
            return Ok(());
        }
        let Some(mem) = &self.mem else {
            return Err(Error::Protocol(format!(
                "SET_VRING_ADDR for queue {} asks for used-ring logging (VHOST_VRING_F_LOG) \
                 before SET_MEM_TABLE: logging switched on with no guest memory to log",
                a.index
            )));
        };
        used_log_in_memory(mem, a.log, num.unwrap_or(1), self.packed())
            .map_err(|e| Error::Protocol(format!("SET_VRING_ADDR for queue {}: {e}", a.index)))
    }

    /// The logging a queue starts with: `None` unless LOG_ALL is acked and a log is mapped.
    pub(super) fn queue_log(
        &self,
        addr: &VringAddr,
        num: u16,
    ) -> std::result::Result<Option<QueueLog>, String> {
        let (Some(log), Some(mem)) = (&self.log, &self.mem) else {
            return Ok(None);
        };
        if self.features & net::F_LOG_ALL == 0 {
            return Ok(None);
        }
        let used = if addr.flags & crate::message::VRING_ADDR_F_LOG != 0 {
            used_log_in_memory(mem, addr.log, num, self.packed())?;
            Some(addr.log)
        } else {
            None
        };
        Ok(Some(QueueLog::new(log.clone(), used)))
    }

    /// A new memory table must still be covered by the log, if there is one.
    pub(super) fn check_log_covers(&self, mem: &GuestMemory) -> Result<()> {
        match &self.log {
            Some(l) => l
                .check_covers(mem)
                .map_err(|e| Error::Protocol(format!("new memory table while migrating: {e}"))),
            None => Ok(()),
        }
    }

    /// Whether queue writes are being logged now (for `show`).
    pub(super) fn logging(&self) -> bool {
        self.log.is_some() && self.features & net::F_LOG_ALL != 0
    }

    /// `SEND_RARP`: the guest has arrived here; tell the switch to announce its MAC.
    pub(super) fn send_rarp(&mut self, body: &[u8], nfds: usize) -> Result<()> {
        if self.protocol_features & pf::RARP == 0 {
            return Err(Error::Protocol(
                "SEND_RARP without the RARP protocol feature negotiated".into(),
            ));
        }
        if nfds != 0 {
            return Err(Error::FdCount {
                request: "SEND_RARP",
                got: nfds,
                want: 0,
            });
        }
        let mac = parse_rarp_mac(body)?;
        match self.rarp.as_mut() {
            Some(f) => f(mac),
            None => tracing::warn!("SEND_RARP: no switch attached to announce the guest"),
        }
        Ok(())
    }

    /// Sets what `SEND_RARP` calls.
    pub fn on_rarp(&mut self, sink: RarpSink) {
        self.rarp = Some(sink);
    }
}

/// The used ring of `num` entries (a packed ring: its device area) at guest-physical `gpa` lies
/// in one region of `mem`.
fn used_log_in_memory(
    mem: &GuestMemory,
    gpa: u64,
    num: u16,
    packed: bool,
) -> std::result::Result<(), String> {
    let len = if packed {
        crate::packed_ring::EVENT_AREA_BYTES as u64
    } else {
        used_ring_bytes(num) as u64
    };
    if mem.gpa_to_host(gpa, len).is_none() {
        return Err(format!(
            "log_guest_addr {gpa:#x} (a used ring of {len} bytes) is outside guest memory"
        ));
    }
    Ok(())
}

//! Network devices under the switch's uplink ports: what a poll thread needs of one (receive a
//! burst of frames as bytes, write frames into device buffers and send them as a burst), and
//! [`Pipe`], an in-memory pair of devices for tests and benchmarks that need no DPDK.
//!
//! The DPDK ethdev behind the `dpdk` feature ([`crate::dpdk`]) is the production device. Every
//! poll thread gets a [`DevIo`] of its own from [`NetDev::io`]: the per-thread state (the mbufs
//! of the current burst, the transmit queue it uses) lives there, so the poll loop never shares
//! mutable state with another thread through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};

use crate::eth::Mac;

/// The largest frame a device buffer holds: a 9000-byte IP MTU plus an Ethernet header and a
/// tag, rounded up.
pub const MAX_DEV_FRAME: usize = 9216;

/// Link state, as `vswitchctl show` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub up: bool,
    /// 0 when the device does not know (virtual devices often do not).
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Why [`DevIo::tx_buf`] gave no buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxBufError {
    /// The device's buffer pool is empty (transmit faster than it drains).
    NoBuffers,
    /// The frame does not fit one device buffer.
    TooBig,
}

/// What [`DevIo::tx_flush`] did with the frames written since the last flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: u64,
    pub sent_bytes: u64,
    /// Refused by the device (its transmit ring was full).
    pub full: u64,
    /// Not tried: the transmit queue, shared with another poll thread, stayed busy.
    pub busy: u64,
}

/// A device a switch port sends and receives through. Shared by the control plane and every
/// poll thread; each poll thread does its I/O through its own [`DevIo`].
pub trait NetDev: Send + Sync {
    /// What kind of device, for `vswitchctl show` (`dpdk`, `pipe`).
    fn driver(&self) -> String;
    /// The device's MAC address (the VTEP's source address on an underlay).
    fn mac(&self) -> Mac;
    /// The device's IP MTU: the largest frame it carries is this plus an Ethernet header.
    fn mtu(&self) -> usize;
    fn link(&self) -> LinkInfo;
    /// The device's own counters (for a DPDK port, its ethdev statistics).
    fn stats(&self) -> BTreeMap<String, u64>;
    /// The I/O handle of poll thread `pmd`, created on that thread (DPDK registers it).
    fn io(&self, pmd: usize) -> Result<Box<dyn DevIo>, String>;
}

/// One poll thread's I/O on a device. No call allocates, locks or makes a system call per
/// packet (a device may make one per burst: AF_PACKET's transmit does).
pub trait DevIo: Send {
    /// Receives a burst of at most [`vhost_user::virtq::BURST`] frames, after giving back the
    /// previous one. Returns how many frames [`DevIo::frame`] now holds, and how many were
    /// received but dropped here (too big to hand over in one piece).
    fn rx(&mut self) -> (usize, u64);
    /// Frame `i` of the current burst.
    fn frame(&self, i: usize) -> &[u8];
    /// Gives the current burst's buffers back to the device.
    fn rx_release(&mut self);
    /// A device buffer of exactly `len` bytes for the next frame to send; it is sent by the
    /// next [`DevIo::tx_flush`] with whatever the caller wrote into it (or earlier, when a
    /// burst's worth is waiting: the outcome is then part of the next flush's).
    fn tx_buf(&mut self, len: usize) -> Result<&mut [u8], TxBufError>;
    /// Sends the frames written since the last flush, as one burst.
    fn tx_flush(&mut self) -> TxOutcome;
}

/// One end of an in-memory link: what one end transmits, the other receives. Frames travel in
/// preallocated buffers through lock-free queues, so the poll path stays allocation-free over a
/// pipe too. The test side of a link holds an end of its own and uses [`Pipe::send`] and
/// [`Pipe::recv`].
pub struct Pipe {
    mac: Mac,
    mtu: usize,
    /// Frames arriving at this end.
    rx: Arc<ArrayQueue<Vec<u8>>>,
    /// Where this end's transmissions go (the other end's `rx`).
    peer: Arc<ArrayQueue<Vec<u8>>>,
    /// Empty buffers, shared by both ends.
    free: Arc<ArrayQueue<Vec<u8>>>,
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
}

impl Pipe {
    /// Two connected ends with MACs `a` and `b`, IP MTU `mtu`, each direction holding up to
    /// `depth` frames in flight.
    pub fn pair(a: Mac, b: Mac, mtu: usize, depth: usize) -> (Arc<Pipe>, Arc<Pipe>) {
        let ab = Arc::new(ArrayQueue::new(depth));
        let ba = Arc::new(ArrayQueue::new(depth));
        // Enough buffers for both directions full plus a burst in the hands of each thread.
        let nfree = 2 * depth + 8 * vhost_user::virtq::BURST;
        let free = Arc::new(ArrayQueue::new(nfree));
        for _ in 0..nfree {
            let _ = free.push(Vec::with_capacity(MAX_DEV_FRAME));
        }
        let end = |mac, rx: &Arc<ArrayQueue<Vec<u8>>>, peer: &Arc<ArrayQueue<Vec<u8>>>| {
            Arc::new(Pipe {
                mac,
                mtu,
                rx: rx.clone(),
                peer: peer.clone(),
                free: free.clone(),
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            })
        };
        (end(a, &ba, &ab), end(b, &ab, &ba))
    }

    /// Transmits one frame from this end (a test's wire). False when the link is full.
    pub fn send(&self, frame: &[u8]) -> bool {
        let mut b = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_DEV_FRAME));
        b.clear();
        b.extend_from_slice(frame);
        match self.peer.push(b) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(b) => {
                let _ = self.free.push(b);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The next frame that arrived at this end, if any.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let b = self.rx.pop()?;
        self.received.fetch_add(1, Ordering::Relaxed);
        let out = b.clone();
        let _ = self.free.push(b);
        Some(out)
    }

    /// Frames waiting at this end.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
}

impl NetDev for Pipe {
    fn driver(&self) -> String {
        "pipe".to_owned()
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn link(&self) -> LinkInfo {
        LinkInfo {
            up: true,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("sent".to_owned(), self.sent.load(Ordering::Relaxed)),
            ("received".to_owned(), self.received.load(Ordering::Relaxed)),
            ("dropped".to_owned(), self.dropped.load(Ordering::Relaxed)),
        ])
    }

    fn io(&self, _pmd: usize) -> Result<Box<dyn DevIo>, String> {
        Ok(Box::new(PipeIo {
            max_frame: self.mtu + crate::eth::HEADER_LEN,
            rx: self.rx.clone(),
            peer: self.peer.clone(),
            free: self.free.clone(),
            rx_bufs: Vec::with_capacity(vhost_user::virtq::BURST),
            tx_bufs: Vec::with_capacity(vhost_user::virtq::BURST),
            sent_early: TxOutcome::default(),
        }))
    }
}

/// A poll thread's side of a [`Pipe`] end.
struct PipeIo {
    max_frame: usize,
    rx: Arc<ArrayQueue<Vec<u8>>>,
    peer: Arc<ArrayQueue<Vec<u8>>>,
    free: Arc<ArrayQueue<Vec<u8>>>,
    rx_bufs: Vec<Vec<u8>>,
    tx_bufs: Vec<Vec<u8>>,
    /// Outcome of bursts sent early (a full burst waiting), reported by the next flush.
    sent_early: TxOutcome,
}

impl PipeIo {
    fn send_burst(&mut self) {
        for b in self.tx_bufs.drain(..) {
            let len = b.len() as u64;
            match self.peer.push(b) {
                Ok(()) => {
                    self.sent_early.sent += 1;
                    self.sent_early.sent_bytes += len;
                }
                Err(b) => {
                    self.sent_early.full += 1;
                    let _ = self.free.push(b);
                }
            }
        }
    }
}

impl DevIo for PipeIo {
    fn rx(&mut self) -> (usize, u64) {
        self.rx_release();
        while self.rx_bufs.len() < vhost_user::virtq::BURST {
            match self.rx.pop() {
                Some(b) => self.rx_bufs.push(b),
                None => break,
            }
        }
        (self.rx_bufs.len(), 0)
    }

    fn frame(&self, i: usize) -> &[u8] {
        self.rx_bufs.get(i).map_or(&[], |b| b.as_slice())
    }

    fn rx_release(&mut self) {
        for b in self.rx_bufs.drain(..) {
            let _ = self.free.push(b);
        }
    }

    fn tx_buf(&mut self, len: usize) -> Result<&mut [u8], TxBufError> {
        if len > self.max_frame {
            return Err(TxBufError::TooBig);
        }
        if self.tx_bufs.len() == vhost_user::virtq::BURST {
            self.send_burst();
        }
        let mut b = self.free.pop().ok_or(TxBufError::NoBuffers)?;
        b.clear();
        b.resize(len, 0);
        self.tx_bufs.push(b);
        Ok(self
            .tx_bufs
            .last_mut()
            .map_or(&mut [], |b| b.as_mut_slice()))
    }

    fn tx_flush(&mut self) -> TxOutcome {
        self.send_burst();
        std::mem::take(&mut self.sent_early)
    }
}

impl Drop for PipeIo {
    fn drop(&mut self) {
        self.rx_release();
        for b in self.tx_bufs.drain(..) {
            let _ = self.free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_carries_frames_both_ways() {
        let (a, b) = Pipe::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 1500, 64);
        let mut io = a.io(0).unwrap();
        assert!(b.send(&[1, 2, 3]));
        assert!(b.send(&[4; 100]));
        assert_eq!(io.rx(), (2, 0));
        assert_eq!(io.frame(0), &[1, 2, 3]);
        assert_eq!(io.frame(1).len(), 100);
        io.rx_release();
        io.tx_buf(5).unwrap().copy_from_slice(b"hello");
        let o = io.tx_flush();
        assert_eq!((o.sent, o.sent_bytes, o.full), (1, 5, 0));
        assert_eq!(b.recv().unwrap(), b"hello");
        assert!(b.recv().is_none());
    }

    #[test]
    fn pipe_full_link_counts() {
        let (a, b) = Pipe::pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 1500, 2);
        let mut io = a.io(0).unwrap();
        for _ in 0..3 {
            io.tx_buf(60).unwrap();
        }
        let o = io.tx_flush();
        assert_eq!((o.sent, o.full), (2, 1));
        assert_eq!(b.pending(), 2);
    }
}

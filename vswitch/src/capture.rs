//! Packet capture on a port (`vswitchctl capture`): the hook the poll threads call and the
//! bounded buffer between them and the control thread that streams it out.
//!
//! Every port owns a [`Tap`]. While no capture is attached, the only cost on the data path is
//! [`Tap::wants`]: one relaxed load and a predictable branch per burst and port, never per
//! packet. While one is attached, a poll thread copies the burst's frames, already as pcap
//! records, into the tap's buffer under a `try_lock`; the control thread swaps the buffer for
//! an empty one of the same capacity (O(1) under the lock) and writes the full one out. A full
//! buffer, or a lock still held after a short spin, costs the capture its frames (counted as
//! capture drops), never the forwarding: the poll thread moves on.
//!
//! Directions follow the port counters: `rx` is what the switch received from the port (the
//! guest's transmit), `tx` what it sends to the port (the guest's receive), captured as the
//! switch offers them, before the guest's ring may still refuse some (those are `tx_*` drops).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::pcap::{RecordHeader, RECORD_HEADER_LEN};

/// Bit of [`Tap::wants`]: frames the switch received from the port.
pub const RX: u8 = 1;
/// Bit of [`Tap::wants`]: frames the switch sends to the port.
pub const TX: u8 = 2;
/// Captured bytes per frame at most: every frame the switch carries (9000-byte MTU) fits.
pub const SNAPLEN: u32 = 65_535;
/// Buffer of one capture: about 50 000 minimum-size frames, 40 ms of a 10GbE port at line rate,
/// far more than the control thread's drain interval.
pub const BUFFER_BYTES: usize = 4 << 20;
/// How many times a poll thread retries the buffer lock (held by another poll thread for one
/// burst, or by the control thread for a swap) before dropping the burst from the capture.
const LOCK_SPINS: u32 = 1024;

/// Which frames of a port a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Rx,
    Tx,
    #[default]
    Both,
}

impl Direction {
    /// The [`RX`]/[`TX`] bits.
    pub fn bits(self) -> u8 {
        match self {
            Direction::Rx => RX,
            Direction::Tx => TX,
            Direction::Both => RX | TX,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
            Direction::Both => "both",
        })
    }
}

/// A capture could not be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("port `{0}` is already being captured; stop that capture first")]
    Busy(String),
}

#[derive(Default)]
struct Buffer {
    /// pcap records, each a [`RecordHeader`] and its bytes; capacity fixed while attached.
    bytes: Vec<u8>,
    attached: bool,
}

/// A port's capture hook.
#[derive(Default)]
pub struct Tap {
    /// [`RX`] | [`TX`] bits of the attached capture; 0: none (all the data path reads then).
    dirs: AtomicU8,
    buffer: Mutex<Buffer>,
    /// Frames of the attached capture not captured: buffer full, or its lock busy.
    dropped: AtomicU64,
    /// Frames written into the buffer.
    captured: AtomicU64,
    /// Set when the port is deleted: an attached capture ends.
    closed: std::sync::atomic::AtomicBool,
}

impl Tap {
    /// Whether a capture of direction `dir` ([`RX`] or [`TX`]) is attached: the data path's
    /// only question while none is.
    #[inline(always)]
    pub fn wants(&self, dir: u8) -> bool {
        self.dirs.load(Ordering::Relaxed) & dir != 0
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a capture of `dir` with a buffer of `capacity` bytes (allocated here, on the
    /// control thread). One capture per port at a time.
    pub fn attach(
        self: &Arc<Self>,
        port: &str,
        dir: Direction,
        capacity: usize,
    ) -> Result<CaptureSession, CaptureError> {
        let mut b = self.buffer();
        if b.attached {
            return Err(CaptureError::Busy(port.to_owned()));
        }
        b.attached = true;
        b.bytes = Vec::with_capacity(capacity);
        self.dropped.store(0, Ordering::Relaxed);
        self.captured.store(0, Ordering::Relaxed);
        drop(b);
        self.dirs.store(dir.bits(), Ordering::Release);
        tracing::info!("capture on port {port} ({dir}) started");
        Ok(CaptureSession {
            tap: self.clone(),
            spare: Vec::with_capacity(capacity),
            port: port.to_owned(),
        })
    }

    /// Marks the tap's port deleted: an attached capture sees [`CaptureSession::port_closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// The writer for one burst, or `None` (the burst's frames then count as capture drops)
    /// when the buffer stays locked through a short spin.
    #[inline]
    pub fn writer(&self) -> Option<TapWriter<'_>> {
        for _ in 0..LOCK_SPINS {
            match self.buffer.try_lock() {
                Ok(g) => {
                    return Some(TapWriter {
                        tap: self,
                        buf: g,
                        ts: timestamp(),
                        written: 0,
                        dropped: 0,
                    })
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    return Some(TapWriter {
                        tap: self,
                        buf: p.into_inner(),
                        ts: timestamp(),
                        written: 0,
                        dropped: 0,
                    })
                }
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        None
    }

    /// Counts `n` frames the capture missed.
    pub fn drop_frames(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// The wall clock once per burst, as pcap's seconds and microseconds.
fn timestamp() -> (u32, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // pcap's classic header has 32-bit seconds (until 2106).
    (
        u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
        d.subsec_micros(),
    )
}

/// Writes one burst's frames into a tap's buffer; counts on drop.
pub struct TapWriter<'a> {
    tap: &'a Tap,
    buf: MutexGuard<'a, Buffer>,
    ts: (u32, u32),
    written: u64,
    dropped: u64,
}

impl TapWriter<'_> {
    /// Appends a frame of `len` bytes, its first `min(len, SNAPLEN)` bytes written by `fill`
    /// into the slice it is given. Counts it dropped when the buffer lacks room (it never
    /// grows: no allocation on the data path).
    #[inline]
    pub fn push(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        let snap = len.min(SNAPLEN as usize);
        let Buffer { bytes: b, attached } = &mut *self.buf;
        if !*attached || b.capacity() - b.len() < RECORD_HEADER_LEN + snap {
            self.dropped += 1;
            return;
        }
        // Both fit u32: snap <= SNAPLEN, and a frame longer than 4 GiB cannot exist.
        let h = RecordHeader {
            ts_sec: self.ts.0,
            ts_usec: self.ts.1,
            captured: u32::try_from(snap).unwrap_or(SNAPLEN),
            original: u32::try_from(len).unwrap_or(u32::MAX),
        };
        b.extend_from_slice(&h.to_bytes());
        let start = b.len();
        // Within capacity (checked above): no reallocation.
        b.resize(start + snap, 0);
        fill(&mut b[start..]);
        self.written += 1;
    }
}

impl std::ops::Drop for TapWriter<'_> {
    fn drop(&mut self) {
        if self.written > 0 {
            self.tap.captured.fetch_add(self.written, Ordering::Relaxed);
        }
        if self.dropped > 0 {
            self.tap.dropped.fetch_add(self.dropped, Ordering::Relaxed);
        }
    }
}

/// An attached capture, held by the control thread that streams it; detaches on drop.
pub struct CaptureSession {
    tap: Arc<Tap>,
    spare: Vec<u8>,
    port: String,
}

impl CaptureSession {
    /// Takes the records written since the last call (whole records, in order): swaps the
    /// buffer for the spare one, so the poll threads wait at most for a pointer swap.
    pub fn drain(&mut self) -> &[u8] {
        self.spare.clear();
        std::mem::swap(&mut self.tap.buffer().bytes, &mut self.spare);
        &self.spare
    }

    /// Frames captured and frames missed (buffer full or busy) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.tap.captured.load(Ordering::Relaxed),
            self.tap.dropped.load(Ordering::Relaxed),
        )
    }

    /// Whether the port has been deleted.
    pub fn port_closed(&self) -> bool {
        self.tap.closed.load(Ordering::Relaxed)
    }
}

impl std::ops::Drop for CaptureSession {
    fn drop(&mut self) {
        self.tap.dirs.store(0, Ordering::Release);
        let mut b = self.tap.buffer();
        b.attached = false;
        b.bytes = Vec::new();
        tracing::info!("capture on port {} stopped", self.port);
    }
}

/// The length of the first `n` whole records of `records` (all of them if fewer), and how many
/// that is: what a capture with a frame budget writes of a drained chunk.
pub fn first_records(records: &[u8], n: u64) -> (usize, u64) {
    let (mut at, mut k) = (0usize, 0u64);
    while k < n {
        let Some(h) = RecordHeader::from_bytes(&records[at..]) else {
            break;
        };
        at += RECORD_HEADER_LEN + h.captured as usize;
        k += 1;
    }
    (at.min(records.len()), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| n.wrapping_add(i.to_le_bytes()[0]))
            .collect()
    }

    fn write(tap: &Tap, frames: &[Vec<u8>]) {
        let mut w = tap.writer().expect("uncontended");
        for f in frames {
            w.push(f.len(), |out| out.copy_from_slice(&f[..out.len()]));
        }
    }

    #[test]
    fn idle_tap_wants_nothing() {
        let tap = Tap::default();
        assert!(!tap.wants(RX) && !tap.wants(TX));
    }

    #[test]
    fn captured_frames_come_out_as_pcap_records_in_order() {
        let tap = Arc::new(Tap::default());
        let mut s = tap.attach("a", Direction::Rx, 4096).unwrap();
        assert!(tap.wants(RX) && !tap.wants(TX));
        write(&tap, &[frame(1, 60), frame(2, 100)]);
        let out = s.drain().to_vec();
        let h1 = RecordHeader::from_bytes(&out).unwrap();
        assert_eq!((h1.captured, h1.original), (60, 60));
        assert_eq!(&out[16..76], &frame(1, 60)[..]);
        let h2 = RecordHeader::from_bytes(&out[76..]).unwrap();
        assert_eq!((h2.captured, h2.original), (100, 100));
        assert_eq!(&out[92..], &frame(2, 100)[..]);
        assert_eq!(s.counts(), (2, 0));
        assert!(
            s.drain().is_empty(),
            "drained records are not returned twice"
        );
        drop(s);
        assert!(!tap.wants(RX), "detached on drop");
    }

    #[test]
    fn test_capture_buffer_full_counts_drops_and_never_grows() {
        let tap = Arc::new(Tap::default());
        let mut s = tap.attach("a", Direction::Both, 200).unwrap();
        // 76 bytes a record: two fit in 200, the third does not.
        write(&tap, &[frame(1, 60), frame(2, 60), frame(3, 60)]);
        assert_eq!(s.counts(), (2, 1));
        assert_eq!(s.drain().len(), 152);
        // Drained: room again.
        write(&tap, &[frame(4, 60)]);
        assert_eq!(s.counts(), (3, 1));
        assert_eq!(s.drain().len(), 76);
    }

    #[test]
    fn test_capture_frame_longer_than_snaplen_is_cut() {
        let tap = Arc::new(Tap::default());
        let mut s = tap.attach("a", Direction::Tx, 1 << 18).unwrap();
        let mut w = tap.writer().unwrap();
        w.push(70_000, |out| out.fill(7));
        drop(w);
        let out = s.drain();
        let h = RecordHeader::from_bytes(out).unwrap();
        assert_eq!((h.captured, h.original), (SNAPLEN, 70_000));
        assert_eq!(out.len(), 16 + SNAPLEN as usize);
    }

    #[test]
    fn test_capture_attached_twice() {
        let tap = Arc::new(Tap::default());
        let first = tap.attach("a", Direction::Rx, 1024).unwrap();
        let err = tap.attach("a", Direction::Tx, 1024).err().unwrap();
        assert_eq!(err, CaptureError::Busy("a".into()));
        assert!(err.to_string().contains("already being captured"), "{err}");
        drop(first);
        tap.attach("a", Direction::Tx, 1024).unwrap();
    }

    #[test]
    fn test_capture_writer_after_detach_drops() {
        let tap = Arc::new(Tap::default());
        drop(tap.attach("a", Direction::Rx, 1024).unwrap());
        // A poll thread that saw `wants` just before the detach.
        write(&tap, &[frame(1, 60)]);
        assert_eq!(tap.captured.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn first_records_stops_at_the_budget() {
        let tap = Arc::new(Tap::default());
        let mut s = tap.attach("a", Direction::Rx, 4096).unwrap();
        write(&tap, &[frame(1, 60), frame(2, 61), frame(3, 62)]);
        let out = s.drain();
        assert_eq!(first_records(out, 2), (76 + 77, 2));
        assert_eq!(first_records(out, 10), (out.len(), 3));
        assert_eq!(first_records(&[], 1), (0, 0));
    }
}

//! `ring-limit` and `ring-limit-desc`: packets through a bare shared-memory SPSC ring
//! ([`crate::spsc`]) from a producer on the generator core to a consumer on the peer core. No
//! switching, no view, no notification: what is left is writing a packet on one core and reading
//! it on the other, the limit any inter-VM path on this machine runs into.
//!
//! - `ring-limit`: the frame is copied into the slot (what copy mode must do at least).
//! - `ring-limit-desc`: the frame stays in the producer's buffer pool, where only its per-packet
//!   fields are written; a 16-byte descriptor (offset, length, id) goes through the ring, and the
//!   consumer checks it against the pool and reads the header in place (zero-copy's own limit).
//!
//! A limit has to be the best transfer this machine allows, not one ring implementation, so each
//! frame size starts with a sweep of short probes over the batch (8..256), prefetching the next
//! batch (write-prefetch on the producer, read-prefetch on the consumer), the store kind
//! (non-temporal for whole frames; skip-unchanged for descriptors, whose lines then stay shared),
//! the slot stride and the ring's depth (1024 entries keep 1.5 KiB frames inside a core's L2,
//! 4096 hold the biggest batches); the measured window runs the best of them and the row names
//! it. Rings sit on 2 MiB hugepages when the machine has free ones, as the fast path's regions
//! do: a pool of big frames on 4 KiB pages spans more pages than the TLB holds, and the limit
//! then measured the page walks (zero-copy once came out 1.07x above it at 1518 B).
//!
//! The per-packet fields are stored into the slot after the copy, never into the source first:
//! a copy whose loads overlap stores still queued behind the slots' cache misses waits for all of
//! them, which serialised every cross-core miss and cost 330 cycles per packet on AMD Zen 4.
//!
//! The producer waits when the ring is full, so there is no loss by construction; a sequence check
//! on every packet proves it. One packet in [`STAMP_EVERY`] carries a timestamp: reading the
//! clock for every packet would cost about as much as moving it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use notify::tsc;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::pacing::Pacer;
use crate::packet::{self, Receiver};
use crate::pin::{self, Cores};
use crate::spsc::{self, Consumer, Producer};

use super::{Env, Measurement, Scenario, Trial};

/// Ring depths the sweep tries (entries, and pool buffers for descriptors): the deeper holds
/// two of the largest batches in flight; the shallower keeps a ring of 1.5 KiB frames (or a
/// pool of them) inside a core's L2 cache, where the deeper one spills.
pub const DEPTHS: [usize; 2] = [1024, 4096];
/// The batches the sweep tries.
pub const BATCHES: [usize; 8] = [8, 16, 32, 64, 128, 256, 512, 1024];
/// One packet in this many carries a timestamp.
pub const STAMP_EVERY: u64 = 64;
/// Seconds of each probe of the sweep.
const PROBE_SECS: f64 = 0.02;
/// Configurations probed again after the first pass, and how often.
const FINALISTS: usize = 4;
const FINAL_PROBES: usize = 3;
/// Bytes of a descriptor of `ring-limit-desc`.
const DESC: usize = 16;

/// What moves through the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The frame, copied into the slot.
    Frame,
    /// A descriptor of a frame in the producer's pool.
    Descriptor,
}

/// One way of moving packets through the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub batch: usize,
    /// Prefetch the next batch's slots (and, for descriptors, their buffers).
    pub prefetch: bool,
    /// Frames: non-temporal stores. Descriptors: skip a store whose bytes are already there.
    pub alt_store: bool,
    /// Slot stride in 64-byte lines beyond the minimum: 0 (packed) or 1 (a spare line, so the
    /// adjacent-line prefetcher never pulls a neighbour's slot; for descriptors, the pool's
    /// buffers get it too).
    pub pad: usize,
    /// Ring entries (a power of two; for descriptors, also the pool's buffers).
    pub slots: usize,
}

impl Config {
    /// Every configuration the sweep tries.
    pub fn all() -> Vec<Config> {
        let mut v = Vec::new();
        for batch in BATCHES {
            for prefetch in [false, true] {
                for alt_store in [false, true] {
                    for pad in [0, 1] {
                        // Two batches in flight at least, or the producer waits on every one.
                        for slots in DEPTHS.into_iter().filter(|&d| d >= 2 * batch) {
                            v.push(Config {
                                batch,
                                prefetch,
                                alt_store,
                                pad,
                                slots,
                            });
                        }
                    }
                }
            }
        }
        v
    }

    /// Slot stride for `kind` at frame size `size`.
    pub fn stride(&self, kind: Kind, size: usize) -> usize {
        let base = match kind {
            Kind::Frame => size.next_multiple_of(64),
            Kind::Descriptor if self.pad == 0 => return DESC,
            Kind::Descriptor => 64,
        };
        base + 64 * self.pad
    }

    /// How the row names it.
    pub fn describe(&self, kind: Kind, size: usize) -> String {
        let store = match (kind, self.alt_store) {
            (_, false) => "plain stores",
            (Kind::Frame, true) => "non-temporal stores",
            (Kind::Descriptor, true) => "unchanged bytes not rewritten",
        };
        let pool = match kind {
            Kind::Frame => String::new(),
            Kind::Descriptor => format!(
                ", {}-byte pool buffers",
                size.next_multiple_of(64) + 64 * self.pad
            ),
        };
        format!(
            "batch {}, {}prefetch, {store}, {} {}-byte slots{pool}",
            self.batch,
            if self.prefetch { "" } else { "no " },
            self.slots,
            self.stride(kind, size)
        )
    }
}

struct RingLimit {
    kind: Kind,
    cores: Cores,
    /// Hugepages for the rings while the scenario is open, as the fast path's regions get.
    _huge: crate::hugepages::Reservation,
}

/// 2 MiB hugepages one ring needs at most: 4096 slots of 1.6 KiB and a pool as big.
const RING_PAGES: u64 = 8;

/// The sweep's winner per (kind, frame size, cores), kept for later trials and later rounds of
/// the same process (each round opens the scenario again).
static BEST: Mutex<Option<HashMap<SweepKey, Config>>> = Mutex::new(None);

type SweepKey = (Kind, u32, Cores);

fn remembered(key: SweepKey) -> Option<Config> {
    let best = BEST.lock().unwrap_or_else(|e| e.into_inner());
    best.as_ref()?.get(&key).copied()
}

fn remember(key: SweepKey, c: Config) {
    let mut best = BEST.lock().unwrap_or_else(|e| e.into_inner());
    best.get_or_insert_with(HashMap::new).insert(key, c);
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    open_kind(env, Kind::Frame, "ring-limit")
}

pub fn open_desc(env: &Env) -> Result<Box<dyn Scenario>> {
    open_kind(env, Kind::Descriptor, "ring-limit-desc")
}

fn open_kind(env: &Env, kind: Kind, name: &str) -> Result<Box<dyn Scenario>> {
    env.cores.check().map_err(|e| e.unavailable(name))?;
    Ok(Box::new(RingLimit {
        kind,
        cores: env.cores,
        _huge: crate::hugepages::reserve(RING_PAGES),
    }))
}

impl Scenario for RingLimit {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        let key = (self.kind, trial.frame_size, self.cores);
        let cfg = match remembered(key) {
            Some(c) => c,
            None => {
                let c = sweep(self.kind, self.cores, trial.frame_size as usize)?;
                remember(key, c);
                c
            }
        };
        let size = trial.frame_size as usize;
        if !trial.warmup.is_zero() {
            let secs = trial.warmup.as_secs_f64();
            transfer(self.kind, cfg, self.cores, size, 0, secs, trial.rate_pps)?;
        }
        let secs = trial.duration.as_secs_f64();
        let mut m = transfer(self.kind, cfg, self.cores, size, 1, secs, trial.rate_pps)?;
        let pages = m.detail.take().unwrap_or_default();
        m.detail = Some(format!("{}, {pages}", cfg.describe(self.kind, size)));
        Ok(m)
    }
}

/// The configuration that moves the most packets: a short probe of each, then the best few
/// probed again, longer and repeatedly, and ranked by their median (one lucky probe on a noisy
/// machine must not pick the limit).
pub fn sweep(kind: Kind, cores: Cores, size: usize) -> Result<Config> {
    let mut ranked = Vec::new();
    for cfg in Config::all() {
        let m = transfer(kind, cfg, cores, size, 0, PROBE_SECS, None)?;
        ranked.push((m.pps(), cfg));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best: Option<(f64, Config)> = None;
    for &(_, cfg) in ranked.iter().take(FINALISTS) {
        let mut pps = Vec::with_capacity(FINAL_PROBES);
        for _ in 0..FINAL_PROBES {
            pps.push(transfer(kind, cfg, cores, size, 0, 2.0 * PROBE_SECS, None)?.pps());
        }
        pps.sort_by(f64::total_cmp);
        let median = pps[pps.len() / 2];
        if best.is_none_or(|(b, _)| median > b) {
            best = Some((median, cfg));
        }
    }
    best.map(|(_, c)| c)
        .ok_or_else(|| Error::measurement("ring-limit", "the sweep tried nothing"))
}

/// Sets `final_sent` when the producer ends, however it ends, so the consumer always stops.
struct Finish<'a> {
    final_sent: &'a AtomicU64,
    sent: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.final_sent.store(self.sent, Ordering::Release);
    }
}

struct Produced {
    sent: u64,
    start: u64,
    end: u64,
}

struct Consumed {
    rx: Receiver,
    latency: Latency,
    bad_descriptors: u64,
}

/// The bytes of one descriptor: pool offset, length, buffer id.
fn descriptor(off: usize, len: usize, id: usize) -> [u8; DESC] {
    let mut d = [0u8; DESC];
    d[..8].copy_from_slice(&(off as u64).to_le_bytes());
    d[8..12].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    d[12..].copy_from_slice(&u32::try_from(id).unwrap_or(u32::MAX).to_le_bytes());
    d
}

/// A descriptor's (offset, length), as the consumer reads it: untrusted bytes.
fn parse_descriptor(d: &[u8]) -> Option<(usize, usize)> {
    let off = u64::from_le_bytes(d.get(..8)?.try_into().ok()?);
    let len = u32::from_le_bytes(d.get(8..12)?.try_into().ok()?);
    Some((usize::try_from(off).ok()?, usize::try_from(len).ok()?))
}

/// A fresh ring for `kind` at frame size `size` with `cfg`'s stride and, for descriptors, its
/// pool; the pool's bytes per buffer with it.
pub(crate) fn ring(kind: Kind, cfg: Config, size: usize) -> Result<(Producer, Consumer, usize)> {
    // Pool buffers of descriptors get the spare line too: with 64-byte frames packed back to
    // back, the adjacent-line prefetcher of the consumer pulls the line the producer is writing.
    let buf = size.next_multiple_of(64)
        + if kind == Kind::Descriptor {
            64 * cfg.pad
        } else {
            0
        };
    let pool = if kind == Kind::Descriptor {
        cfg.slots * buf
    } else {
        0
    };
    let (prod, cons) = spsc::channel(cfg.slots, cfg.stride(kind, size), pool, true)
        .map_err(Error::io("creating the shared-memory ring"))?;
    Ok((prod, cons, buf))
}

/// The producer's loop: what it writes per packet depends on the kind.
pub(crate) struct Send<'a> {
    kind: Kind,
    cfg: Config,
    pkt: Vec<u8>,
    /// Pool bytes per buffer (descriptors).
    buf: usize,
    pub(crate) prod: &'a mut Producer,
}

impl<'a> Send<'a> {
    /// The producer of a run's frames of `size` bytes; for descriptors, the frames are written
    /// into the pool first.
    pub(crate) fn new(
        kind: Kind,
        cfg: Config,
        size: usize,
        run: u32,
        buf: usize,
        prod: &'a mut Producer,
    ) -> Send<'a> {
        let pkt = packet::template(packet::mac(2), packet::mac(1), size, run);
        if kind == Kind::Descriptor {
            for id in 0..cfg.slots {
                prod.pool_write(id * buf, &pkt);
            }
        }
        Send {
            kind,
            cfg,
            pkt,
            buf,
            prod,
        }
    }

    /// Writes packet `i` of the batch being produced.
    #[inline]
    pub(crate) fn packet(&mut self, i: usize, seq: u64, ts: u64) {
        let stamp = packet::stamp_words(seq, ts);
        match self.kind {
            Kind::Frame if self.cfg.alt_store => {
                // Streaming stores cannot be patched after the fact: stamp the source first.
                packet::stamp(&mut self.pkt, seq, ts);
                self.prod.write_stream(i, &self.pkt);
            }
            Kind::Frame => {
                self.prod.write(i, &self.pkt);
                self.prod.patch_words(i, packet::STAMP_AT, stamp);
            }
            Kind::Descriptor => {
                // In-order reuse: slot index and buffer id are the same (mod the depth).
                let id = crate::num::small(seq) & (self.cfg.slots - 1);
                let off = id * self.buf;
                self.prod.pool_write_words(off + packet::STAMP_AT, stamp);
                let d = descriptor(off, self.pkt.len(), id);
                if self.cfg.alt_store {
                    self.prod.write_if_changed(i, 0, &d);
                } else {
                    self.prod.patch(i, 0, &d);
                }
            }
        }
    }

    #[inline]
    fn prefetch(&self, i: usize, seq: u64) {
        // A descriptor slot that will not be rewritten must stay shared: taking it for writing
        // would make the consumer miss on it.
        if self.kind == Kind::Frame || !self.cfg.alt_store {
            self.prod.prefetch(i);
        }
        if self.kind == Kind::Descriptor {
            let id = crate::num::small(seq) & (self.cfg.slots - 1);
            self.prod.pool_prefetch(id * self.buf);
        }
    }
}

/// Reads packet `i` of the consumer's batch; `false` for a descriptor outside the pool.
#[inline]
pub(crate) fn take(
    kind: Kind,
    cons: &Consumer,
    i: usize,
    rx: &mut Receiver,
    lat: &mut Latency,
) -> bool {
    let mut accept = |b: &[u8]| {
        if let Some(st) = rx.accept(b) {
            if st.tsc != 0 {
                lat.record(st.tsc, tsc::now());
            }
        }
    };
    match kind {
        Kind::Frame => {
            cons.peek(i, packet::HEADER_LEN, accept);
            true
        }
        Kind::Descriptor => {
            let Some((off, len)) = cons.peek(i, DESC, parse_descriptor) else {
                return false;
            };
            cons.peek_pool(off, len.min(packet::HEADER_LEN), &mut accept)
                .is_some()
        }
    }
}

/// One window of `secs` through a fresh ring.
pub fn transfer(
    kind: Kind,
    cfg: Config,
    cores: Cores,
    size: usize,
    run: u32,
    secs: f64,
    rate: Option<f64>,
) -> Result<Measurement> {
    let (mut prod, mut cons, buf) = ring(kind, cfg, size)?;
    let pages = if prod.huge() {
        "2 MiB pages"
    } else {
        "4 KiB pages (no free hugepage)"
    };
    let final_sent = AtomicU64::new(u64::MAX);
    let consumer_ready = AtomicBool::new(false);
    let hz = tsc::hz();
    let batch = cfg.batch;

    let (produced, consumed) = std::thread::scope(|s| {
        let consumer = s.spawn(|| -> Result<Consumed> {
            let pinned = pin::current(cores.peer);
            consumer_ready.store(true, Ordering::Release);
            let _pin = pinned?;
            let mut rx = Receiver::new(run);
            let mut latency = Latency::new();
            let mut bad_descriptors = 0;
            loop {
                let avail = cons.available(batch);
                if avail == 0 {
                    let f = final_sent.load(Ordering::Acquire);
                    if f != u64::MAX && cons.consumed() >= f {
                        break;
                    }
                    std::hint::spin_loop();
                    continue;
                }
                let n = avail.min(batch);
                if cfg.prefetch {
                    for i in n..avail.min(n + batch) {
                        cons.prefetch(i);
                        if kind == Kind::Descriptor {
                            let id =
                                crate::num::small(cons.consumed() + i as u64) & (cfg.slots - 1);
                            cons.pool_prefetch(id * buf);
                        }
                    }
                }
                for i in 0..n {
                    if !take(kind, &cons, i, &mut rx, &mut latency) {
                        bad_descriptors += 1;
                    }
                }
                cons.release(n);
            }
            Ok(Consumed {
                rx,
                latency,
                bad_descriptors,
            })
        });
        let producer = s.spawn(|| -> Result<Produced> {
            let mut fin = Finish {
                final_sent: &final_sent,
                sent: 0,
            };
            let _pin = pin::current(cores.generator)?;
            while !consumer_ready.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut tx = Send::new(kind, cfg, size, run, buf, &mut prod);
            let mut sent = 0u64;
            let start = tsc::now();
            let end = start + crate::num::cycles(secs, hz);
            let pacer = Pacer::new(start, rate, hz);
            loop {
                let t = tsc::now();
                if t >= end {
                    break;
                }
                let due = pacer.due(t, sent, batch);
                let free = if due == 0 { 0 } else { tx.prod.free(due) };
                let n = free.min(due);
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                if cfg.prefetch {
                    for i in n..free.min(n + batch) {
                        tx.prefetch(i, sent + i as u64);
                    }
                }
                for i in 0..n {
                    let seq = sent + i as u64;
                    let ts = if seq.is_multiple_of(STAMP_EVERY) {
                        tsc::now()
                    } else {
                        0
                    };
                    tx.packet(i, seq, ts);
                }
                tx.prod.publish(n);
                sent += n as u64;
            }
            let end = tsc::now();
            fin.sent = sent;
            Ok(Produced { sent, start, end })
        });
        let p = producer
            .join()
            .unwrap_or_else(|_| Err(Error::measurement("ring-limit", "the producer panicked")));
        let c = consumer
            .join()
            .unwrap_or_else(|_| Err(Error::measurement("ring-limit", "the consumer panicked")));
        (p, c)
    });
    let produced = produced?;
    let consumed = consumed?;
    let cycles = produced.end.saturating_sub(produced.start).max(1);
    Ok(Measurement {
        sent: produced.sent,
        received: consumed.rx.received,
        seconds: cycles as f64 / hz as f64,
        cycles_per_packet: cycles as f64 / consumed.rx.received.max(1) as f64,
        cycles_of: "consumer",
        latency: consumed.latency,
        errors: consumed.rx.out_of_order + consumed.bad_descriptors,
        detail: Some(pages.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        assert_eq!(parse_descriptor(&descriptor(4096, 64, 3)), Some((4096, 64)));
        assert_eq!(parse_descriptor(&[0u8; 7]), None);
    }

    #[test]
    fn the_sweep_covers_every_batch_and_both_strides() {
        let all = Config::all();
        // Every batch at the deep ring, the batches up to half of it at the shallow one.
        let shallow = BATCHES.iter().filter(|&&b| 2 * b <= DEPTHS[0]).count();
        assert_eq!(all.len(), (BATCHES.len() + shallow) * 8);
        assert!(all.iter().all(|c| c.slots >= 2 * c.batch));
        let c = all[0];
        assert_eq!(c.stride(Kind::Frame, 64), 64);
        assert_eq!(c.stride(Kind::Frame, 65), 128);
        assert_eq!(c.stride(Kind::Descriptor, 1518), DESC);
        let padded = Config { pad: 1, ..c };
        assert_eq!(padded.stride(Kind::Frame, 64), 128);
        assert_eq!(padded.stride(Kind::Descriptor, 64), 128);
    }

    #[test]
    fn both_kinds_move_packets_in_order_between_threads() {
        let _heavy = nfv_tests::serial::heavy();
        let cores = Cores {
            generator: 0,
            peer: 1,
        };
        if cores.check().is_err() {
            return; // one core: the two-thread run is not possible here
        }
        for kind in [Kind::Frame, Kind::Descriptor] {
            for cfg in [Config::all()[0], *Config::all().last().unwrap()] {
                let m = transfer(kind, cfg, cores, 64, 1, 0.02, None).unwrap();
                assert!(m.received > 1000, "{kind:?} {cfg:?}: {}", m.received);
                assert_eq!(m.received, m.sent);
                assert_eq!(m.errors, 0);
            }
        }
    }
}

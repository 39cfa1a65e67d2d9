//! `ring-limit`: packets through a bare shared-memory SPSC ring ([`crate::spsc`]) from a
//! producer on the generator core to a consumer on the peer core, in batches of 32. No switching,
//! no descriptors, no notification: what is left is writing a packet into shared memory on one
//! core and reading it on the other, the physical limit any inter-VM path on this machine runs
//! into.
//!
//! Slots are 64 bytes, or the frame size rounded up to whole cache lines for larger frames. The
//! producer waits when the ring is full, so there is no loss by construction; a sequence check
//! on every packet proves it. One packet in [`STAMP_EVERY`] carries a timestamp: reading the
//! clock for every packet would cost about as much as moving it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use notify::tsc;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::pacing::Pacer;
use crate::packet::{self, Receiver};
use crate::pin::{self, Cores};
use crate::spsc;

use super::{Env, Measurement, Scenario, Trial};

/// Ring entries (the virtio queue size the switch's guests use is 256; a bit more here).
pub const SLOTS: usize = 512;
/// Slots moved per index update.
pub const BATCH: usize = 32;
/// One packet in this many carries a timestamp.
pub const STAMP_EVERY: u64 = 64;

struct RingLimit {
    cores: Cores,
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    env.cores.check().map_err(|e| e.unavailable("ring-limit"))?;
    Ok(Box::new(RingLimit { cores: env.cores }))
}

impl Scenario for RingLimit {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        if !trial.warmup.is_zero() {
            window(self.cores, trial, 0, trial.warmup.as_secs_f64())?;
        }
        window(self.cores, trial, 1, trial.duration.as_secs_f64())
    }
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
}

fn window(cores: Cores, trial: &Trial, run: u32, secs: f64) -> Result<Measurement> {
    let size = trial.frame_size as usize;
    let slot_bytes = size.next_multiple_of(64);
    let (mut prod, mut cons) =
        spsc::channel(SLOTS, slot_bytes).map_err(Error::io("creating the shared-memory ring"))?;
    let final_sent = AtomicU64::new(u64::MAX);
    let consumer_ready = AtomicBool::new(false);
    let hz = tsc::hz();

    let (produced, consumed) = std::thread::scope(|s| {
        let consumer = s.spawn(|| -> Result<Consumed> {
            let pinned = pin::current(cores.peer);
            consumer_ready.store(true, Ordering::Release);
            let _pin = pinned?;
            let mut buf = vec![0u8; size];
            let mut rx = Receiver::new(run);
            let mut latency = Latency::new();
            loop {
                let n = cons.available(BATCH);
                if n == 0 {
                    let f = final_sent.load(Ordering::Acquire);
                    if f != u64::MAX && cons.consumed() >= f {
                        break;
                    }
                    std::hint::spin_loop();
                    continue;
                }
                let n = n.min(BATCH);
                for i in 0..n {
                    cons.read(i, &mut buf);
                    if let Some(st) = rx.accept(&buf) {
                        if st.tsc != 0 {
                            latency.record(st.tsc, tsc::now());
                        }
                    }
                }
                cons.release(n);
            }
            Ok(Consumed { rx, latency })
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
            let mut pkt = packet::template(packet::mac(2), packet::mac(1), size, run);
            let mut sent = 0u64;
            let start = tsc::now();
            let end = start + crate::num::cycles(secs, hz);
            let pacer = Pacer::new(start, trial.rate_pps, hz);
            loop {
                let t = tsc::now();
                if t >= end {
                    break;
                }
                let due = pacer.due(t, sent, BATCH);
                let n = if due == 0 { 0 } else { prod.free(due).min(due) };
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                for i in 0..n {
                    let seq = sent + i as u64;
                    let ts = if seq.is_multiple_of(STAMP_EVERY) {
                        tsc::now()
                    } else {
                        0
                    };
                    packet::stamp(&mut pkt, seq, ts);
                    prod.write(i, &pkt);
                }
                prod.publish(n);
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
        errors: consumed.rx.out_of_order,
    })
}

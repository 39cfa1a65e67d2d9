//! Where the fast path's cycles go, per burst and per packet, for each channel mode, on one
//! thread: the owner's dedicated queue and the user's view of it live in this one process (two
//! mappings of the same region, as the two guests have), and every component of a burst runs
//! in the order the fast path runs it, each timed on its own with the TSC.
//!
//! Zero-copy (the owner sends, the user receives in place):
//! `owner_tx` (reclaim, build frames in the transmit buffers, publish), `notify` (doorbell
//! counters and the futex notifier's signal), `notify_poll` (the receiver's doorbell read and
//! zero-timeout wait, its counters), `view_enter`, `desc_reads` (avail entries and chain walks
//! alone, [`DeviceQueue::walk_available`]), `pop_tx_burst` (the engine's call: the same reads
//! plus the in-order used-entry staging and prefetches), `rx_in_place` (the receiver reading
//! each frame's first 16 bytes where the sender wrote them), `used_writes` (`complete_burst`:
//! the used index published once per 32), `view_leave`.
//!
//! Copy (the user sends into the owner's receive buffers, the owner receives), frames packed as
//! records, 30 of 64 bytes to a 2 KiB buffer (`vhost_user::records`):
//! `view_enter`, `desc_reads` (writable chains, one per buffer), `copy` (header and records
//! into the buffers the next `enqueue_records` fills, with the engine's `copy_bytes`),
//! `enqueue` (`enqueue_records`, the engine's call: reads, copy and used-entry staging
//! together), `used_writes` (`flush`: the used index), `view_leave`, `notify`, `notify_poll`,
//! `owner_rx` (`recv_records`, reading each frame's first 16 bytes in place, and refill).
//!
//! `view_enter_leave` is the sum of both switches; `visit` times, with `Instant`, the fast
//! path's own visit (`PeerQueue::visit` with the closure `FastpathGuest` runs) uninstrumented.
//! `fastpath/tsc_pair` is the cost of one timed segment's two TSC reads, to weigh the small
//! figures against.
//!
//! Everything is cache-hot (one core, no peer); bursts of more than 32 frames take
//! `pop_tx_burst` / `complete_burst` 32 at a time, as `FastpathGuest::recv` does.

use std::hint::black_box;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eptp_views::{Backend, ViewList};
use fastpath_guest::doorbell::Doorbell;
use fastpath_guest::owner::Dedicated;
use fastpath_guest::user::PeerQueue;
use fastpath_guest::visits::Visits;
use hypervisor_hooks::proto::{doorbell as db, Mode};
use notify::{tsc, Notifier, Strategy};
use vhost_user::driver::Received;
use vhost_user::virtq::{RxTally, BURST};

const BURSTS: [usize; 3] = [32, 256, 2048];
/// One queue size for every burst, so the view switches cost the same for all of them.
const QUEUE: u16 = 2048;
const BUF: u32 = 2048;
const HDR: usize = 12;
const FRAME: usize = 64;
/// Records of FRAME bytes one BUF-byte buffer holds after its header.
const PER_BUFFER: usize = (BUF as usize - HDR) / (2 + FRAME);

/// TSC cycles of each component in one burst.
#[derive(Default, Clone, Copy)]
struct Parts {
    owner: u64,
    notify: u64,
    poll: u64,
    enter: u64,
    desc: u64,
    engine: u64,
    read: u64,
    copy: u64,
    used: u64,
    leave: u64,
}

/// Both sides of one channel in this process.
struct Rig {
    // Before `d`: the user's mapping of the region goes first.
    pq: PeerQueue,
    views: ViewList,
    visits: Visits,
    d: Dedicated,
    /// The sender's and the receiver's notifiers on the doorbell's word (as `add_channel`
    /// builds them).
    wake: Box<dyn Notifier>,
    wait: Box<dyn Notifier>,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    dsts: Vec<usize>,
}

impl Rig {
    fn new(mode: Mode) -> Rig {
        let d = Dedicated::new(&format!("bd-{mode:?}"), mode, QUEUE, BUF, HDR).unwrap();
        let mut views = ViewList::new(Backend::detect()).unwrap();
        let fd = BorrowedFd::try_clone_to_owned(&d.region_fd()).unwrap();
        let pq = PeerQueue::attach(&mut views, 1, fd, &d.layout, &d.grants).unwrap();
        let keep: Arc<dyn std::any::Any + Send + Sync> = d.doorbell.clone();
        let word = d.doorbell.word_ptr(db::WORD_TO_USER);
        let strategy: Strategy = "futex".parse().unwrap();
        // SAFETY: a 64-byte slot of the doorbell page (offset 128 of a page-aligned 4 KiB
        // mapping), kept mapped by `keep` while the notifiers live; touched only through notify.
        let (wake, wait) = unsafe {
            (
                notify::notifier_at(strategy, word, keep.clone()).unwrap(),
                notify::notifier_at(strategy, word, keep).unwrap(),
            )
        };
        eprintln!(
            "breakdown {mode:?}: backend {}, region {} KiB on {} pages, tsc {} Hz",
            views.backend(),
            d.layout.region_len / 1024,
            if d.huge() { "2 MiB" } else { "4 KiB" },
            tsc::hz()
        );
        Rig {
            pq,
            views,
            visits: Visits::new(QUEUE),
            d,
            wake,
            wait,
            frame: frame(),
            scratch: Vec::with_capacity(16384),
            dsts: vec![0; usize::from(QUEUE)],
        }
    }

    fn sent(&self, doorbell: &Doorbell, n: usize) -> u64 {
        let t = tsc::now();
        doorbell.bump(db::SENT_PACKETS, n as u64);
        doorbell.bump(db::SENT_BYTES, (n * FRAME) as u64);
        self.wake.notify();
        tsc::now() - t
    }

    fn polled(&self, doorbell: &Doorbell, n: usize) -> u64 {
        let t = tsc::now();
        black_box(doorbell.get(db::SENT_PACKETS));
        black_box(self.wait.wait(Some(Duration::ZERO)).is_notified());
        doorbell.bump(db::RECEIVED_PACKETS, n as u64);
        doorbell.bump(db::RECEIVED_BYTES, (n * FRAME) as u64);
        tsc::now() - t
    }

    /// The owner builds `n` frames in place and publishes them.
    fn owner_tx(&mut self, n: usize) -> u64 {
        let t = tsc::now();
        let q = &mut self.d.queue;
        q.reclaim();
        let f = &self.frame;
        for _ in 0..n {
            assert!(q.push_tx(f));
        }
        q.publish();
        tsc::now() - t
    }

    /// One zero-copy burst of `n` frames, every component timed.
    fn zerocopy(&mut self, n: usize) -> Parts {
        let mut p = Parts {
            owner: self.owner_tx(n),
            ..Parts::default()
        };
        let doorbell = self.d.doorbell.clone();
        p.notify = self.sent(&doorbell, n);
        p.poll = self.polled(&doorbell, n);
        let t0 = tsc::now();
        let (t1, t2, got) = self
            .pq
            .with(&self.views, |q| {
                let t1 = tsc::now();
                let a = tsc::now();
                let w = q.walk_available(n, false);
                p.desc = tsc::now() - a;
                assert_eq!(w, n);
                let mut got = 0;
                while got < n {
                    let a = tsc::now();
                    let k = q.pop_tx_burst();
                    let b = tsc::now();
                    for c in q.burst() {
                        black_box(c.peek::<16>(HDR));
                    }
                    let c = tsc::now();
                    q.complete_burst();
                    let d = tsc::now();
                    p.engine += b - a;
                    p.read += c - b;
                    p.used += d - c;
                    got += k;
                    if k < BURST {
                        break;
                    }
                }
                (t1, tsc::now(), got)
            })
            .unwrap();
        let t3 = tsc::now();
        assert_eq!(got, n);
        p.enter = t1 - t0;
        p.leave = t3 - t2;
        p
    }

    /// One copy-mode burst of `n` frames, every component timed. Frames go as records
    /// (vhost_user::records), [`PER_BUFFER`] to a receive buffer, as `FastpathGuest::send` packs
    /// them.
    fn copy(&mut self, n: usize) -> Parts {
        let mut p = Parts::default();
        let owner = &self.d.queue;
        let (frame, dsts) = (&self.frame, &mut self.dsts);
        let frames = vec![frame.as_slice(); n];
        let bufs = n.div_ceil(PER_BUFFER);
        let t0 = tsc::now();
        let (t1, t2) = self
            .pq
            .with(&self.views, |q| {
                let t1 = tsc::now();
                // Where the next buffers are (untimed), in this side's mapping.
                for (i, dst) in (0u16..).zip(dsts.iter_mut()).take(bufs) {
                    let id = owner.raw().avail_entry(q.last_avail().wrapping_add(i));
                    *dst = q
                        .memory()
                        .gpa_to_host(owner.buf_gpa(id), u64::from(BUF))
                        .unwrap() as usize;
                }
                let a = tsc::now();
                let w = q.walk_available(bufs, true);
                p.desc = tsc::now() - a;
                assert_eq!(w, bufs);
                let hdr = vhost_user::net::rx_header(1);
                let len = u16::try_from(FRAME).unwrap().to_le_bytes();
                let a = tsc::now();
                for (b, &dst) in dsts[..bufs].iter().enumerate() {
                    let dst = dst as *mut u8;
                    let k = PER_BUFFER.min(n - b * PER_BUFFER);
                    // SAFETY: `dst` was translated for BUF bytes inside the region, which this
                    // view grants read-write (buffers are in the used-ring range) and the queue
                    // keeps mapped; HDR + PER_BUFFER records fit in BUF; the sources are ours.
                    unsafe {
                        vhost_user::ring::copy_bytes(dst, hdr.as_ptr(), HDR);
                        for r in 0..k {
                            let at = dst.add(HDR + r * (2 + FRAME));
                            vhost_user::ring::copy_bytes(at, len.as_ptr(), 2);
                            vhost_user::ring::copy_bytes(at.add(2), frame.as_ptr(), FRAME);
                        }
                    }
                }
                p.copy = tsc::now() - a;
                let a = tsc::now();
                let mut t = RxTally::default();
                q.enqueue_records(&frames, &mut t);
                let b = tsc::now();
                q.flush();
                let c = tsc::now();
                assert_eq!((t.packets, t.buffers), (n as u64, bufs as u64));
                p.engine = b - a;
                p.used = c - b;
                (t1, tsc::now())
            })
            .unwrap();
        let t3 = tsc::now();
        p.enter = t1 - t0;
        p.leave = t3 - t2;
        let doorbell = self.d.doorbell.clone();
        p.notify = self.sent(&doorbell, n);
        p.poll = self.polled(&doorbell, n);
        let t = tsc::now();
        let got = self.d.queue.recv_records(n, &mut self.scratch, |r| {
            if let Received::Shared(b) = r {
                black_box(b.peek::<16>(0));
            }
        });
        p.owner = tsc::now() - t;
        assert_eq!(got, n);
        p
    }

    /// The fast path's own visit for one burst (what `FastpathGuest::recv` runs for a
    /// zero-copy receiver, `FastpathGuest::send` for a copy sender), timed with `Instant`.
    fn visit(&mut self, mode: Mode, n: usize) -> Duration {
        match mode {
            Mode::ZeroCopy => {
                self.owner_tx(n);
                let t = Instant::now();
                let got = self
                    .pq
                    .visit(&self.views, &mut self.visits, |q| {
                        let hdr = q.features().hdr_len;
                        let mut got = 0;
                        loop {
                            let k = q.pop_tx_burst();
                            for c in q.burst() {
                                black_box(c.peek::<16>(hdr));
                            }
                            q.complete_burst();
                            got += k;
                            if k < BURST || got >= n {
                                break (got, got);
                            }
                        }
                    })
                    .unwrap();
                let e = t.elapsed();
                assert_eq!(got, n);
                e
            }
            Mode::Copy => {
                let frames = vec![self.frame.as_slice(); n];
                let t = Instant::now();
                let sent = self
                    .pq
                    .visit(&self.views, &mut self.visits, |q| {
                        let mut t = RxTally::default();
                        q.enqueue_records(&frames, &mut t);
                        q.flush();
                        let k = usize::try_from(t.packets).unwrap();
                        (k, k)
                    })
                    .unwrap();
                let e = t.elapsed();
                assert_eq!(sent, n);
                let got = self.d.queue.recv_records(n, &mut self.scratch, |r| {
                    if let Received::Shared(b) = r {
                        black_box(b.peek::<16>(0));
                    }
                });
                assert_eq!(got, n);
                e
            }
        }
    }
}

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; FRAME];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn cycles_to_duration(cycles: u64) -> Duration {
    let ns = u128::from(cycles) * 1_000_000_000 / u128::from(tsc::hz().max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

type Pick = fn(&Parts) -> u64;

fn components(mode: Mode) -> Vec<(&'static str, Pick)> {
    let mut v: Vec<(&'static str, Pick)> = vec![
        ("view_enter", |p| p.enter),
        ("view_leave", |p| p.leave),
        ("view_enter_leave", |p| p.enter + p.leave),
        ("desc_reads", |p| p.desc),
    ];
    match mode {
        Mode::ZeroCopy => v.extend([
            ("pop_tx_burst", (|p: &Parts| p.engine) as Pick),
            ("rx_in_place", |p| p.read),
            ("owner_tx", |p| p.owner),
        ]),
        Mode::Copy => v.extend([
            ("copy", (|p: &Parts| p.copy) as Pick),
            ("enqueue", |p| p.engine),
            ("owner_rx", |p| p.owner),
        ]),
    }
    v.extend([
        ("used_writes", (|p: &Parts| p.used) as Pick),
        ("notify", |p| p.notify),
        ("notify_poll", |p| p.poll),
    ]);
    v
}

fn breakdown(c: &mut Criterion) {
    for (mode, name) in [(Mode::ZeroCopy, "zerocopy"), (Mode::Copy, "copy")] {
        let mut rig = Rig::new(mode);
        let run = |rig: &mut Rig, n| match mode {
            Mode::ZeroCopy => rig.zerocopy(n),
            Mode::Copy => rig.copy(n),
        };
        for (component, pick) in components(mode) {
            let mut group = c.benchmark_group(format!("fastpath/{name}/{component}"));
            for n in BURSTS {
                group.throughput(Throughput::Elements(n as u64));
                group.bench_function(n.to_string(), |b| {
                    b.iter_custom(|iters| {
                        let cycles: u64 = (0..iters).map(|_| pick(&run(&mut rig, n))).sum();
                        cycles_to_duration(cycles)
                    })
                });
            }
            group.finish();
        }
        let mut group = c.benchmark_group(format!("fastpath/{name}/visit"));
        for n in BURSTS {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(n.to_string(), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| rig.visit(mode, n)).sum())
            });
        }
        group.finish();
        rig.pq.detach(&mut rig.views);
    }
    c.bench_function("fastpath/tsc_pair", |b| {
        b.iter(|| {
            let a = tsc::now();
            black_box(tsc::now() - a)
        })
    });
}

criterion_group!(benches, breakdown);
criterion_main!(benches);

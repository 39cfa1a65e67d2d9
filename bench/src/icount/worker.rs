//! `bench icount-worker`: exactly N packets of one path, on one thread, for an instruction count.
//!
//! Under valgrind every thread of a process runs serialised, so a busy-polling peer thread would
//! only count its own spinning: each path here is driven from both ends by one thread, a sender
//! burst then a receiver burst, alternately, until N packets were received and checked. The
//! bursts go through the same code the timed scenarios run:
//!
//! - `switch`: guest A's transmit queue, the switch's forwarder (`Forwarder::poll`, what its
//!   poll thread calls per queue; the guests have in-process vhost-user backends, as in the
//!   switch's own benches), guest B's receive queue; 32 frames a burst.
//! - `fastpath-copy`, `fastpath-zerocopy`: two `FastpathGuest`s of this process with a channel
//!   granted by the hooks of an in-process switch (started as the scenarios start it), queues of
//!   [`FP_QUEUE`] entries, [`FP_BURST`] frames a send: a visit of the sender (copy) or of the
//!   receiver (zero-copy) carries them all, which keeps the count independent of the visit
//!   target the guests adapt from measured cycles.
//! - `ring-limit`, `ring-limit-desc`: the scenarios' ring producer and consumer with one fixed
//!   configuration ([`RING_CONFIG`]; the timed scenarios sweep for the fastest).
//!
//! Each path's loop is one `#[inline(never)]` function named `pump_*`, which `bench icount`
//! tells callgrind to count (and nothing else: setup and teardown are outside it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastpath_guest::{FastpathGuest, FpConfig};
use hypervisor_hooks::proto::Mode;
use notify::tsc;
use vhost_user::backend::BackendConfig;
use vhost_user::guest::{Guest, GuestConfig};
use vswitch::config::{PortMode, PortSpec};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::Port;

use crate::error::{Error, Result};
use crate::packet::{self, Receiver};
use crate::scenario::ring_limit::{self, Config as RingConfig, Kind, STAMP_EVERY};

use super::IcountPath;

/// Frames per transmit burst of the switch path (the scenario's and the switch's burst).
const SWITCH_TX_BURST: usize = 32;
/// Frames per receive call of the switch path (the scenario's).
const SWITCH_RX_BURST: usize = 64;
/// Entries of every fast-path queue.
pub const FP_QUEUE: u16 = 256;
/// Frames per fast-path send: the most a visit aims at with [`FP_QUEUE`] entries (3/4 of the
/// queue), so every visit carries all of them whatever the adaptive target is.
pub const FP_BURST: usize = FP_QUEUE as usize * 3 / 4;
/// The ring configuration counted: batch 32, plain stores, no prefetch, packed slots.
pub const RING_CONFIG: RingConfig = RingConfig {
    batch: 32,
    prefetch: false,
    alt_store: false,
    pad: 0,
    slots: 4096,
};
/// Run id of the counted frames.
const RUN: u32 = 1;
/// Rounds without a packet received before the worker gives up (a wedged path).
const STALL_ROUNDS: u64 = 1_000_000;

/// What a worker run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    pub sent: u64,
    pub received: u64,
    pub out_of_order: u64,
}

impl Pumped {
    fn check(self, path: IcountPath, packets: u64) -> Result<Pumped> {
        if self.received != packets || self.out_of_order != 0 {
            return Err(Error::measurement(
                path.name(),
                format!(
                    "pumped {} packets: sent {}, received {}, {} out of order",
                    packets, self.sent, self.received, self.out_of_order
                ),
            ));
        }
        Ok(self)
    }
}

fn stalled(path: IcountPath, p: Pumped) -> Error {
    Error::measurement(
        path.name(),
        format!(
            "no packet arrived in {STALL_ROUNDS} rounds (sent {}, received {})",
            p.sent, p.received
        ),
    )
}

/// Pumps `packets` frames of `size` bytes through `path`; `work_dir` for the fast path's switch.
pub fn run(path: IcountPath, size: usize, packets: u64, work_dir: &Path) -> Result<Pumped> {
    let p = match path {
        IcountPath::Switch => switch(size, packets)?,
        IcountPath::FastpathCopy => fastpath(Mode::Copy, size, packets, work_dir)?,
        IcountPath::FastpathZerocopy => fastpath(Mode::ZeroCopy, size, packets, work_dir)?,
        IcountPath::RingLimit => ring(Kind::Frame, size, packets)?,
        IcountPath::RingLimitDesc => ring(Kind::Descriptor, size, packets)?,
    };
    p.check(path, packets)
}

// ---- switch ------------------------------------------------------------------------------

fn spec(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        mode: PortMode::Server,
        path: PathBuf::from(format!("/nonexistent/{name}")),
        vlan: None,
        queues: 1,
        fastpath: false,
    }
}

/// Both guests and the forwarder between them.
pub struct SwitchPath {
    a: Guest,
    b: Guest,
    pa: Arc<Port>,
    fwd: Forwarder,
    scratch: Vec<u8>,
}

fn switch(size: usize, packets: u64) -> Result<Pumped> {
    let guest = |name: &str| {
        let cfg = GuestConfig {
            name: name.into(),
            ..GuestConfig::default()
        };
        Guest::with_backend(&cfg, BackendConfig::default()).map_err(|source| Error::Guest {
            guest: name.into(),
            source,
        })
    };
    let (a, slots_a, _ta) = guest("icount-a")?;
    let (b, slots_b, _tb) = guest("icount-b")?;
    let shared = Arc::new(Shared::new(4096, 300));
    let pa = Arc::new(Port::with_slots(0, spec("a"), 1, slots_a));
    let pb = Arc::new(Port::with_slots(1, spec("b"), 1, slots_b));
    let mut fwd = Forwarder::new(0, shared.clone());
    fwd.add_port(pa.clone());
    fwd.add_port(pb);
    // B is known, so A's frames to it are unicast, as after the scenario's handshake.
    shared.fdb.learn(0, MAC_B, 1, 0);
    let mut s = SwitchPath {
        a,
        b,
        pa,
        fwd,
        scratch: Vec::with_capacity(16384),
    };
    let pkt = packet::template(MAC_B, MAC_A, size, RUN);
    pump_switch(&mut s, pkt, packets)
}

const MAC_A: [u8; 6] = packet::mac(0x0a);
const MAC_B: [u8; 6] = packet::mac(0x0b);

/// Guest A sends a burst, the forwarder switches it (the transmit queue is slot 1), guest B
/// receives and checks; until `packets` arrived.
#[inline(never)]
pub fn pump_switch(s: &mut SwitchPath, mut pkt: Vec<u8>, packets: u64) -> Result<Pumped> {
    let mut rx = Receiver::new(RUN);
    let mut sent = 0u64;
    let mut idle = 0u64;
    while rx.received < packets {
        s.a.tx.reclaim();
        let due = SWITCH_TX_BURST.min(usize::try_from(packets - sent).unwrap_or(usize::MAX));
        let mut n = 0;
        while n < due {
            packet::stamp(&mut pkt, sent, tsc::now());
            if !s.a.tx.push_tx(&pkt) {
                break;
            }
            sent += 1;
            n += 1;
        }
        if n > 0 {
            s.a.tx.publish();
        }
        s.fwd.poll(&s.pa, 1);
        let got = s.b.rx.recv(SWITCH_RX_BURST, &mut s.scratch, |f| {
            rx.accept(f);
        });
        idle = if got == 0 { idle + 1 } else { 0 };
        if idle > STALL_ROUNDS {
            return Err(stalled(IcountPath::Switch, pumped(sent, &rx)));
        }
    }
    Ok(pumped(sent, &rx))
}

fn pumped(sent: u64, rx: &Receiver) -> Pumped {
    Pumped {
        sent,
        received: rx.received,
        out_of_order: rx.out_of_order,
    }
}

// ---- fast path ---------------------------------------------------------------------------

const FP_MAC_A: [u8; 6] = packet::mac(0x1a);
const FP_MAC_B: [u8; 6] = packet::mac(0x1b);

/// The sender A and the receiver B of one channel.
pub struct FastpathPath {
    a: FastpathGuest,
    b: FastpathGuest,
    mode: Mode,
}

fn fastpath(mode: Mode, size: usize, packets: u64, work_dir: &Path) -> Result<Pumped> {
    let name = match mode {
        Mode::Copy => IcountPath::FastpathCopy.name(),
        Mode::ZeroCopy => IcountPath::FastpathZerocopy.name(),
    };
    let dir = work_dir.join(format!("icount-{name}-{}", std::process::id()));
    // Guests first in the drop order below: they disconnect before the switch goes.
    // Under valgrind the process's code cache is anonymous executable memory that the
    // trampoline check's scan cannot vouch for (it finds XRSTOR patterns in it, or not,
    // depending on the build): the trampolines are checked by digest only.
    let why = "bench icount-worker: instruction counting, possibly under valgrind";
    let (running, hooks, socks) =
        crate::scenario::fastpath::start_switch(&dir, 0, name, Some(why))?;
    let fail = |e: fastpath_guest::Error| Error::measurement(name, e.to_string());
    let connect = |sock: &PathBuf, port: &str, mac| {
        let cfg = FpConfig {
            hooks: Some(hooks.clone()),
            queue_size: FP_QUEUE,
            ..FpConfig::new(sock.clone(), port, mac)
        };
        FastpathGuest::connect(&cfg).map_err(fail)
    };
    let b = connect(&socks[1], "b", FP_MAC_B)?;
    let mut a = connect(&socks[0], "a", FP_MAC_A)?;
    a.open_channel(FP_MAC_B, mode, "adaptive", Duration::from_secs(30))
        .map_err(fail)?;
    let mut s = FastpathPath { a, b, mode };
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.b.channels().is_empty() {
        s.b.poll_events().map_err(fail)?;
        if Instant::now() >= deadline {
            return Err(Error::measurement(
                name,
                "no channel opened to the receiver",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let bufs: Vec<Vec<u8>> = (0..FP_BURST)
        .map(|_| packet::template(FP_MAC_B, FP_MAC_A, size, RUN))
        .collect();
    let r = pump_fastpath(&mut s, bufs, packets, name);
    drop(s);
    drop(running);
    r
}

/// The mode's own pump, so callgrind counts each under its name.
fn pump_fastpath(
    s: &mut FastpathPath,
    bufs: Vec<Vec<u8>>,
    packets: u64,
    name: &str,
) -> Result<Pumped> {
    let r = match s.mode {
        Mode::Copy => pump_fastpath_copy(s, bufs, packets),
        Mode::ZeroCopy => pump_fastpath_zerocopy(s, bufs, packets),
    };
    r.map_err(|e| Error::measurement(name, e.to_string()))
}

/// A's visit copies a burst into B's dedicated receive queue; B receives it in place and checks.
#[inline(never)]
pub fn pump_fastpath_copy(
    s: &mut FastpathPath,
    mut bufs: Vec<Vec<u8>>,
    packets: u64,
) -> std::result::Result<Pumped, String> {
    let mut rx = Receiver::new(RUN);
    let (mut sent, mut idle) = (0u64, 0u64);
    while rx.received < packets {
        let due = FP_BURST.min(usize::try_from(packets - sent).unwrap_or(usize::MAX));
        if due > 0 {
            let now = tsc::now();
            for (i, f) in bufs.iter_mut().enumerate().take(due) {
                packet::stamp(f, sent + i as u64, now);
            }
            sent +=
                s.a.send(FP_MAC_B, &bufs[..due])
                    .map_err(|e| e.to_string())? as u64;
        }
        let got = fp_receive(&mut s.b, &mut rx)?;
        idle = if got == 0 { idle + 1 } else { 0 };
        if idle > STALL_ROUNDS {
            return Err(stalled(IcountPath::FastpathCopy, pumped(sent, &rx)).to_string());
        }
    }
    Ok(pumped(sent, &rx))
}

/// A builds a burst in its dedicated transmit queue's own buffers (each buffer written whole the
/// first time, then only its stamp, as the scenario's sender does); B's visit reads the frames'
/// headers in place and checks them.
#[inline(never)]
pub fn pump_fastpath_zerocopy(
    s: &mut FastpathPath,
    bufs: Vec<Vec<u8>>,
    packets: u64,
) -> std::result::Result<Pumped, String> {
    let mut rx = Receiver::new(RUN);
    let (mut sent, mut idle) = (0u64, 0u64);
    let template = &bufs[0];
    let size = template.len();
    let mut filled = vec![false; usize::from(u16::MAX)];
    while rx.received < packets {
        let due = FP_BURST.min(usize::try_from(packets - sent).unwrap_or(usize::MAX));
        if due > 0 {
            let now = tsc::now();
            let base = sent;
            sent +=
                s.a.rewrite_in_place(FP_MAC_B, std::iter::repeat_n(size, due), |i, id, buf| {
                    let id = usize::from(id);
                    if !filled.get(id).copied().unwrap_or(false) {
                        buf.copy_from_slice(template);
                        if let Some(f) = filled.get_mut(id) {
                            *f = true;
                        }
                    }
                    packet::stamp(buf, base + i as u64, now);
                })
                .map_err(|e| e.to_string())? as u64;
        }
        let got = fp_receive(&mut s.b, &mut rx)?;
        idle = if got == 0 { idle + 1 } else { 0 };
        if idle > STALL_ROUNDS {
            return Err(stalled(IcountPath::FastpathZerocopy, pumped(sent, &rx)).to_string());
        }
    }
    Ok(pumped(sent, &rx))
}

/// One receive call of B, as the scenario's receiver makes it: each frame's header checked.
#[inline]
fn fp_receive(b: &mut FastpathGuest, rx: &mut Receiver) -> std::result::Result<usize, String> {
    b.recv(4 * FP_BURST, |f| {
        let (hdr, n) = f.head::<{ packet::HEADER_LEN }>();
        rx.accept(&hdr[..n]);
    })
    .map_err(|e| e.to_string())
}

// ---- ring limits -------------------------------------------------------------------------

fn ring(kind: Kind, size: usize, packets: u64) -> Result<Pumped> {
    let (mut prod, mut cons, buf) = ring_limit::ring(kind, RING_CONFIG, size)?;
    let mut tx = ring_limit::Send::new(kind, RING_CONFIG, size, RUN, buf, &mut prod);
    match kind {
        Kind::Frame => pump_ring_limit(&mut tx, &mut cons, packets),
        Kind::Descriptor => pump_ring_limit_desc(&mut tx, &mut cons, packets),
    }
}

/// Frames copied into the ring's slots, a batch at a time, then read back.
#[inline(never)]
pub(crate) fn pump_ring_limit(
    tx: &mut ring_limit::Send<'_>,
    cons: &mut crate::spsc::Consumer,
    packets: u64,
) -> Result<Pumped> {
    ring_rounds(Kind::Frame, tx, cons, packets)
}

/// Descriptors of frames in the producer's pool through the ring, headers read in place.
#[inline(never)]
pub(crate) fn pump_ring_limit_desc(
    tx: &mut ring_limit::Send<'_>,
    cons: &mut crate::spsc::Consumer,
    packets: u64,
) -> Result<Pumped> {
    ring_rounds(Kind::Descriptor, tx, cons, packets)
}

/// The scenario's producer and consumer loops, one batch of each in turn.
#[inline(always)]
fn ring_rounds(
    kind: Kind,
    tx: &mut ring_limit::Send<'_>,
    cons: &mut crate::spsc::Consumer,
    packets: u64,
) -> Result<Pumped> {
    let batch = RING_CONFIG.batch;
    let mut rx = Receiver::new(RUN);
    let mut lat = crate::latency::Latency::new();
    let (mut sent, mut bad) = (0u64, 0u64);
    while rx.received < packets {
        let due = batch.min(usize::try_from(packets - sent).unwrap_or(usize::MAX));
        let n = tx.prod.free(due).min(due);
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
        let avail = cons.available(batch);
        let k = avail.min(batch);
        for i in 0..k {
            if !ring_limit::take(kind, cons, i, &mut rx, &mut lat) {
                bad += 1;
            }
        }
        cons.release(k);
        if n == 0 && k == 0 {
            return Err(stalled(IcountPath::RingLimit, pumped(sent, &rx)));
        }
    }
    let mut p = pumped(sent, &rx);
    p.out_of_order += bad;
    Ok(p)
}

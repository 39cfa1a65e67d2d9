//! Hostile guest rings against the device side of the packed virtqueue (`vhost_user::packed`).
//!
//! A mock driver writes fuzz-chosen packed descriptors (avail/used bits, ids, NEXT, INDIRECT and
//! WRITE flags as they come), indirect tables, raw bytes and the driver event suppression
//! structure into guard-paged guest memory (`vswitch_fuzz::guarded`); a device queue over it
//! pops transmit bursts, enqueues frames up to jumbo size, flushes and reports its vring base,
//! with fuzz-chosen features (indirect, mrg_rxbuf, event_idx, IN_ORDER, header length, call
//! eventfd) and starting positions. Input format: `vswitch_fuzz::packed_chains`.
//!
//! Oracles besides "no panic, no fault, no hang": a popped chain is at least a virtio-net
//! header plus an Ethernet header and at most `MAX_CHAIN_BYTES`, and reads back consistently;
//! `enqueue_sources` accounts for every frame; a queue broken before a call offers nothing; `available()`
//! never exceeds the queue size; the vring base's positions stay below the queue size.
#![no_main]

use std::os::fd::AsFd;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use nix::sys::eventfd::EventFd;
use vhost_user::packed_ring::{PackedDesc, RawPackedRing};
use vhost_user::virtq::{
    DeviceQueue, PackedLayout, QueueCounters, QueueFeatures, RingPos, RxTally, Source,
};
use vswitch_fuzz::chains::MEM_SIZE;
use vswitch_fuzz::guarded::{check_chain_reads, pattern, world, World, PAGE, UVA_BASE, ZEROS};
use vswitch_fuzz::packed_chains::*;
use vswitch_fuzz::{trace, Reader};

fn read_desc(r: &mut Reader, gpa: u64) -> PackedDesc {
    let mode = r.u8();
    let addr = if mode < ADDR_RAW_MODE {
        gpa + u64::from(r.u32() % u32::try_from(MEM_SIZE + PAGE).unwrap_or(u32::MAX))
    } else {
        r.u64()
    };
    PackedDesc {
        addr,
        len: r.u32(),
        id: r.u16(),
        flags: r.u16(),
    }
}

fn desc_bytes(d: &PackedDesc) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.id.to_le_bytes());
    b[14..16].copy_from_slice(&d.flags.to_le_bytes());
    b
}

fn build(w: &World, r: &mut Reader, f: u8) -> Option<(RawPackedRing, DeviceQueue, u16)> {
    let size = 1 + r.u16() % 256;
    let desc = usize::from(r.u16()) * 16 % MEM_SIZE;
    let driver = usize::from(r.u16()) * 4 % MEM_SIZE;
    let device = usize::from(r.u16()) * 4 % MEM_SIZE;
    let base = RingPos::decode(r.u16());
    let used = RingPos::decode(r.u16());
    let host = |off: usize, len: usize| w.mem.host(w.gpa + off as u64, len as u64);
    let d = host(desc, 16 * usize::from(size))?;
    let dr = host(driver, 4)?;
    let dv = host(device, 4)?;
    // SAFETY: each area was checked inside the driver mapping (which lives as long as the
    // process) for its full length; offsets are multiples of 16 and 4 in a page-aligned
    // mapping; 1 <= size <= 256.
    let ring = unsafe { RawPackedRing::new(d, dr, dv, size) };
    let features = QueueFeatures {
        indirect: f & F_INDIRECT != 0,
        mrg_rxbuf: f & F_MRG != 0,
        event_idx: f & F_EVENT_IDX != 0,
        hdr_len: if f & F_HDR10 != 0 { 10 } else { 12 },
    };
    let call = (f & F_CALL != 0).then(|| {
        let fd = w.call.as_fd().try_clone_to_owned().expect("dup eventfd");
        // SAFETY: `fd` is a duplicate of the eventfd made in `world`.
        unsafe { EventFd::from_owned_fd(fd) }
    });
    let layout = PackedLayout {
        size,
        desc_uva: UVA_BASE + desc as u64,
        driver_uva: UVA_BASE + driver as u64,
        device_uva: UVA_BASE + device as u64,
    };
    let dev = DeviceQueue::new_packed(
        w.dev.clone(),
        layout,
        features,
        f & F_IN_ORDER != 0,
        base,
        used,
        call,
        Arc::new(QueueCounters::default()),
    )
    .ok()?;
    Some((ring, dev, size))
}

fn run(data: &[u8]) {
    let w = world();
    w.mem.write(w.gpa, &ZEROS).expect("zero guest memory");
    let mut r = Reader::new(data);
    let f = r.u8();
    let Some((ring, mut q, size)) = build(w, &mut r, f) else {
        if trace() {
            eprintln!("queue not built");
        }
        return;
    };
    let hdr = q.features().hdr_len;
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = r.u8() % OPS;
        if trace() {
            eprintln!("op {op}");
        }
        match op {
            OP_DESC => {
                let pos = r.u16() % size;
                let d = read_desc(&mut r, w.gpa);
                ring.write_desc(pos, d);
            }
            OP_WRITE => {
                let off = usize::from(r.u16()) % MEM_SIZE;
                let len = usize::from(r.u8()).min(MEM_SIZE - off);
                let _ = w.mem.write(w.gpa + off as u64, &pattern()[..len]);
            }
            OP_INDIRECT => {
                let off = usize::from(r.u16()) * 16 % MEM_SIZE;
                let n = usize::from(r.u8() % 16);
                let mut bytes = Vec::with_capacity(16 * n);
                for _ in 0..n {
                    bytes.extend_from_slice(&desc_bytes(&read_desc(&mut r, w.gpa)));
                }
                let len = bytes.len().min(MEM_SIZE - off);
                let _ = w.mem.write(w.gpa + off as u64, &bytes[..len]);
            }
            OP_POP_TX => {
                // A queue may break in the middle of a burst (a bad chain after good ones): the
                // good ones are still delivered. One broken before the call offers nothing.
                let was_broken = q.is_broken();
                let n = q.pop_tx_burst();
                assert!(!was_broken || n == 0, "a broken queue offered chains");
                for c in q.burst() {
                    check_chain_reads(c, hdr, hdr + 14);
                }
                q.complete_burst();
            }
            OP_ENQUEUE => {
                let n = usize::from(r.u8() % 8);
                let len = usize::from(r.u16()) % 9100;
                let frame = &pattern()[..len];
                let mut t = RxTally::default();
                q.enqueue_sources((0..n).map(|_| Source::Bytes(frame)), &mut t);
                assert_eq!(
                    t.packets + t.no_buffers + t.too_small + t.bad_buffers,
                    n as u64,
                    "frames unaccounted for: {t:?}"
                );
                q.flush();
            }
            OP_FLUSH => q.flush(),
            OP_EVENT => {
                let off_wrap = r.u16();
                let flags = r.u16();
                ring.set_driver_event(off_wrap, flags);
            }
            OP_AVAILABLE => {
                let a = q.available();
                assert!(a <= size, "{a} available in a queue of {size}");
                if q.is_broken() {
                    assert_eq!(a, 0, "a broken queue offered entries");
                }
                let n = usize::from(r.u8());
                assert!(q.walk_available(n, false) <= n);
                assert!(q.walk_available(n, true) <= n);
            }
            OP_BASE => {
                let b = q.vring_base();
                let (lo, hi) = (b & 0x7fff, (b >> 16) & 0x7fff);
                assert!(
                    lo < u32::from(size) && hi < u32::from(size),
                    "vring base {b:#x} outside a queue of {size}"
                );
            }
            _ => unreachable!("op is reduced mod OPS"),
        }
    }
    q.flush();
}

fuzz_target!(|data: &[u8]| run(data));

//! Hostile guest rings against the device side of the split virtqueue (`vhost_user::virtq`).
//!
//! A mock driver writes fuzz-chosen descriptors, indirect tables, avail entries and indices and
//! raw bytes into guest memory; two device queues over that memory pop TX bursts, read and peek
//! their chains, forward them into each other (`Source::Chain`) and enqueue frames
//! (`Source::Bytes`), or deliver them as the PMD does (`enqueue_burst`), with
//! fuzz-chosen features (indirect, mrg_rxbuf, event_idx, header length,
//! call eventfd). Input format: `vswitch_fuzz::chains`.
//!
//! Guest memory is two adjacent regions of one memfd, as the device maps them from a memory
//! table: region B maps the file from offset 0 and starts at `mmap_offset` = half, so its
//! mapping holds bytes outside the region. Those bytes and a page on each side of every mapping
//! are made inaccessible (`PROT_NONE`), so any access by the device outside guest memory faults
//! and the fuzzer reports it, with or without AddressSanitizer (which does not track mmap'd
//! memory).
//!
//! Oracles besides "no panic, no fault": a popped chain is at least a virtio-net header plus an
//! Ethernet header and at most `MAX_CHAIN_BYTES`; `Chain::read`, `Chain::peek` and
//! `Chain::head_words` return exactly the bytes that exist and agree; `enqueue_burst` accounts
//! for every frame; a broken queue offers nothing; `available()` never exceeds
//! the queue size.
#![no_main]

use std::os::fd::AsFd;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use nix::sys::eventfd::EventFd;
use vhost_user::ring::{
    avail_ring_bytes, desc_table_bytes, used_ring_bytes, Descriptor, RawRing, VRING_DESC_F_INDIRECT,
};
use vhost_user::virtq::{DeviceQueue, QueueCounters, QueueFeatures, QueueLayout, RxTally, Source};
use vswitch_fuzz::chains::*;
use vswitch_fuzz::guarded::{check_chain_reads, pattern, world, World, PAGE, UVA_BASE, ZEROS};
use vswitch_fuzz::{trace, Reader};

fn read_desc(r: &mut Reader, gpa: u64) -> Descriptor {
    let mode = r.u8();
    let addr = if mode < ADDR_RAW_MODE {
        gpa + u64::from(r.u32() % u32::try_from(MEM_SIZE + PAGE).unwrap_or(u32::MAX))
    } else {
        r.u64()
    };
    Descriptor {
        addr,
        len: r.u32(),
        flags: r.u16(),
        next: r.u16(),
    }
}

fn desc_bytes(d: &Descriptor) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.flags.to_le_bytes());
    b[14..16].copy_from_slice(&d.next.to_le_bytes());
    b
}

/// One queue: the driver's raw view of its rings and the device queue.
struct Q {
    drv: RawRing,
    drv_avail: u16,
    dev: DeviceQueue,
    size: u16,
}

fn build_queue(w: &World, r: &mut Reader, features: QueueFeatures, call: bool) -> Option<Q> {
    let size = 1u16 << (r.u8() % 9);
    let desc = usize::from(r.u16()) * 16 % MEM_SIZE;
    let avail = usize::from(r.u16()) * 2 % MEM_SIZE;
    let used = usize::from(r.u16()) * 4 % MEM_SIZE;
    let base = r.u16();
    let used_idx = r.u16();
    let avail_idx = r.u16();
    let host = |off: usize, len: usize| w.mem.host(w.gpa + off as u64, len as u64);
    let d = host(desc, desc_table_bytes(size))?;
    let a = host(avail, avail_ring_bytes(size))?;
    let u = host(used, used_ring_bytes(size))?;
    // SAFETY: each area was checked inside the driver mapping (which lives as long as the
    // process) for its full length; offsets are multiples of 16, 2 and 4 in a page-aligned
    // mapping; size is a power of two <= 256.
    let drv = unsafe { RawRing::new(d, a, u, size) };
    drv.set_used_idx(used_idx);
    drv.set_avail_idx(avail_idx);
    let call = call.then(|| {
        let fd = w.call.as_fd().try_clone_to_owned().expect("dup eventfd");
        // SAFETY: `fd` is a duplicate of the eventfd made in `world`.
        unsafe { EventFd::from_owned_fd(fd) }
    });
    let layout = QueueLayout {
        size,
        desc_uva: UVA_BASE + desc as u64,
        avail_uva: UVA_BASE + avail as u64,
        used_uva: UVA_BASE + used as u64,
    };
    let dev = DeviceQueue::new(
        w.dev.clone(),
        layout,
        features,
        base,
        call,
        Arc::new(QueueCounters::default()),
    )
    .ok()?;
    Some(Q {
        drv,
        drv_avail: avail_idx,
        dev,
        size,
    })
}

fn run(data: &[u8]) {
    let w = world();
    w.mem.write(w.gpa, &ZEROS).expect("zero guest memory");
    let mut r = Reader::new(data);
    let f = r.u8();
    let features = QueueFeatures {
        indirect: f & F_INDIRECT != 0,
        mrg_rxbuf: f & F_MRG != 0,
        event_idx: f & F_EVENT_IDX != 0,
        hdr_len: if f & F_HDR10 != 0 { 10 } else { 12 },
    };
    let call = f & F_CALL != 0;
    let Some(qa) = build_queue(w, &mut r, features, call) else {
        if trace() {
            eprintln!("queue A not built");
        }
        return;
    };
    let Some(qb) = build_queue(w, &mut r, features, call) else {
        if trace() {
            eprintln!("queue B not built");
        }
        return;
    };
    let mut qs = [qa, qb];
    let min_len = features.hdr_len + 14;
    let mut ops = 0;
    while !r.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = r.u8() % OPS;
        match op {
            OP_DESC => {
                let q = &qs[usize::from(r.u8() & 1)];
                let i = r.u16();
                let d = read_desc(&mut r, w.gpa);
                q.drv.write_desc(i, d);
            }
            OP_AVAIL => {
                let q = &mut qs[usize::from(r.u8() & 1)];
                let head = r.u16();
                q.drv.set_avail_entry(q.drv_avail, head);
                q.drv_avail = q.drv_avail.wrapping_add(1);
                q.drv.set_avail_idx(q.drv_avail);
            }
            OP_AVAIL_IDX => {
                let q = &mut qs[usize::from(r.u8() & 1)];
                q.drv_avail = r.u16();
                q.drv.set_avail_idx(q.drv_avail);
            }
            OP_WRITE => {
                let off = r.u32() as usize % MEM_SIZE;
                let n = usize::from(r.u8());
                let b = r.bytes(n);
                let b = &b[..b.len().min(MEM_SIZE - off)];
                w.mem
                    .write(w.gpa + off as u64, b)
                    .expect("write guest memory");
            }
            OP_INDIRECT => {
                // A table at any offset (aligned or not) and, unless `len` says otherwise, a
                // ring descriptor pointing at exactly that table: two values a mutation would
                // rarely make agree on its own.
                let q = &qs[usize::from(r.u8() & 1)];
                let i = r.u16();
                let len = r.u8();
                let off = r.u32() as usize % MEM_SIZE;
                let n = r.u8();
                let table_len = u32::from(n) * 16;
                q.drv.write_desc(
                    i,
                    Descriptor {
                        addr: w.gpa + off as u64,
                        len: if len == 0 { table_len } else { u32::from(len) },
                        flags: VRING_DESC_F_INDIRECT,
                        next: 0,
                    },
                );
                let mut at = off;
                for _ in 0..n {
                    let d = read_desc(&mut r, w.gpa);
                    if at + 16 <= MEM_SIZE {
                        w.mem
                            .write(w.gpa + at as u64, &desc_bytes(&d))
                            .expect("write table");
                    }
                    at += 16;
                }
            }
            OP_POP_TX => {
                let which = usize::from(r.u8() & 1);
                let read_off = usize::from(r.u16());
                // 0: no forwarding; 1: `enqueue` chain by chain; 2: `enqueue_burst`, as the PMD
                // delivers; 3: `available()` on the destination first, then `enqueue_burst`.
                let forward = r.u8() & 3;
                let skip = usize::from(r.u8());
                let (a, b) = qs.split_at_mut(1);
                let (src, dst) = if which == 0 {
                    (&mut a[0], &mut b[0])
                } else {
                    (&mut b[0], &mut a[0])
                };
                let n = src.dev.pop_tx_burst();
                if trace() {
                    let lens: Vec<usize> = src.dev.burst().iter().map(|c| c.len()).collect();
                    eprintln!("pop {which}: chains {lens:?}");
                }
                assert_eq!(n, src.dev.burst().len());
                assert!(n <= vhost_user::virtq::BURST);
                for c in src.dev.burst() {
                    check_chain_reads(c, read_off, min_len);
                    check_chain_reads(c, 0, min_len);
                    check_chain_reads(c, features.hdr_len, min_len);
                }
                match forward {
                    1 => {
                        for c in src.dev.burst() {
                            let res = dst.dev.enqueue(Source::Chain(c, skip));
                            if trace() {
                                eprintln!("  enqueue chain: {res:?}");
                            }
                        }
                    }
                    2 | 3 => {
                        if forward == 3 {
                            dst.dev.available();
                        }
                        let mut t = RxTally::default();
                        dst.dev.enqueue_burst(src.dev.burst().iter(), skip, &mut t);
                        let total = t.packets + t.no_buffers + t.too_small + t.bad_buffers;
                        assert_eq!(total, n as u64, "enqueue_burst tally {t:?} for {n} frames");
                        if trace() {
                            eprintln!("  enqueue_burst: {t:?}");
                        }
                    }
                    _ => {}
                }
                src.dev.complete_burst();
                if forward != 0 {
                    dst.dev.flush();
                }
            }
            OP_ENQUEUE => {
                let q = &mut qs[usize::from(r.u8() & 1)];
                let len = usize::from(r.u16()) % (pattern().len() + 1);
                let res = q.dev.enqueue(Source::Bytes(&pattern()[..len]));
                if trace() {
                    eprintln!("enqueue {len} bytes: {res:?}");
                }
            }
            OP_FLUSH => {
                qs[usize::from(r.u8() & 1)].dev.flush();
            }
            OP_FLAGS => {
                let q = &qs[usize::from(r.u8() & 1)];
                let which = r.u8();
                let v = r.u16();
                if which & 1 == 0 {
                    q.drv.set_avail_flags(v);
                } else {
                    q.drv.set_used_event(v);
                }
            }
            OP_AVAILABLE => {
                let q = &mut qs[usize::from(r.u8() & 1)];
                let n = q.dev.available();
                assert!(n <= q.size, "{n} available in a queue of {}", q.size);
                if q.dev.is_broken() {
                    assert_eq!(n, 0, "a broken queue offers entries");
                }
            }
            _ => unreachable!(),
        }
    }
    if trace() {
        for q in &qs {
            eprintln!("counters: {:?}", q.dev.counters().snapshot());
        }
    }
    for q in &mut qs {
        q.dev.flush();
        if q.dev.is_broken() {
            assert_eq!(q.dev.pop_tx_burst(), 0, "a broken queue delivers chains");
            q.dev.complete_burst();
        }
    }
}

fuzz_target!(
    init: {
        world();
        pattern();
    },
    |data: &[u8]| run(data)
);

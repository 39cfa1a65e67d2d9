//! Packed ring tests against a mock driver writing real packed descriptors into real shared
//! memory. Negative tests are named after the bad input.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::dirty_log::{DirtyLog, QueueLog};
use crate::driver::DriverMemory;
use crate::packed_ring::{
    avail_flags, is_used, PackedDesc, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
};
use crate::packed_test_driver::{Driver, FRESH};
use crate::ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::virtq::{
    ChainError, DeviceQueue, PackedLayout, QueueCounters, QueueFeatures, RingLayout, RingPos,
    RxTally, Source, BURST,
};

const HDR: usize = 12;
const BUF: u32 = 2048;

fn features(indirect: bool, mrg: bool, event_idx: bool) -> QueueFeatures {
    QueueFeatures {
        event_idx,
        indirect,
        mrg_rxbuf: mrg,
        hdr_len: HDR,
    }
}

struct Rig {
    mem: DriverMemory,
    drv: Driver,
    dev: DeviceQueue,
    call: EventFd,
    layout: PackedLayout,
}

fn rig_with(size: u16, f: QueueFeatures, in_order: bool) -> Rig {
    let mut mem = DriverMemory::new("packed-test", 4 << 20, false).unwrap();
    let (drv, layout) = Driver::new(&mut mem, size, BUF);
    let call = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    let dev = new_dev(&mem, layout, f, in_order, FRESH, &call);
    Rig {
        drv,
        mem,
        dev,
        call,
        layout,
    }
}

fn new_dev(
    mem: &DriverMemory,
    layout: PackedLayout,
    f: QueueFeatures,
    in_order: bool,
    base: RingPos,
    call: &EventFd,
) -> DeviceQueue {
    let dup = std::os::fd::AsFd::as_fd(call).try_clone_to_owned().unwrap();
    // SAFETY: `dup` is a duplicate of an eventfd.
    let dev_call = unsafe { EventFd::from_owned_fd(dup) };
    DeviceQueue::new_packed(
        mem.device_view().unwrap(),
        layout,
        f,
        in_order,
        base,
        base,
        Some(dev_call),
        Arc::new(QueueCounters::default()),
    )
    .unwrap()
}

fn rig(size: u16) -> Rig {
    rig_with(size, features(true, true, false), false)
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect();
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f
}

/// Posts `f` behind a zero header in buffer `id`, one descriptor.
fn post_tx(r: &mut Rig, id: u16, f: &[u8]) {
    let g = r.drv.buf(id);
    r.mem.write(g, &[0u8; HDR]).unwrap();
    r.mem.write(g + HDR as u64, f).unwrap();
    r.drv.post(id, &[(g, (HDR + f.len()) as u32, 0)]);
}

fn post_rx(r: &mut Rig, id: u16, len: u32) {
    let g = r.drv.buf(id);
    r.drv.post(id, &[(g, len, VRING_DESC_F_WRITE)]);
}

fn chain_bytes(c: &crate::virtq::Chain, skip: usize) -> Vec<u8> {
    let mut v = vec![0u8; c.len() - skip];
    assert_eq!(c.read(skip, &mut v), v.len());
    v
}

fn drain(call: &EventFd) -> u64 {
    call.read().unwrap_or(0)
}

#[test]
fn packed_tx_burst_roundtrip() {
    let mut r = rig(64);
    let frames: Vec<_> = (0..40).map(|i| frame(60 + i, i as u8)).collect();
    for (i, f) in frames.iter().enumerate() {
        post_tx(&mut r, i as u16, f);
    }
    assert_eq!(r.dev.ring_layout(), RingLayout::Packed);
    assert_eq!(r.dev.pop_tx_burst(), BURST);
    for (i, c) in r.dev.burst().iter().enumerate() {
        assert_eq!(chain_bytes(c, HDR), frames[i]);
        assert_eq!(c.head(), i as u16);
    }
    assert_eq!(r.drv.reap(), None, "nothing used before complete_burst");
    r.dev.complete_burst();
    assert_eq!(r.dev.pop_tx_burst(), 8);
    r.dev.complete_burst();
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    let used = r.drv.reap_all();
    assert_eq!(used, (0..40).map(|i| (i, 0)).collect::<Vec<_>>());
    assert_eq!(r.dev.counters().total_errors(), 0);
    assert_eq!(r.dev.vring_base(), 40 | 0x8000 | (40 | 0x8000) << 16);
}

#[test]
fn packed_ring_wraps_many_laps() {
    // A size that is not a power of two: packed rings allow it.
    let mut r = rig(7);
    let mut id = 0u16;
    for lap in 0..200u32 {
        let n = 1 + (lap % 5) as u16;
        let frames: Vec<_> = (0..n).map(|i| frame(64, (lap as u8) ^ i as u8)).collect();
        for f in &frames {
            post_tx(&mut r, id, f);
            id = (id + 1) % 7;
        }
        assert_eq!(r.dev.pop_tx_burst(), usize::from(n), "lap {lap}");
        for (c, f) in r.dev.burst().iter().zip(&frames) {
            assert_eq!(&chain_bytes(c, HDR), f);
        }
        r.dev.complete_burst();
        assert_eq!(r.drv.reap_all().len(), usize::from(n));
    }
    assert!(!r.dev.is_broken());
    assert_eq!(r.dev.counters().total_errors(), 0);
}

#[test]
fn packed_tx_chained_and_indirect_descriptors() {
    let mut r = rig(64);
    let f = frame(300, 9);
    // Header and frame in two descriptors of one chain.
    let g = r.drv.buf(0);
    r.mem.write(g, &[0u8; HDR]).unwrap();
    r.mem.write(g + 64, &f).unwrap();
    r.drv.post(0, &[(g, HDR as u32, 0), (g + 64, 300, 0)]);
    // The same as an indirect table of two entries.
    let t = r.drv.buf(1);
    let mut table = Vec::new();
    for (a, l) in [(g, HDR as u32), (g + 64, 300)] {
        table.extend_from_slice(&a.to_le_bytes());
        table.extend_from_slice(&l.to_le_bytes());
        table.extend_from_slice(&[0u8; 4]);
    }
    r.mem.write(t, &table).unwrap();
    r.drv.post(1, &[(t, 32, VRING_DESC_F_INDIRECT)]);
    assert_eq!(r.dev.pop_tx_burst(), 2);
    for c in r.dev.burst() {
        assert_eq!(chain_bytes(c, HDR), f);
    }
    r.dev.complete_burst();
    assert_eq!(r.drv.reap_all(), vec![(0, 0), (1, 0)]);
    // The two-descriptor chain advanced the ring by two.
    assert_eq!(r.dev.vring_base() & 0x7fff, 3);
}

#[test]
fn packed_rx_enqueue_roundtrip() {
    let mut r = rig(64);
    for id in 0..4 {
        post_rx(&mut r, id, BUF);
    }
    let f = frame(100, 1);
    assert_eq!(r.dev.enqueue(Source::Bytes(&f)), Ok(()));
    assert_eq!(r.drv.reap(), None, "used only at the flush");
    r.dev.flush();
    assert_eq!(r.drv.reap(), Some((0, (HDR + 100) as u32)));
    let mut got = vec![0u8; HDR + 100];
    r.mem.read(r.drv.buf(0), &mut got).unwrap();
    assert_eq!(&got[HDR..], &f[..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    let d = r.drv.ring.read_desc(0);
    assert_ne!(
        d.flags & VRING_DESC_F_WRITE,
        0,
        "a used buffer with data says so"
    );
}

#[test]
fn packed_jumbo_frame_with_mergeable_buffers() {
    let mut r = rig(64);
    for id in 0..12 {
        post_rx(&mut r, id, 1024);
    }
    let f = frame(9000, 3);
    let mut t = RxTally::default();
    r.dev
        .enqueue_sources([Source::Bytes(&f)].into_iter(), &mut t);
    assert_eq!((t.packets, t.no_buffers), (1, 0));
    r.dev.flush();
    let used = r.drv.reap_all();
    assert_eq!(used.len(), 9, "9012 bytes in 1024-byte buffers");
    let mut all = Vec::new();
    for &(id, len) in &used {
        let mut b = vec![0u8; len as usize];
        r.mem.read(r.drv.buf(id), &mut b).unwrap();
        all.extend_from_slice(&b);
    }
    assert_eq!(u16::from_le_bytes([all[10], all[11]]), 9, "num_buffers");
    assert_eq!(&all[HDR..], &f[..]);
}

#[test]
fn packed_chain_to_chain_between_two_queues() {
    let mut tx = rig(64);
    let mut rx = rig(64);
    let frames: Vec<_> = (0..10).map(|i| frame(64 + 100 * i, i as u8)).collect();
    for (i, f) in frames.iter().enumerate() {
        post_tx(&mut tx, i as u16, f);
        post_rx(&mut rx, i as u16, BUF);
    }
    assert_eq!(tx.dev.pop_tx_burst(), 10);
    let mut t = RxTally::default();
    rx.dev.enqueue_burst(tx.dev.burst().iter(), HDR, &mut t);
    rx.dev.flush();
    tx.dev.complete_burst();
    assert_eq!(t.packets, 10);
    for (&(id, len), f) in rx.drv.reap_all().iter().zip(&frames) {
        let mut b = vec![0u8; len as usize];
        rx.mem.read(rx.drv.buf(id), &mut b).unwrap();
        assert_eq!(&b[HDR..], &f[..]);
    }
}

#[test]
fn packed_in_order_burst_goes_back_as_one_used_descriptor() {
    let mut r = rig_with(64, features(true, true, false), true);
    for i in 0..5 {
        post_tx(&mut r, i, &frame(64, i as u8));
    }
    r.drv.ndesc[4] = 5; // the driver skips the whole batch at id 4
    assert_eq!(r.dev.pop_tx_burst(), 5);
    r.dev.complete_burst();
    assert_eq!(r.drv.reap_all(), vec![(4, 0)]);
    assert!(
        !is_used(r.drv.ring.read_desc(1).flags, true),
        "the rest of the batch is not written"
    );
    assert_eq!(r.drv.used.pos, 5);
    // Still one used descriptor per buffer for receive queues (each has its own length).
    for id in 5..8 {
        post_rx(&mut r, id, BUF);
    }
    for _ in 0..3 {
        r.dev.enqueue(Source::Bytes(&frame(70, 0))).unwrap();
    }
    r.dev.flush();
    assert_eq!(r.drv.reap_all().len(), 3);
}

#[test]
fn packed_vring_base_resumes_where_it_stopped() {
    let mut r = rig(8);
    for i in 0..6 {
        post_tx(&mut r, i, &frame(64, 0));
    }
    assert_eq!(r.dev.pop_tx_burst(), 6);
    r.dev.complete_burst();
    r.drv.reap_all();
    let base = r.dev.vring_base();
    assert_eq!(base & 0xffff, 6 | 0x8000);
    let low = RingPos::decode(base as u16);
    r.dev = new_dev(
        &r.mem,
        r.layout,
        features(true, true, false),
        false,
        low,
        &r.call,
    );
    // Four more: the ring wraps at 8 under the resumed queue.
    for i in 0..4 {
        post_tx(&mut r, i, &frame(64, 1));
    }
    assert_eq!(r.dev.pop_tx_burst(), 4);
    r.dev.complete_burst();
    assert_eq!(r.drv.reap_all().len(), 4);
    assert_eq!(r.dev.vring_base() & 0xffff, 2, "position 2 of lap 0");
}

#[test]
fn packed_kicks_are_suppressed() {
    let r = rig(16);
    assert_eq!(r.drv.ring.device_event().1, RING_EVENT_FLAGS_DISABLE);
}

#[test]
fn packed_notification_follows_driver_event_flags() {
    let mut r = rig(64);
    drain(&r.call);
    r.drv.ring.set_driver_event(0, RING_EVENT_FLAGS_DISABLE);
    post_tx(&mut r, 0, &frame(64, 0));
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 0, "disabled");
    r.drv.ring.set_driver_event(0, RING_EVENT_FLAGS_ENABLE);
    for i in 1..4 {
        post_tx(&mut r, i, &frame(64, 0));
    }
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 1, "enabled: one per flush");
    r.dev.flush();
    assert_eq!(drain(&r.call), 0, "nothing new, nothing sent");
}

#[test]
fn packed_notification_with_event_idx_at_the_descriptor_asked() {
    let mut r = rig_with(8, features(true, true, true), false);
    drain(&r.call);
    // Wake me when descriptor 6 of lap 1 is used.
    r.drv
        .ring
        .set_driver_event(6 | 0x8000, RING_EVENT_FLAGS_DESC);
    for i in 0..4 {
        post_tx(&mut r, i, &frame(64, 0));
    }
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 0, "used 0..4: not yet");
    for i in 4..7 {
        post_tx(&mut r, i, &frame(64, 0));
    }
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 1, "used 4..7 passes 6");
    r.drv.reap_all();
    // An event in the next lap (position 1, wrap 0): used 7, 0 does not reach it, 1 does.
    r.drv.ring.set_driver_event(1, RING_EVENT_FLAGS_DESC);
    for i in 0..2 {
        post_tx(&mut r, i, &frame(64, 0));
    }
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 0, "used 7 and 0");
    post_tx(&mut r, 2, &frame(64, 0));
    r.dev.pop_tx_burst();
    r.dev.complete_burst();
    assert_eq!(drain(&r.call), 1, "used 1 of lap 0");
}

#[test]
fn packed_used_descriptors_are_dirty_logged() {
    let mut r = rig(64);
    let end = 0x1_0000_0000u64 + (4 << 20);
    let bytes = crate::dirty_log::log_bytes_for(end);
    let fd = crate::mmap::create_memfd("log", bytes, false).unwrap();
    let log = Arc::new(DirtyLog::map(fd, bytes, 0).unwrap());
    r.dev
        .set_log(Some(QueueLog::new(log.clone(), Some(0x1_0000_0000))));
    assert!(r.dev.logging());
    // Clear what start-up marked, then see what one packet marks.
    let page_bit = |gpa: u64| {
        let page = gpa / 4096;
        log.byte((page / 8) as usize).unwrap() & (1 << (page % 8)) != 0
    };
    let desc_gpa = r
        .mem
        .device_view()
        .unwrap()
        .uva_to_gpa(r.layout.desc_uva)
        .unwrap();
    assert!(page_bit(desc_gpa), "the ring is marked when logging starts");
    post_rx(&mut r, 5, BUF);
    r.dev.enqueue(Source::Bytes(&frame(80, 0))).unwrap();
    r.dev.flush();
    assert!(page_bit(r.drv.buf(5)), "the buffer written");
    assert_eq!(r.drv.reap(), Some((5, (HDR + 80) as u32)));
}

// ---- hostile input ----

fn good(r: &Rig, id: u16) -> (u64, u32, u16) {
    let g = r.drv.buf(id);
    r.mem.write(g, &[0u8; HDR]).unwrap();
    r.mem.write(g + HDR as u64, &frame(64, 0)).unwrap();
    (g, (HDR + 64) as u32, 0)
}

fn expect_refused(r: &mut Rig, why: ChainError, id: u16) {
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert_eq!(r.dev.counters().get(why), 1, "{}", why.name());
    assert_eq!(r.drv.reap(), Some((id, 0)), "returned used with length 0");
    assert!(!r.dev.is_broken());
    // The queue goes on.
    let last = r.drv.size - 1;
    let d = good(r, last);
    r.drv.post(last, &[d]);
    assert_eq!(r.dev.pop_tx_burst(), 1);
    r.dev.complete_burst();
}

#[test]
fn test_packed_wrap_counter_of_the_other_lap_on_head() {
    let mut r = rig(16);
    let (addr, len, _) = good(&r, 0);
    // Lap 1 wants AVAIL=1 USED=0; the driver lies with lap 0's bits.
    r.drv.post_raw(PackedDesc {
        addr,
        len,
        id: 0,
        flags: avail_flags(false),
    });
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert_eq!(r.dev.available(), 0);
    assert!(!r.dev.is_broken(), "not available is not an error");
    assert_eq!(r.dev.counters().total_errors(), 0);
}

#[test]
fn test_packed_avail_and_used_flags_both_set() {
    let mut r = rig(16);
    let (addr, len, _) = good(&r, 0);
    r.drv.post_raw(PackedDesc {
        addr,
        len,
        id: 0,
        flags: VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED,
    });
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert!(!r.dev.is_broken());
    assert_eq!(r.dev.counters().total_errors(), 0);
    assert_eq!(r.dev.vring_base() & 0xffff, 0x8000, "nothing consumed");
}

#[test]
fn test_packed_chain_continuation_with_lying_wrap_counter() {
    let mut r = rig(16);
    let (addr, len, _) = good(&r, 0);
    // Head says available and "more follows"; the next descriptor carries the other lap's bits.
    r.drv.ring.write_desc(
        1,
        PackedDesc {
            addr,
            len,
            id: 0,
            flags: avail_flags(false),
        },
    );
    r.drv.ring.write_desc(
        0,
        PackedDesc {
            addr,
            len: HDR as u32,
            id: 0,
            flags: avail_flags(true) | VRING_DESC_F_NEXT,
        },
    );
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert!(r.dev.is_broken());
    assert_eq!(r.dev.counters().get(ChainError::WrapMismatch), 1);
    assert_eq!(r.drv.reap(), None);
    // Broken means untouched: nothing more is read.
    let d = good(&r, 3);
    r.drv.next = RingPos { pos: 2, wrap: true };
    r.drv.post(3, &[d]);
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
}

#[test]
fn test_packed_id_out_of_range() {
    let mut r = rig(16);
    let d = good(&r, 0);
    r.drv.post(0, &[d]);
    // Rewrite the id past the queue size, flags unchanged.
    let mut raw = r.drv.ring.read_desc(0);
    raw.id = 16;
    r.drv.ring.write_desc(0, raw);
    let d = good(&r, 1);
    r.drv.post(1, &[d]);
    assert_eq!(r.dev.pop_tx_burst(), 1, "the good chain after it is taken");
    assert_eq!(r.dev.burst()[0].head(), 1);
    r.dev.complete_burst();
    assert_eq!(r.dev.counters().get(ChainError::IdOutOfRange), 1);
    assert_eq!(r.drv.reap(), Some((1, 0)), "the bad id is never returned");
    assert!(!r.dev.is_broken());
}

#[test]
fn test_packed_chain_past_queue_size() {
    let mut r = rig(8);
    let (addr, len, _) = good(&r, 0);
    // Every descriptor of the ring says "more follows".
    for i in (0..8u16).rev() {
        r.drv.ring.write_desc(
            i,
            PackedDesc {
                addr,
                len,
                id: 0,
                flags: avail_flags(true) | VRING_DESC_F_NEXT,
            },
        );
    }
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert!(r.dev.is_broken());
    assert_eq!(r.dev.counters().get(ChainError::ChainLoop), 1);
}

fn post_indirect(r: &mut Rig, id: u16, entries: &[(u64, u32, u16)], table_flags: u16) {
    let t = r.drv.buf(id) + 1024;
    let mut table = Vec::new();
    for &(a, l, f) in entries {
        table.extend_from_slice(&a.to_le_bytes());
        table.extend_from_slice(&l.to_le_bytes());
        table.extend_from_slice(&0u16.to_le_bytes());
        table.extend_from_slice(&f.to_le_bytes());
    }
    r.mem.write(t, &table).unwrap();
    r.drv.post(
        id,
        &[(t, table.len() as u32, VRING_DESC_F_INDIRECT | table_flags)],
    );
}

#[test]
fn test_packed_nested_indirect() {
    let mut r = rig(16);
    let d = good(&r, 0);
    let inner = r.drv.buf(2);
    post_indirect(&mut r, 0, &[d, (inner, 16, VRING_DESC_F_INDIRECT)], 0);
    expect_refused(&mut r, ChainError::NestedIndirect, 0);
}

#[test]
fn packed_tx_indirect_entry_marked_writable_is_read() {
    // DPDK's virtio PMD marks the header entry of its transmit indirect tables WRITE.
    let mut r = rig(16);
    let (a, l, _) = good(&r, 0);
    post_indirect(
        &mut r,
        0,
        &[
            (a, HDR as u32, VRING_DESC_F_WRITE),
            (a + HDR as u64, l - HDR as u32, 0),
        ],
        0,
    );
    assert_eq!(r.dev.pop_tx_burst(), 1);
    assert_eq!(chain_bytes(&r.dev.burst()[0], HDR), frame(64, 0));
    r.dev.complete_burst();
    // Receive tables stay strict: a device-readable entry is refused.
    let b1 = r.drv.buf(1);
    post_indirect(&mut r, 1, &[(b1, 1024, 0)], 0);
    let f = frame(64, 0);
    let mut t = RxTally::default();
    r.dev
        .enqueue_sources([Source::Bytes(&f)].into_iter(), &mut t);
    r.dev.flush();
    assert_eq!(r.dev.counters().get(ChainError::WrongDirection), 1);
}

#[test]
fn test_packed_indirect_descriptor_inside_a_chain() {
    let mut r = rig(16);
    let d = good(&r, 0);
    let t = r.drv.buf(1);
    r.drv.post(0, &[d, (t, 16, VRING_DESC_F_INDIRECT)]);
    r.drv.ndesc[0] = 2;
    expect_refused(&mut r, ChainError::IndirectNotAllowed, 0);
    assert_eq!(
        r.dev.vring_base() & 0x7fff,
        3,
        "the whole chain was skipped"
    );
}

#[test]
fn test_packed_indirect_without_feature() {
    let mut r = rig_with(16, features(false, true, false), false);
    let d = good(&r, 0);
    post_indirect(&mut r, 0, &[d], 0);
    expect_refused(&mut r, ChainError::IndirectNotAllowed, 0);
}

#[test]
fn test_packed_indirect_bad_length() {
    let mut r = rig(16);
    let t = r.drv.buf(0);
    r.drv.post(0, &[(t, 24, VRING_DESC_F_INDIRECT)]);
    expect_refused(&mut r, ChainError::IndirectBadLength, 0);
}

#[test]
fn test_packed_indirect_table_longer_than_queue() {
    let mut r = rig(4);
    let d = good(&r, 0);
    post_indirect(&mut r, 0, &[d; 5], 0);
    expect_refused(&mut r, ChainError::ChainTooLong, 0);
}

#[test]
fn test_packed_address_unmapped() {
    let mut r = rig(16);
    r.drv.post(0, &[(0x10, 100, 0)]);
    expect_refused(&mut r, ChainError::AddressUnmapped, 0);
}

/// A buffer that starts inside guest memory and runs past its end: the one-region fast case
/// (the largest region's span) must refuse it as the region table would.
#[test]
fn test_packed_tx_buffer_past_end_of_region() {
    let mut r = rig(16);
    let end = r.mem.region_desc().guest_phys_addr + r.mem.region_desc().memory_size;
    r.drv.post(0, &[(end - 40, 80, 0)]);
    expect_refused(&mut r, ChainError::AddressUnmapped, 0);
}

#[test]
fn test_packed_tx_device_writable_descriptor() {
    let mut r = rig(16);
    let (a, l, _) = good(&r, 0);
    r.drv.post(0, &[(a, l, VRING_DESC_F_WRITE)]);
    expect_refused(&mut r, ChainError::WrongDirection, 0);
}

#[test]
fn test_packed_tx_chain_shorter_than_header() {
    let mut r = rig(16);
    let g = r.drv.buf(0);
    r.drv.post(0, &[(g, 8, 0)]);
    expect_refused(&mut r, ChainError::TooShort, 0);
}

#[test]
fn test_packed_rx_device_readable_descriptor() {
    let mut r = rig(16);
    let g = r.drv.buf(0);
    r.drv.post(0, &[(g, BUF, 0)]);
    post_rx(&mut r, 1, BUF);
    let f = frame(64, 0);
    let mut t = RxTally::default();
    r.dev
        .enqueue_sources([Source::Bytes(&f), Source::Bytes(&f)].into_iter(), &mut t);
    r.dev.flush();
    assert_eq!((t.bad_buffers, t.packets), (1, 1));
    assert_eq!(r.dev.counters().get(ChainError::WrongDirection), 1);
    assert_eq!(r.drv.reap_all(), vec![(0, 0), (1, (HDR + 64) as u32)]);
}

#[test]
fn test_packed_rx_no_buffers() {
    let mut r = rig(16);
    let f = frame(64, 0);
    let mut t = RxTally::default();
    r.dev
        .enqueue_sources([Source::Bytes(&f), Source::Bytes(&f)].into_iter(), &mut t);
    assert_eq!((t.no_buffers, t.packets), (2, 0));
    assert!(!r.dev.is_broken());
}

#[test]
fn test_packed_rx_mergeable_not_enough_buffers_consumes_nothing() {
    let mut r = rig(16);
    post_rx(&mut r, 0, 1024);
    post_rx(&mut r, 1, 1024);
    let big = frame(5000, 0);
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&big)),
        Err(crate::virtq::RxError::NoBuffers)
    );
    r.dev.flush();
    assert_eq!(r.drv.reap(), None);
    // The buffers are still there for a frame that fits.
    r.dev.enqueue(Source::Bytes(&frame(1500, 0))).unwrap();
    r.dev.flush();
    assert_eq!(r.drv.reap_all().len(), 2);
}

#[test]
fn test_packed_ring_outside_guest_memory() {
    let r = rig(16);
    let bad = PackedLayout {
        desc_uva: 0x1000,
        ..r.layout
    };
    let mk = |l: PackedLayout, base: RingPos| {
        DeviceQueue::new_packed(
            r.mem.device_view().unwrap(),
            l,
            features(true, true, false),
            false,
            base,
            base,
            None,
            Arc::new(QueueCounters::default()),
        )
    };
    assert!(mk(bad, FRESH).is_err());
    let past_end = PackedLayout {
        device_uva: r.layout.desc_uva + (4 << 20) - 2,
        ..r.layout
    };
    assert!(mk(past_end, FRESH).is_err());
    assert!(mk(
        r.layout,
        RingPos {
            pos: 16,
            wrap: true
        }
    )
    .is_err());
    assert!(mk(r.layout, FRESH).is_ok());
}

//! Device-side queue tests against a mock driver writing real descriptors into real shared
//! memory. Negative tests are named after the bad input.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::driver::{DriverMemory, DriverQueue};
use crate::ring::{Descriptor, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::AsFd;

const HDR: usize = 12;

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
    drv: DriverQueue,
    dev: DeviceQueue,
    call: EventFd,
}

fn rig_with(size: u16, buf: u32, f: QueueFeatures) -> Rig {
    let mut mem = DriverMemory::new("virtq-test", 4 << 20, false).unwrap();
    let drv = DriverQueue::new(&mut mem, size, buf, HDR).unwrap();
    let call = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    let call_dup = call.as_fd().try_clone_to_owned().unwrap();
    let dev_call = eventfd_from(call_dup);
    let dev = DeviceQueue::new(
        mem.device_view().unwrap(),
        drv.layout(),
        f,
        0,
        Some(dev_call),
        Arc::new(QueueCounters::default()),
    )
    .unwrap();
    Rig {
        mem,
        drv,
        dev,
        call,
    }
}

fn rig(size: u16) -> Rig {
    rig_with(size, 2048, features(true, true, false))
}

fn eventfd_from(fd: std::os::fd::OwnedFd) -> EventFd {
    // SAFETY: `fd` is a duplicate of an eventfd created just above.
    unsafe { EventFd::from_owned_fd(fd) }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f
}

fn chain_bytes(c: &Chain, skip: usize) -> Vec<u8> {
    let mut v = vec![0u8; c.len() - skip];
    assert_eq!(c.read(skip, &mut v), v.len());
    v
}

#[test]
fn tx_burst_roundtrip() {
    let mut r = rig(256);
    let frames: Vec<_> = (0..40).map(|i| frame(60 + i, i as u8)).collect();
    for f in &frames {
        assert!(r.drv.push_tx(f));
    }
    r.drv.publish();
    assert_eq!(r.dev.pop_tx_burst(), BURST);
    for (i, c) in r.dev.burst().iter().enumerate() {
        assert_eq!(chain_bytes(c, HDR), frames[i]);
    }
    r.dev.complete_burst();
    assert_eq!(r.dev.pop_tx_burst(), 8);
    r.dev.complete_burst();
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert_eq!(r.drv.reclaim(), 40);
    assert_eq!(r.drv.errors, Default::default());
    assert_eq!(r.dev.last_avail(), 40);
}

#[test]
fn walk_available_reads_without_consuming() {
    let mut r = rig(64);
    for i in 0..10 {
        assert!(r.drv.push_tx(&frame(60, i)));
    }
    r.drv.publish();
    assert_eq!(r.dev.walk_available(4, false), 4);
    assert_eq!(
        r.dev.walk_available(100, false),
        10,
        "bounded by what is available"
    );
    // Transmit buffers are not device-writable: refused as receive buffers, and not counted.
    assert_eq!(r.dev.walk_available(10, true), 0);
    assert_eq!(r.dev.counters().total_errors(), 0);
    assert_eq!(r.dev.last_avail(), 0);
    assert_eq!(r.drv.raw().used_idx(), 0, "used ring untouched");
    assert_eq!(r.dev.pop_tx_burst(), 10, "every chain still there");
    r.dev.complete_burst();
}

#[test]
fn rx_enqueue_bytes_roundtrip() {
    let mut r = rig(64);
    r.drv.refill_rx();
    let f = frame(100, 3);
    r.dev.enqueue(Source::Bytes(&f)).unwrap();
    r.dev.flush();
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    assert_eq!(r.drv.recv(8, &mut scratch, |b| got.push(b.to_vec())), 1);
    assert_eq!(got, vec![f]);
}

#[test]
fn jumbo_frame_chain_to_chain_with_mergeable_buffers() {
    // Guest A transmits a 9018-byte frame split over three descriptors; guest B receives it in
    // 2 KiB mergeable buffers.
    let mut a = rig(64);
    let mut b = rig_with(64, 2048, features(true, true, false));
    b.drv.refill_rx();
    let f = frame(9018, 9);
    let mut payload = vec![0u8; HDR];
    payload.extend_from_slice(&f);
    let base = a.drv.buf_gpa(0);
    a.mem.write(base, &payload).unwrap();
    let parts = [
        (0u64, 100u32),
        (100, 5000),
        (5100, (payload.len() - 5100) as u32),
    ];
    for (i, (off, len)) in parts.iter().enumerate() {
        a.drv.raw().write_desc(
            i as u16,
            Descriptor {
                addr: base + off,
                len: *len,
                flags: if i < 2 { VRING_DESC_F_NEXT } else { 0 },
                next: i as u16 + 1,
            },
        );
    }
    a.drv.push_avail(0);
    a.drv.publish();
    assert_eq!(a.dev.pop_tx_burst(), 1);
    let c = &a.dev.burst()[0];
    b.dev.enqueue(Source::Chain(c, HDR)).unwrap();
    a.dev.complete_burst();
    b.dev.flush();
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    assert_eq!(b.drv.recv(8, &mut scratch, |x| got.push(x.to_vec())), 1);
    assert_eq!(got[0].len(), f.len());
    assert_eq!(got[0], f);
    assert_eq!(b.drv.errors, Default::default());
}

fn publish_desc(r: &mut Rig, head: u16, d: Descriptor) {
    r.drv.raw().write_desc(head, d);
    r.drv.push_avail(head);
    r.drv.publish();
}

fn good_tx_desc(r: &Rig, id: u16) -> Descriptor {
    Descriptor {
        addr: r.drv.buf_gpa(id),
        len: 80,
        flags: 0,
        next: 0,
    }
}

/// Pops a burst expecting every chain to be refused for `why`, returned used with length 0, and
/// the queue still serving a good chain afterwards.
fn expect_refused(r: &mut Rig, why: ChainError, refused: u64) {
    assert_eq!(r.dev.pop_tx_burst(), 0, "bad chain must not be delivered");
    r.dev.complete_burst();
    assert_eq!(r.dev.counters().get(why), refused, "{why:?} counter");
    // The refused chain went back used, length 0, id = head (when the head was in range).
    if why != ChainError::HeadOutOfRange {
        assert_eq!(r.drv.raw().used_idx(), refused as u16);
    }
    let id = 7;
    let d = good_tx_desc(r, id);
    publish_desc(r, id, d);
    assert_eq!(r.dev.pop_tx_burst(), 1, "queue keeps serving good chains");
    r.dev.complete_burst();
}

#[test]
fn test_tx_head_out_of_range() {
    let mut r = rig(64);
    r.drv.push_avail(64);
    r.drv.publish();
    expect_refused(&mut r, ChainError::HeadOutOfRange, 1);
}

#[test]
fn test_tx_next_out_of_range() {
    let mut r = rig(64);
    let mut d = good_tx_desc(&r, 0);
    d.flags = VRING_DESC_F_NEXT;
    d.next = 64;
    publish_desc(&mut r, 0, d);
    expect_refused(&mut r, ChainError::NextOutOfRange, 1);
}

#[test]
fn test_tx_descriptor_loop() {
    let mut r = rig(64);
    // Zero-length buffers, so the loop is what stops the walk (not the segment limit).
    let mut d0 = good_tx_desc(&r, 0);
    d0.flags = VRING_DESC_F_NEXT;
    d0.next = 1;
    d0.len = 0;
    let mut d1 = good_tx_desc(&r, 1);
    d1.flags = VRING_DESC_F_NEXT;
    d1.next = 0;
    d1.len = 0;
    r.drv.raw().write_desc(1, d1);
    publish_desc(&mut r, 0, d0);
    expect_refused(&mut r, ChainError::ChainLoop, 1);
}

#[test]
fn test_tx_self_loop() {
    let mut r = rig(64);
    let mut d = good_tx_desc(&r, 3);
    d.flags = VRING_DESC_F_NEXT;
    d.next = 3;
    d.len = 0;
    publish_desc(&mut r, 3, d);
    expect_refused(&mut r, ChainError::ChainLoop, 1);
}

fn write_indirect(r: &mut Rig, table_id: u16, entries: &[Descriptor]) -> u64 {
    let gpa = r.drv.buf_gpa(table_id);
    let mut bytes = Vec::new();
    for e in entries {
        bytes.extend_from_slice(&e.addr.to_le_bytes());
        bytes.extend_from_slice(&e.len.to_le_bytes());
        bytes.extend_from_slice(&e.flags.to_le_bytes());
        bytes.extend_from_slice(&e.next.to_le_bytes());
    }
    r.mem.write(gpa, &bytes).unwrap();
    gpa
}

#[test]
fn indirect_chain_is_read() {
    let mut r = rig(64);
    let f = frame(64, 1);
    let mut pkt = vec![0u8; HDR];
    pkt.extend_from_slice(&f);
    r.mem.write(r.drv.buf_gpa(5), &pkt[..HDR]).unwrap();
    r.mem.write(r.drv.buf_gpa(6), &pkt[HDR..]).unwrap();
    let entries = [
        Descriptor {
            addr: r.drv.buf_gpa(5),
            len: HDR as u32,
            flags: VRING_DESC_F_NEXT,
            next: 1,
        },
        Descriptor {
            addr: r.drv.buf_gpa(6),
            len: f.len() as u32,
            flags: 0,
            next: 0,
        },
    ];
    let t = write_indirect(&mut r, 4, &entries);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: t,
            len: 32,
            flags: VRING_DESC_F_INDIRECT,
            next: 0,
        },
    );
    assert_eq!(r.dev.pop_tx_burst(), 1);
    assert_eq!(chain_bytes(&r.dev.burst()[0], HDR), f);
    r.dev.complete_burst();
}

#[test]
fn test_tx_nested_indirect() {
    let mut r = rig(64);
    let inner = Descriptor {
        addr: r.drv.buf_gpa(9),
        len: 16,
        flags: VRING_DESC_F_INDIRECT,
        next: 0,
    };
    let t = write_indirect(&mut r, 4, &[inner]);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: t,
            len: 16,
            flags: VRING_DESC_F_INDIRECT,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::NestedIndirect, 1);
}

#[test]
fn test_tx_indirect_without_feature() {
    let mut r = rig_with(64, 2048, features(false, true, false));
    let t = write_indirect(&mut r, 4, &[Descriptor::default()]);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: t,
            len: 16,
            flags: VRING_DESC_F_INDIRECT,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::IndirectNotAllowed, 1);
}

#[test]
fn test_tx_indirect_bad_length() {
    let mut r = rig(64);
    let t = r.drv.buf_gpa(4);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: t,
            len: 17,
            flags: VRING_DESC_F_INDIRECT,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::IndirectBadLength, 1);
}

#[test]
fn test_tx_indirect_next_out_of_table() {
    let mut r = rig(64);
    let e = Descriptor {
        addr: r.drv.buf_gpa(9),
        len: 40,
        flags: VRING_DESC_F_NEXT,
        next: 1,
    };
    let t = write_indirect(&mut r, 4, &[e]);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: t,
            len: 16,
            flags: VRING_DESC_F_INDIRECT,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::NextOutOfRange, 1);
}

#[test]
fn test_tx_address_unmapped() {
    let mut r = rig(64);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: 0x10,
            len: 80,
            flags: 0,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::AddressUnmapped, 1);
}

#[test]
fn test_tx_address_length_overflow() {
    let mut r = rig(64);
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: u64::MAX - 8,
            len: 80,
            flags: 0,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::AddressUnmapped, 1);
}

#[test]
fn test_tx_buffer_past_end_of_region() {
    let mut r = rig(64);
    let end = r.mem.region_desc().guest_phys_addr + r.mem.region_desc().memory_size;
    publish_desc(
        &mut r,
        0,
        Descriptor {
            addr: end - 40,
            len: 80,
            flags: 0,
            next: 0,
        },
    );
    expect_refused(&mut r, ChainError::AddressUnmapped, 1);
}

#[test]
fn test_tx_device_writable_descriptor() {
    let mut r = rig(64);
    let mut d = good_tx_desc(&r, 0);
    d.flags = VRING_DESC_F_WRITE;
    publish_desc(&mut r, 0, d);
    expect_refused(&mut r, ChainError::WrongDirection, 1);
}

#[test]
fn test_tx_chain_shorter_than_header() {
    let mut r = rig(64);
    let mut d = good_tx_desc(&r, 0);
    d.len = 8;
    publish_desc(&mut r, 0, d);
    expect_refused(&mut r, ChainError::TooShort, 1);
}

#[test]
fn test_tx_too_many_segments() {
    let mut r = rig(64);
    for i in 0..(MAX_SEGS as u16 + 1) {
        r.drv.raw().write_desc(
            i,
            Descriptor {
                addr: r.drv.buf_gpa(i),
                len: 8,
                flags: VRING_DESC_F_NEXT,
                next: i + 1,
            },
        );
    }
    r.drv.raw().write_desc(
        MAX_SEGS as u16 + 1,
        Descriptor {
            addr: r.drv.buf_gpa(20),
            len: 8,
            flags: 0,
            next: 0,
        },
    );
    r.drv.push_avail(0);
    r.drv.publish();
    expect_refused(&mut r, ChainError::ChainTooLong, 1);
}

#[test]
fn test_avail_idx_more_than_a_queue_ahead() {
    let mut r = rig(64);
    r.drv.raw().set_avail_idx(65);
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert!(r.dev.is_broken());
    assert_eq!(r.dev.counters().get(ChainError::AvailOverrun), 1);
    // A broken queue stays quiet, even when the index looks sane again.
    r.drv.raw().set_avail_idx(1);
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&[0u8; 60])),
        Err(RxError::Broken)
    );
}

#[test]
fn test_descriptor_changed_between_check_and_use() {
    let mut r = rig(64);
    let f = frame(70, 4);
    assert!(r.drv.push_tx(&f));
    r.drv.publish();
    assert_eq!(r.dev.pop_tx_burst(), 1);
    // The guest now points the descriptor somewhere unmapped and flips it writable: the walked
    // copy is what the device uses, so nothing changes for it.
    r.drv.raw().write_desc(
        0,
        Descriptor {
            addr: 0x10,
            len: u32::MAX,
            flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
            next: 0,
        },
    );
    assert_eq!(chain_bytes(&r.dev.burst()[0], HDR), f);
    r.dev.complete_burst();
    assert_eq!(r.drv.reclaim(), 1);
}

#[test]
fn test_rx_device_readable_descriptor() {
    let mut r = rig(64);
    let d = good_tx_desc(&r, 0); // readable: wrong for RX
    publish_desc(&mut r, 0, d);
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&frame(60, 0))),
        Err(RxError::BadChain)
    );
    r.dev.flush();
    assert_eq!(r.dev.counters().get(ChainError::WrongDirection), 1);
    assert_eq!(r.drv.raw().used_idx(), 1);
    assert_eq!(r.drv.raw().used_elem(0), (0, 0));
}

#[test]
fn test_rx_no_buffers() {
    let mut r = rig(64);
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&frame(60, 0))),
        Err(RxError::NoBuffers)
    );
    assert_eq!(r.dev.counters().rx_no_buffers.load(Ordering::Relaxed), 1);
}

#[test]
fn test_rx_buffer_too_small_without_mrg_rxbuf() {
    let mut r = rig_with(64, 256, features(true, false, false));
    r.drv.refill_rx();
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&frame(1000, 0))),
        Err(RxError::BufferTooSmall)
    );
    // Not consumed: a frame that fits still goes into the same buffer.
    r.dev.enqueue(Source::Bytes(&frame(100, 0))).unwrap();
    r.dev.flush();
    let mut scratch = Vec::new();
    let mut n = 0;
    r.drv.recv(8, &mut scratch, |b| {
        assert_eq!(b.len(), 100);
        n += 1;
    });
    assert_eq!(n, 1);
}

#[test]
fn test_rx_mergeable_not_enough_buffers_consumes_nothing() {
    let mut r = rig_with(4, 1024, features(true, true, false));
    r.drv.refill_rx();
    assert_eq!(
        r.dev.enqueue(Source::Bytes(&frame(9000, 0))),
        Err(RxError::NoBuffers)
    );
    assert_eq!(r.dev.last_avail(), 0);
    r.dev.enqueue(Source::Bytes(&frame(3000, 0))).unwrap();
    assert_eq!(r.dev.last_avail(), 3);
}

#[test]
fn test_ring_outside_guest_memory() {
    let mut mem = DriverMemory::new("virtq-test", 1 << 20, false).unwrap();
    let drv = DriverQueue::new(&mut mem, 64, 256, HDR).unwrap();
    let mut layout = drv.layout();
    layout.used_uva += 1 << 20;
    let r = DeviceQueue::new(
        mem.device_view().unwrap(),
        layout,
        features(true, true, false),
        0,
        None,
        Default::default(),
    );
    assert!(r.is_err());
    // A ring crossing the end of the region.
    let mut layout = drv.layout();
    layout.desc_uva = mem.region_desc().userspace_addr + (1 << 20) - 512;
    assert!(DeviceQueue::new(
        mem.device_view().unwrap(),
        layout,
        features(true, true, false),
        0,
        None,
        Default::default(),
    )
    .is_err());
}

#[test]
fn test_queue_size_not_power_of_two() {
    let mut mem = DriverMemory::new("virtq-test", 1 << 20, false).unwrap();
    let drv = DriverQueue::new(&mut mem, 64, 256, HDR).unwrap();
    let mut layout = drv.layout();
    layout.size = 48;
    assert!(DeviceQueue::new(
        mem.device_view().unwrap(),
        layout,
        features(true, true, false),
        0,
        None,
        Default::default()
    )
    .is_err());
}

fn drain(call: &EventFd) -> u64 {
    call.read().unwrap_or(0)
}

#[test]
fn notification_respects_no_interrupt_flag() {
    let mut r = rig(64);
    r.drv.refill_rx();
    r.drv.set_interrupts(false);
    r.dev.enqueue(Source::Bytes(&frame(60, 0))).unwrap();
    r.dev.flush();
    assert_eq!(drain(&r.call), 0);
    r.drv.set_interrupts(true);
    r.dev.enqueue(Source::Bytes(&frame(60, 0))).unwrap();
    r.dev.flush();
    assert_eq!(drain(&r.call), 1);
}

#[test]
fn notification_with_event_idx_once_per_burst() {
    let mut r = rig_with(64, 2048, features(true, true, true));
    r.drv.refill_rx();
    // The driver wants to hear when used index passes 0 (i.e. on the first entry).
    r.drv.raw().set_used_event(0);
    for _ in 0..5 {
        r.dev.enqueue(Source::Bytes(&frame(60, 0))).unwrap();
    }
    r.dev.flush();
    assert_eq!(drain(&r.call), 1, "one notification for a burst");
    // used_event still 0: already passed, no new notification.
    r.dev.enqueue(Source::Bytes(&frame(60, 0))).unwrap();
    r.dev.flush();
    assert_eq!(drain(&r.call), 0);
    // Ask again at index 7: the next entry (index 6 -> 7) crosses it.
    r.drv.raw().set_used_event(6);
    r.dev.enqueue(Source::Bytes(&frame(60, 0))).unwrap();
    r.dev.flush();
    assert_eq!(drain(&r.call), 1);
}

#[test]
fn kicks_are_suppressed() {
    let r = rig_with(64, 2048, features(true, true, true));
    assert_eq!(
        r.drv.raw().used_flags() & crate::ring::VRING_USED_F_NO_NOTIFY,
        1
    );
    assert_eq!(r.drv.raw().avail_event(), u16::MAX);
}

/// Frames popped from a transmitting guest, for `enqueue_burst` tests.
fn tx_with_frames(frames: &[Vec<u8>]) -> Rig {
    let mut tx = rig_with(256, 8192, features(true, true, false));
    for f in frames {
        assert!(tx.drv.push_tx(f));
    }
    tx.drv.publish();
    assert_eq!(tx.dev.pop_tx_burst(), frames.len());
    tx
}

fn received(r: &mut Rig) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    r.drv.recv(256, &mut Vec::new(), |b| got.push(b.to_vec()));
    got
}

#[test]
fn enqueue_burst_delivers_in_order() {
    let frames: Vec<_> = (0..20).map(|i| frame(60 + 30 * i, i as u8)).collect();
    let tx = tx_with_frames(&frames);
    let mut rx = rig(64);
    rx.drv.refill_rx();
    let mut t = RxTally::default();
    rx.dev.enqueue_burst(tx.dev.burst().iter(), HDR, &mut t);
    rx.dev.flush();
    assert_eq!(t.packets, 20);
    assert_eq!(t.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(received(&mut rx), frames);
}

#[test]
fn test_enqueue_burst_runs_out_of_buffers() {
    let frames: Vec<_> = (0..20).map(|i| frame(64, i as u8)).collect();
    let tx = tx_with_frames(&frames);
    let mut rx = rig(8);
    rx.drv.refill_rx();
    let mut t = RxTally::default();
    rx.dev.enqueue_burst(tx.dev.burst().iter(), HDR, &mut t);
    rx.dev.flush();
    assert_eq!((t.packets, t.no_buffers), (8, 12));
    assert_eq!(received(&mut rx), frames[..8].to_vec());
}

#[test]
fn test_enqueue_burst_jumbo_needs_several_buffers_midway() {
    // Frame 1 is larger than one 2 KiB buffer: it leaves the simple case and takes three
    // mergeable buffers; frames 0 and 2 stay simple. Order is kept.
    let frames = vec![frame(100, 1), frame(5000, 2), frame(100, 3)];
    let tx = tx_with_frames(&frames);
    let mut rx = rig(64);
    rx.drv.refill_rx();
    let mut t = RxTally::default();
    rx.dev.enqueue_burst(tx.dev.burst().iter(), HDR, &mut t);
    rx.dev.flush();
    assert_eq!(t.packets, 3);
    assert_eq!(received(&mut rx), frames);
}

#[test]
fn test_enqueue_burst_bad_receive_descriptor_midway() {
    let frames: Vec<_> = (0..4).map(|i| frame(80, i as u8)).collect();
    let tx = tx_with_frames(&frames);
    let mut rx = rig(64);
    // Buffers 0, 1 good; 2 unmapped; 3.. good.
    for id in 0..8u16 {
        let addr = if id == 2 { 0x10 } else { rx.drv.buf_gpa(id) };
        rx.drv.raw().write_desc(
            id,
            Descriptor {
                addr,
                len: 2048,
                flags: VRING_DESC_F_WRITE,
                next: 0,
            },
        );
        rx.drv.push_avail(id);
    }
    rx.drv.publish();
    let mut t = RxTally::default();
    rx.dev.enqueue_burst(tx.dev.burst().iter(), HDR, &mut t);
    rx.dev.flush();
    assert_eq!((t.packets, t.bad_buffers), (3, 1));
    assert_eq!(rx.dev.counters().get(ChainError::AddressUnmapped), 1);
    // Used entries in avail order: 0, 1, 2 (refused, length 0), 3 (the frame that buffer 2
    // should have taken is the one dropped).
    assert_eq!(rx.drv.raw().used_idx(), 4);
    let used: Vec<_> = (0..4).map(|i| rx.drv.raw().used_elem(i)).collect();
    assert_eq!(used[2], (2, 0));
    assert_eq!(
        used.iter().map(|u| u.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // Buffer 3 holds frame 3 behind a header saying one buffer.
    let mut b = vec![0u8; HDR + 80];
    rx.mem.read(rx.drv.buf_gpa(3), &mut b).unwrap();
    assert_eq!(&b[..HDR], &crate::net::rx_header(1)[..]);
    assert_eq!(&b[HDR..], &frames[3][..]);
}

#[test]
fn rx_merged_frames_straddling_the_receive_batch_are_whole_and_in_order() {
    // 2 KiB mergeable buffers; frames of one to three buffers, so some span the end of a
    // receive batch (RX_BATCH used entries) and their last buffers come from the ring.
    let mut r = rig_with(256, 2048, features(false, true, false));
    r.drv.refill_rx();
    let sizes: Vec<usize> = (0..60).map(|i| [60, 3000, 5000, 1500][i % 4]).collect();
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(n, i as u8))
        .collect();
    for f in &frames {
        r.dev.enqueue(Source::Bytes(f)).unwrap();
    }
    r.dev.flush();
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    // Fewer frames than are waiting: exactly `max` are taken, the rest stay for the next call.
    assert_eq!(r.drv.recv(7, &mut scratch, |b| got.push(b.to_vec())), 7);
    assert_eq!(
        r.drv.recv(1000, &mut scratch, |b| got.push(b.to_vec())),
        frames.len() - 7
    );
    assert_eq!(got, frames);
    assert_eq!(r.drv.errors, Default::default());
    assert!(crate::driver::RX_BATCH < sizes.iter().map(|n| n.div_ceil(2036)).sum());
}

#[path = "virtq_records_tests.rs"]
mod records;

#[path = "virtq_in_order_tests.rs"]
mod in_order;

//! A transmit queue in order ([`DriverQueue::set_in_order`]) against the device side, which
//! returns chains in avail order; and against a device that lies about the used index.

use super::*;
use crate::driver::Areas;

fn in_order_rig(size: u16) -> Rig {
    let mut r = rig_with(size, 2048, features(false, false, false));
    assert!(r.drv.set_in_order());
    r
}

#[test]
fn in_order_transmit_laps_the_queue_and_delivers_every_frame_in_order() {
    let mut r = in_order_rig(16);
    let mut got = Vec::new();
    let frames: Vec<_> = (0..200).map(|i| frame(60 + i % 30, i as u8)).collect();
    let mut next = 0;
    while got.len() < frames.len() {
        r.drv.reclaim();
        while next < frames.len() && r.drv.push_tx(&frames[next]) {
            next += 1;
        }
        r.drv.publish();
        assert!(r.drv.free_count() <= 16);
        let k = r.dev.pop_tx_burst();
        for c in r.dev.burst() {
            got.push(chain_bytes(c, HDR));
        }
        assert!(k > 0, "the device always finds work here");
        r.dev.complete_burst();
    }
    assert_eq!(got, frames);
    r.drv.reclaim();
    assert_eq!(r.drv.reclaim(), 0, "nothing twice");
    assert_eq!(r.drv.free_count(), 16, "everything came back");
    assert_eq!(r.drv.errors, Default::default());
}

#[test]
fn in_order_queue_is_full_at_its_size() {
    let mut r = in_order_rig(8);
    for i in 0..8 {
        assert!(r.drv.push_tx(&frame(60, i)));
    }
    assert!(
        !r.drv.push_tx(&frame(60, 9)),
        "no ninth buffer in a queue of 8"
    );
    assert_eq!(r.drv.free_count(), 0);
}

#[test]
fn test_in_order_used_index_past_what_is_in_flight() {
    let mut r = in_order_rig(8);
    for i in 0..3 {
        assert!(r.drv.push_tx(&frame(60, i)));
    }
    r.drv.publish();
    // The device claims five back with three in flight: ignored, counted.
    r.drv.raw().set_used_idx(5);
    assert_eq!(r.drv.reclaim(), 0);
    assert_eq!(r.drv.errors.used_overrun, 1);
    assert_eq!(r.drv.free_count(), 5);
    // Garbage in the used entries themselves changes nothing: the index says how many.
    r.drv.raw().set_used_elem(0, 999, 1 << 30);
    r.drv.raw().set_used_idx(2);
    assert_eq!(r.drv.reclaim(), 2);
    assert_eq!(r.drv.free_count(), 7);
    assert_eq!(r.drv.errors.bad_used_id, 0);
}

#[test]
fn test_in_order_on_a_queue_already_used() {
    let mut r = rig_with(8, 2048, features(false, false, false));
    assert!(r.drv.push_tx(&frame(60, 1)));
    assert!(!r.drv.set_in_order(), "only a fresh queue switches");
    assert_eq!(r.drv.free_count(), 7);
}

/// An in-order transmit queue whose descriptors have small buffers of `small` bytes too.
fn small_slot_rig(size: u16, small: u32) -> Rig {
    let mut mem = DriverMemory::new("virtq-test-small", 4 << 20, false).unwrap();
    let areas = Areas {
        small_slot: small,
        ..Areas::default()
    };
    let mut drv = DriverQueue::with_areas(&mut mem, size, 2048, HDR, areas).unwrap();
    assert!(drv.set_in_order());
    let dev = DeviceQueue::new(
        mem.device_view().unwrap(),
        drv.layout(),
        features(false, false, false),
        0,
        None,
        Arc::new(QueueCounters::default()),
    )
    .unwrap();
    let call = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    Rig {
        mem,
        drv,
        dev,
        call,
    }
}

#[test]
fn small_frames_go_out_of_consecutive_small_buffers_big_ones_out_of_their_buffers() {
    let mut r = small_slot_rig(8, 128);
    // 116 bytes + the 12-byte header fill a 128-byte buffer exactly; 117 do not fit.
    let lens = [60, 116, 117, 64, 1514, 60, 64, 200];
    let frames: Vec<_> = (0u8..).zip(lens).map(|(i, l)| frame(l, i)).collect();
    for f in &frames {
        assert!(r.drv.push_tx(f));
    }
    r.drv.publish();
    let small_base = r.drv.tx_buf_gpa(0, 60);
    for (id, &l) in (0u16..).zip(&lens) {
        let d = r.drv.raw().read_desc(id);
        assert_eq!(d.len as usize, HDR + l);
        assert_eq!(d.addr, r.drv.tx_buf_gpa(id, l));
        if HDR + l <= 128 {
            assert_eq!(
                d.addr,
                small_base + 128 * u64::from(id),
                "frame {id}: small buffer"
            );
        } else {
            assert_eq!(d.addr, r.drv.buf_gpa(id), "frame {id}: its big buffer");
        }
    }
    assert_eq!(r.dev.pop_tx_burst(), lens.len());
    let got: Vec<_> = r.dev.burst().iter().map(|c| chain_bytes(c, HDR)).collect();
    assert_eq!(got, frames);
    r.dev.complete_burst();
    assert_eq!(r.drv.reclaim(), lens.len());
    assert_eq!(r.drv.errors, Default::default());
}

#[test]
fn a_descriptor_moving_between_its_small_and_big_buffer_is_rewritten_each_lap() {
    let mut r = small_slot_rig(4, 128);
    for lap in 0u8..6 {
        // Even laps small frames, odd laps big ones, on the same four descriptors.
        let len = if lap % 2 == 0 { 64 } else { 1000 };
        let frames: Vec<_> = (0..4).map(|i| frame(len, lap * 4 + i)).collect();
        for f in &frames {
            assert!(r.drv.push_tx(f), "lap {lap}");
        }
        r.drv.publish();
        assert_eq!(r.dev.pop_tx_burst(), 4);
        let got: Vec<_> = r.dev.burst().iter().map(|c| chain_bytes(c, HDR)).collect();
        assert_eq!(got, frames, "lap {lap}");
        r.dev.complete_burst();
        assert_eq!(r.drv.reclaim(), 4);
    }
    assert_eq!(r.drv.errors, Default::default());
}

#[test]
fn test_small_slot_not_whole_lines() {
    let mut mem = DriverMemory::new("virtq-test-small-bad", 4 << 20, false).unwrap();
    for small in [100, 2048, 4096] {
        let areas = Areas {
            small_slot: small,
            ..Areas::default()
        };
        let e = DriverQueue::with_areas(&mut mem, 8, 2048, HDR, areas).err();
        assert!(
            matches!(e, Some(crate::error::Error::Invalid(_))),
            "small buffers of {small} bytes with 2048-byte buffers: {e:?}"
        );
    }
}

#[test]
fn used_entries_go_back_every_n_frames_and_the_rest_at_the_flush() {
    let mut r = in_order_rig(128);
    for i in 0..100 {
        assert!(r.drv.push_tx(&frame(60, i)));
    }
    r.drv.publish();
    // Three bursts of 32: the first two stay ours (64 < 80), the third passes 80 and publishes.
    for expect_used in [0, 0, 96] {
        assert_eq!(r.dev.pop_tx_burst(), 32);
        r.dev.complete_burst_every(80);
        assert_eq!(r.drv.raw().used_idx(), expect_used);
    }
    assert_eq!(r.dev.pop_tx_burst(), 4);
    r.dev.complete_burst_every(80);
    assert_eq!(r.drv.raw().used_idx(), 96, "4 waiting, fewer than 80");
    r.dev.flush();
    assert_eq!(r.drv.raw().used_idx(), 100, "the flush gives back the rest");
    assert_eq!(r.drv.reclaim(), 100);
}

#[test]
fn test_avail_index_lowered_after_the_device_read_it() {
    let mut r = in_order_rig(64);
    for i in 0..40 {
        assert!(r.drv.push_tx(&frame(60, i)));
    }
    r.drv.publish();
    assert_eq!(r.dev.pop_tx_burst(), 32);
    r.dev.complete_burst();
    // The guest takes back what it made available: the device finishes the 8 it was told of
    // (their descriptors are valid), then sees an index behind it, a queue ahead.
    r.drv.raw().set_avail_idx(10);
    assert_eq!(r.dev.pop_tx_burst(), 8);
    r.dev.complete_burst();
    assert!(!r.dev.is_broken());
    assert_eq!(r.dev.pop_tx_burst(), 0);
    r.dev.complete_burst();
    assert!(r.dev.is_broken());
    assert_eq!(r.dev.counters().get(ChainError::AvailOverrun), 1);
}

/// Frames built in place by one `push_tx_many` call each, in runs of uneven length across
/// laps, mixing the small and big buffers and stopping at a frame too big for any buffer:
/// what the device reads is what was written, in order, every run, in order and out of it.
#[test]
fn runs_of_frames_built_in_place_lap_the_queue_in_order_and_out_of_it() {
    for in_order in [true, false] {
        let mut r = small_slot_rig(16, 128);
        if !in_order {
            r = rig_with(16, 2048, features(false, false, false));
        }
        let mut next = 0usize;
        for run in 0..40usize {
            let want = 1 + run * 7 % 23;
            let lens: Vec<usize> = (0..want)
                .map(|i| [60, 116, 117, 1500][(run + i) % 4])
                .collect();
            let (n, bytes) = r
                .drv
                .push_tx_many(lens.iter().copied(), 1 + run % 2, |i, _, b| {
                    b.copy_from_slice(&frame(b.len(), (next + i) as u8));
                });
            let expect = want.min(16);
            assert_eq!(n, expect, "run {run}: as many as there is room for");
            assert_eq!(bytes, lens[..n].iter().sum::<usize>() as u64);
            r.drv.publish();
            let mut got = Vec::new();
            while got.len() < n {
                assert!(r.dev.pop_tx_burst() > 0, "run {run}");
                got.extend(r.dev.burst().iter().map(|c| chain_bytes(c, HDR)));
                r.dev.complete_burst();
            }
            let sent: Vec<_> = (0..n).map(|i| frame(lens[i], (next + i) as u8)).collect();
            assert_eq!(got, sent, "run {run} (in order: {in_order})");
            assert_eq!(r.drv.reclaim(), n);
            next += n;
        }
        // A frame too big for its buffer ends the run there.
        let (n, _) = r
            .drv
            .push_tx_many([60, 60, 4000, 60].into_iter(), 1, |_, _, _| {});
        assert_eq!(n, 2, "in order: {in_order}");
        assert_eq!(r.drv.free_count(), 14);
        assert_eq!(r.drv.errors, Default::default());
    }
}

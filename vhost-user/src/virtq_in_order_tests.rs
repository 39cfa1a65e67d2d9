//! A transmit queue in order ([`DriverQueue::set_in_order`]) against the device side, which
//! returns chains in avail order; and against a device that lies about the used index.

use super::*;

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

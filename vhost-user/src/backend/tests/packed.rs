//! The backend with VIRTIO_F_RING_PACKED: negotiation, any queue size, the packed vring base
//! (avail position and wrap counter in bits 0-15, used ones in bits 16-31), SET_VRING_ADDR's
//! three areas, traffic through a loopback, `show`'s ring layout.

use super::*;
use crate::net::{F_IN_ORDER, F_RING_PACKED};
use crate::packed_test_driver::Driver;
use crate::virtq::{PackedLayout, RingLayout};

const SIZE: u16 = 100;

struct PackedGuest {
    mem: DriverMemory,
    rx: Driver,
    tx: Driver,
    layouts: [PackedLayout; 2],
}

fn packed_guest(name: &str) -> PackedGuest {
    let mut mem = DriverMemory::new(name, 4 << 20, false).unwrap();
    let (rx, l0) = Driver::new(&mut mem, SIZE, 2048);
    let (tx, l1) = Driver::new(&mut mem, SIZE, 2048);
    PackedGuest {
        mem,
        rx,
        tx,
        layouts: [l0, l1],
    }
}

/// SET_VRING_ADDR carries desc / driver area / device area in the split ring's three fields.
fn as_addr(l: &PackedLayout) -> QueueLayout {
    QueueLayout {
        size: l.size,
        desc_uva: l.desc_uva,
        avail_uva: l.driver_uva,
        used_uva: l.device_uva,
    }
}

fn setup_packed(p: &mut Peer, g: &PackedGuest, extra: u64) -> u64 {
    let want = F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | F_RING_PACKED | extra;
    let f =
        p.fe.setup_net(
            want | VHOST_USER_F_PROTOCOL_FEATURES,
            &[(g.mem.region_desc(), g.mem.fd().as_fd())],
            &[
                (0, as_addr(&g.layouts[0]), None),
                (1, as_addr(&g.layouts[1]), None),
            ],
        )
        .unwrap();
    // A fresh packed ring starts at position 0 of lap 1 (setup_net sent base 0).
    for i in 0..2u8 {
        p.fe.set_vring_base(u32::from(i), 0x8000).unwrap();
        p.fe.set_vring_kick(i, None).unwrap();
    }
    f
}

fn post_frames(g: &mut PackedGuest, frames: &[Vec<u8>], first_id: u16) {
    for (k, f) in frames.iter().enumerate() {
        let id = first_id + k as u16;
        let b = g.tx.buf(id);
        g.mem.write(b, &[0u8; 12]).unwrap();
        g.mem.write(b + 12, f).unwrap();
        g.tx.post(id, &[(b, 12 + f.len() as u32, 0)]);
        let r = g.rx.buf(id);
        g.rx.post(id, &[(r, 2048, crate::ring::VRING_DESC_F_WRITE)]);
    }
}

fn received(g: &mut PackedGuest) -> Vec<Vec<u8>> {
    let used = g.rx.reap_all();
    used.iter()
        .map(|&(id, len)| {
            let mut b = vec![0u8; len as usize];
            g.mem.read(g.rx.buf(id), &mut b).unwrap();
            b.split_off(12)
        })
        .collect()
}

#[test]
fn packed_setup_traffic_and_vring_base() {
    let mut p = start();
    let mut g = packed_guest("be-packed");
    let f = setup_packed(&mut p, &g, 0);
    assert_ne!(f & F_RING_PACKED, 0, "RING_PACKED is offered and taken");
    assert!(p.slots[0].is_running() && p.slots[1].is_running());
    {
        let info = p.info.lock().unwrap();
        assert!(info.queues.iter().all(|q| q.layout == RingLayout::Packed));
        assert_eq!(
            info.queues[1].size, SIZE,
            "not a power of two: fine for packed"
        );
    }
    let frames: Vec<_> = (0..10).map(|i| frame(64 + i * 100, i as u8)).collect();
    post_frames(&mut g, &frames, 0);
    assert_eq!(loopback(&p.slots), 10);
    assert_eq!(received(&mut g), frames);
    assert_eq!(g.tx.reap_all().len(), 10);
    // GET_VRING_BASE stops the queue and reports where it stopped, used half included.
    let base = p.fe.get_vring_base(1).unwrap();
    assert_eq!(base, (10 | 0x8000) | (10 | 0x8000) << 16);
    assert!(!p.slots[1].is_running());
    // Resumed from that base, the queue takes the next chain, not the old ones again.
    p.fe.set_vring_base(1, base & 0xffff).unwrap();
    p.fe.set_vring_kick(1, None).unwrap();
    assert!(p.slots[1].is_running());
    post_frames(&mut g, &frames[..1], 10);
    assert_eq!(loopback(&p.slots), 1);
    assert_eq!(received(&mut g), frames[..1].to_vec());
    p.finish().unwrap();
}

#[test]
fn packed_in_order_and_wrap_through_the_backend() {
    let mut p = start();
    let mut g = packed_guest("be-packed-io");
    let f = setup_packed(&mut p, &g, F_IN_ORDER);
    assert_ne!(f & F_IN_ORDER, 0);
    // Three laps of a 100-entry ring, 30 frames at a time.
    for round in 0..10u16 {
        let frames: Vec<_> = (0..30).map(|i| frame(60 + i, round as u8)).collect();
        let first = (round * 30) % SIZE;
        if first + 30 > SIZE {
            // Ids stay below the size: restart them at 0 for the batch that would cross it.
            post_frames(&mut g, &frames[..usize::from(SIZE - first)], first);
            post_frames(&mut g, &frames[usize::from(SIZE - first)..], 0);
        } else {
            post_frames(&mut g, &frames, first);
        }
        g.tx.ndesc.iter_mut().for_each(|n| *n = 1);
        assert_eq!(loopback(&p.slots), 30, "round {round}");
        assert_eq!(received(&mut g), frames, "round {round}");
        // IN_ORDER: one used descriptor for the whole transmit burst, the last id in it.
        let last = g.tx.reap();
        assert!(last.is_some());
        g.tx.used = g.tx.next;
    }
    p.finish().unwrap();
}

#[test]
fn test_split_vring_base_above_65535() {
    let mut p = start();
    p.negotiate_basics();
    assert_eq!(
        p.raw_ack(
            Request::SET_VRING_BASE as u32,
            &VringState {
                index: 1,
                num: 0x1_0000
            }
            .to_bytes(),
            &[]
        ),
        1,
        "refused on a split ring"
    );
    p.still_serving();
    p.finish().unwrap();
}

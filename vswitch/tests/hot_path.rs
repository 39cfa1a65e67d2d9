//! The poll-mode path allocates nothing per packet: a counting global allocator watches the
//! forwarder (the PMD's per-burst work) while it switches bursts between two guests, unicast and
//! flooded, 64-byte and jumbo frames.

use std::sync::Arc;

use vhost_user::backend::BackendConfig;
use vhost_user::guest::{Guest, GuestConfig};
use vswitch::config::{PortMode, PortSpec};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::Port;

mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

fn spec(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        mode: PortMode::Server,
        path: format!("/nonexistent/{name}").into(),
        vlan: None,
        queues: 1,
        fastpath: false,
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0x5au8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let cfg = |n: &str| GuestConfig {
        name: n.into(),
        mem_bytes: 32 << 20,
        ..GuestConfig::default()
    };
    let (mut a, slots_a, _ta) =
        Guest::with_backend(&cfg("noalloc-a"), BackendConfig::default()).expect("guest a");
    let (mut b, slots_b, _tb) =
        Guest::with_backend(&cfg("noalloc-b"), BackendConfig::default()).expect("guest b");
    let shared = Arc::new(Shared::new(4096, 300));
    let pa = Arc::new(Port::with_slots(0, spec("a"), 1, slots_a));
    let pb = Arc::new(Port::with_slots(1, spec("b"), 1, slots_b));
    let mut fwd = Forwarder::new(0, shared.clone());
    fwd.add_port(pa.clone());
    fwd.add_port(pb.clone());
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let unicast = frame(mac_b, mac_a, 64);
    let broadcast = frame([0xff; 6], mac_a, 64);
    let jumbo = frame(mac_b, mac_a, 1500);
    shared.fdb.learn(0, mac_b, 1, 0);
    let mut scratch = Vec::with_capacity(16384);
    let mut forwarded = 0;
    let mut allocs = 0;
    for round in 0..2000 {
        let f = match round % 3 {
            0 => &unicast,
            1 => &broadcast,
            _ => &jumbo,
        };
        for _ in 0..32 {
            assert!(a.tx.push_tx(f));
        }
        a.tx.publish();
        // Only the forwarder's call is watched; the first rounds warm up lazily built state.
        let (n, k) = counting::counted(round >= 10, || fwd.poll(&pa, 1));
        allocs += k;
        assert_eq!(n, 32);
        forwarded +=
            b.rx.recv(64, &mut scratch, |got| assert_eq!(got.len(), f.len()));
        a.tx.reclaim();
    }
    assert_eq!(forwarded, 2000 * 32, "every frame delivered");
    assert_eq!(allocs, 0, "the forwarding path allocated");
}

//! Uplink throughput (feature `dpdk`), with the method of `forward.rs`: the per-burst cost of
//! the poll thread's forwarding code, one burst of 32 frames of 64 and 1518 bytes, only the
//! forwarder's call timed. The uplink is a DPDK `net_ring` port whose far end (a crossover
//! port) the benchmark fills and drains outside the measurement; frames travel in real mbufs.
//!
//! Scenarios, measured in one run so their ratios mean something:
//! - `switch`: guest -> guest, the switch path (what `forward.rs` measures), for reference;
//! - `to_uplink`: guest -> bridged DPDK uplink (copy into mbufs, one tx burst);
//! - `from_uplink`: bridged DPDK uplink -> guest (one rx burst, copy out of mbufs);
//! - `to_vxlan`: guest -> VXLAN tunnel (encapsulate into mbufs, one tx burst);
//! - `from_vxlan`: VXLAN -> guest (one rx burst, decapsulate, copy out).
//!
//! The uplink's MTU is 1600, as a VXLAN underlay needs for 1518-byte inner frames.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhost_user::backend::BackendConfig;
use vhost_user::guest::{BackendThread, Guest, GuestConfig};
use vswitch::config::{PortMode, PortSpec};
use vswitch::dpdk::{self, DpdkDev, EthDev};
use vswitch::netdev::{DevIo, NetDev};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::Port;
use vswitch::uplink::{UplinkPort, UplinkRole};
use vswitch::vxlan::VxlanPort;
use vswitch::wire;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// A station beyond the uplink.
const MAC_X: [u8; 6] = [2, 0, 0, 0, 0, 9];
const REMOTE_MAC: [u8; 6] = [2, 0xbb, 0, 0, 0, 2];
const VTEP_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const VTEP_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VNI: u32 = 42;
const MTU: u16 = 1600;
const SIZES: [usize; 2] = [64, 1518];

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

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

fn guest(name: &str) -> (Guest, Arc<[vhost_user::backend::QueueSlot]>, BackendThread) {
    let cfg = GuestConfig {
        name: name.into(),
        ..GuestConfig::default()
    };
    Guest::with_backend(&cfg, BackendConfig::default()).expect("guest")
}

/// A forwarder with guests A (port 0) and B (port 1) and an uplink (port 2) over one end of a
/// crossover pair, in role `role` (with a tunnel, port 3, when underlay); the other end is the
/// benchmark's wire.
struct Setup {
    fwd: Forwarder,
    a: Guest,
    b: Guest,
    pa: Arc<Port>,
    up: Arc<UplinkPort>,
    wire: Box<dyn DevIo>,
    _threads: (BackendThread, BackendThread),
}

fn setup(tag: &str, role: UplinkRole) -> Setup {
    let (a, slots_a, ta) = guest(&format!("{tag}-a"));
    let (b, slots_b, tb) = guest(&format!("{tag}-b"));
    let shared = Arc::new(Shared::new(4096, 300));
    let pa = Arc::new(Port::with_slots(0, spec("a"), 1, slots_a));
    let pb = Arc::new(Port::with_slots(1, spec("b"), 1, slots_b));
    let (sw, far) = EthDev::crossover(tag, 1, Some(MTU)).expect("crossover ports");
    let dev: Arc<dyn NetDev> = Arc::new(DpdkDev(sw));
    let up = Arc::new(UplinkPort::new(2, "up0", "net_ring", 0, role, dev, 1));
    let mut fwd = Forwarder::new(0, shared.clone());
    fwd.add_port(pa.clone());
    fwd.add_port(pb.clone());
    fwd.add_uplink(up.clone()).expect("uplink");
    // B and X announced themselves: frames to them are unicast, as in forward.rs.
    shared.fdb.learn(0, MAC_B, 1, 0);
    if role == UplinkRole::Underlay {
        let vx = Arc::new(VxlanPort::new(
            3,
            "vx0",
            0,
            VNI,
            VTEP_LOCAL,
            &[VTEP_REMOTE],
            (2, "up0"),
            300,
            1,
        ));
        vx.remotes[0].learn_mac(REMOTE_MAC);
        vx.vteps.learn(0, MAC_X, 0, 0);
        fwd.add_vxlan(vx).expect("tunnel");
        shared.fdb.learn(0, MAC_X, 3, 0);
    } else {
        shared.fdb.learn(0, MAC_X, 2, 0);
    }
    let wire = DpdkDev(far).io(0).expect("wire io");
    Setup {
        fwd,
        a,
        b,
        pa,
        up,
        wire,
        _threads: (ta, tb),
    }
}

impl Setup {
    /// Drains the wire: what the switch sent.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        loop {
            let (k, _) = self.wire.rx();
            if k == 0 {
                self.wire.rx_release();
                return n;
            }
            n += k;
        }
    }

    /// Puts 32 copies of `f` on the wire toward the switch.
    fn inject(&mut self, f: &[u8]) {
        for _ in 0..32 {
            self.wire.tx_buf(f.len()).expect("mbuf").copy_from_slice(f);
        }
        assert_eq!(self.wire.tx_flush().sent, 32);
    }
}

/// Guest A transmits 32 frames to `dst`; only the forwarder's poll of A is timed; `after`
/// checks and cleans up outside the measurement.
fn bench_from_guest(
    c: &mut Criterion,
    group: &str,
    s: &mut Setup,
    dst: [u8; 6],
    mut after: impl FnMut(&mut Setup, &mut Vec<u8>),
) {
    let mut g = c.benchmark_group(group);
    for size in SIZES {
        let f = frame(dst, MAC_A, size);
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("burst32_{size}B"), |bench| {
            let mut scratch = Vec::new();
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..32 {
                        assert!(s.a.tx.push_tx(&f));
                    }
                    s.a.tx.publish();
                    let t = Instant::now();
                    let n = s.fwd.poll(&s.pa, 1);
                    total += t.elapsed();
                    assert_eq!(n, 32);
                    after(s, &mut scratch);
                    s.a.tx.reclaim();
                }
                total
            });
        });
    }
    g.finish();
}

/// The wire delivers 32 frames (`make(size)`) to the switch; only the forwarder's poll of the
/// uplink is timed; guest B receives outside the measurement.
fn bench_to_guest(c: &mut Criterion, group: &str, s: &mut Setup, make: impl Fn(usize) -> Vec<u8>) {
    let mut g = c.benchmark_group(group);
    for size in SIZES {
        let f = make(size);
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("burst32_{size}B"), |bench| {
            let mut scratch = Vec::new();
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    s.inject(&f);
                    let t = Instant::now();
                    let n = s.fwd.poll_uplink(s.up.id);
                    total += t.elapsed();
                    assert_eq!(n, 32);
                    assert_eq!(s.b.rx.recv(64, &mut scratch, |_| {}), 32);
                }
                total
            });
        });
    }
    g.finish();
}

fn uplink(c: &mut Criterion) {
    let args = dpdk::default_eal_args(0, false);
    dpdk::init(&args).expect("EAL");

    // The switch path, for reference in the same run.
    let mut s = setup("bsw", UplinkRole::Bridged);
    bench_from_guest(c, "switch", &mut s, MAC_B, |s, scratch| {
        assert_eq!(s.b.rx.recv(64, scratch, |_| {}), 32);
    });
    bench_from_guest(c, "to_uplink", &mut s, MAC_X, |s, _| {
        assert_eq!(s.drain(), 32);
    });
    bench_to_guest(c, "from_uplink", &mut s, |size| frame(MAC_B, MAC_X, size));
    drop(s);

    let mut s = setup("bvx", UplinkRole::Underlay);
    bench_from_guest(c, "to_vxlan", &mut s, MAC_X, |s, _| {
        assert_eq!(s.drain(), 32);
    });
    bench_to_guest(c, "from_vxlan", &mut s, |size| {
        let inner = frame(MAC_B, MAC_X, size);
        let h = wire::OuterHeader::new(REMOTE_MAC, [0; 6], VTEP_REMOTE, VTEP_LOCAL, VNI);
        let mut f = vec![0u8; wire::VXLAN_OVERHEAD + size];
        h.write(&mut f, size, 50000);
        f[wire::VXLAN_OVERHEAD..].copy_from_slice(&inner);
        f
    });
}

criterion_group!(benches, uplink);
criterion_main!(benches);

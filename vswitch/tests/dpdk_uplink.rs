//! DPDK uplinks in process (feature `dpdk`): the EAL in this test binary, `net_ring` ports, and
//! the poll threads' forwarding code driven on this thread. Ports come in crossover pairs
//! ([`EthDev::crossover`]): the second is the test's end of the wire, what the switch transmits
//! it receives, what it transmits the switch receives. Frames travel in real mbufs from a real
//! mempool through a real ethdev; runts and other frames no kernel interface would carry are
//! injected as they are.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vhost_user::backend::BackendConfig;
use vhost_user::guest::{BackendThread, Guest, GuestConfig};
use vswitch::config::{PortMode, PortSpec};
use vswitch::dpdk::{self, DpdkDev, EthDev};
use vswitch::netdev::{DevIo, NetDev};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::{Drop, Port};
use vswitch::uplink::{UplinkPort, UplinkRole};
use vswitch::vxlan::VxlanPort;
use vswitch::wire;

const GUEST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const GUEST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const VTEP_A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const REMOTE_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const VNI: u32 = 77;

fn eal() {
    let args = dpdk::default_eal_args(0, false);
    dpdk::init(&args).expect("EAL");
}

/// A fresh crossover pair: the switch's port and the wire's.
fn ring_pair() -> (Arc<EthDev>, Arc<EthDev>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    EthDev::crossover(&format!("test{n}"), 1, None).expect("crossover ports")
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

struct Host {
    fwd: Forwarder,
    shared: Arc<Shared>,
    guest: Guest,
    _backend: BackendThread,
    port: Arc<Port>,
    up: Arc<UplinkPort>,
    wire: Box<dyn DevIo>,
}

impl Host {
    fn new(name: &str, tunnel: bool) -> Host {
        eal();
        let (sw, wire) = ring_pair();
        let cfg = GuestConfig {
            name: name.into(),
            mem_bytes: 16 << 20,
            ..GuestConfig::default()
        };
        let (guest, slots, backend) =
            Guest::with_backend(&cfg, BackendConfig::default()).expect("guest");
        let shared = Arc::new(Shared::new(4096, 300));
        let spec = PortSpec {
            name: name.into(),
            mode: PortMode::Server,
            path: "/nonexistent".into(),
            vlan: None,
            queues: 1,
            fastpath: false,
        };
        let port = Arc::new(Port::with_slots(0, spec, 1, slots));
        let role = if tunnel {
            UplinkRole::Underlay
        } else {
            UplinkRole::Bridged
        };
        let dev: Arc<dyn NetDev> = Arc::new(DpdkDev(sw));
        let up = Arc::new(UplinkPort::new(1, "up0", "net_ring", 0, role, dev, 1));
        let mut fwd = Forwarder::new(0, shared.clone());
        fwd.add_port(port.clone());
        fwd.add_uplink(up.clone()).expect("uplink");
        if tunnel {
            let vx = Arc::new(VxlanPort::new(
                2,
                "vx0",
                0,
                VNI,
                VTEP_A,
                &[VTEP_B],
                (1, "up0"),
                300,
                1,
            ));
            vx.remotes[0].learn_mac(REMOTE_MAC);
            fwd.add_vxlan(vx).expect("tunnel");
        }
        let wire = DpdkDev(wire).io(0).expect("wire io");
        Host {
            fwd,
            shared,
            guest,
            _backend: backend,
            port,
            up,
            wire,
        }
    }

    fn step(&mut self) -> usize {
        self.fwd.poll(&self.port, 1) + self.fwd.poll_uplink(self.up.id)
    }

    /// Puts frames on the wire toward the switch.
    fn inject(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.wire.tx_buf(f.len()).expect("mbuf").copy_from_slice(f);
        }
        let o = self.wire.tx_flush();
        assert_eq!(o.sent, frames.len() as u64, "{o:?}");
    }

    /// What the switch put on the wire.
    fn wire_frames(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (n, _) = self.wire.rx();
            if n == 0 {
                return out;
            }
            for i in 0..n {
                out.push(self.wire.frame(i).to_vec());
            }
        }
    }

    fn recv(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        while self
            .guest
            .rx
            .recv(usize::MAX, &mut scratch, |f| out.push(f.to_vec()))
            > 0
        {}
        self.guest.tx.reclaim();
        out
    }
}

#[test]
fn dpdk_bridged_uplink_both_ways() {
    let mut h = Host::new("dpdk-bridge", false);
    // Guest -> ethdev: a burst of broadcasts, 64 to 1514 bytes.
    let out: Vec<Vec<u8>> = (0..40u8)
        .map(|i: u8| frame([0xff; 6], GUEST_A, 64 + usize::from(i) * 36, i))
        .collect();
    for f in &out {
        assert!(h.guest.tx.push_tx(f));
    }
    h.guest.tx.publish();
    h.fwd.poll(&h.port, 1);
    h.fwd.poll(&h.port, 1);
    assert_eq!(h.wire_frames(), out, "every frame, unchanged, in order");
    assert_eq!(h.up.sum(|c| &c.tx_packets), 40);
    // Ethdev -> guest: unicast to the guest (learned), in mbufs copied into its buffers.
    let back: Vec<Vec<u8>> = (0..70u8)
        .map(|i: u8| frame(GUEST_A, GUEST_B, 60 + usize::from(i) * 20, i))
        .collect();
    h.inject(&back[..32]);
    h.inject(&back[32..64]);
    h.inject(&back[64..]);
    while h.step() > 0 {}
    assert_eq!(h.recv(), back);
    assert_eq!(h.shared.fdb.lookup(0, GUEST_B, 0), Some(1));
    let stats = h.up.dev.stats();
    assert_eq!(stats["ipackets"], 70, "{stats:?}");
    assert_eq!(stats["opackets"], 40, "{stats:?}");
    // Nothing leaked: every mbuf is back in the pool, apart from a burst the switch's transmit
    // side keeps allocated ahead and the rx ring's own.
    assert!(stats["mbufs_free"] > 8191 - 1024 - 64, "{stats:?}");
}

#[test]
fn test_dpdk_uplink_hostile_frames_dropped_and_counted() {
    let mut h = Host::new("dpdk-hostile", true);
    let inner = frame(GUEST_A, GUEST_B, 64, 0x33);
    let vxlan = |src: Ipv4Addr, vni: u32, inner: &[u8]| {
        let o = wire::OuterHeader::new(REMOTE_MAC, [0x02, 0xaa, 0, 0, 0, 1], src, VTEP_A, vni);
        let mut f = vec![0u8; wire::VXLAN_OVERHEAD + inner.len()];
        o.write(&mut f, inner.len(), 50001);
        f[wire::VXLAN_OVERHEAD..].copy_from_slice(inner);
        f
    };
    let good = vxlan(VTEP_B, VNI, &inner);
    let cases: Vec<(&str, Vec<u8>, Drop)> = vec![
        ("runt", vec![0xff; 5], Drop::RxRunt),
        ("one byte", vec![0xff], Drop::RxRunt),
        (
            "ipv4, no header",
            good[..14].to_vec(),
            Drop::RxTruncatedOuter,
        ),
        ("cut in UDP", good[..40].to_vec(), Drop::RxTruncatedOuter),
        ("cut in VXLAN", good[..47].to_vec(), Drop::RxTruncatedOuter),
        (
            "wrong VNI",
            vxlan(VTEP_B, VNI + 1, &inner),
            Drop::RxUnknownVni,
        ),
        (
            "unknown VTEP",
            vxlan(Ipv4Addr::new(10, 9, 0, 9), VNI, &inner),
            Drop::RxUnknownVtep,
        ),
        (
            "bad checksum",
            {
                let mut f = good.clone();
                f[24] ^= 1;
                f
            },
            Drop::RxBadOuterIpv4,
        ),
        (
            "inner runt",
            vxlan(VTEP_B, VNI, &inner[..6]),
            Drop::RxInnerRunt,
        ),
    ];
    h.step();
    h.wire_frames();
    for (what, f, why) in &cases {
        let before = h.up.sum(|c| &c.drops[*why as usize]);
        h.inject(std::slice::from_ref(f));
        h.step();
        let n = h.up.sum(|c| &c.drops[*why as usize]) - before;
        assert_eq!(n, 1, "{what}: counted {n} times as {}", why.name());
    }
    assert!(h.recv().is_empty());
    h.inject(std::slice::from_ref(&good));
    h.step();
    assert_eq!(
        h.recv(),
        vec![inner],
        "the port still works after bad input"
    );
    let total: u64 = Drop::UNDERLAY_PORT
        .iter()
        .map(|&d| h.up.sum(|c| &c.drops[d as usize]))
        .sum();
    assert_eq!(total, cases.len() as u64);
}

#[test]
fn dpdk_vxlan_encapsulates_into_mbufs() {
    let mut h = Host::new("dpdk-vxlan", true);
    h.step();
    h.wire_frames();
    let f = frame([0xff; 6], GUEST_A, 1000, 0x5c);
    assert!(h.guest.tx.push_tx(&f));
    h.guest.tx.publish();
    h.step();
    let out = h.wire_frames();
    assert_eq!(out.len(), 1);
    let Ok(wire::Underlay::Vxlan(v)) = wire::parse_underlay(&out[0]) else {
        panic!("not VXLAN: {:02x?}", &out[0][..50]);
    };
    assert_eq!((v.vni, v.src_ip, v.dst_ip), (VNI, VTEP_A, VTEP_B));
    assert_eq!(&out[0][..6], &REMOTE_MAC);
    assert_eq!(&out[0][v.inner_start..v.inner_end], &f[..]);
}

//! VXLAN tunnels and uplinks without DPDK: the poll threads' forwarding code ([`Forwarder`]),
//! driven on this thread, with in-process virtio-net guests and uplinks over in-memory pipes.
//! Two "hosts" (a forwarder each, with a guest, an underlay uplink and a tunnel) are joined by
//! a pipe; or one host's uplink ends at the test, which then reads and writes the wire itself:
//! encapsulation checked byte by byte, hostile underlay frames counted by reason, MTU, split
//! horizon, a bridged uplink, and no allocation on any of these paths.

use std::net::Ipv4Addr;
use std::sync::Arc;

use vhost_user::backend::BackendConfig;
use vhost_user::guest::{BackendThread, Guest, GuestConfig};
use vswitch::config::{PortMode, PortSpec};
use vswitch::netdev::{NetDev, Pipe};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::{Drop, Port};
use vswitch::uplink::{UplinkPort, UplinkRole};
use vswitch::vxlan::VxlanPort;
use vswitch::wire;

mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

const VNI: u32 = 5001;
const VTEP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const VTEP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WIRE_MAC_A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const WIRE_MAC_B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const GUEST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const GUEST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn frame(dst: [u8; 6], src: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
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

/// One host: a forwarder (as a poll thread runs it), a guest on port 0, an uplink (port 1)
/// over `dev`, and, for an underlay, a tunnel (port 2) to `remote`.
struct Host {
    fwd: Forwarder,
    shared: Arc<Shared>,
    guest: Guest,
    _backend: BackendThread,
    port: Arc<Port>,
    up: Arc<UplinkPort>,
    vx: Option<Arc<VxlanPort>>,
}

impl Host {
    fn new(name: &str, dev: Arc<Pipe>, tunnel: Option<(Ipv4Addr, Ipv4Addr)>) -> Host {
        let cfg = GuestConfig {
            name: name.into(),
            mem_bytes: 16 << 20,
            ..GuestConfig::default()
        };
        let (guest, slots, backend) =
            Guest::with_backend(&cfg, BackendConfig::default()).expect("guest");
        let shared = Arc::new(Shared::new(4096, 300));
        let port = Arc::new(Port::with_slots(0, spec(name), 1, slots));
        let role = if tunnel.is_some() {
            UplinkRole::Underlay
        } else {
            UplinkRole::Bridged
        };
        let dev: Arc<dyn NetDev> = dev;
        let up = Arc::new(UplinkPort::new(1, "up0", "pipe", 0, role, dev, 1));
        let mut fwd = Forwarder::new(0, shared.clone());
        fwd.add_port(port.clone());
        fwd.add_uplink(up.clone()).expect("uplink");
        let vx = tunnel.map(|(local, remote)| {
            let vx = Arc::new(VxlanPort::new(
                2,
                "vx0",
                0,
                VNI,
                local,
                &[remote],
                (1, "up0"),
                300,
                1,
            ));
            fwd.add_vxlan(vx.clone()).expect("tunnel");
            vx
        });
        Host {
            fwd,
            shared,
            guest,
            _backend: backend,
            port,
            up,
            vx,
        }
    }

    /// One poll-loop iteration: the guest's transmit queue, then the uplink.
    fn step(&mut self) -> usize {
        self.fwd.poll(&self.port, 1) + self.fwd.poll_uplink(self.up.id)
    }

    fn send(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            assert!(self.guest.tx.push_tx(f), "guest transmit queue full");
        }
        self.guest.tx.publish();
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

fn uplink_drop(h: &Host, d: Drop) -> u64 {
    h.up.sum(|b| &b.drops[d as usize])
}

fn vx_drop(h: &Host, d: Drop) -> u64 {
    h.vx.as_ref().expect("tunnel").sum(|b| &b.drops[d as usize])
}

/// Runs both hosts until neither moves a frame.
fn settle(a: &mut Host, b: &mut Host) {
    for _ in 0..64 {
        if a.step() + b.step() == 0 {
            return;
        }
    }
}

/// A VXLAN packet from `src_ip` to `dst_ip` as a remote VTEP would send it.
fn vxlan_packet(src_ip: Ipv4Addr, dst_ip: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let h = wire::OuterHeader::new(WIRE_MAC_B, WIRE_MAC_A, src_ip, dst_ip, vni);
    let mut f = vec![0u8; wire::VXLAN_OVERHEAD + inner.len()];
    h.write(&mut f, inner.len(), 50000);
    f[wire::VXLAN_OVERHEAD..].copy_from_slice(inner);
    f
}

fn ipv4_checksum_ok(f: &[u8]) -> bool {
    wire::checksum(&f[14..34]) == 0
}

#[test]
fn two_hosts_exchange_frames_over_vxlan() {
    let (da, db) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("vx-a", da, Some((VTEP_A, VTEP_B)));
    let mut b = Host::new("vx-b", db, Some((VTEP_B, VTEP_A)));
    // First polls: each side asks for the other's VTEP MAC; the answers resolve both.
    settle(&mut a, &mut b);
    let ra = a.vx.as_ref().unwrap().remotes[0].mac();
    let rb = b.vx.as_ref().unwrap().remotes[0].mac();
    assert_eq!(ra, Some(WIRE_MAC_B), "A resolved B's VTEP by ARP");
    assert_eq!(rb, Some(WIRE_MAC_A), "B resolved A's VTEP by ARP");

    // A broadcast from guest A crosses the overlay to guest B, byte for byte.
    let hello = frame([0xff; 6], GUEST_A, 100, 0x11);
    a.send(std::slice::from_ref(&hello));
    settle(&mut a, &mut b);
    assert_eq!(b.recv(), vec![hello.clone()]);
    // B learned guest A behind the tunnel, and behind VTEP A.
    assert_eq!(b.shared.fdb.lookup(0, GUEST_A, 0), Some(2));
    let bvx = b.vx.clone().unwrap();
    assert_eq!(bvx.vteps.lookup(0, GUEST_A, 0), Some(0));

    // Unicast back, a burst of them, 64 and 1464 bytes (the largest inner frame MTU 1500 lets
    // through).
    let back: Vec<Vec<u8>> = (0..40u8)
        .map(|i| frame(GUEST_A, GUEST_B, if i % 2 == 0 { 64 } else { 1464 }, i))
        .collect();
    b.send(&back[..32]);
    settle(&mut a, &mut b);
    b.send(&back[32..]);
    settle(&mut a, &mut b);
    assert_eq!(a.recv(), back, "every frame, in order, unchanged");
    assert!(b.recv().is_empty());

    // Counters: frames into the tunnel on B, out of it on A; nothing dropped.
    let avx = a.vx.clone().unwrap();
    assert_eq!(bvx.sum(|c| &c.tx_packets), 40);
    assert_eq!(avx.sum(|c| &c.rx_packets), 40);
    assert_eq!(avx.sum(|c| &c.tx_packets), 1);
    for d in Drop::VXLAN_PORT {
        assert_eq!(vx_drop(&a, d), 0, "{}", d.name());
        assert_eq!(vx_drop(&b, d), 0, "{}", d.name());
    }
    for d in Drop::UNDERLAY_PORT {
        assert_eq!(uplink_drop(&a, d), 0, "{}", d.name());
        assert_eq!(uplink_drop(&b, d), 0, "{}", d.name());
    }
}

#[test]
fn encapsulation_on_the_wire() {
    let (dev, wire_end) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("enc-a", dev, Some((VTEP_A, VTEP_B)));
    // The switch asks for the remote's MAC first (and drops what it cannot send yet).
    a.step();
    let req = wire_end.recv().expect("an ARP request on the wire");
    let Ok(wire::Underlay::Arp(arp)) = wire::parse_underlay(&req) else {
        panic!("not ARP: {req:02x?}")
    };
    assert_eq!(
        (arp.oper, arp.sha, arp.spa, arp.tpa),
        (wire::arp::REQUEST, WIRE_MAC_A, VTEP_A, VTEP_B)
    );
    assert_eq!(&req[..6], &[0xff; 6]);
    let f = frame(GUEST_B, GUEST_A, 200, 0x42);
    a.send(std::slice::from_ref(&f));
    a.step();
    assert_eq!(vx_drop(&a, Drop::TxVtepUnresolved), 1);
    assert!(wire_end.recv().is_none(), "no second ARP within the second");

    // The remote answers; now frames go out encapsulated.
    let mut reply = [0u8; 64];
    let n = wire::write_arp(
        &mut reply,
        wire::arp::REPLY,
        WIRE_MAC_B,
        VTEP_B,
        WIRE_MAC_A,
        VTEP_A,
    );
    assert!(wire_end.send(&reply[..n]));
    a.step();
    a.send(std::slice::from_ref(&f));
    a.step();
    let out = wire_end.recv().expect("an encapsulated frame");
    assert_eq!(out.len(), 50 + 200);
    assert_eq!(
        &out[0..6],
        &WIRE_MAC_B,
        "outer destination: the remote VTEP"
    );
    assert_eq!(&out[6..12], &WIRE_MAC_A, "outer source: the uplink");
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(out[14], 0x45);
    assert_eq!(
        u16::from_be_bytes([out[16], out[17]]),
        236,
        "IP total length"
    );
    assert_eq!(out[20] & 0x40, 0x40, "DF");
    assert_eq!(out[23], 17, "UDP");
    assert!(ipv4_checksum_ok(&out), "IPv4 header checksum");
    assert_eq!(&out[26..30], &VTEP_A.octets());
    assert_eq!(&out[30..34], &VTEP_B.octets());
    assert!(
        u16::from_be_bytes([out[34], out[35]]) >= 49152,
        "source port"
    );
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 4789);
    assert_eq!(u16::from_be_bytes([out[38], out[39]]), 216, "UDP length");
    assert_eq!(&out[40..42], &[0, 0], "UDP checksum 0");
    assert_eq!(
        &out[42..50],
        &[0x08, 0, 0, 0, 0x00, 0x13, 0x89, 0],
        "VXLAN I, VNI"
    );
    assert_eq!(&out[50..], &f[..]);

    // And a remote's packet comes out at the guest.
    let inner = frame(GUEST_A, GUEST_B, 80, 0x77);
    assert!(wire_end.send(&vxlan_packet(VTEP_B, VTEP_A, VNI, &inner)));
    a.step();
    assert_eq!(a.recv(), vec![inner]);
}

#[test]
fn test_uplink_hostile_frames_dropped_and_counted() {
    let (dev, wire_end) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("hostile-a", dev, Some((VTEP_A, VTEP_B)));
    a.step();
    while wire_end.recv().is_some() {}
    let inner = frame(GUEST_A, GUEST_B, 64, 0x33);
    let good = vxlan_packet(VTEP_B, VTEP_A, VNI, &inner);
    let with_ip_checksum = |mut f: Vec<u8>| {
        f[24..26].copy_from_slice(&[0, 0]);
        let c = wire::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let cases: Vec<(&str, Vec<u8>, Drop)> = vec![
        ("runt", vec![0xff; 10], Drop::RxRunt),
        ("empty", Vec::new(), Drop::RxRunt),
        (
            "ipv4, no header",
            good[..14].to_vec(),
            Drop::RxTruncatedOuter,
        ),
        ("cut in IPv4", good[..30].to_vec(), Drop::RxTruncatedOuter),
        ("cut in UDP", good[..38].to_vec(), Drop::RxTruncatedOuter),
        ("cut in VXLAN", good[..46].to_vec(), Drop::RxTruncatedOuter),
        (
            "IP length beyond frame",
            good[..100].to_vec(),
            Drop::RxTruncatedOuter,
        ),
        (
            "bad IPv4 checksum",
            {
                let mut f = good.clone();
                f[25] ^= 0x5a;
                f
            },
            Drop::RxBadOuterIpv4,
        ),
        (
            "fragment",
            with_ip_checksum({
                let mut f = good.clone();
                f[20] |= 0x20;
                f
            }),
            Drop::RxBadOuterIpv4,
        ),
        (
            "VXLAN without I flag",
            {
                let mut f = good.clone();
                f[42] = 0;
                f
            },
            Drop::RxBadVxlan,
        ),
        (
            "wrong VNI",
            vxlan_packet(VTEP_B, VTEP_A, VNI + 1, &inner),
            Drop::RxUnknownVni,
        ),
        (
            "unknown remote VTEP",
            vxlan_packet(Ipv4Addr::new(10, 0, 0, 99), VTEP_A, VNI, &inner),
            Drop::RxUnknownVtep,
        ),
        (
            "not our VTEP address",
            vxlan_packet(VTEP_B, Ipv4Addr::new(10, 0, 0, 77), VNI, &inner),
            Drop::RxNotVxlan,
        ),
        (
            "IPv6",
            {
                let mut f = good.clone();
                f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                f
            },
            Drop::RxNotVxlan,
        ),
        (
            "inner runt",
            vxlan_packet(VTEP_B, VTEP_A, VNI, &inner[..13]),
            Drop::RxInnerRunt,
        ),
        (
            "ARP cut short",
            {
                let mut f = vec![0u8; 30];
                f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
                f
            },
            Drop::RxBadArp,
        ),
    ];
    for (what, f, why) in &cases {
        let before = uplink_drop(&a, *why);
        assert!(wire_end.send(f));
        a.step();
        assert_eq!(
            uplink_drop(&a, *why),
            before + 1,
            "{what}: not counted as {}",
            why.name()
        );
        assert!(a.recv().is_empty(), "{what}: reached the guest");
    }
    // A burst mixing all of them with good packets: only the good ones arrive.
    for (_, f, _) in &cases {
        assert!(wire_end.send(f));
        assert!(wire_end.send(&good));
    }
    a.step();
    assert_eq!(a.recv().len(), cases.len());
    let total: u64 = Drop::UNDERLAY_PORT
        .iter()
        .map(|&d| uplink_drop(&a, d))
        .sum();
    assert_eq!(total, 2 * cases.len() as u64, "each bad frame counted once");
    assert_eq!(a.up.sum(|c| &c.rx_packets), 3 * cases.len() as u64);
    assert!(wire_end.recv().is_none(), "nothing answered bad input");
}

#[test]
fn test_vxlan_oversize_frame_dropped_and_counted() {
    let (da, db) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("mtu-a", da, Some((VTEP_A, VTEP_B)));
    let mut b = Host::new("mtu-b", db, Some((VTEP_B, VTEP_A)));
    settle(&mut a, &mut b);
    // 1464 = 1500 - 20 (IPv4) - 8 (UDP) - 8 (VXLAN): the largest inner frame.
    let fits = frame([0xff; 6], GUEST_A, 1464, 1);
    let over = frame([0xff; 6], GUEST_A, 1465, 2);
    let big = frame([0xff; 6], GUEST_A, 2000, 3);
    a.send(&[over, fits.clone(), big]);
    settle(&mut a, &mut b);
    assert_eq!(b.recv(), vec![fits]);
    assert_eq!(vx_drop(&a, Drop::TxExceedsTunnelMtu), 2);
}

#[test]
fn tunnel_to_tunnel_split_horizon() {
    let (dev, wire_end) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("split-a", dev, Some((VTEP_A, VTEP_B)));
    // A second tunnel, another VNI, same VLAN, same remote.
    let vx2 = Arc::new(VxlanPort::new(
        3,
        "vx1",
        0,
        VNI + 1,
        VTEP_A,
        &[VTEP_B],
        (1, "up0"),
        300,
        1,
    ));
    a.fwd.add_vxlan(vx2.clone()).unwrap();
    a.step();
    let mut reply = [0u8; 64];
    let n = wire::write_arp(
        &mut reply,
        wire::arp::REPLY,
        WIRE_MAC_B,
        VTEP_B,
        WIRE_MAC_A,
        VTEP_A,
    );
    assert!(wire_end.send(&reply[..n]));
    a.step();
    while wire_end.recv().is_some() {}
    // A broadcast from tunnel 1 reaches the guest but never tunnel 2.
    let bcast = frame([0xff; 6], GUEST_B, 64, 9);
    assert!(wire_end.send(&vxlan_packet(VTEP_B, VTEP_A, VNI, &bcast)));
    a.step();
    assert_eq!(a.recv(), vec![bcast]);
    assert!(wire_end.recv().is_none(), "flooded back into a tunnel");
    // A MAC learned on tunnel 2, addressed from tunnel 1: dropped and counted.
    let other = [0x02, 0, 0, 0, 0, 0x99];
    assert!(wire_end.send(&vxlan_packet(
        VTEP_B,
        VTEP_A,
        VNI + 1,
        &frame([0xff; 6], other, 64, 1)
    )));
    a.step();
    a.recv();
    assert!(wire_end.send(&vxlan_packet(
        VTEP_B,
        VTEP_A,
        VNI,
        &frame(other, GUEST_B, 64, 2)
    )));
    a.step();
    assert_eq!(vx_drop(&a, Drop::TunnelToTunnel), 1);
    assert!(wire_end.recv().is_none());
}

#[test]
fn bridged_uplink_switches_both_ways() {
    let (dev, wire_end) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 1024);
    let mut a = Host::new("bridge-a", dev, None);
    // Guest -> wire (flooded: the uplink is a member of the switch).
    let f = frame([0xff; 6], GUEST_A, 300, 5);
    a.send(std::slice::from_ref(&f));
    a.step();
    assert_eq!(wire_end.recv(), Some(f));
    // Wire -> guest (unicast: the guest's MAC was learned).
    let back: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(GUEST_A, GUEST_B, 60 + i, 7))
        .collect();
    for x in &back {
        assert!(wire_end.send(x));
    }
    a.step();
    a.step();
    assert_eq!(a.recv(), back);
    assert_eq!(a.shared.fdb.lookup(0, GUEST_B, 0), Some(1));
    assert_eq!(a.up.sum(|c| &c.rx_packets), 50, "each frame counted once");
    let bytes: usize = back.iter().map(Vec::len).sum();
    assert_eq!(a.up.sum(|c| &c.rx_bytes), bytes as u64);
    // Guest -> wire, unicast now, bigger than the uplink's MTU allows: dropped, counted.
    a.send(&[
        frame(GUEST_B, GUEST_A, 1515, 1),
        frame(GUEST_B, GUEST_A, 1514, 2),
    ]);
    a.step();
    assert_eq!(wire_end.recv().map(|x| x.len()), Some(1514));
    assert!(wire_end.recv().is_none());
    assert_eq!(uplink_drop(&a, Drop::TxExceedsMtu), 1);
    // Runts from the wire.
    assert!(wire_end.send(&[1, 2, 3]));
    a.step();
    assert_eq!(uplink_drop(&a, Drop::RxRunt), 1);
    assert_eq!(a.up.sum(|c| &c.tx_packets), 2);
}

#[test]
fn uplink_and_vxlan_paths_allocate_nothing_per_packet() {
    let (da, db) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 4096);
    let mut a = Host::new("alloc-a", da, Some((VTEP_A, VTEP_B)));
    let mut b = Host::new("alloc-b", db, Some((VTEP_B, VTEP_A)));
    settle(&mut a, &mut b);
    let (dev, wire_end) = Pipe::pair(WIRE_MAC_A, WIRE_MAC_B, 1500, 4096);
    let mut c = Host::new("alloc-c", dev, None);
    // Learn both ways first.
    a.send(&[frame([0xff; 6], GUEST_A, 64, 0)]);
    settle(&mut a, &mut b);
    b.send(&[frame([0xff; 6], GUEST_B, 64, 0)]);
    settle(&mut a, &mut b);
    a.recv();
    b.recv();
    let sizes = [64usize, 1464, 600];
    let mut allocs = 0;
    let mut delivered = 0;
    let mut scratch = Vec::with_capacity(16384);
    for round in 0..300 {
        let len = sizes[round % 3];
        let fa: Vec<Vec<u8>> = (0..32).map(|_| frame(GUEST_B, GUEST_A, len, 1)).collect();
        a.send(&fa);
        c.send(&fa);
        for _ in 0..32 {
            wire_end.send(&fa[0]);
        }
        // Encapsulate (A), decapsulate (B), guest -> bridged uplink and back (C).
        let (n, k) = counting::counted(round >= 5, || a.step() + b.step() + c.step());
        allocs += k;
        assert!(n >= 96, "round {round}: {n}");
        delivered += b
            .guest
            .rx
            .recv(64, &mut scratch, |g| assert_eq!(g.len(), len));
        a.guest.tx.reclaim();
        c.guest.tx.reclaim();
        c.guest.rx.recv(64, &mut scratch, |_| {});
        while wire_end.recv().is_some() {}
    }
    assert_eq!(delivered, 300 * 32, "every frame crossed the overlay");
    assert_eq!(allocs, 0, "the uplink or tunnel path allocated");
}

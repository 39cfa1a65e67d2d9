//! The switch beyond one host (feature `dpdk`), across network namespaces this test makes
//! (`ip netns`, veth pairs; no frame leaves them): `vswitch` processes, each in a namespace of
//! its own with a DPDK uplink (`net_af_packet` on a veth, or `net_tap`), each serving a guest.
//!
//! The guests are in-process virtio-net frontends (vhost-user over the switch's socket, which a
//! namespace does not hide) running a minimal IPv4 host: they answer ARP and ICMP echo and send
//! both, so "ping" here is the real exchange of ARP and ICMP frames, checked byte for byte. The
//! kernel's own VXLAN device and its `ping` are the independent implementation on the other
//! side of the interop test. QEMU guests would prove no more about the overlay and take minutes
//! under TCG.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use common::netns::{
    can_run, drops, icmp_frame, kernel_ping, mac, ping, veth, wait_and_get, Host, Netns, NsSwitch,
};
use common::{heavy, TestDir, VSWITCH};
use vswitch::wire;

const VNI: u32 = 4242;

// ---------------------------------------------------------------------------------------------
// Tests.

/// Two hosts, each a namespace with a switch, an AF_PACKET uplink on a veth between them, a
/// VXLAN tunnel to the other and a guest: the guests ping each other both ways, at several
/// sizes up to the tunnel's MTU; the overlay's counters agree. Switch A has two poll threads.
#[test]
fn two_switches_guests_ping_across_the_overlay() {
    let _heavy = heavy();
    if !can_run(&["ip"]) {
        return;
    }
    let (na, nb) = (Netns::new("hostA"), Netns::new("hostB"));
    let (va, vb) = veth(&na, &nb);
    let sw = |ns: &Netns, dev: &str, local: &str, remote: &str, cores: &str, t: &str| {
        NsSwitch::start(
            ns,
            t,
            cores,
            &[
                "--dpdk-port".into(),
                format!("up0=net_af_packet0,iface={dev}"),
                "--vxlan".into(),
                format!("vx0={local},{remote},{VNI},up0"),
            ],
        )
    };
    // A runs two poll threads: the guest's queue and the uplink's receive queue land on
    // different ones, which then share the uplink's one AF_PACKET transmit queue.
    let a = sw(&na, &va, "10.99.0.1", "10.99.0.2", "0,1", "overlay-a");
    let b = sw(&nb, &vb, "10.99.0.2", "10.99.0.1", "0", "overlay-b");
    a.wait_vteps_resolved("vx0");
    b.wait_vteps_resolved("vx0");
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 99, 1),
        Ipv4Addr::new(192, 168, 99, 2),
    );
    let mut ga = Host::new(&a.sock(), "ov-guest-a", mac(1), ip_a);
    let mut gb = Host::new(&b.sock(), "ov-guest-b", mac(2), ip_b);

    let rtt = ping(&mut [&mut ga, &mut gb], 0, ip_b, 5, 56);
    eprintln!("guest A -> guest B: rtt {rtt:?}");
    let rtt = ping(&mut [&mut ga, &mut gb], 1, ip_a, 5, 56);
    eprintln!("guest B -> guest A: rtt {rtt:?}");
    // The largest ICMP a 1500-byte underlay carries: 1464-byte inner frame = 14 + 20 + 8 + 1422.
    ping(&mut [&mut ga, &mut gb], 0, ip_b, 3, 1422);
    ping(&mut [&mut ga, &mut gb], 1, ip_a, 3, 1000);
    assert_eq!(ga.neigh.get(&ip_b), Some(&mac(2)));
    assert_eq!(gb.neigh.get(&ip_a), Some(&mac(1)));
    assert!(ga.answered >= 8 && gb.answered >= 8);

    // One byte more than the tunnel carries: dropped at A and counted, never on the wire.
    let before = a.stats("vx0");
    let big = icmp_frame(mac(2), mac(1), ip_a, ip_b, 8, 1, 1, &[0u8; 1423]);
    ga.send(&big);
    let after = wait_and_get(|| {
        let s = a.stats("vx0");
        (s.drops["tx_frame_exceeds_tunnel_mtu"] > before.drops["tx_frame_exceeds_tunnel_mtu"])
            .then_some(s)
    });
    assert_eq!(after.tx_packets, before.tx_packets);

    for (sw, name) in [(&a, "A"), (&b, "B")] {
        let vx = sw.stats("vx0");
        let up = sw.stats("up0");
        assert!(vx.rx_packets >= 16 && vx.tx_packets >= 16, "{name}: {vx:?}");
        assert_eq!(drops(&up), 0, "{name}: underlay drops {up:?}");
        let show = sw.vswitchctl(&["show"]);
        assert!(show.contains("underlay, link up"), "{name}: {show}");
        assert!(show.contains("learned inner MACs: 1"), "{name}: {show}");
    }
    drop((ga, gb));
    a.stop();
    b.stop();
}

/// Interop with Linux's own VXLAN: a namespace with a kernel `vxlan` device (VNI, remote = the
/// switch's VTEP, port 4789) pings the guest behind the switch, and the guest pings the kernel.
#[test]
fn kernel_vxlan_interop_ping_both_ways() {
    let _heavy = heavy();
    if !can_run(&["ip", "ping", "bridge"]) {
        return;
    }
    let (na, nk) = (Netns::new("vtep"), Netns::new("kernel"));
    let (va, vk) = veth(&na, &nk);
    nk.ip(&["addr", "add", "10.98.0.2/24", "dev", &vk]);
    let vni = VNI.to_string();
    nk.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &vni,
        "remote",
        "10.98.0.1",
        "local",
        "10.98.0.2",
        "dstport",
        "4789",
        "dev",
        &vk,
    ]);
    nk.ip(&["addr", "add", "192.168.98.2/24", "dev", "vx0"]);
    nk.ip(&["link", "set", "vx0", "up"]);
    let a = NsSwitch::start(
        &na,
        "kvx",
        "1",
        &[
            "--dpdk-port".into(),
            format!("up0=net_af_packet0,iface={va}"),
            "--vxlan".into(),
            format!("vx0=10.98.0.1,10.98.0.2,{VNI},up0"),
        ],
    );
    a.wait_vteps_resolved("vx0");
    let ip_g = Ipv4Addr::new(192, 168, 98, 1);
    let ip_k = Ipv4Addr::new(192, 168, 98, 2);
    let mut g = Host::new(&a.sock(), "kvx-guest", mac(7), ip_g);

    // The kernel pings the guest: first one to warm ARP up, then five in a row, all answered.
    let warm = kernel_ping(&nk, ip_g, &["-c", "1", "-w", "15"], &mut [&mut g]);
    assert!(
        warm.status.success(),
        "kernel ping never got through:\n{}\n{}",
        String::from_utf8_lossy(&warm.stdout),
        a.report()
    );
    let p = kernel_ping(
        &nk,
        ip_g,
        &["-c", "5", "-i", "0.2", "-W", "2"],
        &mut [&mut g],
    );
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(
        p.status.success() && out.contains("5 received"),
        "kernel ping:\n{out}"
    );
    // Full-size for the kernel's vxlan MTU (1450): 1422 bytes of ICMP payload.
    let p = kernel_ping(
        &nk,
        ip_g,
        &["-c", "3", "-i", "0.2", "-W", "2", "-s", "1422", "-M", "do"],
        &mut [&mut g],
    );
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(out.contains("3 received"), "kernel ping -s 1422:\n{out}");
    assert!(g.answered >= 9, "the guest answered {}", g.answered);

    // The guest pings the kernel.
    let rtt = ping(&mut [&mut g], 0, ip_k, 5, 56);
    eprintln!("guest -> kernel vxlan: rtt {rtt:?}");

    // The kernel learned the guest's MAC behind our VTEP from our packets.
    let fdb = nk.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    assert!(
        fdb.contains("02:4e:46:00:00:07 dst 10.98.0.1"),
        "kernel vxlan fdb:\n{fdb}"
    );
    let up = a.stats("up0");
    assert_eq!(drops(&up), 0, "underlay drops {up:?}");
    drop(g);
    a.stop();
}

/// Bad input from the underlay, sent by a raw socket on the far end of the veth: truncated
/// outer headers, a wrong VNI, a bad IPv4 checksum, another UDP port, an unknown remote VTEP,
/// a VXLAN header without its I flag; each dropped and counted by reason, none reaching the
/// guest, and the overlay still working afterwards.
#[test]
fn test_overlay_hostile_underlay_frames_counted() {
    let _heavy = heavy();
    if !can_run(&["ip", "python3"]) {
        return;
    }
    let (na, nk) = (Netns::new("victim"), Netns::new("attacker"));
    let (va, vk) = veth(&na, &nk);
    let a = NsSwitch::start(
        &na,
        "hostile-ov",
        "1",
        &[
            "--dpdk-port".into(),
            format!("up0=net_af_packet0,iface={va}"),
            "--vxlan".into(),
            format!("vx0=10.97.0.1,10.97.0.2,{VNI},up0"),
        ],
    );
    let show = a.show();
    let up_mac = show
        .devices
        .iter()
        .find_map(|d| d.uplink.as_ref().map(|u| u.mac.clone()))
        .expect("uplink");
    let up_mac: Vec<u8> = up_mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let up_mac: [u8; 6] = up_mac.try_into().unwrap();
    let mut g = Host::new(
        &a.sock(),
        "hostile-guest",
        mac(9),
        Ipv4Addr::new(192, 168, 97, 1),
    );
    let remote_mac = [0x02, 0x66, 0, 0, 0, 1];
    let (local, remote) = (Ipv4Addr::new(10, 97, 0, 1), Ipv4Addr::new(10, 97, 0, 2));
    let inner = {
        let mut f = vec![0x5au8; 64];
        f[..6].copy_from_slice(&mac(9));
        f[6..12].copy_from_slice(&[0x02, 0x66, 0, 0, 0, 0x42]);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        f
    };
    let vx = |src: Ipv4Addr, vni: u32, port: u16| {
        let h = wire::OuterHeader::new(remote_mac, up_mac, src, local, vni);
        let mut f = vec![0u8; wire::VXLAN_OVERHEAD + inner.len()];
        h.write(&mut f, inner.len(), 51000);
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f[wire::VXLAN_OVERHEAD..].copy_from_slice(&inner);
        f
    };
    let good = vx(remote, VNI, 4789);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("rx_truncated_outer_headers", good[..14].to_vec()),
        ("rx_truncated_outer_headers", good[..40].to_vec()),
        ("rx_truncated_outer_headers", good[..48].to_vec()),
        ("rx_unknown_vni", vx(remote, VNI + 1, 4789)),
        ("rx_bad_outer_ipv4", {
            let mut f = good.clone();
            f[25] ^= 0xff;
            f
        }),
        ("rx_not_vxlan", vx(remote, VNI, 4790)),
        (
            "rx_unknown_remote_vtep",
            vx(Ipv4Addr::new(10, 97, 0, 66), VNI, 4789),
        ),
        ("rx_bad_vxlan_header", {
            let mut f = good.clone();
            f[42] = 0;
            f
        }),
    ];
    let mut expect: HashMap<&str, u64> = HashMap::new();
    let mut hex = Vec::new();
    for (why, f) in &cases {
        *expect.entry(why).or_default() += 1;
        hex.push(f.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    hex.push(good.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
                  s.bind((sys.argv[1],0))\n\
                  [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]\n";
    let mut args = vec!["python3", "-c", script, vk.as_str()];
    args.extend(hex.iter().map(String::as_str));
    nk.exec_ok(&args);
    let st = wait_and_get(|| {
        let s = a.stats("up0");
        (s.rx_packets > cases.len() as u64).then_some(s)
    });
    for (why, n) in &expect {
        assert_eq!(st.drops[*why], *n, "{why}: {st:?}");
    }
    assert_eq!(drops(&st), cases.len() as u64, "{st:?}");
    // Only the good one reached the guest.
    let got = common::recv_n(&mut g.g, 2, Duration::from_secs(2));
    assert_eq!(got, vec![inner], "the guest got something else");
    drop(g);
    a.stop();
}

/// A bridged uplink to the kernel: the guest and a kernel interface on one L2 segment, once
/// through AF_PACKET on a veth and once through a TAP device the switch creates.
#[test]
fn bridged_dpdk_uplinks_to_the_kernel() {
    let _heavy = heavy();
    if !can_run(&["ip", "ping"]) {
        return;
    }
    // AF_PACKET on a veth whose far end has an address.
    let (na, nk) = (Netns::new("bridge"), Netns::new("lan"));
    let (va, vk) = veth(&na, &nk);
    nk.ip(&["addr", "add", "192.168.96.2/24", "dev", &vk]);
    let a = NsSwitch::start(
        &na,
        "bridge-afp",
        "1",
        &[
            "--dpdk-port".into(),
            format!("up0=net_af_packet0,iface={va}"),
        ],
    );
    let ip_g = Ipv4Addr::new(192, 168, 96, 1);
    let mut g = Host::new(&a.sock(), "bridge-guest", mac(5), ip_g);
    let p = kernel_ping(
        &nk,
        ip_g,
        &["-c", "3", "-i", "0.2", "-w", "15"],
        &mut [&mut g],
    );
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(
        out.contains("3 received"),
        "kernel ping over af_packet:\n{out}"
    );
    ping(&mut [&mut g], 0, Ipv4Addr::new(192, 168, 96, 2), 3, 1400);
    let show = a.vswitchctl(&["show"]);
    assert!(
        show.contains("(dpdk net_af_packet), bridged, untagged, link up"),
        "{show}"
    );
    assert!(a.stats("up0").tx_packets >= 6);
    drop(g);
    a.stop();

    // TAP: the switch creates the interface in its namespace; the namespace's kernel is the
    // other host.
    let tap = format!("dtap{}", std::process::id() % 100_000);
    let t = NsSwitch::start(
        &na,
        "bridge-tap",
        "1",
        &["--dpdk-port".into(), format!("up0=net_tap0,iface={tap}")],
    );
    na.ip(&["addr", "add", "192.168.95.2/24", "dev", &tap]);
    na.ip(&["link", "set", &tap, "up"]);
    let ip_g = Ipv4Addr::new(192, 168, 95, 1);
    let mut g = Host::new(&t.sock(), "tap-guest", mac(6), ip_g);
    let p = kernel_ping(
        &na,
        ip_g,
        &["-c", "3", "-i", "0.2", "-w", "15"],
        &mut [&mut g],
    );
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(out.contains("3 received"), "kernel ping over tap:\n{out}");
    ping(&mut [&mut g], 0, Ipv4Addr::new(192, 168, 95, 2), 3, 56);
    drop(g);
    t.stop();
}

/// An MTU the device cannot carry: DPDK 22.11's AF_PACKET driver takes frames of at most 1518
/// bytes, whatever MTU it accepts. The switch refuses to start and says so, instead of coming
/// up with an uplink that silently drops every jumbo frame.
#[test]
fn test_dpdk_mtu_beyond_the_devices_frame_limit() {
    let _heavy = heavy();
    if !can_run(&["ip"]) {
        return;
    }
    let (na, nk) = (Netns::new("jumbo"), Netns::new("jumbo-far"));
    let (va, _vk) = veth(&na, &nk);
    na.ip(&["link", "set", &va, "mtu", "9000"]);
    let dir = TestDir::new("dpdk-mtu-limit");
    let out = na
        .command(VSWITCH)
        .args([
            "--dpdk-port",
            &format!("up0=net_af_packet0,iface={va}"),
            "--dpdk-mtu",
            "up0=9000",
            "--vhost-server",
            &format!("g={}", dir.join("g.sock").display()),
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run vswitch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vswitch started:\n{err}");
    assert!(
        err.contains("MTU 9000 needs frames of 9018 bytes") && err.contains("takes at most"),
        "{err}"
    );
    assert!(!dir.join("g.sock").exists(), "socket left behind");
}

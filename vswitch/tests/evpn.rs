//! BGP EVPN with FRR as the switch's control plane (feature `dpdk`; issue 13), across network
//! namespaces: each host is a namespace with a `vswitch` (AF_PACKET uplink on the underlay
//! veth, a VXLAN tunnel with `--evpn` and no static remote), stock FRR (zebra + bgpd, iBGP,
//! `address-family l2vpn evpn`, `advertise-all-vni`) over a second veth, and a guest. The
//! switches learn each other only through BGP: type-3 routes give the flood list, type-2 the
//! remote MACs, read back from the kernel mirror zebra writes.
//!
//! The mirror's control input is checked on a real kernel too: FDB entries written by hand on
//! the mirror's vxlan device for another VNI, for the switch's own VTEP, without
//! `extern_learn`, or beyond the MAC limit are refused and counted.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::frr::{have_frr, Frr};
use common::netns::{can_run, kernel_ping, mac, ping, veth, Host, Netns, NsSwitch};
use common::{heavy, wait_for, TestDir};
use vswitch::evpn::{EvpnReply, EvpnSegmentInfo};

const VNI: u32 = 4343;
/// How long BGP may take to bring a route from one host to another.
const CONVERGE: Duration = Duration::from_secs(40);

/// One EVPN host: namespace, switch, and (for the BGP tests) FRR.
struct EvpnHost {
    ns: Netns,
    sw: NsSwitch,
    vtep: Ipv4Addr,
}

impl EvpnHost {
    fn start(ns: Netns, underlay: &str, vtep: Ipv4Addr, tag: &str, extra: &[&str]) -> EvpnHost {
        let mut args = vec![
            "--dpdk-port".to_owned(),
            format!("up0=net_af_packet0,iface={underlay}"),
            "--vxlan".to_owned(),
            format!("vx0={vtep},{VNI},up0"),
            "--evpn".to_owned(),
            "vx0".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let sw = NsSwitch::start(&ns, tag, "1", &args);
        EvpnHost { ns, sw, vtep }
    }

    fn segment(&self) -> EvpnSegmentInfo {
        let r: EvpnReply = self.sw.ctl().evpn().expect("evpn");
        r.segments.into_iter().next().expect("one EVPN segment")
    }

    /// Waits until `cond` holds of the segment, or fails with what the switch and FRR say.
    fn wait_segment(&self, what: &str, frr: Option<&Frr>, cond: impl Fn(&EvpnSegmentInfo) -> bool) {
        let ok = wait_for(CONVERGE, || cond(&self.segment()));
        assert!(
            ok,
            "{what}: {:#?}\n{}\n{}",
            self.segment(),
            frr.map(|f| f.vtysh("show bgp l2vpn evpn route") + &f.vtysh("show bgp summary"))
                .unwrap_or_default(),
            self.sw.report()
        );
    }
}

/// Two hosts A (VTEP 10.96.0.1) and B (10.96.0.2) on one underlay veth, BGP between their
/// kernels over a second veth, switches and FRR up, and each switch's flood list holding the
/// other (type-3 routes). `extra`: more arguments for both switches, `extra_b` for B's.
fn two_hosts(tag: &str, extra: &[&str], extra_b: &[&str]) -> (EvpnHost, EvpnHost, Frr, Frr) {
    let (na, nb) = (
        Netns::new(&format!("{tag}A")),
        Netns::new(&format!("{tag}B")),
    );
    let (ua, ub) = veth(&na, &nb);
    // BGP runs over its own link; the kernel routes the VTEP subnet there so that bgpd's
    // next-hop check resolves (no VXLAN packet ever takes that route: the mirror sends none).
    let (ca, cb) = veth(&na, &nb);
    let (bgp_a, bgp_b) = (Ipv4Addr::new(172, 30, 0, 1), Ipv4Addr::new(172, 30, 0, 2));
    for (ns, dev, ip) in [(&na, &ca, bgp_a), (&nb, &cb, bgp_b)] {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
        ns.ip(&["route", "add", "10.96.0.0/24", "dev", dev]);
    }
    let all_b: Vec<&str> = extra.iter().chain(extra_b).copied().collect();
    let a = EvpnHost::start(
        na,
        &ua,
        Ipv4Addr::new(10, 96, 0, 1),
        &format!("{tag}-a"),
        extra,
    );
    let b = EvpnHost::start(
        nb,
        &ub,
        Ipv4Addr::new(10, 96, 0, 2),
        &format!("{tag}-b"),
        &all_b,
    );
    let fa = Frr::start(&a.ns, "hA", bgp_a, &[bgp_b]);
    let fb = Frr::start(&b.ns, "hB", bgp_b, &[bgp_a]);
    // Type-3 routes: each switch floods to the other, learned from BGP alone.
    a.wait_segment("A's flood list from B's type-3 route", Some(&fa), |s| {
        s.flood_vteps == vec![b.vtep.to_string()]
    });
    b.wait_segment("B's flood list from A's type-3 route", Some(&fb), |s| {
        s.flood_vteps == vec![a.vtep.to_string()]
    });
    (a, b, fa, fb)
}

/// [`two_hosts`] with a second guest port `g2` on B, whose socket is returned (in `dir`, which
/// the caller keeps): for a guest that comes up on B later.
fn two_hosts_with_g2_on_b(
    tag: &str,
    extra: &[&str],
    dir: &TestDir,
) -> (EvpnHost, EvpnHost, Frr, Frr, std::path::PathBuf) {
    let g2 = dir.join("g2.sock");
    let (a, b, fa, fb) = two_hosts(
        tag,
        extra,
        &["--vhost-server", &format!("g2={}", g2.display())],
    );
    (a, b, fa, fb, g2)
}

fn mac_text(m: [u8; 6]) -> String {
    vswitch::fdb::format_mac(m)
}

/// Two hosts, each a switch + zebra + bgpd, no static remote VTEP: type-3 routes make the
/// flood lists, the guests ping each other, type-2 routes carry their MACs (both in BGP's
/// table and in the switches'), and the mirror goes away with the switch.
#[test]
fn evpn_two_hosts_guests_ping_over_bgp_routes() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge"]) || !have_frr() {
        return;
    }
    let (a, b, fa, fb) = two_hosts("evpn", &[], &[]);
    let br = format!("evbr{VNI}");
    for h in [&a, &b] {
        let links = h.ns.exec(&["ip", "-br", "link"]);
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(
            links.contains(&br) && links.contains(&format!("evvx{VNI}")),
            "mirror missing:\n{links}"
        );
    }

    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 94, 1),
        Ipv4Addr::new(192, 168, 94, 2),
    );
    let mut ga = Host::new(&a.sw.sock(), "evpn-guest-a", mac(1), ip_a);
    let mut gb = Host::new(&b.sw.sock(), "evpn-guest-b", mac(2), ip_b);
    let rtt = ping(&mut [&mut ga, &mut gb], 0, ip_b, 5, 56);
    eprintln!("evpn guest A -> guest B: rtt {rtt:?}");
    let rtt = ping(&mut [&mut ga, &mut gb], 1, ip_a, 5, 1000);
    eprintln!("evpn guest B -> guest A: rtt {rtt:?}");

    // Type-2 routes: each guest's MAC exported by its switch, installed in the other.
    let (ma, mb) = (mac_text(mac(1)), mac_text(mac(2)));
    a.wait_segment("A exports its guest and has B's from BGP", Some(&fa), |s| {
        s.local_macs.iter().any(|m| m.mac == ma && m.port == "g")
            && s.remote_macs
                .iter()
                .any(|m| m.mac == mb && m.vtep == b.vtep.to_string())
    });
    b.wait_segment("B exports its guest and has A's from BGP", Some(&fb), |s| {
        s.local_macs.iter().any(|m| m.mac == mb)
            && s.remote_macs
                .iter()
                .any(|m| m.mac == ma && m.vtep == a.vtep.to_string())
    });
    let routes = fa.vtysh("show bgp l2vpn evpn route");
    assert!(
        routes.contains(&format!("[2]:[0]:[48]:[{mb}]"))
            && routes.contains(&format!("[3]:[0]:[32]:[{}]", b.vtep))
            && routes.contains(&format!("[2]:[0]:[48]:[{ma}]")),
        "A's BGP table lacks B's type-2/type-3 routes or its own:\n{routes}"
    );
    let routes = fb.vtysh("show bgp l2vpn evpn route");
    assert!(
        routes.contains(&format!("[2]:[0]:[48]:[{ma}]"))
            && routes.contains(&format!("[3]:[0]:[32]:[{}]", a.vtep)),
        "B's BGP table lacks A's routes:\n{routes}"
    );
    // Known unicast now goes to one VTEP (no flooding needed), still both ways.
    ping(&mut [&mut ga, &mut gb], 0, ip_b, 3, 1400);
    for h in [&a, &b] {
        let s = h.segment();
        assert_eq!(s.refused.total(), 0, "nothing FRR sends is refused: {s:#?}");
        assert_eq!(s.kernel_errors, 0, "{s:#?}");
        let text = h.sw.vswitchctl(&["evpn"]);
        assert!(text.contains("remote MACs (from BGP): 1"), "{text}");
        let show = h.sw.vswitchctl(&["show"]);
        assert!(show.contains("remotes from BGP EVPN"), "{show}");
        let json = h.sw.vswitchctl(&["evpn", "--json"]);
        let back: EvpnReply = serde_json::from_str(&json).expect("evpn --json");
        assert_eq!(back.segments[0].vni, VNI);
    }
    drop((ga, gb));
    let EvpnHost { ns: ns_a, sw, .. } = a;
    sw.stop();
    let links = ns_a.exec(&["ip", "-br", "link"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&br),
        "mirror left behind after stop:\n{links}"
    );
    drop((fa, fb));
    b.sw.stop();
}

/// Runs `bridge fdb ARGS` in the namespace, asserting success.
fn bridge_fdb(ns: &Netns, args: &[&str]) {
    let mut a = vec!["bridge", "fdb"];
    a.extend_from_slice(args);
    ns.exec_ok(&a);
}

/// Control input the mirror must refuse, written straight into its kernel objects (no FRR):
/// an entry for another VNI, one whose VTEP is the switch's own address, a unicast entry
/// without `extern_learn`, and MACs beyond `--evpn-mac-limit`. Each is counted by reason;
/// the good entries are installed and a withdrawn one leaves.
#[test]
fn test_evpn_bad_fdb_entries_refused_and_counted() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge"]) {
        return;
    }
    let (na, nk) = (Netns::new("evpnbad"), Netns::new("evpnbad-far"));
    let (ua, _uk) = veth(&na, &nk);
    let vtep = Ipv4Addr::new(10, 95, 0, 1);
    let h = EvpnHost::start(na, &ua, vtep, "evpn-bad", &["--evpn-mac-limit", "2"]);
    let vx = format!("evvx{VNI}");
    let other_vni = (VNI + 1).to_string();
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "00:00:00:00:00:00",
            "dev",
            &vx,
            "dst",
            "10.95.0.2",
            "self",
            "permanent",
        ],
    );
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:01",
            "dev",
            &vx,
            "dst",
            "10.95.0.2",
            "self",
            "extern_learn",
        ],
    );
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:02",
            "dev",
            &vx,
            "dst",
            "10.95.0.3",
            "self",
            "extern_learn",
        ],
    );
    // Beyond the limit of 2.
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:03",
            "dev",
            &vx,
            "dst",
            "10.95.0.2",
            "self",
            "extern_learn",
        ],
    );
    // Our own VTEP.
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:04",
            "dev",
            &vx,
            "dst",
            &vtep.to_string(),
            "self",
            "extern_learn",
        ],
    );
    // Another VNI.
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:05",
            "dev",
            &vx,
            "dst",
            "10.95.0.2",
            "vni",
            &other_vni,
            "self",
            "extern_learn",
        ],
    );
    // Not from a control plane.
    bridge_fdb(
        &h.ns,
        &[
            "add",
            "02:00:00:00:00:06",
            "dev",
            &vx,
            "dst",
            "10.95.0.2",
            "self",
        ],
    );
    h.wait_segment("bad entries refused by reason", None, |s| {
        s.refused.mac_limit == 1
            && s.refused.own_vtep == 1
            && s.refused.unknown_vni == 1
            && s.refused.not_extern_learn == 1
    });
    let s = h.segment();
    assert_eq!(s.refused.total(), 4, "{s:#?}");
    assert_eq!(s.refused_present, 4, "{s:#?}");
    assert_eq!(s.flood_vteps, vec!["10.95.0.2".to_owned()]);
    let remote: Vec<(String, String)> = s
        .remote_macs
        .iter()
        .map(|m| (m.mac.clone(), m.vtep.clone()))
        .collect();
    assert_eq!(
        remote,
        vec![
            ("02:00:00:00:00:01".to_owned(), "10.95.0.2".to_owned()),
            ("02:00:00:00:00:02".to_owned(), "10.95.0.3".to_owned()),
        ]
    );
    // The switch's tunnel uses exactly these: two VTEP slots, the flood one resolved by ARP
    // later (nobody answers here), the other not flooded to.
    let show = h.sw.show();
    let t = show
        .devices
        .iter()
        .find_map(|d| d.tunnel.as_ref())
        .expect("tunnel");
    let mut ips: Vec<&str> = t.remotes.iter().map(|r| r.ip.as_str()).collect();
    ips.sort();
    assert_eq!(ips, vec!["10.95.0.2", "10.95.0.3"]);
    assert_eq!(t.learned_macs, 2);
    // Withdrawn: the MAC and (with nothing else behind it) its VTEP leave the tunnel.
    bridge_fdb(
        &h.ns,
        &[
            "del",
            "02:00:00:00:00:02",
            "dev",
            &vx,
            "dst",
            "10.95.0.3",
            "self",
        ],
    );
    h.wait_segment("withdrawn MAC removed", None, |s| s.remote_macs.len() == 1);
    assert!(wait_for(Duration::from_secs(5), || {
        h.sw.show()
            .devices
            .iter()
            .find_map(|d| d.tunnel.clone())
            .is_some_and(|t| t.remotes.len() == 1 && t.learned_macs == 1)
    }));
    h.sw.stop();
}

/// FRR on host B dies (SIGKILL: what zebra installed stays in B's kernel) while the guests
/// ping. A's bgpd loses the session and withdraws B's routes (FRR 8.4 keeps no stale EVPN
/// paths), but both switches run with `--evpn-hold 60`: A holds what was withdrawn, so
/// forwarding goes on both ways through the outage. FRR comes back: the routes come back in
/// BGP and in both switches (nothing held any more), and the guests still ping. A guest that
/// came up on B during the outage is advertised once B's FRR is back: A learns and reaches it.
#[test]
fn evpn_frr_killed_and_restarted_forwarding_continues() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge"]) || !have_frr() {
        return;
    }
    let dir = TestDir::new("evpn-restart");
    let (a, b, fa, mut fb, g2) = two_hosts_with_g2_on_b("evpnrs", &["--evpn-hold", "60"], &dir);
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 93, 1),
        Ipv4Addr::new(192, 168, 93, 2),
    );
    let mut ga = Host::new(&a.sw.sock(), "evpnrs-guest-a", mac(1), ip_a);
    let mut gb = Host::new(&b.sw.sock(), "evpnrs-guest-b", mac(2), ip_b);
    ping(&mut [&mut ga, &mut gb], 0, ip_b, 3, 56);
    let (ma, mb) = (mac_text(mac(1)), mac_text(mac(2)));
    let converged = |s: &EvpnSegmentInfo, other: &str| s.remote_macs.iter().any(|m| m.mac == other);
    a.wait_segment("A has B's MAC", Some(&fa), |s| converged(s, &mb));
    b.wait_segment("B has A's MAC", Some(&fb), |s| converged(s, &ma));

    fb.kill();
    // Through the BGP hold time (3 s) and well beyond.
    let t0 = std::time::Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        ping(&mut [&mut ga, &mut gb], 0, ip_b, 1, 56);
        ping(&mut [&mut ga, &mut gb], 1, ip_a, 1, 56);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{rounds} ping rounds while B's FRR was down");
    // A change made meanwhile: guest Z comes up on B's second port while B's FRR is down. B's
    // switch learns it and writes it into its mirror; nobody advertises it yet.
    let ip_z = Ipv4Addr::new(192, 168, 93, 3);
    let mut gz = Host::new(&g2, "evpnrs-guest-z", mac(3), ip_z);
    gz.garp();
    let mz = mac_text(mac(3));
    b.wait_segment("B learned Z locally while its FRR was down", None, |s| {
        s.local_macs.iter().any(|m| m.mac == mz && m.port == "g2")
    });
    // A's bgpd lost the session and withdrew B's routes; A's switch holds them.
    let sa = a.segment();
    assert!(
        sa.remote_macs.is_empty()
            && sa.flood_vteps.is_empty()
            && sa.held_macs == 1
            && sa.held_flood_vteps == 1,
        "A's BGP withdrew B's routes and A holds them: {sa:#?}\n{}",
        fa.vtysh("show bgp summary")
    );
    let text = a.sw.vswitchctl(&["evpn"]);
    assert!(
        text.contains("withdrawn but held (--evpn-hold): 1 MACs, 1 flood vteps"),
        "{text}"
    );

    fb.spawn();
    let back = wait_for(CONVERGE, || {
        let r = fb.vtysh("show bgp l2vpn evpn route");
        r.contains(&format!("[2]:[0]:[48]:[{ma}]"))
            && r.contains(&format!("[3]:[0]:[32]:[{}]", a.vtep))
    });
    assert!(
        back,
        "B's routes did not come back:\n{}\n{}",
        fb.vtysh("show bgp l2vpn evpn route"),
        fb.log()
    );
    b.wait_segment("B has A's routes again", Some(&fb), |s| {
        converged(s, &ma) && s.flood_vteps == vec![a.vtep.to_string()]
    });
    a.wait_segment("A has B's routes again", Some(&fa), |s| {
        converged(s, &mb)
            && s.flood_vteps == vec![b.vtep.to_string()]
            && s.held_macs == 0
            && s.held_flood_vteps == 0
    });
    ping(&mut [&mut ga, &mut gb], 0, ip_b, 3, 56);
    ping(&mut [&mut ga, &mut gb], 1, ip_a, 3, 56);
    // What changed during the outage reached the fabric once FRR was back: A has Z behind B
    // from BGP, and A's guest reaches it.
    a.wait_segment(
        "A learned Z, which came up during B's outage",
        Some(&fa),
        |s| {
            s.remote_macs
                .iter()
                .any(|m| m.mac == mz && m.vtep == b.vtep.to_string())
        },
    );
    ping(&mut [&mut ga, &mut gb, &mut gz], 0, ip_z, 3, 56);
    drop((ga, gb, gz));
    drop((fa, fb));
    a.sw.stop();
    b.sw.stop();
}

/// MAC mobility: guest X moves from host A to host B (a second port there) and announces
/// itself with a gratuitous ARP. B exports X, BGP carries the move (a type-2 route with a
/// higher sequence number), A stops exporting X and installs it behind B's VTEP; a new guest
/// on A then reaches X at B.
#[test]
fn evpn_mac_moves_between_hosts() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge"]) || !have_frr() {
        return;
    }
    let dir = TestDir::new("evpn-mobility");
    let (a, b, fa, fb, g2) = two_hosts_with_g2_on_b("evpnmv", &[], &dir);
    let (ip_x, ip_y, ip_z) = (
        Ipv4Addr::new(192, 168, 92, 1),
        Ipv4Addr::new(192, 168, 92, 2),
        Ipv4Addr::new(192, 168, 92, 3),
    );
    let (mx, my) = (mac_text(mac(1)), mac_text(mac(2)));
    let mut x = Host::new(&a.sw.sock(), "evpnmv-x-at-a", mac(1), ip_x);
    let mut y = Host::new(&b.sw.sock(), "evpnmv-y", mac(2), ip_y);
    ping(&mut [&mut x, &mut y], 0, ip_y, 3, 56);
    b.wait_segment("B has X behind A", Some(&fb), |s| {
        s.remote_macs
            .iter()
            .any(|m| m.mac == mx && m.vtep == a.vtep.to_string())
    });

    // X moves as a migrated VM does: it comes up on B and says so while A still has it, so B's
    // route must outbid A's (a raised sequence number); then its old connection goes away.
    // Dropping it first would let A withdraw before B advertises, and B's route would need no
    // sequence number at all.
    let x_at_a = x;
    let mut x = Host::new(&g2, "evpnmv-x-at-b", mac(1), ip_x);
    x.garp();
    b.wait_segment("B learned X on its new port", Some(&fb), |s| {
        s.local_macs.iter().any(|m| m.mac == mx && m.port == "g2")
    });
    // Only once B's bgpd has originated X with a raised sequence may A's copy go: B's switch
    // learning X says nothing yet of its route, which reaches bgpd through zebra later; on a
    // loaded machine A's withdrawal once came first, and B then advertised X without one.
    let outbid = wait_for(CONVERGE, || {
        fb.vtysh("show bgp l2vpn evpn route type macip")
            .contains("MM:1")
    });
    assert!(
        outbid,
        "B did not advertise X with a MAC mobility sequence while A still had it:\n{}",
        fb.vtysh("show bgp l2vpn evpn route type macip")
    );
    drop(x_at_a);
    b.wait_segment("B exports X on its new port", Some(&fb), |s| {
        s.local_macs.iter().any(|m| m.mac == mx && m.port == "g2")
            && !s.remote_macs.iter().any(|m| m.mac == mx)
    });
    a.wait_segment("A has X behind B, no longer local", Some(&fa), |s| {
        s.remote_macs
            .iter()
            .any(|m| m.mac == mx && m.vtep == b.vtep.to_string())
            && !s.local_macs.iter().any(|m| m.mac == mx)
    });
    let routes = fa.vtysh("show bgp l2vpn evpn route type macip");
    assert!(
        routes.contains("MM:1"),
        "no MAC mobility sequence in A's routes:\n{routes}"
    );
    // A new guest at A reaches X at B, and Y still answers.
    let mut z = Host::new(&a.sw.sock(), "evpnmv-z", mac(3), ip_z);
    ping(&mut [&mut z, &mut x, &mut y], 0, ip_x, 3, 56);
    ping(&mut [&mut z, &mut x, &mut y], 0, ip_y, 3, 56);
    assert!(x.answered >= 3, "X at B answered {}", x.answered);
    let sa = a.segment();
    assert!(sa.remote_macs.iter().any(|m| m.mac == my), "{sa:#?}");
    drop((x, y, z));
    drop((fa, fb));
    a.sw.stop();
    b.sw.stop();
}

/// A namespace holding two Linux bridges: the underlay segment and the BGP segment of hosts
/// that are more than two (each host's veth ends are ports of them).
struct Wire {
    ns: Netns,
}

impl Wire {
    fn new() -> Wire {
        let ns = Netns::new("evpnwire");
        for br in ["uw", "cw"] {
            ns.ip(&["link", "add", br, "type", "bridge"]);
            ns.ip(&["link", "set", br, "up"]);
        }
        Wire { ns }
    }

    /// Plugs `host` into both segments: (its underlay end, its BGP end).
    fn plug(&self, host: &Netns) -> (String, String) {
        let mut ends = Vec::new();
        for br in ["uw", "cw"] {
            let (h, w) = veth(host, &self.ns);
            self.ns.ip(&["link", "set", &w, "master", br]);
            ends.push(h);
        }
        (ends.remove(0), ends.remove(0))
    }
}

/// The fabric of the issue: hosts A, B and D run the switch, host C only Linux (a bridge, a
/// kernel vxlan device with C's VTEP address on its underlay link, a veth into a namespace with
/// an address) and FRR; full-mesh iBGP, no static remote VTEP anywhere. The three switches'
/// guests ping each other, and they and C's kernel ping each other both ways, with every remote
/// VTEP and MAC learned from BGP; each switch host's FRR holds the other switches' type-2 and
/// type-3 routes, and C's FRR the switches' type-2 routes. The switches nap when idle
/// (`--pmd-sleep-max`), so three of them fit on two cores.
#[test]
fn evpn_three_switch_hosts_and_a_kernel_vxlan_host() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge", "ping"]) || !have_frr() {
        return;
    }
    let wire = Wire::new();
    // Index 0, 1, 2: the switch hosts A, B, D; index 3: the kernel host C.
    let ns = [
        Netns::new("evpnxA"),
        Netns::new("evpnxB"),
        Netns::new("evpnxD"),
        Netns::new("evpnxC"),
    ];
    const N: usize = 4;
    const KERNEL: usize = 3;
    let bgp: [Ipv4Addr; N] = [1u8, 2, 3, 4].map(|i| Ipv4Addr::new(172, 30, 1, i));
    let vtep: [Ipv4Addr; N] = [1u8, 2, 3, 4].map(|i| Ipv4Addr::new(10, 96, 1, i));
    let mut under = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        let (u, c) = wire.plug(n);
        n.ip(&["addr", "add", &format!("{}/24", bgp[i]), "dev", &c]);
        if i != KERNEL {
            n.ip(&["route", "add", "10.96.1.0/24", "dev", &c]);
        }
        under.push(u);
    }
    let [na, nb, nd, nc] = ns;
    // Host C: the kernel is the VTEP.
    let vni = VNI.to_string();
    nc.ip(&[
        "addr",
        "add",
        &format!("{}/24", vtep[KERNEL]),
        "dev",
        &under[KERNEL],
    ]);
    nc.ip(&["link", "add", "br0", "type", "bridge"]);
    nc.ip(&[
        "link",
        "add",
        "vxc",
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &vtep[KERNEL].to_string(),
        "dstport",
        "4789",
        "nolearning",
        "dev",
        &under[KERNEL],
    ]);
    nc.ip(&["link", "set", "vxc", "master", "br0"]);
    let guest_c = Netns::new("evpnxCg");
    let (gc, gk) = veth(&nc, &guest_c);
    nc.ip(&["link", "set", &gc, "master", "br0"]);
    for dev in ["br0", "vxc"] {
        nc.ip(&["link", "set", dev, "up"]);
    }
    let ip_c = Ipv4Addr::new(192, 168, 91, 3);
    guest_c.ip(&["addr", "add", &format!("{ip_c}/24"), "dev", &gk]);

    let a = EvpnHost::start(na, &under[0], vtep[0], "evpnx-a", &[]);
    let b = EvpnHost::start(nb, &under[1], vtep[1], "evpnx-b", &[]);
    let d = EvpnHost::start(nd, &under[2], vtep[2], "evpnx-d", &[]);
    let peers =
        |me: usize| -> Vec<Ipv4Addr> { (0..N).filter(|&i| i != me).map(|i| bgp[i]).collect() };
    let fa = Frr::start(&a.ns, "xA", bgp[0], &peers(0));
    let fb = Frr::start(&b.ns, "xB", bgp[1], &peers(1));
    let fd = Frr::start(&d.ns, "xD", bgp[2], &peers(2));
    let fc = Frr::start(&nc, "xC", bgp[KERNEL], &peers(KERNEL));
    let others = |me: usize| -> Vec<String> {
        let mut v: Vec<String> = (0..N)
            .filter(|&i| i != me)
            .map(|i| vtep[i].to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |v: &[String]| -> Vec<String> {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    for (i, (h, f)) in [(&a, &fa), (&b, &fb), (&d, &fd)].into_iter().enumerate() {
        h.wait_segment(
            &format!("switch host {i} floods to the three others"),
            Some(f),
            |s| sorted(&s.flood_vteps) == others(i),
        );
    }

    let ip = [1u8, 2, 4].map(|i| Ipv4Addr::new(192, 168, 91, i));
    let ga = Host::new(&a.sw.sock(), "evpnx-guest-a", mac(1), ip[0]);
    let gb = Host::new(&b.sw.sock(), "evpnx-guest-b", mac(2), ip[1]);
    let gd = Host::new(&d.sw.sock(), "evpnx-guest-d", mac(4), ip[2]);
    let mut guests = [ga, gb, gd];
    {
        let [ga, gb, gd] = &mut guests;
        let mut all = [ga, gb, gd];
        // Every switch guest reaches the kernel host and every other switch guest.
        for from in 0..3 {
            let rtt = ping(&mut all, from, ip_c, 3, 56);
            eprintln!("switch guest {from} -> kernel host C: rtt {rtt:?}");
            for to in (0..3).filter(|&t| t != from) {
                ping(&mut all, from, ip[to], 3, 56);
            }
        }
        // The kernel host reaches every guest.
        for &to in &ip {
            let p = kernel_ping(
                &guest_c,
                to,
                &["-c", "3", "-i", "0.2", "-w", "15"],
                &mut all,
            );
            let out = String::from_utf8_lossy(&p.stdout);
            assert!(out.contains("3 received"), "kernel host C -> {to}:\n{out}");
        }
    }
    // C's MAC came from BGP (type-2 from C's zebra, learned by its bridge), and C's kernel
    // holds the switches' guests behind their VTEPs, from the switches' type-2 routes.
    let mac_c = String::from_utf8_lossy(
        &guest_c
            .exec(&["cat", &format!("/sys/class/net/{gk}/address")])
            .stdout,
    )
    .trim()
    .to_owned();
    for (h, f) in [(&a, &fa), (&b, &fb), (&d, &fd)] {
        h.wait_segment("C's MAC from BGP", Some(f), |s| {
            s.remote_macs
                .iter()
                .any(|m| m.mac == mac_c && m.vtep == vtep[KERNEL].to_string())
        });
    }
    let fdb = nc.exec(&["bridge", "fdb", "show", "dev", "vxc"]);
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    for (m, v) in [(mac(1), vtep[0]), (mac(2), vtep[1]), (mac(4), vtep[2])] {
        assert!(
            fdb.contains(&format!("{} dst {v} self extern_learn", mac_text(m))),
            "C's kernel lacks {} behind {v}:\n{fdb}",
            mac_text(m)
        );
    }
    // Each host's FRR holds the other switches' type-2 (their guests' MACs) and type-3 (their
    // VTEPs) routes.
    let guest_macs = [mac(1), mac(2), mac(4)];
    for (me, f) in [(0usize, &fa), (1, &fb), (2, &fd), (KERNEL, &fc)] {
        let routes = f.vtysh("show bgp l2vpn evpn route");
        for other in (0..3).filter(|&o| o != me) {
            assert!(
                routes.contains(&format!("[2]:[0]:[48]:[{}]", mac_text(guest_macs[other])))
                    && routes.contains(&format!("[3]:[0]:[32]:[{}]", vtep[other])),
                "host {me}'s BGP table lacks switch host {other}'s routes:\n{routes}"
            );
        }
    }
    drop(guests);
    drop((fa, fb, fd, fc));
    a.sw.stop();
    b.sw.stop();
    d.sw.stop();
}

/// The local side on a real kernel, without FRR: a MAC the guest sends from becomes a static
/// FDB entry on its mirror port (what zebra turns into a type-2 route), and leaves when the
/// switch ages it out (`--mac-aging 2`); the guest's port gone, its mirror port goes too.
#[test]
fn evpn_local_mac_exported_then_aged_out() {
    let _heavy = heavy();
    if !can_run(&["ip", "bridge"]) {
        return;
    }
    let (na, nk) = (Netns::new("evpnloc"), Netns::new("evpnloc-far"));
    let (ua, _uk) = veth(&na, &nk);
    let h = EvpnHost::start(
        na,
        &ua,
        Ipv4Addr::new(10, 94, 0, 1),
        "evpn-local",
        &["--mac-aging", "2"],
    );
    let mirror = format!("ev0-{VNI}");
    let fdb = |h: &EvpnHost| {
        let o =
            h.ns.exec(&["bridge", "fdb", "show", "br", &format!("evbr{VNI}")]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut g = Host::new(
        &h.sw.sock(),
        "evpn-local-guest",
        mac(7),
        Ipv4Addr::new(192, 168, 90, 1),
    );
    let entry = format!("{} dev {mirror} master evbr{VNI} static", mac_text(mac(7)));
    assert!(
        wait_for(Duration::from_secs(10), || {
            g.garp();
            fdb(&h).contains(&entry)
        }),
        "not exported:\n{}\n{:#?}",
        fdb(&h),
        h.segment()
    );
    assert_eq!(h.segment().local_macs.len(), 1);
    // Silent now: aged out by the switch, withdrawn from the mirror.
    assert!(
        wait_for(Duration::from_secs(10), || !fdb(&h)
            .contains(&mac_text(mac(7)))),
        "not withdrawn after aging:\n{}",
        fdb(&h)
    );
    assert!(h.segment().local_macs.is_empty());
    drop(g);
    h.sw.vswitchctl(&["del-port", "g"]);
    let links = || String::from_utf8_lossy(&h.ns.exec(&["ip", "-br", "link"]).stdout).into_owned();
    assert!(
        wait_for(Duration::from_secs(5), || !links().contains(&mirror)),
        "mirror port left after its port went:\n{}",
        links()
    );
    h.sw.stop();
}

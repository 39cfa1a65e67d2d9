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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{heavy, wait_for, TestDir, VSWITCH, VSWITCHCTL};
use vhost_user::guest::Guest;
use vswitch::ctl::{CtlClient, PortStats, ShowReply};
use vswitch::wire;

const VNI: u32 = 4242;
/// How long a ping (ARP included) may take end to end.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Prerequisites.

fn under_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("yes")
    )
}

/// Whether this machine lets the test make namespaces and veths (root, iproute2); under CI a
/// missing prerequisite fails the test, elsewhere it is skipped loudly.
fn can_run(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    for t in tools {
        let ok = Command::new(t)
            .arg(if *t == "python3" { "--version" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            missing.push(*t);
        }
    }
    let probe = format!("nfvprobe{}", std::process::id());
    let netns_ok = run_ok("ip", &["netns", "add", &probe]);
    if netns_ok {
        run_ok("ip", &["netns", "del", &probe]);
    }
    if missing.is_empty() && netns_ok {
        return true;
    }
    let what = format!(
        "network namespaces (root and iproute2: {}) and {:?}",
        if netns_ok {
            "ok"
        } else {
            "`ip netns add` failed"
        },
        missing
    );
    if under_ci() {
        panic!("required under CI: {what}; .ci/run installs them");
    }
    eprintln!("\n*** SKIPPED: {what} not available on this machine ***\n");
    false
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let o = run("ip", args);
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Namespaces.

/// A network namespace, deleted on drop (its veth ends go with it).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nfv-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let _ = run("ip", &["netns", "del", &name]);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No IPv6 chatter (router solicitations, DAD) on the test's links.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn exec(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    fn exec_ok(&self, args: &[&str]) {
        let o = self.exec(args);
        assert!(
            o.status.success(),
            "in {}: {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A veth pair with one end in each namespace, both up; returns the two interface names.
fn veth(a: &Netns, b: &Netns) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // Interface names hold 15 bytes.
    let tag = format!("{}{n}", std::process::id() % 100_000);
    let (ea, eb) = (format!("va{tag}"), format!("vb{tag}"));
    ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb]);
    ip(&["link", "set", &ea, "netns", &a.name]);
    ip(&["link", "set", &eb, "netns", &b.name]);
    a.ip(&["link", "set", &ea, "up"]);
    b.ip(&["link", "set", &eb, "up"]);
    (ea, eb)
}

// ---------------------------------------------------------------------------------------------
// A switch in a namespace.

struct NsSwitch {
    child: Child,
    dir: TestDir,
    ctl: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

impl NsSwitch {
    /// Starts `vswitch ARGS` in `ns` with a control socket and a server port `g`, and waits for
    /// both sockets.
    fn start(ns: &Netns, test: &str, cores: &str, args: &[String]) -> NsSwitch {
        let dir = TestDir::new(test);
        let ctl = dir.join("ctl.sock");
        let log = dir.join("vswitch.log");
        let mut all: Vec<String> = args.to_vec();
        all.extend([
            "--vhost-server".to_owned(),
            format!("g={}", dir.join("g.sock").display()),
            "--ctl".to_owned(),
            ctl.display().to_string(),
            "--pmd-cores".to_owned(),
            cores.to_owned(),
            // Two switches share two cores with the test: nap when idle.
            "--pmd-sleep-max".to_owned(),
            "200".to_owned(),
        ]);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("dup");
        let child = ns
            .command(VSWITCH)
            .args(&all)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start vswitch");
        let mut sw = NsSwitch {
            child,
            dir,
            ctl,
            log,
            args: all,
        };
        let sock = sw.sock();
        let up = wait_for(Duration::from_secs(20), || {
            (common::is_socket(&sw.ctl) && common::is_socket(&sock))
                || sw.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && sw.child.try_wait().ok().flatten().is_none(),
            "vswitch did not come up\n{}",
            sw.report()
        );
        sw
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("g.sock")
    }

    fn report(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- vswitch {:?} ---\n{log}---", self.args)
    }

    fn ctl(&self) -> CtlClient {
        CtlClient::connect(&self.ctl).unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }

    fn stats(&self, port: &str) -> PortStats {
        let s = self.ctl().stats().expect("stats");
        s.ports
            .into_iter()
            .find(|p| p.name == port)
            .unwrap_or_else(|| panic!("no port {port}"))
    }

    fn show(&self) -> ShowReply {
        self.ctl().show().expect("show")
    }

    fn vswitchctl(&self, args: &[&str]) -> String {
        let o = Command::new(VSWITCHCTL)
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("vswitchctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until every remote VTEP of tunnel `name` is resolved.
    fn wait_vteps_resolved(&self, name: &str) {
        let ok = wait_for(Duration::from_secs(10), || {
            self.show().devices.iter().any(|d| {
                d.name == name
                    && d.tunnel
                        .as_ref()
                        .is_some_and(|t| t.remotes.iter().all(|r| r.mac.is_some()))
            })
        });
        assert!(
            ok,
            "remote VTEPs of {name} unresolved: {:?}\n{}",
            self.show().devices,
            self.report()
        );
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut status = None;
        wait_for(Duration::from_secs(10), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        let log = self.report();
        assert!(
            status.is_some_and(|s| s.success()),
            "vswitch did not stop cleanly: {status:?}\n{log}"
        );
        assert!(
            log.contains("closed"),
            "the DPDK port was not closed\n{log}"
        );
    }
}

impl Drop for NsSwitch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal IPv4 host in a guest: ARP and ICMP echo, both ways.

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;

struct Host {
    name: String,
    g: Guest,
    mac: [u8; 6],
    ip: Ipv4Addr,
    neigh: HashMap<Ipv4Addr, [u8; 6]>,
    /// Echo replies received: (from, id, seq).
    replies: Vec<(Ipv4Addr, u16, u16)>,
    /// Echo requests answered.
    answered: u64,
    scratch: Vec<u8>,
}

impl Host {
    fn new(sock: &Path, name: &str, mac: [u8; 6], ip: Ipv4Addr) -> Host {
        Host {
            name: name.to_owned(),
            g: common::connect(sock, name),
            mac,
            ip,
            neigh: HashMap::new(),
            replies: Vec::new(),
            answered: 0,
            scratch: Vec::new(),
        }
    }

    fn send(&mut self, f: &[u8]) {
        self.g.tx.reclaim();
        assert!(self.g.tx.push_tx(f), "{}: transmit queue full", self.name);
        self.g.tx.publish();
    }

    /// Handles what arrived: answers ARP and echo requests, learns neighbours, records replies.
    fn poll(&mut self) -> usize {
        let mut frames = Vec::new();
        let n = self
            .g
            .rx
            .recv(usize::MAX, &mut self.scratch, |f| frames.push(f.to_vec()));
        for f in frames {
            self.handle(&f);
        }
        n
    }

    fn handle(&mut self, f: &[u8]) {
        if f.len() < 14 {
            return;
        }
        match u16::from_be_bytes([f[12], f[13]]) {
            ETH_ARP => {
                let Ok(a) = wire::parse_arp(&f[14..]) else {
                    return;
                };
                self.neigh.insert(a.spa, a.sha);
                if a.oper == wire::arp::REQUEST && a.tpa == self.ip {
                    let mut r = [0u8; 64];
                    let n =
                        wire::write_arp(&mut r, wire::arp::REPLY, self.mac, self.ip, a.sha, a.spa);
                    self.send(&r[..n]);
                }
            }
            ETH_IPV4 if f.len() >= 14 + 20 + 8 && f[23] == 1 => {
                let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
                let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
                if dst != self.ip {
                    return;
                }
                let ihl = usize::from(f[14] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                let icmp = &f[14 + ihl..14 + total];
                assert_eq!(wire::checksum(icmp), 0, "{}: bad ICMP checksum", self.name);
                let (id, seq) = (
                    u16::from_be_bytes([icmp[4], icmp[5]]),
                    u16::from_be_bytes([icmp[6], icmp[7]]),
                );
                match icmp[0] {
                    8 => {
                        let mac = [f[6], f[7], f[8], f[9], f[10], f[11]];
                        let reply = icmp_frame(mac, self.mac, self.ip, src, 0, id, seq, &icmp[8..]);
                        self.send(&reply);
                        self.answered += 1;
                    }
                    0 => self.replies.push((src, id, seq)),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn arp_request(&mut self, target: Ipv4Addr) {
        let mut r = [0u8; 64];
        let n = wire::write_arp(
            &mut r,
            wire::arp::REQUEST,
            self.mac,
            self.ip,
            [0; 6],
            target,
        );
        self.send(&r[..n]);
    }

    fn echo_request(&mut self, to: Ipv4Addr, mac: [u8; 6], id: u16, seq: u16, len: usize) {
        let payload: Vec<u8> = (0..len)
            .map(|i| i.to_le_bytes()[0] ^ seq.to_le_bytes()[0])
            .collect();
        let f = icmp_frame(mac, self.mac, self.ip, to, 8, id, seq, &payload);
        self.send(&f);
    }
}

/// An Ethernet/IPv4/ICMP echo frame.
#[allow(clippy::too_many_arguments)]
fn icmp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    kind: u8,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_IPV4.to_be_bytes());
    let mut iph = [0u8; 20];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    iph[8] = 64;
    iph[9] = 1;
    iph[12..16].copy_from_slice(&sip.octets());
    iph[16..20].copy_from_slice(&dip.octets());
    let c = wire::checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&iph);
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = wire::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// Host `from` pings `to_ip` `count` times (ARP first), every host polled meanwhile so that
/// whoever is addressed answers. Returns the round-trip times.
fn ping(
    hosts: &mut [&mut Host],
    from: usize,
    to_ip: Ipv4Addr,
    count: u16,
    len: usize,
) -> Vec<Duration> {
    let id = 0x4e46 + u16::try_from(from).unwrap();
    let mut rtts = Vec::new();
    let deadline = Instant::now() + PING_TIMEOUT;
    let mut last_arp: Option<Instant> = None;
    for seq in 1..=count {
        let mut sent: Option<Instant> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "{} -> {to_ip}: no echo reply for seq {seq} within {PING_TIMEOUT:?} (neighbours {:?})",
                hosts[from].name,
                hosts[from].neigh
            );
            for h in hosts.iter_mut() {
                h.poll();
            }
            let h = &mut *hosts[from];
            if let Some(pos) = h.replies.iter().position(|r| *r == (to_ip, id, seq)) {
                h.replies.remove(pos);
                rtts.push(sent.map_or(Duration::ZERO, |s| s.elapsed()));
                break;
            }
            match h.neigh.get(&to_ip).copied() {
                None => {
                    if last_arp.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                        h.arp_request(to_ip);
                        last_arp = Some(Instant::now());
                    }
                }
                Some(mac) => {
                    if sent.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        h.echo_request(to_ip, mac, id, seq, len);
                        sent = Some(Instant::now());
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    rtts
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0x4e, 0x46, 0, 0, n]
}

fn drops(s: &PortStats) -> u64 {
    s.drops.values().sum()
}

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

fn wait_and_get<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `ping` in `ns` while the guests keep answering; returns its output.
fn kernel_ping(ns: &Netns, to: Ipv4Addr, args: &[&str], hosts: &mut [&mut Host]) -> Output {
    let mut child = ns
        .command("ping")
        .args(args)
        .arg(to.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("ping").is_none() {
        assert!(Instant::now() < deadline, "ping ran for 30 s");
        for h in hosts.iter_mut() {
            h.poll();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    child.wait_with_output().expect("ping output")
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

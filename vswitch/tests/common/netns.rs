//! Hosts made of network namespaces for the overlay and EVPN tests (`ip netns`, veth pairs; no
//! frame leaves them): a `vswitch` process in a namespace with its control socket and a server
//! port, and a minimal IPv4 host (ARP and ICMP echo, both ways) in an in-process virtio-net
//! guest, so that "ping" is the real exchange of ARP and ICMP frames, checked byte for byte.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{wait_for, TestDir, VSWITCH, VSWITCHCTL};
use vhost_user::guest::Guest;
use vswitch::ctl::{CtlClient, PortStats, ShowReply};
use vswitch::wire;

/// How long a ping (ARP included) may take end to end.
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Prerequisites.

pub fn under_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("yes")
    )
}

/// Whether this machine lets the test make namespaces and veths (root, iproute2); under CI a
/// missing prerequisite fails the test, elsewhere it is skipped loudly.
pub fn can_run(tools: &[&str]) -> bool {
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

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

pub fn run_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
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
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
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
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    pub fn exec_ok(&self, args: &[&str]) {
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
pub fn veth(a: &Netns, b: &Netns) -> (String, String) {
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

pub struct NsSwitch {
    pub child: Child,
    pub dir: TestDir,
    pub ctl: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
}

impl NsSwitch {
    /// Starts `vswitch ARGS` in `ns` with a control socket and a server port `g`, and waits for
    /// both sockets.
    pub fn start(ns: &Netns, test: &str, cores: &str, args: &[String]) -> NsSwitch {
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
            (super::is_socket(&sw.ctl) && super::is_socket(&sock))
                || sw.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && sw.child.try_wait().ok().flatten().is_none(),
            "vswitch did not come up\n{}",
            sw.report()
        );
        sw
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("g.sock")
    }

    pub fn report(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- vswitch {:?} ---\n{log}---", self.args)
    }

    pub fn ctl(&self) -> CtlClient {
        CtlClient::connect(&self.ctl).unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }

    pub fn stats(&self, port: &str) -> PortStats {
        let s = self.ctl().stats().expect("stats");
        s.ports
            .into_iter()
            .find(|p| p.name == port)
            .unwrap_or_else(|| panic!("no port {port}"))
    }

    pub fn show(&self) -> ShowReply {
        self.ctl().show().expect("show")
    }

    pub fn vswitchctl(&self, args: &[&str]) -> String {
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
    pub fn wait_vteps_resolved(&self, name: &str) {
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
    pub fn stop(mut self) {
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

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;

pub struct Host {
    pub name: String,
    pub g: Guest,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub neigh: HashMap<Ipv4Addr, [u8; 6]>,
    /// Echo replies received: (from, id, seq).
    pub replies: Vec<(Ipv4Addr, u16, u16)>,
    /// Echo requests answered.
    pub answered: u64,
    pub scratch: Vec<u8>,
}

impl Host {
    pub fn new(sock: &Path, name: &str, mac: [u8; 6], ip: Ipv4Addr) -> Host {
        Host {
            name: name.to_owned(),
            g: super::connect(sock, name),
            mac,
            ip,
            neigh: HashMap::new(),
            replies: Vec::new(),
            answered: 0,
            scratch: Vec::new(),
        }
    }

    pub fn send(&mut self, f: &[u8]) {
        self.g.tx.reclaim();
        assert!(self.g.tx.push_tx(f), "{}: transmit queue full", self.name);
        self.g.tx.publish();
    }

    /// Handles what arrived: answers ARP and echo requests, learns neighbours, records replies.
    pub fn poll(&mut self) -> usize {
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

    pub fn handle(&mut self, f: &[u8]) {
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

    pub fn arp_request(&mut self, target: Ipv4Addr) {
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

    /// A gratuitous ARP (a request for its own address): "this IP is at this MAC, here".
    pub fn garp(&mut self) {
        let ip = self.ip;
        self.arp_request(ip);
    }

    pub fn echo_request(&mut self, to: Ipv4Addr, mac: [u8; 6], id: u16, seq: u16, len: usize) {
        let payload: Vec<u8> = (0..len)
            .map(|i| i.to_le_bytes()[0] ^ seq.to_le_bytes()[0])
            .collect();
        let f = icmp_frame(mac, self.mac, self.ip, to, 8, id, seq, &payload);
        self.send(&f);
    }
}

/// An Ethernet/IPv4/ICMP echo frame.
#[allow(clippy::too_many_arguments)]
pub fn icmp_frame(
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
pub fn ping(
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

pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0x4e, 0x46, 0, 0, n]
}

pub fn drops(s: &PortStats) -> u64 {
    s.drops.values().sum()
}

pub fn wait_and_get<T>(mut f: impl FnMut() -> Option<T>) -> T {
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
pub fn kernel_ping(ns: &Netns, to: Ipv4Addr, args: &[&str], hosts: &mut [&mut Host]) -> Output {
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

//! DPDK interop: `dpdk-testpmd` with two `net_virtio_user` ports, both frontends of our switch,
//! forwarding to each other through it (`--forward-mode=mac`, each port's `--eth-peer` the
//! other's MAC). testpmd's own counters and the switch's `vswitchctl stats --json` must tell the
//! same story, in both directions, and at 64, 1518 and 9000 bytes.
//!
//! The switch polls on core 1 and testpmd forwards on lcore 0 (its main lcore, 1, only reads
//! commands), so the two busy pollers get a core each.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::hugepages::ensure_hugepages;
use nfv_tests::peers::{require, workspace_bin};
use nfv_tests::qemu::{wait_for_sockets, Process, TestDir};
use nfv_tests::serial::heavy;
use nfv_tests::testpmd::{Memory, PortStats, Testpmd, TestpmdBuilder};

const MAC0: &str = "02:00:00:00:00:01";
const MAC1: &str = "02:00:00:00:00:02";
/// Bursts each port sends to start the loop (`start tx_first N`), of 32 frames each.
const TX_FIRST_BURSTS: u32 = 8;

// ---------------------------------------------------------------------------------------------
// Just enough JSON for `vswitchctl --json`: this crate has no JSON dependency.

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    /// The number's text, converted on use.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let b = text.as_bytes();
        let mut at = 0;
        let v = parse_value(b, &mut at)?;
        skip_ws(b, &mut at);
        if at != b.len() {
            return Err(format!("trailing bytes at {at}"));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("{n} is not a u64")),
            other => panic!("not a number: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn obj(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(o) => o,
            other => panic!("not an object: {other:?}"),
        }
    }
}

fn skip_ws(b: &[u8], at: &mut usize) {
    while *at < b.len() && b[*at].is_ascii_whitespace() {
        *at += 1;
    }
}

fn expect_byte(b: &[u8], at: &mut usize, c: u8) -> Result<(), String> {
    skip_ws(b, at);
    if b.get(*at) == Some(&c) {
        *at += 1;
        Ok(())
    } else {
        Err(format!("expected `{}` at byte {}", c as char, *at))
    }
}

fn parse_string(b: &[u8], at: &mut usize) -> Result<String, String> {
    expect_byte(b, at, b'"')?;
    let mut s = Vec::new();
    loop {
        match b.get(*at) {
            None => return Err("unterminated string".into()),
            Some(b'"') => {
                *at += 1;
                return String::from_utf8(s).map_err(|e| e.to_string());
            }
            Some(b'\\') => {
                let c = *b.get(*at + 1).ok_or("bad escape")?;
                *at += 2;
                match c {
                    b'n' => s.push(b'\n'),
                    b't' => s.push(b'\t'),
                    b'u' => {
                        // Not in the replies read here (names and paths are ASCII).
                        return Err("\\u escapes are not supported".into());
                    }
                    other => s.push(other),
                }
            }
            Some(&c) => {
                s.push(c);
                *at += 1;
            }
        }
    }
}

fn parse_value(b: &[u8], at: &mut usize) -> Result<Json, String> {
    skip_ws(b, at);
    match b.get(*at) {
        Some(b'{') => {
            *at += 1;
            let mut fields = Vec::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b'}') {
                *at += 1;
                return Ok(Json::Obj(fields));
            }
            loop {
                skip_ws(b, at);
                let k = parse_string(b, at)?;
                expect_byte(b, at, b':')?;
                fields.push((k, parse_value(b, at)?));
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return Ok(Json::Obj(fields));
                    }
                    _ => return Err(format!("bad object at byte {}", *at)),
                }
            }
        }
        Some(b'[') => {
            *at += 1;
            let mut items = Vec::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b']') {
                *at += 1;
                return Ok(Json::Arr(items));
            }
            loop {
                items.push(parse_value(b, at)?);
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return Ok(Json::Arr(items));
                    }
                    _ => return Err(format!("bad array at byte {}", *at)),
                }
            }
        }
        Some(b'"') => parse_string(b, at).map(Json::Str),
        Some(b't') if b[*at..].starts_with(b"true") => {
            *at += 4;
            Ok(Json::Bool(true))
        }
        Some(b'f') if b[*at..].starts_with(b"false") => {
            *at += 5;
            Ok(Json::Bool(false))
        }
        Some(b'n') if b[*at..].starts_with(b"null") => {
            *at += 4;
            Ok(Json::Null)
        }
        Some(c) if *c == b'-' || c.is_ascii_digit() => {
            let start = *at;
            while *at < b.len() && matches!(b[*at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                *at += 1;
            }
            Ok(Json::Num(
                String::from_utf8_lossy(&b[start..*at]).into_owned(),
            ))
        }
        _ => Err(format!("unexpected byte at {}", *at)),
    }
}

#[test]
fn json_subset_parses_vswitchctl_output() {
    let v = Json::parse(
        "{\n  \"ports\": [\n    {\"name\": \"p0\", \"rx_packets\": 18446744073709551615,\n     \"drops\": {\"x\": 0}, \"vlan\": null, \"ok\": true, \"f\": -1.5e3}\n  ]\n}\n",
    )
    .expect("parse");
    let p = &v.get("ports").arr()[0];
    assert_eq!(p.get("name").str(), "p0");
    assert_eq!(p.get("rx_packets").u64(), u64::MAX);
    assert_eq!(p.get("drops").obj().len(), 1);
    assert_eq!(p.get("vlan"), &Json::Null);
    assert_eq!(p.get("ok"), &Json::Bool(true));
    assert!(Json::parse("{\"a\": 1").is_err());
    assert!(Json::parse("[1, 2] x").is_err());
}

// ---------------------------------------------------------------------------------------------
// The switch.

/// One port's counters from `vswitchctl stats --json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SwPort {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    /// Drops of frames received from this port (`rx_*` reasons, the ring's own included).
    rx_drops: u64,
    /// Drops of frames on their way to this port (`tx_*` per-frame reasons).
    tx_drops: u64,
}

impl SwPort {
    fn since(&self, e: &SwPort) -> SwPort {
        SwPort {
            rx_packets: self.rx_packets - e.rx_packets,
            rx_bytes: self.rx_bytes - e.rx_bytes,
            tx_packets: self.tx_packets - e.tx_packets,
            tx_bytes: self.tx_bytes - e.tx_bytes,
            rx_drops: self.rx_drops - e.rx_drops,
            tx_drops: self.tx_drops - e.tx_drops,
        }
    }
}

/// `vswitch` serving `p0` and `p1` in server mode, PMD on core 1.
struct Vswitch {
    process: Process,
    ctl: PathBuf,
    vswitchctl: PathBuf,
    sockets: [PathBuf; 2],
}

impl Vswitch {
    fn spawn(dir: &TestDir) -> Vswitch {
        let sockets = [dir.join("p0.sock"), dir.join("p1.sock")];
        let ctl = dir.join("ctl.sock");
        let mut cmd = Command::new(workspace_bin("vswitch"));
        cmd.arg("--vhost-server")
            .arg(format!("p0={}", sockets[0].display()))
            .arg("--vhost-server")
            .arg(format!("p1={}", sockets[1].display()))
            .arg("--ctl")
            .arg(&ctl)
            .args(["--pmd-cores", "1"])
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1");
        let process = Process::spawn("vswitch", &mut cmd, &dir.join("vswitch.log"))
            .unwrap_or_else(|e| panic!("{e}"))
            .with_graceful_stop("TERM", Duration::from_secs(5));
        let paths: Vec<&Path> = sockets
            .iter()
            .map(PathBuf::as_path)
            .chain([ctl.as_path()])
            .collect();
        wait_for_sockets(&paths, Duration::from_secs(20), &process)
            .unwrap_or_else(|e| panic!("{e}"));
        Vswitch {
            process,
            ctl,
            vswitchctl: workspace_bin("vswitchctl"),
            sockets,
        }
    }

    fn ctl_json(&self, what: &str) -> Json {
        let out = Command::new("timeout")
            .arg("10")
            .arg(&self.vswitchctl)
            .arg("--ctl")
            .arg(&self.ctl)
            .arg(what)
            .arg("--json")
            .output()
            .unwrap_or_else(|e| panic!("run vswitchctl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "vswitchctl {what} --json: {} {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.report()
        );
        Json::parse(&text).unwrap_or_else(|e| panic!("vswitchctl {what} --json: {e}:\n{text}"))
    }

    /// Counters of p0 and p1.
    fn stats(&self) -> [SwPort; 2] {
        let v = self.ctl_json("stats");
        let mut by_name: BTreeMap<String, SwPort> = BTreeMap::new();
        for p in v.get("ports").arr() {
            let mut s = SwPort {
                rx_packets: p.get("rx_packets").u64(),
                rx_bytes: p.get("rx_bytes").u64(),
                tx_packets: p.get("tx_packets").u64(),
                tx_bytes: p.get("tx_bytes").u64(),
                ..SwPort::default()
            };
            for (reason, n) in p.get("drops").obj() {
                if reason.starts_with("rx_") {
                    s.rx_drops += n.u64();
                } else if !reason.starts_with("tx_ring_") {
                    // The `tx_ring_*` entries are the receive rings' own event counters, which
                    // count some of the same drops again (see vswitch/tests/switching.rs,
                    // drops_total_counts_each_dropped_frame_once): frames are counted by the
                    // switch's per-frame reasons only.
                    s.tx_drops += n.u64();
                }
            }
            by_name.insert(p.get("name").str().to_owned(), s);
        }
        ["p0", "p1"].map(|n| by_name.get(n).copied().unwrap_or_default())
    }

    /// Counters once they stop moving (the switch drains what testpmd left in its TX rings).
    fn settled_stats(&self) -> [SwPort; 2] {
        let mut last = self.stats();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.stats();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// The ring layout (`split`/`packed`) `show` reports for each queue of each port.
    fn ring_layouts(&self) -> Vec<(String, u64, String)> {
        let v = self.ctl_json("show");
        let mut out = Vec::new();
        for p in v.get("ports").arr() {
            for q in p.get("queues").arr() {
                out.push((
                    p.get("name").str().to_owned(),
                    q.get("index").u64(),
                    q.get("ring").str().to_owned(),
                ));
            }
        }
        out
    }

    /// Ring size of the receive queue (virtqueue 0) of each port, as the frontend set it.
    fn rx_ring_sizes(&self) -> [u64; 2] {
        let v = self.ctl_json("show");
        let size = |name: &str| {
            v.get("ports")
                .arr()
                .iter()
                .find(|p| p.get("name").str() == name)
                .and_then(|p| {
                    p.get("queues")
                        .arr()
                        .iter()
                        .find(|q| q.get("index").u64() == 0)
                })
                .map(|q| q.get("size").u64())
                .unwrap_or_else(|| panic!("no queue 0 for {name} in show"))
        };
        [size("p0"), size("p1")]
    }

    fn report(&self) -> String {
        format!(
            "--- vswitch log {} (last 40 lines) ---\n{}",
            self.process.log_path().display(),
            self.process.log_tail(40)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// testpmd.

/// testpmd with its two virtio-user ports on the switch's sockets, in mac forwarding, each port
/// addressing the other's MAC, frames of `frame_len` bytes, links up.
///
/// Frames longer than an mbuf (2 KiB of data) are sent as chains of 2 KiB segments
/// (`--txpkts=2048,2048,...` with the MULTI_SEGS Tx offload) and received scattered over 2 KiB
/// mbufs (`--enable-scatter`), so a 9000-byte frame takes several descriptors on the switch's
/// Rx side (a descriptor chain) and several mergeable receive buffers on its Tx side
/// (MRG_RXBUF). `--max-pkt-len` raises testpmd's MTU to let them in.
fn start_testpmd(
    binary: &Path,
    sw: &Vswitch,
    memory: Memory,
    frame_len: u32,
    label: &str,
    packed: bool,
) -> Testpmd {
    const SEG: u32 = 2048;
    let mut b = TestpmdBuilder::new(label)
        .binary(binary)
        .lcores(&[0, 1], 1)
        .memory(memory)
        .virtio_user(&sw.sockets[0], 1, Some(MAC0))
        .virtio_user(&sw.sockets[1], 1, Some(MAC1))
        .packed_vq(packed)
        .forward_mode("mac")
        .eth_peer(0, MAC1)
        .eth_peer(1, MAC0)
        .lifetime(Duration::from_secs(120));
    if frame_len <= SEG {
        b = b.txpkts(frame_len);
    } else {
        let mut segs = vec![SEG.to_string(); usize::try_from(frame_len / SEG).unwrap_or(0)];
        if !frame_len.is_multiple_of(SEG) {
            segs.push((frame_len % SEG).to_string());
        }
        b = b
            .app_arg("--tx-offloads=0x8000")
            .app_arg("--enable-scatter")
            .app_arg(&format!("--max-pkt-len={}", frame_len + 18))
            .app_arg(&format!("--txpkts={}", segs.join(",")));
    }
    let mut t = b.spawn().unwrap_or_else(|e| panic!("start testpmd: {e}"));
    if let Err(e) = t.wait_links_up(Duration::from_secs(20)) {
        panic!("testpmd links: {e}\n{}", sw.report());
    }
    t
}

/// What one run of `start tx_first` .. `stop` moved, from both sides.
struct Run {
    pmd: [PortStats; 2],
    sw: [SwPort; 2],
    rings: [u64; 2],
}

fn run_traffic(t: &mut Testpmd, sw: &Vswitch, secs: u64) -> Run {
    let pmd0 = t.port_stats().unwrap_or_else(|e| panic!("{e}"));
    let sw0 = sw.stats();
    t.start_tx_first(TX_FIRST_BURSTS)
        .unwrap_or_else(|e| panic!("start tx_first: {e}"));
    std::thread::sleep(Duration::from_secs(secs));
    let fwd = t.stop().unwrap_or_else(|e| panic!("stop: {e}"));
    eprintln!("testpmd forward stats: {fwd:?}");
    let sw1 = sw.settled_stats();
    let pmd1 = t.port_stats().unwrap_or_else(|e| panic!("{e}"));
    let run = Run {
        pmd: [pmd1[0].since(&pmd0[0]), pmd1[1].since(&pmd0[1])],
        sw: [sw1[0].since(&sw0[0]), sw1[1].since(&sw0[1])],
        rings: sw.rx_ring_sizes(),
    };
    eprintln!(
        "testpmd port stats: {:?}\nvswitch stats: {:?}\nrx rings: {:?}",
        run.pmd, run.sw, run.rings
    );
    run
}

/// The two sides' counters agree, port by port and direction by direction.
fn check_agreement(run: &Run, frame_len: u64, sw: &Vswitch) {
    for port in 0..2 {
        let (p, s, ring) = (&run.pmd[port], &run.sw[port], run.rings[port]);
        let other = &run.sw[1 - port];
        let ctx = format!(
            "port {port}, {frame_len}-byte frames: testpmd {p:?}, vswitch {s:?}, vswitch's other \
             port {other:?}\n{}",
            sw.report()
        );
        // Traffic flowed both ways.
        assert!(p.tx_packets > 1000, "testpmd sent little: {ctx}");
        assert!(p.rx_packets > 1000, "testpmd received little: {ctx}");
        assert_eq!(p.tx_errors, 0, "{ctx}");
        assert_eq!(p.tx_bytes, p.tx_packets * frame_len, "{ctx}");
        assert_eq!(p.rx_bytes, p.rx_packets * frame_len, "{ctx}");
        // Every frame testpmd put on its TX ring was taken by the switch: it keeps polling
        // after testpmd stops, and the counters were read once they settled.
        assert_eq!(s.rx_packets, p.tx_packets, "switch rx vs testpmd tx: {ctx}");
        assert_eq!(s.rx_bytes, p.tx_bytes, "switch rx vs testpmd tx: {ctx}");
        assert_eq!(s.rx_drops, 0, "{ctx}");
        // What the switch delivered, testpmd received, except what still sat in its RX ring
        // when it stopped polling: at most the ring's size, one descriptor per frame at least.
        assert!(
            s.tx_packets >= p.rx_packets && s.tx_packets - p.rx_packets <= ring,
            "switch tx {} vs testpmd rx {} (ring {ring}): {ctx}",
            s.tx_packets,
            p.rx_packets
        );
        assert_eq!(s.tx_bytes, s.tx_packets * frame_len, "{ctx}");
        // Each frame from this port went to the other one, delivered or dropped there.
        assert_eq!(
            s.rx_packets,
            other.tx_packets + other.tx_drops,
            "frames from port {port} neither delivered nor dropped: {ctx}"
        );
    }
}

fn memory_for(mb: u32) -> Memory {
    // 256 MB of 2 MB pages when they can be had (root); `--no-huge` otherwise.
    Memory::huge_or_not(ensure_hugepages(u64::from(mb / 2)), mb)
}

#[test]
fn testpmd_mac_forwarding_through_vswitch_both_directions() {
    let Some(testpmd) = require("dpdk-testpmd", "DPDK testpmd, apt-get install dpdk") else {
        return;
    };
    let _heavy = heavy();
    let started = Instant::now();
    let dir = TestDir::new("testpmd-vswitch").unwrap_or_else(|e| panic!("{e}"));
    let sw = Vswitch::spawn(&dir);
    let memory = memory_for(256);
    eprintln!("testpmd memory: {memory:?}");
    let mut t = start_testpmd(&testpmd, &sw, memory, 64, "fe", false);

    let run = run_traffic(&mut t, &sw, 3);
    check_agreement(&run, 64, &sw);

    t.quit().unwrap_or_else(|e| panic!("quit: {e}"));
    assert!(sw.process.is_running(), "{}", sw.report());
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn testpmd_frame_size_sweep_through_vswitch() {
    let Some(testpmd) = require("dpdk-testpmd", "DPDK testpmd, apt-get install dpdk") else {
        return;
    };
    let _heavy = heavy();
    let started = Instant::now();
    let dir = TestDir::new("testpmd-vswitch-sizes").unwrap_or_else(|e| panic!("{e}"));
    let sw = Vswitch::spawn(&dir);
    // One testpmd per size, one after the other on the same switch: each one's `--txpkts`
    // sizes the frames that circulate, and frames of the previous size never mix in.
    for len in [64u32, 1518, 9000] {
        let mut t = start_testpmd(
            &testpmd,
            &sw,
            memory_for(256),
            len,
            &format!("fe{len}"),
            false,
        );
        let run = run_traffic(&mut t, &sw, 1);
        check_agreement(&run, u64::from(len), &sw);
        t.quit().unwrap_or_else(|e| panic!("quit: {e}"));
        eprintln!("{len} bytes: ok after {:?}", started.elapsed());
    }
}

#[test]
fn testpmd_packed_rings_through_vswitch_both_directions() {
    let Some(testpmd) = require("dpdk-testpmd", "DPDK testpmd, apt-get install dpdk") else {
        return;
    };
    let _heavy = heavy();
    let started = Instant::now();
    let dir = TestDir::new("testpmd-vswitch-packed").unwrap_or_else(|e| panic!("{e}"));
    let sw = Vswitch::spawn(&dir);
    // 64-byte frames, then 9000-byte ones: chains on the switch's receive side, mergeable
    // buffers on its transmit side, on packed rings.
    for len in [64u32, 9000] {
        let mut t = start_testpmd(
            &testpmd,
            &sw,
            memory_for(256),
            len,
            &format!("pk{len}"),
            true,
        );
        let layouts = sw.ring_layouts();
        assert!(
            layouts.len() >= 4 && layouts.iter().all(|(_, _, r)| r == "packed"),
            "show: {layouts:?}\n{}",
            sw.report()
        );
        let run = run_traffic(&mut t, &sw, 2);
        check_agreement(&run, u64::from(len), &sw);
        t.quit().unwrap_or_else(|e| panic!("quit: {e}"));
        eprintln!("packed, {len} bytes: ok after {:?}", started.elapsed());
    }
    assert!(sw.process.is_running(), "{}", sw.report());
}

//! The inter-VM fast path end to end: a vswitch with the hooks, fast-path guests (`fp-pktgen`,
//! `fp-sink`, `fp-rogue`) on two of its ports, channels granted, traffic checked byte for byte,
//! hostile peers survived, channels revoked when a guest goes away.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::peers::workspace_bin;
use nfv_tests::qemu::{wait_for_sockets, Process, TestDir};
use nfv_tests::serial;

const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:02";

struct Switch {
    dir: TestDir,
    proc: Process,
    ctl: PathBuf,
    hooks: PathBuf,
    sock: [PathBuf; 2],
}

/// The manifest approving the trampolines of our fast-path binaries.
fn manifest(dir: &TestDir) -> PathBuf {
    let mut text = String::from("# trampolines of this build's fast-path binaries\n");
    for b in ["fp-pktgen", "fp-sink", "fp-rogue", "fp-l2fwd"] {
        let out = Command::new(workspace_bin(b))
            .arg("--print-trampoline")
            .output()
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        assert!(out.status.success(), "{b} --print-trampoline failed");
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let p = dir.join("manifest");
    std::fs::write(&p, text).expect("write manifest");
    p
}

fn start_switch(test: &str) -> Switch {
    let dir = TestDir::new(test).expect("test dir");
    let m = manifest(&dir);
    let (ctl, hooks) = (dir.join("ctl"), dir.join("hooks"));
    let sock = [dir.join("a.sock"), dir.join("b.sock")];
    let mut cmd = Command::new(workspace_bin("vswitch"));
    cmd.arg("--vhost-server")
        .arg(format!("a={}", sock[0].display()))
        .arg("--vhost-server")
        .arg(format!("b={}", sock[1].display()))
        .args(["--port-fastpath", "a", "--port-fastpath", "b"])
        .arg("--hooks")
        .arg(&hooks)
        .arg("--fastpath-manifest")
        .arg(&m)
        .arg("--ctl")
        .arg(&ctl)
        .args(["--pmd-cores", "1", "--pmd-sleep-max", "1000"]);
    let proc = Process::spawn("vswitch", &mut cmd, &dir.join("vswitch.log"))
        .expect("start vswitch")
        .with_graceful_stop("TERM", Duration::from_secs(5));
    wait_for_sockets(
        &[&sock[0], &sock[1], &hooks, &ctl],
        Duration::from_secs(10),
        &proc,
    )
    .expect("switch sockets");
    Switch {
        dir,
        proc,
        ctl,
        hooks,
        sock,
    }
}

impl Switch {
    fn guest(&self, bin: &str, port: usize, mac: &str, args: &[&str], log: &str) -> Process {
        let mut cmd = Command::new(workspace_bin(bin));
        cmd.arg("--socket")
            .arg(&self.sock[port])
            .args(["--port", ["a", "b"][port], "--mac", mac])
            .arg("--hooks")
            .arg(&self.hooks)
            .args(args);
        Process::spawn(bin, &mut cmd, &self.dir.join(log)).expect("start guest")
    }

    /// Waits until the switch's hooks have registered the fast-path guest on `port` ("a" or
    /// "b"): a guest that asks for a channel to a peer not yet registered is refused and sends
    /// through the switch instead.
    fn wait_registered(&self, port: &str) {
        let needle = format!("fast path: port {port} registered");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.proc.log().contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "port {port} never registered with the hooks\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn channels(&self) -> serde_json::Value {
        let out = Command::new(workspace_bin("vswitchctl"))
            .arg("--ctl")
            .arg(&self.ctl)
            .args(["channels", "--json"])
            .output()
            .expect("vswitchctl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The most device errors the first channel reported, read every 200 ms while `p` runs
    /// (at most `within`): the channel's counters go with it when it closes.
    fn channel_device_errors_while(&self, p: &Process, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let mut errors = 0;
        while Instant::now() < deadline && p.is_running() {
            if let Some(c) = self.channels()["channels"]
                .as_array()
                .and_then(|c| c.first().cloned())
            {
                errors = errors.max(c["device_errors"].as_u64().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        errors
    }

    fn report(&self) -> String {
        format!(
            "--- vswitch log ---\n{}\n--- channels ---\n{}",
            self.proc.log_tail(40),
            self.channels()
        )
    }
}

/// The JSON summary a fast-path binary prints last.
fn summary(p: &Process, timeout: Duration) -> serde_json::Value {
    let st = p.wait_exit(timeout);
    let log = p.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{} printed no summary (exit {st:?}):\n{}",
                p.name(),
                p.log_tail(30)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", p.name()))
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no number `{k}` in {v}"))
}

fn integrity(path: &str) {
    let _guard = serial::heavy();
    let sw = start_switch(&format!("fastpath-{path}"));
    let count = 10_000_000u64.to_string();
    let sink = sw.guest(
        "fp-sink",
        1,
        MAC_B,
        &["--count", &count, "--idle", "10", "--duration", "240"],
        "sink.log",
    );
    sw.wait_registered("b");
    let gen = sw.guest(
        "fp-pktgen",
        0,
        MAC_A,
        &[
            "--dst", MAC_B, "--path", path, "--count", &count, "--size", "mixed", "--burst", "64",
        ],
        "pktgen.log",
    );
    let g = summary(&gen, Duration::from_secs(240));
    let s = summary(&sink, Duration::from_secs(60));
    let ch = sw.channels();
    eprintln!("fastpath {path}: pktgen {g}\nsink {s}\nchannels {ch}");
    assert_eq!(n(&g, "sent"), 10_000_000, "{}", sw.report());
    assert_eq!(
        n(&g, "via_channel"),
        10_000_000,
        "every frame took the channel"
    );
    assert_eq!(n(&s, "received"), 10_000_000, "{}", sw.report());
    assert_eq!(n(&s, "lost"), 0);
    assert_eq!(n(&s, "corrupt"), 0);
    assert_eq!(n(&s, "bad_length"), 0);
    assert_eq!(n(&s, "via_channel"), 10_000_000);
}

#[test]
fn copy_mode_ten_million_mixed_frames_intact() {
    integrity("copy");
}

#[test]
fn zero_copy_ten_million_mixed_frames_intact() {
    integrity("zero-copy");
}

#[test]
fn test_stray_wrpkru_refused_a_channel() {
    let _guard = serial::heavy();
    let sw = start_switch("fastpath-wrpkru");
    let sink = sw.guest("fp-sink", 1, MAC_B, &["--duration", "15"], "sink.log");
    sw.wait_registered("b");
    let rogue = sw.guest(
        "fp-rogue",
        0,
        MAC_A,
        &["--peer", MAC_B, "--ask", "copy"],
        "rogue.log",
    );
    let r = summary(&rogue, Duration::from_secs(30));
    drop(sink);
    assert_eq!(
        r["granted"],
        serde_json::Value::Bool(false),
        "{r}\n{}",
        sw.report()
    );
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("WRPKRU"),
        "refused for the stray WRPKRU: {reason}"
    );
    assert!(sw.channels()["channels"]
        .as_array()
        .is_some_and(|c| c.is_empty()));
}

#[test]
fn test_hostile_zero_copy_sender_descriptors() {
    let _guard = serial::heavy();
    let sw = start_switch("fastpath-hostile-zc");
    let sink = sw.guest(
        "fp-sink",
        1,
        MAC_B,
        &["--duration", "8", "--idle", "6"],
        "sink.log",
    );
    sw.wait_registered("b");
    let rogue = sw.guest(
        "fp-rogue",
        0,
        MAC_A,
        &["--peer", MAC_B, "--hostile", "zero-copy", "--duration", "3"],
        "rogue.log",
    );
    let errors = sw.channel_device_errors_while(&rogue, Duration::from_secs(15));
    let r = summary(&rogue, Duration::from_secs(20));
    let s = summary(&sink, Duration::from_secs(20));
    eprintln!("rogue {r}\nsink {s}");
    assert!(
        sink.exit_status().is_some_and(|st| st.code().is_some()),
        "the sink did not crash"
    );
    assert!(
        errors > 0,
        "hostile descriptors were refused and counted\n{}",
        sw.report()
    );
    assert!(
        n(&s, "received") > 0,
        "good frames between the bad ones arrived"
    );
    assert_eq!(n(&s, "corrupt"), 0);
}

#[test]
fn test_hostile_copy_receiver_buffers() {
    let _guard = serial::heavy();
    let sw = start_switch("fastpath-hostile-copy");
    let rogue = sw.guest(
        "fp-rogue",
        1,
        MAC_B,
        &["--peer", MAC_A, "--hostile", "copy", "--duration", "6"],
        "rogue.log",
    );
    // The generator asks for its channel at once: the receiver must be there first.
    sw.wait_registered("b");
    let gen = sw.guest(
        "fp-pktgen",
        0,
        MAC_A,
        &[
            "--dst",
            MAC_B,
            "--path",
            "copy",
            "--duration",
            "3",
            "--rate",
            "200000",
        ],
        "pktgen.log",
    );
    let errors = sw.channel_device_errors_while(&gen, Duration::from_secs(15));
    let g = summary(&gen, Duration::from_secs(60));
    let r = summary(&rogue, Duration::from_secs(20));
    eprintln!("pktgen {g}\nrogue {r}");
    assert!(
        errors > 0,
        "hostile receive buffers were refused and counted\n{}",
        sw.report()
    );
    assert!(n(&g, "via_channel") > 0);
    assert!(
        n(&r, "frames_received") > 0,
        "good buffers among the bad still got frames"
    );
}

#[test]
fn disconnect_revokes_channel_and_traffic_falls_back_to_the_switch() {
    let _guard = serial::heavy();
    let sw = start_switch("fastpath-revoke");
    let sink1 = sw.guest(
        "fp-sink",
        1,
        MAC_B,
        &["--duration", "30", "--idle", "30"],
        "sink1.log",
    );
    sw.wait_registered("b");
    let gen = sw.guest(
        "fp-pktgen",
        0,
        MAC_A,
        &[
            "--dst",
            MAC_B,
            "--path",
            "copy",
            "--duration",
            "8",
            "--rate",
            "100000",
        ],
        "pktgen.log",
    );
    // Wait for the channel, then take the receiver away mid-traffic.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sw.channels()["channels"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "no channel opened\n{}",
            sw.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    sink1.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.channels()["channels"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "channel not revoked\n{}",
            sw.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A receiver without the fast path on the same port now gets the traffic through the switch.
    let mut cmd = Command::new(workspace_bin("fp-sink"));
    cmd.arg("--socket").arg(&sw.sock[1]).args([
        "--port",
        "b",
        "--mac",
        MAC_B,
        "--duration",
        "4",
        "--idle",
        "3",
    ]);
    let sink2 = Process::spawn("fp-sink", &mut cmd, &sw.dir.join("sink2.log")).expect("sink2");
    let s2 = summary(&sink2, Duration::from_secs(30));
    let g = summary(&gen, Duration::from_secs(30));
    eprintln!("pktgen {g}\nsink2 {s2}");
    assert!(
        n(&g, "channels_revoked") >= 1,
        "the sender was told to stop using the channel"
    );
    assert!(
        n(&g, "via_switch") > 0,
        "the sender fell back to the switch path"
    );
    assert!(
        n(&s2, "via_switch") > 0 && n(&s2, "received") > 0,
        "{}",
        sw.report()
    );
    assert_eq!(n(&s2, "corrupt"), 0);
}

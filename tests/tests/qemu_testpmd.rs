//! Self-test of the QEMU harness against a backend known to work: DPDK `dpdk-testpmd` with two
//! `net_vhost` ports in io forwarding (port 0 <-> port 1), and two TCG guests, one per port.
//! When these pass, a failure of the same scenario through our switch (`qemu_vswitch.rs`) is the
//! switch's.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::guest_image::GuestImage;
use nfv_tests::qemu::{
    self, two_vm_ping, wait_for_sockets, GuestParams, Process, TestDir, TwoVmPing, Vm, VmConfig,
};
use nfv_tests::{peers, serial};

/// dpdk-testpmd serving two vhost-user sockets, main lcore 0 and its one forwarding lcore on
/// core 1 (the QEMUs run on core 0).
struct Testpmd {
    process: Process,
    prefix: String,
}

impl Testpmd {
    fn spawn(dir: &TestDir, sock1: &Path, sock2: &Path) -> Result<Testpmd, String> {
        // Unique per run, so a leftover of a crashed run never collides with this one.
        let prefix = format!("nfvt-{}", dir_name(dir));
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args([
            "-l",
            "0,1",
            "--main-lcore",
            "0",
            "--no-pci",
            "--no-huge",
            "-m",
            "256",
        ])
        .args(["--file-prefix", &prefix])
        .arg("--vdev")
        .arg(format!("net_vhost0,iface={},queues=1", sock1.display()))
        .arg("--vdev")
        .arg(format!("net_vhost1,iface={},queues=1", sock2.display()))
        .arg("--")
        // Without -i testpmd forwards until a signal; with stdin at EOF and no stats period it
        // would exit at once ("Press enter to exit").
        .args(["--nb-cores=1", "--forward-mode=io", "--stats-period", "5"])
        .arg("--total-num-mbufs=16384");
        let process = Process::spawn("dpdk-testpmd", &mut cmd, &dir.join("testpmd.log"))?
            // SIGINT: testpmd prints its forward statistics and releases its runtime files.
            .with_graceful_stop("INT", Duration::from_secs(5));
        Ok(Testpmd { process, prefix })
    }

    /// Stops testpmd (so it prints its statistics) and returns the tail of its log.
    fn stop_and_report(&self) -> String {
        self.process.stop("INT", Duration::from_secs(5));
        format!(
            "--- testpmd log {} (last 60 lines) ---\n{}",
            self.process.log_path().display(),
            self.process.log_tail(60)
        )
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.process.stop("INT", Duration::from_secs(5));
        // DPDK's runtime directory for this prefix (root: /var/run/dpdk).
        let _ = std::fs::remove_dir_all(PathBuf::from("/var/run/dpdk").join(&self.prefix));
    }
}

/// The test dir's own name (`<test>-<pid>-<n>-<us>`), unique to this run.
fn dir_name(dir: &TestDir) -> String {
    dir.path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Everything a testpmd + QEMU test needs, or `None` after a loud skip (a failure under CI).
fn prerequisites() -> Option<GuestImage> {
    peers::require("dpdk-testpmd", "DPDK, Debian package dpdk")?;
    qemu::require_qemu()
}

fn sent_recv(line: &str) -> (u32, u32) {
    let field = |key: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    (field("sent="), field("recv="))
}

fn two_vms_through_testpmd(test: &str, jumbo: bool, peer_delay: Duration) {
    let _heavy = serial::heavy();
    let Some(image) = prerequisites() else {
        return;
    };
    let started = Instant::now();
    let dir = TestDir::new(test).unwrap_or_else(|e| panic!("{e}"));
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let backend = Testpmd::spawn(&dir, &s1, &s2).unwrap_or_else(|e| panic!("{e}"));
    wait_for_sockets(&[&s1, &s2], Duration::from_secs(30), &backend.process)
        .unwrap_or_else(|e| panic!("{e}"));

    let opts = TwoVmPing {
        jumbo,
        peer_delay,
        ..TwoVmPing::default()
    };
    let outcome = match two_vm_ping(&image, dir.path(), &s1, &s2, &opts, Some(&backend.process)) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{e}{}", backend.stop_and_report()),
    };
    let (sent, recv) = sent_recv(&outcome.ping);
    assert_eq!((sent, recv), (opts.count, opts.count), "{}", outcome.ping);
    if !peer_delay.is_zero() {
        // VM1 was up seconds before VM2: its first pings went unanswered and it kept trying.
        let line = outcome.peer_up.as_deref().unwrap_or_default();
        let tries: u32 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("tries="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(tries > 1, "VM1 should have waited for VM2: {line:?}");
    }
    if jumbo {
        let line = outcome.jumbo.as_deref().unwrap_or_default();
        let (sent, recv) = sent_recv(line);
        assert!(sent > 0 && sent == recv, "{line}");
    }
    eprintln!(
        "{test}: {} {} {} | VM1 {} | VM2 {} | VM1 done after {:.1} s, test {:.1} s",
        outcome.peer_up.as_deref().unwrap_or(""),
        outcome.ping,
        outcome.jumbo.as_deref().unwrap_or(""),
        outcome.vm1_counters.as_deref().unwrap_or("no counters"),
        outcome.vm2_counters.as_deref().unwrap_or("no counters"),
        outcome.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_vms_ping_through_testpmd() {
    // VM2 starts late: this also checks that the pinger waits for its peer.
    two_vms_through_testpmd("testpmd-ping", false, Duration::from_secs(5));
}

#[test]
fn two_vms_jumbo_ping_through_testpmd() {
    two_vms_through_testpmd("testpmd-jumbo", true, Duration::ZERO);
}

/// The harness's error path: QEMU cannot reach its backend, exits, and `wait_for` says so with
/// QEMU's own message instead of waiting out the timeout.
#[test]
fn vm_without_backend_fails_fast_with_qemu_log() {
    let _heavy = serial::heavy();
    let Some(image) = qemu::require_qemu() else {
        return;
    };
    let dir = TestDir::new("qemu-no-backend").unwrap_or_else(|e| panic!("{e}"));
    let cfg = VmConfig::new("lonely", dir.join("nobody.sock"), "52:54:00:00:00:09")
        .guest(&GuestParams::respond("10.0.0.9/24"));
    let vm = Vm::spawn(&image, dir.path(), cfg).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let err = vm
        .wait_for("NFV: READY", Duration::from_secs(60))
        .expect_err("a VM without a vhost-user backend must not boot its NIC");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("QEMU exited"), "{err}");
    assert!(
        err.contains("nobody.sock"),
        "QEMU's own error missing: {err}"
    );
}

/// The pingloop guest mode and QEMU's `reconnect=` option, as the switch's reconnect tests will
/// use them: replies flow, stop when the backend goes away, and flow again once a new backend
/// listens on the same sockets, with both guests still running.
#[test]
fn pingloop_survives_backend_restart() {
    let _heavy = serial::heavy();
    let Some(image) = prerequisites() else {
        return;
    };
    let dir = TestDir::new("testpmd-restart").unwrap_or_else(|e| panic!("{e}"));
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let backend = Testpmd::spawn(&dir, &s1, &s2).unwrap_or_else(|e| panic!("{e}"));
    wait_for_sockets(&[&s1, &s2], Duration::from_secs(30), &backend.process)
        .unwrap_or_else(|e| panic!("{e}"));
    let vm2 = Vm::spawn(
        &image,
        dir.path(),
        VmConfig::new("vm2", &s2, "52:54:00:00:00:02")
            .guest(&GuestParams::respond("10.0.0.2/24"))
            .reconnect(1)
            .pin(0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let vm1 = Vm::spawn(
        &image,
        dir.path(),
        VmConfig::new("vm1", &s1, "52:54:00:00:00:01")
            .guest(&GuestParams::pingloop("10.0.0.1/24", "10.0.0.2"))
            .reconnect(1)
            .pin(0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fail = |e: String, backend: &Testpmd| -> ! {
        panic!("{e}{}{}", vm2.failure_report(), backend.stop_and_report())
    };

    let first = vm1
        .wait_for("NFV: REPLY", Duration::from_secs(60))
        .unwrap_or_else(|e| fail(e, &backend));
    let mark = vm1.console_len();
    vm1.wait_for_after(mark, "NFV: REPLY", Duration::from_secs(5))
        .unwrap_or_else(|e| fail(e, &backend));
    eprintln!("first reply: {first}");

    // Backend gone: the pinger must notice.
    backend.stop_and_report();
    let down = Instant::now();
    let mark = vm1.console_len();
    vm1.wait_for_after(mark, "NFV: TIMEOUT", Duration::from_secs(10))
        .unwrap_or_else(|e| fail(e, &backend));
    drop(backend);

    // A new backend on the same sockets: QEMU reconnects, replies resume.
    let backend = Testpmd::spawn(&dir, &s1, &s2).unwrap_or_else(|e| panic!("{e}"));
    wait_for_sockets(&[&s1, &s2], Duration::from_secs(30), &backend.process)
        .unwrap_or_else(|e| panic!("{e}"));
    let mark = vm1.console_len();
    let back = vm1
        .wait_for_after(mark, "NFV: REPLY", Duration::from_secs(60))
        .unwrap_or_else(|e| fail(e, &backend));
    eprintln!(
        "replies resumed {:.1} s after the backend stopped: {back}",
        down.elapsed().as_secs_f64()
    );
    assert!(vm1.is_running() && vm2.is_running());
}

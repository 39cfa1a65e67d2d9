//! Two unmodified virtio-net guests (QEMU, TCG) talk through our switch: the scenario of
//! `qemu_testpmd.rs` with `vswitch` in testpmd's place. The switch serves both vhost-user
//! sockets (server mode) and polls on core 1; the QEMUs run on core 0.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::guest_image::GuestImage;
use nfv_tests::qemu::{self, two_vm_ping, wait_for_sockets, Process, TestDir, TwoVmPing};
use nfv_tests::{peers, serial};

/// How long the switch may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `vswitch` with one server-mode vhost-user port per VM.
struct Vswitch {
    process: Process,
    ctl: PathBuf,
    vswitchctl: PathBuf,
}

impl Vswitch {
    fn spawn(dir: &TestDir, sock1: &Path, sock2: &Path) -> Result<Vswitch, String> {
        let binary = peers::workspace_bin("vswitch");
        let vswitchctl = peers::workspace_bin("vswitchctl");
        let ctl = dir.join("ctl.sock");
        let mut cmd = Command::new(&binary);
        cmd.arg("--vhost-server")
            .arg(format!("vm1={}", sock1.display()))
            .arg("--vhost-server")
            .arg(format!("vm2={}", sock2.display()))
            .arg("--ctl")
            .arg(&ctl)
            .args(["--pmd-cores", "1"])
            .env("RUST_BACKTRACE", "1");
        let process = Process::spawn("vswitch", &mut cmd, &dir.join("vswitch.log"))?
            .with_graceful_stop("TERM", STOP_GRACE);
        Ok(Vswitch {
            process,
            ctl,
            vswitchctl,
        })
    }

    /// `vswitchctl --ctl CTL stats`, bounded in time (a wedged switch must not hang the test).
    fn stats(&self) -> String {
        let out = Command::new("timeout")
            .arg("5")
            .arg(&self.vswitchctl)
            .arg("--ctl")
            .arg(&self.ctl)
            .arg("stats")
            .output();
        match out {
            Ok(out) => format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                if out.status.success() {
                    String::new()
                } else {
                    format!("(vswitchctl {})", out.status)
                }
            ),
            Err(e) => format!("cannot run {}: {e}", self.vswitchctl.display()),
        }
    }

    /// Counters and log, for a failure message.
    fn report(&self) -> String {
        let stats = if self.process.is_running() {
            self.stats()
        } else {
            format!("(vswitch exited: {:?})", self.process.exit_status())
        };
        format!(
            "--- vswitchctl stats ---\n{stats}\n--- vswitch log {} (last 60 lines) ---\n{}\n",
            self.process.log_path().display(),
            self.process.log_tail(60)
        )
    }
}

fn two_vms_through_vswitch(test: &str, jumbo: bool) {
    two_vms_through_vswitch_with(test, jumbo, [false, false]);
}

/// [`two_vms_through_vswitch`] with packed virtqueues for VM1 and/or VM2; the switch must report
/// each port's ring layout as the guest negotiated it.
fn two_vms_through_vswitch_with(test: &str, jumbo: bool, packed: [bool; 2]) {
    let _heavy = serial::heavy();
    let Some(image): Option<GuestImage> = qemu::require_qemu() else {
        return;
    };
    let started = Instant::now();
    let dir = TestDir::new(test).unwrap_or_else(|e| panic!("{e}"));
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let switch = Vswitch::spawn(&dir, &s1, &s2).unwrap_or_else(|e| panic!("{e}"));
    wait_for_sockets(&[&s1, &s2], Duration::from_secs(20), &switch.process)
        .unwrap_or_else(|e| panic!("{e}"));

    let opts = TwoVmPing {
        jumbo,
        packed,
        ..TwoVmPing::default()
    };
    let outcome = match two_vm_ping(&image, dir.path(), &s1, &s2, &opts, Some(&switch.process)) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{e}{}", switch.report()),
    };
    let stats = switch.stats();
    // The VMs are gone by now (and `show` with them): the switch's log says which layout each
    // queue ran with, two queues per VM.
    let log = std::fs::read_to_string(switch.process.log_path()).unwrap_or_default();
    for (want, n) in [
        ("packed", packed.iter().filter(|p| **p).count()),
        ("split", packed.iter().filter(|p| !**p).count()),
    ] {
        let ran = log.matches(&format!("running: {want} ring")).count();
        assert!(
            (n == 0) == (ran == 0) && ran >= 2 * n,
            "{want} rings: {ran} queues started for {n} VMs\n{}",
            switch.report()
        );
    }
    eprintln!(
        "{test}: {} {} | VM1 {} | VM2 {} | VM1 done after {:.1} s\n--- vswitchctl stats ---\n{stats}",
        outcome.ping,
        outcome.jumbo.as_deref().unwrap_or(""),
        outcome.vm1_counters.as_deref().unwrap_or("no counters"),
        outcome.vm2_counters.as_deref().unwrap_or("no counters"),
        outcome.elapsed.as_secs_f64(),
    );

    // The VMs are gone (two_vm_ping dropped them): the switch must shut down on SIGTERM.
    switch
        .process
        .signal("TERM")
        .unwrap_or_else(|e| panic!("{e}{}", switch.report()));
    let status = switch.process.wait_exit(STOP_GRACE).unwrap_or_else(|| {
        panic!(
            "vswitch still running {STOP_GRACE:?} after SIGTERM\n{}",
            switch.report()
        )
    });
    eprintln!(
        "{test}: vswitch exited ({status}) after SIGTERM; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_vms_ping_through_vswitch() {
    two_vms_through_vswitch("vswitch-ping", false);
}

#[test]
fn two_vms_jumbo_ping_through_vswitch() {
    two_vms_through_vswitch("vswitch-jumbo", true);
}

#[test]
fn two_packed_vms_ping_through_vswitch() {
    two_vms_through_vswitch_with("vswitch-packed-ping", false, [true, true]);
}

#[test]
fn two_packed_vms_jumbo_ping_through_vswitch() {
    two_vms_through_vswitch_with("vswitch-packed-jumbo", true, [true, true]);
}

#[test]
fn split_vm_and_packed_vm_ping_through_vswitch() {
    two_vms_through_vswitch_with("vswitch-split-packed", false, [false, true]);
}

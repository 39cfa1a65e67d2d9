//! Live migration of an unmodified virtio-net guest (QEMU, TCG) between two ports of our
//! switch while another guest pings it: VM A (responding on 10.0.0.2) runs on port `vma`, a
//! second QEMU waits with `-incoming` on port `vma-dst`, VM B (port `vmb`) pings A in a loop;
//! A's QEMU is told `migrate tcp:127.0.0.1:PORT`. The switch logs its writes into A's memory
//! while the migration runs (the source QEMU sends SET_LOG_BASE, LOG_ALL and VRING_F_LOG), the
//! destination QEMU's announcement arrives as SEND_RARP (`guest_announce=off`, so QEMU, not
//! the guest, announces), the FDB moves A's MAC to `vma-dst`, and B's pings resume.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::qemu::{self, wait_for_sockets, GuestParams, Process, TestDir, Vm, VmConfig};
use nfv_tests::{peers, serial};

const MAC_A: &str = "52:54:00:00:00:02";
const MAC_B: &str = "52:54:00:00:00:01";
/// Replies B must see before the migration, and after it.
const STEADY_REPLIES: usize = 3;
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Vswitch {
    process: Process,
    ctl: PathBuf,
}

impl Vswitch {
    fn spawn(dir: &TestDir, ports: &[(&str, &Path)]) -> Result<Vswitch, String> {
        let ctl = dir.join("ctl.sock");
        let mut cmd = Command::new(peers::workspace_bin("vswitch"));
        for (name, sock) in ports {
            cmd.arg("--vhost-server")
                .arg(format!("{name}={}", sock.display()));
        }
        cmd.arg("--ctl")
            .arg(&ctl)
            .args(["--pmd-cores", "1"])
            .env("RUST_LOG", "info,vhost_user::backend=debug")
            .env("RUST_BACKTRACE", "1");
        let process = Process::spawn("vswitch", &mut cmd, &dir.join("vswitch.log"))?
            .with_graceful_stop("TERM", STOP_GRACE);
        Ok(Vswitch { process, ctl })
    }

    /// `vswitchctl --json REQUEST`, parsed.
    fn ctl_json(&self, request: &str) -> Result<serde_json::Value, String> {
        let out = Command::new("timeout")
            .arg("5")
            .arg(peers::workspace_bin("vswitchctl"))
            .arg("--ctl")
            .arg(&self.ctl)
            .arg("--json")
            .arg(request)
            .output()
            .map_err(|e| format!("vswitchctl: {e}"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "vswitchctl {request}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The name of the port the FDB has `mac` on.
    fn fdb_port_of(&self, mac: &str) -> Option<String> {
        let f = self.ctl_json("fdb").ok()?;
        let e = f["entries"]
            .as_array()?
            .iter()
            .find(|e| e["mac"].as_str() == Some(mac))?;
        let id = e["port"].as_u64()?;
        f["port_names"][id.to_string()]
            .as_str()
            .map(str::to_owned)
            .or(Some(id.to_string()))
    }

    fn port(&self, name: &str) -> Option<serde_json::Value> {
        let s = self.ctl_json("show").ok()?;
        s["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .cloned()
    }

    fn report(&self) -> String {
        format!(
            "--- vswitch log {} (last 80 lines) ---\n{}\n",
            self.process.log_path().display(),
            self.process.log_tail(80)
        )
    }
}

/// Sequence numbers of B's `NFV: REPLY seq=N` lines after console offset `from`.
fn replies(vm: &Vm, from: usize) -> Vec<u64> {
    let bytes = std::fs::read(vm.console_path()).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default())
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("NFV: REPLY seq=")? + "NFV: REPLY seq=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

fn wait_replies(vm: &Vm, from: usize, n: usize, timeout: Duration) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = replies(vm, from);
        if r.len() >= n {
            return Ok(r);
        }
        if Instant::now() > deadline || !vm.is_running() {
            return Err(format!(
                "{} of {n} replies within {timeout:?}\n{}",
                r.len(),
                vm.failure_report()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// QEMU's human monitor over a unix socket.
struct Monitor {
    sock: UnixStream,
}

impl Monitor {
    fn connect(path: &Path, timeout: Duration) -> Result<Monitor, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(sock) => {
                    sock.set_read_timeout(Some(Duration::from_millis(300)))
                        .map_err(|e| e.to_string())?;
                    let mut m = Monitor { sock };
                    m.drain();
                    return Ok(m);
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("monitor {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn drain(&mut self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.sock
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("monitor: {cmd}: {e}"))?;
        Ok(self.drain())
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

#[test]
fn migrate_guest_between_ports_while_pinged() {
    let _heavy = serial::heavy();
    let Some(image) = qemu::require_qemu() else {
        return;
    };
    let started = Instant::now();
    let dir = TestDir::new("vswitch-migrate").unwrap_or_else(|e| panic!("{e}"));
    let (sa, sb, sd) = (
        dir.join("vma.sock"),
        dir.join("vmb.sock"),
        dir.join("vmd.sock"),
    );
    let sw = Vswitch::spawn(&dir, &[("vma", &sa), ("vmb", &sb), ("vma-dst", &sd)])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_sockets(&[&sa, &sb, &sd], Duration::from_secs(20), &sw.process)
        .unwrap_or_else(|e| panic!("{e}"));
    let mon = dir.join("vma-monitor.sock");
    let port = free_tcp_port();
    let announce_by_qemu = ["-global", "virtio-net-pci.guest_announce=off"];
    let a_cfg = |name: &str, sock: &Path| {
        VmConfig::new(name, sock, MAC_A)
            .guest(&GuestParams::respond("10.0.0.2/24"))
            .qemu_args(&announce_by_qemu)
            .pin(0)
    };
    let vma = Vm::spawn(
        &image,
        dir.path(),
        a_cfg("vma", &sa).qemu_args(&[
            "-chardev",
            &format!("socket,id=mon0,path={},server=on,wait=off", mon.display()),
            "-mon",
            "chardev=mon0,mode=readline",
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let vmb = Vm::spawn(
        &image,
        dir.path(),
        VmConfig::new("vmb", &sb, MAC_B)
            .guest(&GuestParams::pingloop("10.0.0.1/24", "10.0.0.2"))
            .pin(0),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fail = |what: String| -> ! {
        panic!(
            "{what}\n{}{}{}",
            vma.failure_report(),
            vmb.failure_report(),
            sw.report()
        )
    };
    let before = wait_replies(&vmb, 0, STEADY_REPLIES, Duration::from_secs(180))
        .unwrap_or_else(|e| fail(format!("B never got replies from A: {e}")));
    assert_eq!(sw.fdb_port_of(MAC_A).as_deref(), Some("vma"));
    eprintln!(
        "pings flowing {:.1} s after the start (seq {:?})",
        started.elapsed().as_secs_f64(),
        before
    );

    // The destination: the same VM, waiting for the migration stream, on the other port.
    let vmd = Vm::spawn(
        &image,
        dir.path(),
        a_cfg("vma-dst", &sd).qemu_args(&["-incoming", &format!("tcp:127.0.0.1:{port}")]),
    )
    .unwrap_or_else(|e| fail(e));
    std::thread::sleep(Duration::from_secs(2));
    let mut m = Monitor::connect(&mon, Duration::from_secs(10)).unwrap_or_else(|e| fail(e));
    let mark = vmb.console_len();
    let migrate_started = Instant::now();
    m.command(&format!("migrate -d tcp:127.0.0.1:{port}"))
        .unwrap_or_else(|e| fail(e));
    let mut logging_seen = false;
    let status = loop {
        let info = m.command("info migrate").unwrap_or_else(|e| fail(e));
        if !logging_seen {
            logging_seen = sw.port("vma").is_some_and(|p| {
                p["queues"]
                    .as_array()
                    .is_some_and(|q| q.iter().any(|q| q["logging"] == true))
            });
        }
        if info.contains("Migration status: completed") {
            break "completed";
        }
        if info.contains("Migration status: failed") || info.contains("cancelled") {
            fail(format!("migration failed:\n{info}"));
        }
        if migrate_started.elapsed() > Duration::from_secs(300) {
            fail(format!("migration not done in 300 s:\n{info}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = migrate_started.elapsed();
    // The source is paused now: replies from here on come from A on the destination.
    let done_mark = vmb.console_len();
    let last_before = replies(&vmb, 0).last().copied();
    let after = wait_replies(&vmb, done_mark, STEADY_REPLIES, Duration::from_secs(60))
        .unwrap_or_else(|e| fail(format!("pings did not resume after the migration: {e}")));
    let during = replies(&vmb, mark).len() - replies(&vmb, done_mark).len();
    let log = sw.process.log();
    assert!(
        log.contains("dirty logging on"),
        "the source never turned logging on\n{}",
        sw.report()
    );
    assert!(
        log.contains("dirty log mapped"),
        "no SET_LOG_BASE\n{}",
        sw.report()
    );
    let moved = sw.fdb_port_of(MAC_A);
    let dst = sw.port("vma-dst").unwrap_or_default();
    let announcements = dst["announcements"].as_u64().unwrap_or(0);
    eprintln!(
        "migration {status} in {:.1} s ({during} replies during it); logging seen in show: \
         {logging_seen}; last reply before completion seq {last_before:?}, replies after: \
         {after:?}; FDB: A on {moved:?}; announcements from vma-dst: {announcements}; test \
         took {:.1} s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(moved.as_deref(), Some("vma-dst"), "{}", sw.report());
    assert!(
        last_before.is_none_or(|l| after[0] > l),
        "ping's sequence went back: {last_before:?} then {after:?}"
    );
    assert!(
        announcements >= 1,
        "no SEND_RARP reached the switch\n{}",
        sw.report()
    );
    assert!(vmd.is_running(), "{}", vmd.failure_report());
    drop((vmd, vma, vmb));
    let _ = sw.process.signal("TERM");
    let _ = sw.process.wait_exit(STOP_GRACE);
}

//! Live migration of an unmodified virtio-net guest (QEMU, TCG) between two ports of our
//! switch while another guest pings it: VM A (responding on 10.0.0.2) runs on port `vma`, a
//! second QEMU waits with `-incoming` on port `vma-dst`, VM B (port `vmb`) pings A in a loop;
//! A's QEMU is told `migrate tcp:127.0.0.1:PORT`. The switch logs its writes into A's memory
//! while the migration runs (the source QEMU sends SET_LOG_BASE, LOG_ALL and VRING_F_LOG), the
//! destination QEMU's announcement arrives as SEND_RARP (`guest_announce=off`, so QEMU, not
//! the guest, announces), the FDB moves A's MAC to `vma-dst`, and B's pings resume. A second
//! test migrates A while a source on port `src` streams checked echo requests to it
//! ([`nfv_tests::echo_stream`]).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::echo_stream::{ranges, EchoStream, Log, StreamConfig};
use nfv_tests::guest_image::GuestImage;
use nfv_tests::qemu::{self, wait_for_sockets, GuestParams, Process, TestDir, Vm, VmConfig};
use nfv_tests::{peers, serial};

const MAC_A: &str = "52:54:00:00:00:02";
const MAC_B: &str = "52:54:00:00:00:01";
/// Replies B must see before the migration, and after it.
const STEADY_REPLIES: usize = 3;
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The echo stream of the second test: rate (requests per second), sent in bursts, payload
/// bytes, and its fragments: the first carries all but the last 8 bytes of the ICMP message,
/// the second follows `STREAM_HOLD` bursts (40 ms) later. The first fragment's frame (1434
/// bytes) leaves too little room in the guest's 1536-byte buffer for Linux to build the skb
/// around it, so the guest reads it from the buffer without ever writing that page: only the
/// switch's dirty log can say the page changed. About 20 requests wait half-assembled in A at
/// any moment, the moment the source stops included.
const STREAM_RATE: u32 = 500;
const STREAM_BURST: u32 = 10;
const STREAM_PAYLOAD: usize = 1400;
const STREAM_SPLIT: usize = 1400;
const STREAM_HOLD: u32 = 2;
/// `migrate_set_parameter max-bandwidth`: the migration lasts seconds, under traffic.
const MIGRATION_BANDWIDTH: &str = "32M";
/// Requests sent between `migrate` and its completion that must come back answered.
const MIN_ANSWERED_DURING: usize = 300;
/// Every lost request was sent within this span (the switchover: the source's stop, the
/// destination's start, its announcement) ...
const LOSS_WINDOW: Duration = Duration::from_secs(2);
/// ... and no later than this after `info migrate` said completed.
const RESUME_WITHIN: Duration = Duration::from_secs(3);

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

/// The same VM A (answering pings on 10.0.0.2, with QEMU announcing it after a migration) on
/// another port.
fn vm_a(name: &str, sock: &Path) -> VmConfig {
    VmConfig::new(name, sock, MAC_A)
        .guest(&GuestParams::respond("10.0.0.2/24"))
        .qemu_args(&["-global", "virtio-net-pci.guest_announce=off"])
        .pin(0)
}

/// QEMU arguments for a human monitor on unix socket `path`.
fn monitor_args(path: &Path) -> [String; 4] {
    [
        "-chardev".into(),
        format!("socket,id=mon0,path={},server=on,wait=off", path.display()),
        "-mon".into(),
        "chardev=mon0,mode=readline".into(),
    ]
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

/// Waits until something listens on TCP `port` of this host (the destination QEMU's
/// `-incoming`, opened after its devices are set up): `/proc/net/tcp` has the port in state
/// LISTEN (0A).
fn wait_listening(port: u16, timeout: Duration, vm: &Vm) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let want = format!(":{port:04X} ");
    loop {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening = tcp.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
        });
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline || !vm.is_running() {
            return Err(format!(
                "{} does not listen on TCP port {port} for the migration within {timeout:?}\n{}",
                vm.name(),
                vm.failure_report()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A finished migration: `info migrate` at completion, when it started, how long it took, and
/// whether `show` saw the source port's queues logging meanwhile.
struct Migration {
    info: String,
    started: Instant,
    took: Duration,
    logging_seen: bool,
}

/// A number field of `info migrate`, such as `dirty sync count: 3` or `downtime: 40 ms`.
fn info_field(info: &str, name: &str) -> Option<u64> {
    let l = info.lines().find_map(|l| l.trim().strip_prefix(name))?;
    l.trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Migration {
    fn field(&self, name: &str) -> Option<u64> {
        info_field(&self.info, name)
    }
}

/// Migrates the VM behind monitor `m` to `tcp:127.0.0.1:PORT` and polls `info migrate` until
/// it completed; a failed or cancelled migration, or one not done in 300 s, is an error.
fn migrate(m: &mut Monitor, port: u16, sw: &Vswitch) -> Result<Migration, String> {
    let started = Instant::now();
    m.command(&format!("migrate -d tcp:127.0.0.1:{port}"))?;
    let mut logging_seen = false;
    loop {
        let info = m.command("info migrate")?;
        if !logging_seen {
            logging_seen = sw.port("vma").is_some_and(|p| {
                p["queues"]
                    .as_array()
                    .is_some_and(|q| q.iter().any(|q| q["logging"] == true))
            });
        }
        if info.contains("Migration status: completed") {
            return Ok(Migration {
                info,
                started,
                took: started.elapsed(),
                logging_seen,
            });
        }
        if info.contains("Migration status: failed") || info.contains("cancelled") {
            return Err(format!("migration failed:\n{info}"));
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("migration not done in 300 s:\n{info}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The switch's side of a finished migration of A: the source mapped the log and turned
/// logging on, the destination's SEND_RARP reached the switch, and the FDB has A's MAC on
/// `vma-dst`. Returns a summary for the test's report.
fn switch_followed(sw: &Vswitch) -> Result<String, String> {
    let log = sw.process.log();
    if !log.contains("dirty log mapped") {
        return Err(format!("no SET_LOG_BASE\n{}", sw.report()));
    }
    if !log.contains("dirty logging on") {
        return Err(format!(
            "the source never turned logging on\n{}",
            sw.report()
        ));
    }
    let announcements = sw.port("vma-dst").unwrap_or_default()["announcements"]
        .as_u64()
        .unwrap_or(0);
    if announcements == 0 {
        return Err(format!("no SEND_RARP reached the switch\n{}", sw.report()));
    }
    let moved = sw.fdb_port_of(MAC_A);
    if moved.as_deref() != Some("vma-dst") {
        return Err(format!(
            "the FDB has A's MAC on {moved:?}, not vma-dst\n{}",
            sw.report()
        ));
    }
    Ok(format!(
        "FDB: A on vma-dst; announcements from vma-dst: {announcements}"
    ))
}

/// What both tests start with: the switch with ports `vma`, a peer's port and `vma-dst`, and
/// VM A on `vma` with a monitor; the destination is started later ([`Rig::destination`]).
struct Rig {
    image: GuestImage,
    sw: Vswitch,
    /// The peer's port socket.
    peer_sock: PathBuf,
    dst_sock: PathBuf,
    mon: PathBuf,
    /// The TCP port the destination listens on for the migration.
    port: u16,
    vma: Vm,
    // Last: the logs stay until everything above is stopped.
    dir: TestDir,
}

impl Rig {
    /// `None` when QEMU or the guest image is missing (reported by `require_qemu`).
    fn start(test: &str, peer_port: &str) -> Option<Rig> {
        let image = qemu::require_qemu()?;
        let dir = TestDir::new(test).unwrap_or_else(|e| panic!("{e}"));
        let (sa, sp, sd) = (
            dir.join("vma.sock"),
            dir.join(&format!("{peer_port}.sock")),
            dir.join("vmd.sock"),
        );
        let sw = Vswitch::spawn(&dir, &[("vma", &sa), (peer_port, &sp), ("vma-dst", &sd)])
            .unwrap_or_else(|e| panic!("{e}"));
        wait_for_sockets(&[&sa, &sp, &sd], Duration::from_secs(20), &sw.process)
            .unwrap_or_else(|e| panic!("{e}"));
        let mon = dir.join("vma-monitor.sock");
        let vma = Vm::spawn(
            &image,
            dir.path(),
            vm_a("vma", &sa).qemu_args(&monitor_args(&mon).each_ref().map(String::as_str)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Some(Rig {
            image,
            sw,
            peer_sock: sp,
            dst_sock: sd,
            mon,
            port: free_tcp_port(),
            vma,
            dir,
        })
    }

    /// The destination: the same VM, waiting for the migration stream, on `vma-dst`; once it
    /// listens, A's monitor.
    fn destination(&self) -> Result<(Vm, Monitor), String> {
        let incoming = format!("tcp:127.0.0.1:{}", self.port);
        let vmd = Vm::spawn(
            &self.image,
            self.dir.path(),
            vm_a("vma-dst", &self.dst_sock).qemu_args(&["-incoming", &incoming]),
        )?;
        wait_listening(self.port, Duration::from_secs(60), &vmd)?;
        let m = Monitor::connect(&self.mon, Duration::from_secs(10))?;
        Ok((vmd, m))
    }

    /// Stops QEMUs `vms` (the rig's A last), then the switch, gracefully.
    fn stop(self, vms: Vec<Vm>) {
        drop(vms);
        drop(self.vma);
        let _ = self.sw.process.signal("TERM");
        let _ = self.sw.process.wait_exit(STOP_GRACE);
    }
}

#[test]
fn migrate_guest_between_ports_while_pinged() {
    let _heavy = serial::heavy();
    let started = Instant::now();
    let Some(rig) = Rig::start("vswitch-migrate", "vmb") else {
        return;
    };
    let (sw, vma) = (&rig.sw, &rig.vma);
    let vmb = Vm::spawn(
        &rig.image,
        rig.dir.path(),
        VmConfig::new("vmb", &rig.peer_sock, MAC_B)
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

    let (vmd, mut m) = rig.destination().unwrap_or_else(|e| fail(e));
    let mark = vmb.console_len();
    let mig = migrate(&mut m, rig.port, sw).unwrap_or_else(|e| fail(e));
    // The source is paused now: replies from here on come from A on the destination.
    let done_mark = vmb.console_len();
    let last_before = replies(&vmb, 0).last().copied();
    let after = wait_replies(&vmb, done_mark, STEADY_REPLIES, Duration::from_secs(60))
        .unwrap_or_else(|e| fail(format!("pings did not resume after the migration: {e}")));
    let during = replies(&vmb, mark).len() - replies(&vmb, done_mark).len();
    let moved = switch_followed(sw).unwrap_or_else(|e| fail(e));
    eprintln!(
        "migration completed in {:.1} s ({during} replies during it); logging seen in show: \
         {}; last reply before completion seq {last_before:?}, replies after: {after:?}; \
         {moved}; test took {:.1} s",
        mig.took.as_secs_f64(),
        mig.logging_seen,
        started.elapsed().as_secs_f64()
    );
    assert!(
        last_before.is_none_or(|l| after[0] > l),
        "ping's sequence went back: {last_before:?} then {after:?}"
    );
    assert!(vmd.is_running(), "{}", vmd.failure_report());
    rig.stop(vec![vmd, vmb]);
}

/// Waits until the stream has `n` good replies to requests sent at or after `since`.
fn wait_stream(
    stream: &mut EchoStream,
    since: Instant,
    n: usize,
    timeout: Duration,
    vm: &Vm,
) -> Result<Log, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = stream.snapshot();
        let good = log
            .replies
            .iter()
            .filter(|r| r.fault.is_none())
            .filter(|r| usize::try_from(r.seq).ok().and_then(|s| log.sent.get(s)) >= Some(&since))
            .count();
        if good >= n {
            return Ok(log);
        }
        if let Some(e) = stream.failed() {
            return Err(e);
        }
        if Instant::now() > deadline || !vm.is_running() {
            return Err(format!(
                "{good} of {n} good echo replies within {timeout:?} (peer answered ARP: {}, \
                 {} requests sent, {} replies, {} ARP requests answered, {} other frames)\n{}",
                log.peer_up.is_some(),
                log.sent.len(),
                log.replies.len(),
                log.arp_answered,
                log.ignored,
                vm.failure_report()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A is migrated while a source outside any VM streams echo requests to it, each with a
/// sequence number and a payload derived from it, and checks every reply: no reply corrupted,
/// repeated or out of order, loss only at the switchover, hundreds answered of the requests
/// sent while the migration ran, QEMU's dirty log synced more than once (the migration runs
/// about 3 s, its bandwidth limited to `MIGRATION_BANDWIDTH`). A's
/// kernel copies each request's payload into its reply, and about 20 requests wait in A half
/// reassembled at any moment, so frames the switch wrote just before the switchover are read
/// on the destination.
///
/// Limit, measured: with the switch's marking of receive buffers (and of used entries) turned
/// off, this test still passed on QEMU 7.2 under TCG: the destination held the switch's last
/// writes all the same (with the destination kept paused after loading, `-S`, the last 60
/// buffers written before the source stopped read the same through both QEMUs' monitors, 37 of
/// them with stream bytes), so here QEMU does not depend on our log for those pages, and
/// the unit and switch tests of the log (`dirty_log.rs`, `vswitch/tests/migration.rs`) are what
/// catch a missing mark. Forcing more passes (`downtime-limit 1` until the fourth sync) did not
/// change that, and made the destination guest crash now and then (a NULL dereference in
/// `schedule_idle`, `id 1 is not a head!` on its transmit queue: guest memory QEMU did not
/// carry over), so the migration runs with QEMU's default downtime limit.
#[test]
fn migrate_guest_while_a_checked_echo_stream_runs() {
    let _heavy = serial::heavy();
    let started = Instant::now();
    let Some(rig) = Rig::start("vswitch-migrate-stream", "src") else {
        return;
    };
    let (sw, vma) = (&rig.sw, &rig.vma);
    let fail = |what: String| -> ! { panic!("{what}\n{}{}", vma.failure_report(), sw.report()) };
    let mut stream = EchoStream::start(
        &rig.peer_sock,
        StreamConfig {
            mac: [0x52, 0x54, 0, 0, 0, 0x01],
            ip: [10, 0, 0, 1],
            peer_ip: [10, 0, 0, 2],
            rate: STREAM_RATE,
            burst: STREAM_BURST,
            payload_len: STREAM_PAYLOAD,
            split: Some(STREAM_SPLIT),
            hold: STREAM_HOLD,
        },
    );
    wait_stream(&mut stream, started, 100, Duration::from_secs(180), vma)
        .unwrap_or_else(|e| fail(format!("A never answered the stream: {e}")));
    eprintln!(
        "stream answered {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );

    let (vmd, mut m) = rig.destination().unwrap_or_else(|e| fail(e));
    m.command(&format!(
        "migrate_set_parameter max-bandwidth {MIGRATION_BANDWIDTH}"
    ))
    .unwrap_or_else(|e| fail(e));
    let mig = migrate(&mut m, rig.port, sw).unwrap_or_else(|e| fail(e));
    let done = Instant::now();
    wait_stream(&mut stream, done, 100, Duration::from_secs(60), &vmd)
        .unwrap_or_else(|e| fail(format!("A did not answer after the migration: {e}")));
    let log = stream.finish().unwrap_or_else(|e| fail(e));
    let moved = switch_followed(sw).unwrap_or_else(|e| fail(e));
    let a = log.analyse(mig.started, done, RESUME_WITHIN);
    let syncs = mig.field("dirty sync count");
    let report = format!(
        "migration completed in {:.1} s (downtime {:?} ms, dirty sync count {syncs:?}); stream: \
         {} requests sent, {} answered, {} answered of those sent during the migration; lost: \
         {} over {:?} of send time ({}); {moved}; test took {:.1} s",
        mig.took.as_secs_f64(),
        mig.field("downtime"),
        a.sent,
        a.answered,
        a.answered_inside,
        a.lost.len(),
        a.loss_span,
        ranges(&a.lost),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    let fault = |what: String| -> ! { fail(format!("{what}\n{report}\n{}", mig.info)) };
    if let Some((seq, why)) = a.corrupt.first() {
        fault(format!(
            "{} replies differ from the request sent for their sequence; the first, {seq}: {why}",
            a.corrupt.len()
        ));
    }
    if !a.out_of_order.is_empty() || !a.unknown.is_empty() {
        fault(format!(
            "replies repeated or out of order (previous, this): {:?}; for requests never sent: \
             {:?}",
            &a.out_of_order[..a.out_of_order.len().min(10)],
            &a.unknown[..a.unknown.len().min(10)]
        ));
    }
    if a.lost_before + a.lost_after > 0 || a.loss_span > LOSS_WINDOW {
        fault(format!(
            "requests lost outside the switchover: {} before the migration began, {} more than \
             {RESUME_WITHIN:?} after it completed, lost ones spread over {:?} (at most \
             {LOSS_WINDOW:?})",
            a.lost_before, a.lost_after, a.loss_span
        ));
    }
    if a.answered_inside < MIN_ANSWERED_DURING {
        fault(format!(
            "only {} requests sent during the migration were answered (at least \
             {MIN_ANSWERED_DURING}): the migration was not tested under traffic",
            a.answered_inside
        ));
    }
    if syncs.is_none_or(|n| n < 2) {
        fault("QEMU never synced the dirty log after its first pass".into());
    }
    assert!(
        mig.logging_seen,
        "show never said the source's queues log\n{report}"
    );
    assert!(vmd.is_running(), "{}", vmd.failure_report());
    rig.stop(vec![vmd]);
}

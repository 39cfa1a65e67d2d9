//! Shared helpers of the switch's integration tests: the `vswitch` binary run in a scratch
//! directory with its log captured, queried through its control socket and stopped with SIGTERM
//! (killed on drop); in-process virtio-net guests and the frames they exchange; and the lock that
//! runs one heavy test at a time.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod frr;
pub mod netns;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vhost_user::driver::{DriverMemory, DriverQueue};
use vhost_user::frontend::Frontend;
use vhost_user::guest::{Guest, GuestConfig};
use vhost_user::message::VHOST_USER_F_PROTOCOL_FEATURES;
use vswitch::ctl::{
    CtlClient, FdbReply, PmdStatsReply, PortInfo, PortState, PortStats, ShowReply, StatsReply,
};

/// The switch under test, built by cargo for this test binary.
pub const VSWITCH: &str = env!("CARGO_BIN_EXE_vswitch");
/// Its control client.
pub const VSWITCHCTL: &str = env!("CARGO_BIN_EXE_vswitchctl");
/// How long the switch may take to put its sockets up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the switch may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for frames it expects.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// EtherType of the test frames (IEEE 802 local experimental).
pub const ETHERTYPE_TEST: u16 = 0x88b5;
/// Counter names of `vswitchctl stats`, as vswitch/src/port.rs defines them.
pub const DROP_VLAN_TAGGED: &str = "rx_vlan_tagged_on_access_port";
pub const DROP_TOO_BIG: &str = "rx_frame_too_big";
pub const DROP_NO_BUFFERS: &str = "tx_no_guest_buffers";

// ---------------------------------------------------------------------------------------------
// One heavy test at a time.

/// Exclusive run of a test that starts a switch (a busy-polling thread) or a DPDK peer. The
/// same lock file as `nfv_tests::serial::heavy`, so these tests also exclude the end-to-end
/// tests of `tests/`: this machine has two cores, and two pollers at once starve each other.
pub struct Heavy {
    _file: File,
}

/// Blocks until no other heavy test runs (in any process), then returns the guard. The kernel
/// drops the `flock` when the process dies, so a crashed test never wedges the rest.
pub fn heavy() -> Heavy {
    let path = std::env::temp_dir().join("nfv-dataplane-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Heavy { _file: file }
}

// ---------------------------------------------------------------------------------------------
// Scratch directories.

/// A scratch directory for one test's sockets and logs, under the system temp dir (short:
/// a unix socket path holds at most 107 bytes). Removed on drop unless the test panicked.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(test: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join("vswitch-tests").join(format!(
            "{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Names of the unix sockets in the directory, sorted.
    pub fn sockets(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.path)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_socket()).unwrap_or(false))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// True when `path` exists and is a unix socket.
pub fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with kill(1): the tests have no `unsafe` for
/// kill(2).
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The switch process.

/// `vswitch` command line under construction, in a fresh scratch directory.
pub struct SwitchBuilder {
    dir: TestDir,
    args: Vec<OsString>,
    /// Sockets to wait for before the switch counts as started.
    wait: Vec<PathBuf>,
    ctl: Option<PathBuf>,
    pmd_cores: Option<String>,
}

impl SwitchBuilder {
    /// A switch with a control socket (`ctl.sock`) and one PMD on core 1.
    pub fn new(test: &str) -> SwitchBuilder {
        let dir = TestDir::new(test);
        let ctl = dir.join("ctl.sock");
        SwitchBuilder {
            dir,
            args: Vec::new(),
            wait: vec![ctl.clone()],
            ctl: Some(ctl),
            pmd_cores: Some("1".into()),
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A server-mode port `name` on `<dir>/<name>.sock`.
    pub fn server(mut self, name: &str) -> Self {
        let sock = self.dir.join(&format!("{name}.sock"));
        self.args.push("--vhost-server".into());
        self.args.push(format!("{name}={}", sock.display()).into());
        self.wait.push(sock);
        self
    }

    /// A client-mode port `name` connecting to `path`.
    pub fn client(mut self, name: &str, path: &Path) -> Self {
        self.args.push("--vhost-client".into());
        self.args.push(format!("{name}={}", path.display()).into());
        self
    }

    /// `--port-vlan name=vid`.
    pub fn vlan(mut self, name: &str, vid: u16) -> Self {
        self.args.push("--port-vlan".into());
        self.args.push(format!("{name}={vid}").into());
        self
    }

    /// Any other argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// No `--ctl`.
    pub fn without_ctl(mut self) -> Self {
        if let Some(ctl) = self.ctl.take() {
            self.wait.retain(|p| *p != ctl);
        }
        self
    }

    /// No `--pmd-cores` (the switch's default).
    pub fn default_pmd_cores(mut self) -> Self {
        self.pmd_cores = None;
        self
    }

    /// The full argument list.
    pub fn args(&self) -> Vec<OsString> {
        let mut a = self.args.clone();
        if let Some(ctl) = &self.ctl {
            a.push("--ctl".into());
            a.push(ctl.into());
        }
        if let Some(cores) = &self.pmd_cores {
            a.push("--pmd-cores".into());
            a.push(cores.into());
        }
        a
    }

    /// Runs the switch to completion (for command lines it must refuse), killing it if it is
    /// still running after `timeout`. Returns its output and the directory.
    pub fn run_to_exit(self, timeout: Duration) -> (Finished, TestDir) {
        let args = self.args();
        let finished = run_to_exit(VSWITCH, &args, timeout);
        (finished, self.dir)
    }

    /// Starts the switch and waits until its control socket and server-mode sockets are up.
    pub fn spawn(self) -> Switch {
        let args = self.args();
        let log = self.dir.join("vswitch.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let child = Command::new(VSWITCH)
            .args(&args)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {VSWITCH}: {e}"));
        let pid = child.id();
        let sw = Switch {
            pid,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            watchdog: Mutex::new(spawn_watchdog(pid)),
            ctl: self.ctl.unwrap_or_default(),
            log,
            args,
            dir: self.dir,
        };
        for p in &self.wait {
            let up = wait_for(START_TIMEOUT, || is_socket(p) || !sw.is_running());
            assert!(
                up && sw.is_running(),
                "vswitch did not put up {} within {START_TIMEOUT:?} (exit: {:?})\n{}",
                p.display(),
                sw.exit_status(),
                sw.report()
            );
        }
        sw
    }
}

/// A running `vswitch`; killed (SIGKILL) on drop if still running, its log printed if the test
/// is failing.
pub struct Switch {
    pid: u32,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    /// Kills the switch if the test process dies without dropping this.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    pub ctl: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    // Last: the directory goes only after the process.
    pub dir: TestDir,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `sh` waiting on a pipe whose only writer is this process: when the pipe closes because this
/// process died, it SIGKILLs `pid`. A busy-polling orphan would starve every later test.
fn spawn_watchdog(pid: u32) -> Option<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read -r _ignored; kill -KILL \"$1\" 2>/dev/null")
        .arg("vswitch-test-watchdog")
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

impl Switch {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `<dir>/<name>.sock`, where `SwitchBuilder::server` put port `name`.
    pub fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("{name}.sock"))
    }

    /// The exit status once the switch has exited; never blocks.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            if let Ok(Some(s)) = lock(&self.child).try_wait() {
                *exit = Some(s);
                drop(exit);
                // Reaped: the pid may be reused, the watchdog must never fire now.
                self.stop_watchdog();
                return Some(s);
            }
        }
        *exit
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends `sig` with kill(1); refused once the process is reaped (its pid may be reused).
    pub fn signal(&self, sig: &str) -> bool {
        let exit = lock(&self.exit);
        if exit.is_some() {
            return false;
        }
        // An exited but unreaped child is a zombie: its pid cannot be reused meanwhile.
        signal(self.pid, sig)
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn terminate(&self, timeout: Duration) -> Option<ExitStatus> {
        assert!(
            self.signal("TERM"),
            "cannot signal vswitch {}: {:?}",
            self.pid,
            self.exit_status()
        );
        self.wait_exit(timeout)
    }

    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(timeout, || {
            status = self.exit_status();
            status.is_some()
        });
        status
    }

    fn kill(&self) {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            let mut child = lock(&self.child);
            let _ = child.kill();
            *exit = child.wait().ok();
        }
        drop(exit);
        self.stop_watchdog();
    }

    fn stop_watchdog(&self) {
        if let Some((mut w, stdin)) = lock(&self.watchdog).take() {
            // Kill it before closing its stdin: a closed stdin is its cue to kill.
            let _ = w.kill();
            let _ = w.wait();
            drop(stdin);
        }
    }

    /// The switch's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Command line and log tail, for failure messages.
    pub fn report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- vswitch {:?} (pid {}) log {} (last 40 lines) ---\n{tail}\n---",
            self.args,
            self.pid,
            self.log.display()
        )
    }

    /// A fresh control connection.
    pub fn ctl(&self) -> CtlClient {
        CtlClient::connect(&self.ctl)
            .unwrap_or_else(|e| panic!("control socket: {e}\n{}", self.report()))
    }

    pub fn show(&self) -> ShowReply {
        self.ctl()
            .show()
            .unwrap_or_else(|e| panic!("show: {e}\n{}", self.report()))
    }

    pub fn stats(&self) -> StatsReply {
        self.ctl()
            .stats()
            .unwrap_or_else(|e| panic!("stats: {e}\n{}", self.report()))
    }

    pub fn fdb(&self) -> FdbReply {
        self.ctl()
            .fdb()
            .unwrap_or_else(|e| panic!("fdb: {e}\n{}", self.report()))
    }

    pub fn pmd_stats(&self) -> PmdStatsReply {
        self.ctl()
            .pmd_stats()
            .unwrap_or_else(|e| panic!("pmd-stats: {e}\n{}", self.report()))
    }

    /// The counters of port `name`.
    pub fn port_stats(&self, name: &str) -> PortStats {
        let stats = self.stats();
        stats
            .ports
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port `{name}` in stats: {stats:?}"))
    }

    /// The counters of port `name` once `cond` holds of them, or the last ones read after
    /// [`RECV_TIMEOUT`] (the caller's assertions then say what is wrong). Counters trail the
    /// frames a little: a PMD bumps them after it has published the burst.
    pub fn port_stats_when(&self, name: &str, cond: impl Fn(&PortStats) -> bool) -> PortStats {
        let mut st = self.port_stats(name);
        wait_for(RECV_TIMEOUT, || {
            st = self.port_stats(name);
            cond(&st)
        });
        st
    }

    /// `show` of port `name`, if the switch has it.
    pub fn port_info(&self, name: &str) -> Option<PortInfo> {
        self.show().ports.into_iter().find(|p| p.name == name)
    }

    /// Waits until port `name` has a running queue (a frontend finished its setup).
    pub fn wait_port_state(&self, name: &str, state: PortState) {
        let mut last = None;
        let ok = wait_for(RECV_TIMEOUT, || {
            last = self.port_info(name).map(|p| p.state);
            last == Some(state)
        });
        assert!(
            ok,
            "port {name} is {last:?}, not {state:?}, after {RECV_TIMEOUT:?}\n{}",
            self.report()
        );
    }

    /// Runs `vswitchctl --ctl <ctl> ARGS` and returns its output.
    pub fn vswitchctl(&self, args: &[&str]) -> Output {
        Command::new(VSWITCHCTL)
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .env_remove("VSWITCH_CTL")
            .output()
            .unwrap_or_else(|e| panic!("run {VSWITCHCTL}: {e}"))
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        self.kill();
    }
}

/// What a process that ran to its end left.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it was still running at the deadline and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics (with the output) if the process had to be killed.
    pub fn code(&self) -> i32 {
        match self.status.and_then(|s| s.code()) {
            Some(c) => c,
            None => panic!("the process did not exit by itself: {self:?}"),
        }
    }
}

/// Runs `program ARGS` with output captured; kills it if it runs longer than `timeout`.
pub fn run_to_exit(program: &str, args: &[OsString], timeout: Duration) -> Finished {
    let dir = std::env::temp_dir();
    static N: AtomicU32 = AtomicU32::new(0);
    let stem = format!(
        "vswitch-test-out-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (out_path, err_path) = (
        dir.join(format!("{stem}.out")),
        dir.join(format!("{stem}.err")),
    );
    let out = File::create(&out_path).expect("stdout file");
    let err = File::create(&err_path).expect("stderr file");
    let mut child = Command::new(program)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut status = None;
    wait_for(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |p: &Path| {
        let s = fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let _ = fs::remove_file(p);
        s
    };
    Finished {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

// ---------------------------------------------------------------------------------------------
// Guests and frames.

/// A locally administered unicast MAC, `02:00:00:00:00:nn`.
pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame: `dst`, `src`, the test EtherType, `payload`.
pub fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A payload of `len` bytes that encodes `seq` and depends on it throughout, so a frame
/// delivered with wrong, stale or shifted bytes is told apart from the right one.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.extend_from_slice(&x.to_le_bytes());
    }
    p.truncate(len);
    p
}

/// The guest configuration the tests use: the defaults (MRG_RXBUF, 256-entry queues, 2 KiB
/// buffers), named.
pub fn guest_config(name: &str) -> GuestConfig {
    GuestConfig {
        name: name.into(),
        ..GuestConfig::default()
    }
}

/// Connects an in-process guest to the switch's server-mode socket `path`.
pub fn connect(path: &Path, name: &str) -> Guest {
    connect_with(path, &guest_config(name))
}

pub fn connect_with(path: &Path, cfg: &GuestConfig) -> Guest {
    Guest::connect(path, cfg)
        .unwrap_or_else(|e| panic!("guest {} connecting to {}: {e}", cfg.name, path.display()))
}

/// A virtio-net device as the tests drive it: a receive and a transmit queue.
pub trait Nic {
    fn rx(&mut self) -> &mut DriverQueue;
    fn tx(&mut self) -> &mut DriverQueue;
}

impl Nic for Guest {
    fn rx(&mut self) -> &mut DriverQueue {
        &mut self.rx
    }
    fn tx(&mut self) -> &mut DriverQueue {
        &mut self.tx
    }
}

/// Transmits every frame, waiting for free descriptors when the queue is full.
pub fn send(g: &mut impl Nic, frames: &[Vec<u8>]) {
    let tx = g.tx();
    for f in frames {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while !tx.push_tx(f) {
            tx.publish();
            tx.reclaim();
            assert!(
                Instant::now() < deadline,
                "the switch took no frame from the guest's TX queue within {RECV_TIMEOUT:?}: \
                 avail index {}, used index {}, {} of {} descriptors free, driver errors {:?}",
                tx.avail_idx(),
                tx.raw().used_idx(),
                tx.free_count(),
                tx.size(),
                tx.errors
            );
            std::thread::yield_now();
        }
    }
    tx.publish();
    tx.reclaim();
}

/// Transmits one frame.
pub fn send_one(g: &mut impl Nic, f: &[u8]) {
    send(g, &[f.to_vec()]);
}

/// Whatever the guest has received by now.
pub fn recv_now(g: &mut Guest) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    while g
        .rx
        .recv(usize::MAX, &mut scratch, |f| out.push(f.to_vec()))
        > 0
    {}
    out
}

/// Receives until `n` frames have arrived or `timeout` passed.
pub fn recv_n(g: &mut impl Nic, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        if g.rx()
            .recv(n - out.len(), &mut scratch, |f| out.push(f.to_vec()))
            == 0
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

/// A broadcast marker frame from `src` carrying `tag`: a guest that receives it has received
/// everything the switch put in its queue before it.
pub fn marker(src: [u8; 6], tag: &str) -> Vec<u8> {
    let mut p = b"MARKER:".to_vec();
    p.extend_from_slice(tag.as_bytes());
    frame(BROADCAST, src, &p)
}

/// Receives until the marker frame `m` arrives and returns every other frame received by then
/// (in the order received). Panics when the marker does not come within [`RECV_TIMEOUT`].
/// Frames from one source reach a destination in order, so an empty answer to a marker sent
/// after some frames proves none of them reached this guest.
pub fn recv_until(g: &mut impl Nic, m: &[u8], who: &str) -> Vec<Vec<u8>> {
    let mut others = Vec::new();
    let mut scratch = Vec::new();
    let mut seen = false;
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !seen {
        assert!(
            Instant::now() < deadline,
            "{who}: marker not received within {RECV_TIMEOUT:?}; got meanwhile: {}",
            describe(&others)
        );
        let n = g.rx().recv(usize::MAX, &mut scratch, |f| {
            if !seen && f == m {
                seen = true;
            } else {
                others.push(f.to_vec());
            }
        });
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    others
}

/// A guest whose vhost-user frontend listens, for the switch's client-mode ports: the test
/// accepts the switch's connection and sets the device up over it, as `Guest` does over a
/// connection it makes itself (vhost-user/src/guest.rs).
pub struct ListeningGuest {
    pub rx: DriverQueue,
    pub tx: DriverQueue,
    pub features: u64,
    frontend: Frontend,
    // Last: the queues point into this memory.
    mem: DriverMemory,
}

impl Nic for ListeningGuest {
    fn rx(&mut self) -> &mut DriverQueue {
        &mut self.rx
    }
    fn tx(&mut self) -> &mut DriverQueue {
        &mut self.tx
    }
}

impl ListeningGuest {
    /// Waits up to `timeout` for the switch to connect to `listener`, then sets up one queue
    /// pair over that connection.
    pub fn accept(
        listener: &UnixListener,
        cfg: &GuestConfig,
        timeout: Duration,
    ) -> Result<ListeningGuest, String> {
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listener: {e}"))?;
        let mut stream = None;
        wait_for(timeout, || match listener.accept() {
            Ok((s, _)) => {
                stream = Some(s);
                true
            }
            Err(_) => false,
        });
        let stream =
            stream.ok_or_else(|| format!("the switch did not connect within {timeout:?}"))?;
        stream
            .set_nonblocking(false)
            .map_err(|e| format!("stream: {e}"))?;
        let mut frontend = Frontend::from_stream(stream);
        let mut mem = DriverMemory::new(&cfg.name, cfg.mem_bytes, cfg.huge)
            .map_err(|e| format!("guest memory: {e}"))?;
        let hdr = vhost_user::net::header_len(cfg.features);
        let rx = DriverQueue::new(&mut mem, cfg.queue_size, cfg.buf_size, hdr)
            .map_err(|e| format!("rx queue: {e}"))?;
        let tx = DriverQueue::new(&mut mem, cfg.queue_size, cfg.buf_size, hdr)
            .map_err(|e| format!("tx queue: {e}"))?;
        rx.set_interrupts(false);
        tx.set_interrupts(false);
        let features = frontend
            .setup_net(
                cfg.features | VHOST_USER_F_PROTOCOL_FEATURES,
                &[(mem.region_desc(), mem.fd().as_fd())],
                &[(0, rx.layout(), None), (1, tx.layout(), None)],
            )
            .map_err(|e| format!("vhost-user setup over the accepted connection: {e}"))?;
        let mut g = ListeningGuest {
            rx,
            tx,
            features,
            frontend,
            mem,
        };
        g.rx.refill_rx();
        Ok(g)
    }

    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    pub fn memory(&self) -> &DriverMemory {
        &self.mem
    }
}

/// Short description of frames (count, and the first few headers), for messages.
pub fn describe(frames: &[Vec<u8>]) -> String {
    let heads: Vec<String> = frames
        .iter()
        .take(4)
        .map(|f| {
            let h: Vec<String> = f.iter().take(14).map(|b| format!("{b:02x}")).collect();
            format!("[{} bytes: {}]", f.len(), h.join(""))
        })
        .collect();
    format!("{} frame(s) {}", frames.len(), heads.join(" "))
}

/// Writes `text` to `path` (test fixtures).
pub fn write_file(path: &Path, text: &str) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write fixture");
}

// ---------------------------------------------------------------------------------------------
// A process's descriptors and mappings, for leak checks.

/// Targets of the open file descriptors of process `pid` (`/proc/<pid>/fd/*`).
pub fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Number of open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Descriptors of process `pid` open on a memfd named exactly `name` (whose target reads
/// `/memfd:NAME (deleted)`).
pub fn memfd_fds(pid: u32, name: &str) -> usize {
    let want = format!("/memfd:{name} (deleted)");
    fd_targets(pid).iter().filter(|t| **t == want).count()
}

/// Mappings (lines of `/proc/<pid>/maps`) of the memfd named exactly `name`.
pub fn memfd_mappings(pid: u32, name: &str) -> usize {
    let want = format!("/memfd:{name} (deleted)");
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&want))
        .count()
}

/// Resident set size of process `pid`, in KiB (0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

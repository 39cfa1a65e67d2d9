//! QEMU guests for the end-to-end tests: starting a TCG VM whose virtio-net NIC is a vhost-user
//! frontend, reading its serial console for the `NFV: ` markers that `tests/guest/init.sh`
//! prints, and making sure no QEMU (or backend) outlives its test.
//!
//! Every process started here is a [`Process`] ([`crate::process`], re-exported here): it is
//! killed when dropped (panics included), and a tiny watchdog (`sh` blocked on a pipe from the
//! test process) kills it too if the test process itself dies without unwinding (SIGKILL,
//! abort, a CI timeout).
//!
//! The QEMU command line follows what is known to work with Debian's QEMU 7.2 on these machines:
//! TCG (KVM hangs here), shared memfd guest memory (vhost-user needs it), `vectors=0` on the
//! virtio-net device (with MSI-X, QEMU 7.2 under TCG segfaults when the guest starts a vhost-user
//! device), an uncompressed `vmlinux` booted by qboot through its PVH entry.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::guest_image::{GuestImage, QBOOT};
use crate::peers;
use crate::process::{read_lossy, POLL, TAIL_LINES};
pub use crate::process::{tail, wait_for_sockets, Process, TestDir};

/// Prefix of every line the guest's init prints for the harness.
pub const MARKER_PREFIX: &str = "NFV: ";

/// What the guest's init does once eth0 is up (see `tests/guest/init.sh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestMode {
    /// Ping the peer, print `PING_OK`/`PING_FAIL` (and `JUMBO_*`), then power off.
    Ping,
    /// Answer pings until killed.
    #[default]
    Respond,
    /// Ping the peer forever at 5/s, one `REPLY seq=N` line per reply, `TIMEOUT` per silent second.
    PingLoop,
}

/// The guest's kernel command-line parameters (`nfv.*`).
#[derive(Clone, Debug, Default)]
pub struct GuestParams {
    pub mode: GuestMode,
    /// eth0 address with prefix, e.g. `10.0.0.1/24`.
    pub ip: Option<String>,
    pub mtu: Option<u32>,
    /// Address to ping.
    pub peer: Option<String>,
    /// Pings in ping mode (guest default 5).
    pub count: Option<u32>,
    /// Ping mode: after the normal pings, 3 pings with `-s SIZE`.
    pub jumbo_size: Option<u32>,
    /// Seconds to wait for the peer's first reply (guest default 60).
    pub wait_peer_s: Option<u32>,
}

impl GuestParams {
    /// Pings `peer` from `ip`, then powers off.
    pub fn ping(ip: &str, peer: &str) -> Self {
        GuestParams {
            mode: GuestMode::Ping,
            ip: Some(ip.to_string()),
            peer: Some(peer.to_string()),
            ..Self::default()
        }
    }

    /// Answers pings on `ip` until killed.
    pub fn respond(ip: &str) -> Self {
        GuestParams {
            mode: GuestMode::Respond,
            ip: Some(ip.to_string()),
            ..Self::default()
        }
    }

    /// Pings `peer` forever (for reconnect tests).
    pub fn pingloop(ip: &str, peer: &str) -> Self {
        GuestParams {
            mode: GuestMode::PingLoop,
            ip: Some(ip.to_string()),
            peer: Some(peer.to_string()),
            ..Self::default()
        }
    }

    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    pub fn count(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    pub fn jumbo(mut self, size: u32) -> Self {
        self.jumbo_size = Some(size);
        self
    }

    pub fn wait_peer(mut self, seconds: u32) -> Self {
        self.wait_peer_s = Some(seconds);
        self
    }

    /// The `nfv.*` words for the kernel command line.
    pub fn cmdline(&self) -> Vec<String> {
        let mode = match self.mode {
            GuestMode::Ping => "ping",
            GuestMode::Respond => "respond",
            GuestMode::PingLoop => "pingloop",
        };
        let mut words = vec![format!("nfv.mode={mode}")];
        let mut push = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                words.push(format!("nfv.{key}={v}"));
            }
        };
        push("ip", self.ip.clone());
        push("mtu", self.mtu.map(|v| v.to_string()));
        push("ping", self.peer.clone());
        push("count", self.count.map(|v| v.to_string()));
        push("size", self.jumbo_size.map(|v| v.to_string()));
        push("wait", self.wait_peer_s.map(|v| v.to_string()));
        words
    }
}

/// How to start one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Short name, used for log file names and messages (`vm1`).
    pub name: String,
    /// The vhost-user socket.
    pub socket: PathBuf,
    /// MAC of the virtio-net device, `52:54:00:..`.
    pub mac: String,
    /// Extra kernel command-line words (the guest's `nfv.*` parameters).
    pub params: Vec<String>,
    /// Guest memory in MiB (shared memfd).
    pub mem_mb: u32,
    /// `Some(n)`: QEMU reconnects to the socket every `n` s after losing it (client mode only).
    pub reconnect: Option<u32>,
    /// QEMU is the vhost-user server (`server=on,wait=off`): it creates the socket and the
    /// backend connects to it.
    pub server: bool,
    /// Run QEMU with `taskset -c CPU`.
    pub cpu: Option<usize>,
    /// QEMU arguments after the usual ones (a monitor, `-incoming`, `-global` properties).
    pub extra: Vec<String>,
}

impl VmConfig {
    /// A 256 MiB client-mode VM on `socket`, not pinned, no guest parameters.
    pub fn new(name: &str, socket: impl Into<PathBuf>, mac: &str) -> Self {
        VmConfig {
            name: name.to_string(),
            socket: socket.into(),
            mac: mac.to_string(),
            params: Vec::new(),
            mem_mb: 256,
            reconnect: None,
            server: false,
            cpu: None,
            extra: Vec::new(),
        }
    }

    /// Appends QEMU arguments after the usual ones.
    pub fn qemu_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Appends the guest's parameters.
    pub fn guest(mut self, guest: &GuestParams) -> Self {
        self.params.extend(guest.cmdline());
        self
    }

    /// Appends one raw kernel command-line word.
    pub fn param(mut self, word: impl Into<String>) -> Self {
        self.params.push(word.into());
        self
    }

    pub fn mem_mb(mut self, mb: u32) -> Self {
        self.mem_mb = mb;
        self
    }

    pub fn reconnect(mut self, seconds: u32) -> Self {
        self.reconnect = Some(seconds);
        self
    }

    pub fn server(mut self) -> Self {
        self.server = true;
        self
    }

    pub fn pin(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }
}

/// QEMU option values use `,` as separator; a literal comma is written `,,`.
fn opt_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The arguments of `qemu-system-x86_64` for `cfg` (without the program name).
pub fn qemu_args(image: &GuestImage, console: &Path, cfg: &VmConfig) -> Vec<String> {
    let mut chardev = format!("socket,id=c0,path={}", opt_path(&cfg.socket));
    if cfg.server {
        chardev.push_str(",server=on,wait=off");
    }
    if let Some(n) = cfg.reconnect {
        chardev.push_str(&format!(",reconnect={n}"));
    }
    let mut append = String::from("console=ttyS0 panic=-1 quiet");
    for word in &cfg.params {
        append.push(' ');
        append.push_str(word);
    }
    let mem = cfg.mem_mb;
    [
        "-accel",
        "tcg",
        "-m",
        &format!("{mem}M"),
        "-smp",
        "1",
        "-nic",
        "none",
        "-bios",
        QBOOT,
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-numa",
        "node,memdev=mem",
        "-chardev",
        &chardev,
        "-netdev",
        "vhost-user,id=n0,chardev=c0",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={},vectors=0", cfg.mac),
        "-kernel",
        &image.vmlinux.display().to_string(),
        "-initrd",
        &image.initrd.display().to_string(),
        "-append",
        &append,
        "-nographic",
        "-serial",
        &format!("file:{}", opt_path(console)),
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(cfg.extra.iter().cloned())
    .collect()
}

/// Checks the host side of the QEMU tests: QEMU itself, qboot, taskset, and the guest image
/// (built on first use). A missing piece is reported through [`peers::missing`] (a loud skip,
/// or a failure under CI) and gives `None`.
pub fn require_qemu() -> Option<GuestImage> {
    peers::require("qemu-system-x86_64", "QEMU, Debian package qemu-system-x86")?;
    peers::require("taskset", "Debian package util-linux")?;
    if !Path::new(QBOOT).is_file() {
        peers::missing(&format!(
            "{QBOOT} (qboot firmware, Debian package qemu-system-data)"
        ));
        return None;
    }
    match GuestImage::ensure() {
        Ok(image) => Some(image),
        Err(e) => {
            peers::missing(&format!("the QEMU guest image ({e})"));
            None
        }
    }
}

/// One TCG guest with a vhost-user virtio-net NIC.
pub struct Vm {
    name: String,
    console: PathBuf,
    process: Process,
}

impl Vm {
    /// Starts QEMU for `cfg`; its console goes to `<dir>/<name>_console.log`, QEMU's own output
    /// to `<dir>/<name>_qemu.log`. In client mode the socket must already be listening.
    pub fn spawn(image: &GuestImage, dir: &Path, cfg: VmConfig) -> Result<Vm, String> {
        let console = dir.join(format!("{}_console.log", cfg.name));
        let qemu_log = dir.join(format!("{}_qemu.log", cfg.name));
        // A stale console from an earlier run in the same dir would satisfy wait_for at once.
        let _ = fs::remove_file(&console);
        let args = qemu_args(image, &console, &cfg);
        let mut cmd = match cfg.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg("qemu-system-x86_64");
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args(&args);
        if let Ok(mut f) = File::create(&qemu_log) {
            let _ = writeln!(f, "# {:?}", cmd);
        }
        let process = Process::spawn(&format!("QEMU {}", cfg.name), &mut cmd, &qemu_log)?;
        Ok(Vm {
            name: cfg.name,
            console,
            process,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The QEMU process (pid, its own log, signals).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Path of the serial console log.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        read_lossy(&self.console)
    }

    /// Current length of the console log, a mark for [`Vm::wait_for_after`].
    pub fn console_len(&self) -> usize {
        fs::metadata(&self.console)
            .ok()
            .and_then(|m| usize::try_from(m.len()).ok())
            .unwrap_or(0)
    }

    /// Every `NFV: ` line so far, prefix removed.
    pub fn markers(&self) -> Vec<String> {
        self.console()
            .lines()
            .filter_map(|l| l.find(MARKER_PREFIX).map(|i| &l[i + MARKER_PREFIX.len()..]))
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Waits for a console line containing `marker`; returns that line. The error says why and
    /// carries the tail of the console (and QEMU's own log).
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_after(0, marker, timeout)
    }

    /// Like [`Vm::wait_for`], looking only at console bytes after `offset` (a
    /// [`Vm::console_len`] taken earlier).
    pub fn wait_for_after(
        &self,
        offset: usize,
        marker: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_any_after(offset, &[marker], timeout)
            .map(|(_, line)| line)
    }

    /// Waits for the first console line containing any of `markers`; returns its index in
    /// `markers` and the line.
    pub fn wait_for_any(
        &self,
        markers: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        self.wait_for_any_after(0, markers, timeout)
    }

    /// [`Vm::wait_for_any`] after a console offset.
    pub fn wait_for_any_after(
        &self,
        offset: usize,
        markers: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the exit status before the console, so a marker printed just before exit is
            // still seen on this pass.
            let exited = self.process.exit_status();
            let bytes = fs::read(&self.console).unwrap_or_default();
            let text = String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default());
            // Only complete lines: a marker split across two writes must not match half-printed.
            let complete = match text.rfind('\n') {
                Some(end) => &text[..end],
                None => "",
            };
            for line in complete.lines() {
                if let Some(i) = markers.iter().position(|m| line.contains(m)) {
                    return Ok((i, line.trim_end_matches('\r').to_string()));
                }
            }
            let why = if let Some(status) = exited {
                format!("QEMU exited ({status}) first")
            } else if Instant::now() >= deadline {
                format!("not seen within {timeout:?}")
            } else {
                std::thread::sleep(POLL);
                continue;
            };
            return Err(format!(
                "{}: {markers:?} {why}\n{}",
                self.name,
                self.failure_report()
            ));
        }
    }

    /// Waits for QEMU to exit (the guest powered off).
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, String> {
        self.process.wait_exit(timeout).ok_or_else(|| {
            format!(
                "{}: QEMU still running after {timeout:?}\n{}",
                self.name,
                self.failure_report()
            )
        })
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Kills QEMU now (also done on drop).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Paths and tails of the console and of QEMU's own log, for error messages.
    pub fn failure_report(&self) -> String {
        let qemu = self.process.log();
        let qemu_tail: Vec<&str> = qemu.lines().filter(|l| !l.starts_with("# ")).collect();
        let mut report = format!(
            "--- {} console {} (last {TAIL_LINES} lines) ---\n{}\n",
            self.name,
            self.console.display(),
            tail(&self.console(), TAIL_LINES)
        );
        if !qemu_tail.is_empty() {
            report.push_str(&format!(
                "--- {} QEMU log {} ---\n{}\n",
                self.name,
                self.process.log_path().display(),
                tail(&qemu_tail.join("\n"), TAIL_LINES)
            ));
        }
        report
    }
}

/// Options of [`two_vm_ping`].
#[derive(Clone, Debug)]
pub struct TwoVmPing {
    /// Also MTU 9000 on both guests and pings with `-s 8000`.
    pub jumbo: bool,
    /// Pin both QEMUs to this core (the backend polls on the other one).
    pub cpu: Option<usize>,
    /// Pings of the normal-size round.
    pub count: u32,
    /// Start VM2 (the responder) this long after VM1, so VM1 has to wait for its peer.
    pub peer_delay: Duration,
    /// Limit for VM1 to boot, find its peer, ping and report.
    pub timeout: Duration,
    /// Give VM1 and VM2 (in that order) packed virtqueues (`virtio-net-pci,packed=on`).
    pub packed: [bool; 2],
}

impl Default for TwoVmPing {
    fn default() -> Self {
        TwoVmPing {
            jumbo: false,
            cpu: Some(0),
            count: 5,
            peer_delay: Duration::ZERO,
            timeout: Duration::from_secs(100),
            packed: [false, false],
        }
    }
}

/// What [`two_vm_ping`] saw.
#[derive(Clone, Debug)]
pub struct PingOutcome {
    /// VM1's `PING_OK ...` line.
    pub ping: String,
    /// VM1's `JUMBO_OK ...` line (jumbo runs).
    pub jumbo: Option<String>,
    /// VM1's `PEER_UP tries=N ...` line (how long it had to wait for VM2).
    pub peer_up: Option<String>,
    /// VM1's eth0 counters at the end.
    pub vm1_counters: Option<String>,
    /// VM2's last eth0 counters (printed every 2 s when they change).
    pub vm2_counters: Option<String>,
    /// From starting the VMs to VM1's `DONE`.
    pub elapsed: Duration,
}

/// The basic end-to-end check of a vhost-user backend serving two guests: VM2 (10.0.0.2) answers,
/// VM1 (10.0.0.1) pings it, with jumbo frames when asked. `sock1`/`sock2` must be listening.
/// When `backend` exits meanwhile, this fails at once instead of waiting out the timeout.
/// On failure the error holds both consoles; the caller adds the backend's side.
pub fn two_vm_ping(
    image: &GuestImage,
    dir: &Path,
    sock1: &Path,
    sock2: &Path,
    opts: &TwoVmPing,
    backend: Option<&Process>,
) -> Result<PingOutcome, String> {
    let mut responder = GuestParams::respond("10.0.0.2/24");
    // Both guests boot in seconds; a peer silent for 30 s after that is not coming.
    let mut pinger = GuestParams::ping("10.0.0.1/24", "10.0.0.2")
        .count(opts.count)
        .wait_peer(30);
    if opts.jumbo {
        responder = responder.mtu(9000);
        pinger = pinger.mtu(9000).jumbo(8000);
    }
    let mut cfg2 = VmConfig::new("vm2", sock2, "52:54:00:00:00:02").guest(&responder);
    let mut cfg1 = VmConfig::new("vm1", sock1, "52:54:00:00:00:01").guest(&pinger);
    if let Some(cpu) = opts.cpu {
        cfg1 = cfg1.pin(cpu);
        cfg2 = cfg2.pin(cpu);
    }
    const PACKED: [&str; 2] = ["-global", "virtio-net-pci.packed=on"];
    if opts.packed[0] {
        cfg1 = cfg1.qemu_args(&PACKED);
    }
    if opts.packed[1] {
        cfg2 = cfg2.qemu_args(&PACKED);
    }
    let started = Instant::now();
    let vm1 = Vm::spawn(image, dir, cfg1)?;
    std::thread::sleep(opts.peer_delay);
    let vm2 = Vm::spawn(image, dir, cfg2)?;
    let both = |e: String| format!("{e}{}", vm2.failure_report());

    let deadline = started + opts.timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let err = match vm1.wait_for("NFV: DONE", slice) {
            Ok(_) => break,
            Err(e) => e,
        };
        if !vm1.is_running() || Instant::now() >= deadline {
            return Err(both(err));
        }
        if let Some(status) = backend.and_then(Process::exit_status) {
            return Err(both(format!(
                "the backend ({}) exited ({status}) before VM1 was done\n{}",
                backend.map(Process::name).unwrap_or_default(),
                vm1.failure_report()
            )));
        }
    }
    let elapsed = started.elapsed();
    let markers = vm1.markers();
    let find = |prefix: &str| markers.iter().find(|m| m.starts_with(prefix)).cloned();
    let vm2_counters = vm2
        .markers()
        .into_iter()
        .rev()
        .find(|m| m.starts_with("COUNTERS"));
    let fail = |what: &str| both(format!("{what}\n{}", vm1.failure_report()));
    let ping = find("PING_OK").ok_or_else(|| fail("VM1 did not report PING_OK"))?;
    let jumbo = if opts.jumbo {
        Some(find("JUMBO_OK").ok_or_else(|| fail("VM1 did not report JUMBO_OK"))?)
    } else {
        None
    };
    Ok(PingOutcome {
        ping,
        jumbo,
        peer_up: find("PEER_UP"),
        vm1_counters: find("COUNTERS"),
        vm2_counters,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> GuestImage {
        GuestImage {
            dir: PathBuf::from("/img"),
            vmlinux: PathBuf::from("/img/vmlinux"),
            initrd: PathBuf::from("/img/initrd.cpio.gz"),
            kernel_release: "6.1.0-0-amd64".into(),
        }
    }

    #[test]
    fn qemu_args_carry_the_flags_that_matter() {
        let cfg = VmConfig::new("vm1", "/t/s,1.sock", "52:54:00:00:00:01")
            .guest(&GuestParams::ping("10.0.0.1/24", "10.0.0.2").mtu(9000))
            .reconnect(1);
        let args = qemu_args(&image(), Path::new("/t/c.log"), &cfg);
        let joined = args.join(" ");
        assert!(joined.contains("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,vectors=0"));
        assert!(joined.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
        assert!(joined.contains("socket,id=c0,path=/t/s,,1.sock,reconnect=1"));
        assert!(joined.contains("-accel tcg"));
        assert!(joined.contains("-serial file:/t/c.log"));
        let append = &args[args.iter().position(|a| a == "-append").expect("-append") + 1];
        assert_eq!(
            append,
            "console=ttyS0 panic=-1 quiet nfv.mode=ping nfv.ip=10.0.0.1/24 nfv.mtu=9000 \
             nfv.ping=10.0.0.2"
        );
    }

    #[test]
    fn server_mode_does_not_wait() {
        let cfg = VmConfig::new("vm1", "/t/s.sock", "52:54:00:00:00:01").server();
        let args = qemu_args(&image(), Path::new("/t/c.log"), &cfg);
        assert!(args.contains(&"socket,id=c0,path=/t/s.sock,server=on,wait=off".to_string()));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}

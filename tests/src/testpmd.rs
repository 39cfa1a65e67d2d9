//! DPDK `dpdk-testpmd` as a test peer: building its command line, driving it interactively, and
//! reading its counters.
//!
//! testpmd is the reference vhost-user peer: `net_vhost` is a backend (the role our switch
//! plays), `net_virtio_user` a frontend (the role a guest plays). A [`TestpmdBuilder`] assembles
//! the EAL and application arguments; [`TestpmdBuilder::spawn`] starts it in interactive mode
//! (`-i`) and a reader thread collects everything it prints. Commands go to its stdin one at a
//! time: each waits for testpmd's echo of the command and the next `testpmd> ` prompt, so the
//! text in between is exactly that command's answer.
//!
//! Things learnt the hard way, and handled here:
//! - testpmd prints through stdio, which is fully buffered on a pipe: answers would only arrive
//!   at exit. It runs under `stdbuf -oL` so they arrive per line.
//! - hugepage files left in a hugetlbfs pin pages until removed, so a crashed testpmd starves
//!   the next one: backends run with `--huge-unlink`, frontends (which need
//!   `--single-file-segments` to share memory over vhost-user, and that excludes `--huge-unlink`)
//!   with `--in-memory`; on drop the instance's files are removed anyway.
//! - `clear port stats all` while virtio-user ports forward races with the forwarding core (one
//!   port was seen to keep counting from the start): diff two readings ([`PortStats::since`]).
//! - no stray testpmd, ever: it runs under `timeout` (its own process group, a hard lifetime that
//!   holds even when the test process is killed); [`Testpmd`]'s `Drop` sends SIGINT, then SIGKILL
//!   to the whole group. The crate forbids `unsafe`, so signals go through `kill(1)`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::peers::which;

/// The interactive prompt; testpmd prints it when it is ready for the next command.
const PROMPT: &str = "testpmd> ";
/// Where DPDK keeps per-prefix runtime files (config, multi-process socket).
const DPDK_RUNTIME_DIR: &str = "/var/run/dpdk";
/// Default wait for one command's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a SIGINT'ed testpmd may take to exit before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Everything that can go wrong while driving testpmd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary (or a helper such as `timeout`) could not be started.
    #[error("cannot start {what}: {source}; is DPDK installed (apt-get install dpdk)?")]
    Spawn {
        /// What was being started.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a command to testpmd's stdin failed (it probably exited).
    #[error("cannot send `{command}` to testpmd {name}: {source}; see its output above")]
    Send {
        /// Instance name.
        name: String,
        /// The command.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// No answer in time.
    #[error("testpmd {name}: no answer to `{command}` within {timeout:?}; last output:\n{tail}")]
    Timeout {
        /// Instance name.
        name: String,
        /// The command, or what was awaited.
        command: String,
        /// The wait.
        timeout: Duration,
        /// The last lines testpmd printed.
        tail: String,
    },
    /// testpmd exited while a command or an event was awaited.
    #[error("testpmd {name} exited while waiting for `{command}`; last output:\n{tail}")]
    Exited {
        /// Instance name.
        name: String,
        /// The command, or what was awaited.
        command: String,
        /// The last lines testpmd printed.
        tail: String,
    },
    /// testpmd answered, but not with what the caller needs.
    #[error("testpmd {name}: unexpected answer to `{command}`: {answer}")]
    Unexpected {
        /// Instance name.
        name: String,
        /// The command.
        command: String,
        /// The answer.
        answer: String,
    },
    /// A path did not appear in time.
    #[error("{path} did not appear as a socket within {timeout:?}")]
    NoSocket {
        /// The socket path.
        path: PathBuf,
        /// The wait.
        timeout: Duration,
    },
    /// The builder was given something testpmd would reject.
    #[error("invalid testpmd configuration: {0}")]
    Config(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// How testpmd gets its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Memory {
    /// 2 MB hugepages from the hugetlbfs at `dir` (see [`crate::hugepages::ensure_hugepages`]),
    /// `-m mb`.
    Huge {
        /// hugetlbfs mount point.
        dir: PathBuf,
        /// Megabytes to take.
        mb: u32,
    },
    /// Ordinary pages (`--no-huge -m mb`): slower, but needs neither root nor a reservation.
    NoHuge {
        /// Megabytes to take.
        mb: u32,
    },
}

impl Memory {
    /// Hugepages when `dir` is `Some` (the result of `ensure_hugepages`), `--no-huge` otherwise.
    pub fn huge_or_not(dir: Option<PathBuf>, mb: u32) -> Memory {
        match dir {
            Some(dir) => Memory::Huge { dir, mb },
            None => Memory::NoHuge { mb },
        }
    }

    /// The hugetlbfs directory, if any.
    pub fn huge_dir(&self) -> Option<&Path> {
        match self {
            Memory::Huge { dir, .. } => Some(dir),
            Memory::NoHuge { .. } => None,
        }
    }
}

/// A virtual device (`--vdev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vdev {
    /// `net_vhost`: a vhost-user backend on `socket`; a server unless `client`.
    Vhost {
        /// Unix socket path (`iface=`).
        socket: PathBuf,
        /// Queue pairs.
        queues: u16,
        /// Connect instead of listen (`client=1`).
        client: bool,
    },
    /// `net_virtio_user`: a vhost-user frontend on `socket`; a client unless `server`.
    VirtioUser {
        /// Unix socket path (`path=`).
        socket: PathBuf,
        /// Queue pairs.
        queues: u16,
        /// Fixed MAC address (`mac=`); random when `None`.
        mac: Option<String>,
        /// Listen instead of connect (`server=1`).
        server: bool,
    },
}

impl Vdev {
    /// The socket path.
    pub fn socket(&self) -> &Path {
        match self {
            Vdev::Vhost { socket, .. } | Vdev::VirtioUser { socket, .. } => socket,
        }
    }

    /// True when testpmd creates (listens on) the socket.
    pub fn listens(&self) -> bool {
        match self {
            Vdev::Vhost { client, .. } => !client,
            Vdev::VirtioUser { server, .. } => *server,
        }
    }
}

/// Builder for one testpmd instance. Defaults: lcores 0,1 with main lcore 0, one forwarding
/// core, `--no-huge -m 256`, io forwarding, interactive, 16384 mbufs, lifetime 300 s.
#[derive(Clone, Debug)]
pub struct TestpmdBuilder {
    name: String,
    binary: PathBuf,
    lcores: Vec<u32>,
    main_lcore: u32,
    memory: Memory,
    vdevs: Vec<Vdev>,
    forward_mode: String,
    eth_peers: Vec<(u16, String)>,
    nb_cores: u32,
    total_num_mbufs: Option<u32>,
    txpkts: Option<u32>,
    burst: Option<u32>,
    rxq_txq: Option<u16>,
    interactive: bool,
    stats_period: Option<u32>,
    extra_eal: Vec<String>,
    extra_app: Vec<String>,
    echo: bool,
    lifetime: Duration,
    /// `packed_vq=1` on every `net_virtio_user` port: packed virtqueues (VIRTIO_F_RING_PACKED).
    packed_vq: bool,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl TestpmdBuilder {
    /// A builder; `name` labels the instance in messages and its `--file-prefix`.
    pub fn new(name: &str) -> Self {
        TestpmdBuilder {
            name: name.to_string(),
            binary: PathBuf::from("dpdk-testpmd"),
            lcores: vec![0, 1],
            main_lcore: 0,
            memory: Memory::NoHuge { mb: 256 },
            vdevs: Vec::new(),
            forward_mode: "io".into(),
            eth_peers: Vec::new(),
            nb_cores: 1,
            total_num_mbufs: Some(16384),
            txpkts: None,
            burst: None,
            rxq_txq: None,
            interactive: true,
            stats_period: None,
            extra_eal: Vec::new(),
            extra_app: Vec::new(),
            echo: false,
            lifetime: Duration::from_secs(300),
            packed_vq: false,
        }
    }

    /// Makes every `net_virtio_user` port ask for packed virtqueues (`packed_vq=1`).
    pub fn packed_vq(mut self, on: bool) -> Self {
        self.packed_vq = on;
        self
    }

    /// The testpmd binary (default `dpdk-testpmd` on `PATH`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// EAL cores (`-l`) and the main one (`--main-lcore`); the others forward.
    pub fn lcores(mut self, lcores: &[u32], main_lcore: u32) -> Self {
        self.lcores = lcores.to_vec();
        self.main_lcore = main_lcore;
        self
    }

    /// Memory: hugepages or `--no-huge`.
    pub fn memory(mut self, memory: Memory) -> Self {
        self.memory = memory;
        self
    }

    /// Adds a vdev; ports are numbered in the order vdevs are added.
    pub fn vdev(mut self, vdev: Vdev) -> Self {
        self.vdevs.push(vdev);
        self
    }

    /// Adds a `net_vhost` backend listening on `socket`.
    pub fn vhost(self, socket: impl Into<PathBuf>, queues: u16) -> Self {
        self.vdev(Vdev::Vhost {
            socket: socket.into(),
            queues,
            client: false,
        })
    }

    /// Adds a `net_vhost` backend that connects to `socket` (`client=1`).
    pub fn vhost_client(self, socket: impl Into<PathBuf>, queues: u16) -> Self {
        self.vdev(Vdev::Vhost {
            socket: socket.into(),
            queues,
            client: true,
        })
    }

    /// Adds a `net_virtio_user` frontend that connects to `socket`.
    pub fn virtio_user(self, socket: impl Into<PathBuf>, queues: u16, mac: Option<&str>) -> Self {
        self.vdev(Vdev::VirtioUser {
            socket: socket.into(),
            queues,
            mac: mac.map(str::to_string),
            server: false,
        })
    }

    /// Adds a `net_virtio_user` frontend listening on `socket` (`server=1`).
    pub fn virtio_user_server(
        self,
        socket: impl Into<PathBuf>,
        queues: u16,
        mac: Option<&str>,
    ) -> Self {
        self.vdev(Vdev::VirtioUser {
            socket: socket.into(),
            queues,
            mac: mac.map(str::to_string),
            server: true,
        })
    }

    /// `--forward-mode` (io, mac, macswap, rxonly, txonly, ...).
    pub fn forward_mode(mut self, mode: &str) -> Self {
        self.forward_mode = mode.to_string();
        self
    }

    /// `--eth-peer=PORT,MAC`: the destination MAC of mac/txonly forwarding out of `port`.
    pub fn eth_peer(mut self, port: u16, mac: &str) -> Self {
        self.eth_peers.push((port, mac.to_string()));
        self
    }

    /// `--nb-cores`: forwarding cores.
    pub fn nb_cores(mut self, n: u32) -> Self {
        self.nb_cores = n;
        self
    }

    /// `--total-num-mbufs` (`None`: testpmd's default).
    pub fn total_num_mbufs(mut self, n: Option<u32>) -> Self {
        self.total_num_mbufs = n;
        self
    }

    /// `--txpkts`: frame length of txonly packets.
    pub fn txpkts(mut self, len: u32) -> Self {
        self.txpkts = Some(len);
        self
    }

    /// `--burst`.
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = Some(n);
        self
    }

    /// `--rxq=N --txq=N`.
    pub fn rxq_txq(mut self, n: u16) -> Self {
        self.rxq_txq = Some(n);
        self
    }

    /// Interactive mode (`-i`, default). Without it testpmd forwards at once and the command
    /// methods are unavailable.
    pub fn interactive(mut self, on: bool) -> Self {
        self.interactive = on;
        self
    }

    /// `--stats-period SECONDS` (periodic statistics, non-interactive mode).
    pub fn stats_period(mut self, secs: u32) -> Self {
        self.stats_period = Some(secs);
        self
    }

    /// One more EAL argument, before `--`.
    pub fn eal_arg(mut self, arg: &str) -> Self {
        self.extra_eal.push(arg.to_string());
        self
    }

    /// One more application argument, after `--`.
    pub fn app_arg(mut self, arg: &str) -> Self {
        self.extra_app.push(arg.to_string());
        self
    }

    /// Copy testpmd's output to stderr, each line prefixed by the instance name.
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }

    /// Hard upper bound on the process's life (enforced by `timeout`, even if the test process
    /// dies without running destructors).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn has_virtio_user(&self) -> bool {
        self.vdevs
            .iter()
            .any(|v| matches!(v, Vdev::VirtioUser { .. }))
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.lcores.is_empty() || !self.lcores.contains(&self.main_lcore) {
            return bad(format!(
                "main lcore {} is not among lcores {:?}",
                self.main_lcore, self.lcores
            ));
        }
        if self.nb_cores as usize >= self.lcores.len() {
            return bad(format!(
                "{} forwarding cores need {} lcores besides the main one",
                self.nb_cores, self.nb_cores
            ));
        }
        if self.vdevs.is_empty() {
            return bad("no vdev: testpmd would have no port".into());
        }
        for v in &self.vdevs {
            if let Vdev::VirtioUser { mac: Some(mac), .. } = v {
                if !valid_mac(mac) {
                    return bad(format!("bad MAC {mac}"));
                }
            }
            let s = v.socket().to_string_lossy();
            if s.contains(',') || s.is_empty() {
                return bad(format!("socket path {s:?} is empty or holds a comma"));
            }
        }
        for (port, mac) in &self.eth_peers {
            if !valid_mac(mac) {
                return bad(format!("bad MAC {mac} for eth-peer of port {port}"));
            }
        }
        Ok(())
    }

    /// The arguments testpmd gets, with `prefix` as `--file-prefix`.
    pub fn args(&self, prefix: &str) -> Vec<String> {
        let lcores: Vec<String> = self.lcores.iter().map(u32::to_string).collect();
        let mut a: Vec<String> = vec![
            "-l".into(),
            lcores.join(","),
            "--main-lcore".into(),
            self.main_lcore.to_string(),
            "--no-pci".into(),
            "--file-prefix".into(),
            prefix.into(),
        ];
        match &self.memory {
            Memory::Huge { dir, mb } => {
                a.extend(["--huge-dir".into(), dir.display().to_string()]);
                a.extend(["-m".into(), mb.to_string()]);
                if self.has_virtio_user() {
                    // vhost-user can pass few memory regions: one file per memseg list.
                    a.push("--single-file-segments".into());
                    a.push("--in-memory".into());
                } else {
                    a.push("--huge-unlink".into());
                }
            }
            Memory::NoHuge { mb } => {
                a.push("--no-huge".into());
                a.extend(["-m".into(), mb.to_string()]);
            }
        }
        let (mut n_vhost, mut n_virtio) = (0u32, 0u32);
        for v in &self.vdevs {
            let spec = match v {
                Vdev::Vhost {
                    socket,
                    queues,
                    client,
                } => {
                    let s = format!(
                        "net_vhost{n_vhost},iface={},queues={queues}{}",
                        socket.display(),
                        if *client { ",client=1" } else { "" }
                    );
                    n_vhost += 1;
                    s
                }
                Vdev::VirtioUser {
                    socket,
                    queues,
                    mac,
                    server,
                } => {
                    let mut s = format!(
                        "net_virtio_user{n_virtio},path={},queues={queues}",
                        socket.display()
                    );
                    if let Some(mac) = mac {
                        s.push_str(&format!(",mac={mac}"));
                    }
                    if *server {
                        s.push_str(",server=1");
                    }
                    if self.packed_vq {
                        s.push_str(",packed_vq=1");
                    }
                    n_virtio += 1;
                    s
                }
            };
            a.extend(["--vdev".into(), spec]);
        }
        a.extend(self.extra_eal.iter().cloned());
        a.push("--".into());
        if self.interactive {
            a.push("-i".into());
        }
        a.push(format!("--nb-cores={}", self.nb_cores));
        a.push(format!("--forward-mode={}", self.forward_mode));
        for (port, mac) in &self.eth_peers {
            a.push(format!("--eth-peer={port},{mac}"));
        }
        if let Some(n) = self.total_num_mbufs {
            a.push(format!("--total-num-mbufs={n}"));
        }
        if let Some(n) = self.txpkts {
            a.push(format!("--txpkts={n}"));
        }
        if let Some(n) = self.burst {
            a.push(format!("--burst={n}"));
        }
        if let Some(n) = self.rxq_txq {
            a.push(format!("--rxq={n}"));
            a.push(format!("--txq={n}"));
        }
        if let Some(s) = self.stats_period {
            a.extend(["--stats-period".into(), s.to_string()]);
        }
        a.extend(self.extra_app.iter().cloned());
        a
    }

    /// Starts testpmd. It is killed when the returned handle drops.
    pub fn spawn(self) -> Result<Testpmd> {
        self.validate()?;
        let prefix = format!(
            "nfv-{}-{}-{}",
            self.name,
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let args = self.args(&prefix);

        let spawn_err = |what: &str| {
            let what = what.to_string();
            move |source| Error::Spawn { what, source }
        };
        let (reader, writer) = io::pipe().map_err(spawn_err("a pipe"))?;
        let writer2 = writer.try_clone().map_err(spawn_err("a pipe"))?;

        // timeout(1): own process group, SIGINT forwarded to testpmd, hard deadline even if this
        // process dies without running destructors. stdbuf(1): answers arrive line by line.
        let binary = if self.binary.components().count() > 1 {
            self.binary.is_file().then(|| self.binary.clone())
        } else {
            which(&self.binary.to_string_lossy())
        }
        .ok_or_else(|| Error::Spawn {
            what: self.binary.display().to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such executable"),
        })?;
        let timeout = which("timeout");
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(t) = &timeout {
            argv.push(t.into());
            argv.push("--signal=INT".into());
            argv.push(format!("--kill-after={}", GRACE.as_secs()).into());
            argv.push(self.lifetime.as_secs().max(1).to_string().into());
        }
        if let Some(s) = which("stdbuf") {
            argv.extend([s.into(), "-oL".into(), "-eL".into()]);
        }
        argv.push(binary.into());
        argv.extend(args.iter().map(OsString::from));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(writer2);
        let mut child = cmd
            .spawn()
            .map_err(spawn_err(&self.binary.display().to_string()))?;
        // The Command holds the pipe's write ends; drop them so the reader sees EOF at exit.
        drop(cmd);
        let stdin = child.stdin.take();

        let output = Arc::new(Output::default());
        let reader_thread = {
            let output = Arc::clone(&output);
            let label = self.name.clone();
            let echo = self.echo;
            match thread::Builder::new()
                .name(format!("testpmd-{}", self.name))
                .spawn(move || output.collect(reader, echo.then_some(label)))
            {
                Ok(handle) => handle,
                Err(e) => {
                    signal(child.id(), "KILL", timeout.is_some());
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(spawn_err("the output reader thread")(e));
                }
            }
        };

        let cleanup = Cleanup {
            prefix: prefix.clone(),
            huge_dir: self.memory.huge_dir().map(Path::to_path_buf),
            sockets: self
                .vdevs
                .iter()
                .filter(|v| v.listens())
                .map(|v| v.socket().to_path_buf())
                .collect(),
        };
        Ok(Testpmd {
            name: self.name,
            prefix,
            args,
            child,
            group: timeout.is_some(),
            stdin,
            output,
            reader: Some(reader_thread),
            n_ports: self.vdevs.len(),
            cleanup,
            exited: None,
        })
    }
}

/// What testpmd printed so far, shared with the reader thread.
#[derive(Default)]
struct Output {
    state: Mutex<OutputState>,
    grew: Condvar,
}

#[derive(Default)]
struct OutputState {
    bytes: Vec<u8>,
    eof: bool,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A panic elsewhere while holding the lock leaves plain bytes behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn collect(&self, mut from: io::PipeReader, echo: Option<String>) {
        let mut chunk = [0u8; 16 * 1024];
        let mut line = Vec::new();
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Some(label) = &echo {
                for &b in &chunk[..n] {
                    if b == b'\n' {
                        eprintln!("[{label}] {}", String::from_utf8_lossy(&line).trim_end());
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            self.lock().bytes.extend_from_slice(&chunk[..n]);
            self.grew.notify_all();
        }
        self.lock().eof = true;
        self.grew.notify_all();
    }

    /// Waits until `found` finds something in the output (it gets the whole output), EOF, or
    /// the deadline. `Ok(Some(x))` found, `Ok(None)` EOF, `Err(())` timeout.
    fn wait<T>(
        &self,
        timeout: Duration,
        mut found: impl FnMut(&[u8]) -> Option<T>,
    ) -> std::result::Result<Option<T>, ()> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(x) = found(&st.bytes) {
                return Ok(Some(x));
            }
            if st.eof {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(());
            }
            st = self
                .grew
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Files an instance leaves behind when it cannot clean up itself.
struct Cleanup {
    prefix: String,
    huge_dir: Option<PathBuf>,
    sockets: Vec<PathBuf>,
}

impl Cleanup {
    fn run(&self) {
        let _ = fs::remove_dir_all(Path::new(DPDK_RUNTIME_DIR).join(&self.prefix));
        if let Some(dir) = &self.huge_dir {
            let stem = format!("{}map_", self.prefix);
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&stem) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        for s in &self.sockets {
            if fs::symlink_metadata(s)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false)
            {
                let _ = fs::remove_file(s);
            }
        }
    }
}

/// A running testpmd. Dropping it stops the process (SIGINT, then SIGKILL) and removes what it
/// left behind.
pub struct Testpmd {
    name: String,
    prefix: String,
    args: Vec<String>,
    child: Child,
    group: bool,
    stdin: Option<ChildStdin>,
    output: Arc<Output>,
    reader: Option<JoinHandle<()>>,
    n_ports: usize,
    cleanup: Cleanup,
    exited: Option<ExitStatus>,
}

impl fmt::Debug for Testpmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testpmd")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Testpmd {
    /// Instance name given to the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (of the `timeout` wrapper when there is one; it leads testpmd's process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The unique `--file-prefix` of this instance.
    pub fn file_prefix(&self) -> &str {
        &self.prefix
    }

    /// The arguments testpmd was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Number of ports (vdevs) configured.
    pub fn n_ports(&self) -> usize {
        self.n_ports
    }

    /// Everything printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().bytes).into_owned()
    }

    /// The last `n` lines printed.
    pub fn tail(&self, n: usize) -> String {
        let all = self.output();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits until `needle` appears in the output (anywhere, also before this call).
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Result<()> {
        let n = needle.as_bytes();
        match self.output.wait(timeout, |b| find(b, n)) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.exited_err(needle)),
            Err(()) => Err(self.timeout_err(needle, timeout)),
        }
    }

    fn exited_err(&self, command: &str) -> Error {
        Error::Exited {
            name: self.name.clone(),
            command: command.to_string(),
            tail: self.tail(30),
        }
    }

    fn timeout_err(&self, command: &str, timeout: Duration) -> Error {
        Error::Timeout {
            name: self.name.clone(),
            command: command.to_string(),
            timeout,
            tail: self.tail(30),
        }
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        let send_err = |source| Error::Send {
            name: self.name.clone(),
            command: line.to_string(),
            source,
        };
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            send_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin already closed",
            ))
        })?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(send_err)
    }

    /// Sends one interactive command and returns its answer: the text between testpmd's echo
    /// of the command and the next prompt.
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.command_timeout(line, COMMAND_TIMEOUT)
    }

    /// [`Testpmd::command`] with an explicit timeout.
    pub fn command_timeout(&mut self, line: &str, timeout: Duration) -> Result<String> {
        let line = line.trim();
        if line.contains('\n') || line.is_empty() {
            return Err(Error::Config(format!("not one command: {line:?}")));
        }
        let start = self.output.lock().bytes.len();
        self.write_line(line)?;
        let echo = line.as_bytes();
        let answer = self.output.wait(timeout, |all| {
            // testpmd's line editor echoes the command followed by "\r\n".
            let new = &all[start..];
            let mut from = 0;
            let after_echo = loop {
                let p = from + find(&new[from..], echo)?;
                let end = p + echo.len();
                if matches!(new.get(end), Some(b'\r') | Some(b'\n')) {
                    break end;
                }
                from = p + 1;
            };
            let q = after_echo + find(&new[after_echo..], PROMPT.as_bytes())?;
            Some(String::from_utf8_lossy(&new[after_echo..q]).into_owned())
        });
        match answer {
            Ok(Some(a)) => Ok(a.trim_start_matches(['\r', '\n']).trim_end().to_string()),
            Ok(None) => Err(self.exited_err(line)),
            Err(()) => Err(self.timeout_err(line, timeout)),
        }
    }

    /// `start`: begin forwarding.
    pub fn start(&mut self) -> Result<()> {
        self.command("start").map(drop)
    }

    /// `start tx_first N`: send N bursts out of every port first, then forward.
    pub fn start_tx_first(&mut self, bursts: u32) -> Result<()> {
        self.command(&format!("start tx_first {bursts}")).map(drop)
    }

    /// `stop`: stop forwarding and return the forward statistics it prints.
    pub fn stop(&mut self) -> Result<ForwardStats> {
        let answer = self.command("stop")?;
        parse_forward_stats(&answer).ok_or_else(|| Error::Unexpected {
            name: self.name.clone(),
            command: "stop".into(),
            answer,
        })
    }

    /// `clear port stats all`. Reliable while forwarding is stopped; while it runs, diff two
    /// readings with [`PortStats::since`] instead.
    pub fn clear_port_stats(&mut self) -> Result<()> {
        self.command("clear port stats all").map(drop)
    }

    /// `show port stats all`, parsed; one entry per port, in port order.
    pub fn port_stats(&mut self) -> Result<Vec<PortStats>> {
        let answer = self.command("show port stats all")?;
        let stats = parse_port_stats(&answer);
        if stats.len() != self.n_ports {
            return Err(Error::Unexpected {
                name: self.name.clone(),
                command: "show port stats all".into(),
                answer: format!(
                    "{} port blocks, expected {}: {answer}",
                    stats.len(),
                    self.n_ports
                ),
            });
        }
        Ok(stats)
    }

    /// Link status of `port` (`show port info`).
    pub fn link_up(&mut self, port: u16) -> Result<bool> {
        let answer = self.command(&format!("show port info {port}"))?;
        Ok(answer
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("Link status: up")))
    }

    /// Waits until every port's link is up (a vhost-user port is up once the peer finished
    /// the handshake).
    pub fn wait_links_up(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for port in 0..self.n_ports {
            let port = u16::try_from(port).map_err(|_| Error::Config("too many ports".into()))?;
            while !self.link_up(port)? {
                if Instant::now() >= deadline {
                    return Err(self.timeout_err(&format!("link up on port {port}"), timeout));
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// `quit`, then waits (bounded) for the process to exit; kills it if it does not.
    pub fn quit(mut self) -> Result<ExitStatus> {
        let sent = self.write_line("quit");
        let status = self.wait_exit(Duration::from_secs(10));
        match (sent, status) {
            (_, Some(status)) => Ok(status),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Err(self.timeout_err("quit", Duration::from_secs(10))),
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process: SIGINT, up to 5 s to exit, then SIGKILL to its whole group.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_none() {
            signal(self.child.id(), "INT", false);
            if self.wait_exit(GRACE).is_none() {
                if self.group {
                    signal(self.child.id(), "KILL", true);
                }
                let _ = self.child.kill();
                self.exited = self.child.wait().ok();
            }
        }
        // testpmd is gone; the `timeout` wrapper may have left a child only if it was killed
        // itself, and the group kill above covers that.
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.cleanup.run();
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- testpmd {} ({}) last output ---\n{}\n---",
                self.name,
                self.prefix,
                self.tail(40)
            );
        }
        self.kill();
    }
}

/// Sends `sig` to `pid`, or to the process group `pid` leads, through kill(1).
fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits until every path exists and is a Unix socket.
pub fn wait_for_sockets<P: AsRef<Path>>(paths: &[P], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for p in paths {
        let p = p.as_ref();
        loop {
            let is_socket = fs::metadata(p)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::NoSocket {
                    path: p.to_path_buf(),
                    timeout,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// A directory for sockets and logs of one test, removed (with its contents) on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/nfv-<name>-<pid>-<n>`, empty.
    pub fn new(name: &str) -> io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "nfv-{name}-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Counters of one port from `show port stats all`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Port id.
    pub port: u16,
    /// `RX-packets`.
    pub rx_packets: u64,
    /// `RX-missed`.
    pub rx_missed: u64,
    /// `RX-bytes`.
    pub rx_bytes: u64,
    /// `RX-errors`.
    pub rx_errors: u64,
    /// `RX-nombuf`.
    pub rx_nombuf: u64,
    /// `TX-packets`.
    pub tx_packets: u64,
    /// `TX-errors`.
    pub tx_errors: u64,
    /// `TX-bytes`.
    pub tx_bytes: u64,
    /// `Rx-pps` (since the previous `show port stats`).
    pub rx_pps: u64,
    /// `Tx-pps` (since the previous `show port stats`).
    pub tx_pps: u64,
    /// `Rx-bps`.
    pub rx_bps: u64,
    /// `Tx-bps`.
    pub tx_bps: u64,
}

impl PortStats {
    /// Counters accumulated since `earlier`, a previous reading of the same port (rates are
    /// `self`'s). Prefer this to `clear port stats all` while traffic flows: on virtio-user
    /// ports that clear races with the forwarding core and was seen to leave a port's counters
    /// untouched.
    pub fn since(&self, earlier: &PortStats) -> PortStats {
        PortStats {
            port: self.port,
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_missed: self.rx_missed.saturating_sub(earlier.rx_missed),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            rx_errors: self.rx_errors.saturating_sub(earlier.rx_errors),
            rx_nombuf: self.rx_nombuf.saturating_sub(earlier.rx_nombuf),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_errors: self.tx_errors.saturating_sub(earlier.tx_errors),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            ..*self
        }
    }
}

/// Per-port figures of the forward statistics printed by `stop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardPortStats {
    /// Port id (`None` for the accumulated totals).
    pub port: Option<u16>,
    /// `RX-packets`.
    pub rx_packets: u64,
    /// `RX-dropped`.
    pub rx_dropped: u64,
    /// `RX-total`.
    pub rx_total: u64,
    /// `TX-packets`.
    pub tx_packets: u64,
    /// `TX-dropped`.
    pub tx_dropped: u64,
    /// `TX-total`.
    pub tx_total: u64,
}

/// The forward statistics printed by `stop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// One entry per forwarding port.
    pub ports: Vec<ForwardPortStats>,
    /// "Accumulated forward statistics for all ports".
    pub total: ForwardPortStats,
}

/// `Key: value` pairs of a block of testpmd output (`RX-packets: 12  RX-missed: 0 ...`).
fn fields(block: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in block.lines() {
        let mut toks = line.split_whitespace().peekable();
        while let Some(t) = toks.next() {
            if let Some(key) = t.strip_suffix(':') {
                if let Some(v) = toks.peek().and_then(|v| v.parse::<u64>().ok()) {
                    out.insert(key.to_string(), v);
                    toks.next();
                }
            }
        }
    }
    out
}

/// Splits `text` at each occurrence of `marker` followed by a number; returns (number, text up
/// to the next marker or to `end`).
fn blocks<'a>(text: &'a str, marker: &str, end: &str) -> Vec<(u16, &'a str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find(marker) {
        let after = &rest[p + marker.len()..];
        let digits: String = after
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let body_from = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
        let body = &after[body_from..];
        let body_end = [body.find(marker), body.find(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(body.len());
        if let Ok(port) = digits.parse() {
            out.push((port, &body[..body_end]));
        }
        rest = &body[body_end..];
    }
    out
}

/// Parses the answer to `show port stats all`: one [`PortStats`] per "NIC statistics for port"
/// block, in the order printed.
pub fn parse_port_stats(text: &str) -> Vec<PortStats> {
    blocks(text, "NIC statistics for port", "#####")
        .into_iter()
        .map(|(port, body)| {
            let f = fields(body);
            let g = |k: &str| f.get(k).copied().unwrap_or(0);
            PortStats {
                port,
                rx_packets: g("RX-packets"),
                rx_missed: g("RX-missed"),
                rx_bytes: g("RX-bytes"),
                rx_errors: g("RX-errors"),
                rx_nombuf: g("RX-nombuf"),
                tx_packets: g("TX-packets"),
                tx_errors: g("TX-errors"),
                tx_bytes: g("TX-bytes"),
                rx_pps: g("Rx-pps"),
                tx_pps: g("Tx-pps"),
                rx_bps: g("Rx-bps"),
                tx_bps: g("Tx-bps"),
            }
        })
        .collect()
}

fn forward_port(port: Option<u16>, body: &str) -> ForwardPortStats {
    let f = fields(body);
    let g = |k: &str| f.get(k).copied().unwrap_or(0);
    ForwardPortStats {
        port,
        rx_packets: g("RX-packets"),
        rx_dropped: g("RX-dropped"),
        rx_total: g("RX-total"),
        tx_packets: g("TX-packets"),
        tx_dropped: g("TX-dropped"),
        tx_total: g("TX-total"),
    }
}

/// Parses the forward statistics printed by `stop`; `None` when there are none (for example
/// "Packet forwarding not started").
pub fn parse_forward_stats(text: &str) -> Option<ForwardStats> {
    const ACC: &str = "Accumulated forward statistics for all ports";
    let ports: Vec<ForwardPortStats> = blocks(text, "Forward statistics for port", "-----")
        .into_iter()
        .map(|(port, body)| forward_port(Some(port), body))
        .collect();
    let total = text.find(ACC).map(|p| {
        let after = &text[p + ACC.len()..];
        let body = &after[after.find('\n').map(|i| i + 1).unwrap_or(after.len())..];
        let end = body.find("+++++").unwrap_or(body.len());
        forward_port(None, &body[..end])
    });
    match (ports.is_empty(), total) {
        (true, None) => None,
        (_, Some(total)) => Some(ForwardStats { ports, total }),
        (false, None) => {
            let mut total = ForwardPortStats::default();
            for p in &ports {
                total.rx_packets += p.rx_packets;
                total.rx_dropped += p.rx_dropped;
                total.rx_total += p.rx_total;
                total.tx_packets += p.tx_packets;
                total.tx_dropped += p.tx_dropped;
                total.tx_total += p.tx_total;
            }
            Some(ForwardStats { ports, total })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT_STATS: &str = "
  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 122402848  TX-errors: 0          TX-bytes:  7833782272

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:     30600712          Tx-bps:  15667564544
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 153292256  RX-missed: 7          RX-bytes:  9810704384
  RX-errors: 3
  RX-nombuf:  5         
  TX-packets: 0          TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:     11          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
";

    const FWD_STATS: &str = "Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 10             RX-dropped: 1             RX-total: 11
  TX-packets: 153292256      TX-dropped: 750336        TX-total: 154042592
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 20             RX-dropped: 0             RX-total: 20
  TX-packets: 4              TX-dropped: 0             TX-total: 4
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 30             RX-dropped: 1             RX-total: 31
  TX-packets: 153292260      TX-dropped: 750336        TX-total: 154042596
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.";

    #[test]
    fn port_stats_are_parsed_per_port() {
        let s = parse_port_stats(PORT_STATS);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].port, 0);
        assert_eq!(s[0].tx_packets, 122_402_848);
        assert_eq!(s[0].tx_bytes, 7_833_782_272);
        assert_eq!(s[0].tx_pps, 30_600_712);
        assert_eq!(s[0].rx_packets, 0);
        assert_eq!(s[1].port, 1);
        assert_eq!(s[1].rx_packets, 153_292_256);
        assert_eq!(s[1].rx_missed, 7);
        assert_eq!(s[1].rx_errors, 3);
        assert_eq!(s[1].rx_nombuf, 5);
        assert_eq!(s[1].rx_bytes, 9_810_704_384);
        assert_eq!(s[1].rx_pps, 11);
    }

    #[test]
    fn port_stats_of_an_unrelated_answer_are_empty() {
        assert!(parse_port_stats("Command not found\n").is_empty());
    }

    #[test]
    fn forward_stats_have_ports_and_totals() {
        let f = parse_forward_stats(FWD_STATS).expect("stats");
        assert_eq!(f.ports.len(), 2);
        assert_eq!(f.ports[0].port, Some(0));
        assert_eq!(f.ports[0].tx_packets, 153_292_256);
        assert_eq!(f.ports[0].tx_dropped, 750_336);
        assert_eq!(f.ports[0].rx_total, 11);
        assert_eq!(f.ports[1].rx_packets, 20);
        assert_eq!(f.total.port, None);
        assert_eq!(f.total.tx_packets, 153_292_260);
        assert_eq!(f.total.rx_dropped, 1);
    }

    #[test]
    fn stop_without_start_has_no_forward_stats() {
        assert_eq!(parse_forward_stats("Packet forwarding not started\n"), None);
    }

    #[test]
    fn args_for_a_hugepage_frontend() {
        let b = TestpmdBuilder::new("fe")
            .lcores(&[0, 1], 1)
            .memory(Memory::Huge {
                dir: "/h".into(),
                mb: 256,
            })
            .virtio_user("/s/p0", 1, Some("02:00:00:00:00:01"))
            .virtio_user_server("/s/p1", 2, None)
            .forward_mode("mac")
            .eth_peer(0, "02:00:00:00:00:02")
            .txpkts(64);
        b.validate().expect("valid");
        let a = b.args("pfx").join(" ");
        assert!(
            a.starts_with("-l 0,1 --main-lcore 1 --no-pci --file-prefix pfx"),
            "{a}"
        );
        assert!(
            a.contains("--huge-dir /h -m 256 --single-file-segments --in-memory"),
            "{a}"
        );
        assert!(a.contains(
            "--vdev net_virtio_user0,path=/s/p0,queues=1,mac=02:00:00:00:00:01 --vdev net_virtio_user1,path=/s/p1,queues=2,server=1 --"
        ), "{a}");
        assert!(
            a.contains("-- -i --nb-cores=1 --forward-mode=mac --eth-peer=0,02:00:00:00:00:02"),
            "{a}"
        );
        assert!(a.contains("--txpkts=64"), "{a}");
    }

    #[test]
    fn args_for_a_nohuge_backend() {
        let b = TestpmdBuilder::new("be")
            .vhost("/s/a", 1)
            .vhost_client("/s/b", 1);
        let a = b.args("x").join(" ");
        assert!(a.contains("--no-huge -m 256"), "{a}");
        assert!(!a.contains("--single-file-segments"), "{a}");
        assert!(a.contains(
            "--vdev net_vhost0,iface=/s/a,queues=1 --vdev net_vhost1,iface=/s/b,queues=1,client=1"
        ), "{a}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let no_vdev = TestpmdBuilder::new("x");
        assert!(matches!(no_vdev.validate(), Err(Error::Config(_))));
        let bad_mac = TestpmdBuilder::new("x").virtio_user("/s", 1, Some("02:00:00:00:00"));
        assert!(matches!(bad_mac.validate(), Err(Error::Config(_))));
        let bad_main = TestpmdBuilder::new("x").vhost("/s", 1).lcores(&[0, 1], 2);
        assert!(matches!(bad_main.validate(), Err(Error::Config(_))));
        let comma = TestpmdBuilder::new("x").vhost("/s,x", 1);
        assert!(matches!(comma.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn since_subtracts_counters_and_keeps_rates() {
        let s = parse_port_stats(PORT_STATS);
        let mut earlier = s[1];
        earlier.rx_packets -= 100;
        earlier.rx_bytes -= 6400;
        earlier.rx_pps = 1;
        let d = s[1].since(&earlier);
        assert_eq!(d.port, 1);
        assert_eq!(d.rx_packets, 100);
        assert_eq!(d.rx_bytes, 6400);
        assert_eq!(d.tx_packets, 0);
        assert_eq!(d.rx_pps, 11);
        assert_eq!(
            s[0].since(&s[1]).rx_packets,
            0,
            "a counter that went back saturates at 0"
        );
    }

    #[test]
    fn fields_pair_keys_with_numbers() {
        let f = fields("  RX-nombuf:  0   \n  Rx-pps:   12   Rx-bps: 99\nMAC address: 56:48");
        assert_eq!(f["RX-nombuf"], 0);
        assert_eq!(f["Rx-pps"], 12);
        assert_eq!(f["Rx-bps"], 99);
        assert!(!f.contains_key("address"));
    }
}

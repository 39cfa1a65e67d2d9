//! `fastpath-copy` and `fastpath-zerocopy`: guest -> guest through a fast-path channel, the
//! switch off the path. The switch runs in this process (it holds the ports and the hooks that
//! grant the channel; its idle poll thread naps). The two fast-path guests are processes of
//! their own (`bench fastpath-peer`, see [`crate::peer`] for why they cannot be threads here):
//! A's sender pinned to the generator core, B's receiver to the peer core. Two busy threads, as
//! for `switch`.
//!
//! Copy mode: B dedicates a receive queue; A enters its view of it per burst and copies frames
//! in as their device. Zero-copy: A dedicates a transmit queue and writes frames into its own
//! buffers; B enters its read view per burst and reads each frame's header in place (no frame is
//! copied into B's memory). Frames carry a sequence number and a TSC timestamp, read by B.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;
use vswitch::config::Config;
use vswitch::switch::Switch;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::packet;
use crate::pin::Cores;

use super::{Env, Measurement, Scenario, Trial};

const MAC_A: [u8; 6] = packet::mac(0x1a);
const MAC_B: [u8; 6] = packet::mac(0x1b);

/// A peer process and its command pipe; killed on drop.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    what: &'static str,
}

impl Peer {
    fn ask(&mut self, scenario: &str, cmd: &str) -> Result<Value> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| Error::measurement(scenario, format!("{}: {e}", self.what)))?;
        self.answer(scenario)
    }

    fn tell(&mut self, scenario: &str, cmd: &str) -> Result<()> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| Error::measurement(scenario, format!("{}: {e}", self.what)))
    }

    fn answer(&mut self, scenario: &str) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| Error::measurement(scenario, format!("{}: {e}", self.what)))?;
        if n == 0 {
            return Err(Error::measurement(
                scenario,
                format!("{} exited (its error is above)", self.what),
            ));
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Error::measurement(scenario, format!("{}: {e}: {line}", self.what)))?;
        if let Some(e) = v.get("error") {
            return Err(Error::measurement(scenario, format!("{}: {e}", self.what)));
        }
        Ok(v)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The in-process switch of a fast-path run; shut down (and its directory removed) on drop.
pub(crate) struct Running {
    switch: Switch,
    dir: PathBuf,
    // Last: the regions are gone before the hugepages go back.
    _huge: crate::hugepages::Reservation,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.switch.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct FastpathScenario {
    name: &'static str,
    // Peers first: they disconnect before the switch shuts down.
    sender: Peer,
    receiver: Peer,
    _running: Running,
    runs: u32,
}

pub fn open_copy(env: &Env) -> Result<Box<dyn Scenario>> {
    open(env, "fastpath-copy", "copy")
}

pub fn open_zerocopy(env: &Env) -> Result<Box<dyn Scenario>> {
    open(env, "fastpath-zerocopy", "zero-copy")
}

fn mac(m: [u8; 6]) -> String {
    hypervisor_hooks::proto::format_mac(m)
}

#[allow(clippy::too_many_arguments)]
fn spawn_peer(
    name: &str,
    role: &str,
    mode: &str,
    socket: &Path,
    port: &str,
    me: [u8; 6],
    peer: [u8; 6],
    hooks: &Path,
    core: usize,
    what: &'static str,
) -> Result<Peer> {
    let exe = std::env::current_exe().map_err(Error::io("finding our own executable"))?;
    let mut child = Command::new(exe)
        .args([
            "fastpath-peer",
            "--role",
            role,
            "--mode",
            mode,
            "--port",
            port,
        ])
        .arg("--socket")
        .arg(socket)
        .args(["--mac", &mac(me), "--peer", &mac(peer)])
        .arg("--hooks")
        .arg(hooks)
        .args(["--core", &core.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting the {what}")))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(Error::measurement(name, "peer pipes"));
    };
    let mut p = Peer {
        child,
        stdin,
        stdout: BufReader::new(stdout),
        what,
    };
    p.answer(name)?; // ready
    Ok(p)
}

/// The switch of a fast-path scenario, running in this process: poll thread on `pmd_core`
/// (napping when idle), ports `a` and `b` allowed the fast path, the hooks serving on a socket
/// in `dir`, approving this executable's trampoline. Returns it with the hooks socket and the
/// two ports' sockets. `bench icount-worker` starts the same switch.
/// `unscanned`: verify the guests' trampolines by digest only, for this reason (the icount
/// worker under valgrind, see `hypervisor_hooks::verify::Manifest::without_mapping_scan`).
pub(crate) fn start_switch(
    dir: &Path,
    pmd_core: usize,
    name: &str,
    unscanned: Option<&str>,
) -> Result<(Running, PathBuf, [PathBuf; 2])> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    // The guests are this executable: approve its trampoline.
    let manifest = dir.join("manifest");
    let line =
        fastpath_guest::manifest_line().map_err(|e| Error::measurement(name, e.to_string()))?;
    std::fs::write(&manifest, line + "\n").map_err(Error::io("writing the manifest"))?;
    let peer_core = pmd_core.to_string();
    let path = |n: &str| dir.join(n).display().to_string();
    let (sa, sb) = (
        format!("a={}", path("a.sock")),
        format!("b={}", path("b.sock")),
    );
    let (hooks, man) = (path("hooks.sock"), manifest.display().to_string());
    let args = [
        "vswitch",
        "--pmd-cores",
        peer_core.as_str(),
        "--pmd-sleep-max",
        "1000",
        "--vhost-server",
        sa.as_str(),
        "--vhost-server",
        sb.as_str(),
        "--port-fastpath",
        "a",
        "--port-fastpath",
        "b",
        "--hooks",
        hooks.as_str(),
        "--fastpath-manifest",
        man.as_str(),
    ];
    let mut cfg = Config::parse_from(args).map_err(|e| Error::Switch(e.to_string()))?;
    cfg.fastpath_unscanned = unscanned.map(str::to_owned);
    let huge = crate::hugepages::reserve(crate::hugepages::PAGES);
    let switch = Switch::start(&cfg).map_err(Error::Switch)?;
    let running = Running {
        switch,
        dir: dir.to_owned(),
        _huge: huge,
    };
    for p in &cfg.ports {
        running.switch.add_port(p.clone()).map_err(Error::Switch)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&hooks)
        .map_err(Error::io(format!("binding {hooks}")))?;
    running
        .switch
        .serve_hooks(listener)
        .map_err(Error::Switch)?;
    let sock = |i: usize| cfg.ports[i].path.clone();
    Ok((running, PathBuf::from(hooks), [sock(0), sock(1)]))
}

fn open(env: &Env, name: &'static str, mode: &str) -> Result<Box<dyn Scenario>> {
    env.cores.check().map_err(|e| e.unavailable(name))?;
    let Cores { generator, peer } = env.cores;
    let dir = env.work_dir.join(format!("{name}-{}", std::process::id()));
    let (running, hooks, socks) = start_switch(&dir, peer, name, None)?;
    let sock = |i: usize| socks[i].clone();
    let mut receiver = spawn_peer(
        name,
        "receiver",
        mode,
        &sock(1),
        "b",
        MAC_B,
        MAC_A,
        &hooks,
        peer,
        "receiver (guest B)",
    )?;
    let mut sender = spawn_peer(
        name,
        "sender",
        mode,
        &sock(0),
        "a",
        MAC_A,
        MAC_B,
        &hooks,
        generator,
        "sender (guest A)",
    )?;
    sender.ask(name, "open")?;
    receiver.ask(name, "wait-channel")?;
    Ok(Box::new(FastpathScenario {
        name,
        sender,
        receiver,
        _running: running,
        runs: 0,
    }))
}

impl FastpathScenario {
    fn window(&mut self, trial: &Trial, secs: f64) -> Result<Measurement> {
        self.runs += 1;
        let run = self.runs;
        let name = self.name;
        self.receiver.tell(name, &format!("recv {run}"))?;
        let rate = trial.rate_pps.unwrap_or(0.0);
        let s = self.sender.ask(
            name,
            &format!("window {run} {secs} {} {rate}", trial.frame_size),
        )?;
        let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        let (sent, cycles) = (num(&s, "sent"), num(&s, "cycles"));
        let r = self.receiver.ask(name, &format!("stop {sent}"))?;
        let mut latency = Latency::new();
        let pairs: Vec<(u64, u64)> =
            serde_json::from_value(r["latency"].clone()).unwrap_or_default();
        latency.add_pairs(&pairs);
        let hz = notify::tsc::hz();
        Ok(Measurement {
            sent,
            received: num(&r, "received").min(sent),
            seconds: cycles as f64 / hz as f64,
            cycles_per_packet: cycles as f64 / sent.max(1) as f64,
            cycles_of: "sender",
            latency,
            errors: num(&r, "out_of_order"),
            detail: visit_detail(&s["visits"], &r["visits"]),
        })
    }
}

/// The view-switch figures of the side that enters the view (the sender in copy mode, the
/// receiver in zero-copy), as the row's detail: backend, one switch's cost, its share of the
/// visits, frames per visit and work per frame.
fn visit_detail(sender: &Value, receiver: &Value) -> Option<String> {
    let v = [sender, receiver]
        .into_iter()
        .find(|v| v["visits"].as_u64().unwrap_or(0) > 0)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let visits = f("visits");
    let share = f("switch_share") * 100.0;
    Some(format!(
        "{} views: switch {:.0} cycles, {share:.1}% of visit cycles{}, {:.0} frames/visit, {:.1} cycles/frame inside",
        v["backend"].as_str().unwrap_or("?"),
        f("switch_cycles"),
        if share > 10.0 { " (ABOVE 10%)" } else { "" },
        f("frames") / visits.max(1.0),
        f("work_per_frame"),
    ))
}

impl Scenario for FastpathScenario {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        if !trial.warmup.is_zero() {
            self.window(trial, trial.warmup.as_secs_f64())?;
        }
        self.window(trial, trial.duration.as_secs_f64())
    }
}

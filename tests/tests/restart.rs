//! The switch dies (`kill -9`) in the middle of traffic and is started again with the same
//! command line; its peers are not restarted, and traffic must resume.
//!
//! - QEMU guests reconnect by themselves (`-chardev socket,...,reconnect=1`) to the switch's
//!   server-mode ports and set the device up again; the switch restarts each ring from the base
//!   QEMU gives it or, when the ring's used index says the dead switch got further, from there
//!   (vhost-user/src/virtq.rs, `DeviceQueue::new`).
//! - DPDK testpmd's `net_virtio_user` ports listen (`server=1`) and the switch, in client mode,
//!   reconnects to them.
//!
//! Each test prints what it saw (sequence numbers, loss, outage, counters) even when it passes.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nfv_tests::guest_image::GuestImage;
use nfv_tests::hugepages::ensure_hugepages;
use nfv_tests::qemu::{self, tail, GuestParams, Process, TestDir, Vm, VmConfig};
use nfv_tests::testpmd::{self, Memory, PortStats, Testpmd, TestpmdBuilder};
use nfv_tests::{peers, serial};

/// How long a (re)started switch may take to put its ports up.
const SWITCH_START: Duration = Duration::from_secs(20);
/// How long a switch may take to exit after SIGTERM (at the end) or SIGKILL.
const SWITCH_STOP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The switch, started again and again with one command line.

/// A `vswitch` command line and the process currently running it, if any. Each start logs to a
/// file of its own (`vswitch-<n>.log`), so readiness and reports look at one run only.
struct Switch {
    dir: PathBuf,
    args: Vec<OsString>,
    ctl: PathBuf,
    process: Option<Process>,
    /// Logs of the runs before the current one.
    old_logs: Vec<PathBuf>,
    runs: u32,
}

impl Switch {
    fn new(dir: &TestDir, args: Vec<OsString>) -> Switch {
        let ctl = dir.join("ctl.sock");
        let mut all = args;
        all.push("--ctl".into());
        all.push(ctl.clone().into());
        all.extend(["--pmd-cores".into(), "1".into()]);
        Switch {
            dir: dir.path().to_path_buf(),
            args: all,
            ctl,
            process: None,
            old_logs: Vec::new(),
            runs: 0,
        }
    }

    /// Starts the switch and waits until every line of `ready` is in its log (port sockets
    /// bound, or client ports connected) and its control socket answers.
    fn start(&mut self, ready: &[&str]) -> Result<(), String> {
        assert!(self.process.is_none(), "the switch is already running");
        self.runs += 1;
        let log = self.dir.join(format!("vswitch-{}.log", self.runs));
        let mut cmd = Command::new(peers::workspace_bin("vswitch"));
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1");
        let p = Process::spawn(&format!("vswitch#{}", self.runs), &mut cmd, &log)?
            .with_graceful_stop("TERM", SWITCH_STOP);
        self.process = Some(p);
        let p = self.process.as_ref().expect("just set");
        wait_log(p, ready, SWITCH_START)?;
        // After a kill -9 the old control socket file is still there: it counts only once
        // this run answers on it.
        let deadline = Instant::now() + SWITCH_START;
        while self.ctl("show").is_err() {
            if Instant::now() >= deadline || !p.is_running() {
                return Err(format!(
                    "{}: control socket not answering within {SWITCH_START:?}",
                    p.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn process(&self) -> &Process {
        self.process.as_ref().expect("the switch is not running")
    }

    /// `kill -9`, and reaps it. Returns the moment the signal went.
    fn kill9(&mut self) -> Instant {
        let p = self.process.take().expect("the switch is not running");
        let at = Instant::now();
        p.signal("KILL")
            .unwrap_or_else(|e| panic!("kill -9 the switch: {e}"));
        let status = p.wait_exit(SWITCH_STOP);
        assert!(status.is_some(), "{} survived SIGKILL", p.name());
        self.old_logs.push(p.log_path().to_path_buf());
        at
    }

    /// `vswitchctl --ctl CTL <what> --json`, bounded in time.
    fn ctl(&self, what: &str) -> Result<serde_json::Value, String> {
        let out = Command::new("timeout")
            .arg("5")
            .arg(peers::workspace_bin("vswitchctl"))
            .arg("--ctl")
            .arg(&self.ctl)
            .arg(what)
            .arg("--json")
            .output()
            .map_err(|e| format!("run vswitchctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "vswitchctl {what}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("vswitchctl {what} --json: {e}"))
    }

    /// Drop counters of port `name` that are not zero.
    fn drops(&self, name: &str) -> Result<Vec<(String, u64)>, String> {
        let v = self.ctl("stats")?;
        let port = v["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .ok_or_else(|| format!("no port {name} in stats: {v}"))?;
        Ok(port["drops"]
            .as_object()
            .map(|d| {
                d.iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                    .filter(|(_, n)| *n > 0)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Per port: packets in and out, and the drops that are not zero.
    fn stats_line(&self) -> String {
        let v = match self.ctl("stats") {
            Ok(v) => v,
            Err(e) => return e,
        };
        let ports = v["ports"].as_array().cloned().unwrap_or_default();
        ports
            .iter()
            .map(|p| {
                let name = p["name"].as_str().unwrap_or("?");
                format!(
                    "{name} rx={} tx={} drops={:?}",
                    p["rx_packets"],
                    p["tx_packets"],
                    self.drops(name).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Command line, counters and the logs of this run and the earlier ones.
    fn report(&self) -> String {
        let mut r = format!("--- vswitch {:?} ---\n", self.args);
        for (i, log) in self.old_logs.iter().enumerate() {
            let text = std::fs::read(log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            r.push_str(&format!(
                "--- run {} (killed) log {} (last 30 lines) ---\n{}\n",
                i + 1,
                log.display(),
                tail(&text, 30)
            ));
        }
        match &self.process {
            Some(p) => {
                let state = match p.exit_status() {
                    None => format!("running; stats: {}", self.stats_line()),
                    Some(s) => format!("exited ({s})"),
                };
                r.push_str(&format!(
                    "--- current run ({state}) log {} (last 60 lines) ---\n{}\n",
                    p.log_path().display(),
                    p.log_tail(60)
                ));
            }
            None => r.push_str("--- no run is current (killed, not restarted) ---\n"),
        }
        r
    }

    /// Lines of the current run's log that contain `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.process
            .as_ref()
            .map(|p| {
                p.log()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `base B -> used U` for each of the switch's "vring base B differs from the ring's used index
/// U" log lines.
fn resumed_rings(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let num = |after: &str| {
                l.split(after)
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .unwrap_or("?")
                    .to_owned()
            };
            format!("base {} -> used {}", num("vring base "), num("used index "))
        })
        .collect()
}

/// Waits until `p`'s log holds every one of `needles` (a needle repeated must appear that many
/// times), failing early when `p` exits.
fn wait_log(p: &Process, needles: &[&str], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let log = p.log();
        let missing: Vec<&str> = needles
            .iter()
            .copied()
            .filter(|n| log.matches(n).count() < needles.iter().filter(|m| *m == n).count())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let why = match p.exit_status() {
            Some(s) => format!("it exited ({s})"),
            None if Instant::now() >= deadline => format!("not within {timeout:?}"),
            None => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        return Err(format!(
            "{}: log lines {missing:?} missing: {why}\n--- {} (last 40 lines) ---\n{}",
            p.name(),
            p.log_path().display(),
            p.log_tail(40)
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// QEMU guests across a restart.

/// One `NFV: REPLY seq=N time=T [lost=K]` line of the pinging guest.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reply {
    seq: u64,
    /// Round-trip time in ms.
    time_ms: f64,
    lost: u64,
}

/// The reply lines in `text`, in order.
fn parse_replies(text: &str) -> Vec<Reply> {
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find("NFV: REPLY seq=")? + "NFV: REPLY seq=".len()..];
            let seq = rest.split_whitespace().next()?.parse().ok()?;
            let word = |key: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(key));
            let lost = word("lost=").and_then(|n| n.parse().ok()).unwrap_or(0);
            let time_ms = word("time=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(f64::NAN);
            Some(Reply { seq, time_ms, lost })
        })
        .collect()
}

#[test]
fn reply_lines_parse() {
    let text = "NFV: PINGLOOP peer=10.0.0.2\r\nNFV: REPLY seq=0 time=1.2 ms\n\
                [   3.1] noise\nNFV: TIMEOUT\nNFV: REPLY seq=7 time=0.9 ms lost=6\nNFV: REPLY seq=";
    assert_eq!(
        parse_replies(text),
        vec![
            Reply {
                seq: 0,
                time_ms: 1.2,
                lost: 0
            },
            Reply {
                seq: 7,
                time_ms: 0.9,
                lost: 6
            }
        ]
    );
}

/// Waits until the console holds at least `n` reply lines after `offset`; returns them.
fn wait_replies(vm: &Vm, offset: usize, n: usize, timeout: Duration) -> Result<Vec<Reply>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let console = std::fs::read(vm.console_path()).unwrap_or_default();
        let after = String::from_utf8_lossy(console.get(offset..).unwrap_or_default());
        // Complete lines only.
        let complete = after.rfind('\n').map(|e| &after[..e]).unwrap_or("");
        let replies = parse_replies(complete);
        if replies.len() >= n {
            return Ok(replies);
        }
        let why = if !vm.is_running() {
            "QEMU exited".to_owned()
        } else if Instant::now() >= deadline {
            format!("not within {timeout:?}")
        } else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        return Err(format!(
            "{}: {n} reply line(s) wanted after console offset {offset}, {} seen: {why}\n{}",
            vm.name(),
            replies.len(),
            vm.failure_report()
        ));
    }
}

/// Kill-and-restart rounds with the guests running throughout.
const QEMU_ROUNDS: usize = 2;
/// Replies that count as "traffic flows" (the guest pings 5 times a second).
const STEADY_REPLIES: usize = 10;

/// VM1 pings VM2 through the switch; the switch is killed and restarted twice. QEMU 7.2 sets
/// the device up again on each reconnect, giving as base of each ring the used index it finds
/// there (it cannot ask the dead backend), so the switch's own fallback to the used index is
/// not needed here; requests the guest queued while the switch was dead go out once it is back.
#[test]
fn qemu_guests_keep_pinging_across_a_vswitch_kill_9() {
    let _heavy = serial::heavy();
    let Some(image): Option<GuestImage> = qemu::require_qemu() else {
        return;
    };
    let started = Instant::now();
    let dir = TestDir::new("restart-qemu").unwrap_or_else(|e| panic!("{e}"));
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    let mut sw = Switch::new(
        &dir,
        vec![
            "--vhost-server".into(),
            format!("vm1={}", s1.display()).into(),
            "--vhost-server".into(),
            format!("vm2={}", s2.display()).into(),
        ],
    );
    let ready = ["port vm1: listening on", "port vm2: listening on"];
    sw.start(&ready).unwrap_or_else(|e| panic!("{e}"));

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
    let qemu_pids = (vm1.process().pid(), vm2.process().pid());
    let fail = |what: String, sw: &Switch| -> ! {
        panic!(
            "{what}\n{}{}{}",
            vm1.failure_report(),
            vm2.failure_report(),
            sw.report()
        )
    };

    // Traffic flows before the first kill.
    let before = wait_replies(&vm1, 0, STEADY_REPLIES, Duration::from_secs(120))
        .unwrap_or_else(|e| fail(e, &sw));
    eprintln!(
        "replies flowing {:.1} s after the start: seq {}..{}",
        started.elapsed().as_secs_f64(),
        before[0].seq,
        before[before.len() - 1].seq
    );

    let mut summary = Vec::new();
    for round in 1..=QEMU_ROUNDS {
        // The last reply before the kill.
        let last = *parse_replies(&vm1.console())
            .last()
            .expect("replies were seen");
        let mark = vm1.console_len();
        let killed = sw.kill9();
        // The guest notices: a second without replies.
        vm1.wait_for_after(mark, "NFV: TIMEOUT", Duration::from_secs(10))
            .unwrap_or_else(|e| fail(format!("round {round}: no TIMEOUT after kill -9: {e}"), &sw));
        let outage_seen = killed.elapsed();

        let restart_mark = vm1.console_len();
        sw.start(&ready).unwrap_or_else(|e| fail(e, &sw));
        let restarted = killed.elapsed();
        let after = wait_replies(&vm1, restart_mark, STEADY_REPLIES, Duration::from_secs(60))
            .unwrap_or_else(|e| {
                fail(
                    format!(
                        "round {round}: replies did not resume after the restart (last before \
                         the kill: seq {})\n{e}",
                        last.seq
                    ),
                    &sw,
                )
            });
        // Replies between the kill and the restart (one may still have been on its way).
        let between = parse_replies(&String::from_utf8_lossy(
            std::fs::read(vm1.console_path())
                .unwrap_or_default()
                .get(mark..restart_mark)
                .unwrap_or_default(),
        ));
        let first = after[0];
        let resumed_after = killed.elapsed();
        assert!(
            first.seq > last.seq,
            "round {round}: ping's sequence went back ({} after {}): was the guest's ping \
             restarted?\n{}",
            first.seq,
            last.seq,
            sw.report()
        );
        let lost = (first.seq - last.seq - 1).saturating_sub(between.len() as u64);
        let lines_lost: u64 = between.iter().chain(&after[..1]).map(|r| r.lost).sum();
        assert!(
            vm1.is_running() && vm2.is_running(),
            "a QEMU exited during round {round}\n{}{}{}",
            vm1.failure_report(),
            vm2.failure_report(),
            sw.report()
        );
        // Replies resume steadily: the last STEADY_REPLIES came without another gap.
        let gaps: Vec<Reply> = after[1..].iter().copied().filter(|r| r.lost > 0).collect();
        let resumed = sw.log_lines("resuming from the used index");
        let running = sw.log_lines(" ring, size ");
        let line = format!(
            "round {round}: last reply before kill -9 seq {}; TIMEOUT seen {:.1} s after the \
             kill; switch restarted {:.1} s after it; first reply after: seq {} ({:.1} s after \
             the kill, round trip {:.0} ms); {lost} requests unanswered (guest's lost= sum {lines_lost}); later \
             gaps {gaps:?}; new switch: {} queue(s) started, {} resumed from the used index \
             ({:?}); stats {}",
            last.seq,
            outage_seen.as_secs_f64(),
            restarted.as_secs_f64(),
            first.seq,
            resumed_after.as_secs_f64(),
            first.time_ms,
            running.len(),
            resumed.len(),
            resumed_rings(&resumed),
            sw.stats_line(),
        );
        eprintln!("{line}");
        assert!(
            gaps.is_empty(),
            "round {round}: replies resumed but then lost more: {gaps:?}\n{line}\n{}",
            sw.report()
        );
        summary.push(line);
    }
    assert_eq!(
        (vm1.process().pid(), vm2.process().pid()),
        qemu_pids,
        "the guests were restarted"
    );

    // A clean end: guests gone, the switch leaves on SIGTERM.
    drop(vm1);
    drop(vm2);
    let p = sw.process();
    p.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    let status = p
        .wait_exit(SWITCH_STOP)
        .unwrap_or_else(|| panic!("vswitch ignored SIGTERM\n{}", sw.report()));
    eprintln!(
        "qemu restart test: {} round(s), switch exited {status} on SIGTERM, {:.1} s in all\n{}",
        QEMU_ROUNDS,
        started.elapsed().as_secs_f64(),
        summary.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// testpmd's virtio-user ports in server mode, the switch in client mode.

const MAC0: &str = "02:00:00:00:00:01";
const MAC1: &str = "02:00:00:00:00:02";
/// Bursts each port sends to start the forwarding loop.
const TX_FIRST_BURSTS: u32 = 8;
/// Packets each port must receive within one sampling window for traffic to count as flowing.
const FLOWING: u64 = 1000;
/// Sampling window.
const WINDOW: Duration = Duration::from_secs(2);

fn port_stats(t: &mut Testpmd) -> Vec<PortStats> {
    t.port_stats().unwrap_or_else(|e| panic!("{e}"))
}

/// Received packets per port over one window.
fn rx_over_window(t: &mut Testpmd) -> [u64; 2] {
    let a = port_stats(t);
    std::thread::sleep(WINDOW);
    let b = port_stats(t);
    [b[0].since(&a[0]).rx_packets, b[1].since(&a[1]).rx_packets]
}

/// testpmd's own story for the report: what it printed about the vhost-user connections.
fn testpmd_vhost_lines(t: &Testpmd) -> String {
    t.output()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("virtio_user") || l.contains("vhost") || l.contains("link state")
        })
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The switch's ports, in testpmd's port order.
const PORTS: [&str; 2] = ["p0", "p1"];

/// Both sides' logs, for a failure message.
fn diagnostics(sw: &Switch, t: &Testpmd) -> String {
    format!(
        "{}\n--- testpmd's vhost-user lines ---\n{}\n--- testpmd (last 40 lines) ---\n{}",
        sw.report(),
        testpmd_vhost_lines(t),
        t.tail(40)
    )
}

/// testpmd forwards between its two ports through the switch (mac mode, each port addressing
/// the other); the switch is killed and restarted, and reconnects to testpmd's sockets.
///
/// What DPDK 22.11's virtio-user (server mode) sends on the new connection, seen with strace on
/// the switch: SET_VRING_ENABLE 0 for both rings and GET_VRING_BASE for both (its own device
/// reset, on a connection where nothing is negotiated yet: the switch refuses the enables with a
/// warning, harmlessly, and answers base 0), then the whole setup again without SET_OWNER:
/// GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_VRING_CALL x2, SET_FEATURES, SET_STATUS,
/// GET_STATUS, SET_MEM_TABLE, per ring SET_VRING_NUM / SET_VRING_BASE 0 / SET_VRING_ADDR /
/// SET_VRING_KICK, SET_VRING_ENABLE 1 x2, SET_STATUS DRIVER_OK. Base 0 is wrong for rings that
/// carried traffic: the switch resumes each from its used index instead.
///
/// The switch reconnects its two ports one after the other. Frames it takes from the first
/// port's transmit ring before the second port's receive ring runs are dropped (counted as
/// `tx_queue_not_running`); when that empties one of testpmd's two forwarding loops, that
/// direction stays silent, since testpmd only forwards what it receives. So: traffic must
/// resume by itself in at least one direction, a silent direction must be explained by those
/// drops, and a new `start tx_first` must then flow both ways.
#[test]
fn testpmd_traffic_resumes_after_vswitch_kill_9_in_client_mode() {
    let Some(binary) = peers::require("dpdk-testpmd", "DPDK testpmd, apt-get install dpdk") else {
        return;
    };
    let _heavy = serial::heavy();
    let started = Instant::now();
    let dir = TestDir::new("restart-testpmd").unwrap_or_else(|e| panic!("{e}"));
    let socks = [dir.join("p0.sock"), dir.join("p1.sock")];
    let memory = Memory::huge_or_not(ensure_hugepages(128), 256);
    let mut t = TestpmdBuilder::new("srv")
        .binary(&binary)
        .lcores(&[0, 1], 1)
        .memory(memory)
        .virtio_user_server(&socks[0], 1, Some(MAC0))
        .virtio_user_server(&socks[1], 1, Some(MAC1))
        .forward_mode("mac")
        .eth_peer(0, MAC1)
        .eth_peer(1, MAC0)
        .txpkts(64)
        .lifetime(Duration::from_secs(240))
        .spawn()
        .unwrap_or_else(|e| panic!("start testpmd: {e}"));
    // testpmd's virtio-user in server mode blocks in accept() on each port's socket in turn
    // while it starts: the switch must connect to p0 before p1's socket exists.
    testpmd::wait_for_sockets(&socks[..1], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", t.tail(30)));

    let mut sw = Switch::new(
        &dir,
        vec![
            "--vhost-client".into(),
            format!("p0={}", socks[0].display()).into(),
            "--vhost-client".into(),
            format!("p1={}", socks[1].display()).into(),
            // Every queue start and stop, and where each ring resumed.
            "--log".into(),
            "debug".into(),
        ],
    );
    // Both ports connected and their four queues running.
    let ready = [
        "port p0: frontend connected",
        "port p1: frontend connected",
        " ring, size ",
        " ring, size ",
        " ring, size ",
        " ring, size ",
    ];
    sw.start(&ready)
        .unwrap_or_else(|e| panic!("{e}\n--- testpmd ---\n{}", t.tail(40)));
    t.wait_links_up(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", sw.report()));

    t.start_tx_first(TX_FIRST_BURSTS)
        .unwrap_or_else(|e| panic!("start tx_first: {e}"));
    std::thread::sleep(Duration::from_secs(1));
    let before = rx_over_window(&mut t);
    assert!(
        before.iter().all(|&n| n > FLOWING),
        "no traffic before the kill: rx {before:?} in {WINDOW:?}\n{}\n--- testpmd ---\n{}",
        sw.report(),
        t.tail(40)
    );

    let killed = sw.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let dead = rx_over_window(&mut t);
    assert_eq!(
        dead,
        [0, 0],
        "testpmd still received with the switch killed: is something else forwarding?"
    );

    sw.start(&ready).unwrap_or_else(|e| {
        panic!(
            "the restarted switch did not get both ports running: {e}\n{}",
            diagnostics(&sw, &t)
        )
    });
    let reconnected = killed.elapsed();
    // Let the rings resume, then measure, with no help from testpmd.
    std::thread::sleep(Duration::from_millis(500));
    let after = rx_over_window(&mut t);
    let resumed = sw.log_lines("resuming from the used index");
    let report = format!(
        "testpmd rx [port 0, port 1] per {WINDOW:?}: before the kill {before:?}, switch dead \
         {dead:?}, after the restart {after:?}; the new switch had both ports connected and \
         their queues running {:.1} s after the kill; {} ring(s) resumed from the used index: \
         {:?}; switch stats {}",
        reconnected.as_secs_f64(),
        resumed.len(),
        resumed_rings(&resumed),
        sw.stats_line()
    );
    eprintln!("{report}");
    assert!(
        after.iter().any(|&n| n > FLOWING),
        "no traffic at all after the restart: {report}\n{}",
        diagnostics(&sw, &t)
    );
    // A direction whose frames all went while its destination port was still reconnecting
    // stays silent: testpmd forwards what it receives and sends nothing of its own. The switch
    // must have counted those frames.
    let mut stalled = Vec::new();
    for (i, &n) in after.iter().enumerate() {
        if n > FLOWING {
            continue;
        }
        let port = PORTS[i];
        let drops = sw.drops(port).unwrap_or_else(|e| panic!("{e}"));
        let not_running = drops
            .iter()
            .find(|(k, _)| k == "tx_queue_not_running")
            .map_or(0, |(_, n)| *n);
        assert!(
            not_running > 0,
            "port {i} receives nothing after the restart, and the switch dropped no frame for \
             it for want of a running queue: where did its traffic go? {report}\n{}",
            diagnostics(&sw, &t)
        );
        stalled.push(format!(
            "port {i} ({port}) stalled: the switch dropped {not_running} frame(s) for it \
             before its queue ran again (tx_queue_not_running)"
        ));
    }

    // Both ports' rings work after the reconnect: fresh frames go both ways at full rate.
    t.stop().unwrap_or_else(|e| panic!("stop: {e}"));
    t.start_tx_first(TX_FIRST_BURSTS)
        .unwrap_or_else(|e| panic!("start tx_first: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    let reseeded = rx_over_window(&mut t);
    assert!(
        reseeded.iter().all(|&n| n > FLOWING),
        "after the restart, a new `start tx_first` does not flow both ways: rx {reseeded:?}; \
         {report}\n{}",
        diagnostics(&sw, &t)
    );
    eprintln!(
        "after the restart: {}; after a new `start tx_first`: rx {reseeded:?} per {WINDOW:?}",
        if stalled.is_empty() {
            "both directions went on by themselves".to_owned()
        } else {
            stalled.join("; ")
        }
    );

    t.stop().unwrap_or_else(|e| panic!("stop: {e}"));
    t.quit().unwrap_or_else(|e| panic!("quit: {e}"));
    let p = sw.process();
    p.signal("TERM").unwrap_or_else(|e| panic!("{e}"));
    let status = p
        .wait_exit(SWITCH_STOP)
        .unwrap_or_else(|| panic!("vswitch ignored SIGTERM\n{}", sw.report()));
    eprintln!(
        "testpmd restart test: switch exited {status} on SIGTERM; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

//! Ports coming and going around a running switch: guests that disconnect and reconnect, or
//! give up in the middle of the vhost-user negotiation; ports added and deleted through the
//! control socket; client-mode ports that connect to a listening frontend and reconnect by
//! themselves; and the switch's own end on SIGTERM.
#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use vhost_user::driver::{DriverMemory, DriverQueue};
use vhost_user::frontend::Frontend;
use vhost_user::guest::{Guest, GuestConfig};
use vhost_user::message::protocol_features as pf;
use vhost_user::message::{Header, Request, VHOST_USER_F_PROTOCOL_FEATURES};
use vswitch::config::{PortMode, PortSpec};
use vswitch::ctl::{CtlError, PortState};

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

/// One exchange A -> B and B -> A of a frame each, checked at both ends.
fn ping_pong(a: &mut impl Nic, b: &mut impl Nic, tag: u64) {
    let ab = frame(mac(B), mac(A), &payload(tag, 64));
    let ba = frame(mac(A), mac(B), &payload(tag + 1, 64));
    send_one(a, &ab);
    let got = recv_n(b, 1, RECV_TIMEOUT);
    assert_eq!(got, vec![ab], "A -> B ({tag}): {}", describe(&got));
    send_one(b, &ba);
    let got = recv_n(a, 1, RECV_TIMEOUT);
    assert_eq!(got, vec![ba], "B -> A ({tag}): {}", describe(&got));
}

/// What the background traffic between A and B amounted to.
#[derive(Debug, Default)]
struct Pumped {
    sent: u64,
    received: u64,
    /// Frames at B that were from A but not the next in sequence.
    out_of_order: u64,
    /// Frames at B and at A from other sources (C's broadcasts).
    foreign_at_b: u64,
    foreign_at_a: u64,
}

/// A thread that sends numbered unicast frames A -> B as fast as B keeps up (never more in
/// flight than B's ring holds), until `stop`; then it drains and hands the guests back.
fn pump(
    mut a: Guest,
    mut b: Guest,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> JoinHandle<(Guest, Guest, Pumped)> {
    std::thread::spawn(move || {
        const WINDOW: u64 = 128;
        let mut p = Pumped::default();
        let mut scratch = Vec::new();
        let mut drain_deadline = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + RECV_TIMEOUT);
            }
            if let Some(d) = drain_deadline {
                if p.received == p.sent || Instant::now() > d {
                    break;
                }
            }
            if !stopping {
                let mut pushed = false;
                while p.sent - p.received < WINDOW {
                    let f = frame(mac(B), mac(A), &payload(p.sent, 100));
                    if !a.tx.push_tx(&f) {
                        break;
                    }
                    p.sent += 1;
                    pushed = true;
                }
                if pushed {
                    a.tx.publish();
                }
            }
            a.tx.reclaim();
            b.rx.recv(usize::MAX, &mut scratch, |f| {
                if f.get(6..12) != Some(&mac(A)[..]) {
                    p.foreign_at_b += 1;
                    return;
                }
                if f != frame(mac(B), mac(A), &payload(p.received, 100)).as_slice() {
                    p.out_of_order += 1;
                }
                p.received += 1;
            });
            a.rx.recv(usize::MAX, &mut scratch, |_| p.foreign_at_a += 1);
            progress.store(p.received, Ordering::Relaxed);
        }
        (a, b, p)
    })
}

/// Sets the flag when dropped, panics included.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn guest_reconnecting_disturbs_no_other_port() {
    const CYCLES: u64 = 5;
    let _heavy = heavy();
    let sw = SwitchBuilder::new("reconnect")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let hello = frame(BROADCAST, mac(B), b"b");
    send_one(&mut b, &hello);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello]);

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let pumping = pump(a, b, stop.clone(), progress.clone());
    // A failing assertion below must not leave the pump spinning on a core.
    let _stop_pump = StopOnDrop(stop.clone());

    for cycle in 0..CYCLES {
        // Traffic flows before C comes, while C is there, and after C has gone.
        let before = progress.load(Ordering::Relaxed);
        assert!(
            wait_for(RECV_TIMEOUT, || progress.load(Ordering::Relaxed)
                > before + 1000),
            "cycle {cycle}: A -> B traffic stalled before C connected"
        );
        let mut c = connect(&sw.sock("c"), "c");
        sw.wait_port_state("c", PortState::Running);
        send_one(&mut c, &frame(BROADCAST, mac(C), &payload(cycle, 50)));
        let during = progress.load(Ordering::Relaxed);
        assert!(
            wait_for(RECV_TIMEOUT, || progress.load(Ordering::Relaxed)
                > during + 1000),
            "cycle {cycle}: A -> B traffic stalled while C was connected"
        );
        let leaked = recv_n(&mut c, 1, Duration::from_millis(50));
        assert!(
            leaked.is_empty(),
            "C received A -> B unicast: {}",
            describe(&leaked)
        );
        drop(c);
        sw.wait_port_state("c", PortState::Listening);
    }
    let after = progress.load(Ordering::Relaxed);
    assert!(
        wait_for(RECV_TIMEOUT, || progress.load(Ordering::Relaxed)
            > after + 1000),
        "A -> B traffic stalled after C's last disconnection"
    );
    stop.store(true, Ordering::Relaxed);
    let (_a, _b, p) = pumping.join().expect("pump thread");
    eprintln!("A -> B across {CYCLES} reconnections of C: {p:?}");

    assert_eq!(p.out_of_order, 0, "{p:?}");
    assert_eq!(p.received, p.sent, "frames lost between A and B: {p:?}");
    assert_eq!(p.foreign_at_b, CYCLES, "C's broadcasts at B: {p:?}");
    assert_eq!(p.foreign_at_a, CYCLES, "C's broadcasts at A: {p:?}");
    let stats = sw.stats();
    for name in ["a", "b"] {
        let st = stats.ports.iter().find(|s| s.name == name).expect("port");
        assert_eq!(
            st.drops.values().sum::<u64>(),
            0,
            "port {name} dropped frames while C came and went: {st:?}"
        );
    }
    let ast = stats.ports.iter().find(|s| s.name == "a").expect("a");
    assert_eq!(ast.rx_packets, p.sent, "{ast:?}");
}

/// How far a frontend gets in the setup before it goes away.
#[derive(Debug, Clone, Copy)]
enum Partial {
    /// Connects and closes.
    Nothing,
    /// Half of a message header.
    HalfHeader,
    /// A header that announces a body, and part of the body.
    TruncatedBody,
    /// A request code the protocol does not have.
    UnknownRequest,
    /// The first `n` steps of the setup QEMU or virtio-user performs (see `setup_steps`).
    Steps(usize),
}

/// The setup steps `Frontend::setup_net` takes, one by one: 11 of them.
const SETUP_STEPS: usize = 11;

/// A frontend that went through `how` and is still connected.
struct HalfGuest {
    frontend: Frontend,
    _queues: Vec<DriverQueue>,
    // Last: the queues point into it.
    _mem: DriverMemory,
}

fn half_setup(path: &Path, how: Partial) -> HalfGuest {
    let mut frontend = Frontend::connect(path).expect("connect");
    let mut mem = DriverMemory::new("half", 4 << 20, false).expect("memory");
    let q0 = DriverQueue::new(&mut mem, 256, 2048, 12).expect("queue 0");
    let q1 = DriverQueue::new(&mut mem, 256, 2048, 12).expect("queue 1");
    let mut raw = |bytes: &[u8]| {
        let mut s: &UnixStream = frontend.connection().socket();
        s.write_all(bytes).expect("write");
    };
    match how {
        Partial::Nothing => {}
        Partial::HalfHeader => {
            let h = Header::request(Request::GET_FEATURES, 0, false).to_bytes();
            raw(&h[..h.len() / 2]);
        }
        Partial::TruncatedBody => {
            let h = Header::request(Request::SET_FEATURES, 8, false).to_bytes();
            raw(&h);
            raw(&[1, 2, 3]);
        }
        Partial::UnknownRequest => {
            let mut h = Header::request(Request::GET_FEATURES, 0, false).to_bytes();
            h[..4].copy_from_slice(&0xdead_u32.to_le_bytes());
            raw(&h);
        }
        Partial::Steps(n) => {
            let features = GuestConfig::default().features | VHOST_USER_F_PROTOCOL_FEATURES;
            let queues = [(0u8, q0.layout()), (1u8, q1.layout())];
            for step in 0..n {
                let r = match step {
                    0 => frontend.get_features().map(drop),
                    1 => frontend
                        .get_protocol_features()
                        .and_then(|p| frontend.set_protocol_features(p & (pf::REPLY_ACK | pf::MQ))),
                    2 => frontend.set_owner(),
                    3 => frontend.set_features(features),
                    4 => frontend.set_mem_table(&[(mem.region_desc(), mem.fd().as_fd())]),
                    5 | 8 => {
                        let (i, l) = queues[usize::from(step == 8)];
                        frontend
                            .set_vring_num(u32::from(i), u32::from(l.size))
                            .and_then(|()| frontend.set_vring_base(u32::from(i), 0))
                            .and_then(|()| frontend.set_vring_addr(u32::from(i), &l))
                    }
                    6 | 9 => {
                        let i = queues[usize::from(step == 9)].0;
                        frontend
                            .set_vring_call(i, None)
                            .and_then(|()| frontend.set_vring_kick(i, None))
                    }
                    7 | 10 => {
                        let i = queues[usize::from(step == 10)].0;
                        frontend.set_vring_enable(u32::from(i), true)
                    }
                    _ => unreachable!("{SETUP_STEPS} steps"),
                };
                r.unwrap_or_else(|e| panic!("setup step {step}: {e}"));
            }
        }
    }
    HalfGuest {
        frontend,
        _queues: vec![q0, q1],
        _mem: mem,
    }
}

#[test]
fn guest_leaving_mid_negotiation_leaves_the_switch_serving() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("mid-negotiation")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    ping_pong(&mut a, &mut b, 0);

    let mut variants = vec![
        Partial::Nothing,
        Partial::HalfHeader,
        Partial::TruncatedBody,
        Partial::UnknownRequest,
    ];
    variants.extend((1..=SETUP_STEPS).map(Partial::Steps));
    for (i, how) in variants.into_iter().enumerate() {
        let half = half_setup(&sw.sock("c"), how);
        // While it hangs there half set up, the others forward and the control socket answers.
        ping_pong(&mut a, &mut b, 10 * i as u64 + 2);
        assert!(
            sw.port_info("c").is_some(),
            "{how:?}: port c vanished from show"
        );
        drop(half);
        sw.wait_port_state("c", PortState::Listening);
        assert!(sw.is_running(), "{how:?}: the switch died\n{}", sw.report());
        ping_pong(&mut a, &mut b, 10 * i as u64 + 4);
    }

    // A whole guest on the port the others abandoned works.
    let mut c = connect(&sw.sock("c"), "c");
    let hello = frame(BROADCAST, mac(C), b"c");
    send_one(&mut c, &hello);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello.clone()]);
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT), vec![hello]);
    let to_c = frame(mac(C), mac(A), b"to c");
    send_one(&mut a, &to_c);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![to_c]);
    let stats = sw.stats();
    for st in stats.ports.iter().filter(|s| s.name != "c") {
        assert_eq!(st.drops.values().sum::<u64>(), 0, "{st:?}");
    }
}

#[test]
fn frontend_stalled_mid_message_blocks_only_its_own_port() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("stalled")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    // C announces a 64-byte body and never sends it: its session waits on the socket.
    let mut stalled = half_setup(&sw.sock("c"), Partial::Steps(3));
    {
        let h = Header::request(Request::SET_FEATURES, 64, false).to_bytes();
        let mut s: &UnixStream = stalled.frontend.connection().socket();
        s.write_all(&h).expect("write");
    }
    let started = Instant::now();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    for i in 0..20 {
        ping_pong(&mut a, &mut b, 2 * i);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the other ports were slowed by the stalled one: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sw.port_info("c").map(|p| p.state),
        Some(PortState::Connected)
    );
    drop(stalled);
    sw.wait_port_state("c", PortState::Listening);
}

/// A server-mode port as `add-port` carries it, every optional setting at its default (built
/// from JSON as the control socket receives it, so new optional fields need no change here).
fn server_spec(name: &str, path: &Path) -> PortSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "mode": "server",
        "path": path,
    }))
    .expect("a valid port spec")
}

#[test]
fn ports_added_and_deleted_at_run_time() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("add-del")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let c_sock = sw.dir.join("c.sock");

    // add-port through vswitchctl, as an operator would.
    let out = sw.vswitchctl(&[
        "add-port",
        "--name",
        "c",
        "--server",
        c_sock.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "add-port: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_socket(&c_sock), "add-port did not create {c_sock:?}");
    let mut c = connect(&c_sock, "c");
    sw.wait_port_state("c", PortState::Running);

    // The new port gets flooded traffic, and its guest's MAC is learned.
    let hello_a = frame(BROADCAST, mac(A), b"a");
    send_one(&mut a, &hello_a);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![hello_a.clone()]);
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT), vec![hello_a]);
    let hello_c = frame(BROADCAST, mac(C), b"c");
    send_one(&mut c, &hello_c);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello_c.clone()]);
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT), vec![hello_c]);
    let to_c = frame(mac(C), mac(A), b"unicast to c");
    let m = marker(mac(A), "1");
    send(&mut a, &[to_c.clone(), m.clone()]);
    assert_eq!(recv_until(&mut c, &m, "c"), vec![to_c]);
    assert!(
        recv_until(&mut b, &m, "b").is_empty(),
        "unicast to c leaked"
    );
    let fdb = sw.fdb();
    assert!(
        fdb.entries.iter().any(
            |e| e.mac == mac(C) && fdb.port_names.get(&e.port).map(String::as_str) == Some("c")
        ),
        "{fdb:?}"
    );

    // Refusals: a second port of that name; deleting a port that does not exist.
    let mut ctl = sw.ctl();
    let dup = ctl.add_port(server_spec("c", &sw.dir.join("other.sock")));
    assert!(
        matches!(&dup, Err(CtlError::Refused(m)) if m.contains("`c`")),
        "{dup:?}"
    );
    assert!(!sw.dir.join("other.sock").exists());
    let ghost = ctl.del_port("ghost");
    assert!(
        matches!(&ghost, Err(CtlError::Refused(m)) if m.contains("ghost")),
        "{ghost:?}"
    );

    // del-port: the socket goes, the MAC goes, and frames for it flood again (to b).
    ctl.del_port("c").expect("del-port c");
    assert!(!c_sock.exists(), "{c_sock:?} is still there after del-port");
    let fdb = sw.fdb();
    assert!(
        fdb.entries.iter().all(|e| e.mac != mac(C)),
        "c's MAC outlived its port: {fdb:?}"
    );
    assert!(fdb.counters.flushed >= 1, "{:?}", fdb.counters);
    assert!(sw.port_info("c").is_none(), "{:?}", sw.show());
    assert!(sw.stats().ports.iter().all(|p| p.name != "c"));
    let to_gone = frame(mac(C), mac(A), b"to a deleted port");
    send_one(&mut a, &to_gone);
    assert_eq!(
        recv_n(&mut b, 1, RECV_TIMEOUT),
        vec![to_gone],
        "a frame for a forgotten MAC floods"
    );
    // The deleted port's guest was disconnected: its socket reads end-of-file.
    {
        let mut s: &UnixStream = c.frontend().connection().socket();
        s.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).ok(), Some(0), "c still connected");
    }
    drop(c);
    ping_pong(&mut a, &mut b, 100);

    // The name and the path can be used again.
    ctl.add_port(server_spec("c", &c_sock))
        .expect("add-port c again");
    let mut c = connect(&c_sock, "c2");
    let to_c = frame(mac(C), mac(A), b"again");
    send_one(&mut a, &to_c);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![to_c]);
}

#[test]
fn client_port_connects_and_reconnects_by_itself() {
    let _heavy = heavy();
    let builder = SwitchBuilder::new("client");
    let c_path = builder.path("c-frontend.sock");
    let sw = builder.server("a").client("c", &c_path).spawn();
    let mut a = connect(&sw.sock("a"), "a");

    // Nobody listens yet: the switch keeps trying.
    std::thread::sleep(Duration::from_millis(700));
    let state = sw.port_info("c").map(|p| p.state);
    assert!(
        matches!(
            state,
            Some(PortState::Connecting) | Some(PortState::Disconnected)
        ),
        "{state:?}"
    );
    let listener = UnixListener::bind(&c_path).expect("bind");

    for round in 0..3u64 {
        let started = Instant::now();
        let mut c = ListeningGuest::accept(&listener, &guest_config("c"), RECV_TIMEOUT)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", sw.report()));
        eprintln!(
            "round {round}: the switch connected after {:?}",
            started.elapsed()
        );
        sw.wait_port_state("c", PortState::Running);
        let from_c = frame(BROADCAST, mac(C), &payload(round, 60));
        send_one(&mut c, &from_c);
        assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![from_c]);
        let to_c = frame(mac(C), mac(A), &payload(round + 100, 60));
        send_one(&mut a, &to_c);
        assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![to_c]);
        // The frontend goes away; the switch must come back by itself.
        drop(c);
    }
    let info = sw.port_info("c").expect("c");
    assert_eq!(info.mode, PortMode::Client);
    assert!(
        !is_socket(&sw.dir.join("c.sock")),
        "a client port creates no socket"
    );
}

#[test]
fn sigterm_exits_zero_and_removes_every_socket() {
    let _heavy = heavy();
    let builder = SwitchBuilder::new("sigterm");
    let nobody = builder.path("nobody-listens.sock");
    let sw = builder
        .server("a")
        .server("b")
        .server("c")
        .client("d", &nobody)
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    ping_pong(&mut a, &mut b, 0);
    // One more frontend stuck in the middle of its setup.
    let _stuck = half_setup(&sw.sock("c"), Partial::Steps(5));
    assert_eq!(
        sw.dir.sockets(),
        vec!["a.sock", "b.sock", "c.sock", "ctl.sock"]
    );

    let started = Instant::now();
    let status = sw.terminate(STOP_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "vswitch still running {STOP_TIMEOUT:?} after SIGTERM\n{}",
            sw.report()
        )
    });
    eprintln!(
        "vswitch exited {status} {:?} after SIGTERM",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", sw.report());
    assert!(
        sw.dir.sockets().is_empty(),
        "sockets left behind: {:?}",
        sw.dir.sockets()
    );
    assert!(sw.log().contains("stopped"), "{}", sw.report());
    // The guests were disconnected.
    let mut s: &UnixStream = a.frontend().connection().socket();
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).ok(), Some(0), "a still connected");
}

#[test]
fn pmd_stats_count_the_frames_polled() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("pmd-stats")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let before = sw.pmd_stats();
    assert_eq!(before.pmds.len(), 1, "{before:?}");
    assert_eq!(before.pmds[0].packets, 0, "{before:?}");
    assert_eq!(before.pmds[0].core, Some(1));
    let mut queues = before.pmds[0].rx_queues.clone();
    queues.sort();
    assert_eq!(queues, vec!["a queue 1", "b queue 1"], "{before:?}");

    // In batches B's receive ring (256) can hold.
    for batch in 0..5u64 {
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|i| frame(mac(B), mac(A), &payload(batch * 100 + i, 80)))
            .collect();
        send(&mut a, &frames);
        let got = recv_n(&mut b, 100, RECV_TIMEOUT);
        assert!(got == frames, "batch {batch}: {}", describe(&got));
    }
    for i in 0..10 {
        ping_pong(&mut a, &mut b, 1000 + 2 * i);
    }
    let want = 500 + 20;
    let mut now = sw.pmd_stats();
    // The PMD publishes its counters every 64 iterations.
    wait_for(RECV_TIMEOUT, || {
        now = sw.pmd_stats();
        now.pmds[0].packets >= want
    });
    let p = &now.pmds[0];
    assert_eq!(p.packets, want, "{now:?}");
    assert!(p.iterations > before.pmds[0].iterations, "{now:?}");
    assert!(p.busy_cycles > 0, "{now:?}");
    assert!(p.cycles_per_packet > 0.0, "{now:?}");
    let out = sw.vswitchctl(&["pmd-stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("packets received: {want}")),
        "{text}"
    );
    assert!(text.contains("pmd thread 0 core_id 1:"), "{text}");
}

//! Soak: a thousand guests come and go on one port while two others exchange traffic without a
//! pause, and the switch process does not grow: its open descriptors, its mappings and its
//! resident memory are the same after the thousandth guest as after the fiftieth (read from
//! `/proc/<pid>/`).
//!
//! Half the cycles are whole guests (connect, exchange frames, disconnect); the other half stop
//! the vhost-user negotiation after 0 to 11 steps and drop the connection there, with guest
//! memory and ring descriptors already handed over in the later steps.
#![forbid(unsafe_code)]

mod common;

use std::fs::File;
use std::os::fd::AsFd;
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
use vhost_user::message::VHOST_USER_F_PROTOCOL_FEATURES;
use vswitch::ctl::PortState;

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

/// Guests on port c, all told.
const CYCLES: usize = 1000;
/// Cycles before the first sample: the switch's allocator, thread stacks and log buffers
/// reach their steady state.
const WARM_UP: usize = 50;
/// Frames a whole guest sends (and gets back) per cycle.
const FRAMES_PER_GUEST: usize = 4;
/// Frames in flight per direction between A and B: far below a receive ring (256), so a
/// switch that loses none delivers all.
const WINDOW: u64 = 64;
/// Resident memory the switch may gain between the two samples.
const RSS_SLACK_KIB: u64 = 2048;
/// Steps of the negotiation a partial cycle may take before it drops (see `partial_setup`).
const SETUP_STEPS: usize = 11;

// ---------------------------------------------------------------------------------------------
// A and B: traffic both ways, without a pause, for the whole test.

/// One direction of the A/B traffic.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    sent: u64,
    received: u64,
    /// Frames that arrived but were not the next in sequence (lost, reordered or corrupted
    /// ones on the way).
    out_of_order: u64,
}

/// What the A/B thread saw.
#[derive(Debug, Default)]
struct Traffic {
    a_to_b: Flow,
    b_to_a: Flow,
    /// Frames from C that A sent back to C.
    echoed: u64,
    /// Frames at A or B that were neither the peer's nor C's.
    foreign: u64,
}

fn ab_frame(seq: u64, from: u8, to: u8) -> Vec<u8> {
    frame(mac(to), mac(from), &payload(seq, 100))
}

/// Sends what `flow`'s window allows from `tx` and publishes.
fn fill(tx: &mut DriverQueue, flow: &mut Flow, from: u8, to: u8) {
    let mut pushed = false;
    while flow.sent - flow.received < WINDOW {
        if !tx.push_tx(&ab_frame(flow.sent, from, to)) {
            break;
        }
        flow.sent += 1;
        pushed = true;
    }
    if pushed {
        tx.publish();
    }
    tx.reclaim();
}

/// Counts a frame that should be the next of `flow`.
fn check(f: &[u8], flow: &mut Flow, from: u8, to: u8) {
    if f != ab_frame(flow.received, from, to).as_slice() {
        flow.out_of_order += 1;
    }
    flow.received += 1;
}

/// A thread running numbered traffic A -> B and B -> A until `stop`, then draining; it also
/// sends every frame A gets from C back to C (C's source becomes the destination). `progress`
/// holds the frames received so far, both ways.
fn ab_traffic(
    mut a: Guest,
    mut b: Guest,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> JoinHandle<(Guest, Guest, Traffic)> {
    std::thread::spawn(move || {
        let mut t = Traffic::default();
        let mut scratch = Vec::new();
        let mut echoes: Vec<Vec<u8>> = Vec::new();
        let mut drain_deadline = None;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + RECV_TIMEOUT);
            }
            if let Some(d) = drain_deadline {
                let done = t.a_to_b.received == t.a_to_b.sent && t.b_to_a.received == t.b_to_a.sent;
                if done || Instant::now() > d {
                    break;
                }
            } else {
                fill(&mut a.tx, &mut t.a_to_b, A, B);
                fill(&mut b.tx, &mut t.b_to_a, B, A);
            }
            b.rx.recv(usize::MAX, &mut scratch, |f| {
                if f.get(6..12) == Some(&mac(A)[..]) {
                    check(f, &mut t.a_to_b, A, B);
                } else {
                    t.foreign += 1;
                }
            });
            a.rx.recv(usize::MAX, &mut scratch, |f| {
                if f.get(6..12) == Some(&mac(B)[..]) {
                    check(f, &mut t.b_to_a, B, A);
                } else if f.get(6..12) == Some(&mac(C)[..]) {
                    let mut back = f.to_vec();
                    back[..6].copy_from_slice(&mac(C));
                    back[6..12].copy_from_slice(&mac(A));
                    echoes.push(back);
                } else {
                    t.foreign += 1;
                }
            });
            // Echoes that do not fit now wait for the next round.
            let before = echoes.len();
            echoes.retain(|e| !a.tx.push_tx(e));
            if echoes.len() != before {
                t.echoed += (before - echoes.len()) as u64;
                a.tx.publish();
            }
            progress.store(t.a_to_b.received + t.b_to_a.received, Ordering::Relaxed);
        }
        (a, b, t)
    })
}

/// Sets the flag when dropped, panics included, so the traffic thread always ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// C: whole guests and guests that give up half way.

/// A whole guest on port c: connects, sends `FRAMES_PER_GUEST` frames to A, gets each back
/// (A's thread echoes them), disconnects.
fn whole_guest(path: &Path, cycle: usize) {
    let mut c = Guest::connect(path, &guest_config("c"))
        .unwrap_or_else(|e| panic!("cycle {cycle}: guest C cannot connect: {e}"));
    let frames: Vec<Vec<u8>> = (0..FRAMES_PER_GUEST)
        .map(|i| frame(mac(A), mac(C), &payload((cycle * 100 + i) as u64, 80)))
        .collect();
    send(&mut c, &frames);
    let got = recv_n(&mut c, FRAMES_PER_GUEST, RECV_TIMEOUT);
    let want: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut back = f.clone();
            back[..6].copy_from_slice(&mac(C));
            back[6..12].copy_from_slice(&mac(A));
            back
        })
        .collect();
    assert_eq!(
        got,
        want,
        "cycle {cycle}: guest C got back {} of its {FRAMES_PER_GUEST} frames",
        describe(&got)
    );
}

/// A frontend on port c that takes the first `steps` steps of the setup a guest driver
/// performs (the order of `Frontend::setup_net`), then drops the connection. From step 5 on
/// the switch holds the guest's memory; from step 7 on ring call and kick descriptors too.
fn partial_setup(path: &Path, steps: usize, cycle: usize) {
    let mut fe = Frontend::connect(path)
        .unwrap_or_else(|e| panic!("cycle {cycle}: frontend cannot connect: {e}"));
    let mut mem = DriverMemory::new("c-partial", 1 << 20, false).expect("guest memory");
    let q0 = DriverQueue::new(&mut mem, 64, 2048, 12).expect("queue 0");
    let q1 = DriverQueue::new(&mut mem, 64, 2048, 12).expect("queue 1");
    // Any descriptor serves as a call or kick "eventfd": what matters is that the switch
    // closes the ones it got when the frontend goes.
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let features = GuestConfig::default().features | VHOST_USER_F_PROTOCOL_FEATURES;
    let queues = [(0u8, q0.layout()), (1u8, q1.layout())];
    for step in 0..steps {
        let r = match step {
            0 => fe.get_features().map(drop),
            1 => fe
                .get_protocol_features()
                .and_then(|p| fe.set_protocol_features(p & (pf::REPLY_ACK | pf::MQ))),
            2 => fe.set_owner(),
            3 => fe.set_features(features),
            4 => fe.set_mem_table(&[(mem.region_desc(), mem.fd().as_fd())]),
            5 | 8 => {
                let (i, l) = queues[usize::from(step == 8)];
                fe.set_vring_num(u32::from(i), u32::from(l.size))
                    .and_then(|()| fe.set_vring_base(u32::from(i), 0))
                    .and_then(|()| fe.set_vring_addr(u32::from(i), &l))
            }
            6 | 9 => {
                let i = queues[usize::from(step == 9)].0;
                fe.set_vring_call(i, Some(null.as_fd()))
                    .and_then(|()| fe.set_vring_kick(i, Some(null.as_fd())))
            }
            7 | 10 => {
                let i = queues[usize::from(step == 10)].0;
                fe.set_vring_enable(u32::from(i), true)
            }
            _ => unreachable!("{SETUP_STEPS} steps"),
        };
        r.unwrap_or_else(|e| panic!("cycle {cycle}: setup step {step}: {e}"));
    }
    if steps > 0 {
        // A request whose reply proves the switch has handled every step before the drop.
        fe.get_features()
            .unwrap_or_else(|e| panic!("cycle {cycle}: after {steps} steps: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// The switch process, seen from /proc.

/// Resources of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    maps: usize,
    rss_kib: u64,
}

fn footprint(pid: u32) -> Footprint {
    let proc = format!("/proc/{pid}");
    let fds = std::fs::read_dir(format!("{proc}/fd"))
        .unwrap_or_else(|e| panic!("{proc}/fd: {e}"))
        .count();
    let maps = std::fs::read_to_string(format!("{proc}/maps"))
        .unwrap_or_else(|e| panic!("{proc}/maps: {e}"))
        .lines()
        .count();
    let status = std::fs::read_to_string(format!("{proc}/status"))
        .unwrap_or_else(|e| panic!("{proc}/status: {e}"));
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {proc}/status:\n{status}"));
    Footprint { fds, maps, rss_kib }
}

/// The switch's footprint once port c is idle again: no frontend, and the descriptor and
/// mapping counts read the same twice in a row (the control connection used to ask about the
/// port closes on the switch's side a moment after ours).
fn quiet_footprint(sw: &Switch) -> Footprint {
    sw.wait_port_state("c", PortState::Listening);
    let mut last = footprint(sw.pid());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = footprint(sw.pid());
        if (now.fds, now.maps) == (last.fds, last.maps) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn soak_thousand_guest_cycles_no_growth() {
    let _heavy = heavy();
    let started = Instant::now();
    let sw = SwitchBuilder::new("soak")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    let a = connect(&sw.sock("a"), "a");
    let b = connect(&sw.sock("b"), "b");
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let traffic = ab_traffic(a, b, stop.clone(), progress.clone());
    let stopper = StopOnDrop(stop);

    let c_path = sw.sock("c");
    let mut warm = None;
    let mut whole = 0;
    let mut partial = [0usize; SETUP_STEPS + 1];
    let mut ab_at_warm_up = 0;
    for cycle in 0..CYCLES {
        if cycle.is_multiple_of(2) {
            whole_guest(&c_path, cycle);
            whole += 1;
        } else {
            let steps = (cycle / 2) % (SETUP_STEPS + 1);
            partial_setup(&c_path, steps, cycle);
            partial[steps] += 1;
        }
        assert!(
            sw.is_running(),
            "the switch died in cycle {cycle}\n{}",
            sw.report()
        );
        if cycle + 1 == WARM_UP {
            warm = Some(quiet_footprint(&sw));
            ab_at_warm_up = progress.load(Ordering::Relaxed);
        }
    }
    let end = quiet_footprint(&sw);
    let warm = warm.expect("sampled after the warm-up");
    let cycles_done = started.elapsed();
    let ab_during = progress.load(Ordering::Relaxed) - ab_at_warm_up;

    drop(stopper);
    let (_a, _b, t) = traffic.join().expect("the A/B traffic thread panicked");
    let stats = sw.stats();
    let drops: Vec<(String, u64)> = stats
        .ports
        .iter()
        .flat_map(|p| {
            p.drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(move |(k, n)| (format!("{}.{k}", p.name), *n))
        })
        .collect();
    eprintln!(
        "soak: {CYCLES} cycles on port c ({whole} whole guests with {FRAMES_PER_GUEST} frames \
         each way, partial setups by steps taken {partial:?}) in {:.1} s; switch after \
         {WARM_UP} cycles {warm:?}, after {CYCLES} {end:?}; A/B traffic {t:?}, {ab_during} \
         frames received between the samples; non-zero drops {drops:?}",
        cycles_done.as_secs_f64()
    );

    // No frame between A and B lost, reordered or damaged while guests came and went.
    for (name, flow) in [("A -> B", t.a_to_b), ("B -> A", t.b_to_a)] {
        assert!(
            flow.sent > 10_000,
            "{name}: only {} frames in the whole soak\n{}",
            flow.sent,
            sw.report()
        );
        assert_eq!(
            (flow.received, flow.out_of_order),
            (flow.sent, 0),
            "{name}: frames lost or out of order: {flow:?}\n{}",
            sw.report()
        );
    }
    assert!(ab_during > 0, "A and B exchanged nothing during the soak");
    assert_eq!(
        t.foreign, 0,
        "A or B got frames they should not have: {t:?}"
    );
    for name in ["a", "b"] {
        let st = sw.port_stats(name);
        assert_eq!(
            st.drops.values().sum::<u64>(),
            0,
            "port {name} dropped frames: {st:?}"
        );
    }

    // Nothing the thousand guests used stays behind.
    assert_eq!(
        end.fds,
        warm.fds,
        "the switch's open descriptors grew from {} to {} over {} cycles; /proc/{}/fd:\n{:?}",
        warm.fds,
        end.fds,
        CYCLES - WARM_UP,
        sw.pid(),
        std::fs::read_dir(format!("/proc/{}/fd", sw.pid()))
            .map(|d| d
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect::<Vec<_>>())
            .unwrap_or_default()
    );
    assert_eq!(
        end.maps,
        warm.maps,
        "the switch's mappings grew from {} to {} over {} cycles",
        warm.maps,
        end.maps,
        CYCLES - WARM_UP
    );
    assert!(
        end.rss_kib < warm.rss_kib + RSS_SLACK_KIB,
        "the switch's resident memory grew from {} KiB to {} KiB over {} cycles",
        warm.rss_kib,
        end.rss_kib,
        CYCLES - WARM_UP
    );
    let status = sw.terminate(STOP_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "vswitch did not stop cleanly on SIGTERM: {status:?}\n{}",
        sw.report()
    );
    eprintln!("soak: {:.1} s in all", started.elapsed().as_secs_f64());
}

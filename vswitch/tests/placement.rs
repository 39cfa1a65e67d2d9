//! Queue placement against a running switch: two poll threads and four guest queues of uneven
//! load. `pmd-rxq-show` must rank the heavy queues above the light ones, `pmd-rxq-rebalance`
//! must split the heavy ones over the two threads so that their measured load evens out, and a
//! sequence-checked stream through each heavy queue must arrive whole and in order although
//! one of them moves while it flows. And the refusals: one poll thread, nothing measured yet, a
//! bad command line.
#![forbid(unsafe_code)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost_user::guest::{Guest, GuestConfig};
use vswitch::ctl::{RebalanceReply, RxqShowReply};

// Ports in the order the switch numbers them: ids 0..6, so the first placement ((id + pair) mod
// 2) puts a, c and ra on pmd 0, b, d and rc on pmd 1. Both heavy senders start on pmd 0.
const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;
const D: u8 = 4;
const RA: u8 = 5;
const RC: u8 = 6;

/// Frames per tick into each heavy queue (a, c); one frame into each light one (b, d) every
/// `LIGHT_EVERY` ticks. A poll's fixed cost (a cold cache after a nap, locking, publishing)
/// weighs as much as tens of frames, so the light queues are polled rarely, not just with
/// fewer frames.
const HEAVY: usize = 32;
const LIGHT_EVERY: u64 = 8;
const TICK: Duration = Duration::from_millis(1);

fn rxq_show(sw: &Switch) -> RxqShowReply {
    sw.ctl()
        .pmd_rxq_show()
        .unwrap_or_else(|e| panic!("pmd-rxq-show: {e}\n{}", sw.report()))
}

/// Port -> (poll thread, usage %) of each port's one queue.
fn queues(r: &RxqShowReply) -> BTreeMap<String, (usize, f64)> {
    r.pmds
        .iter()
        .flat_map(|p| {
            p.queues
                .iter()
                .map(move |q| (q.port.clone(), (p.id, q.usage_percent)))
        })
        .collect()
}

/// Each poll thread's share of the threads' busy cycles together, the largest: 0.5 is even.
fn busiest_share(r: &RxqShowReply) -> f64 {
    let total: u64 = r.pmds.iter().map(|p| p.busy_cycles).sum();
    let max = r.pmds.iter().map(|p| p.busy_cycles).max().unwrap_or(0);
    max as f64 / total.max(1) as f64
}

/// Waits until `n` more load intervals have closed (the window's length changes at each).
fn wait_intervals(sw: &Switch, n: usize) -> RxqShowReply {
    let mut r = rxq_show(sw);
    let deadline = Instant::now() + Duration::from_secs(3 * n as u64 + 5);
    for _ in 0..n {
        let window = r.window_cycles;
        while r.window_cycles == window {
            assert!(
                Instant::now() < deadline,
                "no load interval closed in time: {r:?}\n{}",
                sw.report()
            );
            std::thread::sleep(Duration::from_millis(50));
            r = rxq_show(sw);
        }
    }
    r
}

/// A frame of stream `src` -> `dst` carrying `seq`.
fn seq_frame(dst: u8, src: u8, seq: u64) -> Vec<u8> {
    frame(mac(dst), mac(src), &payload(seq, 50))
}

/// The sender: every tick HEAVY numbered frames from a to ra and from c to rc; every
/// LIGHT_EVERY ticks a broadcast from b and from d (alone in their VLANs: classified, flooded
/// to no one). Counts what a and c sent in `sent`.
fn start_senders(
    mut guests: [Guest; 4],
    stop: Arc<AtomicBool>,
    sent: Arc<[AtomicU64; 2]>,
) -> JoinHandle<[Guest; 4]> {
    std::thread::spawn(move || {
        let [a, b, c, d] = &mut guests;
        let mut seq = [0u64; 2];
        let mut tick = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (k, (g, src, dst)) in [(&mut *a, A, RA), (&mut *c, C, RC)].into_iter().enumerate() {
                let frames: Vec<Vec<u8>> = (0..HEAVY as u64)
                    .map(|i| seq_frame(dst, src, seq[k] + i))
                    .collect();
                send(g, &frames);
                seq[k] += HEAVY as u64;
                sent[k].store(seq[k], Ordering::Relaxed);
            }
            if tick.is_multiple_of(LIGHT_EVERY) {
                for (g, src) in [(&mut *b, B), (&mut *d, D)] {
                    send_one(g, &frame(BROADCAST, mac(src), &[0u8; 50]));
                }
            }
            tick += 1;
            std::thread::sleep(TICK);
        }
        guests
    })
}

/// What a receiver found in its stream.
#[derive(Debug, Default)]
struct Stream {
    /// The next sequence number expected: frames 0..next arrived in order.
    next: u64,
    /// The first frames that were not the expected one.
    wrong: Vec<String>,
}

/// The receiver: checks that ra gets a's frames and rc gets c's, each exactly once and in
/// order, until `want` holds both totals and they have arrived (or a deadline passes).
fn start_receivers(
    mut guests: [Guest; 2],
    want: Arc<[AtomicU64; 2]>,
    totals_known: Arc<AtomicBool>,
) -> JoinHandle<[Stream; 2]> {
    std::thread::spawn(move || {
        let mut streams = [Stream::default(), Stream::default()];
        let mut scratch = Vec::new();
        let mut deadline = None;
        loop {
            let mut got = 0;
            for (k, (g, (src, dst))) in guests.iter_mut().zip([(A, RA), (C, RC)]).enumerate() {
                let s = &mut streams[k];
                got += g.rx.recv(usize::MAX, &mut scratch, |f| {
                    let want = seq_frame(dst, src, s.next);
                    if f == want.as_slice() {
                        s.next += 1;
                    } else if s.wrong.len() < 8 {
                        s.wrong.push(format!(
                            "expected frame {} of {src}->{dst}, got {} bytes starting {:02x?}",
                            s.next,
                            f.len(),
                            &f[..f.len().min(22)]
                        ));
                    }
                });
            }
            if totals_known.load(Ordering::Relaxed) {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + RECV_TIMEOUT);
                let done = (0..2).all(|k| streams[k].next >= want[k].load(Ordering::Relaxed));
                if done || Instant::now() >= deadline {
                    return streams;
                }
            }
            if got == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

#[test]
fn rebalance_evens_out_uneven_queues_without_losing_a_frame() {
    let _heavy = heavy();
    let mut b = SwitchBuilder::new("rxq-rebalance").default_pmd_cores();
    for p in ["a", "b", "c", "d", "ra", "rc"] {
        b = b.server(p);
    }
    let sw = b
        .vlan("a", 10)
        .vlan("ra", 10)
        .vlan("c", 20)
        .vlan("rc", 20)
        .vlan("b", 30)
        .vlan("d", 40)
        .arg("--pmd-cores")
        .arg("0,1")
        .arg("--pmd-rxq-interval")
        .arg("1")
        // The poll threads share the two cores with this test's threads: nap when idle.
        .arg("--pmd-sleep-max")
        .arg("100")
        .spawn();
    let senders = ["a", "b", "c", "d"].map(|n| connect(&sw.sock(n), n));
    // Deep receive rings: a receiver thread that is not scheduled for a while must not make
    // the switch drop for want of buffers, which would hide what this test looks for.
    let big = |n: &str| GuestConfig {
        queue_size: 4096,
        mem_bytes: 40 << 20,
        ..guest_config(n)
    };
    let receivers = ["ra", "rc"].map(|n| connect_with(&sw.sock(n), &big(n)));
    for p in ["a", "b", "c", "d", "ra", "rc"] {
        sw.wait_port_state(p, vswitch::ctl::PortState::Running);
    }
    let first = queues(&rxq_show(&sw));
    let pmd_of = |q: &BTreeMap<String, (usize, f64)>, p: &str| q[p].0;
    for (p, pmd) in [("a", 0), ("c", 0), ("ra", 0), ("b", 1), ("d", 1), ("rc", 1)] {
        assert_eq!(pmd_of(&first, p), pmd, "first placement: {first:?}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let totals_known = Arc::new(AtomicBool::new(false));
    let tx = start_senders(senders, stop.clone(), sent.clone());
    let rx = start_receivers(receivers, sent.clone(), totals_known.clone());

    // A window that is mostly traffic.
    let before = wait_intervals(&sw, 4);
    let q = queues(&before);
    let usage = |p: &str| q[p].1;
    let light = usage("b").max(usage("d"));
    for heavy in ["a", "c"] {
        assert!(
            usage(heavy) > 2.0 * light && light > 0.0,
            "{heavy} should show more than twice the load of b and d: {before:#?}"
        );
    }
    assert!(usage("ra") < light && usage("rc") < light, "{before:#?}");
    assert!(
        before.pmds[0].busy_cycles > before.pmds[1].busy_cycles,
        "pmd 0 has both heavy queues: {before:#?}"
    );
    let table = sw.vswitchctl(&["pmd-rxq-show"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    assert!(
        text.contains("pmd thread 0 core_id 0:") && text.contains("pmd thread 1 core_id 1:"),
        "{text}"
    );

    let at_move = [0, 1].map(|k| sent[k].load(Ordering::Relaxed));
    let out = sw.vswitchctl(&["--json", "pmd-rxq-rebalance"]);
    assert!(out.status.success(), "{out:?}\n{}", sw.report());
    let reply: RebalanceReply = serde_json::from_slice(&out.stdout).expect("rebalance JSON");
    assert!(reply.applied && !reply.dry_run, "{reply:#?}");
    // The heavier of a and c stays on pmd 0, the other goes to pmd 1; b and d may follow.
    let heavy_moves: Vec<&str> = reply
        .moves
        .iter()
        .filter(|m| m.port == "a" || m.port == "c")
        .map(|m| m.port.as_str())
        .collect();
    assert_eq!(heavy_moves.len(), 1, "{reply:#?}");
    let moved = heavy_moves[0];
    let m = reply.moves.iter().find(|m| m.port == moved).unwrap();
    assert_eq!((m.queue, m.from_pmd, m.to_pmd), (1, 0, 1), "{reply:#?}");
    let max = |f: fn(&vswitch::ctl::PmdLoad) -> f64| reply.pmds.iter().map(f).fold(0.0, f64::max);
    assert!(
        max(|p| p.after_percent) < max(|p| p.before_percent),
        "{reply:#?}"
    );
    let placed = queues(&rxq_show(&sw));
    assert_ne!(pmd_of(&placed, "a"), pmd_of(&placed, "c"), "{placed:?}");
    for m in &reply.moves {
        assert_eq!(pmd_of(&placed, &m.port), m.to_pmd, "{placed:?}");
        let line = format!(
            "pmd-rxq-rebalance: port {} queue 1 moved from pmd{} to pmd{}",
            m.port, m.from_pmd, m.to_pmd
        );
        assert!(
            sw.log().contains(&line),
            "log lacks `{line}`\n{}",
            sw.report()
        );
    }
    // `show` reports the new thread too.
    let info = sw.port_info(moved).unwrap();
    assert_eq!(info.queues[1].pmd, Some(1), "{info:?}");
    // Right after, the plan is what the switch already runs.
    let again = sw.ctl().pmd_rxq_rebalance(Default::default()).unwrap();
    assert!(!again.applied && again.moves.is_empty(), "{again:#?}");

    // A full window after the move: the measured load is more even.
    let after = wait_intervals(&sw, vswitch::rxq::INTERVALS + 1);
    assert!(
        busiest_share(&after) < busiest_share(&before),
        "busiest thread's share {:.3} before, {:.3} after\nbefore: {before:#?}\nafter: {after:#?}",
        busiest_share(&before),
        busiest_share(&after)
    );

    stop.store(true, Ordering::Relaxed);
    let _senders = tx.join().expect("sender thread");
    totals_known.store(true, Ordering::Relaxed);
    let streams = rx.join().expect("receiver thread");
    for (k, (name, s)) in ["a -> ra", "c -> rc"].iter().zip(&streams).enumerate() {
        let total = sent[k].load(Ordering::Relaxed);
        assert!(
            at_move[k] > 0 && total > at_move[k],
            "{name}: frames must flow before and after the move ({} then {total})",
            at_move[k]
        );
        assert!(s.wrong.is_empty(), "{name}: {:#?}", s.wrong);
        assert_eq!(s.next, total, "{name}: frames arrived in order: {}", s.next);
    }
    for p in ["ra", "rc"] {
        let st = sw.port_stats(p);
        assert!(st.drops.values().all(|&n| n == 0), "{p}: {st:?}");
    }
}

#[test]
fn rebalance_refused_with_one_poll_thread() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("rxq-one-pmd").server("a").spawn();
    let _a = connect(&sw.sock("a"), "a");
    for args in [
        &["pmd-rxq-rebalance"][..],
        &["pmd-rxq-rebalance", "--dry-run"][..],
    ] {
        let out = sw.vswitchctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr.contains("needs at least two poll threads") && stderr.contains("runs 1"),
            "{args:?}: {stderr}"
        );
    }
    // A bad command line never reaches the switch.
    let out = sw.vswitchctl(&["pmd-rxq-rebalance", "--now"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--now"),
        "{out:?}"
    );
    // Showing works with one thread.
    let q = queues(&rxq_show(&sw));
    assert_eq!(q.keys().collect::<Vec<_>>(), ["a"], "{q:?}");
    assert_eq!(q["a"].0, 0);
}

#[test]
fn rebalance_refused_before_the_first_interval() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("rxq-unmeasured")
        .server("a")
        .server("b")
        .default_pmd_cores()
        .arg("--pmd-cores")
        .arg("0,1")
        .arg("--pmd-rxq-interval")
        .arg("3600")
        .arg("--pmd-sleep-max")
        .arg("1000")
        .spawn();
    let out = sw.vswitchctl(&["pmd-rxq-rebalance"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("no queue load measured yet") && stderr.contains("3600-second"),
        "{stderr}"
    );
    let out = sw.vswitchctl(&["pmd-rxq-show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("no load measured yet"), "{text}");
    let r = rxq_show(&sw);
    assert_eq!((r.intervals, r.interval_secs), (0, 3600), "{r:?}");
    let q = queues(&r);
    assert_eq!((q["a"].0, q["b"].0), (0, 1), "{q:?}");
    assert!(q.values().all(|&(_, u)| u == 0.0), "{q:?}");
}

//! Every strategy against the contract of `Notifier`: deadlines honoured, notifies consumed and
//! coalesced, and no lost wake-up under stress (two threads, thousands of rounds, notifies
//! racing with the waiter going to sleep). Each wait is bounded, so a lost wake-up fails a
//! test instead of hanging it. Strategies that poll take the workspace's heavy-test lock.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{expect_notified, lock_for, pair, rounds, Jitter, WAIT_LIMIT};
use notify::{AdaptiveNotifier, Notifier, SharedWord, Strategy, WaitOutcome};

/// Slack for a timed-out wait to return after its deadline on a busy shared machine.
const LATE: Duration = Duration::from_secs(2);

fn times_out_without_a_notify(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    for timeout in [Duration::from_millis(1), Duration::from_millis(30)] {
        let t0 = Instant::now();
        assert_eq!(p.rx.wait(Some(timeout)), WaitOutcome::TimedOut, "{s}");
        let took = t0.elapsed();
        assert!(
            took >= timeout,
            "{s}: returned after {took:?}, before {timeout:?}"
        );
        assert!(
            took < timeout + LATE,
            "{s}: {took:?} for a {timeout:?} wait"
        );
    }
}

fn zero_timeout_polls(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    let t0 = Instant::now();
    assert_eq!(p.rx.wait(Some(Duration::ZERO)), WaitOutcome::TimedOut);
    assert!(t0.elapsed() < LATE);
    p.tx.notify();
    assert_eq!(
        p.rx.wait(Some(Duration::ZERO)),
        WaitOutcome::Notified,
        "{s}"
    );
    assert_eq!(
        p.rx.wait(Some(Duration::ZERO)),
        WaitOutcome::TimedOut,
        "{s}"
    );
}

fn notifies_coalesce_and_are_consumed(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    for _ in 0..3 {
        p.tx.notify();
    }
    expect_notified(&*p.rx, "three notifies");
    // All three were consumed by that one wait: the next has nothing to return for.
    assert_eq!(
        p.rx.wait(Some(Duration::from_millis(20))),
        WaitOutcome::TimedOut,
        "{s}"
    );
    p.tx.notify();
    expect_notified(&*p.rx, "a fourth notify");
}

fn notify_before_the_receiver_exists_is_not_lost(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    p.tx.notify();
    // A receiver built after the notify (a peer that attached late) still sees it.
    let late_rx = s.build(&p.word, Some(&p.eventfd)).expect("build");
    expect_notified(&*late_rx, "a notify sent before the receiver existed");
}

fn wakes_a_waiter_that_is_asleep(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    let notified = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            expect_notified(&*p.rx, "the only notify");
            // The wait may only return once the notify has happened.
            assert!(
                notified.load(Ordering::SeqCst),
                "{s}: returned before the notify"
            );
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        notified.store(true, Ordering::SeqCst);
        p.tx.notify();
        let took = waiter.join().expect("waiter");
        assert!(took >= Duration::from_millis(50), "{s}: {took:?}");
    });
}

/// `wait(None)` has no deadline of its own; a watchdog turns a lost wake-up into a failure
/// (the whole test binary aborts) instead of a hang.
fn wait_without_timeout_returns_on_notify(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if t0.elapsed() > WAIT_LIMIT * 3 {
                    eprintln!("{s}: wait(None) never returned: lost wake-up");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            p.tx.notify();
        });
        assert_eq!(p.rx.wait(None), WaitOutcome::Notified, "{s}");
    });
    done.store(true, Ordering::SeqCst);
    watchdog.join().expect("watchdog");
}

/// Two channels, ping and pong, thousands of round trips with random pauses on both sides:
/// every notify lands at a different point of the other side's wait (before it checks,
/// between its last check and the sleep, while it sleeps). One lost wake-up and a wait times
/// out; one spurious wake-up (a return with no notify outstanding) and the counters published
/// before each notify say so.
fn ping_pong(
    ping_tx: &dyn Notifier,
    ping_rx: &dyn Notifier,
    pong_tx: &dyn Notifier,
    pong_rx: &dyn Notifier,
    n: usize,
) {
    let name = ping_rx.name();
    let pings = AtomicU64::new(0);
    let pongs = AtomicU64::new(0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut j = Jitter::new(0x9e37_79b9_7f4a_7c15);
            for i in 0..n {
                expect_notified(ping_rx, format_args!("ping {i} of {n}"));
                let sent = pings.load(Ordering::Relaxed);
                assert_eq!(
                    sent,
                    i as u64 + 1,
                    "{name}: woke for ping {i} with {sent} sent"
                );
                j.pause();
                pongs.store(i as u64 + 1, Ordering::Relaxed);
                pong_tx.notify();
            }
        });
        let mut j = Jitter::new(0xdead_beef_cafe_f00d);
        for i in 0..n {
            j.pause();
            pings.store(i as u64 + 1, Ordering::Relaxed);
            ping_tx.notify();
            expect_notified(pong_rx, format_args!("pong {i} of {n}"));
            let sent = pongs.load(Ordering::Relaxed);
            assert_eq!(
                sent,
                i as u64 + 1,
                "{name}: woke for pong {i} with {sent} sent"
            );
        }
    });
}

fn ping_pong_loses_no_wake_up(s: Strategy) {
    let _heavy = lock_for(s);
    let (Some(ping), Some(pong)) = (pair(s), pair(s)) else {
        return;
    };
    // Fewer rounds for pure spinning: on a loaded 2-core machine a spinning waiter burns its
    // time slice while the thread it waits for is descheduled.
    let n = rounds(if s == Strategy::Spin { 2_000 } else { 10_000 });
    let t0 = Instant::now();
    ping_pong(&*ping.tx, &*ping.rx, &*pong.tx, &*pong.rx, n);
    eprintln!("{s}: {n} round trips in {:?}", t0.elapsed());
}

/// A sender notifies a burst, publishing a counter before each notify, with random pauses; the
/// receiver waits until it has seen the last value. Intermediate notifies may coalesce, the
/// last one must not be lost, and whatever was written before a notify is visible after the
/// wait that consumed it.
fn last_of_a_burst_is_never_lost(s: Strategy) {
    let _heavy = lock_for(s);
    let Some(p) = pair(s) else { return };
    let n =
        u64::try_from(rounds(if s == Strategy::Spin { 2_000 } else { 10_000 })).expect("rounds");
    let data = AtomicU64::new(0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut j = Jitter::new(42);
            for i in 1..=n {
                data.store(i, Ordering::Relaxed);
                p.tx.notify();
                j.pause();
            }
        });
        let mut seen = 0;
        let mut wakeups = 0u64;
        while seen < n {
            expect_notified(&*p.rx, format_args!("at {seen} of {n}"));
            // Visible: at least the value published before the notify this wait consumed.
            // (It may equal the last value seen: that notify raced with the previous return
            // and counts for this wait.)
            let v = data.load(Ordering::Relaxed);
            assert!(v >= seen, "{s}: counter went back from {seen} to {v}");
            seen = v;
            wakeups += 1;
            assert!(wakeups <= n, "{s}: {wakeups} wake-ups for {n} notifies");
        }
        eprintln!("{s}: {n} notifies, {wakeups} wake-ups");
    });
}

macro_rules! contract_tests {
    ($($module:ident => $strategy:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[test]
            fn times_out_without_a_notify() { super::times_out_without_a_notify($strategy) }
            #[test]
            fn zero_timeout_polls() { super::zero_timeout_polls($strategy) }
            #[test]
            fn notifies_coalesce_and_are_consumed() {
                super::notifies_coalesce_and_are_consumed($strategy)
            }
            #[test]
            fn notify_before_the_receiver_exists_is_not_lost() {
                super::notify_before_the_receiver_exists_is_not_lost($strategy)
            }
            #[test]
            fn wakes_a_waiter_that_is_asleep() { super::wakes_a_waiter_that_is_asleep($strategy) }
            #[test]
            fn wait_without_timeout_returns_on_notify() {
                super::wait_without_timeout_returns_on_notify($strategy)
            }
            #[test]
            fn ping_pong_loses_no_wake_up() { super::ping_pong_loses_no_wake_up($strategy) }
            #[test]
            fn last_of_a_burst_is_never_lost() { super::last_of_a_burst_is_never_lost($strategy) }
        }
    )*};
}

contract_tests! {
    spin => Strategy::Spin,
    futex => Strategy::Futex,
    umwait => Strategy::Umwait,
    eventfd => Strategy::EventFd,
    adaptive => Strategy::Adaptive,
}

/// Adaptive with a budget so short that both of its paths run in one stress test: wake-ups
/// while polling and wake-ups after sleeping, switching between them at random.
#[test]
fn adaptive_short_budget_loses_no_wake_up_on_either_path() {
    let _heavy = common::heavy();
    let budget = Duration::from_micros(2);
    let ping = SharedWord::private();
    let pong = SharedWord::private();
    let ping_rx = AdaptiveNotifier::new(ping.clone(), budget);
    let pong_rx = AdaptiveNotifier::new(pong.clone(), budget);
    let ping_tx = AdaptiveNotifier::new(ping, budget);
    let pong_tx = AdaptiveNotifier::new(pong, budget);
    let n = rounds(10_000);
    ping_pong(&ping_tx, &ping_rx, &pong_tx, &pong_rx, n);
    let (polled, slept) = ping_rx.wakeups();
    let (polled2, slept2) = pong_rx.wakeups();
    eprintln!("adaptive(2us): ping {polled} polled / {slept} slept, pong {polled2} / {slept2}");
    assert_eq!(polled + slept, u64::try_from(n).expect("n"));
    assert!(slept + slept2 > 0, "the sleeping path never ran");
    assert!(polled + polled2 > 0, "the polling path never ran");
}

/// The word-based strategies notify identically, so each side picks its own: a futex or
/// adaptive receiver is woken by a spin sender's notify, and a spin receiver by a futex
/// sender's.
#[test]
fn word_strategies_interoperate() {
    let _heavy = common::heavy();
    let word_strategies: Vec<Strategy> = Strategy::available()
        .into_iter()
        .filter(|s| *s != Strategy::EventFd)
        .collect();
    for &tx_s in &word_strategies {
        for &rx_s in &word_strategies {
            let ping = SharedWord::private();
            let pong = SharedWord::private();
            let ping_tx = tx_s.build(&ping, None).expect("build");
            let ping_rx = rx_s.build(&ping, None).expect("build");
            let pong_tx = rx_s.build(&pong, None).expect("build");
            let pong_rx = tx_s.build(&pong, None).expect("build");
            ping_pong(&*ping_tx, &*ping_rx, &*pong_tx, &*pong_rx, 500);
        }
    }
}

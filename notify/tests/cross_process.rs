//! Notification between two processes, as between two guests: the parent and a child process
//! (this test binary re-executed) share a memfd mapped at different addresses in each, and
//! eventfds inherited across exec. Ping-pong for thousands of rounds; every wait is bounded.
//! A futex taken with FUTEX_PRIVATE_FLAG (keyed by address space) would never wake the other
//! process, and these tests would time out.

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{expect_notified, lock_for, Jitter, WAIT_LIMIT};
use notify::{EventFd, Notifier, SharedWord, ShmRegion, Strategy, WaitOutcome};

const CHILD_STRATEGY: &str = "NOTIFY_TEST_CHILD_STRATEGY";
const CHILD_FDS: &str = "NOTIFY_TEST_CHILD_FDS";
const CHILD_ROUNDS: &str = "NOTIFY_TEST_CHILD_ROUNDS";

/// Slots in the shared page: parent -> child, child -> parent, and a "payload" counter the
/// parent bumps before each ping (to check that what was written before a notify is visible
/// to the other process after its wait).
const PING: usize = 0;
const PONG: usize = 64;
const PAYLOAD: usize = 128;

/// The three things the two processes share.
struct Channel {
    ping_tx_or_rx: Box<dyn Notifier>,
    pong_tx_or_rx: Box<dyn Notifier>,
    payload: SharedWord,
}

fn channel(
    strategy: Strategy,
    region: &Arc<ShmRegion>,
    ping_efd: &EventFd,
    pong_efd: &EventFd,
) -> Channel {
    let ping = SharedWord::in_region(region, PING).expect("ping slot");
    let pong = SharedWord::in_region(region, PONG).expect("pong slot");
    Channel {
        ping_tx_or_rx: strategy.build(&ping, Some(ping_efd)).expect("build ping"),
        pong_tx_or_rx: strategy.build(&pong, Some(pong_efd)).expect("build pong"),
        payload: SharedWord::in_region(region, PAYLOAD).expect("payload slot"),
    }
}

/// A duplicate of `fd` without close-on-exec, for the child to inherit.
fn inheritable(fd: impl AsFd) -> OwnedFd {
    // SAFETY: dup(2) on a live descriptor; no pointers. Unlike OwnedFd::try_clone, dup leaves
    // FD_CLOEXEC clear on the copy.
    let raw = unsafe { libc::dup(fd.as_fd().as_raw_fd()) };
    assert!(raw >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn cross_process_ping_pong(strategy: Strategy, rounds: usize) {
    let _heavy = lock_for(strategy);
    if let Err(e) = strategy.check_available() {
        eprintln!("SKIPPED ({strategy}): {e}");
        return;
    }
    let region = Arc::new(ShmRegion::create("notify-xproc", 4096).expect("memfd"));
    let ping_efd = EventFd::new().expect("eventfd");
    let pong_efd = EventFd::new().expect("eventfd");
    let ch = channel(strategy, &region, &ping_efd, &pong_efd);

    let passed = [
        inheritable(region.fd()),
        inheritable(&ping_efd),
        inheritable(&pong_efd),
    ];
    let fds: Vec<String> = passed.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_STRATEGY, strategy.name())
        .env(CHILD_FDS, fds.join(","))
        .env(CHILD_ROUNDS, rounds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    drop(passed);

    let t0 = Instant::now();
    let mut jitter = Jitter::new(7);
    let mut lost = None;
    for i in 0..rounds {
        jitter.pause();
        if i % 64 == 0 {
            // Give the child time to fall asleep for real, whatever its strategy's budget.
            std::thread::sleep(Duration::from_micros(200));
        }
        ch.payload.notify();
        ch.ping_tx_or_rx.notify();
        let t = Instant::now();
        let r = ch.pong_tx_or_rx.wait(Some(WAIT_LIMIT));
        // Woken only at the deadline: the wake-up was lost (see common::expect_notified).
        if r != WaitOutcome::Notified || t.elapsed() >= WAIT_LIMIT {
            lost = Some(i);
            break;
        }
    }
    let took = t0.elapsed();

    // The child exits by itself after its last round (or its own bounded failure).
    let deadline = Instant::now() + WAIT_LIMIT * 2;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("child output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lost.is_none(),
        "{strategy}: pong {lost:?} lost; child:\n{log}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "{strategy}: child {status:?}:\n{log}"
    );
    assert!(
        log.contains("child: done"),
        "{strategy}: child did not run:\n{log}"
    );
    eprintln!("{strategy}: {rounds} cross-process round trips in {took:?}");
}

#[test]
fn futex_across_processes() {
    cross_process_ping_pong(Strategy::Futex, common::rounds(5_000));
}

#[test]
fn eventfd_across_processes() {
    cross_process_ping_pong(Strategy::EventFd, common::rounds(5_000));
}

#[test]
fn adaptive_across_processes() {
    cross_process_ping_pong(Strategy::Adaptive, common::rounds(5_000));
}

/// Not a test of its own: the child's side of the tests above, when this binary is run by
/// them (with the environment they set). In a normal test run it returns at once.
#[test]
fn child_process_entry() {
    let Ok(name) = std::env::var(CHILD_STRATEGY) else {
        return;
    };
    let strategy: Strategy = name.parse().expect("strategy");
    let fds: Vec<RawFd> = std::env::var(CHILD_FDS)
        .expect("fds")
        .split(',')
        .map(|s| s.parse().expect("fd"))
        .collect();
    let rounds: u32 = std::env::var(CHILD_ROUNDS)
        .expect("rounds")
        .parse()
        .expect("rounds");
    let [mem, ping, pong] = fds[..] else {
        panic!("expected 3 fds, got {fds:?}");
    };
    // SAFETY: the parent passed these descriptors across exec for us alone and named them in
    // the environment; nothing else in this process owns them.
    let owned = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let region = Arc::new(ShmRegion::from_fd(owned(mem)).expect("map region"));
    let ping_efd = EventFd::from_fd(owned(ping)).expect("ping eventfd");
    let pong_efd = EventFd::from_fd(owned(pong)).expect("pong eventfd");
    let ch = channel(strategy, &region, &ping_efd, &pong_efd);
    println!("child: mapped the region at {:p}", region.as_ptr());
    let mut jitter = Jitter::new(11);
    for i in 0..rounds {
        expect_notified(
            &*ch.ping_tx_or_rx,
            format_args!("child: ping {i} of {rounds}"),
        );
        // The parent bumped the payload before this ping, and waits for our pong before the
        // next: exactly i + 1 by now, and visible.
        assert_eq!(ch.payload.sequence(), i + 1, "child: payload at ping {i}");
        jitter.pause();
        ch.pong_tx_or_rx.notify();
    }
    println!("child: done, {rounds} rounds");
}

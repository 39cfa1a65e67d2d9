//! Self-test of the testpmd harness: two real testpmd instances, a `net_vhost` backend and a
//! `net_virtio_user` frontend sending 64-byte frames, and the counters the harness parses from
//! both must tell the same story. If this fails, every test built on the harness is suspect.

use std::time::Duration;

use nfv_tests::hugepages::ensure_hugepages;
use nfv_tests::peers::require;
use nfv_tests::serial::heavy;
use nfv_tests::testpmd::{wait_for_sockets, Memory, ScratchDir, TestpmdBuilder};

const FRAME: u64 = 64;
/// Descriptors a virtqueue can hold: at most this many frames may still be in flight when the
/// counters are read.
const IN_FLIGHT: u64 = 1024;

#[test]
fn vhost_backend_receives_what_virtio_user_frontend_sends() {
    let Some(testpmd) = require("dpdk-testpmd", "DPDK testpmd, apt-get install dpdk-dev") else {
        return;
    };
    let _heavy = heavy();
    let dir = ScratchDir::new("testpmd-selftest").expect("scratch dir");
    let sock = dir.join("vhost0.sock");
    // Two instances of 256 MB each (128 pages each) when hugepages can be had.
    let huge = ensure_hugepages(256);
    let hugepages = huge.is_some();
    eprintln!(
        "memory: {}",
        huge.as_ref()
            .map(|d| format!("2 MB hugepages at {}", d.display()))
            .unwrap_or_else(|| "--no-huge".into())
    );

    // Backend: main lcore 0, forwarding on lcore 1. Frontend: the other way round, so the two
    // busy pollers get a core each.
    let mut backend = TestpmdBuilder::new("be")
        .binary(&testpmd)
        .lcores(&[0, 1], 0)
        .memory(Memory::huge_or_not(huge.clone(), 256))
        .vhost(&sock, 1)
        .forward_mode("rxonly")
        .lifetime(Duration::from_secs(120))
        .spawn()
        .expect("start backend");
    wait_for_sockets(&[&sock], Duration::from_secs(20)).expect("backend socket");

    let mut frontend = TestpmdBuilder::new("fe")
        .binary(&testpmd)
        .lcores(&[0, 1], 1)
        .memory(Memory::huge_or_not(huge, 256))
        .virtio_user(&sock, 1, Some("02:00:00:00:00:01"))
        .forward_mode("txonly")
        .txpkts(64)
        .lifetime(Duration::from_secs(120))
        .spawn()
        .expect("start frontend");

    frontend
        .wait_links_up(Duration::from_secs(20))
        .expect("frontend link");
    backend
        .wait_links_up(Duration::from_secs(20))
        .expect("backend link");

    backend.start().expect("backend start");
    backend.clear_port_stats().expect("backend clear");
    frontend.clear_port_stats().expect("frontend clear");
    frontend.start().expect("frontend start");
    std::thread::sleep(Duration::from_secs(3));
    let fwd = frontend.stop().expect("frontend stop");
    // Let the backend drain what is still in the ring.
    std::thread::sleep(Duration::from_millis(500));
    let fe = frontend.port_stats().expect("frontend stats")[0];
    let be = backend.port_stats().expect("backend stats")[0];
    let be_fwd = backend.stop().expect("backend stop");
    eprintln!("frontend port stats: {fe:?}\nfrontend forward stats: {fwd:?}");
    eprintln!("backend port stats: {be:?}\nbackend forward stats: {be_fwd:?}");
    eprintln!(
        "throughput: {:.2} Mpps over 3 s ({})",
        fe.tx_packets as f64 / 3.0e6,
        if hugepages { "hugepages" } else { "no-huge" }
    );

    // The frontend really sent, and its two views of that (port stats, forward stats) agree.
    assert!(
        fe.tx_packets > 100_000,
        "frontend sent only {} frames",
        fe.tx_packets
    );
    assert_eq!(fe.tx_bytes, fe.tx_packets * FRAME, "64-byte frames");
    assert_eq!(fe.tx_errors, 0);
    assert_eq!(fwd.ports.len(), 1);
    assert_eq!(
        fwd.ports[0].tx_packets, fe.tx_packets,
        "forward stats and port stats of the frontend disagree"
    );
    assert_eq!(fwd.total.tx_packets, fwd.ports[0].tx_packets);
    assert_eq!(fe.rx_packets, 0, "an rxonly backend sends nothing back");

    // Every frame the frontend put on the ring reached the backend (the ring is drained).
    assert!(
        be.rx_packets <= fe.tx_packets && fe.tx_packets - be.rx_packets <= IN_FLIGHT,
        "backend received {} of {} frames",
        be.rx_packets,
        fe.tx_packets
    );
    assert_eq!(be.rx_bytes, be.rx_packets * FRAME, "64-byte frames");
    assert_eq!(be.rx_errors, 0);
    assert_eq!(be.tx_packets, 0);
    assert_eq!(be_fwd.total.rx_packets, be.rx_packets);

    frontend.quit().expect("frontend quit");
    backend.quit().expect("backend quit");
}

/// Several callers at once (threads here; the lock is a `flock`, so processes alike) all get the
/// same mount, and the pool only grows.
#[test]
fn ensure_hugepages_is_idempotent_under_concurrent_callers() {
    let before = nfv_tests::hugepages::pool();
    let results: Vec<Option<std::path::PathBuf>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| ensure_hugepages(64))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let first = results[0].clone();
    assert!(results.iter().all(|r| *r == first), "{results:?}");
    if let Some(dir) = first {
        assert!(nfv_tests::hugepages::is_hugetlbfs_2m(&dir));
        let after = nfv_tests::hugepages::pool().expect("pool");
        if let Some(before) = before {
            assert!(after.total >= before.total, "the pool shrank");
        }
    } else {
        eprintln!("hugepages unavailable here (not root?); callers fall back to --no-huge");
    }
}

//! The switch's per-burst forwarding cost on one thread: guest A transmits 32 frames of 64 bytes
//! to guest B, the forwarder (the PMD's switching code) takes the burst, learns, looks up, copies
//! each frame into B's receive buffers and returns A's buffers. Only the forwarder's call is
//! timed; the guests' own work (filling, receiving) happens outside the measurement.
//!
//! Both guests are real vhost-user frontends set up with an in-process backend, so the rings,
//! memory mappings and features are those a guest negotiates with the switch.
//!
//! Each size runs twice: as usual, then `_dirty_log` with B being live-migrated (a dirty log
//! mapped, VHOST_F_LOG_ALL acked, both used rings logged), so every write into B's memory is
//! also marked in the log.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhost_user::backend::BackendConfig;
use vhost_user::dirty_log::log_bytes_for;
use vhost_user::guest::{Guest, GuestConfig};
use vhost_user::mmap::create_memfd;
use vhost_user::net::F_LOG_ALL;
use vswitch::config::{PortMode, PortSpec};
use vswitch::pmd::{Forwarder, Shared};
use vswitch::port::Port;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn spec(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        mode: PortMode::Server,
        path: format!("/nonexistent/{name}").into(),
        vlan: None,
        queues: 1,
        fastpath: false,
    }
}

/// Starts logging B's memory as QEMU does when a migration starts; returns the log's fd and
/// length.
fn start_logging(g: &mut Guest) -> (OwnedFd, u64) {
    let d = g.memory().region_desc();
    let bytes = log_bytes_for(d.guest_phys_addr + d.memory_size);
    let fd = create_memfd("bench-dirty-log", bytes, false).unwrap();
    let used = |uva: u64| uva - d.userspace_addr + d.guest_phys_addr;
    let (rx, tx, f) = (g.rx.layout(), g.tx.layout(), g.features);
    let fe = g.frontend();
    fe.set_log_base(bytes, 0, fd.as_fd()).unwrap();
    fe.set_features(f | F_LOG_ALL).unwrap();
    fe.set_vring_addr_logged(0, &rx, used(rx.used_uva)).unwrap();
    fe.set_vring_addr_logged(1, &tx, used(tx.used_uva)).unwrap();
    (fd, bytes)
}

fn forward(c: &mut Criterion) {
    let cfg = |n: &str| GuestConfig {
        name: n.into(),
        ..GuestConfig::default()
    };
    let (mut a, slots_a, _ta) =
        Guest::with_backend(&cfg("bench-a"), BackendConfig::default()).unwrap();
    let (mut b, slots_b, _tb) =
        Guest::with_backend(&cfg("bench-b"), BackendConfig::default()).unwrap();
    let shared = Arc::new(Shared::new(4096, 300));
    let pa = Arc::new(Port::with_slots(0, spec("a"), 1, slots_a));
    let pb = Arc::new(Port::with_slots(1, spec("b"), 1, slots_b));
    let mut fwd = Forwarder::new(0, shared.clone());
    fwd.add_port(pa.clone());
    fwd.add_port(pb.clone());
    // B announces itself so A's frames to B are unicast, as in the loop benchmark.
    shared.fdb.learn(0, MAC_B, 1, 0);
    let mut group = c.benchmark_group("forward");
    let mut log = None;
    for (size, logging) in [(64usize, false), (1518, false), (64, true), (1518, true)] {
        if logging && log.is_none() {
            log = Some(start_logging(&mut b));
        }
        let f = frame(MAC_B, MAC_A, size);
        let suffix = if logging { "_dirty_log" } else { "" };
        group.throughput(Throughput::Elements(32));
        group.bench_function(format!("burst32_{size}B{suffix}"), |bench| {
            let mut scratch = Vec::new();
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..32 {
                        assert!(a.tx.push_tx(&f));
                    }
                    a.tx.publish();
                    let t = Instant::now();
                    let n = fwd.poll(&pa, 1);
                    total += t.elapsed();
                    assert_eq!(n, 32);
                    assert_eq!(b.rx.recv(64, &mut scratch, |_| {}), 32);
                    a.tx.reclaim();
                }
                total
            });
        });
    }
    group.finish();
    // The logged runs did log: B's receive buffers are marked.
    let (fd, bytes) = log.expect("logged runs ran");
    let mut bits = vec![0u8; usize::try_from(bytes).unwrap()];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::from(fd), &mut bits, 0).unwrap();
    assert!(bits.iter().any(|&b| b != 0), "nothing was logged");
}

criterion_group!(benches, forward);
criterion_main!(benches);

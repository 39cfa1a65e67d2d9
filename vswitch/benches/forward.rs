//! The switch's per-burst forwarding cost on one thread: guest A transmits 32 frames of 64 bytes
//! to guest B, the forwarder (the PMD's switching code) takes the burst, learns, looks up, copies
//! each frame into B's receive buffers and returns A's buffers. Only the forwarder's call is
//! timed; the guests' own work (filling, receiving) happens outside the measurement.
//!
//! Both guests are real vhost-user frontends set up with an in-process backend, so the rings,
//! memory mappings and features are those a guest negotiates with the switch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhost_user::backend::BackendConfig;
use vhost_user::guest::{Guest, GuestConfig};
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
    for size in [64usize, 1518] {
        let f = frame(MAC_B, MAC_A, size);
        group.throughput(Throughput::Elements(32));
        group.bench_function(format!("burst32_{size}B"), |bench| {
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
}

criterion_group!(benches, forward);
criterion_main!(benches);

//! FDB hot-path costs: what one packet pays for learning its source and looking up its
//! destination. A 64-byte packet at 10GbE leaves 67 ns for everything, at 40GbE 17 ns.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch::fdb::Fdb;

/// Enough entries to spill out of L1/L2 as a busy switch would (64 K-entry table, 4 K MACs).
const MACS: u32 = 4096;

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

fn port_of(i: u32) -> u16 {
    u16::try_from(i % 64).unwrap_or(0)
}

fn filled() -> Fdb {
    let fdb = Fdb::new(65_536, 300);
    for i in 0..MACS {
        fdb.learn(0, mac(i), port_of(i), 1000);
    }
    fdb
}

fn bench_fdb(c: &mut Criterion) {
    let fdb = filled();
    let macs: Vec<[u8; 6]> = (0..MACS).map(mac).collect();
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(1));

    // Same second, same port: the steady state, which must not write.
    let mut i = 0usize;
    g.bench_function("learn_hit", |b| {
        b.iter(|| {
            i = (i + 1) % macs.len();
            let port = port_of(u32::try_from(i).unwrap_or(0));
            black_box(fdb.learn(0, black_box(macs[i]), port, black_box(1000)))
        })
    });

    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % macs.len();
            black_box(fdb.lookup(0, black_box(macs[i]), black_box(1000)))
        })
    });

    // Unknown destinations (the flood path): the key matches no slot in its bucket.
    let unknown: Vec<[u8; 6]> = (MACS..2 * MACS).map(mac).collect();
    let mut i = 0usize;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            i = (i + 1) % unknown.len();
            black_box(fdb.lookup(0, black_box(unknown[i]), black_box(1000)))
        })
    });

    // The write path the steady state avoids: the clock advances one second per pass over
    // the MACs, so every learn enters its bucket (compare-exchange), stores and leaves.
    let mut i = 0usize;
    let mut now = 1000u32;
    g.bench_function("learn_refresh", |b| {
        b.iter(|| {
            i = (i + 1) % macs.len();
            if i == 0 {
                now += 1;
            }
            let port = port_of(u32::try_from(i).unwrap_or(0));
            black_box(fdb.learn(0, black_box(macs[i]), port, now + 1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_fdb);
criterion_main!(benches);

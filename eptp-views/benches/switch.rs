//! Cost of one view switch (enter + leave through the trampoline) per backend, in TSC cycles,
//! beside the per-transition baselines DESIGN.md compares it with: a plain system call, and a
//! closure call without any switch. Each benchmark is one enter+leave (or one baseline op).
//!
//! `cargo bench -p eptp-views --bench switch` (about 15 s). PKU runs only where available.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eptp_views::{
    memfd, page_size, Backend, Grant, Perm, Region, RegionId, View, ViewIndex, ViewList,
};

/// TSC cycles (`notify::tsc::now`) as criterion's unit of measure.
struct Cycles;

impl Measurement for Cycles {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        notify::tsc::now()
    }
    fn end(&self, start: u64) -> u64 {
        notify::tsc::now().wrapping_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CyclesFormatter
    }
}

struct CyclesFormatter;

impl ValueFormatter for CyclesFormatter {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "cycles"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "cycles"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "cycles"
    }
}

fn region(pages: usize, id: u64) -> Arc<Region> {
    let len = pages * page_size();
    Arc::new(Region::map(memfd("eptp-views-bench", len).unwrap(), len, RegionId(id)).unwrap())
}

/// A list with one view of `regions` one-page regions, ReadWrite.
fn list(backend: Backend, regions: usize) -> (ViewList, ViewIndex, Vec<Arc<Region>>) {
    let rs: Vec<_> = (0..regions).map(|i| region(1, i as u64)).collect();
    let mut l = ViewList::new(backend).unwrap();
    let idx = l
        .add(
            View::new(
                rs.iter()
                    .map(|r| Grant::whole(r.clone(), Perm::ReadWrite))
                    .collect(),
            )
            .unwrap(),
        )
        .unwrap();
    (l, idx, rs)
}

fn switch(c: &mut Criterion<Cycles>) {
    let mut g = c.benchmark_group("view_switch");
    g.bench_function("baseline/closure_call", |b| {
        b.iter(|| black_box(|| black_box(1u8))())
    });
    g.bench_function("baseline/getpid_syscall", |b| {
        b.iter(|| black_box(std::process::id()))
    });

    let mut backends = vec![Backend::Mprotect];
    if Backend::Pku.available() {
        backends.push(Backend::Pku);
    } else {
        eprintln!("SKIPPED: no PKU on this machine: view_switch/pku not measured");
    }
    for backend in backends {
        for regions in [1, 4] {
            let (l, idx, rs) = list(backend, regions);
            g.bench_function(format!("{backend}/enter_leave/{regions}_region"), |b| {
                b.iter(|| l.enter(black_box(idx), |_| ()).unwrap())
            });
            let p = rs[0].as_ptr();
            g.bench_function(
                format!("{backend}/enter_touch_leave/{regions}_region"),
                |b| {
                    b.iter(|| {
                        // SAFETY: first byte of a ReadWrite grant of the view being entered.
                        l.enter(black_box(idx), |_| unsafe {
                            std::ptr::write_volatile(p, 1)
                        })
                        .unwrap()
                    })
                },
            );
        }
    }
    g.finish();
}

fn config() -> Criterion<Cycles> {
    Criterion::default()
        .with_measurement(Cycles)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! { name = benches; config = config(); targets = switch }
criterion_main!(benches);

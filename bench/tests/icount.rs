//! `bench icount-worker` natively (no valgrind): every path pumps exactly the packets asked for;
//! and `bench check` on instruction counts, from crafted documents and (where valgrind is
//! installed; under CI it must be) from a count taken now.

mod common;

use common::*;
use serde_json::{json, Value};

const PATHS: [&str; 5] = [
    "switch",
    "fastpath-copy",
    "fastpath-zerocopy",
    "ring-limit",
    "ring-limit-desc",
];

#[test]
fn the_worker_pumps_exactly_n_packets_through_every_path() {
    let _heavy = nfv_tests::serial::heavy();
    for path in PATHS {
        for size in ["64", "1518"] {
            let o = bench(&[
                "icount-worker",
                "--path",
                path,
                "--size",
                size,
                "--packets",
                "3000",
            ]);
            let out = text(&o);
            assert_eq!(o.status.code(), Some(0), "{path} {size}: {out}");
            let line = String::from_utf8_lossy(&o.stdout);
            let v: Value =
                serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert_eq!(v["path"], path, "{out}");
            assert_eq!(v["received"], 3000, "{out}");
            assert_eq!(v["sent"], 3000, "{out}");
        }
    }
}

fn figure(path: &str, size: u32, ipp: f64) -> Value {
    json!({"path": path, "size": size, "instructions_per_packet": ipp, "method": "callgrind",
           "packets": 40000, "instructions": [0, 0]})
}

fn doc(icount: Vec<Value>) -> Value {
    json!({
        "schema": 2,
        "machine": {
            "cpu_vendor": "GenuineIntel", "cpu_model": "Xeon", "flags": ["constant_tsc"],
            "tsc_hz": 2_300_000_000u64, "cores": 2, "kernel": "6.1", "hugepages_total": 0,
            "hugepages_free": 0, "view_backend": "mprotect", "notify": "adaptive",
            "steal_pct": null, "loadavg_1m": null
        },
        "trials": 0, "rows": [], "ratios": [], "noisy": null,
        "icount": icount
    })
}

fn write(name: &str, v: &Value) -> String {
    let p = scratch(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn instructions_that_grew_six_percent_fail_the_check() {
    let base = write(
        "icount-base.json",
        &doc(vec![
            figure("switch", 64, 800.0),
            figure("ring-limit", 64, 100.0),
        ]),
    );
    let cur = write(
        "icount-grew.json",
        &doc(vec![
            figure("switch", 64, 848.0),
            figure("ring-limit", 64, 100.0),
        ]),
    );
    let o = bench(&["check", "--baseline", &base, "--current", &cur]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("icount switch@64") && out.contains("+6.0%"),
        "{out}"
    );
    assert!(out.contains("FAIL: grew more than 5%"), "{out}");
    assert!(out.contains("check FAILED"), "{out}");
}

#[test]
fn instructions_within_five_percent_pass_and_missing_figures_are_listed() {
    let base = write(
        "icount-base2.json",
        &doc(vec![
            figure("switch", 64, 800.0),
            figure("ring-limit", 1518, 260.0),
        ]),
    );
    // +4 %, the other figure absent, a new one the baseline lacks.
    let cur = write(
        "icount-held.json",
        &doc(vec![
            figure("switch", 64, 832.0),
            figure("fastpath-copy", 64, 340.0),
        ]),
    );
    let o = bench(&["check", "--baseline", &base, "--current", &cur]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("+4.0%") && out.contains("check passed"),
        "{out}"
    );
    assert!(
        out.contains("icount ring-limit@1518") && out.contains("not in this run"),
        "{out}"
    );
    assert!(
        out.contains("icount fastpath-copy@64 = 340.000: not in the baseline"),
        "{out}"
    );
}

#[test]
fn check_icount_counts_the_baselines_paths_now() {
    if nfv_tests::peers::require("valgrind", "callgrind instruction counts").is_none() {
        return;
    }
    let _heavy = nfv_tests::serial::heavy();
    // No build of the ring's pump takes a billion instructions per packet, nor one.
    let lenient = write(
        "icount-lenient.json",
        &doc(vec![figure("ring-limit", 64, 1e9)]),
    );
    let o = bench(&["check", "--icount", "--baseline", &lenient]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("icount ring-limit@64") && out.contains("check passed"),
        "{out}"
    );
    assert!(out.contains("callgrind"), "{out}");
    let strict = write(
        "icount-strict.json",
        &doc(vec![figure("ring-limit", 64, 1.0)]),
    );
    let o = bench(&["check", "--icount", "--baseline", &strict]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL: grew more than 5%"), "{out}");
}

#[test]
fn check_icount_needs_counts_in_the_baseline() {
    let base = write("icount-none.json", &doc(vec![]));
    let o = bench(&["check", "--icount", "--baseline", &base]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("no instruction counts"), "{out}");
}

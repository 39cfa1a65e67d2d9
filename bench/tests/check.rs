//! `bench check` on crafted documents: one baseline, a run that holds it and runs that do not.

mod common;

use common::*;
use serde_json::{json, Value};

fn summary(x: f64) -> Value {
    json!({"median": x, "min": x, "max": x, "spread": 0.0, "noisy": false, "trials": 5})
}

fn doc(zc_switch: f64, copy_limit: f64) -> Value {
    json!({
        "schema": 2,
        "machine": {
            "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "flags": ["constant_tsc"],
            "tsc_hz": 2_600_000_000u64, "cores": 2, "kernel": "6.1", "hugepages_total": 0,
            "hugepages_free": 0, "view_backend": "mprotect", "notify": "adaptive",
            "steal_pct": 0.0, "loadavg_1m": 1.0
        },
        "trials": 5,
        "rows": [],
        "ratios": [
            {"label": "zero-copy", "path": "fastpath-zerocopy", "reference": "switch",
             "against": "switch", "frame_size": 64, "ratio": summary(zc_switch)},
            {"label": "copy", "path": "fastpath-copy", "reference": "ring-limit",
             "against": "limit", "frame_size": 64, "ratio": summary(copy_limit)}
        ],
        "noisy": null
    })
}

fn write(name: &str, v: &Value) -> String {
    let p = scratch(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn a_run_within_tolerance_passes() {
    let base = write("base-pass.json", &doc(3.0, 0.5));
    // -5 % and +20 %: both held.
    let cur = write("cur-pass.json", &doc(2.85, 0.6));
    let o = bench(&["check", "--baseline", &base, "--current", &cur]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("fastpath-zerocopy/switch@64") && out.contains("-5.0%"),
        "{out}"
    );
    assert!(out.contains("check passed"), "{out}");
}

#[test]
fn a_ratio_that_fell_more_than_ten_percent_fails_the_check() {
    let base = write("base-fail.json", &doc(3.0, 0.5));
    let cur = write("cur-fail.json", &doc(3.0, 0.44));
    let o = bench(&["check", "--baseline", &base, "--current", &cur]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("fastpath-copy/ring-limit@64"), "{out}");
    assert!(out.contains("FAIL: fell more than 10%"), "{out}");
}

#[test]
fn test_baseline_not_a_run_document() {
    let base = write("base-bad.json", &json!([{"scenario": "switch"}]));
    let o = bench(&["check", "--baseline", &base, "--current", &base]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("not a `bench run --json` document"), "{out}");
}

#[test]
fn test_baseline_sharing_no_figure() {
    let base = write("base-none.json", &doc(3.0, 0.5));
    let mut other = doc(3.0, 0.5);
    other["ratios"] = json!([]);
    let cur = write("cur-none.json", &other);
    let o = bench(&["check", "--baseline", &base, "--current", &cur]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("share no figure"), "{out}");
}

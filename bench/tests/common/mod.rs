//! Shared by the bench's integration tests: running the `bench` binary, and the JSON schema of
//! `bench run --json` with the consistency rules its figures obey.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// A scratch file path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `bench` with `args`; panics with its output when it cannot start.
pub fn bench(args: &[&str]) -> Output {
    Command::new(BENCH)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BENCH}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn num(row: &Value, key: &str) -> f64 {
    row.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {row}"))
}

/// Close within a relative tolerance (the figures are computed from the same f64, so only
/// JSON formatting could separate them).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Checks one row: every key of the schema with the right type, and the figures consistent:
/// gbps = mpps * size * 8 / 1000, line-rate % = mpps / (link / ((size + 20) * 8)), 40G% =
/// 10G% / 4, loss = (sent - received) / sent, mpps = received / duration, p50 <= p99 <= p99.9.
pub fn check_row(row: &Value) {
    let obj = row
        .as_object()
        .unwrap_or_else(|| panic!("row is not an object: {row}"));
    for key in [
        "scenario",
        "frame_size",
        "mpps",
        "gbps",
        "line_rate_10g_pct",
        "line_rate_40g_pct",
        "cycles_per_packet",
        "loss_ratio",
        "latency_ns",
    ] {
        assert!(obj.contains_key(key), "`{key}` missing in {row}");
    }
    assert!(row["scenario"].is_string(), "{row}");
    let size = row["frame_size"]
        .as_u64()
        .unwrap_or_else(|| panic!("frame_size not an integer: {row}"));
    assert!((64..=1518).contains(&size), "{row}");
    let size = size as f64;
    let mpps = num(row, "mpps");
    let gbps = num(row, "gbps");
    let p10 = num(row, "line_rate_10g_pct");
    let p40 = num(row, "line_rate_40g_pct");
    let cpp = num(row, "cycles_per_packet");
    let loss = num(row, "loss_ratio");
    assert!(mpps >= 0.0 && cpp >= 0.0, "{row}");
    assert!((0.0..=1.0).contains(&loss), "{row}");
    assert!(
        close(gbps, mpps * size * 8.0 / 1000.0),
        "gbps vs mpps: {row}"
    );
    let line10 = 10e9 / ((size + 20.0) * 8.0) / 1e6;
    let line40 = 40e9 / ((size + 20.0) * 8.0) / 1e6;
    assert!(close(p10, 100.0 * mpps / line10), "10G% vs mpps: {row}");
    assert!(close(p40, 100.0 * mpps / line40), "40G% vs mpps: {row}");
    assert!(close(p40 * 4.0, p10), "40G% vs 10G%: {row}");
    // The extras agree with the headline figures.
    let sent = row["packets_sent"].as_u64().expect("packets_sent");
    let received = row["packets_received"].as_u64().expect("packets_received");
    let secs = num(row, "duration_s");
    assert!(received <= sent, "{row}");
    assert!(secs > 0.0, "{row}");
    assert!(
        close(mpps, received as f64 / secs / 1e6),
        "mpps vs packets/duration: {row}"
    );
    let expect_loss = if sent == 0 {
        0.0
    } else {
        (sent - received) as f64 / sent as f64
    };
    assert!(close(loss, expect_loss), "loss vs packets: {row}");
    let lat = row["latency_ns"]
        .as_object()
        .unwrap_or_else(|| panic!("latency_ns not an object: {row}"));
    let p = |k: &str| {
        let v = lat
            .get(k)
            .unwrap_or_else(|| panic!("latency_ns.{k} missing: {row}"));
        v.as_u64()
            .unwrap_or_else(|| panic!("latency_ns.{k} not an integer: {row}"))
    };
    if received > 0 {
        let (p50, p99, p999) = (p("p50"), p("p99"), p("p999"));
        assert!(
            p50 > 0 && p50 <= p99 && p99 <= p999,
            "percentiles out of order: {row}"
        );
    }
}

/// Reads a `--json` file: a schema-2 document (machine, trials, rows, ratios, noisy), every
/// row checked, and the document's own fields checked; returns the rows.
pub fn read_rows(path: &Path) -> Vec<Value> {
    let doc = read_doc(path);
    doc["rows"].as_array().expect("rows").clone()
}

/// Reads and checks a `--json` document.
pub fn read_doc(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()));
    assert_eq!(v["schema"], 2, "schema: {v}");
    let m = &v["machine"];
    for key in [
        "cpu_vendor",
        "cpu_model",
        "kernel",
        "view_backend",
        "notify",
    ] {
        assert!(m[key].is_string(), "machine.{key}: {m}");
    }
    assert!(m["flags"].is_array(), "machine.flags: {m}");
    assert!(m["tsc_hz"].as_u64().unwrap_or(0) > 0, "machine.tsc_hz: {m}");
    assert!(m["cores"].as_u64().unwrap_or(0) > 0, "machine.cores: {m}");
    assert!(
        m["hugepages_total"].is_u64() && m["hugepages_free"].is_u64(),
        "{m}"
    );
    // Measured over the run on Linux.
    assert!(
        m["steal_pct"]
            .as_f64()
            .is_some_and(|p| (0.0..=100.0).contains(&p)),
        "{m}"
    );
    assert!(m["loadavg_1m"].as_f64().is_some(), "{m}");
    let trials = v["trials"].as_u64().expect("trials");
    assert!(trials >= 1, "{v}");
    let rows = v["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: rows is not an array", path.display()));
    for r in rows {
        check_row(r);
        check_rounds(r, trials);
    }
    for r in v["ratios"].as_array().expect("ratios") {
        check_summary(&r["ratio"]);
        assert!(r["against"] == "switch" || r["against"] == "limit", "{r}");
    }
    assert!(v["noisy"].is_null() || v["noisy"].is_string(), "{v}");
    v
}

/// A row's rounds: one Mpps per round, the headline among them, the statistics consistent.
fn check_rounds(row: &Value, trials: u64) {
    assert_eq!(row["trials"].as_u64(), Some(trials), "{row}");
    let per: Vec<Option<f64>> = row["mpps_per_round"]
        .as_array()
        .expect("mpps_per_round")
        .iter()
        .map(Value::as_f64)
        .collect();
    assert_eq!(per.len() as u64, trials, "{row}");
    let mpps = num(row, "mpps");
    assert!(
        per.iter().flatten().any(|m| close(*m, mpps)),
        "headline not a trial: {row}"
    );
    let stats = &row["stats"];
    for key in ["mpps", "cycles_per_packet"] {
        check_summary(&stats[key]);
    }
    let s = &stats["mpps"];
    assert_eq!(
        s["trials"].as_u64(),
        Some(per.iter().flatten().count() as u64),
        "{row}"
    );
    assert_eq!(row["noisy"], s["noisy"], "{row}");
}

/// min <= median <= max; spread = (max - min) / median; noisy iff spread > 15 %.
pub fn check_summary(s: &Value) {
    let (min, med, max) = (num(s, "min"), num(s, "median"), num(s, "max"));
    assert!(min <= med && med <= max, "{s}");
    if med != 0.0 {
        let spread = num(s, "spread");
        assert!(close(spread, (max - min) / med.abs()), "{s}");
        assert_eq!(s["noisy"].as_bool(), Some(spread > 0.15), "{s}");
    }
}

/// Whether this process can open /dev/kvm read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

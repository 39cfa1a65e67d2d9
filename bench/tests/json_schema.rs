//! `bench run --json` on real scenarios: every row has the schema's keys and its figures agree
//! with each other (mpps, gbps, line-rate percentages, loss, packets, latency order).

mod common;

use common::*;

#[test]
fn every_scenario_but_the_switch_writes_consistent_json() {
    // Two busy threads (the ring's producer and consumer): one heavy test at a time.
    let _heavy = nfv_tests::serial::heavy();
    let json = scratch("rows.json");
    let plot = scratch("rows.svg");
    let o = bench(&[
        "run",
        "--scenario",
        "ring-limit,syscall,kvm-exit,mprotect-view",
        "--size",
        "64,1518",
        "--duration",
        "0.2",
        "--warmup",
        "0",
        "--trials",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let out = text(&o);
    let rows = read_rows(&json);
    let kvm = kvm_usable();
    let mut want = vec!["ring-limit", "syscall", "mprotect-view"];
    if kvm {
        want.push("kvm-exit");
        assert!(o.status.success(), "{out}");
    } else {
        // Reported, never faked: no row, a note saying why, and a failing exit.
        assert!(
            out.contains("kvm-exit: scenario `kvm-exit` is unavailable"),
            "{out}"
        );
        assert!(!o.status.success(), "{out}");
    }
    for s in &want {
        for size in [64, 1518] {
            let r = rows
                .iter()
                .find(|r| r["scenario"] == *s && r["frame_size"] == size)
                .unwrap_or_else(|| panic!("no row for {s} {size}\n{out}"));
            assert!(r["mpps"].as_f64().unwrap() > 0.0, "{s} moved nothing: {r}");
            // Nothing can be lost in these scenarios.
            assert_eq!(r["loss_ratio"].as_f64(), Some(0.0), "{r}");
        }
    }
    assert_eq!(rows.len(), want.len() * 2, "{out}");
    // The table names every scenario that ran.
    let stdout = String::from_utf8_lossy(&o.stdout);
    for s in &want {
        assert!(stdout.contains(s), "{out}");
    }
    let svg = std::fs::read_to_string(&plot).expect("svg written");
    assert!(svg.contains("40GbE line rate") && svg.contains("ring-limit"));
    assert!(plot.with_extension("png").exists(), "png beside the svg");
}

#[test]
fn test_bad_frame_size_and_unknown_scenario() {
    let o = bench(&["run", "--scenario", "syscall", "--size", "32"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("frame size 32 is out of range"));
    let o = bench(&["run", "--scenario", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario `nope`"));
}

#[test]
fn help_explains_every_command_with_examples() {
    let o = bench(&["--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for c in [
        "demo", "run", "rfc2544", "compare", "list", "EXAMPLES", "14.88",
    ] {
        assert!(h.contains(c), "`{c}` missing from --help:\n{h}");
    }
    for (cmd, opts) in [
        (
            "run",
            &[
                "--scenario",
                "--size",
                "--duration",
                "--json",
                "--plot",
                "--rate",
                "--cores",
                "--trials",
            ][..],
        ),
        (
            "rfc2544",
            &["--loss-tolerance", "--resolution", "--max-trials"][..],
        ),
        (
            "compare",
            &["--duration", "--runs", "--script", "--no-nice"][..],
        ),
        ("demo", &["--duration", "--json", "--trials"][..]),
    ] {
        let o = bench(&[cmd, "--help"]);
        let h = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success());
        for opt in opts {
            assert!(
                h.contains(opt),
                "`{opt}` missing from `bench {cmd} --help`:\n{h}"
            );
        }
        assert!(h.contains("EXAMPLE"), "no example in `bench {cmd} --help`");
    }
}

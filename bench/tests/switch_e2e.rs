//! End to end through the switch: `bench run --scenario switch --duration 1` starts the vswitch
//! in-process with a poll thread on core 1, connects two built-in guests over vhost-user and
//! measures; the row must show traffic and obey the JSON schema. Heavy: two busy threads.

mod common;

use common::*;

#[test]
fn switch_scenario_moves_frames_through_the_vswitch() {
    let _heavy = nfv_tests::serial::heavy();
    let json = scratch("switch.json");
    let o = bench(&[
        "run",
        "--scenario",
        "switch",
        "--size",
        "64",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--trials",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let rows = read_rows(&json);
    assert_eq!(rows.len(), 1, "{out}");
    let r = &rows[0];
    assert_eq!(r["scenario"], "switch");
    assert_eq!(r["cycles_of"], "pmd-busy");
    // Even a starved run on a loaded two-core machine moves tens of thousands of frames a
    // second; a broken path moves none.
    assert!(r["mpps"].as_f64().unwrap() > 0.01, "{r}\n{out}");
    assert!(r["packets_received"].as_u64().unwrap() > 10_000, "{r}");
    // Loss happens only when the generator is preempted with B's ring full: a few percent at
    // the very worst, never most of the traffic.
    assert!(r["loss_ratio"].as_f64().unwrap() < 0.05, "{r}");
    assert!(r["cycles_per_packet"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("switch"),
        "{out}"
    );
}

//! The example VNFs refuse bad command lines with a message naming the bad value, before
//! touching any socket. (Being an integration test of this package also makes `cargo test`
//! build the binaries, which the end-to-end tests in `tests/` run.)

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

const PKTGEN: &str = env!("CARGO_BIN_EXE_fp-pktgen");
const SINK: &str = env!("CARGO_BIN_EXE_fp-sink");
const L2FWD: &str = env!("CARGO_BIN_EXE_fp-l2fwd");
const ROGUE: &str = env!("CARGO_BIN_EXE_fp-rogue");

const BASE: [&str; 6] = [
    "--socket",
    "/nonexistent/a.sock",
    "--port",
    "a",
    "--mac",
    "02:00:00:00:00:01",
];

#[test]
fn help_explains_every_binary() {
    for (bin, what) in [
        (PKTGEN, "--rate"),
        (SINK, "--count"),
        (L2FWD, "--next-b"),
        (ROGUE, "--hostile"),
    ] {
        let (code, out) = run(bin, &["--help"]);
        assert_eq!(code, 0, "{bin}");
        assert!(
            out.contains(what) && out.contains("--socket"),
            "{bin}: {out}"
        );
    }
}

#[test]
fn test_pktgen_group_mac_refused() {
    let (code, out) = run(
        PKTGEN,
        &[&BASE[..], &["--dst", "01:00:5e:00:00:01"]].concat(),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("group address"), "{out}");
}

#[test]
fn test_pktgen_malformed_mac() {
    let (code, out) = run(PKTGEN, &[&BASE[..], &["--dst", "02:00:00:00:00"]].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a MAC address"), "{out}");
}

#[test]
fn test_pktgen_size_out_of_range() {
    let (code, out) = run(
        PKTGEN,
        &[
            &BASE[..],
            &["--dst", "02:00:00:00:00:02", "--size", "20000"],
        ]
        .concat(),
    );
    assert_ne!(code, 0);
    assert!(out.contains("size 20000"), "{out}");
}

#[test]
fn test_ring_size_not_power_of_two() {
    let (code, out) = run(SINK, &[&BASE[..], &["--queue-size", "100"]].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("power of two"), "{out}");
}

#[test]
fn test_switch_socket_missing() {
    let (code, out) = run(SINK, &BASE);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("/nonexistent/a.sock") || out.contains("No such file"),
        "{out}"
    );
}

#[test]
fn print_trampoline_gives_a_manifest_line() {
    let (code, out) = run(PKTGEN, &["--print-trampoline"]);
    assert_eq!(code, 0, "{out}");
    let line = out.trim();
    assert!(line.starts_with("sha256:"), "{line}");
    assert_eq!(
        line.split_whitespace().next().unwrap().len(),
        7 + 64,
        "{line}"
    );
    // Stable for the same binary.
    assert_eq!(run(PKTGEN, &["--print-trampoline"]).1.trim(), line);
}

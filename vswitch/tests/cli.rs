//! The `vswitch` command line as an operator meets it: every bad value is refused before
//! anything starts, with a message naming the value and what was expected, and a nonzero exit;
//! `--help` documents every option; a bad `--config` file is refused naming the key.
#![forbid(unsafe_code)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Refusals are immediate; a switch still running after this has started despite its input.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the switch with `builder`'s command line and checks it refused to start: nonzero exit,
/// no poll thread started, no socket created. Returns stderr.
fn refused(builder: SwitchBuilder) -> String {
    let (done, dir) = builder.run_to_exit(REFUSAL_TIMEOUT);
    let code = done.code();
    assert_ne!(code, 0, "accepted: {done:?}");
    assert_eq!(
        code, 2,
        "configuration errors exit 2 like usage errors: {done:?}"
    );
    // The first things a starting switch logs: its poll thread, then "vswitch X starting: ...".
    assert!(
        !done.stderr.contains("polling on core") && !done.stderr.contains("PMD thread(s)"),
        "it started before refusing: {done:?}"
    );
    assert!(
        dir.sockets().is_empty(),
        "sockets created: {:?}",
        dir.sockets()
    );
    done.stderr
}

fn assert_mentions(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "the message lacks `{n}`:\n{stderr}");
    }
}

#[test]
fn test_cli_vlan_5000() {
    let stderr = refused(SwitchBuilder::new("cli-vlan").server("a").vlan("a", 5000));
    assert_mentions(&stderr, &["port `a`", "VLAN `5000`", "1..=4094"]);
}

#[test]
fn test_cli_evpn_names_no_tunnel() {
    let stderr = refused(
        SwitchBuilder::new("cli-evpn")
            .server("a")
            .arg("--evpn")
            .arg("vx9"),
    );
    assert_mentions(&stderr, &["--evpn", "`vx9`", "--vxlan"]);
}

#[test]
fn test_cli_evpn_hold_out_of_range() {
    let stderr = refused(
        SwitchBuilder::new("cli-evpn-hold")
            .server("a")
            .arg("--evpn-hold")
            .arg("3601"),
    );
    assert_mentions(&stderr, &["EVPN hold `3601`", "0..=3600"]);
}

#[test]
fn test_cli_queues_0() {
    let stderr = refused(
        SwitchBuilder::new("cli-queues")
            .server("a")
            .arg("--port-queues")
            .arg("a=0"),
    );
    assert_mentions(&stderr, &["port `a`", "queues `0`", "1..=16"]);
}

#[test]
fn test_cli_duplicate_port_names() {
    let b = SwitchBuilder::new("cli-dup");
    let other = b.path("other.sock");
    let stderr = refused(
        b.server("vm1")
            .arg("--vhost-client")
            .arg(format!("vm1={}", other.display())),
    );
    assert_mentions(&stderr, &["`vm1`", "used twice"]);
}

#[test]
fn test_cli_unknown_option() {
    let stderr = refused(
        SwitchBuilder::new("cli-unknown")
            .arg("--vhost-sever")
            .arg("a=/tmp/a.sock"),
    );
    assert_mentions(&stderr, &["--vhost-sever", "--help"]);
}

#[test]
fn test_cli_pmd_cores_99() {
    let b = SwitchBuilder::new("cli-cores")
        .server("a")
        .default_pmd_cores();
    let stderr = refused(b.arg("--pmd-cores").arg("99"));
    assert_mentions(&stderr, &["core 99", "available:"]);
}

#[test]
fn test_cli_port_name_with_slash() {
    let stderr = refused(
        SwitchBuilder::new("cli-name")
            .arg("--vhost-server")
            .arg("vm/1=/tmp/vswitch-test-never.sock"),
    );
    assert_mentions(&stderr, &["`vm/1`", "A-Z a-z 0-9"]);
}

#[test]
fn test_cli_socket_path_is_a_regular_file() {
    let _heavy = heavy();
    let b = SwitchBuilder::new("cli-regular");
    let file = b.path("a.sock");
    write_file(&file, "not a socket\n");
    let started = Instant::now();
    let (done, dir) = b.server("a").server("b").run_to_exit(REFUSAL_TIMEOUT);
    let code = done.code();
    assert_ne!(code, 0, "{done:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{done:?}");
    assert_mentions(
        &done.stderr,
        &[&file.display().to_string(), "port a", "not a socket"],
    );
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("not a socket\n"),
        "the file was touched"
    );
    assert!(
        dir.sockets().is_empty(),
        "sockets left behind: {:?}",
        dir.sockets()
    );
}

#[test]
fn test_cli_ctl_path_is_a_regular_file() {
    let _heavy = heavy();
    let b = SwitchBuilder::new("cli-ctl-regular").without_ctl();
    let file = b.path("precious.txt");
    write_file(&file, "operator data\n");
    let (done, _dir) = b
        .arg("--ctl")
        .arg(&file)
        .run_to_exit(Duration::from_secs(3));
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("operator data\n"),
        "the switch destroyed the file given as --ctl: {done:?}"
    );
    assert!(
        done.status.is_some_and(|s| !s.success()),
        "the switch accepted a regular file as its control socket: {done:?}"
    );
}

#[test]
fn test_cli_ctl_socket_served_by_another_switch() {
    let _heavy = heavy();
    let first = SwitchBuilder::new("cli-ctl-first").server("a").spawn();
    let b = SwitchBuilder::new("cli-ctl-second").without_ctl();
    let (done, dir) = b
        .server("b")
        .arg("--ctl")
        .arg(&first.ctl)
        .run_to_exit(REFUSAL_TIMEOUT);
    let code = done.code();
    assert_ne!(code, 0, "{done:?}");
    assert_mentions(&done.stderr, &[&first.ctl.display().to_string(), "in use"]);
    assert!(
        dir.sockets().is_empty(),
        "the refused switch left {:?}",
        dir.sockets()
    );
    // The first switch is untouched: its control socket still answers, its port is there.
    assert!(first.is_running());
    assert!(
        is_socket(&first.ctl),
        "the first switch's ctl socket was removed"
    );
    let show = first.show();
    assert_eq!(show.ports.len(), 1, "{show:?}");
    assert_eq!(show.ports[0].name, "a");
    assert!(is_socket(&first.sock("a")));
}

#[test]
fn test_cli_port_socket_served_by_another_switch() {
    let _heavy = heavy();
    let first = SwitchBuilder::new("cli-port-first").server("a").spawn();
    let b = SwitchBuilder::new("cli-port-second");
    let (done, dir) = b
        .server("b")
        .arg("--vhost-server")
        .arg(format!("a={}", first.sock("a").display()))
        .run_to_exit(REFUSAL_TIMEOUT);
    assert_ne!(done.code(), 0, "{done:?}");
    assert_mentions(
        &done.stderr,
        &[&first.sock("a").display().to_string(), "another process"],
    );
    assert!(
        dir.sockets().is_empty(),
        "the refused switch left {:?}",
        dir.sockets()
    );
    // The first switch still serves its port: a guest connects and is set up.
    assert!(is_socket(&first.sock("a")));
    let _guest = connect(&first.sock("a"), "a");
    first.wait_port_state("a", vswitch::ctl::PortState::Running);
}

#[test]
fn help_mentions_every_option() {
    let (done, _dir) = SwitchBuilder::new("cli-help")
        .without_ctl()
        .default_pmd_cores()
        .arg("--help")
        .run_to_exit(REFUSAL_TIMEOUT);
    assert_eq!(done.code(), 0, "{done:?}");
    for option in [
        "--vhost-server",
        "--vhost-client",
        "--port-vlan",
        "--port-queues",
        "--pmd-cores",
        "--ctl",
        "--config",
        "--mac-aging",
        "--evpn",
        "--evpn-mac-limit",
        "--evpn-hold",
        "advertise-all-vni",
        "--log",
        "--help",
        "--version",
        "NAME=SOCKETPATH",
        "NAME=VID",
        "NAME=N",
        "EXAMPLES",
        "[[port]]",
    ] {
        assert!(
            done.stdout.contains(option),
            "--help lacks `{option}`:\n{}",
            done.stdout
        );
    }
}

/// Runs the switch on a config file holding `toml` and returns its refusal.
fn refused_config(test: &str, toml: &str) -> (String, String) {
    let b = SwitchBuilder::new(test);
    let file = b.path("vswitch.toml");
    write_file(&file, toml);
    let stderr = refused(b.arg("--config").arg(&file));
    (stderr, file.display().to_string())
}

#[test]
fn test_cli_config_unknown_key() {
    let (stderr, file) = refused_config("cfg-key", "pmd_core = \"1\"\n");
    assert_mentions(&stderr, &[&file, "pmd_core", "pmd_cores"]);
}

#[test]
fn test_cli_config_unknown_port_key() {
    let (stderr, file) = refused_config(
        "cfg-port-key",
        "[[port]]\nname = \"a\"\nmode = \"server\"\npath = \"/tmp/vswitch-test-never.sock\"\nvlans = 3\n",
    );
    assert_mentions(&stderr, &[&file, "vlans", "line 5"]);
}

#[test]
fn test_cli_config_value_of_wrong_type() {
    let (stderr, file) = refused_config(
        "cfg-type",
        "ctl = \"/tmp/x.sock\"\nmac_aging_secs = \"soon\"\n",
    );
    assert_mentions(&stderr, &[&file, "mac_aging_secs", "line 2", "soon"]);
}

#[test]
fn test_cli_config_vlan_5000() {
    let (stderr, _) = refused_config(
        "cfg-vlan",
        "[[port]]\nname = \"a\"\nmode = \"server\"\npath = \"/tmp/vswitch-test-never.sock\"\nvlan = 5000\n",
    );
    assert_mentions(&stderr, &["port `a`", "VLAN `5000`", "1..=4094"]);
}

#[test]
fn test_cli_config_file_missing() {
    let b = SwitchBuilder::new("cfg-missing");
    let file = b.path("absent.toml");
    let stderr = refused(b.arg("--config").arg(&file));
    assert_mentions(&stderr, &[&file.display().to_string(), "cannot read"]);
}

/// The control case for the refusals above: a good file is served as written.
#[test]
fn config_file_ports_are_served() {
    let _heavy = heavy();
    let b = SwitchBuilder::new("cfg-good");
    let file = b.path("vswitch.toml");
    let sock = b.path("filed.sock");
    write_file(
        &file,
        &format!(
            "mac_aging_secs = 60\n\n[[port]]\nname = \"filed\"\nmode = \"server\"\npath = \"{}\"\nvlan = 10\nqueues = 2\n",
            sock.display()
        ),
    );
    let sw = b.arg("--config").arg(&file).server("cli").spawn();
    assert!(is_socket(&sock), "{}", sw.report());
    let show = sw.show();
    let names: Vec<(&str, Option<u16>, u16)> = show
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.vlan, p.queue_pairs))
        .collect();
    assert_eq!(
        names,
        vec![("cli", None, 1), ("filed", Some(10), 2)],
        "{show:?}"
    );
}

//! Control-plane input against a running switch: malformed control-socket requests, bad
//! `vswitchctl` command lines, and a second `vswitch` started with a bad configuration file or
//! bad command-line values next to it. Each gets an error naming what is wrong, and the running
//! switch is left as it was: same ports in the same states, same sockets, traffic still flowing.
#![forbid(unsafe_code)]

mod common;

use common::*;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost_user::guest::Guest;
use vswitch::ctl::{PortInfo, PortState};

const A: u8 = 1;
const B: u8 = 2;

/// What must not change: every port's name, mode, path, VLAN, state and negotiated features.
fn snapshot(sw: &Switch) -> Vec<(String, String, String, Option<u16>, PortState, u64)> {
    let mut ports: Vec<_> = sw
        .show()
        .ports
        .into_iter()
        .map(|p: PortInfo| {
            (
                p.name,
                format!("{:?}", p.mode),
                p.path.display().to_string(),
                p.vlan,
                p.state,
                p.features,
            )
        })
        .collect();
    ports.sort_by(|x, y| x.0.cmp(&y.0));
    ports
}

fn ping_pong(a: &mut Guest, b: &mut Guest, tag: u64) {
    let ab = frame(mac(B), mac(A), &payload(tag, 64));
    let ba = frame(mac(A), mac(B), &payload(tag + 1, 64));
    send_one(a, &ab);
    assert_eq!(recv_n(b, 1, RECV_TIMEOUT), vec![ab], "A -> B ({tag})");
    send_one(b, &ba);
    assert_eq!(recv_n(a, 1, RECV_TIMEOUT), vec![ba], "B -> A ({tag})");
}

/// One raw request line on the control socket; returns the switch's error message, checking the
/// same connection still answers a good request afterwards.
fn refused_raw(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> String {
    stream.write_all(line).expect("write request");
    let mut answer = String::new();
    reader.read_line(&mut answer).expect("read answer");
    let v: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("answer to {line:?} is not JSON ({e}): {answer:?}"));
    assert_eq!(
        v["ok"],
        false,
        "{:?} was accepted: {v}",
        String::from_utf8_lossy(line)
    );
    let message = v["error"].as_str().expect("an error message").to_owned();
    stream
        .write_all(b"{\"cmd\":\"show\"}\n")
        .expect("write show");
    let mut again = String::new();
    reader.read_line(&mut again).expect("read show");
    let again: serde_json::Value = serde_json::from_str(&again).expect("show answer");
    assert_eq!(
        again["ok"], true,
        "connection unusable after an error: {again}"
    );
    message
}

fn assert_names(what: &str, message: &str, needles: &[&str]) {
    for n in needles {
        assert!(
            message.contains(n),
            "{what}: `{message}` does not name `{n}`"
        );
    }
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn test_control_malformed_requests_leave_the_running_switch_unchanged() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("ctl-malformed")
        .server("a")
        .server("b")
        .vlan("b", 7)
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    sw.wait_port_state("a", PortState::Running);
    sw.wait_port_state("b", PortState::Running);
    // a is untagged and b on VLAN 7; c joins a's side at run time, so both kinds of port are in
    // the snapshot and traffic runs between a and c.
    let c_path = sw.dir.join("c.sock");
    let mut ctl = sw.ctl();
    ctl.add_port(
        serde_json::from_value(serde_json::json!({
            "name": "c", "mode": "server", "path": c_path,
        }))
        .expect("spec"),
    )
    .expect("add-port c");
    let mut c = connect(&c_path, "c");
    sw.wait_port_state("c", PortState::Running);
    ping_pong(&mut a, &mut c, 0);
    let before = snapshot(&sw);
    let sockets_before = sw.dir.sockets();
    let regular = sw.dir.join("not-a-socket");
    std::fs::write(&regular, b"precious").expect("regular file");

    // Raw control-socket requests.
    let mut stream = UnixStream::connect(&sw.ctl).expect("connect ctl");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (b"show\n".to_vec(), vec!["malformed JSON"]),
        (b"{\"cmd\": \"show\"\n".to_vec(), vec!["malformed JSON"]),
        (b"\xff\xfe\n".to_vec(), vec!["not UTF-8"]),
        (b"[\"show\"]\n".to_vec(), vec!["JSON object"]),
        (b"{\"cmd\":\"reboot\"}\n".to_vec(), vec!["reboot"]),
        (b"{\"name\":\"a\"}\n".to_vec(), vec!["cmd"]),
        (b"{\"cmd\":7}\n".to_vec(), vec!["cmd"]),
        (b"{\"cmd\":\"del-port\"}\n".to_vec(), vec!["name"]),
        (b"{\"cmd\":\"del-port\",\"name\":\"ghost\"}\n".to_vec(), vec!["ghost"]),
        (b"{\"cmd\":\"del-port\",\"name\":3}\n".to_vec(), vec!["name"]),
        (
            b"{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\"}\n".to_vec(),
            vec!["path"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"a\",\"mode\":\"server\",\"path\":\"{}\"}}\n",
                utf8(&sw.dir.join("dup.sock"))
            )
            .into_bytes(),
            vec!["`a`"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\",\"path\":\"{}\",\"vlan\":4095}}\n",
                utf8(&sw.dir.join("d.sock"))
            )
            .into_bytes(),
            vec!["4095"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"listen\",\"path\":\"{}\"}}\n",
                utf8(&sw.dir.join("d.sock"))
            )
            .into_bytes(),
            vec!["listen"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d/e\",\"mode\":\"server\",\"path\":\"{}\"}}\n",
                utf8(&sw.dir.join("d.sock"))
            )
            .into_bytes(),
            vec!["d/e"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\",\"path\":\"{}\"}}\n",
                utf8(&regular)
            )
            .into_bytes(),
            vec!["not-a-socket"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\",\"path\":\"{}\"}}\n",
                utf8(&sw.sock("a"))
            )
            .into_bytes(),
            vec!["a.sock"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\",\"path\":\"{}\",\"queues\":0}}\n",
                utf8(&sw.dir.join("d.sock"))
            )
            .into_bytes(),
            vec!["queues"],
        ),
        (
            format!(
                "{{\"cmd\":\"add-port\",\"name\":\"d\",\"mode\":\"server\",\"path\":\"{}\",\"colour\":1}}\n",
                utf8(&sw.dir.join("d.sock"))
            )
            .into_bytes(),
            vec!["colour"],
        ),
    ];
    for (line, needles) in &cases {
        let m = refused_raw(&mut stream, &mut reader, line);
        assert_names(&String::from_utf8_lossy(line), &m, needles);
    }
    // A request far over the size bound.
    let mut big = br#"{"cmd":"show","pad":""#.to_vec();
    big.resize(1 << 20, b'a');
    big.extend_from_slice(b"\"}\n");
    let m = refused_raw(&mut stream, &mut reader, &big);
    assert_names("oversized request", &m, &["too large"]);
    drop(reader);
    drop(stream);

    // Bad vswitchctl command lines: exit status 2 for what the command line parser refuses, 1
    // for what the switch refuses (a VLAN out of range is the switch's to judge), each with a
    // message naming the problem.
    let bad_cli: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        (vec!["frobnicate".into()], 2, vec!["frobnicate"]),
        (
            vec!["add-port".into(), "--name".into(), "d".into()],
            2,
            vec!["--server"],
        ),
        (
            vec![
                "add-port".into(),
                "--name".into(),
                "d".into(),
                "--server".into(),
                utf8(&sw.dir.join("d.sock")).into(),
                "--vlan".into(),
                "5000".into(),
            ],
            1,
            vec!["5000"],
        ),
        (
            vec![
                "add-port".into(),
                "--name".into(),
                "d".into(),
                "--server".into(),
                utf8(&sw.dir.join("d.sock")).into(),
                "--queues".into(),
                "many".into(),
            ],
            2,
            vec!["many"],
        ),
        (vec!["del-port".into(), "ghost".into()], 1, vec!["ghost"]),
        (
            vec![
                "add-port".into(),
                "--name".into(),
                "b".into(),
                "--server".into(),
                utf8(&sw.dir.join("d.sock")).into(),
            ],
            1,
            vec!["`b`"],
        ),
    ];
    for (args, code, needles) in &bad_cli {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sw.vswitchctl(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "vswitchctl {args:?}: {:?}\n{stderr}",
            out.status
        );
        assert_names(&format!("vswitchctl {args:?}"), &stderr, needles);
    }

    // A second switch with a bad configuration file or bad values, pointed at the running one's
    // sockets: refused before it touches them.
    let bad_toml = sw.dir.join("bad.toml");
    let cases: Vec<(&str, Vec<OsString>, Vec<&str>)> = vec![
        (
            "[[port]]\nname = \"a\"\nmode = \"server\"\npath = \"x.sock\"\nvlan = 9999\n",
            vec!["--config".into(), bad_toml.clone().into()],
            vec!["9999"],
        ),
        (
            "pmd_cores = \"0-\"\n",
            vec!["--config".into(), bad_toml.clone().into()],
            vec!["0-"],
        ),
        (
            "[[port]]\nname = \"a\"\npath = 7\n",
            vec!["--config".into(), bad_toml.clone().into()],
            vec!["path"],
        ),
        (
            "",
            vec![
                "--vhost-server".into(),
                format!("a={}", utf8(&sw.sock("a"))).into(),
                "--ctl".into(),
                sw.dir.join("ctl2.sock").into(),
            ],
            vec!["a.sock"],
        ),
        (
            "",
            vec![
                "--vhost-server".into(),
                format!("z={}", utf8(&sw.dir.join("z.sock"))).into(),
                "--ctl".into(),
                sw.ctl.clone().into(),
            ],
            vec!["ctl.sock"],
        ),
        (
            "",
            vec!["--pmd-sleep-max".into(), "forever".into()],
            vec!["forever"],
        ),
    ];
    for (toml, args, needles) in &cases {
        std::fs::write(&bad_toml, toml).expect("write config");
        let done = run_to_exit(VSWITCH, args, Duration::from_secs(20));
        assert_ne!(done.code(), 0, "vswitch {args:?} with {toml:?} started");
        assert_names(&format!("vswitch {args:?} {toml:?}"), &done.stderr, needles);
    }

    // Nothing changed: ports, sockets, the regular file, and traffic.
    assert_eq!(snapshot(&sw), before);
    assert_eq!(sw.dir.sockets(), sockets_before);
    assert_eq!(std::fs::read(&regular).expect("read"), b"precious");
    assert!(!sw.dir.join("d.sock").exists());
    assert!(!sw.dir.join("z.sock").exists());
    assert!(!sw.dir.join("ctl2.sock").exists());
    assert!(sw.port_info("d").is_none());
    ping_pong(&mut a, &mut c, 10);
    // b (on VLAN 7) still answers its own kind.
    let b2_path = sw.dir.join("b2.sock");
    ctl.add_port(
        serde_json::from_value(serde_json::json!({
            "name": "b2", "mode": "server", "path": b2_path, "vlan": 7,
        }))
        .expect("spec"),
    )
    .expect("add-port b2");
    let mut b2 = connect(&b2_path, "b2");
    ping_pong(&mut b2, &mut b, 20);
    assert!(sw.is_running());
}

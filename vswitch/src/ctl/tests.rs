//! The control socket end to end: a real socket, a fake switch, good and hostile clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::testing::*;
use super::*;
use crate::config::{PortMode, PortSpec};

/// A raw line-level client, to send what `CtlClient` never would.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }
    fn response(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "response must be one line: {line:?}");
        serde_json::from_str(&line).unwrap()
    }
    fn request(&mut self, line: &str) -> Value {
        self.send(format!("{line}\n").as_bytes());
        self.response()
    }
    /// The error message of an `ok:false` response, then proof the connection still works.
    fn refused_then_usable(&mut self, line: &[u8]) -> String {
        self.send(line);
        let r = self.response();
        assert_eq!(r["ok"], false, "{r}");
        let message = r["error"].as_str().unwrap().to_owned();
        let again = self.request(r#"{"cmd":"show"}"#);
        assert_eq!(
            again["ok"], true,
            "connection unusable after an error: {again}"
        );
        message
    }
}

fn spec(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        mode: PortMode::Server,
        path: format!("/tmp/{name}.sock").into(),
        vlan: Some(10),
        queues: 2,
        fastpath: false,
    }
}

#[test]
fn test_ctl_round_trip_every_command() {
    let server = TestServer::start();
    let mut c = CtlClient::connect(&server.path).unwrap();
    assert_eq!(c.show().unwrap(), ShowReply::default());
    c.add_port(spec("vm1")).unwrap();
    assert_eq!(*server.switch.ports.lock().unwrap(), vec![spec("vm1")]);
    let show = c.show().unwrap();
    assert_eq!(show.ports, vec![sample_port_info(&spec("vm1"))]);
    assert_eq!(c.stats().unwrap(), server.switch.stats());
    assert_eq!(c.fdb().unwrap(), server.switch.fdb());
    assert_eq!(c.pmd_stats().unwrap(), server.switch.pmd_stats());
    assert_eq!(c.pmd_rxq_show().unwrap(), sample_rxq_show());
    let dry = RebalanceArgs { dry_run: true };
    assert_eq!(
        c.pmd_rxq_rebalance(dry.clone()).unwrap(),
        sample_rebalance(&dry)
    );
    c.del_port("vm1").unwrap();
    assert!(server.switch.ports.lock().unwrap().is_empty());
}

#[test]
fn test_ctl_response_shape() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let r = raw.request(r#"{"cmd":"pmd-stats"}"#);
    assert_eq!(r["ok"], true);
    assert_eq!(r["data"]["pmds"][0]["core"], 1);
    let r = raw.request(r#"{"cmd":"del-port","name":"nope"}"#);
    assert_eq!(r, json!({"ok": false, "error": "no port named `nope`"}));
    let r =
        raw.request(r#"{"cmd":"add-port","name":"vm2","mode":"client","path":"/tmp/vm2.sock"}"#);
    assert_eq!(r, json!({"ok": true, "data": null}));
    assert_eq!(server.switch.ports.lock().unwrap()[0].queues, 1);
}

#[test]
fn test_ctl_handler_error_is_refused() {
    let server = TestServer::start();
    let mut c = CtlClient::connect(&server.path).unwrap();
    c.add_port(spec("vm1")).unwrap();
    let err = c.add_port(spec("vm1")).unwrap_err();
    assert!(
        matches!(&err, CtlError::Refused(m) if m.contains("already exists")),
        "{err}"
    );
    c.show().unwrap();
}

#[test]
fn test_ctl_malformed_json() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\": \"show\"\n");
    assert!(m.starts_with("malformed JSON"), "{m}");
    let m = raw.refused_then_usable(b"show\n");
    assert!(m.starts_with("malformed JSON"), "{m}");
    let m = raw.refused_then_usable(b"\xff\xfe\n");
    assert!(m.contains("not UTF-8"), "{m}");
}

#[test]
fn test_ctl_not_an_object() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"[\"show\"]\n");
    assert!(m.contains("JSON object") && m.contains("an array"), "{m}");
}

#[test]
fn test_ctl_unknown_command() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"reboot\"}\n");
    assert!(m.contains("unknown command `reboot`"), "{m}");
    assert!(
        m.contains("pmd-stats"),
        "the message lists the commands: {m}"
    );
}

#[test]
fn test_ctl_missing_cmd() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"name\":\"vm1\"}\n");
    assert!(m.contains("missing `cmd`"), "{m}");
    let m = raw.refused_then_usable(b"{\"cmd\":7}\n");
    assert!(m.contains("`cmd` must be a string"), "{m}");
}

#[test]
fn test_ctl_show_with_arguments() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"stats\",\"port\":\"vm1\"}\n");
    assert!(
        m.contains("takes no arguments") && m.contains("port"),
        "{m}"
    );
}

#[test]
fn test_ctl_pmd_rxq_wire_format() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let r = raw.request(r#"{"cmd":"pmd-rxq-show"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["pmds"][0]["queues"][1]["queue"], 3);
    assert_eq!(r["data"]["pmds"][1]["queues"][0]["kind"], "uplink");
    assert_eq!(r["data"]["pmds"][1]["queues"][0]["pinned"], true);
    // `dry_run` is optional and defaults to false.
    let r = raw.request(r#"{"cmd":"pmd-rxq-rebalance"}"#);
    assert_eq!(r["data"]["applied"], true, "{r}");
    let r = raw.request(r#"{"cmd":"pmd-rxq-rebalance","dry_run":true}"#);
    assert_eq!(r["data"]["applied"], false, "{r}");
    assert_eq!(r["data"]["moves"][0]["to_pmd"], 1, "{r}");
    assert_eq!(
        *server.switch.rebalances.lock().unwrap(),
        vec![
            RebalanceArgs { dry_run: false },
            RebalanceArgs { dry_run: true }
        ]
    );
}

#[test]
fn test_ctl_pmd_rxq_bad_arguments() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"pmd-rxq-show\",\"pmd\":0}\n");
    assert!(
        m.contains("pmd-rxq-show takes no arguments, got `pmd`"),
        "{m}"
    );
    let m = raw.refused_then_usable(b"{\"cmd\":\"pmd-rxq-rebalance\",\"dry_run\":\"yes\"}\n");
    assert!(
        m.contains("`dry_run` must be a boolean, got a string"),
        "{m}"
    );
    let m = raw.refused_then_usable(b"{\"cmd\":\"pmd-rxq-rebalance\",\"dryrun\":true}\n");
    assert!(
        m.starts_with("pmd-rxq-rebalance:") && m.contains("unknown field `dryrun`"),
        "{m}"
    );
    // None of them reached the switch.
    assert!(server.switch.rebalances.lock().unwrap().is_empty());
}

#[test]
fn test_ctl_oversized_request() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    // Valid JSON, just too big: the size bound must hold before parsing.
    let mut big = br#"{"cmd":"show","pad":""#.to_vec();
    big.resize(MAX_REQUEST_BYTES + 1000, b'a');
    big.extend_from_slice(b"\"}\n");
    let m = raw.refused_then_usable(&big);
    assert!(m.contains("too large") && m.contains("65536"), "{m}");
    // Exactly at the bound is still read.
    let mut at = br#"{"cmd":"show"}"#.to_vec();
    at.resize(MAX_REQUEST_BYTES, b' ');
    at.push(b'\n');
    raw.send(&at);
    assert_eq!(raw.response()["ok"], true);
}

#[test]
fn test_ctl_add_port_missing_path() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m =
        raw.refused_then_usable(b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\"}\n");
    assert!(m.starts_with("add-port:") && m.contains("`path`"), "{m}");
    assert!(server.switch.ports.lock().unwrap().is_empty());
}

#[test]
fn test_ctl_add_port_vlan_out_of_range() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"vlan\":4095}\n",
    );
    assert!(m.contains("4095") && m.contains("1..=4094"), "{m}");
}

#[test]
fn test_ctl_add_port_bad_mode_and_unknown_field() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"listen\",\"path\":\"/tmp/a\"}\n",
    );
    assert!(m.contains("listen"), "{m}");
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"vlans\":3}\n",
    );
    assert!(m.contains("vlans"), "{m}");
}

#[test]
fn test_ctl_field_of_wrong_type() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"del-port\",\"name\":3}\n");
    assert!(m.contains("`name` must be a string, got a number"), "{m}");
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":[\"/tmp/a\"]}\n",
    );
    assert!(m.contains("`path` must be a string, got an array"), "{m}");
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"fastpath\":\"yes\"}\n",
    );
    assert!(m.contains("`fastpath` must be a boolean"), "{m}");
    assert!(server.switch.ports.lock().unwrap().is_empty());
}

#[test]
fn test_ctl_del_port_missing_name() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"del-port\"}\n");
    assert!(m.contains("`name`"), "{m}");
}

#[test]
fn test_ctl_handler_panic_is_refused() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"add-port\",\"name\":\"boom\",\"mode\":\"server\",\"path\":\"/tmp/boom\"}\n",
    );
    assert!(m.contains("internal error"), "{m}");
}

#[test]
fn test_ctl_blank_lines_and_last_line_without_newline() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    raw.send(b"\n  \n{\"cmd\":\"show\"}");
    raw.writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(raw.response()["ok"], true);
    let mut rest = String::new();
    raw.reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "blank lines get no response");
}

#[test]
fn test_ctl_pipelined_requests_answered_in_order() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    raw.send(b"{\"cmd\":\"show\"}\n{\"cmd\":\"nope\"}\n{\"cmd\":\"fdb\"}\n");
    assert_eq!(raw.response()["ok"], true);
    assert_eq!(raw.response()["ok"], false);
    assert_eq!(
        raw.response()["data"]["entries"][0]["mac"],
        "52:54:00:12:34:56"
    );
}

#[test]
fn test_ctl_idle_connection_closed() {
    let server = TestServer::start_with(ServeOptions {
        idle_timeout: Duration::from_millis(200),
        ..ServeOptions::default()
    });
    let mut raw = Raw::connect(&server.path);
    // Half a request, then silence: the server must not wait forever.
    raw.send(b"{\"cmd\":");
    let mut rest = String::new();
    let started = Instant::now();
    raw.reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Others are still served.
    CtlClient::connect(&server.path).unwrap().show().unwrap();
}

#[test]
fn test_ctl_too_many_connections() {
    let server = TestServer::start_with(ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    });
    let mut first = CtlClient::connect(&server.path).unwrap();
    first.show().unwrap();
    let mut second = Raw::connect(&server.path);
    let r = second.response();
    assert!(r["error"].as_str().unwrap().contains("too many"), "{r}");
    first.show().unwrap();
}

#[test]
fn test_ctl_stop_ends_server_and_connections() {
    let mut server = TestServer::start();
    let mut c = CtlClient::connect(&server.path).unwrap();
    c.show().unwrap();
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.show().is_err(), "connections close when the server stops");
}

#[test]
fn test_ctl_client_socket_missing() {
    let err = CtlClient::connect(Path::new("/nonexistent/ctl.sock")).unwrap_err();
    assert!(matches!(err, CtlError::Connect { .. }));
    assert!(err.to_string().contains("/nonexistent/ctl.sock"), "{err}");
}

#[test]
fn test_ctl_request_wire_format() {
    assert_eq!(
        serde_json::to_value(Request::PmdStats).unwrap(),
        json!({"cmd": "pmd-stats"})
    );
    assert_eq!(
        serde_json::to_value(Request::DelPort { name: "a".into() }).unwrap(),
        json!({"cmd": "del-port", "name": "a"})
    );
    assert_eq!(
        serde_json::to_value(Request::AddPort(spec("vm1"))).unwrap(),
        json!({"cmd": "add-port", "name": "vm1", "mode": "server",
               "path": "/tmp/vm1.sock", "vlan": 10, "queues": 2, "fastpath": false})
    );
}

#[test]
fn test_ctl_capture_count_0() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"capture\",\"port\":\"vm1\",\"count\":0}\n");
    assert!(m.contains("`count` must be at least 1"), "{m}");
}

#[test]
fn test_ctl_capture_bad_direction() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(
        b"{\"cmd\":\"capture\",\"port\":\"vm1\",\"direction\":\"sideways\"}\n",
    );
    assert!(m.starts_with("capture:") && m.contains("sideways"), "{m}");
    let m = raw.refused_then_usable(b"{\"cmd\":\"capture\",\"port\":\"vm1\",\"direction\":1}\n");
    assert!(m.contains("`direction` must be a string"), "{m}");
}

#[test]
fn test_ctl_capture_unknown_port_and_field() {
    let server = TestServer::start();
    let mut raw = Raw::connect(&server.path);
    let m = raw.refused_then_usable(b"{\"cmd\":\"capture\",\"port\":\"nope\"}\n");
    assert_eq!(m, "no port named `nope`");
    let m = raw.refused_then_usable(b"{\"cmd\":\"capture\",\"port\":\"vm1\",\"snaplen\":9}\n");
    assert!(m.contains("snaplen"), "{m}");
    let m = raw.refused_then_usable(b"{\"cmd\":\"capture\"}\n");
    assert!(m.contains("`port`"), "{m}");
}

#[test]
fn test_ctl_capture_through_dispatch() {
    // Other transports cannot stream: they refuse rather than answer with nothing.
    let fake = FakeSwitch::default();
    let err = dispatch(&fake, br#"{"cmd":"capture","port":"vm1"}"#).unwrap_err();
    assert!(err.contains("streams"), "{err}");
}

#[test]
fn ctl_capture_streams_pcap_until_the_count() {
    use crate::capture::{Direction, RX};
    use std::sync::atomic::AtomicBool;
    let server = TestServer::start();
    let tap = server.switch.tap.clone();
    // A poll thread's part: write frames once the capture is attached.
    let writer = std::thread::spawn(move || {
        assert!(wait(|| tap.wants(RX)), "the capture was never attached");
        let mut w = tap.writer().unwrap();
        for n in 0..3u8 {
            w.push(60, |out| out.fill(n));
        }
    });
    let mut c = CtlClient::connect(&server.path).unwrap();
    let mut out = Vec::new();
    let mut started = None;
    let args = CaptureArgs {
        port: "vm1".into(),
        direction: Direction::Rx,
        count: Some(2),
    };
    let summary = c
        .capture(&args, &mut out, &AtomicBool::new(false), |s| {
            started = Some(s.clone())
        })
        .unwrap();
    writer.join().unwrap();
    assert_eq!(started.unwrap().snaplen, crate::capture::SNAPLEN);
    assert_eq!(
        summary,
        CaptureSummary {
            captured: 2,
            dropped: 0,
            ended: "count reached".into()
        }
    );
    // The file header, then exactly two 60-byte records: the third is beyond the count.
    assert_eq!(&out[..24], &crate::pcap::file_header(65535)[..]);
    assert_eq!(out.len(), 24 + 2 * (16 + 60));
    assert!(out[24 + 16..24 + 76].iter().all(|&b| b == 0));
    assert!(out[24 + 76 + 16..].iter().all(|&b| b == 1));
    assert!(!server.switch.tap.wants(RX), "detached at the end");
}

fn wait(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

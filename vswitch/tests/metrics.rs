//! `vswitch --metrics`: Prometheus scrapes of the real switch while guests' traffic flows; the
//! counters move with the traffic and agree with `vswitchctl stats --json` once it stops.
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::*;

const A: u8 = 1;
const B: u8 = 2;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One scrape: status line and body.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The samples of a scrape: `name{labels}` -> value.
fn samples(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn sample(s: &BTreeMap<String, u64>, key: &str) -> u64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample `{key}` in {s:#?}"))
}

#[test]
fn metrics_move_with_traffic_and_agree_with_vswitchctl_stats() {
    let _heavy = heavy();
    let port = free_port();
    let sw = SwitchBuilder::new("metrics")
        .server("a")
        .server("b")
        .arg("--metrics")
        .arg(port.to_string())
        .spawn();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        wait_for(START_TIMEOUT, || TcpStream::connect(addr).is_ok()),
        "metrics not served on {addr}\n{}",
        sw.report()
    );
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b is here"));
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT).len(), 1);

    let (status, body) = scrape(addr);
    assert!(status.contains("200"), "{status}");
    let before = samples(&body);
    let rx_a = r#"vswitch_port_rx_packets_total{port="a"}"#;
    let tx_b = r#"vswitch_port_tx_packets_total{port="b"}"#;
    let pmd_packets = r#"vswitch_pmd_packets_total{pmd="0"}"#;
    let mut last = sample(&before, rx_a);
    // Scrapes between rounds of traffic: every round shows in the next scrape.
    for round in 0..5u64 {
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|i| frame(mac(B), mac(A), &payload(round * 100 + i, 64)))
            .collect();
        send(&mut a, &frames);
        assert_eq!(recv_n(&mut b, 100, RECV_TIMEOUT).len(), 100);
        let mut now = 0;
        assert!(
            wait_for(RECV_TIMEOUT, || {
                now = sample(&samples(&scrape(addr).1), rx_a);
                now >= last + 100
            }),
            "round {round}: rx of a went from {last} to {now}"
        );
        last = now;
    }
    let s = samples(&scrape(addr).1);
    assert!(sample(&s, tx_b) >= sample(&before, tx_b) + 500);
    assert!(sample(&s, pmd_packets) >= sample(&before, pmd_packets) + 500);
    assert!(
        sample(&s, r#"vswitch_pmd_busy_cycles_total{pmd="0"}"#)
            > sample(&before, r#"vswitch_pmd_busy_cycles_total{pmd="0"}"#)
    );
    assert!(sample(&s, "vswitch_fdb_entries") >= 2, "a and b learned");
    assert!(
        sample(
            &s,
            r#"vswitch_port_vhost_user_messages_total{port="a",kind="requests"}"#
        ) > 0
    );

    // Quiet now: the scrape and `vswitchctl stats --json` read the same counters.
    let out = sw.vswitchctl(&["stats", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = samples(&scrape(addr).1);
    for p in stats["ports"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        for field in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
            let key = format!("vswitch_port_{field}_total{{port=\"{name}\"}}");
            assert_eq!(sample(&s, &key), p[field].as_u64().unwrap(), "{key}");
        }
        for (reason, v) in p["drops"].as_object().unwrap() {
            let key = format!("vswitch_port_drops_total{{port=\"{name}\",reason=\"{reason}\"}}");
            assert_eq!(sample(&s, &key), v.as_u64().unwrap(), "{key}");
        }
    }
}

#[test]
fn test_metrics_port_in_use() {
    let _heavy = heavy();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (done, _dir) = SwitchBuilder::new("metrics-in-use")
        .server("a")
        .arg("--metrics")
        .arg(&port)
        .run_to_exit(START_TIMEOUT);
    assert_ne!(done.code(), 0, "{done:?}");
    assert!(
        done.stderr.contains("metrics server on 127.0.0.1:") && done.stderr.contains("in use"),
        "{done:?}"
    );
}

#[test]
fn test_metrics_bad_address() {
    let (done, _dir) = SwitchBuilder::new("metrics-bad")
        .arg("--metrics")
        .arg("localhost:99999")
        .run_to_exit(START_TIMEOUT);
    assert_eq!(done.code(), 2, "{done:?}");
    assert!(
        done.stderr.contains("--metrics `localhost:99999`"),
        "{done:?}"
    );
}

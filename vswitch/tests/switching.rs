//! The switch's forwarding, seen from in-process virtio-net guests attached over real
//! vhost-user sockets to the real `vswitch` binary: MAC learning, flooding, VLAN isolation,
//! drops and their counters, jumbo frames, and a long lossless run.
//!
//! Absence is proven with markers, not with sleeps: frames from one guest reach each
//! destination in the order sent, so a guest that receives a broadcast marker sent after some
//! frames, and nothing else, was not sent those frames.
#![forbid(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use vhost_user::guest::GuestConfig;
use vhost_user::net::F_MRG_RXBUF;

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;
const D: u8 = 4;
const E: u8 = 5;
const F: u8 = 6;

/// A frame addressed to nobody the switch knows.
const UNKNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// An IPv4 multicast group address (group bit set).
const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];

#[test]
fn learned_unicast_reaches_only_its_destination() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("learning")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("c"), "c");

    // B announces itself; A and C see the broadcast.
    let hello = frame(BROADCAST, mac(B), b"hello from b");
    send_one(&mut b, &hello);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello.clone()], "a");
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![hello.clone()], "c");

    // A to B, then a broadcast marker from A.
    let unicast = frame(mac(B), mac(A), &payload(1, 200));
    let m = marker(mac(A), "after-unicast");
    send(&mut a, &[unicast.clone(), m.clone()]);
    let at_b = recv_until(&mut b, &m, "b");
    assert_eq!(
        at_b,
        vec![unicast],
        "b must get the unicast and not its own broadcast back: {}",
        describe(&at_b)
    );
    let at_c = recv_until(&mut c, &m, "c");
    assert!(
        at_c.is_empty(),
        "c received a unicast for a learned MAC on another port: {}",
        describe(&at_c)
    );
}

#[test]
fn broadcast_and_unknown_unicast_flood_to_every_other_port() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("flooding")
        .server("a")
        .server("b")
        .server("c")
        .server("d")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut others = vec![
        ("b", connect(&sw.sock("b"), "b")),
        ("c", connect(&sw.sock("c"), "c")),
        ("d", connect(&sw.sock("d"), "d")),
    ];

    let flooded = vec![
        frame(BROADCAST, mac(A), b"broadcast"),
        frame(UNKNOWN, mac(A), b"unknown unicast"),
        frame(MULTICAST, mac(A), b"multicast"),
    ];
    let m = marker(mac(A), "a");
    let mut all = flooded.clone();
    all.push(m.clone());
    send(&mut a, &all);
    for (name, g) in &mut others {
        let got = recv_until(g, &m, name);
        assert_eq!(got, flooded, "{name}: {}", describe(&got));
    }

    // Nothing of that came back to A: a marker from B is the first thing A sees.
    let mb = marker(mac(B), "b");
    send_one(&mut others[0].1, &mb);
    let back = recv_until(&mut a, &mb, "a");
    assert!(
        back.is_empty(),
        "flooded frames went back to their sender: {}",
        describe(&back)
    );
    let a_stats = sw.port_stats_when("a", |s| s.tx_packets >= 1);
    assert_eq!(
        a_stats.tx_packets, 1,
        "only B's marker went to a: {a_stats:?}"
    );
}

#[test]
fn vlans_never_see_each_others_frames() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("vlans")
        .server("a")
        .server("b")
        .server("c")
        .server("d")
        .server("e")
        .server("f")
        .vlan("a", 10)
        .vlan("b", 10)
        .vlan("c", 20)
        .vlan("d", 20)
        .spawn();
    // a, b: VLAN 10; c, d: VLAN 20; e, f: untagged.
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("c"), "c");
    let mut d = connect(&sw.sock("d"), "d");
    let mut e = connect(&sw.sock("e"), "e");
    let mut f = connect(&sw.sock("f"), "f");

    // VLAN 20 first, so that C's MAC is learned there before A addresses it.
    let c_frames = vec![
        frame(BROADCAST, mac(C), b"c broadcast"),
        frame(UNKNOWN, mac(C), b"c unknown"),
    ];
    let mc = marker(mac(C), "c");
    send(&mut c, &[c_frames.clone(), vec![mc.clone()]].concat());
    assert_eq!(recv_until(&mut d, &mc, "d"), c_frames, "d (VLAN 20)");

    // A addresses C's MAC: unknown in VLAN 10, so it floods there (to B), never to C.
    let a_frames = vec![
        frame(BROADCAST, mac(A), b"a broadcast"),
        frame(UNKNOWN, mac(A), b"a unknown"),
        frame(mac(C), mac(A), b"a to c's mac"),
    ];
    let ma = marker(mac(A), "a");
    send(&mut a, &[a_frames.clone(), vec![ma.clone()]].concat());
    assert_eq!(recv_until(&mut b, &ma, "b"), a_frames, "b (VLAN 10)");

    let e_frames = vec![frame(BROADCAST, mac(E), b"e broadcast")];
    let me = marker(mac(E), "e");
    send(&mut e, &[e_frames.clone(), vec![me.clone()]].concat());
    assert_eq!(recv_until(&mut f, &me, "f"), e_frames, "f (untagged)");

    // Now each sender hears a marker from its own VLAN and nothing else.
    for (who, rx, tx, src) in [
        ("a", &mut a, &mut b, B),
        ("c", &mut c, &mut d, D),
        ("e", &mut e, &mut f, F),
    ] {
        let m = marker(mac(src), who);
        send_one(tx, &m);
        let got = recv_until(rx, &m, who);
        assert!(
            got.is_empty(),
            "{who} received frames of another VLAN: {}",
            describe(&got)
        );
    }
    // And the FDB keeps C's MAC in VLAN 20 only.
    let fdb = sw.fdb();
    let c_entries: Vec<u16> = fdb
        .entries
        .iter()
        .filter(|x| x.mac == mac(C))
        .map(|x| x.vlan)
        .collect();
    assert_eq!(c_entries, vec![20], "{fdb:?}");
}

/// An 802.1Q-tagged frame sent by a guest on an access port.
fn tagged(dst: [u8; 6], src: [u8; 6], vid: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn test_vlan_tagged_frame_on_access_port() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("tagged")
        .server("a")
        .server("b")
        .vlan("a", 10)
        .vlan("b", 10)
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");

    // Its own VLAN's tag, another VLAN's tag, and a unicast to a known MAC: all dropped.
    let hello = frame(BROADCAST, mac(B), b"b");
    send_one(&mut b, &hello);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello]);
    let bad = vec![
        tagged(BROADCAST, mac(A), 10, b"tagged 10"),
        tagged(BROADCAST, mac(A), 20, b"tagged 20"),
        tagged(mac(B), mac(A), 10, b"tagged unicast"),
    ];
    let m = marker(mac(A), "a");
    send(&mut a, &[bad.clone(), vec![m.clone()]].concat());
    let got = recv_until(&mut b, &m, "b");
    assert!(
        got.is_empty(),
        "tagged frames from an access port were forwarded: {}",
        describe(&got)
    );
    let st = sw.port_stats_when("a", |s| s.rx_packets >= 4);
    assert_eq!(st.drops.get(DROP_VLAN_TAGGED), Some(&3), "{st:?}");
    assert_eq!(st.rx_packets, 4, "received, then dropped: {st:?}");
    let bst = sw.port_stats_when("b", |s| s.tx_packets >= 1);
    assert_eq!(bst.tx_packets, 1, "only the marker reached b: {bst:?}");
}

/// Per-port tallies of what the guests did: (rx = what the guest sent, tx = what it received),
/// named from the switch's side as `vswitchctl stats` names them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

fn sum_len(frames: &[Vec<u8>]) -> u64 {
    frames.iter().map(|f| f.len() as u64).sum()
}

/// `vswitchctl stats --json`, as a port-name keyed map of the four counters and the drops.
fn stats_json(sw: &Switch) -> BTreeMap<String, (Tally, u64)> {
    let out = sw.vswitchctl(&["stats", "--json"]);
    assert!(
        out.status.success(),
        "vswitchctl stats --json: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stats --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let mut map = BTreeMap::new();
    for p in v["ports"].as_array().expect("ports array") {
        let n = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{k} is not a number in {p}"))
        };
        let drops: u64 = p["drops"]
            .as_object()
            .expect("drops object")
            .values()
            .map(|x| x.as_u64().expect("drop count"))
            .sum();
        map.insert(
            p["name"].as_str().expect("name").to_owned(),
            (
                Tally {
                    rx_packets: n("rx_packets"),
                    rx_bytes: n("rx_bytes"),
                    tx_packets: n("tx_packets"),
                    tx_bytes: n("tx_bytes"),
                },
                drops,
            ),
        );
    }
    map
}

#[test]
fn counters_match_what_guests_sent_and_received() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("counters")
        .server("a")
        .server("b")
        .server("c")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("c"), "c");
    let mut want: BTreeMap<String, Tally> = ["a", "b", "c"]
        .iter()
        .map(|n| ((*n).to_owned(), Tally::default()))
        .collect();
    let mut sent = |name: &str, frames: &[Vec<u8>]| {
        let t = want.get_mut(name).expect("port");
        t.rx_packets += frames.len() as u64;
        t.rx_bytes += sum_len(frames);
    };

    // Announcements (flooded), unknown unicast from C (flooded to A and B), unicast both ways.
    let a0 = vec![frame(BROADCAST, mac(A), &payload(0, 46))];
    let b0 = vec![frame(BROADCAST, mac(B), &payload(1, 46))];
    let c_unknown: Vec<Vec<u8>> = (0..7)
        .map(|i| frame(UNKNOWN, mac(C), &payload(100 + i, 86)))
        .collect();
    let a_to_b: Vec<Vec<u8>> = (0..100usize)
        .map(|i| {
            frame(
                mac(B),
                mac(A),
                &payload(1000 + i as u64, 46 + (i * 13) % 1400),
            )
        })
        .collect();
    let b_to_a: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(mac(A), mac(B), &payload(2000 + i, 286)))
        .collect();

    let mut got: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    send(&mut a, &a0);
    sent("a", &a0);
    got.entry("b")
        .or_default()
        .extend(recv_n(&mut b, 1, RECV_TIMEOUT));
    got.entry("c")
        .or_default()
        .extend(recv_n(&mut c, 1, RECV_TIMEOUT));
    send(&mut b, &b0);
    sent("b", &b0);
    got.entry("a")
        .or_default()
        .extend(recv_n(&mut a, 1, RECV_TIMEOUT));
    got.entry("c")
        .or_default()
        .extend(recv_n(&mut c, 1, RECV_TIMEOUT));
    send(&mut c, &c_unknown);
    sent("c", &c_unknown);
    got.entry("a")
        .or_default()
        .extend(recv_n(&mut a, 7, RECV_TIMEOUT));
    got.entry("b")
        .or_default()
        .extend(recv_n(&mut b, 7, RECV_TIMEOUT));
    send(&mut a, &a_to_b);
    sent("a", &a_to_b);
    got.entry("b")
        .or_default()
        .extend(recv_n(&mut b, 100, RECV_TIMEOUT));
    send(&mut b, &b_to_a);
    sent("b", &b_to_a);
    got.entry("a")
        .or_default()
        .extend(recv_n(&mut a, 50, RECV_TIMEOUT));

    // Each guest got exactly what it should, in order.
    let expect_a = [b0.clone(), c_unknown.clone(), b_to_a.clone()].concat();
    let expect_b = [a0.clone(), c_unknown.clone(), a_to_b.clone()].concat();
    let expect_c = [a0.clone(), b0.clone()].concat();
    for (name, expect) in [("a", &expect_a), ("b", &expect_b), ("c", &expect_c)] {
        let g = &got[name];
        assert!(
            g == expect,
            "{name} received {} instead of the {} frames expected",
            describe(g),
            expect.len()
        );
        let t = want.get_mut(name).expect("port");
        t.tx_packets = g.len() as u64;
        t.tx_bytes = sum_len(g);
    }

    // The switch's counters tell the same story (its tx counters are bumped just after the
    // frames become visible to the guest, hence the short wait).
    let mut now = stats_json(&sw);
    let same = |now: &BTreeMap<String, (Tally, u64)>| {
        want.iter()
            .all(|(n, t)| now.get(n).map(|x| x.0) == Some(*t))
    };
    wait_for(Duration::from_secs(2), || {
        now = stats_json(&sw);
        same(&now)
    });
    for (name, t) in &want {
        let (have, drops) = now
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {now:?}"));
        assert_eq!(have, t, "port {name}: switch counters vs. guests' tallies");
        assert_eq!(*drops, 0, "port {name} dropped frames: {now:?}");
    }
    // Nothing else arrived anywhere.
    for (name, g) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let extra = recv_now(g);
        assert!(extra.is_empty(), "{name}: {}", describe(&extra));
    }
}

#[test]
fn fdb_lists_learned_macs_with_port_names() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("fdb")
        .server("a")
        .server("b")
        .server("vm-c")
        .vlan("vm-c", 30)
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("vm-c"), "c");
    assert!(
        sw.fdb().entries.is_empty(),
        "nothing learned before traffic"
    );
    send_one(&mut a, &frame(BROADCAST, mac(A), b"a"));
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    send_one(&mut c, &frame(BROADCAST, mac(C), b"c"));
    // A second source MAC behind port b (a bridge or a second interface in the guest).
    let mb = marker(mac(D), "b2");
    send_one(&mut b, &mb);
    recv_until(&mut a, &mb, "a");
    // C's frame went nowhere (C is alone in its VLAN): wait for the switch to have taken it.
    let mut fdb = sw.fdb();
    wait_for(RECV_TIMEOUT, || {
        fdb = sw.fdb();
        fdb.entries.len() >= 4
    });

    let mut table: Vec<(String, u16, String)> = fdb
        .entries
        .iter()
        .map(|e| {
            let port = fdb
                .port_names
                .get(&e.port)
                .cloned()
                .unwrap_or_else(|| format!("#{}", e.port));
            (port, e.vlan, vswitch::fdb::format_mac(e.mac))
        })
        .collect();
    table.sort();
    assert_eq!(
        table,
        vec![
            ("a".to_owned(), 0, "02:00:00:00:00:01".to_owned()),
            ("b".to_owned(), 0, "02:00:00:00:00:02".to_owned()),
            ("b".to_owned(), 0, "02:00:00:00:00:04".to_owned()),
            ("vm-c".to_owned(), 30, "02:00:00:00:00:03".to_owned()),
        ],
        "{fdb:?}"
    );
    assert_eq!(fdb.counters.learned, 4, "{:?}", fdb.counters);
    assert!(fdb.entries.iter().all(|e| e.age_secs <= 2), "{fdb:?}");

    // The operator's table says the same.
    let out = sw.vswitchctl(&["fdb"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for (port, vlan, m) in &table {
        assert!(
            text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3 && w[0] == port && w[1] == vlan.to_string() && w[2] == m
            }),
            "`vswitchctl fdb` lacks {port} {vlan} {m}:\n{text}"
        );
    }

    // A MAC that shows up on another port moves there.
    let moved = marker(mac(A), "moved");
    send_one(&mut b, &moved);
    recv_until(&mut a, &moved, "a");
    let fdb = sw.fdb();
    let at: Vec<&str> = fdb
        .entries
        .iter()
        .filter(|e| e.mac == mac(A))
        .map(|e| fdb.port_names[&e.port].as_str())
        .collect();
    assert_eq!(at, vec!["b"], "{fdb:?}");
    assert_eq!(fdb.counters.moved, 1, "{:?}", fdb.counters);
}

/// Guest config for a sender of big frames: the whole frame must fit one TX buffer.
fn big_sender(name: &str, buf_size: u32) -> GuestConfig {
    GuestConfig {
        name: name.into(),
        buf_size,
        mem_bytes: 32 << 20,
        ..GuestConfig::default()
    }
}

#[test]
fn jumbo_frame_crosses_in_mergeable_buffers() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("jumbo").server("a").server("b").spawn();
    let mut a = connect_with(&sw.sock("a"), &big_sender("a", 16384));
    // B keeps the default 2 KiB receive buffers: a 9014-byte frame needs five of them.
    let mut b = connect(&sw.sock("b"), "b");
    assert_ne!(b.features & F_MRG_RXBUF, 0, "MRG_RXBUF was not negotiated");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    recv_n(&mut a, 1, RECV_TIMEOUT);

    let jumbo = frame(mac(B), mac(A), &payload(9000, 9000));
    let jumbo_bcast = frame(BROADCAST, mac(A), &payload(9001, 9000));
    let small = frame(mac(B), mac(A), &payload(1, 100));
    send(&mut a, &[jumbo.clone(), small.clone(), jumbo_bcast.clone()]);
    let got = recv_n(&mut b, 3, RECV_TIMEOUT);
    assert_eq!(got.len(), 3, "b got {}", describe(&got));
    assert_eq!(got[0].len(), 9014);
    assert!(got[0] == jumbo, "the jumbo frame arrived altered");
    assert!(
        got[1] == small,
        "the frame after the jumbo one arrived altered"
    );
    assert!(
        got[2] == jumbo_bcast,
        "the flooded jumbo frame arrived altered"
    );
    let st = sw.port_stats_when("b", |s| s.tx_packets >= 3);
    assert_eq!(st.tx_packets, 3, "{st:?}");
    assert_eq!(st.tx_bytes, 9014 * 2 + 114, "{st:?}");
    assert_eq!(st.drops.values().sum::<u64>(), 0, "{st:?}");
}

#[test]
fn test_frame_larger_than_mtu() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("too-big")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect_with(&sw.sock("a"), &big_sender("a", 16384));
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    recv_n(&mut a, 1, RECV_TIMEOUT);

    // 9019 bytes: one more than a 9000-byte MTU with header and a VLAN tag's room.
    let over = vec![
        frame(mac(B), mac(A), &payload(1, 9005)),
        frame(BROADCAST, mac(A), &payload(2, 9005)),
        frame(mac(B), mac(A), &payload(3, 16000)),
    ];
    let fits = frame(mac(B), mac(A), &payload(4, 9000));
    let m = marker(mac(A), "a");
    send(&mut a, &[over, vec![fits.clone(), m.clone()]].concat());
    let got = recv_until(&mut b, &m, "b");
    assert!(
        got == vec![fits],
        "only the 9014-byte frame may pass: {}",
        describe(&got)
    );
    let st = sw.port_stats_when("a", |s| s.rx_packets >= 5);
    assert_eq!(st.drops.get(DROP_TOO_BIG), Some(&3), "{st:?}");
    assert_eq!(st.rx_packets, 5, "{st:?}");
}

#[test]
fn hundred_thousand_frames_arrive_intact_and_in_order() {
    const N: u64 = 100_000;
    /// Frames in flight at most: B's receive ring (256) can always hold them all.
    const WINDOW: u64 = 192;
    let _heavy = heavy();
    let sw = SwitchBuilder::new("many").server("a").server("b").spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    recv_n(&mut a, 1, RECV_TIMEOUT);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let (mut sent, mut received, mut bytes) = (0u64, 0u64, 0u64);
    let mut scratch = Vec::new();
    let mut bad: Option<String> = None;
    let len_of = |seq: u64| 46 + usize::try_from(seq % 1455).unwrap_or(0);
    while received < N {
        assert!(
            Instant::now() < deadline,
            "only {received} of {N} frames after {:?} ({sent} sent)\n{:?}",
            started.elapsed(),
            sw.stats()
        );
        let mut pushed = false;
        while sent < N && sent - received < WINDOW {
            let f = frame(mac(B), mac(A), &payload(sent, len_of(sent)));
            if !a.tx.push_tx(&f) {
                break;
            }
            sent += 1;
            pushed = true;
        }
        if pushed {
            a.tx.publish();
        }
        a.tx.reclaim();
        b.rx.recv(usize::MAX, &mut scratch, |f| {
            let want = frame(mac(B), mac(A), &payload(received, len_of(received)));
            if bad.is_none() && f != want.as_slice() {
                let seq = f
                    .get(14..22)
                    .and_then(|s| s.try_into().ok())
                    .map(u64::from_le_bytes);
                bad = Some(format!(
                    "frame #{received}: {} bytes carrying seq {seq:?}, expected {} bytes seq {received}",
                    f.len(),
                    want.len()
                ));
            }
            bytes += f.len() as u64;
            received += 1;
        });
        assert!(bad.is_none(), "{}", bad.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{N} frames ({bytes} bytes) in {elapsed:?}: {:.0} frames/s",
        N as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(received, N);
    let extra = recv_n(&mut b, 1, Duration::from_millis(100));
    assert!(extra.is_empty(), "more than sent: {}", describe(&extra));
    let mut ok = false;
    let mut now = sw.stats();
    wait_for(Duration::from_secs(2), || {
        now = sw.stats();
        ok = now
            .ports
            .iter()
            .any(|p| p.name == "b" && p.tx_packets == N && p.tx_bytes == bytes);
        ok
    });
    assert!(ok, "switch counters disagree: {now:?}");
    for p in &now.ports {
        assert_eq!(
            p.drops.values().sum::<u64>(),
            0,
            "drops on {}: {p:?}",
            p.name
        );
    }
    let ast = now.ports.iter().find(|p| p.name == "a").expect("a");
    assert_eq!(ast.rx_packets, N);
    assert_eq!(ast.rx_bytes, bytes);
}

#[test]
fn learned_mac_ages_out_and_floods_again() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("aging")
        .server("a")
        .server("b")
        .server("c")
        .arg("--mac-aging")
        .arg("1")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("c"), "c");
    let hello = frame(BROADCAST, mac(B), b"b");
    send_one(&mut b, &hello);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello.clone()]);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![hello]);
    assert!(sw.fdb().entries.iter().any(|e| e.mac == mac(B)));

    // B falls silent: after a second or two its entry is gone.
    let started = Instant::now();
    let mut fdb = sw.fdb();
    let gone = wait_for(Duration::from_secs(5), || {
        fdb = sw.fdb();
        fdb.entries.iter().all(|e| e.mac != mac(B))
    });
    assert!(gone, "B's MAC still learned after 5 s of silence: {fdb:?}");
    eprintln!("aged out after {:?}", started.elapsed());
    assert!(fdb.counters.expired >= 1, "{:?}", fdb.counters);

    // A frame for B is unknown unicast again: C gets it too.
    let to_b = frame(mac(B), mac(A), b"to b, forgotten");
    send_one(&mut a, &to_b);
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT), vec![to_b.clone()]);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![to_b], "not flooded");
}

/// `--mac-aging SECS`: "forget a learned MAC address after SECS seconds without traffic from
/// it". A guest that talks every 300 ms is never silent for a second, so with `--mac-aging 1`
/// frames to it must never be flooded.
#[test]
fn active_mac_is_not_forgotten_with_one_second_aging() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("aging-active")
        .server("a")
        .server("b")
        .server("c")
        .arg("--mac-aging")
        .arg("1")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut c = connect(&sw.sock("c"), "c");
    let hello = frame(BROADCAST, mac(B), b"b");
    send_one(&mut b, &hello);
    assert_eq!(recv_n(&mut c, 1, RECV_TIMEOUT), vec![hello]);
    recv_n(&mut a, 1, RECV_TIMEOUT);

    // For 3 s (three ticks of the switch's clock): B talks every 300 ms (to A), A sends to B
    // every 5 ms. C must see none of A's frames.
    let started = Instant::now();
    let mut last_b = Instant::now();
    let (mut sent, mut flooded) = (0u64, 0u64);
    let mut seq = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        if last_b.elapsed() >= Duration::from_millis(300) {
            send_one(&mut b, &frame(mac(A), mac(B), b"b is alive"));
            last_b = Instant::now();
        }
        send_one(&mut a, &frame(mac(B), mac(A), &payload(seq, 50)));
        seq += 1;
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
        flooded += recv_now(&mut c).len() as u64;
        recv_now(&mut a);
        recv_now(&mut b);
    }
    flooded += recv_n(&mut c, 1, Duration::from_millis(100)).len() as u64;
    let fdb = sw.fdb();
    assert_eq!(
        flooded, 0,
        "{flooded} of {sent} frames to a MAC heard from every 300 ms were flooded with \
         --mac-aging 1; FDB counters: {:?}",
        fdb.counters
    );
}

/// Frames that find the receiver's ring full are dropped and counted, and the partly filled
/// ring stays sound: with 2 KiB receive buffers a 9014-byte frame needs five of them, so a burst
/// of jumbo frames (mixed with small ones) overflows a 256-entry ring part way through a frame.
#[test]
fn test_receive_ring_full_of_jumbo_frames() {
    const N: u64 = 120;
    let _heavy = heavy();
    let sw = SwitchBuilder::new("ring-full")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect_with(&sw.sock("a"), &big_sender("a", 16384));
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    recv_n(&mut a, 1, RECV_TIMEOUT);

    // Mostly jumbo frames, every fourth a small one that may still fit where a jumbo did not.
    let len_of = |seq: u64| if seq % 4 == 3 { 100 } else { 9000 };
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| frame(mac(B), mac(A), &payload(i, len_of(i))))
        .collect();
    send(&mut a, &frames);
    let ast = sw.port_stats_when("a", |s| s.rx_packets >= N);
    assert_eq!(ast.rx_packets, N, "{ast:?}");
    let bst = sw.port_stats_when("b", |s| s.tx_packets + s.drops.values().sum::<u64>() >= N);

    // B now reads its ring: a prefix-ordered subset of what was sent, each frame intact.
    let got = recv_now(&mut b);
    let mut next = 0usize;
    for (k, f) in got.iter().enumerate() {
        let pos = frames[next..]
            .iter()
            .position(|s| s == f)
            .map(|p| p + next)
            .unwrap_or_else(|| {
                panic!(
                    "frame #{k} at B ({} bytes) is none of the frames sent after #{next}, or \
                     is altered: {}",
                    f.len(),
                    describe(std::slice::from_ref(f))
                )
            });
        next = pos + 1;
    }
    // Per-frame drop reasons only: the `*_ring_*` entries count ring events, see
    // `drops_total_counts_each_dropped_frame_once`.
    let dropped = bst.drops.get(DROP_NO_BUFFERS).copied().unwrap_or(0);
    assert_eq!(
        bst.tx_packets,
        got.len() as u64,
        "delivered per the switch vs. found in B's ring: {bst:?}"
    );
    assert_eq!(
        bst.tx_packets + dropped,
        N,
        "frames neither delivered nor counted as dropped: {bst:?}"
    );
    assert!(dropped > 0, "the ring did not overflow: {bst:?}");
    for (reason, n) in &bst.drops {
        if reason != DROP_NO_BUFFERS && !reason.contains("_ring_") {
            assert_eq!(*n, 0, "{reason}: {bst:?}");
        }
    }

    // The ring works on: more jumbo frames, all delivered intact.
    let more: Vec<Vec<u8>> = (0..20)
        .map(|i| frame(mac(B), mac(A), &payload(1000 + i, 9000)))
        .collect();
    for f in &more {
        send_one(&mut a, f);
        let got = recv_n(&mut b, 1, RECV_TIMEOUT);
        assert!(
            got == vec![f.clone()],
            "after the overflow: {}",
            describe(&got)
        );
    }
}

/// `vswitchctl stats` shows a port's drops by reason and their total (its DROPS column): a frame
/// dropped once must count once in that total.
#[test]
fn drops_total_counts_each_dropped_frame_once() {
    const N: u64 = 300;
    let _heavy = heavy();
    let sw = SwitchBuilder::new("drops-once")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut b, &frame(BROADCAST, mac(B), b"b"));
    recv_n(&mut a, 1, RECV_TIMEOUT);
    // B does not read: its 256 receive buffers fill and the rest of the frames are dropped.
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| frame(mac(B), mac(A), &payload(i, 60)))
        .collect();
    send(&mut a, &frames);
    let bst = sw.port_stats_when("b", |s| {
        s.tx_packets + s.drops.get(DROP_NO_BUFFERS).copied().unwrap_or(0) >= N
    });
    let got = recv_now(&mut b).len() as u64;
    assert_eq!(got, bst.tx_packets, "{bst:?}");
    let total: u64 = bst.drops.values().sum();
    assert_eq!(
        total,
        N - got,
        "{} frames were dropped, the drops total says {total}: {:?}",
        N - got,
        bst.drops
    );
    let out = sw.vswitchctl(&["stats"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(5).copied(),
        Some((N - got).to_string().as_str()),
        "DROPS column:\n{table}"
    );
}

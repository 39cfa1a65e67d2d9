//! Live migration seen from guests attached to the real `vswitch` binary: a moved guest's
//! `SEND_RARP` moves its MAC in the FDB and is heard by the segment; the switch's writes into a
//! migrating guest are logged in the dirty log, and `show` says so per queue; a frontend that
//! gets logging or RARP wrong loses its own connection and no other port notices.
#![forbid(unsafe_code)]

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use common::*;
use vhost_user::dirty_log::log_bytes_for;
use vhost_user::guest::Guest;
use vhost_user::message::protocol_features as pf;
use vhost_user::mmap::create_memfd;
use vhost_user::net::F_LOG_ALL;

const A: u8 = 1;
const B: u8 = 2;

const ETHERTYPE_RARP: u16 = 0x8035;

fn port_id(sw: &Switch, name: &str) -> u16 {
    let f = sw.fdb();
    *f.port_names
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .unwrap_or_else(|| panic!("port {name} not in {:?}", f.port_names))
        .0
}

fn learned_on(sw: &Switch, m: [u8; 6]) -> Option<u16> {
    sw.fdb().entries.iter().find(|e| e.mac == m).map(|e| e.port)
}

/// Traffic from guest A to guest B still flows (the ports a hostile frontend must not
/// disturb, or a port whose migration ended).
fn still_forwarding(a: &mut Guest, b: &mut Guest, tag: &str) {
    let f = frame(mac(B), mac(A), &payload(7, 100));
    let m = marker(mac(A), tag);
    send(a, &[f.clone(), m.clone()]);
    assert_eq!(recv_until(b, &m, "b"), vec![f], "{tag}");
}

/// ... and from B to A.
fn still_forwarding_back(b: &mut Guest, a: &mut Guest, tag: &str) {
    let f = frame(mac(A), mac(B), &payload(8, 100));
    let m = marker(mac(B), tag);
    send(b, &[f.clone(), m.clone()]);
    assert_eq!(recv_until(a, &m, "a"), vec![f], "{tag}");
}

#[test]
fn send_rarp_moves_the_mac_to_the_new_port() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("mig-rarp")
        .server("src")
        .server("b")
        .server("dst")
        .spawn();
    let mut old = connect(&sw.sock("src"), "src");
    let mut b = connect(&sw.sock("b"), "b");
    // A is on port "src"; B learns of it.
    send_one(&mut old, &marker(mac(A), "a-here"));
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT).len(), 1);
    assert!(wait_for(RECV_TIMEOUT, || learned_on(&sw, mac(A))
        == Some(port_id(&sw, "src"))));
    // A arrives on port "dst" (the migration destination's QEMU) and its frontend asks the
    // switch to announce it; the source VM is gone but its connection may linger.
    let mut new = connect(&sw.sock("dst"), "dst");
    new.frontend().send_rarp(mac(A)).unwrap();
    // The segment hears a RARP from A's MAC, as if A had sent it on "dst".
    let got = recv_n(&mut b, 1, RECV_TIMEOUT);
    assert_eq!(got.len(), 1, "b heard no announcement");
    let r = &got[0];
    assert_eq!(&r[0..6], &BROADCAST);
    assert_eq!(&r[6..12], &mac(A));
    assert_eq!(u16::from_be_bytes([r[12], r[13]]), ETHERTYPE_RARP);
    assert_eq!(&r[22..28], &mac(A), "sender hardware address");
    assert_eq!(
        recv_n(&mut old, 1, RECV_TIMEOUT)[0],
        *r,
        "the old port hears it too"
    );
    assert!(
        recv_now(&mut new).is_empty(),
        "not echoed to the announcing port"
    );
    // The FDB moved A at once: B's unicast to A goes to "dst", not to "src".
    assert_eq!(learned_on(&sw, mac(A)), Some(port_id(&sw, "dst")));
    let u = frame(mac(A), mac(B), &payload(1, 64));
    let m = marker(mac(B), "after-move");
    send(&mut b, &[u.clone(), m.clone()]);
    assert_eq!(recv_until(&mut new, &m, "dst"), vec![u]);
    assert!(recv_until(&mut old, &m, "src").is_empty());
    assert_eq!(sw.port_info("dst").unwrap().announcements, 1);
}

#[test]
fn test_send_rarp_without_protocol_feature() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("mig-norarp")
        .server("a")
        .server("b")
        .server("bad")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut bad = connect(&sw.sock("bad"), "bad");
    // The frontend takes back the protocol features it agreed, RARP among them.
    bad.frontend()
        .set_protocol_features(pf::REPLY_ACK | pf::MQ | pf::STATUS)
        .unwrap();
    assert!(bad.frontend().send_rarp(mac(A)).is_err());
    sw.wait_port_state("bad", vswitch::ctl::PortState::Listening);
    let info = sw.port_info("bad").unwrap();
    assert_eq!(info.announcements, 0);
    assert!(
        sw.log()
            .contains("SEND_RARP without the RARP protocol feature"),
        "{}",
        sw.log()
    );
    still_forwarding(&mut a, &mut b, "after-bad-rarp");
}

/// A log for the guest's memory, `bytes` long (all the memory needs when `None`).
fn log_for(g: &Guest, bytes: Option<u64>) -> (OwnedFd, u64) {
    let d = g.memory().region_desc();
    let n = bytes.unwrap_or_else(|| log_bytes_for(d.guest_phys_addr + d.memory_size));
    (create_memfd("mig-log", n, false).unwrap(), n)
}

fn log_pages(fd: &OwnedFd, bytes: u64) -> usize {
    let mut b = vec![0u8; usize::try_from(bytes).unwrap()];
    std::fs::File::from(fd.try_clone().unwrap())
        .read_exact_at(&mut b, 0)
        .unwrap();
    b.iter().map(|x| x.count_ones() as usize).sum()
}

#[test]
fn switch_logs_what_it_writes_into_a_migrating_guest() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("mig-log")
        .server("a")
        .server("b")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let (fd, bytes) = log_for(&a, None);
    let f = a.features;
    let d = a.memory().region_desc();
    let used =
        |l: vhost_user::virtq::QueueLayout| l.used_uva - d.userspace_addr + d.guest_phys_addr;
    let (rx, tx) = (a.rx.layout(), a.tx.layout());
    let fe = a.frontend();
    fe.set_log_base(bytes, 0, fd.as_fd()).unwrap();
    fe.set_features(f | F_LOG_ALL).unwrap();
    fe.set_vring_addr_logged(0, &rx, used(rx)).unwrap();
    fe.set_vring_addr_logged(1, &tx, used(tx)).unwrap();
    let info = sw.port_info("a").unwrap();
    assert!(
        info.queues.iter().all(|q| q.logging && q.log_used),
        "{:?}",
        info.queues
    );
    let out = sw.vswitchctl(&["show"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DIRTY LOG"),
        "{out:?}"
    );
    // The used rings are marked when logging starts; B's frames into A add buffer pages.
    let at_start = log_pages(&fd, bytes);
    assert!(at_start >= 2, "used rings marked: {at_start}");
    let frames: Vec<_> = (0..64)
        .map(|i| frame(mac(A), mac(B), &payload(i, 1400)))
        .collect();
    send(&mut b, &frames);
    assert_eq!(recv_n(&mut a, 64, RECV_TIMEOUT).len(), 64);
    // 64 frames of 1412 bytes in 2 KiB buffers span at least 22 pages.
    assert!(wait_for(RECV_TIMEOUT, || log_pages(&fd, bytes) >= at_start + 22));
    // The migration ends (or is cancelled): logging off; the port keeps forwarding.
    a.frontend().set_features(f).unwrap();
    assert!(sw.port_info("a").unwrap().queues.iter().all(|q| !q.logging));
    still_forwarding_back(&mut b, &mut a, "after-logging");
}

#[test]
fn test_log_fd_too_small_for_memory() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("mig-smalllog")
        .server("a")
        .server("b")
        .server("bad")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut bad = connect(&sw.sock("bad"), "bad");
    let (fd, _) = log_for(&bad, Some(8));
    assert!(bad.frontend().set_log_base(8, 0, fd.as_fd()).is_err());
    sw.wait_port_state("bad", vswitch::ctl::PortState::Listening);
    assert!(
        sw.log().contains("too small for the memory table"),
        "{}",
        sw.log()
    );
    still_forwarding(&mut a, &mut b, "after-small-log");
    // The port takes a new, correct frontend.
    let mut again = connect(&sw.sock("bad"), "bad-again");
    let m = marker(mac(A), "to-bad-again");
    send_one(&mut a, &m);
    assert!(recv_until(&mut again, &m, "bad-again").is_empty());
}

/// A port whose frontend sends `bad` (after a normal setup) loses its connection; the switch
/// says why, and A and B keep forwarding throughout.
fn closes_only_its_port(test: &str, why: &str, bad: impl FnOnce(&mut Guest) -> bool) {
    let _heavy = heavy();
    let sw = SwitchBuilder::new(test)
        .server("a")
        .server("b")
        .server("bad")
        .spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    let mut g = connect(&sw.sock("bad"), "bad");
    still_forwarding(&mut a, &mut b, "before");
    assert!(bad(&mut g), "the bad request was accepted");
    sw.wait_port_state("bad", vswitch::ctl::PortState::Listening);
    assert!(sw.log().contains(why), "{}", sw.log());
    still_forwarding(&mut a, &mut b, "after");
    still_forwarding_back(&mut b, &mut a, "after, back");
}

#[test]
fn test_log_offset_past_file() {
    closes_only_its_port("mig-logoff", "past the end of its", |g| {
        let (fd, bytes) = log_for(g, None);
        g.frontend()
            .set_log_base(bytes, 1 << 30, fd.as_fd())
            .is_err()
    });
}

#[test]
fn test_log_guest_addr_outside_guest_memory() {
    closes_only_its_port("mig-logaddr", "outside guest memory", |g| {
        let (fd, bytes) = log_for(g, None);
        let (f, rx) = (g.features, g.rx.layout());
        let fe = g.frontend();
        fe.set_log_base(bytes, 0, fd.as_fd()).unwrap();
        fe.set_features(f | F_LOG_ALL).unwrap();
        fe.set_vring_addr_logged(0, &rx, 1 << 44).is_err()
    });
}

#[test]
fn test_vring_f_log_with_log_all_before_mem_table() {
    // A fresh frontend on the port: features with LOG_ALL, then a logged ring before any
    // memory table.
    closes_only_its_port("mig-nomem", "before SET_MEM_TABLE", |g| {
        let rx = g.rx.layout();
        let fe = g.frontend();
        // RESET_OWNER-like: a device reset drops the memory table (status 0).
        fe.set_status(0).unwrap();
        fe.set_features(vhost_user::net::F_VERSION_1 | F_LOG_ALL)
            .unwrap();
        fe.set_vring_num(0, 256).unwrap();
        fe.set_vring_addr_logged(0, &rx, 0x1_0000_2000).is_err()
    });
}

//! Hostile vhost-user frontends and guests against the running switch, one test per bad input.
//!
//! Every test starts a switch with three ports (`a`, `b`, `h`, one PMD), connects two healthy
//! guests to `a` and `b` and a hostile frontend or guest H to `h`. H misbehaves — raw messages
//! through its connection, or rings and buffers it corrupts in its own shared memory — and the
//! test then checks that the switch is alive, that A and B still exchange every frame they send
//! each other, that the switch said what happened (a counter of port `h` in `vswitchctl stats
//! --json`, a failure reply, or H's connection closed and the port listening again), and where
//! descriptors or memory were involved, that the switch holds no more file descriptors or
//! mappings of H's memory than it should, and none once H is gone.
#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use vhost_user::driver::{DriverMemory, DriverQueue};
use vhost_user::frontend::Frontend;
use vhost_user::guest::{Guest, GuestConfig};
use vhost_user::message::protocol_features as pf;
use vhost_user::message::{
    mem_table_bytes, single_region_bytes, ConfigMsg, Header, MemRegionDesc, Request, VringAddr,
    VringState, FLAG_NEED_REPLY, FLAG_REPLY, VERSION, VHOST_USER_F_PROTOCOL_FEATURES,
    VRING_NOFD_MASK,
};
use vhost_user::mmap::create_memfd;
use vhost_user::net::{DEVICE_FEATURES, F_INDIRECT_DESC, F_MRG_RXBUF, F_VERSION_1};
use vhost_user::ring::{
    Descriptor, RawRing, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vhost_user::virtq::QueueLayout;
use vswitch::ctl::{PortState, PortStats, StatsReply};

const A: u8 = 1;
const B: u8 = 2;
const H: u8 = 3;
/// Frames sent each way to show that A and B are still served.
const EXCHANGE: usize = 32;
/// Length of the virtio-net header every guest here negotiates (VERSION_1).
const HDR: usize = 12;
/// Descriptor ids the tests write by hand on H's transmit ring, well away from the ones its
/// driver hands out (from 0 up).
const RAW_ID: u16 = 200;
/// Counter of every chain refused on a guest's transmit queue (vswitch/src/switch.rs).
const RX_MALFORMED: &str = "rx_malformed_descriptor_chain";
/// Drop counter of frames not placed because the guest's receive buffers were malformed.
const TX_MALFORMED: &str = "tx_guest_buffers_malformed";

// ---------------------------------------------------------------------------------------------
// The switch, the two healthy guests, and what "still serving" means.

struct Rig {
    a: Guest,
    b: Guest,
    sw: Switch,
    /// The switch's open descriptors with A and B connected and H not yet there.
    fds_without_h: usize,
    round: u64,
    test: String,
    /// When the heavy-test lock was granted.
    started: Instant,
    // Last: released after the switch is gone.
    _heavy: Heavy,
}

impl Drop for Rig {
    fn drop(&mut self) {
        eprintln!(
            "{}: {:?} once the heavy-test lock was taken",
            self.test,
            self.started.elapsed()
        );
    }
}

fn rig(test: &str) -> Rig {
    rig_with(test, |b| b)
}

fn rig_with(test: &str, more: impl FnOnce(SwitchBuilder) -> SwitchBuilder) -> Rig {
    let waited = Instant::now();
    let heavy = heavy();
    let started = Instant::now();
    eprintln!(
        "{test}: waited {:?} for the heavy-test lock",
        started - waited
    );
    let sw = more(SwitchBuilder::new(test).server("a").server("b").server("h")).spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    // Both announce their MAC, so that frames between them are switched, not flooded.
    let hello_a = frame(BROADCAST, mac(A), b"hello from a");
    send_one(&mut a, &hello_a);
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT), vec![hello_a]);
    let hello_b = frame(BROADCAST, mac(B), b"hello from b");
    send_one(&mut b, &hello_b);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT), vec![hello_b]);
    let fds_without_h = settled_fd_count(sw.pid());
    Rig {
        a,
        b,
        sw,
        fds_without_h,
        round: 0,
        test: test.to_owned(),
        started,
        _heavy: heavy,
    }
}

/// The descriptor count of `pid` once it has stopped moving (a control connection just closed
/// may take a moment to go).
fn settled_fd_count(pid: u32) -> usize {
    let mut last = fd_count(pid);
    let mut stable = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while stable < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_count(pid);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

/// A frame of an exchange between the healthy guests: its payload starts with `XCHG`, so the
/// receiver tells it from anything H made arrive.
fn xchg_frame(dst: u8, src: u8, round: u64, i: usize) -> Vec<u8> {
    let mut p = b"XCHG".to_vec();
    p.extend_from_slice(&payload(round * 1000 + i as u64, 40 + (i * 97) % 1400));
    frame(mac(dst), mac(src), &p)
}

/// `from` sends [`EXCHANGE`] frames to `to`; every one must arrive, intact and in order.
fn exchange(from: &mut Guest, to: &mut Guest, dst: u8, src: u8, round: u64) {
    let frames: Vec<Vec<u8>> = (0..EXCHANGE)
        .map(|i| xchg_frame(dst, src, round, i))
        .collect();
    send(from, &frames);
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while got.len() < EXCHANGE && Instant::now() < deadline {
        let n = to.rx.recv(usize::MAX, &mut scratch, |f| {
            if f.get(14..18) == Some(&b"XCHG"[..]) {
                got.push(f.to_vec());
            }
        });
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        got == frames,
        "round {round}: {src} -> {dst}: {} of {EXCHANGE} frames arrived intact and in order: {}",
        got.iter().zip(&frames).take_while(|(g, f)| g == f).count(),
        describe(&got)
    );
}

impl Rig {
    fn pid(&self) -> u32 {
        self.sw.pid()
    }

    /// The switch is alive and A and B exchange frames both ways, all of them arriving.
    fn serving(&mut self, when: &str) {
        assert!(
            self.sw.is_running(),
            "{when}: the switch died: {:?}\n{}",
            self.sw.exit_status(),
            self.sw.report()
        );
        self.round += 1;
        exchange(&mut self.a, &mut self.b, B, A, 2 * self.round);
        exchange(&mut self.b, &mut self.a, A, B, 2 * self.round + 1);
        for (g, name) in [(&self.a, "a"), (&self.b, "b")] {
            assert_eq!(
                (g.rx.errors, g.tx.errors),
                Default::default(),
                "{when}: guest {name} saw the switch misbehave on its rings"
            );
        }
    }

    /// Port `h`'s counters as `vswitchctl stats --json` prints them.
    fn h_stats(&self) -> PortStats {
        let out = self.sw.vswitchctl(&["stats", "--json"]);
        assert!(
            out.status.success(),
            "vswitchctl stats --json: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: StatsReply = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("vswitchctl stats --json: {e}"));
        reply
            .ports
            .into_iter()
            .find(|p| p.name == "h")
            .unwrap_or_else(|| panic!("no port h in vswitchctl stats"))
    }

    /// Waits until port `h`'s counters satisfy `cond`, then checks them once more through
    /// `vswitchctl stats --json`.
    fn h_stats_when(&self, what: &str, cond: impl Fn(&PortStats) -> bool) -> PortStats {
        let st = self.sw.port_stats_when("h", &cond);
        assert!(
            cond(&st),
            "{what}: counters of port h: {st:?}\n{}",
            self.sw.report()
        );
        let st = self.h_stats();
        assert!(cond(&st), "{what}: vswitchctl stats --json: {st:?}");
        st
    }

    /// H's connection has ended: port `h` listens again, the switch holds no more descriptors
    /// than before H came, and none and no mapping of the memfds named in `memfds`.
    fn h_gone(&self, memfds: &[&str]) {
        self.sw.wait_port_state("h", PortState::Listening);
        let pid = self.pid();
        let base = self.fds_without_h;
        let mut now = fd_count(pid);
        let ok = wait_for(RECV_TIMEOUT, || {
            now = fd_count(pid);
            now <= base
        });
        assert!(
            ok,
            "the switch has {now} descriptors open after H left, {base} before H came: {:?}",
            fd_targets(pid)
        );
        for name in memfds {
            assert_eq!(memfd_fds(pid, name), 0, "descriptors of memfd {name} left");
            assert_eq!(
                memfd_mappings(pid, name),
                0,
                "mappings of memfd {name} left"
            );
        }
    }
}

/// A memfd name unique to this test and process.
fn memfd_name(test: &str, what: &str) -> String {
    format!("hostile-{test}-{what}-{}", std::process::id())
}

fn memfd(name: &str) -> OwnedFd {
    create_memfd(name, 1 << 20, false).expect("memfd")
}

fn stat(st: &PortStats, key: &str) -> u64 {
    st.ring_errors
        .get(key)
        .or_else(|| st.drops.get(key))
        .copied()
        .unwrap_or(0)
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).expect("fits in u32")
}

// ---------------------------------------------------------------------------------------------
// H as a raw frontend.

/// Connects to port `h` and negotiates as a frontend would, with REPLY_ACK, so that every
/// request gets a success or failure answer.
fn hostile_frontend(r: &Rig) -> Frontend {
    let mut fe = raw_connect(r);
    let offered = fe.get_features().expect("GET_FEATURES");
    let p = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
    fe.set_protocol_features(
        p & (pf::REPLY_ACK
            | pf::MQ
            | pf::CONFIG
            | pf::STATUS
            | pf::CONFIGURE_MEM_SLOTS
            | pf::BACKEND_REQ),
    )
    .expect("SET_PROTOCOL_FEATURES");
    fe.set_owner().expect("SET_OWNER");
    fe.set_features(
        offered & (F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | VHOST_USER_F_PROTOCOL_FEATURES),
    )
    .expect("SET_FEATURES");
    fe
}

/// Connects to port `h` and says nothing yet.
fn raw_connect(r: &Rig) -> Frontend {
    let mut fe = Frontend::connect(&r.sw.sock("h")).expect("connect to port h");
    // A switch that fails to answer makes the test fail, not hang.
    fe.connection()
        .socket()
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("read timeout");
    fe
}

/// Sends request `code` with NEED_REPLY and returns the ack (0: done, else refused).
fn ack(fe: &mut Frontend, code: u32, body: &[u8], fds: &[RawFd]) -> u64 {
    let h = Header {
        request: code,
        flags: VERSION | FLAG_NEED_REPLY,
        size: u32_of(body.len()),
    };
    let c = fe.connection();
    c.send(&h, body, fds)
        .unwrap_or_else(|e| panic!("sending request {code}: {e}"));
    let reply = c
        .recv()
        .unwrap_or_else(|e| panic!("no answer to request {code}: {e}"));
    assert!(
        reply.header.is_reply() && reply.header.request == code,
        "answer to request {code}: {:?}",
        reply.header
    );
    let bytes: [u8; 8] = reply.body[..]
        .try_into()
        .unwrap_or_else(|_| panic!("ack to {code} of {} bytes", reply.body.len()));
    u64::from_le_bytes(bytes)
}

/// Request `code` must be refused with a failure reply.
fn refused(fe: &mut Frontend, code: u32, body: &[u8], fds: &[RawFd], what: &str) {
    assert_ne!(ack(fe, code, body, fds), 0, "{what}: accepted");
}

fn req(r: Request) -> u32 {
    r as u32
}

/// The connection still works: a GET is answered with the right payload.
fn still_serving(fe: &mut Frontend, when: &str) {
    let f = fe
        .get_features()
        .unwrap_or_else(|e| panic!("{when}: the connection no longer works: {e}"));
    assert_eq!(f, DEVICE_FEATURES, "{when}");
}

/// The switch closes H's connection (reads end with end-of-file) within the receive timeout.
fn closed_by_switch(fe: &mut Frontend, what: &str) {
    let mut s: &UnixStream = fe.connection().socket();
    s.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the switch did not close the connection: {e}"),
        }
    }
}

fn write_raw(fe: &mut Frontend, bytes: &[u8]) {
    let mut s: &UnixStream = fe.connection().socket();
    s.write_all(bytes).expect("write");
}

/// The memory region H describes for a memfd of `size` bytes.
fn region(gpa: u64, size: u64, uva: u64) -> MemRegionDesc {
    MemRegionDesc {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: uva,
        mmap_offset: 0,
    }
}

fn vring_addr(index: u32, l: &QueueLayout) -> [u8; VringAddr::SIZE] {
    VringAddr {
        index,
        flags: 0,
        desc: l.desc_uva,
        used: l.used_uva,
        avail: l.avail_uva,
        log: 0,
    }
    .to_bytes()
}

fn vring_state(index: u32, num: u32) -> [u8; 8] {
    VringState { index, num }.to_bytes()
}

// ---------------------------------------------------------------------------------------------
// H as a guest whose rings the test corrupts.

/// A whole guest on port `h` (memory in a memfd named `name`) that has announced its MAC.
fn hostile_guest(r: &mut Rig, name: &str) -> Guest {
    let cfg = GuestConfig {
        name: name.into(),
        mem_bytes: 2 << 20,
        ..GuestConfig::default()
    };
    let mut h = connect_with(&r.sw.sock("h"), &cfg);
    h.frontend()
        .connection()
        .socket()
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("timeout");
    let hello = frame(BROADCAST, mac(H), b"hello from h");
    send_one(&mut h, &hello);
    assert_eq!(recv_n(&mut r.a, 1, RECV_TIMEOUT), vec![hello.clone()]);
    assert_eq!(recv_n(&mut r.b, 1, RECV_TIMEOUT), vec![hello]);
    r.sw.wait_port_state("h", PortState::Running);
    h
}

fn desc(addr: u64, len: usize, flags: u16, next: u16) -> Descriptor {
    Descriptor {
        addr,
        len: u32_of(len),
        flags,
        next,
    }
}

/// Descriptors as they lie in memory (an indirect table).
fn table_bytes(entries: &[Descriptor]) -> Vec<u8> {
    let mut b = Vec::new();
    for e in entries {
        b.extend_from_slice(&e.addr.to_le_bytes());
        b.extend_from_slice(&e.len.to_le_bytes());
        b.extend_from_slice(&e.flags.to_le_bytes());
        b.extend_from_slice(&e.next.to_le_bytes());
    }
    b
}

/// A virtio-net header (zero) and `f`, as a guest transmits it.
fn with_header(f: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HDR];
    v.extend_from_slice(f);
    v
}

/// Writes an indirect table into the buffer of H's transmit descriptor `id` (unused by its
/// driver); returns its guest-physical address.
fn put_table(h: &Guest, id: u16, entries: &[Descriptor]) -> u64 {
    let gpa = h.tx.buf_gpa(id);
    h.memory()
        .write(gpa, &table_bytes(entries))
        .expect("write table");
    gpa
}

/// H publishes the chain `descs` at `head` on its transmit ring; the switch must refuse it,
/// count it under `counter` (and as a malformed chain), and give it back used with length 0.
fn refused_tx(r: &Rig, h: &mut Guest, descs: &[(u16, Descriptor)], head: u16, counter: &str) {
    let before = r.sw.port_stats("h");
    let used_before = h.tx.raw().used_idx();
    for (i, d) in descs {
        h.tx.raw().write_desc(*i, *d);
    }
    h.tx.push_avail(head);
    h.tx.publish();
    let key = format!("rx_{counter}");
    r.h_stats_when(&format!("chain {descs:?} at head {head}"), |st| {
        stat(st, &key) == stat(&before, &key) + 1
            && stat(st, RX_MALFORMED) == stat(&before, RX_MALFORMED) + 1
            && st.rx_packets == before.rx_packets
    });
    if head < h.tx.size() {
        let ring = h.tx.raw();
        assert!(
            wait_for(RECV_TIMEOUT, || ring.used_idx()
                == used_before.wrapping_add(1)),
            "the refused chain at head {head} did not come back used"
        );
        assert_eq!(
            ring.used_elem(used_before),
            (u32::from(head), 0),
            "a refused chain goes back used with length 0"
        );
    }
    h.tx.reclaim();
}

/// H sends a frame to A, which receives it: H's transmit queue still works.
fn h_reaches_a(r: &mut Rig, h: &mut Guest, tag: u64) {
    let f = frame(mac(A), mac(H), &payload(tag, 90));
    send_one(h, &f);
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !got.contains(&f) && Instant::now() < deadline {
        if r.a
            .rx
            .recv(usize::MAX, &mut scratch, |x| got.push(x.to_vec()))
            == 0
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        got.contains(&f),
        "H's frame {tag} did not reach A; A got {}",
        describe(&got)
    );
}

/// A sends a frame to H, which receives it: H's receive queue still works.
fn a_reaches_h(r: &mut Rig, h: &mut Guest, tag: u64) {
    let f = frame(mac(H), mac(A), &payload(tag, 70));
    send_one(&mut r.a, &f);
    let got = recv_n(h, 1, RECV_TIMEOUT);
    assert_eq!(got, vec![f], "A's frame {tag} to H: {}", describe(&got));
}

/// Makes the next receive buffer the switch will take from H's ring `bad(head)` (written over
/// the descriptor `head` the ring points to), has A broadcast a frame, and
/// checks that H's port counted the refusal under `counter` while B got the frame. Then H takes
/// the refused buffer back and its ring is repaired.
fn refused_rx(r: &mut Rig, h: &mut Guest, bad: impl FnOnce(u16) -> Descriptor, counter: &str) {
    let before = r.sw.port_stats("h");
    let ring = *h.rx.raw();
    let pos = ring.used_idx();
    let head = ring.avail_entry(pos);
    let bad = bad(head);
    ring.write_desc(head, bad);
    r.round += 1;
    let m = marker(mac(A), &format!("rx-{counter}-{}", r.round));
    send_one(&mut r.a, &m);
    let key = format!("tx_{counter}");
    r.h_stats_when(&format!("receive buffer {bad:?}"), |st| {
        stat(st, &key) == stat(&before, &key) + 1
            && stat(st, TX_MALFORMED) == stat(&before, TX_MALFORMED) + 1
    });
    recv_until(&mut r.b, &m, "b");
    assert!(
        wait_for(RECV_TIMEOUT, || ring.used_idx() == pos.wrapping_add(1)),
        "the refused receive buffer did not come back used"
    );
    assert_eq!(ring.used_elem(pos), (u32::from(head), 0));
    // H's driver sees an empty buffer (counted as a bad header) and posts it again.
    let bad_before = h.rx.errors.bad_rx_header;
    let mut scratch = Vec::new();
    h.rx.recv(usize::MAX, &mut scratch, |_| {});
    assert_eq!(h.rx.errors.bad_rx_header, bad_before + 1);
    repair_rx(h);
}

/// Rewrites every receive descriptor of H as its driver posted it (all are posted).
fn repair_rx(h: &Guest) {
    let (_, area) = h.rx.buffer_area();
    let buf = u32_of(usize::try_from(area / u64::from(h.rx.size())).expect("size"));
    for id in 0..h.rx.size() {
        h.rx.raw().write_desc(
            id,
            Descriptor {
                addr: h.rx.buf_gpa(id),
                len: buf,
                flags: VRING_DESC_F_WRITE,
                next: 0,
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Headers and framing.

#[test]
fn test_hostile_short_header() {
    let mut r = rig("short-header");
    let name = memfd_name("short-header", "fd");
    // Fewer than 12 header bytes, then the peer's end of the stream: the switch closes.
    for n in [1usize, 5, 11] {
        let mut fe = raw_connect(&r);
        let h = Header::request(Request::GET_FEATURES, 0, false).to_bytes();
        write_raw(&mut fe, &h[..n]);
        fe.connection()
            .socket()
            .shutdown(Shutdown::Write)
            .expect("shutdown");
        closed_by_switch(&mut fe, &format!("{n}-byte header"));
        r.h_gone(&[]);
        assert!(
            r.sw.log().contains(&format!("({n} of 12 bytes)")),
            "{n}-byte header not reported\n{}",
            r.sw.report()
        );
    }
    r.serving("after short headers");

    // Headers that announce fewer payload bytes than the request needs: refused, and the
    // connection goes on; descriptors sent along are closed.
    let mut fe = hostile_frontend(&r);
    let f = memfd(&name);
    let short: [(Request, usize, &[RawFd]); 6] = [
        (Request::SET_FEATURES, 4, &[]),
        (Request::SET_VRING_NUM, 4, &[]),
        (Request::SET_VRING_ADDR, 39, &[]),
        (Request::SET_MEM_TABLE, 7, &[f.as_raw_fd()]),
        (Request::ADD_MEM_REG, 16, &[f.as_raw_fd()]),
        (Request::SET_VRING_CALL, 3, &[f.as_raw_fd()]),
    ];
    for (rq, len, fds) in short {
        refused(
            &mut fe,
            req(rq),
            &vec![0u8; len],
            fds,
            &format!("{} with {len} payload bytes", rq.name()),
        );
        assert_eq!(memfd_fds(r.pid(), &name), 0, "{}: fd kept", rq.name());
    }
    still_serving(&mut fe, "after short payloads");
    r.serving("with H connected after short payloads");
    // A GET with a short payload cannot be answered in step: the switch closes.
    let h = Header::request(Request::GET_VRING_BASE, 4, false);
    fe.connection().send(&h, &[0; 4], &[]).expect("send");
    closed_by_switch(&mut fe, "GET_VRING_BASE with 4 payload bytes");
    drop(fe);
    r.h_gone(&[&name]);
    r.serving("after H left");
}

#[test]
fn test_hostile_oversized_header() {
    let mut r = rig("oversized-header");
    // A payload size past the 4096-byte limit, a protocol version that does not exist, flags
    // nobody defined: each closes the connection before anything is allocated for it.
    let bad = [
        ("size 4097", req(Request::SET_FEATURES), VERSION, 4097),
        ("size 1 MiB", req(Request::SET_FEATURES), VERSION, 1 << 20),
        (
            "size u32::MAX",
            req(Request::SET_MEM_TABLE),
            VERSION,
            u32::MAX,
        ),
        ("version 2", req(Request::GET_FEATURES), 2, 0),
        ("version 0", req(Request::GET_FEATURES), 0, 0),
        (
            "unknown flag bit 7",
            req(Request::GET_FEATURES),
            VERSION | 1 << 7,
            0,
        ),
    ];
    let rss_before = rss_kib(r.pid());
    for (what, request, flags, size) in bad {
        let mut fe = raw_connect(&r);
        let h = Header {
            request,
            flags,
            size,
        };
        write_raw(&mut fe, &h.to_bytes());
        closed_by_switch(&mut fe, what);
        drop(fe);
        r.h_gone(&[]);
    }
    let log = r.sw.log();
    for s in [
        "payload of 4294967295 bytes exceeds",
        "payload of 4097 bytes exceeds",
        "unsupported vhost-user protocol version 2",
        "unknown header flags 0x81",
    ] {
        assert!(log.contains(s), "`{s}` not in the log\n{}", r.sw.report());
    }
    let rss_after = rss_kib(r.pid());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the switch grew from {rss_before} to {rss_after} KiB"
    );
    // The largest payload allowed is read, and refused for what it is.
    let mut fe = hostile_frontend(&r);
    refused(
        &mut fe,
        req(Request::SET_OWNER),
        &[0xa5; 4096],
        &[],
        "SET_OWNER with 4096 bytes",
    );
    still_serving(&mut fe, "after a 4096-byte payload");
    drop(fe);
    r.h_gone(&[]);
    r.serving("after oversized headers");
}

#[test]
fn test_hostile_partial_read() {
    let mut r = rig("partial-read");
    let name = memfd_name("partial-read", "fd");
    let mut fe = hostile_frontend(&r);

    // A request that trickles in a byte at a time is read whole and answered.
    let h = Header::request(Request::GET_FEATURES, 0, false).to_bytes();
    for b in h {
        write_raw(&mut fe, &[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let reply = fe
        .connection()
        .recv()
        .expect("reply to a trickled GET_FEATURES");
    assert_eq!(reply.body, DEVICE_FEATURES.to_le_bytes());

    // A request whose descriptor rides on a later piece than the header is taken with it.
    let f = memfd(&name);
    let h = Header::request(Request::SET_VRING_ERR, 8, true).to_bytes();
    write_raw(&mut fe, &h[..7]);
    std::thread::sleep(Duration::from_millis(5));
    write_raw(&mut fe, &h[7..]);
    let body = 0u64.to_le_bytes();
    fe.connection()
        .send_parts([&body[..3], &[]], &[f.as_raw_fd()])
        .expect("send");
    std::thread::sleep(Duration::from_millis(5));
    write_raw(&mut fe, &body[3..]);
    let reply = fe.connection().recv().expect("ack");
    assert_eq!(reply.body, 0u64.to_le_bytes(), "SET_VRING_ERR in pieces");
    assert_eq!(memfd_fds(r.pid(), &name), 1, "the error fd is kept");

    // A message cut short: while H holds it half sent, the others are served; when H goes,
    // the switch drops the half message and the descriptor that came with it.
    let g = memfd(&name);
    let h = Header::request(Request::SET_VRING_CALL, 8, true).to_bytes();
    fe.connection()
        .send_parts([&h, &body[..3]], &[g.as_raw_fd()])
        .expect("send");
    drop((f, g));
    r.serving("while H stalls in the middle of a message");
    assert_eq!(
        r.sw.port_info("h").map(|p| p.state),
        Some(PortState::Connected)
    );
    fe.connection()
        .socket()
        .shutdown(Shutdown::Write)
        .expect("shutdown");
    closed_by_switch(&mut fe, "truncated SET_VRING_CALL");
    drop(fe);
    r.h_gone(&[&name]);
    assert!(
        r.sw.log().contains("(15 of 20 bytes)"),
        "partial message not reported\n{}",
        r.sw.report()
    );
    r.serving("after partial reads");

    // The other way round: H asks and never reads the answers, until the switch's writes to it
    // block. Only H's port waits; when H goes, so does the connection.
    let mut fe = hostile_frontend(&r);
    let get = Header::request(Request::GET_FEATURES, 0, false).to_bytes();
    let burst: Vec<u8> = get.iter().copied().cycle().take(get.len() * 1024).collect();
    let s = fe.connection().socket();
    s.set_nonblocking(true).expect("nonblocking");
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match (&mut &*s).write(&burst) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                match (&mut &*s).write(&burst) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        written > 100_000,
        "the switch kept reading requests whose answers nobody reads ({written} bytes)"
    );
    r.serving("while H reads none of its answers");
    drop(fe);
    r.h_gone(&[]);
    r.serving("after H left without reading");
}

#[test]
fn test_hostile_unknown_request_code() {
    let mut r = rig("unknown-request");
    let name = memfd_name("unknown-request", "fd");
    let mut fe = hostile_frontend(&r);
    let f = memfd(&name);
    let fd = [f.as_raw_fd()];
    // Codes the protocol does not have, with and without payload and descriptors.
    let unknown: [(u32, usize, &[RawFd]); 6] = [
        (0, 0, &[]),
        (41, 8, &[]),
        (0x7fff, 16, &fd),
        (0xdead, 0, &fd),
        (u32::MAX, 4096, &[]),
        (1000, 40, &fd),
    ];
    for (code, len, fds) in unknown {
        refused(
            &mut fe,
            code,
            &vec![7u8; len],
            fds,
            &format!("request code {code}"),
        );
    }
    // Codes that exist but that this backend does not implement (the migration requests are
    // implemented; their hostile forms are in tests/migration.rs).
    for rq in [
        Request::IOTLB_MSG,
        Request::SET_VRING_ENDIAN,
        Request::POSTCOPY_ADVISE,
        Request::GET_INFLIGHT_FD,
        Request::SET_INFLIGHT_FD,
        Request::GPU_SET_SOCKET,
        Request::VRING_KICK,
    ] {
        refused(&mut fe, req(rq), &[0; 8], &fd, rq.name());
    }
    // Without NEED_REPLY nothing is answered: the next reply is the GET's own.
    let h = Header {
        request: 0xbeef,
        flags: VERSION,
        size: 8,
    };
    fe.connection().send(&h, &[1; 8], &fd).expect("send");
    still_serving(&mut fe, "after unknown requests");
    drop(f);
    assert_eq!(
        memfd_fds(r.pid(), &name),
        0,
        "descriptors of refused requests kept"
    );
    assert!(
        r.sw.log().contains("unknown request code 57005: refused"),
        "{}",
        r.sw.report()
    );
    r.serving("with H connected after unknown requests");
    drop(fe);
    r.h_gone(&[&name]);
    r.serving("after H left");
}

#[test]
fn test_hostile_unexpected_fds_closed() {
    let mut r = rig("unexpected-fds");
    let name = memfd_name("unexpected-fds", "fd");
    let pid = r.pid();
    let mut fe = hostile_frontend(&r);
    let files: Vec<OwnedFd> = (0..8).map(|_| memfd(&name)).collect();
    let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let one_region = mem_table_bytes(&[region(0, 1 << 20, 0x7000_0000)]);
    let nofd = (VRING_NOFD_MASK).to_le_bytes();
    let config = ConfigMsg {
        offset: 0,
        size: 6,
        flags: 0,
        payload: mac(9).to_vec(),
    }
    .to_bytes();
    // Requests that take no descriptor, or fewer than sent: refused, every descriptor closed.
    let extra: [(Request, &[u8], usize); 10] = [
        (Request::SET_OWNER, &[], 1),
        (Request::SET_FEATURES, &F_VERSION_1.to_le_bytes(), 2),
        (
            Request::SET_PROTOCOL_FEATURES,
            &pf::REPLY_ACK.to_le_bytes(),
            1,
        ),
        (Request::SET_VRING_NUM, &vring_state(0, 256), 1),
        (Request::SET_VRING_BASE, &vring_state(0, 0), 3),
        (Request::SET_VRING_KICK, &nofd, 1),
        (Request::SET_VRING_CALL, &0u64.to_le_bytes(), 2),
        (Request::SET_MEM_TABLE, &one_region, 3),
        (Request::SET_CONFIG, &config, 1),
        (Request::SET_OWNER, &[], 8),
    ];
    for (rq, body, n) in extra {
        refused(
            &mut fe,
            req(rq),
            body,
            &raw[..n],
            &format!("{} with {n} fds", rq.name()),
        );
        assert_eq!(memfd_fds(pid, &name), 0, "{} with {n} fds: kept", rq.name());
    }
    still_serving(&mut fe, "after unexpected descriptors");
    r.serving("with H connected after unexpected descriptors");

    // More than the 8 a message may carry: the connection is closed, the descriptors too.
    let h = Header::request(Request::SET_OWNER, 0, true);
    let many: Vec<RawFd> = std::iter::repeat_n(raw[0], 253).collect();
    fe.connection().send(&h, &[], &many).expect("send 253 fds");
    closed_by_switch(&mut fe, "253 descriptors");
    drop(fe);
    r.h_gone(&[&name]);

    // A GET with a descriptor cannot be refused in step: the switch closes, and the
    // descriptor with it.
    let mut fe = hostile_frontend(&r);
    let h = Header::request(Request::GET_FEATURES, 0, false);
    fe.connection().send(&h, &[], &raw[..1]).expect("send");
    closed_by_switch(&mut fe, "GET_FEATURES with a descriptor");
    drop(fe);
    r.h_gone(&[&name]);
    drop(files);
    r.serving("after unexpected descriptors");
}

#[test]
fn test_hostile_mem_table_in_a_loop_no_growth() {
    let mut r = rig("mem-loop");
    let pid = r.pid();
    let name = memfd_name("mem-loop", "mem");
    let extra = memfd_name("mem-loop", "extra");
    let vring = memfd_name("mem-loop", "vring");
    let mut h = hostile_guest(&mut r, &name);
    let fe = h.frontend();
    fe.set_protocol_features(
        pf::REPLY_ACK
            | pf::MQ
            | pf::STATUS
            | pf::CONFIG
            | pf::CONFIGURE_MEM_SLOTS
            | pf::BACKEND_REQ,
    )
    .expect("SET_PROTOCOL_FEATURES");
    let with_h = settled_fd_count(pid);
    let rss_before = rss_kib(pid);
    assert_eq!(memfd_fds(pid, &name), 1);
    assert_eq!(memfd_mappings(pid, &name), 1);
    let desc = h.memory().region_desc();
    let started = Instant::now();

    // The memory table again and again, over the running queues (each message brings the
    // switch a new descriptor of the same file).
    for i in 0..400 {
        let fd = h.memory().fd().try_clone().expect("dup");
        h.frontend()
            .set_mem_table(&[(desc, fd.as_fd())])
            .unwrap_or_else(|e| panic!("SET_MEM_TABLE {i}: {e}"));
    }
    // A region added and removed again and again.
    let x = memfd(&extra);
    let xr = region(0x40_0000_0000, 1 << 20, 0x40_0000_0000);
    for i in 0..200 {
        assert_eq!(
            ack(
                h.frontend(),
                req(Request::ADD_MEM_REG),
                &single_region_bytes(&xr),
                &[x.as_raw_fd()]
            ),
            0,
            "ADD_MEM_REG {i}"
        );
        assert_eq!(
            ack(
                h.frontend(),
                req(Request::REM_MEM_REG),
                &single_region_bytes(&xr),
                &[]
            ),
            0,
            "REM_MEM_REG {i}"
        );
    }
    drop(x);
    // Vring descriptors replaced again and again, each a new file.
    for i in 0..200u64 {
        let f = memfd(&vring);
        for (rq, index) in [
            (Request::SET_VRING_CALL, 0u64),
            (Request::SET_VRING_CALL, 1),
            (Request::SET_VRING_ERR, 1),
            (Request::SET_VRING_KICK, 1),
        ] {
            assert_eq!(
                ack(
                    h.frontend(),
                    req(rq),
                    &index.to_le_bytes(),
                    &[f.as_raw_fd()]
                ),
                0,
                "{} {i}",
                rq.name()
            );
        }
    }
    // The backend's channel, again and again.
    for i in 0..100 {
        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        assert_eq!(
            ack(
                h.frontend(),
                req(Request::SET_BACKEND_REQ_FD),
                &[],
                &[theirs.as_raw_fd()]
            ),
            0,
            "SET_BACKEND_REQ_FD {i}"
        );
        drop((mine, theirs));
    }
    // Big payloads, read and refused.
    let big = ConfigMsg {
        offset: 0,
        size: 4084,
        flags: 0,
        payload: vec![1; 4084],
    }
    .to_bytes();
    for _ in 0..500 {
        refused(
            h.frontend(),
            req(Request::SET_CONFIG),
            &big,
            &[],
            "4 KiB SET_CONFIG",
        );
        let c = h.frontend().get_config(0, 12).expect("GET_CONFIG");
        assert_eq!(c.len(), 12);
    }
    eprintln!(
        "{} allocation messages took {:?}",
        400 + 400 + 800 + 100 + 1000,
        started.elapsed()
    );

    assert_eq!(memfd_fds(pid, &name), 1, "fds of the guest's memory");
    assert_eq!(
        memfd_mappings(pid, &name),
        1,
        "mappings of the guest's memory"
    );
    assert_eq!(memfd_fds(pid, &extra), 0, "fds of the removed region");
    assert_eq!(
        memfd_mappings(pid, &extra),
        0,
        "mappings of the removed region"
    );
    // The last call fds of queues 0 and 1 (and the running queues' own copies), the last error
    // and kick fd: all of the last file.
    let v = memfd_fds(pid, &vring);
    assert!((1..=6).contains(&v), "{v} vring descriptors held");
    let now = fd_count(pid);
    assert!(
        now <= with_h + 7,
        "the switch went from {with_h} to {now} descriptors: {:?}",
        fd_targets(pid)
    );
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the switch grew from {rss_before} to {rss_after} KiB"
    );
    // H still works through all this, and so do the others.
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving("after allocation loops");
    drop(h);
    r.h_gone(&[&name, &extra, &vring]);
    r.serving("after H left");
}

// ---------------------------------------------------------------------------------------------
// Queue indices, counts and sizes.

#[test]
fn test_hostile_vring_index_out_of_range() {
    let mut r = rig("vring-index");
    let name = memfd_name("vring-index", "fd");
    let mut mem = DriverMemory::new(&name, 1 << 20, false).expect("memory");
    let q = DriverQueue::new(&mut mem, 256, 2048, HDR).expect("queue");
    let mut fe = hostile_frontend(&r);
    fe.set_mem_table(&[(mem.region_desc(), mem.fd().as_fd())])
        .expect("SET_MEM_TABLE");
    let f = memfd(&name);
    // Port h has one queue pair: queues 0 and 1.
    for index in [2u32, 3, 255, 256, 0x1_0000, u32::MAX] {
        for (rq, body) in [
            (Request::SET_VRING_NUM, vring_state(index, 256).to_vec()),
            (Request::SET_VRING_BASE, vring_state(index, 0).to_vec()),
            (Request::SET_VRING_ENABLE, vring_state(index, 1).to_vec()),
            (
                Request::SET_VRING_ADDR,
                vring_addr(index, &q.layout()).to_vec(),
            ),
        ] {
            refused(
                &mut fe,
                req(rq),
                &body,
                &[],
                &format!("{} of queue {index}", rq.name()),
            );
        }
    }
    // The fd requests carry the index in the low 8 bits of their payload.
    for rq in [
        Request::SET_VRING_KICK,
        Request::SET_VRING_CALL,
        Request::SET_VRING_ERR,
    ] {
        for index in [2u64, 17, 255] {
            let body = index.to_le_bytes();
            refused(
                &mut fe,
                req(rq),
                &body,
                &[f.as_raw_fd()],
                &format!("{} {index}", rq.name()),
            );
            let body = (index | VRING_NOFD_MASK).to_le_bytes();
            refused(
                &mut fe,
                req(rq),
                &body,
                &[],
                &format!("{} {index} no fd", rq.name()),
            );
        }
        // Bits above the index and the no-fd flag.
        let body = (0x1_0000_0001u64).to_le_bytes();
        refused(
            &mut fe,
            req(rq),
            &body,
            &[f.as_raw_fd()],
            &format!("{} bits 32", rq.name()),
        );
    }
    assert_eq!(memfd_fds(r.pid(), &name), 1, "only the memory's fd is kept");
    still_serving(&mut fe, "after out-of-range indices");
    let info = r.sw.port_info("h").expect("port h");
    assert_eq!(info.queues.len(), 2, "{info:?}");
    assert!(
        info.queues.iter().all(|q| q.size == 0 && !q.started),
        "{info:?}"
    );
    assert!(
        r.sw.log().contains("queue index 255 out of range"),
        "{}",
        r.sw.report()
    );
    r.serving("with H connected after out-of-range indices");
    // A GET of a queue that does not exist cannot be answered: the switch closes.
    let h = Header::request(Request::GET_VRING_BASE, 8, false);
    fe.connection()
        .send(&h, &vring_state(9, 0), &[])
        .expect("send");
    closed_by_switch(&mut fe, "GET_VRING_BASE of queue 9");
    drop((fe, f, q));
    r.h_gone(&[&name]);
    r.serving("after H left");
}

/// A guest with two queue pairs (queues 0 to 3) in one memory.
struct TwoPairGuest {
    fe: Frontend,
    q: Vec<DriverQueue>,
    // Last: the queues point into it.
    _mem: DriverMemory,
}

#[test]
fn test_hostile_queue_count() {
    let mut r = rig_with("queue-count", |b| b.arg("--port-queues").arg("h=2"));
    let name = memfd_name("queue-count", "mem");
    let mut mem = DriverMemory::new(&name, 4 << 20, false).expect("memory");
    let q: Vec<DriverQueue> = (0..4)
        .map(|_| DriverQueue::new(&mut mem, 256, 2048, HDR).expect("queue"))
        .collect();
    let mut fe = raw_connect(&r);
    let layouts: Vec<(u32, QueueLayout, Option<std::os::fd::BorrowedFd<'_>>)> = q
        .iter()
        .zip(0u32..)
        .map(|(q, i)| (i, q.layout(), None))
        .collect();
    fe.setup_net(
        F_VERSION_1 | F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES,
        &[(mem.region_desc(), mem.fd().as_fd())],
        &layouts,
    )
    .expect("setup with two queue pairs");
    let mut g = TwoPairGuest { fe, q, _mem: mem };
    for q in &g.q {
        q.set_interrupts(false);
    }
    assert_eq!(g.fe.get_queue_num().expect("GET_QUEUE_NUM"), 2);
    r.sw.wait_port_state("h", PortState::Running);

    // Queues of every pair past the second, up to the most a port may have and beyond.
    let spare = g.q[1].layout();
    for index in 4u32..=33 {
        let i8 = u8::try_from(index).expect("small");
        assert!(
            g.fe.set_vring_num(index, 256).is_err(),
            "SET_VRING_NUM {index}"
        );
        assert!(
            g.fe.set_vring_base(index, 0).is_err(),
            "SET_VRING_BASE {index}"
        );
        assert!(
            g.fe.set_vring_addr(index, &spare).is_err(),
            "SET_VRING_ADDR {index}"
        );
        assert!(
            g.fe.set_vring_call(i8, None).is_err(),
            "SET_VRING_CALL {index}"
        );
        assert!(
            g.fe.set_vring_kick(i8, None).is_err(),
            "SET_VRING_KICK {index}"
        );
        assert!(
            g.fe.set_vring_enable(index, true).is_err(),
            "SET_VRING_ENABLE {index}"
        );
    }
    // The queue pair count in the config space is the device's, not the driver's to write.
    let pairs = ConfigMsg {
        offset: 8,
        size: 2,
        flags: 0,
        payload: 16u16.to_le_bytes().to_vec(),
    };
    refused(
        &mut g.fe,
        req(Request::SET_CONFIG),
        &pairs.to_bytes(),
        &[],
        "SET_CONFIG pairs",
    );
    assert_eq!(
        g.fe.get_config(8, 2).expect("GET_CONFIG"),
        2u16.to_le_bytes()
    );
    assert_eq!(g.fe.get_queue_num().expect("GET_QUEUE_NUM"), 2);

    let info = r.sw.port_info("h").expect("port h");
    assert_eq!(info.queue_pairs, 2, "{info:?}");
    assert_eq!(info.queues.len(), 4, "{info:?}");
    assert!(
        info.queues.iter().all(|q| q.started && q.size == 256),
        "{info:?}"
    );
    // Both transmit queues still carry H's frames.
    for (tx, tag) in [(1usize, 10u64), (3, 11)] {
        let f = frame(mac(A), mac(H), &payload(tag, 80));
        assert!(g.q[tx].push_tx(&f));
        g.q[tx].publish();
        let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
        assert_eq!(got, vec![f], "queue {tx}: {}", describe(&got));
    }
    r.serving("after out-of-range queue counts");
    drop(g);
    r.h_gone(&[&name]);
    r.serving("after H left");
}

/// H's running queues are left as they were by a `SET_VRING_NUM` of each size in `sizes`.
fn refused_queue_sizes(test: &str, sizes: &[u32]) {
    let mut r = rig(test);
    let name = memfd_name(test, "mem");
    let mut h = hostile_guest(&mut r, &name);
    for &n in sizes {
        for q in [0u32, 1] {
            let e = h.frontend().set_vring_num(q, n);
            assert!(e.is_err(), "queue {q}: size {n} accepted");
        }
    }
    assert!(
        r.sw.log().contains("must be a power of two in 1..=32768"),
        "{}",
        r.sw.report()
    );
    let info = r.sw.port_info("h").expect("port h");
    assert!(
        info.queues.iter().all(|q| q.started && q.size == 256),
        "the running queues were disturbed: {info:?}"
    );
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving(&format!("after queue sizes {sizes:?}"));
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_queue_size_zero() {
    refused_queue_sizes("qsize-zero", &[0]);
}

#[test]
fn test_hostile_queue_size_not_power_of_two() {
    refused_queue_sizes("qsize-npot", &[3, 255, 257, 300, 24576, 32767]);
}

#[test]
fn test_hostile_queue_size_above_32768() {
    // 0x1_0100 is 256 once truncated to 16 bits: a size check after the truncation would take
    // it.
    refused_queue_sizes(
        "qsize-big",
        &[32769, 65536, 0x1_0100, 1 << 17, 1 << 31, u32::MAX],
    );
}

// ---------------------------------------------------------------------------------------------
// Memory tables.

#[test]
fn test_hostile_region_arithmetic_overflow() {
    let mut r = rig("region-overflow");
    let pid = r.pid();
    let name = memfd_name("region-overflow", "mem");
    let mut fe = hostile_frontend(&r);
    let f = memfd(&name);
    let fd = [f.as_raw_fd()];
    let mib = 1u64 << 20;
    let bad = [
        (
            "gpa + size wraps",
            region(u64::MAX - 4095, mib, 0x7000_0000),
        ),
        ("uva + size wraps", region(0, mib, u64::MAX - 10)),
        (
            "offset + size wraps",
            MemRegionDesc {
                mmap_offset: u64::MAX - 10,
                ..region(0, mib, 0x7000_0000)
            },
        ),
        ("size u64::MAX", region(0, u64::MAX, 0)),
        ("size 0", region(0, 0, 0x7000_0000)),
        (
            "offset + size past the file",
            MemRegionDesc {
                mmap_offset: 1 << 62,
                ..region(0, mib, 0x7000_0000)
            },
        ),
        ("size past the file", region(0, 1 << 40, 0x7000_0000)),
        (
            "offset + size past i64",
            MemRegionDesc {
                mmap_offset: 1 << 63,
                ..region(0, 1 << 62, 0x7000_0000)
            },
        ),
    ];
    for (what, d) in bad {
        refused(
            &mut fe,
            req(Request::SET_MEM_TABLE),
            &mem_table_bytes(&[d]),
            &fd,
            what,
        );
        refused(
            &mut fe,
            req(Request::ADD_MEM_REG),
            &single_region_bytes(&d),
            &fd,
            &format!("ADD_MEM_REG {what}"),
        );
        assert_eq!(memfd_fds(pid, &name), 0, "{what}: fd kept");
        assert_eq!(memfd_mappings(pid, &name), 0, "{what}: mapped");
    }
    // Regions that overlap, in either address space, right at the edge.
    let r1 = region(0, mib, 0x7000_0000);
    for (what, r2) in [
        ("guest-physical overlap", region(mib - 1, mib, 0x9000_0000)),
        (
            "frontend-virtual overlap",
            region(8 * mib, mib, 0x7000_0000 + mib - 1),
        ),
    ] {
        refused(
            &mut fe,
            req(Request::SET_MEM_TABLE),
            &mem_table_bytes(&[r1, r2]),
            &[fd[0], fd[0]],
            what,
        );
    }
    // Nine regions where at most eight fit.
    let nine: Vec<MemRegionDesc> = (0..9)
        .map(|i| region(i * mib, mib, 0x7000_0000 + i * mib))
        .collect();
    refused(
        &mut fe,
        req(Request::SET_MEM_TABLE),
        &mem_table_bytes(&nine),
        &[fd[0]; 8],
        "nine regions",
    );
    // Removing a region with wrapping numbers, or one never added.
    refused(
        &mut fe,
        req(Request::REM_MEM_REG),
        &single_region_bytes(&region(u64::MAX, 2, 0)),
        &[],
        "REM_MEM_REG wrapping",
    );
    assert_eq!(memfd_fds(pid, &name), 0, "fds kept");
    assert_eq!(memfd_mappings(pid, &name), 0, "mapped");
    // A sane table is taken after all this, and goes with H.
    assert_eq!(
        ack(
            &mut fe,
            req(Request::SET_MEM_TABLE),
            &mem_table_bytes(&[r1]),
            &fd
        ),
        0
    );
    assert_eq!(memfd_fds(pid, &name), 1);
    assert_eq!(memfd_mappings(pid, &name), 1);
    still_serving(&mut fe, "after overflowing regions");
    r.serving("with H connected after overflowing regions");
    drop((fe, f));
    r.h_gone(&[&name]);
    r.serving("after H left");
}

#[test]
fn test_hostile_fd_count_mismatch() {
    let mut r = rig("fd-count");
    let pid = r.pid();
    let name = memfd_name("fd-count", "mem");
    let mut fe = hostile_frontend(&r);
    let files: Vec<OwnedFd> = (0..8).map(|_| memfd(&name)).collect();
    let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let mib = 1u64 << 20;
    let regions: Vec<MemRegionDesc> = (0..8)
        .map(|i| region(i * mib, mib, 0x7000_0000 + i * mib))
        .collect();
    let table = |n: usize| mem_table_bytes(&regions[..n]);
    let one = single_region_bytes(&regions[0]);
    let cases: [(Request, Vec<u8>, usize, &str); 9] = [
        (Request::SET_MEM_TABLE, table(2), 1, "two regions, one fd"),
        (Request::SET_MEM_TABLE, table(1), 2, "one region, two fds"),
        (Request::SET_MEM_TABLE, table(1), 0, "one region, no fd"),
        (
            Request::SET_MEM_TABLE,
            table(8),
            7,
            "eight regions, seven fds",
        ),
        (
            Request::ADD_MEM_REG,
            one.to_vec(),
            0,
            "ADD_MEM_REG without fd",
        ),
        (
            Request::ADD_MEM_REG,
            one.to_vec(),
            2,
            "ADD_MEM_REG with two fds",
        ),
        (
            Request::REM_MEM_REG,
            one.to_vec(),
            3,
            "REM_MEM_REG with three fds",
        ),
        (
            Request::SET_VRING_CALL,
            0u64.to_le_bytes().to_vec(),
            0,
            "SET_VRING_CALL without fd",
        ),
        (
            Request::SET_BACKEND_REQ_FD,
            vec![],
            0,
            "SET_BACKEND_REQ_FD without fd",
        ),
    ];
    for (rq, body, n, what) in cases {
        refused(&mut fe, req(rq), &body, &raw[..n], what);
        assert_eq!(memfd_fds(pid, &name), 0, "{what}: fds kept");
        assert_eq!(memfd_mappings(pid, &name), 0, "{what}: mapped");
    }
    still_serving(&mut fe, "after mismatched fd counts");
    // Eight regions with their eight fds are fine.
    assert_eq!(
        ack(&mut fe, req(Request::SET_MEM_TABLE), &table(8), &raw),
        0
    );
    assert_eq!(memfd_fds(pid, &name), 8);
    assert_eq!(memfd_mappings(pid, &name), 8);
    r.serving("with H connected after mismatched fd counts");
    drop((fe, files));
    r.h_gone(&[&name]);
    r.serving("after H left");
}

// ---------------------------------------------------------------------------------------------
// Rings and buffers outside guest memory or across regions.

/// Sets queue 1 up at `layout` and asks it to start; returns whether it runs.
fn try_ring(r: &Rig, fe: &mut Frontend, size: u16, layout: &QueueLayout) -> bool {
    // Start from a stopped queue each time.
    fe.get_vring_base(1).expect("GET_VRING_BASE");
    fe.set_vring_num(1, u32::from(size)).expect("SET_VRING_NUM");
    fe.set_vring_base(1, 0).expect("SET_VRING_BASE");
    fe.set_vring_addr(1, layout).expect("SET_VRING_ADDR");
    fe.set_vring_kick(1, None).expect("SET_VRING_KICK");
    fe.set_vring_enable(1, true).expect("SET_VRING_ENABLE");
    let info = r.sw.port_info("h").expect("port h");
    info.queues[1].started
}

#[test]
fn test_hostile_ring_unmapped() {
    let mut r = rig("ring-unmapped");
    let name = memfd_name("ring-unmapped", "mem");
    let mut mem = DriverMemory::new(&name, 1 << 20, false).expect("memory");
    let q = DriverQueue::new(&mut mem, 256, 2048, HDR).expect("queue");
    let mut fe = hostile_frontend(&r);
    fe.set_mem_table(&[(mem.region_desc(), mem.fd().as_fd())])
        .expect("SET_MEM_TABLE");
    let good = q.layout();
    let d = mem.region_desc();
    let end = d.userspace_addr + d.memory_size;
    let bad = [
        (
            "descriptors at 0x10",
            QueueLayout {
                desc_uva: 0x10,
                ..good
            },
        ),
        (
            "avail ring past the end",
            QueueLayout {
                avail_uva: end,
                ..good
            },
        ),
        (
            "used ring across the end",
            QueueLayout {
                used_uva: end - 1024,
                ..good
            },
        ),
        (
            "descriptors at u64::MAX - 15",
            QueueLayout {
                desc_uva: u64::MAX - 15,
                ..good
            },
        ),
        (
            "used ring below the region",
            QueueLayout {
                used_uva: d.userspace_addr - 4096,
                ..good
            },
        ),
    ];
    for (what, l) in bad {
        assert!(!try_ring(&r, &mut fe, 256, &l), "{what}: the queue started");
    }
    // A ring that starts inside but whose size carries it past the end.
    let late = QueueLayout {
        size: 32768,
        desc_uva: end - 4096,
        ..good
    };
    assert!(
        !try_ring(&r, &mut fe, 32768, &late),
        "a 32768-entry ring at the end started"
    );
    assert!(
        r.sw.log().contains(
            "queue 1 cannot start: descriptor table is not inside one guest memory region"
        ),
        "{}",
        r.sw.report()
    );
    assert_eq!(
        r.sw.port_info("h").map(|p| p.state),
        Some(PortState::Connected)
    );
    still_serving(&mut fe, "after unmapped rings");
    r.serving("with H connected after unmapped rings");
    // The same queue at a sane place starts.
    assert!(
        try_ring(&r, &mut fe, 256, &good),
        "a sane ring did not start"
    );
    r.sw.wait_port_state("h", PortState::Running);
    drop((fe, q));
    r.h_gone(&[&name]);
    r.serving("after H left");
}

/// A guest whose memory is two regions, adjacent in guest-physical and in frontend-virtual
/// space (the second region's frontend-virtual address is made up: the switch only ever
/// translates it), queues in the first.
struct TwoRegionGuest {
    _fe: Frontend,
    rx: DriverQueue,
    tx: DriverQueue,
    regions: [MemRegionDesc; 2],
    // Last: the queues point into the first.
    mem2: DriverMemory,
    mem1: DriverMemory,
}

const REGION1: u64 = 2 << 20;

fn two_region_guest(name1: &str, name2: &str) -> (DriverMemory, DriverMemory, [MemRegionDesc; 2]) {
    let base = 0x1_0000_0000u64;
    let mem1 = DriverMemory::with_gpa_base(name1, 2 << 20, false, base).expect("memory 1");
    let mem2 =
        DriverMemory::with_gpa_base(name2, 1 << 20, false, base + REGION1).expect("memory 2");
    let d1 = mem1.region_desc();
    let d2 = MemRegionDesc {
        userspace_addr: d1.userspace_addr + REGION1,
        ..mem2.region_desc()
    };
    assert_eq!(d2.guest_phys_addr, d1.guest_phys_addr + d1.memory_size);
    (mem1, mem2, [d1, d2])
}

#[test]
fn test_hostile_ring_crossing_regions() {
    let mut r = rig("ring-crossing");
    let (n1, n2) = (
        memfd_name("ring-crossing", "one"),
        memfd_name("ring-crossing", "two"),
    );
    let (mut mem1, mem2, regions) = two_region_guest(&n1, &n2);
    let q = DriverQueue::new(&mut mem1, 256, 2048, HDR).expect("queue");
    let mut fe = hostile_frontend(&r);
    fe.set_mem_table(&[
        (regions[0], mem1.fd().as_fd()),
        (regions[1], mem2.fd().as_fd()),
    ])
    .expect("SET_MEM_TABLE");
    let good = q.layout();
    // The boundary between the regions, in frontend-virtual addresses.
    let seam = regions[1].userspace_addr;
    let bad = [
        (
            "descriptors across the seam",
            QueueLayout {
                desc_uva: seam - 2048,
                ..good
            },
        ),
        (
            "avail ring across the seam",
            QueueLayout {
                avail_uva: seam - 256,
                ..good
            },
        ),
        (
            "used ring across the seam",
            QueueLayout {
                used_uva: seam - 1024,
                ..good
            },
        ),
    ];
    for (what, l) in bad {
        assert!(!try_ring(&r, &mut fe, 256, &l), "{what}: the queue started");
    }
    assert!(
        r.sw.log().contains("is not inside one guest memory region"),
        "{}",
        r.sw.report()
    );
    still_serving(&mut fe, "after rings across regions");
    r.serving("with H connected after rings across regions");
    // Wholly in the second region, the same ring is fine.
    let in_second = QueueLayout {
        desc_uva: seam,
        avail_uva: seam + 4096,
        used_uva: seam + 8192,
        ..good
    };
    assert!(
        try_ring(&r, &mut fe, 256, &in_second),
        "a ring in region 2 did not start"
    );
    drop((fe, q));
    r.h_gone(&[&n1, &n2]);
    r.serving("after H left");
}

#[test]
fn test_hostile_buffer_unmapped() {
    let mut r = rig("buffer-unmapped");
    let name = memfd_name("buffer-unmapped", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let d = h.memory().region_desc();
    let end = d.guest_phys_addr + d.memory_size;
    let buf = h.tx.buf_gpa(RAW_ID);
    let cases = [
        ("below guest memory", desc(0x10, 80, 0, 0)),
        ("across the end of guest memory", desc(end - 40, 80, 0, 0)),
        ("just past the end", desc(end, 80, 0, 0)),
        ("address + length wraps", desc(u64::MAX - 8, 80, 0, 0)),
        ("length 4 GiB - 1", desc(buf, u32::MAX as usize, 0, 0)),
    ];
    for (what, dsc) in cases {
        eprintln!("transmit buffer {what}");
        let key = if dsc.len == u32::MAX {
            "chain_too_long"
        } else {
            "address_unmapped"
        };
        refused_tx(&r, &mut h, &[(RAW_ID, dsc)], RAW_ID, key);
    }
    // The second buffer of a chain, and an indirect table, outside guest memory.
    let hdr = desc(buf, HDR, VRING_DESC_F_NEXT, RAW_ID + 1);
    refused_tx(
        &r,
        &mut h,
        &[(RAW_ID, hdr), (RAW_ID + 1, desc(end + 4096, 64, 0, 0))],
        RAW_ID,
        "address_unmapped",
    );
    refused_tx(
        &r,
        &mut h,
        &[(RAW_ID, desc(end - 16, 32, VRING_DESC_F_INDIRECT, 0))],
        RAW_ID,
        "address_unmapped",
    );
    let t = put_table(&h, RAW_ID + 5, &[desc(0x1000, 80, 0, 0)]);
    refused_tx(
        &r,
        &mut h,
        &[(RAW_ID, desc(t, 16, VRING_DESC_F_INDIRECT, 0))],
        RAW_ID,
        "address_unmapped",
    );
    // Receive buffers outside guest memory.
    refused_rx(
        &mut r,
        &mut h,
        |_| desc(0x10, 2048, VRING_DESC_F_WRITE, 0),
        "address_unmapped",
    );
    // (Starting so close to the end that no frame fits before it: the switch checks only the
    // bytes it writes, and a small frame would fit in a buffer that starts further in.)
    refused_rx(
        &mut r,
        &mut h,
        |_| desc(end - 8, 2048, VRING_DESC_F_WRITE, 0),
        "address_unmapped",
    );
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving("after unmapped buffers");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_buffer_crossing_regions() {
    let mut r = rig("buffer-crossing");
    let (n1, n2) = (
        memfd_name("buffer-crossing", "one"),
        memfd_name("buffer-crossing", "two"),
    );
    let (mut mem1, mem2, regions) = two_region_guest(&n1, &n2);
    let rx = DriverQueue::new(&mut mem1, 256, 2048, HDR).expect("rx");
    let tx = DriverQueue::new(&mut mem1, 256, 2048, HDR).expect("tx");
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    let mut fe = raw_connect(&r);
    fe.setup_net(
        F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | VHOST_USER_F_PROTOCOL_FEATURES,
        &[
            (regions[0], mem1.fd().as_fd()),
            (regions[1], mem2.fd().as_fd()),
        ],
        &[(0, rx.layout(), None), (1, tx.layout(), None)],
    )
    .expect("setup over two regions");
    let mut g = TwoRegionGuest {
        _fe: fe,
        rx,
        tx,
        regions,
        mem2,
        mem1,
    };
    r.sw.wait_port_state("h", PortState::Running);
    let seam = g.regions[1].guest_phys_addr;

    // A transmit buffer straddling the seam is split there and delivered whole.
    let f = frame(mac(A), mac(H), &payload(1, 300));
    let bytes = with_header(&f);
    let first = 40;
    g.mem1
        .write(seam - first as u64, &bytes[..first])
        .expect("write 1");
    g.mem2.write(seam, &bytes[first..]).expect("write 2");
    g.tx.raw()
        .write_desc(0, desc(seam - first as u64, bytes.len(), 0, 0));
    g.tx.push_avail(0);
    g.tx.publish();
    let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
    assert_eq!(
        got,
        vec![f],
        "straddling transmit buffer: {}",
        describe(&got)
    );

    // A chain whose second descriptor straddles, after a header buffer.
    let f2 = frame(mac(A), mac(H), &payload(2, 1000));
    let b2 = with_header(&f2);
    let hdr_at = g.tx.buf_gpa(10);
    g.mem1.write(hdr_at, &b2[..HDR]).expect("write hdr");
    g.mem1
        .write(seam - 100, &b2[HDR..HDR + 100])
        .expect("write 1");
    g.mem2.write(seam, &b2[HDR + 100..]).expect("write 2");
    g.tx.raw()
        .write_desc(1, desc(hdr_at, HDR, VRING_DESC_F_NEXT, 2));
    g.tx.raw().write_desc(2, desc(seam - 100, f2.len(), 0, 0));
    g.tx.push_avail(1);
    g.tx.publish();
    let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
    assert_eq!(
        got,
        vec![f2],
        "straddling second buffer: {}",
        describe(&got)
    );

    // A receive buffer straddling the seam gets a frame from A, whole.
    let rx_at = seam - 50;
    g.rx.raw()
        .write_desc(0, desc(rx_at, 2048, VRING_DESC_F_WRITE, 0));
    g.rx.push_avail(0);
    g.rx.publish();
    let to_h = frame(mac(H), mac(A), &payload(3, 500));
    send_one(&mut r.a, &to_h);
    let ring = *g.rx.raw();
    assert!(
        wait_for(RECV_TIMEOUT, || ring.used_idx() == 1),
        "no frame in the straddling receive buffer\n{}",
        r.sw.report()
    );
    let (id, len) = ring.used_elem(0);
    assert_eq!((id, len as usize), (0, HDR + to_h.len()));
    let mut got = vec![0u8; HDR + to_h.len()];
    g.mem1.read(rx_at, &mut got[..50]).expect("read 1");
    g.mem2.read(seam, &mut got[50..]).expect("read 2");
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[HDR..], &to_h[..], "frame in the straddling buffer");
    assert_eq!(r.h_stats().ring_errors, Default::default());
    r.serving("after buffers across regions");
    drop(g);
    r.h_gone(&[&n1, &n2]);
}

// ---------------------------------------------------------------------------------------------
// Descriptor chains.

#[test]
fn test_hostile_descriptor_loop() {
    let mut r = rig("desc-loop");
    let name = memfd_name("desc-loop", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let (i, j) = (RAW_ID, RAW_ID + 1);
    let bi = h.tx.buf_gpa(i);
    // Two descriptors pointing at each other, and one pointing at itself (empty buffers, so
    // only the loop can stop the walk).
    refused_tx(
        &r,
        &mut h,
        &[
            (i, desc(bi, 0, VRING_DESC_F_NEXT, j)),
            (j, desc(bi, 0, VRING_DESC_F_NEXT, i)),
        ],
        i,
        "chain_loop",
    );
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(bi, 0, VRING_DESC_F_NEXT, i))],
        i,
        "chain_loop",
    );
    // A loop with real buffers: stopped by the segment limit first.
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(bi, 100, VRING_DESC_F_NEXT, i))],
        i,
        "chain_too_long",
    );
    // A loop inside an indirect table.
    let t = put_table(
        &h,
        RAW_ID + 5,
        &[
            desc(bi, 0, VRING_DESC_F_NEXT, 1),
            desc(bi, 0, VRING_DESC_F_NEXT, 0),
        ],
    );
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(t, 32, VRING_DESC_F_INDIRECT, 0))],
        i,
        "chain_loop",
    );
    // A receive buffer that loops.
    let rb = h.rx.buf_gpa(0);
    refused_rx(
        &mut r,
        &mut h,
        |head| desc(rb, 0, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, head),
        "chain_loop",
    );
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving("after descriptor loops");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_next_out_of_range() {
    let mut r = rig("next-range");
    let name = memfd_name("next-range", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let i = RAW_ID;
    let bi = h.tx.buf_gpa(i);
    for next in [256u16, 257, 0x8000, u16::MAX] {
        refused_tx(
            &r,
            &mut h,
            &[(i, desc(bi, HDR, VRING_DESC_F_NEXT, next))],
            i,
            "next_out_of_range",
        );
    }
    // Inside an indirect table of two, `next` 2.
    let t = put_table(
        &h,
        RAW_ID + 5,
        &[desc(bi, HDR, VRING_DESC_F_NEXT, 2), desc(bi, 64, 0, 0)],
    );
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(t, 32, VRING_DESC_F_INDIRECT, 0))],
        i,
        "next_out_of_range",
    );
    // A head out of range cannot even be given back: it is counted and skipped.
    for head in [256u16, u16::MAX] {
        refused_tx(&r, &mut h, &[], head, "head_out_of_range");
    }
    // A receive buffer whose chain continues past the table.
    let rb = h.rx.buf_gpa(0);
    refused_rx(
        &mut r,
        &mut h,
        |_| desc(rb, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 300),
        "next_out_of_range",
    );
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving("after out-of-range next");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_nested_indirect() {
    let mut r = rig("nested-indirect");
    let name = memfd_name("nested-indirect", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let i = RAW_ID;
    let bi = h.tx.buf_gpa(i);
    // A table holding a table.
    let inner = put_table(&h, RAW_ID + 6, &[desc(bi, 80, 0, 0)]);
    let outer = put_table(&h, RAW_ID + 5, &[desc(inner, 16, VRING_DESC_F_INDIRECT, 0)]);
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(outer, 16, VRING_DESC_F_INDIRECT, 0))],
        i,
        "nested_indirect",
    );
    // A table holding itself.
    let me = h.tx.buf_gpa(RAW_ID + 7);
    put_table(&h, RAW_ID + 7, &[desc(me, 16, VRING_DESC_F_INDIRECT, 0)]);
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(me, 16, VRING_DESC_F_INDIRECT, 0))],
        i,
        "nested_indirect",
    );
    // Deeper behind a first good entry.
    let deep = put_table(
        &h,
        RAW_ID + 8,
        &[
            desc(bi, HDR, VRING_DESC_F_NEXT, 1),
            desc(outer, 16, VRING_DESC_F_INDIRECT, 0),
        ],
    );
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(deep, 32, VRING_DESC_F_INDIRECT, 0))],
        i,
        "nested_indirect",
    );
    // Malformed indirect descriptors around it.
    refused_tx(
        &r,
        &mut h,
        &[(
            i,
            desc(inner, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1),
        )],
        i,
        "indirect_not_allowed",
    );
    for len in [0usize, 17] {
        refused_tx(
            &r,
            &mut h,
            &[(i, desc(inner, len, VRING_DESC_F_INDIRECT, 0))],
            i,
            "indirect_bad_length",
        );
    }
    // Receive buffers behind nested tables.
    let rb = h.rx.buf_gpa(0);
    let rinner = put_table(&h, RAW_ID + 9, &[desc(rb, 2048, VRING_DESC_F_WRITE, 0)]);
    let router = put_table(
        &h,
        RAW_ID + 10,
        &[desc(rinner, 16, VRING_DESC_F_INDIRECT, 0)],
    );
    refused_rx(
        &mut r,
        &mut h,
        |_| desc(router, 16, VRING_DESC_F_INDIRECT, 0),
        "nested_indirect",
    );
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    r.serving("after nested indirect tables");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_avail_index_too_far_ahead() {
    let mut r = rig("avail-ahead");
    let name = memfd_name("avail-ahead", "mem");
    let mut h = hostile_guest(&mut r, &name);

    // Transmit: 257 entries claimed on a ring of 256. The queue is broken, counted once, and
    // left alone; a frame posted afterwards stays where it is.
    let before = r.sw.port_stats("h");
    let sane = h.tx.avail_idx();
    h.tx.raw().set_avail_idx(sane.wrapping_add(257));
    r.h_stats_when("transmit avail index 257 ahead", |st| {
        stat(st, "rx_avail_overrun") == stat(&before, "rx_avail_overrun") + 1
    });
    h.tx.raw().set_avail_idx(sane);
    let f = frame(mac(A), mac(H), &payload(1, 100));
    send_one(&mut h, &f);
    let leaked = recv_n(&mut r.a, 1, Duration::from_millis(300));
    assert!(
        leaked.is_empty(),
        "a broken queue forwarded {}",
        describe(&leaked)
    );
    r.serving("with H's transmit queue broken");
    // The frontend sets the queue up afresh: it runs again, from where it stopped.
    let fe = h.frontend();
    let base = fe.get_vring_base(1).expect("GET_VRING_BASE");
    assert_eq!(base, u32::from(sane), "the broken queue consumed nothing");
    fe.set_vring_base(1, base).expect("SET_VRING_BASE");
    fe.set_vring_kick(1, None).expect("SET_VRING_KICK");
    let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
    assert_eq!(got, vec![f], "after the reset: {}", describe(&got));
    h.tx.reclaim();
    let st = r.h_stats();
    assert_eq!(
        stat(&st, "rx_avail_overrun"),
        stat(&before, "rx_avail_overrun") + 1,
        "{st:?}"
    );

    // Receive: the switch looks at the avail index when it has used what it saw; H lets its
    // ring fill up, then claims 257 more.
    let before = r.sw.port_stats("h");
    let ring = *h.rx.raw();
    let full = h.rx.avail_idx();
    let n = full.wrapping_sub(ring.used_idx());
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| frame(mac(H), mac(A), &payload(100 + u64::from(i), 60)))
        .collect();
    send(&mut r.a, &frames);
    assert!(
        wait_for(RECV_TIMEOUT, || ring.used_idx() == full),
        "H's receive ring did not fill up: {} of {full}",
        ring.used_idx()
    );
    ring.set_avail_idx(full.wrapping_add(257));
    let m = marker(mac(A), "after the overrun");
    send_one(&mut r.a, &m);
    r.h_stats_when("receive avail index 257 ahead", |st| {
        stat(st, "tx_avail_overrun") == stat(&before, "tx_avail_overrun") + 1
            && stat(st, DROP_NO_BUFFERS) > stat(&before, DROP_NO_BUFFERS)
    });
    recv_until(&mut r.b, &m, "b");
    r.serving("with H's receive queue broken");
    // H takes what it got and sets the queue up afresh.
    ring.set_avail_idx(full);
    let got = recv_now(&mut h);
    assert!(got == frames, "H received {}", describe(&got));
    let fe = h.frontend();
    let base = fe.get_vring_base(0).expect("GET_VRING_BASE");
    assert_eq!(base, u32::from(full));
    fe.set_vring_base(0, base).expect("SET_VRING_BASE");
    fe.set_vring_kick(0, None).expect("SET_VRING_KICK");
    a_reaches_h(&mut r, &mut h, 500);
    h_reaches_a(&mut r, &mut h, 501);
    r.serving("after the avail overruns");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_tx_device_writable_descriptor() {
    let mut r = rig("tx-writable");
    let name = memfd_name("tx-writable", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let (i, j) = (RAW_ID, RAW_ID + 1);
    let f = with_header(&frame(mac(A), mac(H), &payload(1, 100)));
    let bi = h.tx.buf_gpa(i);
    h.memory().write(bi, &f).expect("write");
    // The whole frame in a device-writable buffer.
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(bi, f.len(), VRING_DESC_F_WRITE, 0))],
        i,
        "wrong_direction",
    );
    // A readable header, then a writable buffer.
    refused_tx(
        &r,
        &mut h,
        &[
            (i, desc(bi, HDR, VRING_DESC_F_NEXT, j)),
            (
                j,
                desc(bi + HDR as u64, f.len() - HDR, VRING_DESC_F_WRITE, 0),
            ),
        ],
        i,
        "wrong_direction",
    );
    // A writable buffer in an indirect table.
    let t = put_table(&h, RAW_ID + 5, &[desc(bi, f.len(), VRING_DESC_F_WRITE, 0)]);
    refused_tx(
        &r,
        &mut h,
        &[(i, desc(t, 16, VRING_DESC_F_INDIRECT, 0))],
        i,
        "wrong_direction",
    );
    // And the mirror image: a device-readable receive buffer.
    let rb = h.rx.buf_gpa(0);
    refused_rx(&mut r, &mut h, |_| desc(rb, 2048, 0, 0), "wrong_direction");
    h_reaches_a(&mut r, &mut h, 2);
    a_reaches_h(&mut r, &mut h, 3);
    r.serving("after device-writable transmit buffers");
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_tx_chain_shorter_than_header() {
    let mut r = rig("tx-short");
    let name = memfd_name("tx-short", "mem");
    let mut h = hostile_guest(&mut r, &name);
    let (i, j) = (RAW_ID, RAW_ID + 1);
    let f = with_header(&frame(mac(A), mac(H), b""));
    assert_eq!(f.len(), HDR + 14);
    let bi = h.tx.buf_gpa(i);
    h.memory().write(bi, &f).expect("write");
    // Empty, part of the virtio-net header, the header alone, the header and 13 bytes.
    for len in [0, 8, HDR, HDR + 13] {
        refused_tx(&r, &mut h, &[(i, desc(bi, len, 0, 0))], i, "too_short");
    }
    // Two pieces adding up to less than a header and an Ethernet header.
    refused_tx(
        &r,
        &mut h,
        &[
            (i, desc(bi, 10, VRING_DESC_F_NEXT, j)),
            (j, desc(bi + 10, 10, 0, 0)),
        ],
        i,
        "too_short",
    );
    // The header and a bare Ethernet header is the shortest frame there is: it goes through.
    let before = r.sw.port_stats("h");
    h.tx.raw().write_desc(i, desc(bi, f.len(), 0, 0));
    h.tx.push_avail(i);
    h.tx.publish();
    let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
    assert_eq!(
        got,
        vec![f[HDR..].to_vec()],
        "a 14-byte frame: {}",
        describe(&got)
    );
    h.tx.reclaim();
    let st = r.h_stats();
    assert_eq!(stat(&st, "rx_too_short"), stat(&before, "rx_too_short"));
    h_reaches_a(&mut r, &mut h, 1);
    r.serving("after short transmit chains");
    drop(h);
    r.h_gone(&[&name]);
}

// ---------------------------------------------------------------------------------------------
// The guest rewriting descriptors while the switch reads them.

/// The bytes of H's memory in the area its rewritten descriptors point to, repeating every 32
/// bytes: a zero virtio-net header, then an Ethernet header from H to A and six odd bytes. Every
/// descriptor the test writes starts on a multiple of 32 and has a length that is one, so any
/// chain the switch may walk — whatever mix of old and new descriptors it sees — holds exactly
/// this sequence from its first byte, and every frame A receives from H must be it from byte 12.
fn pattern() -> [u8; 32] {
    let mut p = [0u8; 32];
    p[12..18].copy_from_slice(&mac(A));
    p[18..24].copy_from_slice(&mac(H));
    p[24..26].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    p[26..32].copy_from_slice(&[0xa5, 0x5a, 0xc3, 0x3c, 0x99, 0x66]);
    p
}

/// Whether `f` is the pattern from byte 12 on.
fn is_pattern_frame(f: &[u8], p: &[u8; 32]) -> bool {
    f.iter().enumerate().all(|(i, &b)| b == p[(HDR + i) % 32])
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn below16(&mut self, n: u16) -> u16 {
        u16::try_from(self.below(u64::from(n))).expect("below n")
    }
}

/// Where rewritten descriptors point: 32-byte steps inside a 64 KiB-aligned window, so that
/// even a descriptor read half old and half new (bytes of two addresses mixed) still points
/// into the window, and lengths of at most 2048 (mixed: at most 0x8e0) never leave the filled
/// area past it.
const WINDOW: u64 = 1 << 16;
const MAX_SEG: u64 = 2048;
const FILLED: u64 = WINDOW + 4096;
/// An address outside guest memory that differs from the window's only in byte 5: mixed with a
/// good one it is either that good one or outside too.
const UNMAPPED_BIT: u64 = 1 << 40;

/// A descriptor as H's rewriting thread writes it: mostly good ones, and every kind of bad one.
fn rewritten(rng: &mut Rng, base: u64, id: u16) -> Descriptor {
    let addr = base + 32 * rng.below(WINDOW / 32);
    let len = 32 * (1 + rng.below(MAX_SEG / 32));
    let len = u32::try_from(len).expect("small");
    let mut d = Descriptor {
        addr,
        len,
        flags: 0,
        next: 0,
    };
    match rng.below(16) {
        0..=7 => {}
        8 => d.flags = VRING_DESC_F_WRITE,
        9 => d.addr |= UNMAPPED_BIT,
        10 => {
            d.flags = VRING_DESC_F_NEXT;
            d.next = rng.below16(256);
        }
        11 => {
            d.flags = VRING_DESC_F_NEXT;
            d.next = id;
        }
        12 => {
            d.flags = VRING_DESC_F_NEXT;
            d.next = 256 + rng.below16(1000);
        }
        13 => {
            d.flags = VRING_DESC_F_INDIRECT;
            d.len = 16 * (1 + u32::try_from(rng.below(8)).expect("small"));
        }
        14 => d.len = 0,
        _ => d.flags = VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
    }
    d
}

#[test]
fn test_hostile_descriptor_changed_between_check_and_use() {
    const RACE: Duration = Duration::from_millis(1500);
    let mut r = rig("check-use");
    let name = memfd_name("check-use", "mem");
    let h = hostile_guest(&mut r, &name);
    let region = h.memory().region_desc();
    let (rx_buf, rx_len) = h.rx.buffer_area();
    let (tx_buf, tx_len) = h.tx.buffer_area();
    let base = (rx_buf + rx_len)
        .max(tx_buf + tx_len)
        .next_multiple_of(WINDOW);
    assert!(base + FILLED <= region.guest_phys_addr + region.memory_size);
    assert_eq!(base & UNMAPPED_BIT, 0);
    let p = pattern();
    let fill: Vec<u8> = (0..FILLED)
        .map(|i| p[usize::try_from(i % 32).expect("small")])
        .collect();
    h.memory().write(base, &fill).expect("fill");

    let ring: RawRing = *h.tx.raw();
    let before = r.sw.port_stats("h");
    let start = ring.avail_idx();
    assert_eq!(ring.used_idx(), start, "H's transmit ring is idle");
    let stop = AtomicBool::new(false);
    let mut published = 0u64;
    let mut from_h = 0u64;
    let mut bad_frames: Vec<Vec<u8>> = Vec::new();
    let mut foreign = 0u64;
    let mut rewrites = 0u64;
    let mut scratch = Vec::new();
    std::thread::scope(|s| {
        let stop_flag = &stop;
        let rewriter = s.spawn(move || {
            // H's second vCPU: rewrites descriptors and avail entries without pause.
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut n = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let id = rng.below16(256);
                ring.write_desc(id, rewritten(&mut rng, base, id));
                if n.is_multiple_of(8) {
                    ring.set_avail_entry(rng.below16(u16::MAX), rng.below16(256));
                }
                n += 1;
                if n.is_multiple_of(256) {
                    std::thread::yield_now();
                }
            }
            n
        });
        // H's first vCPU publishes good chains as fast as the switch takes them; A receives.
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut cur = start;
        let deadline = Instant::now() + RACE;
        while Instant::now() < deadline {
            let used = ring.used_idx();
            while cur.wrapping_sub(used) < 256 {
                let head = cur % 256;
                ring.write_desc(
                    head,
                    Descriptor {
                        addr: base + 32 * rng.below(WINDOW / 32),
                        len: u32::try_from(32 * (2 + rng.below(47))).expect("small"),
                        flags: 0,
                        next: 0,
                    },
                );
                ring.set_avail_entry(cur, head);
                cur = cur.wrapping_add(1);
                published += 1;
            }
            ring.set_avail_idx(cur);
            r.a.rx.recv(usize::MAX, &mut scratch, |f| {
                if f.get(6..12) != Some(&mac(H)[..]) {
                    foreign += 1;
                } else {
                    from_h += 1;
                    if !is_pattern_frame(f, &p) && bad_frames.len() < 4 {
                        bad_frames.push(f.to_vec());
                    }
                }
            });
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        rewrites = rewriter.join().expect("rewriter");
        // Every chain made available is taken, good or bad.
        assert!(
            wait_for(RECV_TIMEOUT, || ring.used_idx() == cur),
            "the switch stopped taking H's chains at {} of {cur}\n{}",
            ring.used_idx(),
            r.sw.report()
        );
    });
    // What is still on its way to A.
    let quiet = Instant::now() + Duration::from_millis(200);
    while Instant::now() < quiet {
        r.a.rx.recv(usize::MAX, &mut scratch, |f| {
            if f.get(6..12) == Some(&mac(H)[..]) {
                from_h += 1;
                if !is_pattern_frame(f, &p) && bad_frames.len() < 4 {
                    bad_frames.push(f.to_vec());
                }
            } else {
                foreign += 1;
            }
        });
    }
    let st = r.h_stats_when("every chain accounted for", |st| {
        st.rx_packets - before.rx_packets + stat(st, RX_MALFORMED) - stat(&before, RX_MALFORMED)
            == published
    });
    eprintln!(
        "{published} chains published, {rewrites} descriptors rewritten meanwhile: {} taken, {} \
         refused {:?}, {from_h} frames reached A",
        st.rx_packets - before.rx_packets,
        stat(&st, RX_MALFORMED) - stat(&before, RX_MALFORMED),
        st.ring_errors
    );
    assert!(
        r.sw.is_running(),
        "the switch died: {:?}\n{}",
        r.sw.exit_status(),
        r.sw.report()
    );
    assert!(
        bad_frames.is_empty(),
        "A received bytes that are not H's: {}",
        describe(&bad_frames)
    );
    assert_eq!(foreign, 0, "A received frames from elsewhere");
    assert!(
        from_h > 0,
        "nothing of H's reached A: the race did not happen"
    );
    assert!(
        stat(&st, RX_MALFORMED) > stat(&before, RX_MALFORMED),
        "no chain was refused: the race did not happen"
    );
    assert!(
        rewrites > published,
        "{rewrites} rewrites for {published} chains"
    );

    // Quiet again, H's queue still works: one good chain.
    let head = ring.avail_idx() % 256;
    ring.write_desc(head, desc(base, 96, 0, 0));
    ring.set_avail_entry(ring.avail_idx(), head);
    ring.set_avail_idx(ring.avail_idx().wrapping_add(1));
    let got = recv_n(&mut r.a, 1, RECV_TIMEOUT);
    assert!(
        got.len() == 1 && got[0].len() == 96 - HDR && is_pattern_frame(&got[0], &p),
        "after the race: {}",
        describe(&got)
    );
    r.serving("after descriptors changed under the switch");
    drop(h);
    r.h_gone(&[&name]);
}

// ---------------------------------------------------------------------------------------------
// The peer going away.

/// How far H gets before it vanishes.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// The first `n` steps of a frontend's setup (see `setup_step`).
    Steps(usize),
    /// Half of a SET_MEM_TABLE, its descriptor already sent.
    MidMessageWithFd,
    /// A GET whose answer it never reads.
    BeforeTheAnswer,
    /// Set up and transmitting.
    WhileTransmitting,
}

const SETUP_STEPS: usize = 11;

/// Step `step` of the setup QEMU or virtio-user performs.
fn setup_step(fe: &mut Frontend, step: usize, mem: &DriverMemory, q: &[DriverQueue; 2]) {
    let features = F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | VHOST_USER_F_PROTOCOL_FEATURES;
    let res = match step {
        0 => fe.get_features().map(drop),
        1 => fe
            .get_protocol_features()
            .and_then(|p| fe.set_protocol_features(p & (pf::REPLY_ACK | pf::MQ))),
        2 => fe.set_owner(),
        3 => fe.set_features(features),
        4 => fe.set_mem_table(&[(mem.region_desc(), mem.fd().as_fd())]),
        5 | 8 => {
            let i = usize::from(step == 8);
            let l = q[i].layout();
            let i = u32_of(i);
            fe.set_vring_num(i, u32::from(l.size))
                .and_then(|()| fe.set_vring_base(i, 0))
                .and_then(|()| fe.set_vring_addr(i, &l))
        }
        6 | 9 => {
            let i = u8::from(step == 9);
            fe.set_vring_call(i, None)
                .and_then(|()| fe.set_vring_kick(i, None))
        }
        7 | 10 => fe.set_vring_enable(u32::from(step == 10), true),
        _ => unreachable!("{SETUP_STEPS} steps"),
    };
    res.unwrap_or_else(|e| panic!("setup step {step}: {e}"));
}

fn vanish(r: &mut Rig, how: Vanish, name: &str) {
    match how {
        Vanish::Steps(n) => {
            let mut mem = DriverMemory::new(name, 1 << 20, false).expect("memory");
            let q = [
                DriverQueue::new(&mut mem, 64, 2048, HDR).expect("queue"),
                DriverQueue::new(&mut mem, 64, 2048, HDR).expect("queue"),
            ];
            let mut fe = raw_connect(r);
            for step in 0..n {
                setup_step(&mut fe, step, &mem, &q);
            }
            drop(fe);
        }
        Vanish::MidMessageWithFd => {
            let mut fe = hostile_frontend(r);
            let f = memfd(name);
            let body = mem_table_bytes(&[region(0, 1 << 20, 0x7000_0000)]);
            let h = Header::request(Request::SET_MEM_TABLE, body.len(), true).to_bytes();
            fe.connection()
                .send_parts([&h, &body[..8]], &[f.as_raw_fd()])
                .expect("send");
            drop(fe);
        }
        Vanish::BeforeTheAnswer => {
            let mut fe = hostile_frontend(r);
            let h = Header::request(Request::GET_CONFIG, 12 + 12, false);
            let c = ConfigMsg {
                offset: 0,
                size: 12,
                flags: 0,
                payload: vec![0; 12],
            };
            fe.connection().send(&h, &c.to_bytes(), &[]).expect("send");
            drop(fe);
        }
        Vanish::WhileTransmitting => {
            let mut h = hostile_guest(r, name);
            for i in 0..200 {
                if !h.tx.push_tx(&frame(BROADCAST, mac(H), &payload(i, 200))) {
                    break;
                }
            }
            h.tx.publish();
            drop(h);
            // Its broadcasts may have reached A and B.
            recv_now(&mut r.a);
            recv_now(&mut r.b);
        }
    }
}

#[test]
fn test_hostile_peer_vanishes_mid_negotiation() {
    let mut r = rig("vanish");
    let name = memfd_name("vanish", "mem");
    let mut ways: Vec<Vanish> = (0..=SETUP_STEPS).map(Vanish::Steps).collect();
    ways.extend([
        Vanish::MidMessageWithFd,
        Vanish::BeforeTheAnswer,
        Vanish::WhileTransmitting,
    ]);
    for how in ways {
        vanish(&mut r, how, &name);
        r.h_gone(&[&name]);
        if let Vanish::Steps(n) = how {
            if n % 4 != 3 {
                continue;
            }
        }
        r.serving(&format!("after H vanished: {how:?}"));
    }
    // A whole guest on the port H kept abandoning works.
    let mut h = hostile_guest(&mut r, &name);
    h_reaches_a(&mut r, &mut h, 1);
    a_reaches_h(&mut r, &mut h, 2);
    drop(h);
    r.h_gone(&[&name]);
    r.serving("at the end");
}

#[test]
fn test_hostile_reply_flag_on_a_request() {
    let mut r = rig("reply-flag");
    let mut fe = hostile_frontend(&r);
    // A "reply" sent as a request is refused without an answer; the connection goes on.
    let h = Header {
        request: req(Request::SET_OWNER),
        flags: VERSION | FLAG_REPLY,
        size: 0,
    };
    fe.connection().send(&h, &[], &[]).expect("send");
    still_serving(&mut fe, "after a reply sent as a request");
    drop(fe);
    r.h_gone(&[]);
    r.serving("after a reply sent as a request");
}

// ---------------------------------------------------------------------------------------------
// Descriptors and memory H changes behind the switch's back after they were checked.

#[test]
fn test_hostile_call_fd_that_blocks() {
    let mut r = rig("call-blocks");
    let name = memfd_name("call-blocks", "mem");
    let mut h = hostile_guest(&mut r, &name);
    // H's "eventfd" for its transmit queue is a socket nobody reads (a blocking eventfd whose
    // counter H set near its maximum does the same): once its buffer is full, a write blocks.
    let (theirs, mine) = UnixStream::pair().expect("socketpair");
    h.frontend()
        .set_vring_call(1, Some(theirs.as_fd()))
        .expect("SET_VRING_CALL");
    drop(theirs);
    // H asks to hear of every transmit completion, and transmits one frame at a time.
    h.tx.set_interrupts(true);
    let mut done = 0u64;
    // A stall is no completion at all; the deadlines only bound a loaded machine (a CI run
    // with a fuzzer beside it once took 2.4 ms per round trip here instead of 0.2).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && done < 2000 {
        assert!(h.tx.push_tx(&frame(mac(A), mac(H), &payload(done, 60))));
        h.tx.publish();
        let t = Instant::now() + Duration::from_secs(2);
        while h.tx.reclaim() == 0 && Instant::now() < t {
            std::thread::yield_now();
        }
        if Instant::now() >= t {
            break;
        }
        done += 1;
        if done.is_multiple_of(64) {
            recv_now(&mut r.a);
        }
    }
    eprintln!("{done} transmit completions notified");
    r.serving("after H's call fd stopped taking notifications");
    assert_eq!(done, 2000, "H's own queue stalled");
    drop(mine);
    drop(h);
    r.h_gone(&[&name]);
}

#[test]
fn test_hostile_memory_file_shrunk_after_check() {
    let mut r = rig("shrunk");
    let name = memfd_name("shrunk", "mem");
    let h = hostile_guest(&mut r, &name);
    // The switch checked that the file covers the region before mapping it; H now truncates
    // it, and every page of the switch's mapping lies past the end of the file. (H touches its
    // memory no more: so would this process fault.)
    let file = std::fs::File::from(h.memory().fd().try_clone().expect("dup"));
    file.set_len(0).expect("truncate");
    std::thread::sleep(Duration::from_millis(200));
    r.serving("after H truncated its memory file");
    drop(h);
    r.h_gone(&[&name]);
}

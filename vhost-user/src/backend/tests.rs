//! The backend against a scripted frontend over a socketpair (our own [`Frontend`] and raw
//! messages), and against rust-vmm's independent frontend implementation. Negative tests are
//! named after the bad input; each checks the connection (or the next one) still works.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::connection::Connection;
use crate::driver::{DriverMemory, DriverQueue};
use crate::frontend::Frontend;
use crate::message::{MemRegionDesc, VringState, FLAG_NEED_REPLY, VERSION};
use crate::net::{F_EVENT_IDX, F_INDIRECT_DESC, F_MRG_RXBUF, F_VERSION_1};
use crate::virtq::Source;
use std::os::fd::{AsFd, AsRawFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod migration;
mod packed;

struct Peer {
    fe: Frontend,
    slots: Arc<[QueueSlot]>,
    info: Arc<Mutex<DeviceInfo>>,
    thread: Option<JoinHandle<Result<()>>>,
}

fn start_with(cfg: BackendConfig) -> Peer {
    let (a, b) = UnixStream::pair().unwrap();
    let slots = Backend::make_slots(cfg.queue_pairs);
    let mut be = Backend::new(cfg, slots.clone());
    let info = be.info();
    let thread = std::thread::spawn(move || be.serve(&mut Connection::new(b)));
    // A backend that fails to answer makes the test fail, not hang.
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    Peer {
        fe: Frontend::from_stream(a),
        slots,
        info,
        thread: Some(thread),
    }
}

fn start() -> Peer {
    start_with(BackendConfig::default())
}

impl Peer {
    /// Closes the frontend side and returns what `serve` returned.
    fn finish(mut self) -> Result<()> {
        drop(std::mem::replace(
            &mut self.fe,
            Frontend::from_stream(UnixStream::pair().unwrap().0),
        ));
        self.thread.take().unwrap().join().unwrap()
    }

    fn negotiate_basics(&mut self) {
        self.fe.get_features().unwrap();
        self.fe.get_protocol_features().unwrap();
        self.fe
            .set_protocol_features(pf::REPLY_ACK | pf::MQ | pf::STATUS | pf::CONFIG)
            .unwrap();
        self.fe.set_owner().unwrap();
        self.fe
            .set_features(F_VERSION_1 | F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES)
            .unwrap();
    }

    /// Sends a raw request with NEED_REPLY and returns the ack value.
    fn raw_ack(&mut self, req: u32, body: &[u8], fds: &[std::os::fd::RawFd]) -> u64 {
        let h = Header {
            request: req,
            flags: VERSION | FLAG_NEED_REPLY,
            size: body.len() as u32,
        };
        let c = self.fe.connection();
        c.send(&h, body, fds).unwrap();
        let r = c.recv().unwrap();
        assert!(r.header.is_reply());
        assert_eq!(r.header.request, req);
        u64::from_le_bytes(r.body[..8].try_into().unwrap())
    }

    fn still_serving(&mut self) {
        assert_eq!(self.fe.get_features().unwrap(), DEVICE_FEATURES);
    }
}

struct Guest {
    mem: DriverMemory,
    rx: DriverQueue,
    tx: DriverQueue,
}

fn guest(name: &str) -> Guest {
    let mut mem = DriverMemory::new(name, 4 << 20, false).unwrap();
    let rx = DriverQueue::new(&mut mem, 256, 2048, 12).unwrap();
    let tx = DriverQueue::new(&mut mem, 256, 2048, 12).unwrap();
    Guest { mem, rx, tx }
}

fn setup(p: &mut Peer, g: &Guest) -> u64 {
    let want = F_VERSION_1 | F_MRG_RXBUF | F_INDIRECT_DESC | F_EVENT_IDX;
    p.fe.setup_net(
        want | VHOST_USER_F_PROTOCOL_FEATURES,
        &[(g.mem.region_desc(), g.mem.fd().as_fd())],
        &[(0, g.rx.layout(), None), (1, g.tx.layout(), None)],
    )
    .unwrap()
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8) ^ seed).collect()
}

/// Moves everything the guest transmitted back into its own receive queue, as a loopback port.
fn loopback(slots: &[QueueSlot]) -> usize {
    let mut txg = slots[1].try_lock().unwrap();
    let mut rxg = slots[0].try_lock().unwrap();
    let (tx, rx) = (txg.as_mut().unwrap(), rxg.as_mut().unwrap());
    let n = tx.pop_tx_burst();
    let hdr = tx.features().hdr_len;
    for c in tx.burst() {
        rx.enqueue(Source::Chain(c, hdr)).unwrap();
    }
    tx.complete_burst();
    rx.flush();
    n
}

#[test]
fn full_setup_traffic_and_vring_base() {
    let mut p = start();
    let mut g = guest("be-full");
    let f = setup(&mut p, &g);
    assert_eq!(f & F_MRG_RXBUF, F_MRG_RXBUF);
    assert!(p.slots[0].is_running() && p.slots[1].is_running());
    g.rx.refill_rx();
    let frames: Vec<_> = (0..10).map(|i| frame(64 + i * 100, i as u8)).collect();
    for f in &frames {
        assert!(g.tx.push_tx(f));
    }
    g.tx.publish();
    assert_eq!(loopback(&p.slots), 10);
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    g.rx.recv(64, &mut scratch, |b| got.push(b.to_vec()));
    assert_eq!(got, frames);
    assert_eq!(g.tx.reclaim(), 10);
    // GET_VRING_BASE stops the queue and reports where it stopped.
    assert_eq!(p.fe.get_vring_base(1).unwrap(), 10);
    assert!(!p.slots[1].is_running());
    assert_eq!(
        p.fe.get_status().unwrap() & crate::frontend::status::DRIVER_OK,
        4
    );
    {
        let info = p.info.lock().unwrap();
        assert!(info.connected);
        assert_eq!(info.queues.len(), 2);
        assert!(info.queues[0].running && !info.queues[1].running);
    }
    p.finish().unwrap();
}

#[test]
fn restart_from_vring_base() {
    let mut p = start();
    let mut g = guest("be-restart");
    setup(&mut p, &g);
    for _ in 0..3 {
        assert!(g.tx.push_tx(&frame(80, 1)));
    }
    g.tx.publish();
    g.rx.refill_rx();
    assert_eq!(loopback(&p.slots), 3);
    let base = p.fe.get_vring_base(1).unwrap();
    p.fe.set_vring_base(1, base).unwrap();
    p.fe.set_vring_kick(1, None).unwrap();
    assert!(p.slots[1].is_running());
    assert!(g.tx.push_tx(&frame(80, 2)));
    g.tx.publish();
    assert_eq!(
        loopback(&p.slots),
        1,
        "resumes after the 3 already consumed"
    );
    p.finish().unwrap();
}

#[test]
fn config_space_and_queue_num() {
    let mut p = start_with(BackendConfig {
        queue_pairs: 4,
        mac: [2, 1, 2, 3, 4, 5],
        mtu: 9000,
    });
    p.negotiate_basics();
    assert_eq!(p.fe.get_queue_num().unwrap(), 4);
    let c = p.fe.get_config(0, 12).unwrap();
    assert_eq!(&c[0..6], &[2, 1, 2, 3, 4, 5]);
    assert_eq!(u16::from_le_bytes([c[10], c[11]]), 9000);
    // Past the known fields, zeros.
    assert_eq!(p.fe.get_config(12, 8).unwrap(), vec![0; 8]);
    p.finish().unwrap();
}

#[test]
fn test_unknown_request_code() {
    let mut p = start();
    p.negotiate_basics();
    assert_ne!(p.raw_ack(999, &[], &[]), 0);
    assert_ne!(p.raw_ack(0, &[1, 2, 3], &[]), 0);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_unsupported_known_request() {
    let mut p = start();
    p.negotiate_basics();
    // IOTLB_MSG / POSTCOPY_ADVISE / GET_INFLIGHT_FD: known codes we do not implement.
    for code in [22u32, 28, 31] {
        assert_ne!(p.raw_ack(code, &[0; 8], &[]), 0, "request {code}");
    }
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_short_payload() {
    let mut p = start();
    p.negotiate_basics();
    assert_ne!(
        p.raw_ack(Request::SET_FEATURES as u32, &[1, 2, 3, 4], &[]),
        0
    );
    assert_ne!(p.raw_ack(Request::SET_VRING_NUM as u32, &[0; 4], &[]), 0);
    assert_ne!(p.raw_ack(Request::SET_VRING_ADDR as u32, &[0; 39], &[]), 0);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_oversized_header_size_closes_connection() {
    let mut p = start();
    let h = Header {
        request: Request::SET_FEATURES as u32,
        flags: VERSION,
        size: 1 << 20,
    };
    p.fe.connection().send(&h, &[], &[]).unwrap();
    assert!(matches!(p.finish(), Err(Error::PayloadTooLarge(_))));
}

#[test]
fn test_features_not_offered() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.set_features(1 << 63).is_err());
    assert!(p.fe.set_protocol_features(1 << 40).is_err());
    p.still_serving();
    p.finish().unwrap();
}

fn memfd(name: &str) -> OwnedFd {
    crate::mmap::create_memfd(name, 1 << 20, false).unwrap()
}

fn open_fds_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().contains(name))
        .count()
}

fn mappings_named(name: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(name))
        .count()
}

#[test]
fn test_unexpected_fd_closed_not_leaked() {
    let mut p = start();
    p.negotiate_basics();
    let name = "be-unexpected-fd";
    let f = memfd(name);
    let v = (F_VERSION_1).to_le_bytes();
    assert_ne!(
        p.raw_ack(Request::SET_FEATURES as u32, &v, &[f.as_raw_fd()]),
        0
    );
    assert_ne!(
        p.raw_ack(Request::SET_OWNER as u32, &[], &[f.as_raw_fd()]),
        0
    );
    drop(f);
    p.still_serving();
    assert_eq!(
        open_fds_named(name),
        0,
        "the backend closed the fds it refused"
    );
    p.finish().unwrap();
}

#[test]
fn test_vring_index_out_of_range() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.set_vring_num(2, 256).is_err());
    assert!(p.fe.set_vring_num(u32::MAX, 256).is_err());
    assert!(p.fe.set_vring_enable(7, true).is_err());
    assert!(p.fe.set_vring_call(200, None).is_err());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_get_vring_base_out_of_range_closes() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.get_vring_base(9).is_err());
    assert!(p.finish().is_err());
}

#[test]
fn test_queue_size_zero() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.set_vring_num(0, 0).is_err());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_queue_size_not_power_of_two() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.set_vring_num(0, 300).is_err());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_queue_size_above_32768() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.set_vring_num(0, 65536).is_err());
    assert!(p.fe.set_vring_num(0, 32768).is_ok());
    p.finish().unwrap();
}

#[test]
fn test_mem_table_fd_count_mismatch() {
    let mut p = start();
    p.negotiate_basics();
    let d = MemRegionDesc {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        userspace_addr: 0x1000_0000,
        mmap_offset: 0,
    };
    let d2 = MemRegionDesc {
        guest_phys_addr: 1 << 20,
        userspace_addr: 0x2000_0000,
        ..d
    };
    let f = memfd("be-mt");
    let body = crate::message::mem_table_bytes(&[d, d2]);
    assert_ne!(
        p.raw_ack(Request::SET_MEM_TABLE as u32, &body, &[f.as_raw_fd()]),
        0
    );
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_mem_table_region_arithmetic_overflow() {
    let mut p = start();
    p.negotiate_basics();
    let f = memfd("be-ovf");
    let d = MemRegionDesc {
        guest_phys_addr: u64::MAX - 4095,
        memory_size: 1 << 20,
        userspace_addr: 0,
        mmap_offset: 0,
    };
    assert!(p.fe.set_mem_table(&[(d, f.as_fd())]).is_err());
    let d = MemRegionDesc {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        userspace_addr: 0,
        mmap_offset: u64::MAX - 10,
    };
    assert!(p.fe.set_mem_table(&[(d, f.as_fd())]).is_err());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_mem_table_region_larger_than_file() {
    let mut p = start();
    p.negotiate_basics();
    let f = memfd("be-big");
    let d = MemRegionDesc {
        guest_phys_addr: 0,
        memory_size: 1 << 30,
        userspace_addr: 0,
        mmap_offset: 0,
    };
    assert!(p.fe.set_mem_table(&[(d, f.as_fd())]).is_err());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_ring_outside_memory_does_not_start() {
    let mut p = start();
    let g = guest("be-ring-out");
    p.negotiate_basics();
    p.fe.set_mem_table(&[(g.mem.region_desc(), g.mem.fd().as_fd())])
        .unwrap();
    let mut l = g.tx.layout();
    l.used_uva = 0x10;
    p.fe.set_vring_num(1, 256).unwrap();
    p.fe.set_vring_addr(1, &l).unwrap();
    p.fe.set_vring_kick(1, None).unwrap();
    p.fe.set_vring_enable(1, true).unwrap();
    assert!(!p.slots[1].is_running());
    assert!(p.info.lock().unwrap().queues[1].error.is_some());
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_mem_table_in_a_loop_does_not_grow() {
    let mut p = start();
    let g = guest("be-memloop");
    p.negotiate_basics();
    for _ in 0..500 {
        p.fe.set_mem_table(&[(g.mem.region_desc(), g.mem.fd().as_fd())])
            .unwrap();
    }
    // Ours plus the backend's one live mapping of the region.
    assert_eq!(mappings_named("be-memloop"), 2);
    assert_eq!(open_fds_named("be-memloop"), 2);
    p.finish().unwrap();
    assert_eq!(mappings_named("be-memloop"), 1, "unmapped on disconnect");
    assert_eq!(open_fds_named("be-memloop"), 1, "fd closed on disconnect");
}

#[test]
fn test_peer_vanishes_mid_negotiation() {
    let mut p = start();
    let g = guest("be-vanish");
    p.negotiate_basics();
    p.fe.set_mem_table(&[(g.mem.region_desc(), g.mem.fd().as_fd())])
        .unwrap();
    p.fe.set_vring_num(0, 256).unwrap();
    p.finish().unwrap();
    assert_eq!(mappings_named("be-vanish"), 1);
}

#[test]
fn test_peer_vanishes_mid_message() {
    let mut p = start();
    p.negotiate_basics();
    let h = Header::request(Request::SET_FEATURES, 8, false);
    use std::io::Write;
    let mut s = p.fe.connection().socket().try_clone().unwrap();
    s.write_all(&h.to_bytes()).unwrap();
    s.write_all(&[1, 2]).unwrap();
    drop(s);
    assert!(matches!(p.finish(), Err(Error::PartialMessage { .. })));
}

#[test]
fn test_disconnect_with_running_queues_stops_them() {
    let mut p = start();
    let g = guest("be-running");
    setup(&mut p, &g);
    let slots = p.slots.clone();
    assert!(slots[0].is_running());
    p.finish().unwrap();
    assert!(slots
        .iter()
        .all(|s| !s.is_running() && s.try_lock().unwrap().is_none()));
    assert_eq!(mappings_named("be-running"), 1);
}

#[test]
fn test_set_vring_enable_value_not_boolean() {
    let mut p = start();
    p.negotiate_basics();
    let body = VringState { index: 0, num: 2 }.to_bytes();
    assert_ne!(p.raw_ack(Request::SET_VRING_ENABLE as u32, &body, &[]), 0);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_vring_fd_payload_unknown_bits() {
    let mut p = start();
    p.negotiate_basics();
    let v = (1u64 << 20).to_le_bytes();
    assert_ne!(p.raw_ack(Request::SET_VRING_CALL as u32, &v, &[]), 0);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_reply_flag_set_on_request() {
    let mut p = start();
    p.negotiate_basics();
    let h = Header {
        request: Request::SET_OWNER as u32,
        flags: VERSION | crate::message::FLAG_REPLY,
        size: 0,
    };
    p.fe.connection().send(&h, &[], &[]).unwrap();
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn test_status_zero_resets_device() {
    let mut p = start();
    let g = guest("be-status");
    setup(&mut p, &g);
    assert!(p.slots[0].is_running());
    p.fe.set_status(0).unwrap();
    assert!(!p.slots[0].is_running());
    assert_eq!(mappings_named("be-status"), 1);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn get_vring_base_after_status_zero_reports_where_the_ring_stopped() {
    // QEMU 7.2 stops a vhost-user device (for a migration, say) with SET_STATUS 0 and only
    // then GET_VRING_BASE: the rings' positions must survive the reset.
    let mut p = start();
    let mut g = guest("be-status-base");
    setup(&mut p, &g);
    g.rx.refill_rx();
    for i in 0..7 {
        assert!(g.tx.push_tx(&frame(100, i)));
    }
    g.tx.publish();
    assert_eq!(loopback(&p.slots), 7);
    p.fe.set_status(0).unwrap();
    assert!(!p.slots[0].is_running() && !p.slots[1].is_running());
    assert_eq!(p.fe.get_vring_base(1).unwrap(), 7);
    assert_eq!(p.fe.get_vring_base(0).unwrap(), 7);
    p.still_serving();
    p.finish().unwrap();
}

#[test]
fn new_memory_table_while_running_keeps_queue() {
    let mut p = start();
    let mut g = guest("be-remap");
    setup(&mut p, &g);
    p.fe.set_mem_table(&[(g.mem.region_desc(), g.mem.fd().as_fd())])
        .unwrap();
    assert!(p.slots[1].is_running());
    g.rx.refill_rx();
    assert!(g.tx.push_tx(&frame(100, 3)));
    g.tx.publish();
    assert_eq!(loopback(&p.slots), 1);
    assert_eq!(mappings_named("be-remap"), 2, "old mapping released");
    p.finish().unwrap();
}

#[test]
fn interop_with_rust_vmm_frontend() {
    use vhost::vhost_user::message::VhostUserProtocolFeatures;
    use vhost::vhost_user::{Frontend as VmmFrontend, VhostUserFrontend};
    use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
    use vmm_sys_util::eventfd::EventFd as VmmEventFd;

    let dir = std::env::temp_dir().join(format!("vu-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let slots = Backend::make_slots(1);
    let be_slots = slots.clone();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        Backend::new(BackendConfig::default(), be_slots).serve(&mut Connection::new(s))
    });
    let mut g = guest("be-vmm");
    // rust-vmm counts queues, not pairs.
    let mut fe = VmmFrontend::connect(&path, 2).unwrap();
    let offered = fe.get_features().unwrap();
    assert_eq!(offered, DEVICE_FEATURES);
    let pfs = fe.get_protocol_features().unwrap();
    assert!(pfs.contains(VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ));
    fe.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ)
        .unwrap();
    // Not asked: rust-vmm reads GET_QUEUE_NUM as a count of vrings and would then refuse
    // queue 1, while QEMU and DPDK (whom we follow) read it as queue pairs for virtio-net.
    fe.set_owner().unwrap();
    fe.set_features(F_VERSION_1 | F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES)
        .unwrap();
    let d = g.mem.region_desc();
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: d.guest_phys_addr,
        memory_size: d.memory_size,
        userspace_addr: d.userspace_addr,
        mmap_offset: 0,
        mmap_handle: g.mem.fd().as_raw_fd(),
    };
    fe.set_mem_table(&[region]).unwrap();
    let kick = VmmEventFd::new(0).unwrap();
    let call = VmmEventFd::new(0).unwrap();
    for (i, q) in [(0usize, &g.rx), (1, &g.tx)] {
        let l = q.layout();
        fe.set_vring_num(i, l.size).unwrap();
        fe.set_vring_base(i, 0).unwrap();
        fe.set_vring_addr(
            i,
            &VringConfigData {
                queue_max_size: l.size,
                queue_size: l.size,
                flags: 0,
                desc_table_addr: l.desc_uva,
                used_ring_addr: l.used_uva,
                avail_ring_addr: l.avail_uva,
                log_addr: None,
            },
        )
        .unwrap();
        fe.set_vring_call(i, &call).unwrap();
        fe.set_vring_kick(i, &kick).unwrap();
        fe.set_vring_enable(i, true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(slots[0].is_running() && slots[1].is_running()) {
        assert!(Instant::now() < deadline, "queues did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    g.rx.refill_rx();
    g.rx.set_interrupts(true);
    assert!(g.tx.push_tx(&frame(200, 5)));
    g.tx.publish();
    assert_eq!(loopback(&slots), 1);
    assert!(
        call.read().unwrap() >= 1,
        "guest was notified through its call eventfd"
    );
    let mut n = 0;
    g.rx.recv(8, &mut Vec::new(), |b| {
        assert_eq!(b, &frame(200, 5)[..]);
        n += 1;
    });
    assert_eq!(n, 1);
    assert_eq!(fe.get_vring_base(1).unwrap(), 1);
    drop(fe);
    t.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn multiqueue_two_pairs_start_and_carry_traffic() {
    let mut p = start_with(BackendConfig {
        queue_pairs: 2,
        ..BackendConfig::default()
    });
    let mut mem = DriverMemory::new("be-mq", 8 << 20, false).unwrap();
    let mut qs: Vec<DriverQueue> = (0..4)
        .map(|_| DriverQueue::new(&mut mem, 128, 2048, 12).unwrap())
        .collect();
    p.fe.get_features().unwrap();
    p.fe.get_protocol_features().unwrap();
    p.fe.set_protocol_features(pf::REPLY_ACK | pf::MQ).unwrap();
    assert_eq!(p.fe.get_queue_num().unwrap(), 2);
    let layouts: Vec<_> = qs
        .iter()
        .enumerate()
        .map(|(i, q)| (i as u32, q.layout(), None))
        .collect();
    p.fe.setup_net(
        F_VERSION_1 | F_MRG_RXBUF | crate::net::F_MQ | VHOST_USER_F_PROTOCOL_FEATURES,
        &[(mem.region_desc(), mem.fd().as_fd())],
        &layouts,
    )
    .unwrap();
    assert!(p.slots.iter().all(|s| s.is_running()));
    // Queue pair 1 carries traffic on its own: TX queue 3 looped into RX queue 2.
    qs[2].refill_rx();
    assert!(qs[3].push_tx(&frame(300, 7)));
    qs[3].publish();
    {
        let mut txg = p.slots[3].try_lock().unwrap();
        let mut rxg = p.slots[2].try_lock().unwrap();
        let (tx, rx) = (txg.as_mut().unwrap(), rxg.as_mut().unwrap());
        assert_eq!(tx.pop_tx_burst(), 1);
        rx.enqueue(Source::Chain(&tx.burst()[0], 12)).unwrap();
        tx.complete_burst();
        rx.flush();
    }
    let mut got = Vec::new();
    qs[2].recv(8, &mut Vec::new(), |b| got.push(b.to_vec()));
    assert_eq!(got, vec![frame(300, 7)]);
    // Disabling pair 1 stops exactly its queues.
    p.fe.set_vring_enable(2, false).unwrap();
    p.fe.set_vring_enable(3, false).unwrap();
    assert!(p.slots[0].is_running() && p.slots[1].is_running());
    assert!(!p.slots[2].is_running() && !p.slots[3].is_running());
    p.finish().unwrap();
}

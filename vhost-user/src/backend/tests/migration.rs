//! Live migration against a scripted frontend: the dirty log marks what the backend wrote and
//! nothing else, logging off writes nothing, `SEND_RARP` reaches the switch, and each hostile
//! logging request closes the connection (named after the bad input).

use super::*;
use crate::dirty_log::{log_bytes_for, LOG_PAGE_SIZE};
use crate::mmap::create_memfd;
use crate::net::F_LOG_ALL;
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;

/// A log file of `bytes` bytes, and a way to read its bits back as page numbers.
struct LogFile {
    fd: OwnedFd,
    offset: u64,
    bytes: u64,
}

impl LogFile {
    fn new(bytes: u64, offset: u64) -> LogFile {
        LogFile {
            fd: create_memfd("dirty-log", offset + bytes, false).unwrap(),
            offset,
            bytes,
        }
    }

    fn for_guest(g: &Guest) -> LogFile {
        let d = g.mem.region_desc();
        LogFile::new(log_bytes_for(d.guest_phys_addr + d.memory_size), 0)
    }

    fn file(&self) -> std::fs::File {
        std::fs::File::from(self.fd.try_clone().unwrap())
    }

    fn pages(&self) -> BTreeSet<u64> {
        let mut b = vec![0u8; self.bytes as usize];
        self.file().read_exact_at(&mut b, self.offset).unwrap();
        let mut set = BTreeSet::new();
        for (i, byte) in b.iter().enumerate() {
            for k in 0..8 {
                if byte & (1 << k) != 0 {
                    set.insert(i as u64 * 8 + k);
                }
            }
        }
        set
    }

    fn clear(&self) {
        let z = vec![0u8; self.bytes as usize];
        self.file().write_all_at(&z, self.offset).unwrap();
    }
}

fn snapshot(g: &Guest) -> Vec<u8> {
    let d = g.mem.region_desc();
    let mut v = vec![0u8; d.memory_size as usize];
    g.mem.read(d.guest_phys_addr, &mut v).unwrap();
    v
}

/// Guest-physical pages whose bytes differ between two snapshots.
fn changed_pages(g: &Guest, before: &[u8], after: &[u8]) -> BTreeSet<u64> {
    let base = g.mem.region_desc().guest_phys_addr;
    before
        .chunks(LOG_PAGE_SIZE as usize)
        .zip(after.chunks(LOG_PAGE_SIZE as usize))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| base / LOG_PAGE_SIZE + i as u64)
        .collect()
}

fn used_gpa(g: &Guest, q: &DriverQueue) -> u64 {
    let d = g.mem.region_desc();
    q.layout().used_uva - d.userspace_addr + d.guest_phys_addr
}

fn pages_of(gpa: u64, len: u64) -> BTreeSet<u64> {
    (gpa / LOG_PAGE_SIZE..=(gpa + len - 1) / LOG_PAGE_SIZE).collect()
}

/// A frontend that negotiated the migration protocol features and set the guest up.
fn migrating_peer(name: &str) -> (Peer, Guest, u64) {
    let mut p = start();
    let g = guest(name);
    let f = setup(&mut p, &g);
    (p, g, f)
}

/// Turns logging on the way QEMU does at the start of a migration: log base, LOG_ALL, then
/// every ring's address again with VHOST_VRING_F_LOG.
fn start_logging(p: &mut Peer, g: &Guest, f: u64, log: &LogFile) {
    p.fe.set_log_base(log.bytes, log.offset, log.fd.as_fd())
        .unwrap();
    p.fe.set_features(f | F_LOG_ALL).unwrap();
    for (i, q) in [(0, &g.rx), (1, &g.tx)] {
        p.fe.set_vring_addr_logged(i, &q.layout(), used_gpa(g, q))
            .unwrap();
    }
    assert!(p.slots[0].is_running() && p.slots[1].is_running());
}

/// [`loopback`] the way the switch delivers: the whole burst at once.
fn loopback_burst(slots: &[QueueSlot]) -> usize {
    let mut txg = slots[1].try_lock().unwrap();
    let mut rxg = slots[0].try_lock().unwrap();
    let (tx, rx) = (txg.as_mut().unwrap(), rxg.as_mut().unwrap());
    let n = tx.pop_tx_burst();
    let hdr = tx.features().hdr_len;
    let mut tally = crate::virtq::RxTally::default();
    rx.enqueue_burst(tx.burst().iter(), hdr, &mut tally);
    assert_eq!(tally.packets, n as u64);
    tx.complete_burst();
    rx.flush();
    n
}

/// Sends `n` frames of `len` bytes around the loopback (frame by frame or as a burst);
/// returns the pages the backend changed.
fn traffic_with(
    g: &mut Guest,
    slots: &[QueueSlot],
    n: usize,
    len: usize,
    seed: u8,
    burst: bool,
) -> BTreeSet<u64> {
    for i in 0..n {
        assert!(g.tx.push_tx(&frame(len, seed.wrapping_add(i as u8))));
    }
    g.tx.publish();
    let before = snapshot(g);
    let moved = if burst {
        loopback_burst(slots)
    } else {
        loopback(slots)
    };
    assert_eq!(moved, n);
    let after = snapshot(g);
    let mut got = 0;
    g.rx.recv(256, &mut Vec::new(), |_| got += 1);
    assert_eq!(got, n);
    g.tx.reclaim();
    g.rx.refill_rx();
    changed_pages(g, &before, &after)
}

fn traffic(g: &mut Guest, slots: &[QueueSlot], n: usize, len: usize, seed: u8) -> BTreeSet<u64> {
    traffic_with(g, slots, n, len, seed, true)
}

#[test]
fn logging_marks_every_page_the_backend_writes() {
    let (mut p, mut g, f) = migrating_peer("mig-marks");
    g.rx.refill_rx();
    let log = LogFile::for_guest(&g);
    start_logging(&mut p, &g, f, &log);
    {
        let info = p.info.lock().unwrap();
        assert!(info.queues.iter().all(|q| q.logging && q.log_used));
    }
    let rings: BTreeSet<u64> = [&g.rx, &g.tx]
        .iter()
        .flat_map(|q| pages_of(used_gpa(&g, q), crate::ring::used_ring_bytes(256) as u64))
        .collect();
    // Starting to log marks both used rings whole.
    assert_eq!(log.pages(), rings);
    // Frames of several sizes: small ones share a buffer page, big ones straddle pages
    // (2 KiB buffers: every other buffer crosses a page boundary with 2048 + 12 bytes).
    let cases = [60usize, 700, 1500, 2036]
        .into_iter()
        .flat_map(|len| [(len, true), (len, false)]);
    for (k, (len, burst)) in cases.enumerate() {
        log.clear();
        let changed = traffic_with(&mut g, &p.slots, 20, len, k as u8, burst);
        let marked = log.pages();
        assert!(
            changed.is_subset(&marked),
            "{len} B: pages written but not logged: {:?}",
            changed.difference(&marked).collect::<Vec<_>>()
        );
        let extra: BTreeSet<_> = marked.difference(&changed).copied().collect();
        assert!(
            extra.is_subset(&rings),
            "{len} B: pages logged that the backend did not write: {extra:?}"
        );
        assert!(changed.len() > 2, "receive buffers were written and logged");
    }
    p.finish().unwrap();
}

#[test]
fn used_ring_logged_at_log_guest_addr() {
    // The frontend says where the used ring is in guest-physical space; log there, whatever
    // the ring's frontend-virtual address is: here log_guest_addr names another page.
    let (mut p, mut g, f) = migrating_peer("mig-used");
    g.rx.refill_rx();
    let log = LogFile::for_guest(&g);
    p.fe.set_log_base(log.bytes, 0, log.fd.as_fd()).unwrap();
    p.fe.set_features(f | F_LOG_ALL).unwrap();
    let d = g.mem.region_desc();
    let elsewhere = d.guest_phys_addr + d.memory_size - 2 * LOG_PAGE_SIZE;
    p.fe.set_vring_addr_logged(1, &g.tx.layout(), elsewhere)
        .unwrap();
    log.clear();
    assert!(g.tx.push_tx(&frame(64, 1)));
    g.tx.publish();
    {
        let mut txg = p.slots[1].try_lock().unwrap();
        let tx = txg.as_mut().unwrap();
        assert_eq!(tx.pop_tx_burst(), 1);
        tx.complete_burst();
    }
    // The TX queue wrote one used element (and the index) and nothing else: the log shows the
    // page at log_guest_addr, not the page the ring really lives on.
    assert_eq!(log.pages(), BTreeSet::from([elsewhere / LOG_PAGE_SIZE]));
    p.finish().unwrap();
}

#[test]
fn nothing_logged_when_logging_is_off() {
    let (mut p, mut g, f) = migrating_peer("mig-off");
    g.rx.refill_rx();
    let log = LogFile::for_guest(&g);
    // A log mapped but LOG_ALL not acked: nothing is logged.
    p.fe.set_log_base(log.bytes, 0, log.fd.as_fd()).unwrap();
    assert!(!traffic(&mut g, &p.slots, 10, 100, 1).is_empty());
    assert!(log.pages().is_empty());
    // On, then off again (a cancelled migration): nothing after the switch-off.
    start_logging(&mut p, &g, f, &log);
    assert!(!log.pages().is_empty());
    p.fe.set_features(f).unwrap();
    log.clear();
    assert!(!traffic(&mut g, &p.slots, 10, 1500, 2).is_empty());
    assert!(log.pages().is_empty());
    assert!(p.info.lock().unwrap().queues.iter().all(|q| !q.logging));
    p.finish().unwrap();
}

#[test]
fn get_vring_base_stops_a_logged_ring() {
    let (mut p, mut g, f) = migrating_peer("mig-stop");
    g.rx.refill_rx();
    let log = LogFile::for_guest(&g);
    start_logging(&mut p, &g, f, &log);
    traffic(&mut g, &p.slots, 5, 64, 0);
    assert_eq!(p.fe.get_vring_base(1).unwrap(), 5);
    assert_eq!(p.fe.get_vring_base(0).unwrap(), 5);
    assert!(!p.slots[0].is_running() && !p.slots[1].is_running());
    p.finish().unwrap();
}

#[test]
fn send_rarp_reaches_the_switch() {
    let (a, b) = UnixStream::pair().unwrap();
    let slots = Backend::make_slots(1);
    let mut be = Backend::new(BackendConfig::default(), slots);
    let (tx, rx) = std::sync::mpsc::channel();
    be.on_rarp(Box::new(move |mac| {
        let _ = tx.send(mac);
    }));
    let t = std::thread::spawn(move || be.serve(&mut Connection::new(b)));
    let mut fe = Frontend::from_stream(a);
    fe.get_features().unwrap();
    fe.set_protocol_features(pf::REPLY_ACK | pf::RARP).unwrap();
    fe.send_rarp([2, 0, 0, 0, 0, 0x42]).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        [2, 0, 0, 0, 0, 0x42]
    );
    // A multicast MAC is refused, and the connection goes on.
    assert!(fe.send_rarp([1, 0, 0x5e, 0, 0, 1]).is_err());
    assert_eq!(fe.get_features().unwrap(), DEVICE_FEATURES);
    drop(fe);
    t.join().unwrap().unwrap();
}

#[test]
fn interop_rust_vmm_frontend_set_log_base() {
    use vhost::vhost_user::message::VhostUserProtocolFeatures;
    use vhost::vhost_user::{Frontend as VmmFrontend, VhostUserFrontend};
    use vhost::{VhostBackend, VhostUserDirtyLogRegion, VhostUserMemoryRegionInfo};

    let dir = std::env::temp_dir().join(format!("vu-mig-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        Backend::new(BackendConfig::default(), Backend::make_slots(1))
            .serve(&mut Connection::new(s))
    });
    let g = guest("be-vmm-log");
    let mut fe = VmmFrontend::connect(&path, 2).unwrap();
    fe.get_features().unwrap();
    let pfs = fe.get_protocol_features().unwrap();
    assert!(pfs.contains(VhostUserProtocolFeatures::LOG_SHMFD | VhostUserProtocolFeatures::RARP));
    fe.set_protocol_features(VhostUserProtocolFeatures::LOG_SHMFD)
        .unwrap();
    fe.set_owner().unwrap();
    fe.set_features(F_VERSION_1 | F_LOG_ALL).unwrap();
    let d = g.mem.region_desc();
    fe.set_mem_table(&[VhostUserMemoryRegionInfo {
        guest_phys_addr: d.guest_phys_addr,
        memory_size: d.memory_size,
        userspace_addr: d.userspace_addr,
        mmap_offset: 0,
        mmap_handle: g.mem.fd().as_raw_fd(),
    }])
    .unwrap();
    let log = LogFile::for_guest(&g);
    fe.set_log_base(
        0,
        Some(VhostUserDirtyLogRegion {
            mmap_size: log.bytes,
            mmap_offset: 0,
            mmap_handle: log.fd.as_raw_fd(),
        }),
    )
    .unwrap();
    // Still in step after the reply.
    fe.get_features().unwrap();
    drop(fe);
    t.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The backend closed the connection with a protocol error naming `what`.
fn assert_closed(p: Peer, what: &str) {
    match p.finish() {
        Err(Error::Protocol(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected the connection closed over {what}, got {other:?}"),
    }
}

#[test]
fn test_log_fd_too_small_for_memory() {
    let (mut p, g, _) = migrating_peer("mig-small");
    // 4 MiB of guest memory at 4 GiB needs 128 KiB + 128 bytes of log.
    let log = LogFile::new(16, 0);
    assert!(p.fe.set_log_base(16, 0, log.fd.as_fd()).is_err());
    drop(g);
    assert_closed(p, "too small");
}

#[test]
fn test_log_fd_too_small_for_high_guest_addresses() {
    // The log covers pages from 0 up to the highest guest address, not the memory's size.
    let mut p = start();
    let mut mem = DriverMemory::with_gpa_base("mig-high", 4 << 20, false, 1 << 36).unwrap();
    let rx = DriverQueue::new(&mut mem, 256, 2048, 12).unwrap();
    let tx = DriverQueue::new(&mut mem, 256, 2048, 12).unwrap();
    let g = Guest { mem, rx, tx };
    setup(&mut p, &g);
    // A log sized for the memory's 4 MiB (128 bytes), or even for 32 GiB of it, is too small
    // for memory at 64 GiB.
    let small = LogFile::new(1 << 20, 0);
    assert!(p.fe.set_log_base(128, 0, small.fd.as_fd()).is_err());
    assert_closed(p, "too small");
    let mut p = start();
    setup(&mut p, &g);
    assert!(p.fe.set_log_base(1 << 20, 0, small.fd.as_fd()).is_err());
    assert_closed(p, "too small");
}

#[test]
fn test_log_offset_past_file() {
    let (mut p, g, _) = migrating_peer("mig-offset");
    let log = LogFile::for_guest(&g);
    assert!(p
        .fe
        .set_log_base(log.bytes, 1 << 20, log.fd.as_fd())
        .is_err());
    assert_closed(p, "past the end");
}

#[test]
fn test_log_size_and_offset_past_file() {
    let (mut p, g, _) = migrating_peer("mig-offset2");
    let log = LogFile::for_guest(&g);
    assert!(p.fe.set_log_base(log.bytes, 64, log.fd.as_fd()).is_err());
    assert_closed(p, "does not fit");
}

#[test]
fn test_set_log_base_before_mem_table() {
    let mut p = start();
    p.fe.get_features().unwrap();
    p.fe.set_protocol_features(pf::REPLY_ACK | pf::LOG_SHMFD)
        .unwrap();
    p.fe.set_owner().unwrap();
    let log = LogFile::new(4096, 0);
    assert!(p.fe.set_log_base(4096, 0, log.fd.as_fd()).is_err());
    assert_closed(p, "before SET_MEM_TABLE");
}

#[test]
fn test_vring_f_log_with_log_all_before_mem_table() {
    let mut p = start();
    p.fe.get_features().unwrap();
    p.fe.set_protocol_features(pf::REPLY_ACK | pf::LOG_SHMFD)
        .unwrap();
    p.fe.set_owner().unwrap();
    // LOG_ALL alone before the table is what QEMU sends when it reconnects mid-migration.
    p.fe.set_features(F_VERSION_1 | F_LOG_ALL).unwrap();
    p.fe.set_vring_num(0, 256).unwrap();
    let g = guest("mig-nomem");
    assert!(p
        .fe
        .set_vring_addr_logged(0, &g.rx.layout(), 0x1000)
        .is_err());
    assert_closed(p, "before SET_MEM_TABLE");
}

#[test]
fn test_log_guest_addr_outside_guest_memory() {
    let (mut p, g, f) = migrating_peer("mig-outside");
    let log = LogFile::for_guest(&g);
    p.fe.set_log_base(log.bytes, 0, log.fd.as_fd()).unwrap();
    p.fe.set_features(f | F_LOG_ALL).unwrap();
    assert!(p
        .fe
        .set_vring_addr_logged(0, &g.rx.layout(), 1 << 40)
        .is_err());
    assert_closed(p, "outside guest memory");
}

#[test]
fn test_log_guest_addr_straddling_the_end_of_guest_memory() {
    let (mut p, g, f) = migrating_peer("mig-straddle");
    let log = LogFile::for_guest(&g);
    p.fe.set_log_base(log.bytes, 0, log.fd.as_fd()).unwrap();
    p.fe.set_features(f | F_LOG_ALL).unwrap();
    let d = g.mem.region_desc();
    let near_end = d.guest_phys_addr + d.memory_size - 16;
    assert!(p
        .fe
        .set_vring_addr_logged(1, &g.tx.layout(), near_end)
        .is_err());
    assert_closed(p, "outside guest memory");
}

#[test]
fn test_send_rarp_without_protocol_feature() {
    let mut p = start();
    p.negotiate_basics();
    assert!(p.fe.send_rarp([2, 0, 0, 0, 0, 1]).is_err());
    assert_closed(p, "RARP protocol feature");
}

#[test]
fn test_set_log_base_without_fd() {
    let mut p = start();
    p.negotiate_basics();
    let body = crate::message::LogRegion {
        mmap_size: 4096,
        mmap_offset: 0,
    }
    .to_bytes();
    assert_ne!(p.raw_ack(Request::SET_LOG_BASE as u32, &body, &[]), 0);
    assert_closed(p, "SET_LOG_BASE");
}

#[test]
fn test_memory_table_beyond_the_log_while_logging() {
    let (mut p, g, _) = migrating_peer("mig-grow");
    let log = LogFile::for_guest(&g);
    p.fe.set_log_base(log.bytes, 0, log.fd.as_fd()).unwrap();
    // A second region far above what the log covers.
    let far = DriverMemory::with_gpa_base("mig-grow-2", 1 << 20, false, 1 << 34).unwrap();
    let regions = [
        (g.mem.region_desc(), g.mem.fd().as_fd()),
        (far.region_desc(), far.fd().as_fd()),
    ];
    assert!(p.fe.set_mem_table(&regions).is_err());
    assert_closed(p, "too small");
}

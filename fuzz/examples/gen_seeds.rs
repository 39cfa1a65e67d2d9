//! Writes the committed seed corpora (`fuzz/seeds/<target>/`): a few valid inputs per target,
//! encoded with the same code the targets decode them with (`vswitch_fuzz`).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds -- fuzz/seeds`

use std::path::Path;

use vhost_user::backend::PROTOCOL_FEATURES;
use vhost_user::message::{
    mem_table_bytes, protocol_features as pf, rarp_bytes, single_region_bytes, ConfigMsg, Header,
    LogRegion, MemRegionDesc, Request, VringAddr, VringState, FLAG_NEED_REPLY, VERSION,
    VHOST_USER_F_PROTOCOL_FEATURES, VRING_ADDR_F_LOG, VRING_NOFD_MASK,
};
use vhost_user::net;
use vhost_user::ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vswitch_fuzz::chains::{self, Desc, QueueSpec};
use vswitch_fuzz::packed_chains::{self as pk, PDesc};
use vswitch_fuzz::stream;

const UVA: u64 = 0x7f00_0000_0000;
const RING_SIZE: u32 = 64;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create seed dir");
    std::fs::write(d.join(name), bytes).expect("write seed");
}

fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..16].copy_from_slice(&next.to_le_bytes());
    b
}

/// An avail ring with `heads` published.
fn avail_bytes(heads: &[u16]) -> Vec<u8> {
    let mut v = vec![0, 0];
    v.extend_from_slice(&u16::try_from(heads.len()).unwrap().to_le_bytes());
    for h in heads {
        v.extend_from_slice(&h.to_le_bytes());
    }
    v
}

/// A frame with a 12-byte virtio-net header in front.
fn tx_payload(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; 12];
    v.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    v.extend((0..len.saturating_sub(14)).map(|i| (i % 251) as u8));
    v
}

struct Session {
    b: stream::Builder,
    flags: u8,
}

impl Session {
    fn new(need_reply: bool) -> Self {
        let flags = (VERSION | if need_reply { FLAG_NEED_REPLY } else { 0 }) as u8;
        Session {
            b: stream::Builder::default(),
            flags,
        }
    }

    fn msg(&mut self, req: Request, body: &[u8], nfds: u8) -> &mut Self {
        self.b.msg(req as u32 as u8, self.flags, body, nfds);
        self
    }

    fn u64(&mut self, req: Request, v: u64) -> &mut Self {
        self.msg(req, &v.to_le_bytes(), 0)
    }

    fn state(&mut self, req: Request, index: u32, num: u32) -> &mut Self {
        self.msg(req, &VringState { index, num }.to_bytes(), 0)
    }

    fn handshake(&mut self, features: u64, protocol: u64) -> &mut Self {
        self.msg(Request::GET_FEATURES, &[], 0)
            .msg(Request::GET_PROTOCOL_FEATURES, &[], 0)
            .u64(Request::SET_PROTOCOL_FEATURES, protocol)
            .msg(Request::GET_QUEUE_NUM, &[], 0)
            .msg(Request::SET_OWNER, &[], 0)
            .u64(Request::SET_FEATURES, features);
        let r = MemRegionDesc {
            guest_phys_addr: 0,
            memory_size: stream::MEMFD_SIZE,
            userspace_addr: UVA,
            mmap_offset: 0,
        };
        self.msg(Request::SET_MEM_TABLE, &mem_table_bytes(&[r]), 1)
    }

    /// Queue `q`'s rings at 16 KiB * q in the first memfd: desc, avail, used a page apart.
    fn vring(&mut self, q: u32, enable: bool) -> &mut Self {
        let base = UVA + u64::from(q) * 0x4000;
        let addr = VringAddr {
            index: q,
            flags: 0,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            log: 0,
        };
        self.state(Request::SET_VRING_NUM, q, RING_SIZE)
            .state(Request::SET_VRING_BASE, q, 0)
            .msg(Request::SET_VRING_ADDR, &addr.to_bytes(), 0)
            .u64(Request::SET_VRING_CALL, u64::from(q) | VRING_NOFD_MASK)
            .u64(Request::SET_VRING_KICK, u64::from(q) | VRING_NOFD_MASK);
        if enable {
            self.state(Request::SET_VRING_ENABLE, q, 1);
        }
        self
    }

    /// `SET_VRING_ADDR` again for queue `q` (rings as [`Self::vring`] puts them), with
    /// VHOST_VRING_F_LOG and the used ring's guest-physical address `log` (memory starts at
    /// guest-physical 0, frontend-virtual `UVA`).
    fn vring_logged(&mut self, q: u32, log: u64) -> &mut Self {
        let base = UVA + u64::from(q) * 0x4000;
        let addr = VringAddr {
            index: q,
            flags: VRING_ADDR_F_LOG,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            log,
        };
        self.msg(Request::SET_VRING_ADDR, &addr.to_bytes(), 0)
    }

    fn log_base(&mut self, mmap_size: u64, mmap_offset: u64) -> &mut Self {
        let l = LogRegion {
            mmap_size,
            mmap_offset,
        };
        self.msg(Request::SET_LOG_BASE, &l.to_bytes(), 1)
    }

    /// Guest traffic: a TX frame on queue 1, two receive buffers on queue 0.
    fn traffic(&mut self, indirect: bool) -> &mut Self {
        let p = tx_payload(60);
        let len = u32::try_from(p.len()).unwrap();
        self.b.poke(0, 0x8000, &p);
        if indirect {
            self.b
                .poke(0, 0xa000, &desc_bytes(0x8000, 12, VRING_DESC_F_NEXT, 1));
            self.b.poke(0, 0xa010, &desc_bytes(0x800c, len - 12, 0, 0));
            self.b
                .poke(0, 0x4000, &desc_bytes(0xa000, 32, VRING_DESC_F_INDIRECT, 0));
        } else {
            self.b.poke(0, 0x4000, &desc_bytes(0x8000, len, 0, 0));
        }
        self.b.poke(0, 0x5000, &avail_bytes(&[0]));
        self.b
            .poke(0, 0x0000, &desc_bytes(0x9000, 2048, VRING_DESC_F_WRITE, 0));
        self.b
            .poke(0, 0x0010, &desc_bytes(0x9800, 2048, VRING_DESC_F_WRITE, 0));
        self.b.poke(0, 0x1000, &avail_bytes(&[0, 1]));
        self.b.sync();
        self
    }
}

fn stream_seeds(dir: &Path) {
    let t = "vhost_user_stream";
    let features = net::F_VERSION_1
        | net::F_MRG_RXBUF
        | net::F_EVENT_IDX
        | net::F_INDIRECT_DESC
        | net::F_IN_ORDER;

    // QEMU-like: rings enabled by default (PROTOCOL_FEATURES not acked in the features).
    let mut s = Session::new(false);
    s.handshake(features, PROTOCOL_FEATURES & !pf::REPLY_ACK)
        .vring(0, false)
        .vring(1, false)
        .traffic(false);
    let cfg = ConfigMsg {
        offset: 0,
        size: 12,
        flags: 0,
        payload: vec![0; 12],
    };
    let mac = ConfigMsg {
        offset: 0,
        size: 6,
        flags: 0,
        payload: vec![2, 0, 0, 0, 0, 9],
    };
    s.msg(Request::GET_CONFIG, &cfg.to_bytes(), 0)
        .msg(Request::SET_CONFIG, &mac.to_bytes(), 0)
        .u64(Request::NET_SET_MTU, 1500)
        .u64(Request::SET_STATUS, 0x0f)
        .msg(Request::GET_STATUS, &[], 0)
        .state(Request::GET_VRING_BASE, 0, 0)
        .state(Request::GET_VRING_BASE, 1, 0);
    s.b.sync();
    write(dir, t, "qemu_like", &s.b.out);

    // REPLY_ACK on every request, PROTOCOL_FEATURES acked so rings need SET_VRING_ENABLE,
    // indirect TX, memory slots added and removed, device reset.
    let mut s = Session::new(true);
    s.handshake(features | VHOST_USER_F_PROTOCOL_FEATURES, PROTOCOL_FEATURES)
        .vring(0, true)
        .vring(1, true)
        .traffic(true);
    let r2 = MemRegionDesc {
        guest_phys_addr: 0x10_0000,
        memory_size: stream::MEMFD_SIZE,
        userspace_addr: UVA + 0x10_0000,
        mmap_offset: 0,
    };
    s.msg(Request::GET_MAX_MEM_SLOTS, &[], 0)
        .msg(Request::ADD_MEM_REG, &single_region_bytes(&r2), 1)
        .msg(Request::REM_MEM_REG, &single_region_bytes(&r2), 0)
        .msg(Request::SET_BACKEND_REQ_FD, &[], 1)
        .msg(Request::SET_VRING_ERR, &0u64.to_le_bytes(), 1)
        .msg(Request::SET_VRING_CALL, &1u64.to_le_bytes(), 1)
        .state(Request::SET_VRING_ENABLE, 1, 0);
    s.b.sync();
    s.msg(Request::RESET_DEVICE, &[], 0)
        .msg(Request::RESET_OWNER, &[], 0);
    s.b.sync();
    write(dir, t, "reply_ack_mem_slots", &s.b.out);

    // Framing trouble: a good message split over raw chunks, then bad version, then EOF in the
    // middle of a message.
    let mut b = stream::Builder::default();
    let h = Header::request(Request::SET_FEATURES, 8, false).to_bytes();
    b.raw(&h[..5], 0, false)
        .raw(&h[5..], 0, false)
        .raw(&net::F_VERSION_1.to_le_bytes(), 0, false)
        .sync()
        .raw(
            &Header::request(Request::SET_OWNER, 4, false).to_bytes(),
            0,
            false,
        )
        .raw(&[1, 2], 0, false)
        .shutdown();
    write(dir, t, "partial_message", &b.out);
    let mut b = stream::Builder::default();
    b.msg(Request::GET_FEATURES as u8, 2, &[], 0);
    write(dir, t, "bad_version", &b.out);

    // Descriptor trouble: a short memfd behind a long region, too many fds on one message.
    let mut s = Session::new(false);
    let r = MemRegionDesc {
        guest_phys_addr: 0,
        memory_size: stream::MEMFD_SIZE,
        userspace_addr: UVA,
        mmap_offset: 0,
    };
    s.b.raw(
        &[
            &Header::request(Request::SET_MEM_TABLE, 40, false).to_bytes()[..],
            &mem_table_bytes(&[r]),
        ]
        .concat(),
        1,
        true,
    );
    s.msg(Request::SET_OWNER, &[], 9);
    write(dir, t, "fd_trouble", &s.b.out);

    migration_seeds(dir, features);
}

/// Live migration on the stream: the whole source-side sequence, then one input per hostile
/// logging or RARP request (each closes the connection, so each needs its own input).
fn migration_seeds(dir: &Path, features: u64) {
    let t = "vhost_user_stream";
    let used_gpa = |q: u64| q * 0x4000 + 0x2000;
    // The log (a 64 KiB memfd, 64 bytes of it: 64 KiB of guest memory needs 2), LOG_ALL, the
    // used rings logged at their guest-physical addresses, traffic, logging off again, the
    // rings stopped, and the guest announced on arrival.
    let mut s = Session::new(false);
    s.handshake(features, PROTOCOL_FEATURES & !pf::REPLY_ACK)
        .vring(0, false)
        .vring(1, false)
        .log_base(64, 0)
        .msg(Request::SET_LOG_FD, &[], 1)
        .u64(Request::SET_FEATURES, features | net::F_LOG_ALL)
        .vring_logged(0, used_gpa(0))
        .vring_logged(1, used_gpa(1))
        .traffic(false);
    s.log_base(64, 128)
        .u64(Request::SET_FEATURES, features)
        .state(Request::GET_VRING_BASE, 0, 0)
        .state(Request::GET_VRING_BASE, 1, 0)
        .msg(Request::SEND_RARP, &rarp_bytes([2, 0, 0, 0, 0, 9]), 0)
        .msg(Request::SEND_RARP, &rarp_bytes([1, 0, 0x5e, 0, 0, 1]), 0);
    s.b.sync();
    write(dir, t, "migration", &s.b.out);

    // The same with REPLY_ACK, PROTOCOL_FEATURES acked, and logging on before the rings start
    // (QEMU reconnecting in the middle of a migration).
    let mut s = Session::new(true);
    s.handshake(
        features | VHOST_USER_F_PROTOCOL_FEATURES | net::F_LOG_ALL,
        PROTOCOL_FEATURES,
    )
    .log_base(2, 0)
    .vring(0, true)
    .vring(1, true)
    .vring_logged(0, used_gpa(0))
    .traffic(true);
    write(dir, t, "migration_reply_ack", &s.b.out);

    let hostile: [(&str, fn(&mut Session)); 6] = [
        ("log_base_before_mem_table", |s| {
            s.msg(Request::GET_FEATURES, &[], 0)
                .u64(Request::SET_PROTOCOL_FEATURES, pf::LOG_SHMFD)
                .log_base(64, 0);
        }),
        ("log_fd_too_small_for_memory", |s| {
            s.handshake(0, pf::LOG_SHMFD).log_base(1, 0);
        }),
        ("log_offset_past_file", |s| {
            s.handshake(0, pf::LOG_SHMFD).log_base(64, 1 << 20);
        }),
        ("vring_log_before_mem_table", |s| {
            s.msg(Request::GET_FEATURES, &[], 0)
                .u64(Request::SET_FEATURES, net::F_LOG_ALL)
                .state(Request::SET_VRING_NUM, 0, RING_SIZE)
                .vring_logged(0, 0x2000);
        }),
        ("log_guest_addr_outside_memory", |s| {
            s.handshake(net::F_LOG_ALL, pf::LOG_SHMFD)
                .log_base(64, 0)
                .vring(0, false)
                .vring_logged(0, 1 << 40);
        }),
        ("send_rarp_without_feature", |s| {
            s.handshake(0, pf::MQ)
                .msg(Request::SEND_RARP, &rarp_bytes([2, 0, 0, 0, 0, 9]), 0);
        }),
    ];
    for (name, f) in hostile {
        let mut s = Session::new(false);
        f(&mut s);
        s.b.sync();
        s.msg(Request::GET_FEATURES, &[], 0);
        write(dir, t, name, &s.b.out);
    }
}

fn spec(size_log2: u8, page: u16) -> QueueSpec {
    // Rings a page apart starting at page `page`: offsets in units of 16, 2 and 4 bytes.
    let at = u32::from(page) * 4096;
    QueueSpec {
        size_log2,
        desc: u16::try_from(at / 16).unwrap(),
        avail: u16::try_from((at + 4096) / 2).unwrap(),
        used: u16::try_from((at + 8192) / 4).unwrap(),
        base: 0,
        used_idx: 0,
        avail_idx: 0,
    }
}

fn chain_seeds(dir: &Path) {
    let t = "descriptor_chains";
    let all = chains::F_INDIRECT | chains::F_MRG | chains::F_EVENT_IDX | chains::F_CALL;
    let frame = tx_payload(100);
    let flen = u32::try_from(frame.len()).unwrap();

    // A forwards one frame (one descriptor) into B's mergeable receive buffers.
    let mut b = chains::Builder::new(all, spec(6, 0), spec(6, 4));
    b.write(0x8000, &frame)
        .desc(0, 0, Desc::at(0x8000, flen, 0, 0))
        .avail(0, 0)
        .desc(1, 0, Desc::at(0x9000, 64, VRING_DESC_F_WRITE, 0))
        .desc(1, 1, Desc::at(0x9100, 2048, VRING_DESC_F_WRITE, 0))
        .avail(1, 0)
        .avail(1, 1)
        .pop_tx(0, 12, 2, 12)
        .enqueue(1, 60)
        .flush(1)
        .available(0);
    write(dir, t, "forward_mrg", &b.out);

    // A chain of three descriptors, an indirect table, and a buffer across the region border.
    let mut b = chains::Builder::new(all, spec(4, 0), spec(4, 4));
    let half = u32::try_from(chains::MEM_SIZE / 2).unwrap();
    b.write(half - 40, &frame)
        .desc(0, 0, Desc::at(half - 40, 20, VRING_DESC_F_NEXT, 1))
        .desc(0, 1, Desc::at(half - 20, 40, VRING_DESC_F_NEXT, 2))
        .desc(0, 2, Desc::at(half + 20, flen - 60, 0, 0))
        .avail(0, 0)
        .indirect(
            0,
            3,
            0,
            0xc004,
            &[
                Desc::at(0x8000, 12, VRING_DESC_F_NEXT, 1),
                Desc::at(0x800c, 100, 0, 0),
            ],
        )
        .avail(0, 3)
        .write(0x8000, &frame)
        .desc(1, 5, Desc::at(half - 8, 64, VRING_DESC_F_WRITE, 0))
        .desc(1, 6, Desc::at(0x9000, 200, VRING_DESC_F_WRITE, 0))
        .desc(1, 7, Desc::at(0x9100, 200, VRING_DESC_F_WRITE, 0))
        .avail(1, 5)
        .avail(1, 6)
        .avail(1, 7)
        .pop_tx(0, 0, 1, 12)
        .enqueue(1, 40)
        .flush(1);
    write(dir, t, "chain_indirect_border", &b.out);

    // Hostile: a loop, a head out of range, an indirect table of bad length, a nested one, an
    // overrun avail index; indirect but no mrg_rxbuf or event_idx, 10-byte header.
    let mut b = chains::Builder::new(chains::F_HDR10 | chains::F_INDIRECT, spec(3, 0), spec(3, 4));
    b.desc(0, 0, Desc::at(0x8000, 64, VRING_DESC_F_NEXT, 1))
        .desc(0, 1, Desc::at(0x8000, 64, VRING_DESC_F_NEXT, 0))
        .avail(0, 0)
        .avail(0, 9)
        .indirect(0, 2, 24, 0xd000, &[Desc::at(0x8000, 64, 0, 0)])
        .avail(0, 2)
        .indirect(
            0,
            3,
            0,
            0xd100,
            &[Desc::at(0xd000, 16, VRING_DESC_F_INDIRECT, 0)],
        )
        .avail(0, 3)
        .pop_tx(0, 0, 0, 0)
        .flags(1, 0, 1)
        .flags(1, 1, 3)
        .avail_idx(1, 100)
        .enqueue(1, 60)
        .available(1)
        .flush(0);
    write(dir, t, "hostile", &b.out);
}

fn eth_seeds(dir: &Path) {
    let t = "eth_parse";
    write(dir, t, "untagged", &tx_payload(60)[12..]);
    let tagged = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x20, 0x64, 0x08,
        0x06, 0x00, 0x01, 0x03,
    ];
    write(dir, t, "tagged", &tagged);
    let mut qinq = tagged;
    qinq[12] = 0x88;
    qinq[13] = 0xa8;
    write(dir, t, "qinq", &qinq);
    // Several 21-byte records: header bytes, port, seconds.
    let mut recs = Vec::new();
    for (i, src) in [1u8, 2, 3, 1].iter().enumerate() {
        recs.push(18);
        recs.extend_from_slice(&[2, 0, 0, 0, 0, *src % 3 + 1, 2, 0, 0, 0, 0, *src]);
        recs.extend_from_slice(&[0x81, 0, 0, 10, 0x08, 0]);
        recs.push(0);
        recs.push(u8::try_from(i).unwrap());
        recs.push(1);
    }
    write(dir, t, "learning", &recs);
}

fn message_seeds(dir: &Path) {
    let t = "message_parsers";
    let h = Header::request(Request::SET_VRING_ADDR, 40, true).to_bytes();
    write(dir, t, "header", &h);
    let r = MemRegionDesc {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        userspace_addr: UVA,
        mmap_offset: 0,
    };
    write(dir, t, "mem_table", &mem_table_bytes(&[r, r]));
    let mut full = mem_table_bytes(&[r]);
    full.resize(8 + 8 * 32, 0);
    write(dir, t, "mem_table_full", &full);
    let mut single = single_region_bytes(&r).to_vec();
    single[0] = Request::ADD_MEM_REG as u32 as u8;
    write(dir, t, "single_region", &single);
    let a = VringAddr {
        index: 1,
        flags: 0,
        desc: UVA,
        used: UVA + 0x2000,
        avail: UVA + 0x1000,
        log: 0,
    };
    write(dir, t, "vring_addr", &a.to_bytes());
    let c = ConfigMsg {
        offset: 0x19,
        size: 6,
        flags: 0,
        payload: vec![2, 0, 0, 0, 0, 7],
    };
    write(dir, t, "config", &c.to_bytes());
    let mac = ConfigMsg {
        offset: 2,
        size: 4,
        flags: 0,
        payload: vec![1, 2, 3, 4],
    };
    write(dir, t, "config_mac", &mac.to_bytes());
    write(dir, t, "vring_state", &[8, 0, 0, 0, 0, 1, 0, 0]);
    let l = LogRegion {
        mmap_size: 4096,
        mmap_offset: 64,
    };
    write(dir, t, "log_region", &l.to_bytes());
    write(
        dir,
        t,
        "rarp_mac",
        &rarp_bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
    );
}

fn hooks_seeds(dir: &Path) {
    use hypervisor_hooks::proto::{GrantRange, GuestMsg, Mode, Perm, QueueLayout, Trampoline};
    let t = "hooks_messages";
    let hello = GuestMsg::Hello {
        version: 1,
        port: "vm1".into(),
        mac: "02:00:00:00:00:01".into(),
        trampoline: Trampoline {
            start: 0x40_1000,
            len: 64,
        },
        notify: vec!["spin".into(), "futex".into()],
    };
    let open = GuestMsg::Open {
        request: 1,
        peer: "02:00:00:00:00:02".into(),
        mode: Mode::ZeroCopy,
        notify: "spin".into(),
    };
    let dedicated = GuestMsg::Dedicated {
        request: 2,
        layout: QueueLayout {
            region_len: 1 << 20,
            gpa_base: 0x1_0000_0000,
            uva_base: 0x7f00_0000_0000,
            queue_size: 256,
            desc: 0x7f00_0000_0000,
            avail: 0x7f00_0000_1000,
            used: 0x7f00_0000_2000,
            hdr_len: 12,
            mrg_rxbuf: true,
        },
        grants: vec![GrantRange {
            offset: 0,
            len: 0x3000,
            perm: Perm::ReadWrite,
        }],
        doorbell_len: 4096,
    };
    let mut stream = Vec::new();
    for (name, m) in [
        ("hello", &hello),
        ("open", &open),
        ("dedicated", &dedicated),
    ] {
        let json = serde_json::to_vec(m).expect("json");
        write(dir, t, name, &json);
        stream.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
        stream.extend_from_slice(&json);
    }
    write(dir, t, "framed_stream", &stream);
    write(dir, t, "mac", b"02:00:00:00:0a:0b");
    // Code with a WRPKRU, an XRSTOR with a memory operand and one without.
    write(
        dir,
        t,
        "code",
        &[
            0x90, 0x0f, 0x01, 0xef, 0x0f, 0xae, 0x2f, 0x0f, 0xae, 0xef, 0x0f, 0xc7, 0x1f, 0xc3,
        ],
    );
    write(
        dir,
        t,
        "maps",
        b"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/guest\n\
          7ffd1000-7ffd2000 r-xp 00000000 00:00 0 [vdso]\n",
    );
}

/// Packed ring seeds: a lap-1 ring at offset 0, event areas at 0x1000 and 0x1010, buffers from
/// 0x8000.
fn packed_seeds(dir: &Path) {
    const AVAIL1: u16 = 1 << 7; // available in lap 1
    const AVAIL0: u16 = 1 << 15; // available in lap 0
    let t = "packed_chains";
    let all = pk::F_INDIRECT | pk::F_MRG | pk::F_EVENT_IDX | pk::F_CALL;
    let at = |offset: u32, len: u32, id: u16, flags: u16| PDesc {
        offset,
        len,
        id,
        flags,
    };
    let ring = |f: u8, size: u16| pk::Builder::new(f, size, 0, 0x400, 0x404, 0x8000);

    // Four one-descriptor frames, popped, then the base read.
    let mut b = ring(all, 64);
    b.op(pk::OP_WRITE, &[0x00, 0x80, 255]);
    for i in 0..4u16 {
        b.ring_desc(i, at(0x8000 + 0x100 * u32::from(i), 100, i, AVAIL1));
    }
    b.op(pk::OP_POP_TX, &[]).op(pk::OP_BASE, &[]);
    write(dir, t, "tx_burst", &b.out);

    // A two-descriptor chain and a two-entry indirect table.
    let mut b = ring(all | pk::F_IN_ORDER, 64);
    b.ring_desc(1, at(0x8100, 100, 0, AVAIL1))
        .ring_desc(0, at(0x8000, 12, 0, AVAIL1 | VRING_DESC_F_NEXT))
        .indirect(0x400, &[at(0x8000, 12, 0, 0), at(0x8100, 100, 0, 0)])
        .ring_desc(2, at(0x4000, 32, 1, AVAIL1 | VRING_DESC_F_INDIRECT))
        .op(pk::OP_POP_TX, &[])
        .op(pk::OP_BASE, &[]);
    write(dir, t, "chain_indirect", &b.out);

    // A 9000-byte frame into twelve 1 KiB mergeable receive buffers, with notifications on.
    let mut b = ring(all, 64);
    b.op(pk::OP_EVENT, &[0, 0, 0, 0]);
    for i in 0..12u16 {
        b.ring_desc(
            i,
            at(
                0x8000 + 0x400 * u32::from(i),
                1024,
                i,
                AVAIL1 | VRING_DESC_F_WRITE,
            ),
        );
    }
    b.op(pk::OP_ENQUEUE, &[1, 0x28, 0x23]).op(pk::OP_BASE, &[]);
    write(dir, t, "rx_jumbo_mergeable", &b.out);

    // A chain whose second descriptor carries the other lap's bits: the queue breaks.
    let mut b = ring(all, 16);
    b.ring_desc(1, at(0x8100, 100, 0, AVAIL0))
        .ring_desc(0, at(0x8000, 12, 0, AVAIL1 | VRING_DESC_F_NEXT))
        .op(pk::OP_POP_TX, &[])
        .op(pk::OP_AVAILABLE, &[8]);
    write(dir, t, "hostile_wrap", &b.out);

    // A ring of 8 used up once, then offered again in lap 0.
    let mut b = ring(all, 8);
    for i in 0..8u16 {
        b.ring_desc(i, at(0x8000 + 0x100 * u32::from(i), 80, i, AVAIL1));
    }
    b.op(pk::OP_POP_TX, &[]);
    for i in 0..8u16 {
        b.ring_desc(i, at(0x8000 + 0x100 * u32::from(i), 80, i, AVAIL0));
    }
    b.op(pk::OP_POP_TX, &[]).op(pk::OP_BASE, &[]);
    write(dir, t, "wrap_laps", &b.out);
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let dir = Path::new(&dir);
    stream_seeds(dir);
    chain_seeds(dir);
    packed_seeds(dir);
    eth_seeds(dir);
    message_seeds(dir);
    hooks_seeds(dir);
    println!("seeds written under {}", dir.display());
}

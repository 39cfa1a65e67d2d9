//! Every vhost-user payload parser on arbitrary bytes (`vhost_user::message`: headers, memory
//! tables and regions, vring state and addresses, `u64`s, config, `SET_LOG_BASE`'s log region,
//! `SEND_RARP`'s MAC), and the config-space write a `SET_CONFIG` applies. A parse that succeeds must re-encode to the bytes
//! it came from (less padding), and a parsed memory region must pass its own validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_user::message::{
    mem_table_bytes, parse_mem_table, parse_rarp_mac, parse_single_region, parse_u64, rarp_bytes,
    single_region_bytes, ConfigMsg, Header, LogRegion, Request, VringAddr, VringState, HEADER_SIZE,
    MAX_PAYLOAD,
};
use vhost_user::net::NetConfig;

fuzz_target!(|data: &[u8]| {
    // The request a payload belongs to, for the parsers that take one: from the first byte,
    // so every request name is exercised.
    let req = data
        .first()
        .and_then(|&b| Request::try_from(u32::from(b)).ok())
        .unwrap_or(Request::SET_CONFIG);
    let _ = req.name();

    if let Some(hb) = data.get(..HEADER_SIZE) {
        let hb: &[u8; HEADER_SIZE] = hb.try_into().expect("12 bytes");
        if let Ok(h) = Header::parse(hb) {
            assert_eq!(&h.to_bytes(), hb);
            assert!(h.size as usize <= MAX_PAYLOAD);
            let _ = Request::try_from(h.request);
            let r = h.reply_to(8);
            assert!(r.is_reply() && !r.need_reply());
            assert_eq!(Header::parse(&r.to_bytes()).ok(), Some(r));
        }
    }

    if let Ok(regions) = parse_mem_table(data) {
        assert!(!regions.is_empty() && regions.len() <= 8);
        for r in &regions {
            assert!(r.validate().is_ok());
        }
        let enc = mem_table_bytes(&regions);
        assert_eq!(&enc[8..], &data[8..enc.len()]);
        assert_eq!(&enc[..4], &data[..4]);
    }

    if let Ok(r) = parse_single_region(req, data) {
        assert!(r.validate().is_ok());
        assert_eq!(&single_region_bytes(&r)[8..], &data[8..]);
    }

    if let Ok(a) = VringAddr::parse(data) {
        assert_eq!(&a.to_bytes()[..], data);
    }

    if let Ok(s) = VringState::parse(req, data) {
        assert_eq!(&s.to_bytes()[..], data);
    }

    if let Ok(v) = parse_u64(req, data) {
        assert_eq!(&v.to_le_bytes()[..], data);
    }

    if let Ok(l) = LogRegion::parse(data) {
        assert_eq!(&l.to_bytes()[..], data);
    }

    if let Ok(mac) = parse_rarp_mac(data) {
        assert!(
            mac[0] & 1 == 0 && mac != [0; 6],
            "a multicast or zero MAC was accepted"
        );
        assert_eq!(&rarp_bytes(mac)[..6], &data[..6]);
    }

    if let Ok(c) = ConfigMsg::parse(req, data) {
        assert_eq!(c.payload.len(), c.size as usize);
        assert_eq!(c.to_bytes(), data);
        // What SET_CONFIG then does with it.
        let mut cfg = NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            status: 1,
            max_virtqueue_pairs: 1,
            mtu: 1500,
        };
        let before = cfg;
        match cfg.write(c.offset as usize, &c.payload) {
            Ok(()) => {
                let off = c.offset as usize;
                assert!(off + c.payload.len() <= 6);
                assert_eq!(&cfg.mac[off..off + c.payload.len()], &c.payload[..]);
                assert_eq!(
                    (cfg.status, cfg.max_virtqueue_pairs, cfg.mtu),
                    (before.status, before.max_virtqueue_pairs, before.mtu)
                );
            }
            Err(_) => assert_eq!(cfg, before),
        }
    }
});

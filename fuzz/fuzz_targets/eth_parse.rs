//! Frame headers as the switch reads them from guest frames: `EthHeader::parse` on arbitrary
//! bytes (checked field by field against the bytes), and the MAC learning that follows it in
//! the PMD (`Fdb::learn` / `Fdb::lookup` on guest-chosen source and destination addresses).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::eth::{
    self, EthError, EthHeader, ETHERTYPE_QINQ, ETHERTYPE_VLAN, HEADER_LEN, HEADER_PEEK,
};
use vswitch::fdb::{Fdb, LearnOutcome};

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses `b` and checks the result against the bytes themselves.
fn check_parse(b: &[u8]) -> Option<EthHeader> {
    let res = EthHeader::parse(b);
    if b.len() < HEADER_LEN {
        assert_eq!(res, Err(EthError::Truncated));
        return None;
    }
    let et = be16(b, 12);
    let tagged = et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ;
    if tagged && b.len() < HEADER_PEEK {
        assert_eq!(res, Err(EthError::Truncated));
        return None;
    }
    let h = res.expect("a long enough header must parse");
    assert_eq!(&h.dst[..], &b[0..6]);
    assert_eq!(&h.src[..], &b[6..12]);
    assert_eq!(h.ethertype, et);
    assert_eq!(h.is_tagged(), tagged);
    let tag = h.tag(b);
    if tagged {
        assert_eq!(tag, Some((be16(b, 14) & 0x0fff, be16(b, 16))));
    } else {
        assert_eq!(tag, None);
    }
    assert_eq!(eth::is_multicast(&h.dst), b[0] & 1 != 0);
    Some(h)
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    // Then the same bytes as a stream of frames seen by the PMD: 18 bytes of header as it
    // peeks them, a port, and how many seconds passed. A small table, so buckets fill up.
    let fdb = Fdb::new(14, 5);
    let mut now = 0u32;
    for rec in data.chunks(21) {
        let n = usize::from(rec[0]) % (HEADER_PEEK + 1);
        let frame = &rec[1..rec.len().min(1 + n)];
        let port = rec.get(19).map_or(0, |p| u16::from(*p & 7));
        now = now.wrapping_add(u32::from(rec.get(20).map_or(0, |t| t & 7)));
        let Some(h) = check_parse(frame) else {
            continue;
        };
        let vlan = h.tag(frame).map_or(0, |(vid, _)| vid);
        let learnable = h.src[0] & 1 == 0 && h.src != [0; 6];
        let outcome = fdb.learn(vlan, h.src, port, now);
        match outcome {
            LearnOutcome::Refused => assert!(!learnable, "{:?} refused", h.src),
            LearnOutcome::Contended => panic!("contended with a single thread"),
            LearnOutcome::Full => assert_eq!(fdb.lookup(vlan, h.src, now), None),
            _ => assert_eq!(
                fdb.lookup(vlan, h.src, now),
                Some(port),
                "{outcome:?}: just learned"
            ),
        }
        let _ = fdb.lookup(vlan, h.dst, now);
        if now.is_multiple_of(7) {
            fdb.expire(now);
        }
    }
    assert!(fdb.entries(now).len() <= fdb.capacity());
});

//! The benchmark's packets: an Ethernet frame whose payload carries a magic, the window's run
//! id, a sequence number and the TSC when it was sent. Every scenario moves these, so loss and
//! latency are measured the same way everywhere, from what arrived.

/// IEEE 802 local experimental EtherType.
pub const ETHERTYPE: u16 = 0x88b5;
/// "NFVB".
pub const MAGIC: u32 = 0x4e46_5642;

/// Where each field sits in the frame (smoltcp style).
mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const MAGIC: Range<usize> = 14..18;
    pub const RUN: Range<usize> = 18..22;
    pub const SEQ: Range<usize> = 22..30;
    pub const TSC: Range<usize> = 30..38;
    const _: () = assert!(SEQ.end == TSC.start);
}

/// Bytes a frame needs to carry every field.
pub const HEADER_LEN: usize = field::TSC.end;

/// A locally administered unicast MAC, `02:00:00:00:00:nn`.
pub const fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// What a received packet says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u32,
    pub seq: u64,
    pub tsc: u64,
}

/// A frame of `size` bytes from `src` to `dst` for window `run`; sequence and timestamp are
/// filled in per packet by [`stamp`]. The rest of the payload is a fixed pattern.
pub fn template(dst: [u8; 6], src: [u8; 6], size: usize, run: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..size.max(HEADER_LEN))
        .map(|i| i.to_le_bytes()[0] ^ 0x5a)
        .collect();
    f[field::DST].copy_from_slice(&dst);
    f[field::SRC].copy_from_slice(&src);
    f[field::ETHERTYPE].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[field::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
    f[field::RUN].copy_from_slice(&run.to_le_bytes());
    f[field::SEQ].fill(0);
    f[field::TSC].fill(0);
    f
}

/// Where the per-packet fields (sequence number, then send time) start.
pub const STAMP_AT: usize = field::SEQ.start;

/// The per-packet fields as the two little-endian words [`stamp`] writes at [`STAMP_AT`].
#[inline(always)]
pub fn stamp_words(seq: u64, tsc: u64) -> [u64; 2] {
    [seq, tsc]
}

/// Writes the sequence number and send time into a frame built by [`template`].
#[inline(always)]
pub fn stamp(frame: &mut [u8], seq: u64, tsc: u64) {
    // One bounds check for both fields (they are adjacent), not one each.
    let f = &mut frame[field::SEQ.start..field::TSC.end];
    f[..8].copy_from_slice(&seq.to_le_bytes());
    f[8..].copy_from_slice(&tsc.to_le_bytes());
}

fn u64_at(f: &[u8], r: std::ops::Range<usize>) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&f[r]);
    u64::from_le_bytes(b)
}

/// The stamp of a benchmark frame, or `None` for anything else (a short frame, another
/// EtherType, a frame of another tool).
#[inline]
pub fn parse(frame: &[u8]) -> Option<Stamp> {
    if frame.len() < HEADER_LEN
        || frame[field::ETHERTYPE] != ETHERTYPE.to_be_bytes()
        || frame[field::MAGIC] != MAGIC.to_le_bytes()
    {
        return None;
    }
    let mut run = [0u8; 4];
    run.copy_from_slice(&frame[field::RUN]);
    Some(Stamp {
        run: u32::from_le_bytes(run),
        seq: u64_at(frame, field::SEQ),
        tsc: u64_at(frame, field::TSC),
    })
}

/// Counts what arrives in one window: in order, or not.
#[derive(Debug, Default, Clone, Copy)]
pub struct Receiver {
    pub run: u32,
    pub received: u64,
    /// Frames of this window that arrived with a sequence number below one already seen.
    pub out_of_order: u64,
    next: u64,
}

impl Receiver {
    pub fn new(run: u32) -> Receiver {
        Receiver {
            run,
            ..Receiver::default()
        }
    }

    /// Accounts for one frame; returns its stamp when it belongs to this window.
    #[inline]
    pub fn accept(&mut self, frame: &[u8]) -> Option<Stamp> {
        let s = parse(frame).filter(|s| s.run == self.run)?;
        self.received += 1;
        if s.seq < self.next {
            self.out_of_order += 1;
        } else {
            self.next = s.seq + 1;
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_template_parses_back() {
        let mut f = template(mac(2), mac(1), 64, 7);
        assert_eq!(f.len(), 64);
        stamp(&mut f, 42, 123_456);
        assert_eq!(
            parse(&f),
            Some(Stamp {
                run: 7,
                seq: 42,
                tsc: 123_456
            })
        );
        assert_eq!(&f[0..6], &mac(2));
    }

    #[test]
    fn stamp_bytes_are_what_stamp_writes() {
        let mut f = template(mac(2), mac(1), 64, 7);
        let mut g = f.clone();
        stamp(&mut f, 0x0102_0304_0506_0708, 99);
        let [a, b] = stamp_words(0x0102_0304_0506_0708, 99);
        g[STAMP_AT..STAMP_AT + 8].copy_from_slice(&a.to_le_bytes());
        g[STAMP_AT + 8..STAMP_AT + 16].copy_from_slice(&b.to_le_bytes());
        assert_eq!(f, g);
    }

    #[test]
    fn test_foreign_frame_is_not_a_benchmark_frame() {
        let mut f = template(mac(2), mac(1), 64, 1);
        f[12] = 0x08;
        f[13] = 0x00;
        assert_eq!(parse(&f), None);
        assert_eq!(parse(&[0u8; 20]), None);
    }

    #[test]
    fn receiver_counts_its_window_and_reordering() {
        let mut r = Receiver::new(3);
        let mut f = template(mac(2), mac(1), 64, 3);
        for seq in [0, 1, 3, 2, 4] {
            stamp(&mut f, seq, 0);
            assert!(r.accept(&f).is_some());
        }
        let other = template(mac(2), mac(1), 64, 4);
        assert!(r.accept(&other).is_none());
        assert_eq!(r.received, 5);
        assert_eq!(r.out_of_order, 1);
    }
}

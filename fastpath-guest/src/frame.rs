//! The test frames `fp-pktgen` sends and `fp-sink` checks: an Ethernet header, then a header of
//! our own (magic, sequence number, TSC timestamp, length), then a payload every word of which
//! is derived from the sequence number, so the receiver can verify integrity without state.

/// EtherType of test frames (IEEE local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: u32 = 0x4e46_5650; // "NFVP"
/// Ethernet header plus our header.
pub const HEADER: usize = 14 + 4 + 8 + 8 + 2;
/// Smallest test frame (Ethernet minimum without FCS).
pub const MIN_FRAME: usize = 60;
/// Largest test frame (9000-byte MTU plus Ethernet header).
pub const MAX_FRAME: usize = 9014;

const OFF_MAGIC: usize = 14;
const OFF_SEQ: usize = 18;
const OFF_TSC: usize = 26;
const OFF_LEN: usize = 34;

fn pattern(seq: u64, i: usize) -> u8 {
    // Cheap and position-dependent: a shifted or swapped byte is caught.
    let word = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
    word[i % 8] ^ i.to_le_bytes()[0].wrapping_mul(31)
}

/// Writes a test frame of `len` bytes into `buf` (which must hold `len`).
pub fn build(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64, tsc: u64, len: usize) {
    let len = len.clamp(MIN_FRAME, MAX_FRAME).min(buf.len());
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    buf[OFF_TSC..OFF_TSC + 8].copy_from_slice(&tsc.to_le_bytes());
    buf[OFF_LEN..OFF_LEN + 2]
        .copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
    for (i, b) in buf[HEADER..len].iter_mut().enumerate() {
        *b = pattern(seq, i);
    }
}

/// What a receiver learns from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub src: [u8; 6],
    pub seq: u64,
    pub tsc: u64,
    pub len: usize,
}

/// Why a frame is not a good test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not one of ours (other EtherType or magic): counted apart, not an error.
    Foreign,
    /// Shorter or longer than its header says.
    Length,
    /// A payload byte differs from what the sequence number implies.
    Corrupt,
}

/// Checks a received frame (`full`: verify every payload byte, else the headers only).
pub fn check(frame: &[u8], full: bool) -> Result<Info, Bad> {
    if frame.len() < HEADER {
        return Err(Bad::Foreign);
    }
    let u16le = |o: usize| u16::from_le_bytes([frame[o], frame[o + 1]]);
    let u64le = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&frame[o..o + 8]);
        u64::from_le_bytes(a)
    };
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE
        || u32::from_le_bytes([frame[14], frame[15], frame[16], frame[17]]) != MAGIC
    {
        return Err(Bad::Foreign);
    }
    let len = usize::from(u16le(OFF_LEN));
    if len != frame.len() {
        return Err(Bad::Length);
    }
    let seq = u64le(OFF_SEQ);
    if full
        && frame[HEADER..]
            .iter()
            .enumerate()
            .any(|(i, b)| *b != pattern(seq, i))
    {
        return Err(Bad::Corrupt);
    }
    let mut src = [0u8; 6];
    src.copy_from_slice(&frame[6..12]);
    Ok(Info {
        src,
        seq,
        tsc: u64le(OFF_TSC),
        len,
    })
}

/// Frame sizes of a mixed-size run: IMIX-like, cycling through small, medium and large, so
/// every size class from 64 to 1518 bytes is exercised.
pub fn mixed_size(seq: u64) -> usize {
    const SIZES: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 1518, 1518];
    // Walk the table with a stride coprime to its length so neighbours differ.
    let i = usize::try_from(seq.wrapping_mul(5) % SIZES.len() as u64).unwrap_or(0);
    SIZES[i] - 4 // without FCS
}

/// Per-source sequence tracking: losses (gaps), reorders and duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTracker {
    next: Option<u64>,
    pub received: u64,
    pub lost: u64,
    pub out_of_order: u64,
}

impl SeqTracker {
    pub fn see(&mut self, seq: u64) {
        self.received += 1;
        match self.next {
            None => self.next = Some(seq + 1),
            Some(n) if seq == n => self.next = Some(n + 1),
            Some(n) if seq > n => {
                self.lost += seq - n;
                self.next = Some(seq + 1);
            }
            Some(_) => {
                // A late frame we had counted as lost.
                self.out_of_order += 1;
                self.lost = self.lost.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_check_every_size() {
        for len in [60, 64, 128, 576, 1514, 9014] {
            let mut b = vec![0u8; len];
            build(&mut b, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 42, 7, len);
            let i = check(&b, true).unwrap();
            assert_eq!(
                (i.seq, i.tsc, i.len, i.src),
                (42, 7, len, [2, 0, 0, 0, 0, 1])
            );
        }
    }

    #[test]
    fn test_frame_corrupt_byte() {
        let mut b = vec![0u8; 200];
        build(&mut b, [2; 6], [4; 6], 9, 0, 200);
        b[150] ^= 1;
        assert_eq!(check(&b, true), Err(Bad::Corrupt));
        assert!(
            check(&b, false).is_ok(),
            "headers-only check does not read the payload"
        );
    }

    #[test]
    fn test_frame_truncated() {
        let mut b = vec![0u8; 200];
        build(&mut b, [2; 6], [4; 6], 9, 0, 200);
        assert_eq!(check(&b[..199], true), Err(Bad::Length));
        assert_eq!(check(&b[..20], true), Err(Bad::Foreign));
    }

    #[test]
    fn test_frame_foreign() {
        let b = vec![0u8; 100];
        assert_eq!(check(&b, true), Err(Bad::Foreign));
    }

    #[test]
    fn mixed_sizes_cover_classes() {
        let s: std::collections::BTreeSet<_> = (0..12).map(mixed_size).collect();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec![60, 572, 1514]);
    }

    #[test]
    fn seq_tracker_counts_gaps_and_late_frames() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 5, 3, 6] {
            t.see(s);
        }
        assert_eq!((t.received, t.lost, t.out_of_order), (6, 1, 1));
    }
}

//! Frame records: how a copy-mode fast-path channel carries several frames in one receive
//! buffer.
//!
//! A 64-byte frame in a 2 KiB receive buffer wastes the buffer and costs a descriptor read, an
//! avail entry and a used entry per frame, each a cache line the two cores hand back and forth.
//! A channel in copy mode packs frames instead: the payload of every packet the device returns
//! (after the virtio-net header; after gathering its buffers when `num_buffers` > 1) is a
//! sequence of records, densely packed:
//!
//! ```text
//! [len: u16 LE][len bytes of frame] [len: u16 LE][frame] ... up to the used length
//! ```
//!
//! so a 2 KiB buffer holds 30 frames of 64 bytes, and the ring moves one entry per 30 frames.
//!
//! Rules (the receiver checks them, the device side follows them):
//! - a record's length is 1..=65535; a record ends at or before the packet's used length;
//! - a packet of one buffer carries one or more records, filling it up to its used length;
//! - a packet of several buffers (a frame too big for one) carries exactly one record;
//! - a record of length 0, a record running past the used length, a length field cut off by
//!   the end, a merged packet with anything but one record: the rest of that packet is dropped
//!   and counted ([`crate::driver::DriverErrors::bad_record`]); the queue goes on.
//!
//! The frames of the records before a bad one were delivered; nothing a device writes makes a
//! receiver read outside the buffer it returned.

use crate::shared::SharedBytes;

/// Bytes of a record's length field.
pub const RECORD_HDR: usize = 2;
/// The longest frame a record carries.
pub const MAX_RECORD_FRAME: usize = u16::MAX as usize;

/// Bytes a frame of `frame` bytes takes as a record.
#[inline]
pub const fn record_len(frame: usize) -> usize {
    RECORD_HDR + frame
}

/// How many frames of `frame` bytes one buffer of `buf` bytes holds after a `hdr_len`-byte
/// virtio-net header (at least 1: a frame that does not fit spans several buffers).
pub fn per_buffer(buf: usize, hdr_len: usize, frame: usize) -> usize {
    (buf.saturating_sub(hdr_len) / record_len(frame.max(1))).max(1)
}

/// Why a packet's records stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// A length field of 0.
    Empty,
    /// A record ends past the packet's used length.
    PastEnd,
    /// One byte left: a length field cut off.
    Truncated,
}

/// The record at `off` of `payload`: its frame and where the next record starts; `Ok(None)` at
/// the end of the payload.
#[inline]
pub fn next<'a>(
    payload: &SharedBytes<'a>,
    off: usize,
) -> Result<Option<(SharedBytes<'a>, usize)>, BadRecord> {
    if off >= payload.len() {
        return Ok(None);
    }
    let (h, got) = payload.peek::<RECORD_HDR>(off);
    if got < RECORD_HDR {
        return Err(BadRecord::Truncated);
    }
    let len = usize::from(u16::from_le_bytes(h));
    if len == 0 {
        return Err(BadRecord::Empty);
    }
    let start = off + RECORD_HDR;
    match payload.sub(start, len) {
        Some(frame) => Ok(Some((frame, start + len))),
        None => Err(BadRecord::PastEnd),
    }
}

/// The one record a merged packet carries, gathered in `payload`: its frame.
pub fn single(payload: &[u8]) -> Result<&[u8], BadRecord> {
    let Some((h, frame)) = payload.split_first_chunk::<RECORD_HDR>() else {
        return Err(BadRecord::Truncated);
    };
    match usize::from(u16::from_le_bytes(*h)) {
        0 => Err(BadRecord::Empty),
        n if n == frame.len() => Ok(frame),
        // More bytes than the record (a second record) or fewer: not one record.
        _ => Err(BadRecord::PastEnd),
    }
}

/// Appends `frame` as a record to `out`. The caller keeps frames to [`MAX_RECORD_FRAME`] bytes
/// and not empty.
pub fn push(out: &mut Vec<u8>, frame: &[u8]) {
    debug_assert!(!frame.is_empty() && frame.len() <= MAX_RECORD_FRAME);
    let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            push(&mut v, f);
        }
        v
    }

    fn parse(b: &[u8]) -> (Vec<Vec<u8>>, Option<BadRecord>) {
        let p = SharedBytes::from_slice(b);
        let (mut out, mut off) = (Vec::new(), 0);
        loop {
            match next(&p, off) {
                Ok(Some((f, o))) => {
                    let mut v = Vec::new();
                    f.append_to(&mut v);
                    out.push(v);
                    off = o;
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn records_roundtrip_in_order() {
        let b = records(&[&[1; 60], &[2; 1], &[3; 1514]]);
        let (f, bad) = parse(&b);
        assert_eq!(bad, None);
        assert_eq!(f, vec![vec![1; 60], vec![2; 1], vec![3; 1514]]);
        assert_eq!(per_buffer(2048, 12, 64), 30);
        assert_eq!(per_buffer(2048, 12, 9000), 1);
    }

    #[test]
    fn test_record_length_zero() {
        let mut b = records(&[&[1; 10]]);
        b.extend_from_slice(&[0, 0, 9, 9]);
        let (f, bad) = parse(&b);
        assert_eq!(f.len(), 1, "the record before the bad one is delivered");
        assert_eq!(bad, Some(BadRecord::Empty));
    }

    #[test]
    fn test_record_past_used_length() {
        let mut b = records(&[&[1; 10]]);
        b.extend_from_slice(&[200, 0, 9, 9]);
        assert_eq!(parse(&b), (vec![vec![1; 10]], Some(BadRecord::PastEnd)));
    }

    #[test]
    fn test_record_length_field_cut_off() {
        let mut b = records(&[&[1; 10]]);
        b.push(7);
        assert_eq!(parse(&b).1, Some(BadRecord::Truncated));
    }

    #[test]
    fn test_merged_packet_with_two_records() {
        let b = records(&[&[1; 10], &[2; 10]]);
        assert_eq!(single(&b), Err(BadRecord::PastEnd));
        assert_eq!(single(&records(&[&[5; 3000]])), Ok(&[5u8; 3000][..]));
        assert_eq!(single(&[0, 0]), Err(BadRecord::Empty));
        assert_eq!(single(&[1]), Err(BadRecord::Truncated));
        assert_eq!(
            single(&[9, 0, 1]),
            Err(BadRecord::PastEnd),
            "record longer than the packet"
        );
    }
}

//! The classic pcap file format (libpcap 2.4): the 24-byte file header and the 16-byte header
//! before each frame, microsecond timestamps, Ethernet link type. It is what `tcpdump -r`,
//! Wireshark and every capture tool read, so captures need no converter.
//!
//! Fields are written in this machine's byte order; the magic number tells readers which.

/// Magic of a microsecond-resolution pcap file, written in native byte order.
pub const MAGIC: u32 = 0xa1b2_c3d4;
pub const VERSION_MAJOR: u16 = 2;
pub const VERSION_MINOR: u16 = 4;
/// `LINKTYPE_ETHERNET`: each record is an Ethernet frame from its destination MAC on.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of the header before each frame.
pub const RECORD_HEADER_LEN: usize = 16;

/// The file header for frames of at most `snaplen` captured bytes.
pub fn file_header(snaplen: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&VERSION_MAJOR.to_ne_bytes());
    h[6..8].copy_from_slice(&VERSION_MINOR.to_ne_bytes());
    // 8..12: thiszone (GMT), 12..16: sigfigs; both 0 as every writer sets them.
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// A record's header, as it precedes the captured bytes of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// Bytes of the frame that follow the header (at most the snaplen).
    pub captured: u32,
    /// The frame's length on the wire.
    pub original: u32,
}

impl RecordHeader {
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&self.ts_sec.to_ne_bytes());
        h[4..8].copy_from_slice(&self.ts_usec.to_ne_bytes());
        h[8..12].copy_from_slice(&self.captured.to_ne_bytes());
        h[12..16].copy_from_slice(&self.original.to_ne_bytes());
        h
    }

    /// Reads a header written by [`RecordHeader::to_bytes`] on this machine; `None` when
    /// fewer than [`RECORD_HEADER_LEN`] bytes are given.
    pub fn from_bytes(b: &[u8]) -> Option<RecordHeader> {
        let b = b.get(..RECORD_HEADER_LEN)?;
        let w = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Some(RecordHeader {
            ts_sec: w(0),
            ts_usec: w(4),
            captured: w(8),
            original: w(12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_bytes() {
        let h = file_header(65535);
        let expected: [u8; 24] = if cfg!(target_endian = "little") {
            [
                0xd4, 0xc3, 0xb2, 0xa1, // magic
                2, 0, 4, 0, // version 2.4
                0, 0, 0, 0, // thiszone
                0, 0, 0, 0, // sigfigs
                0xff, 0xff, 0, 0, // snaplen 65535
                1, 0, 0, 0, // Ethernet
            ]
        } else {
            [
                0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0,
                0, 1,
            ]
        };
        assert_eq!(h, expected);
    }

    #[test]
    fn record_header_bytes_and_back() {
        let r = RecordHeader {
            ts_sec: 0x6000_0001,
            ts_usec: 999_999,
            captured: 60,
            original: 1514,
        };
        let b = r.to_bytes();
        if cfg!(target_endian = "little") {
            assert_eq!(
                b,
                [
                    0x01, 0x00, 0x00, 0x60, // seconds
                    0x3f, 0x42, 0x0f, 0x00, // 999999 us
                    60, 0, 0, 0, // captured
                    0xea, 0x05, 0, 0, // 1514 on the wire
                ]
            );
        }
        assert_eq!(RecordHeader::from_bytes(&b), Some(r));
    }

    #[test]
    fn test_record_header_truncated() {
        assert_eq!(RecordHeader::from_bytes(&[0u8; 15]), None);
    }
}

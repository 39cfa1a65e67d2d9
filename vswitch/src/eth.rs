//! Ethernet and 802.1Q headers as the switch needs them: destination, source, and the VLAN tag if
//! there is one. Parsed from a small copy of the frame's first bytes (never from guest memory in
//! place), so the frame cannot change between the checks and the use.

/// Field offsets of an Ethernet II header (with an optional 802.1Q tag after the source).
pub mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// With an 802.1Q tag: tag control information (PCP, DEI, VID).
    pub const TCI: Range<usize> = 14..16;
    /// With an 802.1Q tag: the encapsulated EtherType.
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// Bytes the switch reads from the front of every frame.
pub const HEADER_PEEK: usize = 18;
/// Length of an Ethernet header without a tag.
pub const HEADER_LEN: usize = 14;
/// EtherType of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub type Mac = [u8; 6];

/// What the forwarding decision needs of a frame: addresses and the outer EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    /// The outer EtherType: 0x8100 / 0x88a8 for a tagged frame.
    pub ethertype: u16,
}

/// Why a frame's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EthError {
    /// Shorter than an Ethernet header (or, for a tagged frame, than header and tag).
    Truncated,
}

impl EthHeader {
    /// Parses the header from the first bytes of a frame (`bytes` may be longer). A tagged
    /// frame must carry its whole tag (18 bytes).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<EthHeader, EthError> {
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(EthError::Truncated);
        };
        let h = EthHeader {
            dst: [b[0], b[1], b[2], b[3], b[4], b[5]],
            src: [b[6], b[7], b[8], b[9], b[10], b[11]],
            ethertype: be16(b, field::ETHERTYPE.start),
        };
        if h.is_tagged() && bytes.len() < HEADER_PEEK {
            return Err(EthError::Truncated);
        }
        Ok(h)
    }

    /// Whether the frame carries an 802.1Q or 802.1ad tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        self.ethertype == ETHERTYPE_VLAN || self.ethertype == ETHERTYPE_QINQ
    }

    /// The tag's VLAN id and the encapsulated EtherType, for a tagged frame; `bytes` are the
    /// ones [`EthHeader::parse`] accepted.
    pub fn tag(&self, bytes: &[u8]) -> Option<(u16, u16)> {
        (self.is_tagged() && bytes.len() >= HEADER_PEEK).then(|| {
            (
                be16(bytes, field::TCI.start) & 0x0fff,
                be16(bytes, field::INNER_ETHERTYPE.start),
            )
        })
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Group bit: broadcast and multicast destinations are flooded, and never learned as sources.
#[inline]
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    static UNTAGGED: [u8; 14] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    static TAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0x20, 0x64, 0x08,
        0x06,
    ];

    #[test]
    fn parse_untagged() {
        let h = EthHeader::parse(&UNTAGGED).unwrap();
        assert_eq!(h.dst, [2, 0, 0, 0, 0, 2]);
        assert_eq!(h.src, [2, 0, 0, 0, 0, 1]);
        assert!(!h.is_tagged());
        assert_eq!(h.tag(&UNTAGGED), None);
        assert_eq!(h.ethertype, 0x0800);
        assert!(!is_multicast(&h.dst));
    }

    #[test]
    fn parse_tagged() {
        let h = EthHeader::parse(&TAGGED).unwrap();
        assert!(h.is_tagged());
        assert_eq!(h.tag(&TAGGED), Some((100, 0x0806)));
        assert!(is_multicast(&h.dst));
    }

    #[test]
    fn test_eth_runt_frame() {
        assert_eq!(EthHeader::parse(&UNTAGGED[..13]), Err(EthError::Truncated));
        assert_eq!(EthHeader::parse(&[]), Err(EthError::Truncated));
    }

    #[test]
    fn test_eth_truncated_vlan_tag() {
        assert_eq!(EthHeader::parse(&TAGGED[..16]), Err(EthError::Truncated));
    }
}

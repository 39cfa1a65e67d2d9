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

/// What the forwarding decision needs of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    /// VLAN id of the 802.1Q tag, when the frame carries one.
    pub vlan: Option<u16>,
    /// EtherType of the payload (the inner one for a tagged frame).
    pub ethertype: u16,
}

/// Why a frame's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EthError {
    /// Shorter than an Ethernet header (or a tagged one).
    Truncated,
}

impl EthHeader {
    /// Parses the header from the first bytes of a frame (`bytes` may be longer).
    pub fn parse(bytes: &[u8]) -> Result<EthHeader, EthError> {
        if bytes.len() < HEADER_LEN {
            return Err(EthError::Truncated);
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&bytes[field::DESTINATION]);
        let mut src = [0u8; 6];
        src.copy_from_slice(&bytes[field::SOURCE]);
        let et = be16(bytes, field::ETHERTYPE.start);
        if et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ {
            if bytes.len() < HEADER_PEEK {
                return Err(EthError::Truncated);
            }
            return Ok(EthHeader {
                dst,
                src,
                vlan: Some(be16(bytes, field::TCI.start) & 0x0fff),
                ethertype: be16(bytes, field::INNER_ETHERTYPE.start),
            });
        }
        Ok(EthHeader {
            dst,
            src,
            vlan: None,
            ethertype: et,
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
        assert_eq!(h.vlan, None);
        assert_eq!(h.ethertype, 0x0800);
        assert!(!is_multicast(&h.dst));
    }

    #[test]
    fn parse_tagged() {
        let h = EthHeader::parse(&TAGGED).unwrap();
        assert_eq!(h.vlan, Some(100));
        assert_eq!(h.ethertype, 0x0806);
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

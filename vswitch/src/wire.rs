//! The underlay's wire formats as a VTEP reads and writes them: the outer IPv4, UDP and VXLAN
//! headers of an encapsulated frame (RFC 7348, RFC 791, RFC 768) and ARP (RFC 826) for the
//! VTEP's own address. Parsing works on a frame's bytes as received (untrusted: every length is
//! checked against what is there); emitting fills a buffer the caller sized.

use std::net::Ipv4Addr;

use crate::eth::{self, Mac};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IANA-assigned VXLAN destination port.
pub const VXLAN_PORT: u16 = 4789;
pub const IPPROTO_UDP: u8 = 17;
pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
pub const VXLAN_HEADER_LEN: usize = 8;
/// Outer headers in front of an encapsulated frame: Ethernet, IPv4 without options, UDP, VXLAN.
pub const VXLAN_OVERHEAD: usize =
    eth::HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
/// What encapsulation adds to an inner frame as the underlay's IP MTU counts it: the outer IPv4,
/// UDP and VXLAN headers (the inner frame, its Ethernet header included, is the payload).
pub const VXLAN_MTU_OVERHEAD: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Length of an ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
/// Ethernet frames are at least 60 bytes before the FCS; ARP frames are padded to it.
pub const MIN_ETH_FRAME: usize = 60;

/// Field offsets of an IPv4 header.
pub mod ipv4 {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    /// Don't Fragment.
    pub const DF: u16 = 0x4000;
    /// More Fragments.
    pub const MF: u16 = 0x2000;
    pub const FRAG_OFFSET: u16 = 0x1fff;
}

/// Field offsets of a UDP header.
pub mod udp {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Field offsets of a VXLAN header.
pub mod vxlan {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    /// The I flag: the VNI is valid. A header without it is refused (RFC 7348 section 5).
    pub const FLAG_I: u8 = 0x08;
}

/// Field offsets of an ARP packet for IPv4 over Ethernet.
pub mod arp {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Sum of 16-bit big-endian words (the Internet checksum before folding).
fn sum16(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    // s <= 0xffff after folding.
    u16::try_from(s).unwrap_or(0xffff)
}

/// The Internet checksum (RFC 1071) of `b`.
pub fn checksum(b: &[u8]) -> u16 {
    !fold(sum16(b))
}

/// Why an underlay frame was not taken, each a drop counter of the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayError {
    /// Shorter than an Ethernet header.
    Runt,
    /// Not ARP and not IPv4/UDP to the VXLAN port (another protocol, another port, a tag).
    NotVxlan,
    /// The IPv4, UDP or VXLAN header is cut short, or a length field claims more bytes than
    /// the frame holds.
    Truncated,
    /// Not IPv4 version 4, a header length below 20, a bad header checksum, or a fragment.
    BadIpv4,
    /// The VXLAN header's I flag is clear.
    BadVxlan,
    /// The encapsulated frame is shorter than an Ethernet header.
    InnerRunt,
    /// An ARP packet that is not IPv4 over Ethernet, or cut short.
    BadArp,
}

/// A VXLAN packet as received: outer addresses, VNI, and the encapsulated frame's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRx {
    pub outer_src_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub vni: u32,
    /// The inner frame is `frame[inner_start..inner_end]`.
    pub inner_start: usize,
    pub inner_end: usize,
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRx {
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tpa: Ipv4Addr,
}

/// What an underlay frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    Vxlan(VxlanRx),
    Arp(ArpRx),
}

/// Parses a frame received on an underlay port. Checks, in order: the Ethernet header, the
/// EtherType (ARP, or IPv4), the IPv4 header (version, length, checksum, no fragment), UDP to
/// port 4789 and its length, the VXLAN I flag, and the inner frame's length. Addresses and VNI
/// are the caller's to check against its tunnels.
pub fn parse_underlay(f: &[u8]) -> Result<Underlay, UnderlayError> {
    if f.len() < eth::HEADER_LEN {
        return Err(UnderlayError::Runt);
    }
    let ethertype = be16(f, eth::field::ETHERTYPE.start);
    if ethertype == ETHERTYPE_ARP {
        return parse_arp(&f[eth::HEADER_LEN..]).map(Underlay::Arp);
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Err(UnderlayError::NotVxlan);
    }
    let ip = &f[eth::HEADER_LEN..];
    if ip.len() < IPV4_HEADER_LEN {
        return Err(UnderlayError::Truncated);
    }
    let ihl = usize::from(ip[ipv4::VER_IHL] & 0x0f) * 4;
    if ip[ipv4::VER_IHL] >> 4 != 4 || ihl < IPV4_HEADER_LEN {
        return Err(UnderlayError::BadIpv4);
    }
    let total = usize::from(be16(ip, ipv4::LENGTH.start));
    if ip.len() < ihl || total > ip.len() {
        return Err(UnderlayError::Truncated);
    }
    if total < ihl || fold(sum16(&ip[..ihl])) != 0xffff {
        return Err(UnderlayError::BadIpv4);
    }
    let frag = be16(ip, ipv4::FLAGS_FRAG.start);
    if frag & (ipv4::MF | ipv4::FRAG_OFFSET) != 0 {
        return Err(UnderlayError::BadIpv4);
    }
    if ip[ipv4::PROTOCOL] != IPPROTO_UDP {
        return Err(UnderlayError::NotVxlan);
    }
    // Ethernet padding beyond the IP packet is not part of it.
    let l4 = &ip[ihl..total];
    if l4.len() < UDP_HEADER_LEN {
        return Err(UnderlayError::Truncated);
    }
    if be16(l4, udp::DST_PORT.start) != VXLAN_PORT {
        return Err(UnderlayError::NotVxlan);
    }
    let ulen = usize::from(be16(l4, udp::LENGTH.start));
    if ulen < UDP_HEADER_LEN + VXLAN_HEADER_LEN || ulen > l4.len() {
        return Err(UnderlayError::Truncated);
    }
    let vx = &l4[UDP_HEADER_LEN..];
    if vx[vxlan::FLAGS] & vxlan::FLAG_I == 0 {
        return Err(UnderlayError::BadVxlan);
    }
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    let inner_start = eth::HEADER_LEN + ihl + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
    let inner_end = eth::HEADER_LEN + ihl + ulen;
    if inner_end - inner_start < eth::HEADER_LEN {
        return Err(UnderlayError::InnerRunt);
    }
    Ok(Underlay::Vxlan(VxlanRx {
        outer_src_mac: mac_at(f, eth::field::SOURCE.start),
        src_ip: ip_at(ip, ipv4::SRC.start),
        dst_ip: ip_at(ip, ipv4::DST.start),
        vni,
        inner_start,
        inner_end,
    }))
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}

/// Parses the ARP packet after an Ethernet header.
pub fn parse_arp(a: &[u8]) -> Result<ArpRx, UnderlayError> {
    if a.len() < ARP_LEN {
        return Err(UnderlayError::BadArp);
    }
    if be16(a, arp::HTYPE.start) != 1
        || be16(a, arp::PTYPE.start) != ETHERTYPE_IPV4
        || a[arp::HLEN] != 6
        || a[arp::PLEN] != 4
    {
        return Err(UnderlayError::BadArp);
    }
    Ok(ArpRx {
        oper: be16(a, arp::OPER.start),
        sha: mac_at(a, arp::SHA.start),
        spa: ip_at(a, arp::SPA.start),
        tpa: ip_at(a, arp::TPA.start),
    })
}

/// Writes an ARP frame (padded to 60 bytes; `out` must hold [`MIN_ETH_FRAME`]): a request
/// (`tha` unknown, sent to broadcast) or a reply to `tha`.
pub fn write_arp(
    out: &mut [u8],
    oper: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> usize {
    let out = &mut out[..MIN_ETH_FRAME];
    out.fill(0);
    let dst = if oper == arp::REQUEST { [0xff; 6] } else { tha };
    out[eth::field::DESTINATION].copy_from_slice(&dst);
    out[eth::field::SOURCE].copy_from_slice(&sha);
    put16(out, eth::field::ETHERTYPE.start, ETHERTYPE_ARP);
    let a = &mut out[eth::HEADER_LEN..];
    put16(a, arp::HTYPE.start, 1);
    put16(a, arp::PTYPE.start, ETHERTYPE_IPV4);
    a[arp::HLEN] = 6;
    a[arp::PLEN] = 4;
    put16(a, arp::OPER.start, oper);
    a[arp::SHA].copy_from_slice(&sha);
    a[arp::SPA].copy_from_slice(&spa.octets());
    let tha = if oper == arp::REQUEST { [0; 6] } else { tha };
    a[arp::THA].copy_from_slice(&tha);
    a[arp::TPA].copy_from_slice(&tpa.octets());
    MIN_ETH_FRAME
}

/// The outer headers toward one remote VTEP, built once per burst: everything but the lengths,
/// the UDP source port and the IPv4 checksum, which [`OuterHeader::write`] fills per frame.
#[derive(Debug, Clone, Copy)]
pub struct OuterHeader {
    bytes: [u8; VXLAN_OVERHEAD],
    /// Unfolded sum of the IPv4 header's constant words.
    ip_sum: u32,
}

impl OuterHeader {
    pub fn new(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, vni: u32) -> Self {
        let mut b = [0u8; VXLAN_OVERHEAD];
        b[eth::field::DESTINATION].copy_from_slice(&dst_mac);
        b[eth::field::SOURCE].copy_from_slice(&src_mac);
        put16(&mut b, eth::field::ETHERTYPE.start, ETHERTYPE_IPV4);
        let ip = &mut b[eth::HEADER_LEN..];
        ip[ipv4::VER_IHL] = 0x45;
        // RFC 7348 section 4.3: VTEPs must not fragment; DF lets the path say so.
        put16(ip, ipv4::FLAGS_FRAG.start, ipv4::DF);
        ip[ipv4::TTL] = 64;
        ip[ipv4::PROTOCOL] = IPPROTO_UDP;
        ip[ipv4::SRC].copy_from_slice(&src.octets());
        ip[ipv4::DST].copy_from_slice(&dst.octets());
        let ip_sum = sum16(&ip[..IPV4_HEADER_LEN]);
        let l4 = &mut ip[IPV4_HEADER_LEN..];
        put16(l4, udp::DST_PORT.start, VXLAN_PORT);
        // UDP checksum 0: allowed over IPv4 and what RFC 7348 section 5 recommends.
        let vx = &mut l4[UDP_HEADER_LEN..];
        vx[vxlan::FLAGS] = vxlan::FLAG_I;
        vx[vxlan::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
        OuterHeader { bytes: b, ip_sum }
    }

    /// Writes the outer headers for an inner frame of `inner_len` bytes into `out` (at least
    /// [`VXLAN_OVERHEAD`] bytes). `inner_len` is at most the underlay MTU less
    /// [`VXLAN_MTU_OVERHEAD`], which the caller has checked.
    #[inline]
    pub fn write(&self, out: &mut [u8], inner_len: usize, src_port: u16) {
        let out = &mut out[..VXLAN_OVERHEAD];
        out.copy_from_slice(&self.bytes);
        let total = u16::try_from(inner_len + VXLAN_MTU_OVERHEAD).unwrap_or(u16::MAX);
        let ip = &mut out[eth::HEADER_LEN..];
        put16(ip, ipv4::LENGTH.start, total);
        put16(
            ip,
            ipv4::CHECKSUM.start,
            !fold(self.ip_sum + u32::from(total)),
        );
        let l4 = &mut ip[IPV4_HEADER_LEN..];
        put16(l4, udp::SRC_PORT.start, src_port);
        put16(l4, udp::LENGTH.start, total - 20);
    }
}

/// The outer UDP source port for an inner frame: a hash of its addresses (and, for IPv4, its IP
/// addresses), in the dynamic range, so the underlay's ECMP spreads flows (RFC 7348 section 5).
#[inline]
pub fn entropy_port(inner: &[u8]) -> u16 {
    let word = |at: usize| -> u64 {
        inner.get(at..at + 8).map_or(0, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    };
    // MACs and EtherType; for IPv4 also the addresses (bytes 26..34).
    let mut h = word(0) ^ word(6).rotate_left(17);
    if inner.len() >= 34 && be16(inner, 12) == ETHERTYPE_IPV4 {
        h ^= word(26).rotate_left(31);
    }
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // 49152 + 14 bits: 49152..=65535.
    0xc000 | u16::try_from(h >> 50).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTEP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const VTEP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    /// A VXLAN packet as Linux's vxlan driver sends it (VNI 42, UDP checksum 0, DF), carrying a
    /// 60-byte inner frame; written out by hand from the RFC 7348 layout.
    fn linux_packet() -> Vec<u8> {
        let mut inner = vec![0u8; 60];
        inner[..6].copy_from_slice(&[0xff; 6]);
        inner[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        inner[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut f = vec![
            // Ethernet: dst, src, IPv4
            0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x00, //
            // IPv4: 45 00, len 96, id 0x1234, DF, ttl 64, udp, csum (filled below)
            0x45, 0x00, 0x00, 0x60, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0, 0, 10, 0, 0, 2, 10, 0, 0,
            1, //
            // UDP: 50000 -> 4789, len 76, csum 0
            0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4c, 0, 0, //
            // VXLAN: I flag, VNI 42
            0x08, 0, 0, 0, 0, 0, 42, 0,
        ];
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&inner);
        f
    }

    #[test]
    fn parse_linux_vxlan_packet() {
        let f = linux_packet();
        let Underlay::Vxlan(v) = parse_underlay(&f).unwrap() else {
            panic!("not VXLAN")
        };
        assert_eq!(v.vni, 42);
        assert_eq!(v.src_ip, VTEP_B);
        assert_eq!(v.dst_ip, VTEP_A);
        assert_eq!(v.outer_src_mac, MAC_B);
        assert_eq!((v.inner_start, v.inner_end), (50, 110));
        assert_eq!(&f[v.inner_start..v.inner_start + 6], &[0xff; 6]);
    }

    #[test]
    fn ethernet_padding_is_not_inner_frame() {
        let mut f = linux_packet();
        f.extend_from_slice(&[0xee; 8]);
        let Underlay::Vxlan(v) = parse_underlay(&f).unwrap() else {
            panic!()
        };
        assert_eq!(v.inner_end, 110);
    }

    #[test]
    fn emit_then_parse_round_trip() {
        let inner: Vec<u8> = (0..100u8).collect();
        let h = OuterHeader::new(MAC_A, MAC_B, VTEP_A, VTEP_B, 0xabcdef);
        let mut f = vec![0u8; VXLAN_OVERHEAD + inner.len()];
        h.write(&mut f, inner.len(), entropy_port(&inner));
        f[VXLAN_OVERHEAD..].copy_from_slice(&inner);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum verifies");
        let Underlay::Vxlan(v) = parse_underlay(&f).unwrap() else {
            panic!()
        };
        assert_eq!(v.vni, 0xabcdef);
        assert_eq!((v.src_ip, v.dst_ip), (VTEP_A, VTEP_B));
        assert_eq!(&f[v.inner_start..v.inner_end], &inner[..]);
        let sport = be16(&f, 34);
        assert!(sport >= 49152, "{sport}");
        assert_eq!(be16(&f, 16), 136, "IP total length");
        assert_eq!(be16(&f, 38), 116, "UDP length");
        assert_eq!(be16(&f, 20) & ipv4::DF, ipv4::DF);
    }

    #[test]
    fn test_underlay_runt_frame() {
        assert_eq!(parse_underlay(&[0; 13]), Err(UnderlayError::Runt));
        assert_eq!(parse_underlay(&[]), Err(UnderlayError::Runt));
    }

    #[test]
    fn test_underlay_truncated_outer_headers() {
        let f = linux_packet();
        // Cut inside the IPv4 header, the UDP header, the VXLAN header.
        for cut in [14, 20, 33, 34, 40, 45, 49] {
            let r = parse_underlay(&f[..cut]);
            assert_eq!(r, Err(UnderlayError::Truncated), "cut at {cut}");
        }
        // The IP length claims more than the frame holds.
        let mut g = f.clone();
        g.truncate(100);
        assert_eq!(parse_underlay(&g), Err(UnderlayError::Truncated));
        // The UDP length claims more than the IP packet holds.
        let mut g = f.clone();
        g[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::Truncated));
        // UDP length too short for a VXLAN header.
        let mut g = f;
        g[38..40].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::Truncated));
    }

    #[test]
    fn test_underlay_bad_ipv4() {
        let f = linux_packet();
        let mut g = f.clone();
        g[24] ^= 0xff;
        assert_eq!(parse_underlay(&g), Err(UnderlayError::BadIpv4), "checksum");
        let mut g = f.clone();
        g[14] = 0x65;
        assert_eq!(parse_underlay(&g), Err(UnderlayError::BadIpv4), "version 6");
        let mut g = f.clone();
        g[14] = 0x44;
        assert_eq!(parse_underlay(&g), Err(UnderlayError::BadIpv4), "IHL 4");
        let mut g = f;
        g[20] = 0x20; // MF
        g[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&g[14..34]);
        g[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::BadIpv4), "fragment");
    }

    #[test]
    fn test_underlay_not_vxlan() {
        let f = linux_packet();
        let mut g = f.clone();
        g[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::NotVxlan), "IPv6");
        let mut g = f.clone();
        g[36..38].copy_from_slice(&4790u16.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::NotVxlan), "port");
        let mut g = f;
        g[23] = 6;
        g[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&g[14..34]);
        g[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_underlay(&g), Err(UnderlayError::NotVxlan), "TCP");
    }

    #[test]
    fn test_underlay_vxlan_without_i_flag() {
        let mut f = linux_packet();
        f[42] = 0;
        assert_eq!(parse_underlay(&f), Err(UnderlayError::BadVxlan));
    }

    #[test]
    fn test_underlay_inner_runt() {
        let mut f = linux_packet();
        // IP length 50 (20 + 8 + 8 + 14 - 1): a 13-byte inner frame.
        f[16..18].copy_from_slice(&49u16.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[38..40].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(parse_underlay(&f), Err(UnderlayError::InnerRunt));
    }

    #[test]
    fn arp_request_and_reply() {
        let mut buf = [0u8; 64];
        let n = write_arp(&mut buf, arp::REQUEST, MAC_A, VTEP_A, [0; 6], VTEP_B);
        assert_eq!(n, 60);
        assert_eq!(&buf[..6], &[0xff; 6]);
        let Underlay::Arp(a) = parse_underlay(&buf[..n]).unwrap() else {
            panic!()
        };
        assert_eq!(
            a,
            ArpRx {
                oper: arp::REQUEST,
                sha: MAC_A,
                spa: VTEP_A,
                tpa: VTEP_B
            }
        );
        let n = write_arp(&mut buf, arp::REPLY, MAC_B, VTEP_B, MAC_A, VTEP_A);
        assert_eq!(&buf[..6], &MAC_A);
        let Underlay::Arp(a) = parse_underlay(&buf[..n]).unwrap() else {
            panic!()
        };
        assert_eq!((a.oper, a.sha, a.spa), (arp::REPLY, MAC_B, VTEP_B));
        assert_eq!(parse_underlay(&buf[..30]), Err(UnderlayError::BadArp));
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071 example words.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&b), !0xddf2);
    }
}

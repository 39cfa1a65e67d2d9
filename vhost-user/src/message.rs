//! The vhost-user wire format: request codes, the message header, and every payload this crate
//! sends or accepts, with parsing that validates before anything is used.
//!
//! Parsing never trusts the peer: a payload is read from a byte slice of exactly the declared
//! size, field by field (little-endian, as every vhost-user peer on x86 writes it), and checked
//! with `validate` before a handler sees it. Nothing here is `unsafe`.

use crate::error::Error;

/// Size of the fixed message header: request, flags, size (three `u32`).
pub const HEADER_SIZE: usize = 12;
/// Largest payload we accept. The biggest message a real frontend sends is `SET_MEM_TABLE`
/// (8 + 8 * 32 bytes) or a `GET_CONFIG` with its config space; 4096 covers both with room.
pub const MAX_PAYLOAD: usize = 4096;
/// At most this many file descriptors travel with one message (`SET_MEM_TABLE` with 8 regions).
pub const MAX_FDS: usize = 8;
/// Regions in one `SET_MEM_TABLE`.
pub const MAX_MEM_TABLE_REGIONS: usize = 8;

/// Protocol version carried in the low two bits of `flags`.
pub const VERSION: u32 = 0x1;
const VERSION_MASK: u32 = 0x3;
/// Set on every reply.
pub const FLAG_REPLY: u32 = 1 << 2;
/// The frontend asks for a `REPLY_ACK`.
pub const FLAG_NEED_REPLY: u32 = 1 << 3;
const KNOWN_FLAGS: u32 = VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY;

/// `SET_VRING_KICK/CALL/ERR` payload: bit 8 says no fd is attached (polling).
pub const VRING_NOFD_MASK: u64 = 1 << 8;
/// `SET_VRING_KICK/CALL/ERR` payload: bits 0..8 hold the queue index.
pub const VRING_IDX_MASK: u64 = 0xff;

/// Feature bit the backend sets in `GET_FEATURES` to say it speaks protocol features.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

macro_rules! requests {
    ($( $(#[$doc:meta])* $name:ident = $code:expr, )*) => {
        /// A frontend-to-backend request code, as named in QEMU's `docs/interop/vhost-user.rst`.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Request {
            $( $(#[$doc])* $name = $code, )*
        }

        impl TryFrom<u32> for Request {
            type Error = Error;
            fn try_from(code: u32) -> Result<Self, Error> {
                match code {
                    $( $code => Ok(Request::$name), )*
                    other => Err(Error::UnknownRequest(other)),
                }
            }
        }

        impl Request {
            /// The spec's name of the request, for logs and errors.
            pub fn name(self) -> &'static str {
                match self { $( Request::$name => stringify!($name), )* }
            }
        }
    };
}

requests! {
    GET_FEATURES = 1,
    SET_FEATURES = 2,
    SET_OWNER = 3,
    RESET_OWNER = 4,
    SET_MEM_TABLE = 5,
    SET_LOG_BASE = 6,
    SET_LOG_FD = 7,
    SET_VRING_NUM = 8,
    SET_VRING_ADDR = 9,
    SET_VRING_BASE = 10,
    GET_VRING_BASE = 11,
    SET_VRING_KICK = 12,
    SET_VRING_CALL = 13,
    SET_VRING_ERR = 14,
    GET_PROTOCOL_FEATURES = 15,
    SET_PROTOCOL_FEATURES = 16,
    GET_QUEUE_NUM = 17,
    SET_VRING_ENABLE = 18,
    SEND_RARP = 19,
    NET_SET_MTU = 20,
    SET_BACKEND_REQ_FD = 21,
    IOTLB_MSG = 22,
    SET_VRING_ENDIAN = 23,
    GET_CONFIG = 24,
    SET_CONFIG = 25,
    CREATE_CRYPTO_SESSION = 26,
    CLOSE_CRYPTO_SESSION = 27,
    POSTCOPY_ADVISE = 28,
    POSTCOPY_LISTEN = 29,
    POSTCOPY_END = 30,
    GET_INFLIGHT_FD = 31,
    SET_INFLIGHT_FD = 32,
    GPU_SET_SOCKET = 33,
    RESET_DEVICE = 34,
    VRING_KICK = 35,
    GET_MAX_MEM_SLOTS = 36,
    ADD_MEM_REG = 37,
    REM_MEM_REG = 38,
    SET_STATUS = 39,
    GET_STATUS = 40,
}

/// Protocol feature bits (`GET/SET_PROTOCOL_FEATURES`).
pub mod protocol_features {
    pub const MQ: u64 = 1 << 0;
    pub const LOG_SHMFD: u64 = 1 << 1;
    pub const RARP: u64 = 1 << 2;
    pub const REPLY_ACK: u64 = 1 << 3;
    pub const NET_MTU: u64 = 1 << 4;
    pub const BACKEND_REQ: u64 = 1 << 5;
    pub const CONFIG: u64 = 1 << 9;
    pub const RESET_DEVICE: u64 = 1 << 13;
    pub const CONFIGURE_MEM_SLOTS: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;

    /// Names of the bits, for `vswitchctl show`.
    pub fn names(bits: u64) -> Vec<&'static str> {
        const ALL: &[(u64, &str)] = &[
            (MQ, "MQ"),
            (LOG_SHMFD, "LOG_SHMFD"),
            (RARP, "RARP"),
            (REPLY_ACK, "REPLY_ACK"),
            (NET_MTU, "NET_MTU"),
            (BACKEND_REQ, "BACKEND_REQ"),
            (CONFIG, "CONFIG"),
            (RESET_DEVICE, "RESET_DEVICE"),
            (CONFIGURE_MEM_SLOTS, "CONFIGURE_MEM_SLOTS"),
            (STATUS, "STATUS"),
        ];
        ALL.iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// The 12-byte header in front of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    /// A request header for `req` carrying `size` payload bytes.
    pub fn request(req: Request, size: usize, need_reply: bool) -> Self {
        Header {
            request: req as u32,
            flags: VERSION | if need_reply { FLAG_NEED_REPLY } else { 0 },
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }

    /// The reply header for a request header.
    pub fn reply_to(&self, size: usize) -> Self {
        Header {
            request: self.request,
            flags: VERSION | FLAG_REPLY,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }

    /// Parses and validates a header: version 1, no unknown flags, payload within bounds.
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<Self, Error> {
        let h = Header {
            request: le_u32(bytes, 0),
            flags: le_u32(bytes, 4),
            size: le_u32(bytes, 8),
        };
        if h.flags & VERSION_MASK != VERSION {
            return Err(Error::BadVersion(h.flags & VERSION_MASK));
        }
        if h.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::UnknownFlags(h.flags));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge(h.size as usize));
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn expect_len(req: Request, body: &[u8], want: usize) -> Result<(), Error> {
    if body.len() != want {
        return Err(Error::BadPayloadSize {
            request: req.name(),
            got: body.len(),
            want,
        });
    }
    Ok(())
}

/// A `u64` payload (features, status, queue counts, acks).
pub fn parse_u64(req: Request, body: &[u8]) -> Result<u64, Error> {
    expect_len(req, body, 8)?;
    Ok(le_u64(body, 0))
}

pub fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// `SET_VRING_NUM`, `SET_VRING_BASE`, `GET_VRING_BASE`, `SET_VRING_ENABLE` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringState {
    pub index: u32,
    pub num: u32,
}

impl VringState {
    pub const SIZE: usize = 8;

    pub fn parse(req: Request, body: &[u8]) -> Result<Self, Error> {
        expect_len(req, body, Self::SIZE)?;
        Ok(VringState {
            index: le_u32(body, 0),
            num: le_u32(body, 4),
        })
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.num.to_le_bytes());
        b
    }
}

/// `SET_VRING_ADDR` payload. Addresses are in the frontend's virtual address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringAddr {
    pub index: u32,
    pub flags: u32,
    pub desc: u64,
    pub used: u64,
    pub avail: u64,
    pub log: u64,
}

/// `SET_VRING_ADDR` flag: the frontend wants used-ring writes logged for migration.
pub const VRING_ADDR_F_LOG: u32 = 1;

impl VringAddr {
    pub const SIZE: usize = 40;

    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        expect_len(Request::SET_VRING_ADDR, body, Self::SIZE)?;
        let a = VringAddr {
            index: le_u32(body, 0),
            flags: le_u32(body, 4),
            desc: le_u64(body, 8),
            used: le_u64(body, 16),
            avail: le_u64(body, 24),
            log: le_u64(body, 32),
        };
        if a.flags & !VRING_ADDR_F_LOG != 0 {
            return Err(Error::Invalid("unknown SET_VRING_ADDR flags"));
        }
        Ok(a)
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.desc.to_le_bytes());
        b[16..24].copy_from_slice(&self.used.to_le_bytes());
        b[24..32].copy_from_slice(&self.avail.to_le_bytes());
        b[32..40].copy_from_slice(&self.log.to_le_bytes());
        b
    }
}

/// `SET_LOG_BASE` payload: where the dirty log lies in the attached fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRegion {
    pub mmap_size: u64,
    pub mmap_offset: u64,
}

impl LogRegion {
    pub const SIZE: usize = 16;

    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        expect_len(Request::SET_LOG_BASE, body, Self::SIZE)?;
        Ok(LogRegion {
            mmap_size: le_u64(body, 0),
            mmap_offset: le_u64(body, 8),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.mmap_size.to_le_bytes());
        b[8..16].copy_from_slice(&self.mmap_offset.to_le_bytes());
        b
    }
}

/// `SEND_RARP` payload: a `u64` whose first six bytes are the guest's MAC address.
pub fn parse_rarp_mac(body: &[u8]) -> Result<[u8; 6], Error> {
    expect_len(Request::SEND_RARP, body, 8)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&body[..6]);
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(Error::Rejected(format!(
            "SEND_RARP for {} which is not a unicast MAC address",
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        )));
    }
    Ok(mac)
}

/// Encodes a `SEND_RARP` payload.
pub fn rarp_bytes(mac: [u8; 6]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    b
}

/// One guest memory region as described by `SET_MEM_TABLE` / `ADD_MEM_REG` / `REM_MEM_REG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemRegionDesc {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub mmap_offset: u64,
}

impl MemRegionDesc {
    pub const SIZE: usize = 32;

    fn parse_at(b: &[u8], at: usize) -> Self {
        MemRegionDesc {
            guest_phys_addr: le_u64(b, at),
            memory_size: le_u64(b, at + 8),
            userspace_addr: le_u64(b, at + 16),
            mmap_offset: le_u64(b, at + 24),
        }
    }

    fn write_at(&self, b: &mut [u8], at: usize) {
        b[at..at + 8].copy_from_slice(&self.guest_phys_addr.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&self.memory_size.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&self.userspace_addr.to_le_bytes());
        b[at + 24..at + 32].copy_from_slice(&self.mmap_offset.to_le_bytes());
    }

    /// A region is usable when it is non-empty and none of its ranges wraps the address space.
    pub fn validate(&self) -> Result<(), Error> {
        if self.memory_size == 0 {
            return Err(Error::Invalid("memory region of size 0"));
        }
        let ok = self.guest_phys_addr.checked_add(self.memory_size).is_some()
            && self.userspace_addr.checked_add(self.memory_size).is_some()
            && self.mmap_offset.checked_add(self.memory_size).is_some()
            && usize::try_from(self.mmap_offset + self.memory_size).is_ok();
        if !ok {
            return Err(Error::Invalid("memory region address arithmetic overflows"));
        }
        Ok(())
    }
}

/// Parses a `SET_MEM_TABLE` body: `u32 nregions, u32 padding, regions[nregions]`.
pub fn parse_mem_table(body: &[u8]) -> Result<Vec<MemRegionDesc>, Error> {
    if body.len() < 8 {
        return Err(Error::BadPayloadSize {
            request: "SET_MEM_TABLE",
            got: body.len(),
            want: 8,
        });
    }
    let n = le_u32(body, 0) as usize;
    if n == 0 || n > MAX_MEM_TABLE_REGIONS {
        return Err(Error::Invalid("SET_MEM_TABLE region count must be 1..=8"));
    }
    // QEMU sends the full 8-slot table; others send exactly n regions. Accept either.
    let want = 8 + n * MemRegionDesc::SIZE;
    let full = 8 + MAX_MEM_TABLE_REGIONS * MemRegionDesc::SIZE;
    if body.len() != want && body.len() != full {
        return Err(Error::BadPayloadSize {
            request: "SET_MEM_TABLE",
            got: body.len(),
            want,
        });
    }
    let regions: Vec<_> = (0..n)
        .map(|i| MemRegionDesc::parse_at(body, 8 + i * MemRegionDesc::SIZE))
        .collect();
    for r in &regions {
        r.validate()?;
    }
    Ok(regions)
}

/// Encodes a `SET_MEM_TABLE` body.
pub fn mem_table_bytes(regions: &[MemRegionDesc]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + regions.len() * MemRegionDesc::SIZE];
    b[0..4].copy_from_slice(&u32::try_from(regions.len()).unwrap_or(0).to_le_bytes());
    for (i, r) in regions.iter().enumerate() {
        r.write_at(&mut b, 8 + i * MemRegionDesc::SIZE);
    }
    b
}

/// Parses an `ADD_MEM_REG` / `REM_MEM_REG` body: `u64 padding, region`.
pub fn parse_single_region(req: Request, body: &[u8]) -> Result<MemRegionDesc, Error> {
    expect_len(req, body, 8 + MemRegionDesc::SIZE)?;
    let r = MemRegionDesc::parse_at(body, 8);
    r.validate()?;
    Ok(r)
}

pub fn single_region_bytes(r: &MemRegionDesc) -> [u8; 8 + MemRegionDesc::SIZE] {
    let mut b = [0u8; 8 + MemRegionDesc::SIZE];
    r.write_at(&mut b, 8);
    b
}

/// `GET_CONFIG` / `SET_CONFIG` payload: `u32 offset, u32 size, u32 flags, bytes[size]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMsg {
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
}

impl ConfigMsg {
    pub const HEADER: usize = 12;

    pub fn parse(req: Request, body: &[u8]) -> Result<Self, Error> {
        if body.len() < Self::HEADER {
            return Err(Error::BadPayloadSize {
                request: req.name(),
                got: body.len(),
                want: Self::HEADER,
            });
        }
        let offset = le_u32(body, 0);
        let size = le_u32(body, 4);
        let flags = le_u32(body, 8);
        expect_len(req, body, Self::HEADER + size as usize)?;
        Ok(ConfigMsg {
            offset,
            size,
            flags,
            payload: body[Self::HEADER..].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::HEADER + self.payload.len());
        b.extend_from_slice(&self.offset.to_le_bytes());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header::request(Request::SET_VRING_NUM, 8, true);
        let p = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(p, h);
        assert!(p.need_reply());
        assert!(!p.is_reply());
        assert_eq!(
            Request::try_from(p.request).unwrap(),
            Request::SET_VRING_NUM
        );
    }

    #[test]
    fn test_header_bad_version() {
        let mut h = Header::request(Request::SET_OWNER, 0, false);
        h.flags = 2;
        assert!(matches!(
            Header::parse(&h.to_bytes()),
            Err(Error::BadVersion(2))
        ));
    }

    #[test]
    fn test_header_unknown_flags() {
        let mut h = Header::request(Request::SET_OWNER, 0, false);
        h.flags |= 1 << 7;
        assert!(matches!(
            Header::parse(&h.to_bytes()),
            Err(Error::UnknownFlags(_))
        ));
    }

    #[test]
    fn test_header_oversized_payload() {
        let h = Header::request(Request::SET_OWNER, MAX_PAYLOAD + 1, false);
        assert!(matches!(
            Header::parse(&h.to_bytes()),
            Err(Error::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn test_unknown_request_code() {
        assert!(matches!(
            Request::try_from(999),
            Err(Error::UnknownRequest(999))
        ));
        assert!(Request::try_from(0).is_err());
    }

    #[test]
    fn test_u64_short_payload() {
        assert!(parse_u64(Request::SET_FEATURES, &[0u8; 4]).is_err());
        assert_eq!(
            parse_u64(Request::SET_FEATURES, &7u64.to_le_bytes()).unwrap(),
            7
        );
    }

    #[test]
    fn mem_table_roundtrip_both_lengths() {
        let r = MemRegionDesc {
            guest_phys_addr: 0,
            memory_size: 1 << 20,
            userspace_addr: 0x7f00_0000_0000,
            mmap_offset: 0,
        };
        let b = mem_table_bytes(&[r]);
        assert_eq!(parse_mem_table(&b).unwrap(), vec![r]);
        let mut full = vec![0u8; 8 + 8 * 32];
        full[..b.len()].copy_from_slice(&b);
        assert_eq!(parse_mem_table(&full).unwrap(), vec![r]);
    }

    #[test]
    fn test_mem_table_region_overflow() {
        let r = MemRegionDesc {
            guest_phys_addr: u64::MAX - 10,
            memory_size: 4096,
            userspace_addr: 0,
            mmap_offset: 0,
        };
        assert!(parse_mem_table(&mem_table_bytes(&[r])).is_err());
        let r = MemRegionDesc {
            guest_phys_addr: 0,
            memory_size: 4096,
            userspace_addr: 0,
            mmap_offset: u64::MAX,
        };
        assert!(parse_mem_table(&mem_table_bytes(&[r])).is_err());
    }

    #[test]
    fn test_mem_table_zero_regions() {
        assert!(parse_mem_table(&[0u8; 8]).is_err());
    }

    #[test]
    fn test_mem_table_too_many_regions() {
        let mut b = vec![0u8; 8 + 9 * 32];
        b[0] = 9;
        assert!(parse_mem_table(&b).is_err());
    }

    #[test]
    fn test_mem_table_truncated() {
        let r = MemRegionDesc {
            memory_size: 4096,
            ..Default::default()
        };
        let b = mem_table_bytes(&[r, r]);
        assert!(parse_mem_table(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn test_mem_region_size_zero() {
        let b = single_region_bytes(&MemRegionDesc::default());
        assert!(parse_single_region(Request::ADD_MEM_REG, &b).is_err());
    }

    #[test]
    fn test_vring_addr_unknown_flags() {
        let a = VringAddr {
            index: 0,
            flags: 0x80,
            desc: 0,
            used: 0,
            avail: 0,
            log: 0,
        };
        assert!(VringAddr::parse(&a.to_bytes()).is_err());
        let a = VringAddr { flags: 0, ..a };
        assert_eq!(VringAddr::parse(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn log_region_roundtrip() {
        let l = LogRegion {
            mmap_size: 4096,
            mmap_offset: 64,
        };
        assert_eq!(LogRegion::parse(&l.to_bytes()).unwrap(), l);
        assert!(LogRegion::parse(&[0u8; 8]).is_err());
    }

    #[test]
    fn test_rarp_multicast_mac() {
        let mac = [2, 0, 0, 0, 0, 9];
        assert_eq!(parse_rarp_mac(&rarp_bytes(mac)).unwrap(), mac);
        assert!(parse_rarp_mac(&rarp_bytes([1, 0, 0x5e, 0, 0, 1])).is_err());
        assert!(parse_rarp_mac(&rarp_bytes([0; 6])).is_err());
        assert!(parse_rarp_mac(&[0u8; 6]).is_err());
    }

    #[test]
    fn test_config_size_mismatch() {
        let c = ConfigMsg {
            offset: 0,
            size: 10,
            flags: 0,
            payload: vec![0; 6],
        };
        assert!(ConfigMsg::parse(Request::SET_CONFIG, &c.to_bytes()).is_err());
        assert!(ConfigMsg::parse(Request::SET_CONFIG, &[0u8; 3]).is_err());
    }
}

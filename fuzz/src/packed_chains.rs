//! Input format of the `packed_chains` target (hostile packed rings), shared with the seed
//! generator:
//!
//! ```text
//! features: u8 (F_* bits), size: u16 (1 + size % 256 entries), desc: u16, driver: u16,
//! device: u16 (ring offsets in units of 16, 4 and 4 bytes, mod the memory size),
//! base: u16, used: u16 (vring base halves: position in bits 0-14, wrap counter in bit 15)
//! ```
//! then operations until the input ends (at most [`MAX_OPS`]), each an opcode byte (mod
//! [`OPS`]) followed by its arguments, see `fuzz_targets/packed_chains.rs`.

pub use crate::chains::{ADDR_RAW_MODE, F_CALL, F_EVENT_IDX, F_HDR10, F_INDIRECT, F_MRG, MAX_OPS};
/// IN_ORDER negotiated (transmit bursts go back as one used descriptor).
pub const F_IN_ORDER: u8 = 32;

/// `pos: u16, desc`: writes one descriptor into the ring, flags and all, as given.
pub const OP_DESC: u8 = 0;
/// `offset: u16, len: u8`: fills guest memory with a pattern (tables, rings, buffers).
pub const OP_WRITE: u8 = 1;
/// `offset: u16 (x16), n: u8 (mod 16), n x desc`: writes an indirect table.
pub const OP_INDIRECT: u8 = 2;
/// Pops a transmit burst, checks its chains, completes it.
pub const OP_POP_TX: u8 = 3;
/// `n: u8 (mod 8), len: u16 (mod 9100)`: enqueues n frames of len bytes, and flushes.
pub const OP_ENQUEUE: u8 = 4;
/// Flushes.
pub const OP_FLUSH: u8 = 5;
/// `off_wrap: u16, flags: u16`: the driver event suppression structure.
pub const OP_EVENT: u8 = 6;
/// `n: u8`: `available()` and `walk_available(n)` for both directions.
pub const OP_AVAILABLE: u8 = 7;
/// Reads the vring base and checks it.
pub const OP_BASE: u8 = 8;
pub const OPS: u8 = 9;

/// One packed descriptor as the input encodes it: an address mode byte (below
/// [`ADDR_RAW_MODE`]: a u32 offset into guest memory follows; else a raw u64), len, id, flags.
#[derive(Clone, Copy, Debug)]
pub struct PDesc {
    pub offset: u32,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

/// Encoder for seeds.
pub struct Builder {
    pub out: Vec<u8>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    pub fn new(features: u8, size: u16, desc: u16, driver: u16, device: u16, base: u16) -> Self {
        let mut out = vec![features];
        for v in [size - 1, desc, driver, device, base, base] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Builder { out }
    }

    fn desc(&mut self, d: PDesc) {
        self.out.push(0);
        self.out.extend_from_slice(&d.offset.to_le_bytes());
        self.out.extend_from_slice(&d.len.to_le_bytes());
        self.out.extend_from_slice(&d.id.to_le_bytes());
        self.out.extend_from_slice(&d.flags.to_le_bytes());
    }

    pub fn ring_desc(&mut self, pos: u16, d: PDesc) -> &mut Self {
        self.out.push(OP_DESC);
        self.out.extend_from_slice(&pos.to_le_bytes());
        self.desc(d);
        self
    }

    pub fn indirect(&mut self, offset16: u16, ds: &[PDesc]) -> &mut Self {
        self.out.push(OP_INDIRECT);
        self.out.extend_from_slice(&offset16.to_le_bytes());
        self.out.push(u8::try_from(ds.len()).unwrap_or(0));
        for d in ds {
            self.desc(*d);
        }
        self
    }

    pub fn op(&mut self, op: u8, args: &[u8]) -> &mut Self {
        self.out.push(op);
        self.out.extend_from_slice(args);
        self
    }
}

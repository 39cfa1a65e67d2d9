//! A burst as the switch reads it: descriptor chains from a guest ([`ChainBurst`]) or bytes in
//! our own memory ([`ByteBurst`]), both behind [`Frames`], and the few header bytes
//! classification looks at ([`Header`]).

use vhost_user::virtq::{Chain, DeviceQueue, RxError, RxTally, Source, BURST};

use crate::eth::{self, EthHeader, Mac, HEADER_PEEK};

/// A burst of frames as the switch classifies and delivers it. Implementors are small `Copy`
/// handles passed by value, so that their fields live in registers through the per-frame loop.
pub(super) trait Frames: Copy {
    fn count(self) -> usize;
    /// Length and header of each frame, in order: what classification reads, as one pass.
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)>;
    /// Length of frame `i` (without any virtio-net header).
    fn frame_len(self, i: usize) -> usize;
    /// The switch's view of frame `i`'s header; `None` when it is shorter than one.
    fn header(self, i: usize) -> Option<Header>;
    /// Copies the first `out.len()` bytes of frame `i` into `out` (at most
    /// [`Frames::frame_len`]; fewer for a capture's snaplen).
    fn copy_to(self, i: usize, out: &mut [u8]);
    /// Places frames `idx` into a guest's receive queue (not flushed).
    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally);
}

/// A guest's transmit burst: chains, each behind a virtio-net header of `hdr` bytes.
#[derive(Clone, Copy)]
pub(super) struct ChainBurst<'a> {
    pub(super) chains: &'a [Chain],
    pub(super) hdr: usize,
}

impl Frames for ChainBurst<'_> {
    #[inline(always)]
    fn count(self) -> usize {
        self.chains.len()
    }

    #[inline(always)]
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)> {
        let hdr = self.hdr;
        // The queue refuses chains shorter than the header and an Ethernet header.
        self.chains
            .iter()
            .map(move |c| (c.len() - hdr, header_of(c, hdr)))
    }

    #[inline(always)]
    fn frame_len(self, i: usize) -> usize {
        // The queue refuses chains shorter than the header and an Ethernet header.
        self.chains[i].len() - self.hdr
    }

    #[inline(always)]
    fn header(self, i: usize) -> Option<Header> {
        header_of(&self.chains[i], self.hdr)
    }

    #[inline]
    fn copy_to(self, i: usize, out: &mut [u8]) {
        self.chains[i].read(self.hdr, out);
    }

    #[inline]
    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally) {
        q.enqueue_burst(idx.iter().map(|&j| &self.chains[j]), self.hdr, t);
    }
}

/// Frames as bytes in our own (device) memory.
pub(super) struct ByteBurst<'a> {
    frames: [&'a [u8]; BURST],
    n: usize,
}

impl<'a> ByteBurst<'a> {
    pub(super) fn new() -> Self {
        ByteBurst {
            frames: [&[]; BURST],
            n: 0,
        }
    }

    pub(super) fn push(&mut self, f: &'a [u8]) {
        if self.n < BURST {
            self.frames[self.n] = f;
            self.n += 1;
        }
    }
}

impl Frames for &ByteBurst<'_> {
    #[inline(always)]
    fn count(self) -> usize {
        self.n
    }

    #[inline(always)]
    fn heads(self) -> impl Iterator<Item = (usize, Option<Header>)> {
        self.frames[..self.n]
            .iter()
            .map(|f| (f.len(), header_of_bytes(f)))
    }

    #[inline(always)]
    fn frame_len(self, i: usize) -> usize {
        self.frames[i].len()
    }

    #[inline(always)]
    fn header(self, i: usize) -> Option<Header> {
        header_of_bytes(self.frames[i])
    }

    #[inline]
    fn copy_to(self, i: usize, out: &mut [u8]) {
        let f = self.frames[i];
        let n = f.len().min(out.len());
        out[..n].copy_from_slice(&f[..n]);
    }

    fn to_vhost(self, q: &mut DeviceQueue, idx: &[usize], t: &mut RxTally) {
        for (pos, &j) in idx.iter().enumerate() {
            let f = self.frames[j];
            match q.enqueue(Source::Bytes(f)) {
                Ok(()) => {
                    t.packets += 1;
                    t.bytes += f.len() as u64;
                }
                Err(RxError::NoBuffers) | Err(RxError::Broken) => {
                    // Out of buffers: the rest would find none either.
                    t.no_buffers += (idx.len() - pos) as u64;
                    break;
                }
                Err(RxError::BufferTooSmall) => t.too_small += 1,
                Err(RxError::BadChain) => t.bad_buffers += 1,
            }
        }
    }
}

/// What the switch reads of a frame's header, MACs as 48-bit words (byte 0 lowest, so bit 0 is
/// the group bit).
pub(super) struct Header {
    pub(super) dst: u64,
    pub(super) src: u64,
    pub(super) tagged: bool,
}

const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// The header from the frame's first 16 bytes as two little-endian words.
#[inline(always)]
fn header_of_words(w0: u64, w1: u64) -> Header {
    let et = u16::from_be(((w1 >> 32) & 0xffff) as u16);
    Header {
        dst: w0 & MAC_MASK,
        src: ((w0 >> 48) | (w1 << 16)) & MAC_MASK,
        tagged: et == eth::ETHERTYPE_VLAN || et == eth::ETHERTYPE_QINQ,
    }
}

/// The header of the frame in chain `c` after its `skip`-byte virtio-net header: two word loads
/// when it is contiguous (the usual case), the general parser otherwise.
#[inline(always)]
fn header_of(c: &Chain, skip: usize) -> Option<Header> {
    if let Some((w0, w1)) = c.head_words(skip) {
        return Some(header_of_words(w0, w1));
    }
    let (peek, got) = c.peek::<HEADER_PEEK>(skip);
    let h = EthHeader::parse(&peek[..got]).ok()?;
    Some(Header {
        dst: mac_word(h.dst),
        src: mac_word(h.src),
        tagged: h.is_tagged(),
    })
}

/// The header of a frame in our memory.
#[inline(always)]
fn header_of_bytes(f: &[u8]) -> Option<Header> {
    if let Some(b) = f.get(..16) {
        let w = |o: usize| {
            u64::from_le_bytes([
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
                b[o + 4],
                b[o + 5],
                b[o + 6],
                b[o + 7],
            ])
        };
        return Some(header_of_words(w(0), w(8)));
    }
    let h = EthHeader::parse(f).ok()?;
    Some(Header {
        dst: mac_word(h.dst),
        src: mac_word(h.src),
        tagged: h.is_tagged(),
    })
}

pub(super) fn mac_word(m: Mac) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

pub(super) fn mac_bytes(w: u64) -> Mac {
    let b = w.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

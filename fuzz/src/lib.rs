//! What the fuzz targets share with the seed generator (`examples/gen_seeds.rs`): the byte
//! reader that decodes a fuzz input, and the encodings of the structured inputs, so that seeds
//! are written with the same code that reads them.
//!
//! The targets are in `fuzz_targets/`; how to build and run them with a stable toolchain is in
//! `README.md`.

pub mod guarded;
pub mod packed_chains;

/// Reads little-endian integers and byte strings off the front of a fuzz input. Past the end it
/// reads zeros (and [`Reader::is_empty`] says so), so a decoder never has to handle a short
/// input specially.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Whether `FUZZ_TRACE` is set: targets then say on stderr what an input did (for checking
/// that seeds reach what they were written for; run with `-runs=0` on the seed folder).
pub fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// Open descriptors of this process (entries of `/proc/self/fd`, less the one `read_dir` holds).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// Input format of the `vhost_user_stream` target: a sequence of chunks, each
///
/// ```text
/// ctl: u8      low nibble: the operation (below); 0x10: 4 KiB memfds instead of 64 KiB;
///              0x20: raw (the bytes go on the socket as they are) instead of framed
/// len: u16 LE  number of payload bytes
/// payload      raw: `len` bytes; framed: request: u8, flags: u8, then a `len`-byte body sent
///              behind a header {request, flags, size = len}
/// ```
///
/// Operations: 0..=9 send the chunk with that many fresh memfds attached (SCM_RIGHTS);
/// [`stream::OP_POKE`] writes into a memfd sent earlier (`payload` = k: u8, offset: u16 LE,
/// bytes), as a guest writing its memory; [`stream::OP_SYNC`] waits until the backend has
/// handled everything sent so far and then polls every running queue once as the data plane
/// does; [`stream::OP_SHUTDOWN`] half-closes the socket (EOF, possibly inside a message) and
/// ends the input; 13..=15 send without descriptors.
pub mod stream {
    pub const OP_POKE: u8 = 10;
    pub const OP_SYNC: u8 = 11;
    pub const OP_SHUTDOWN: u8 = 12;
    pub const SMALL_MEMFD: u8 = 0x10;
    pub const RAW: u8 = 0x20;
    /// Size of a memfd: 64 KiB, or 4 KiB with [`SMALL_MEMFD`].
    pub const MEMFD_SIZE: u64 = 64 << 10;
    pub const SMALL_MEMFD_SIZE: u64 = 4 << 10;

    /// Encoder for seeds.
    #[derive(Default)]
    pub struct Builder {
        pub out: Vec<u8>,
    }

    impl Builder {
        fn chunk(&mut self, ctl: u8, payload: &[u8]) -> &mut Self {
            self.out.push(ctl);
            let len = u16::try_from(payload.len()).expect("chunk payload over 64 KiB");
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(payload);
            self
        }

        /// A framed message with `nfds` fresh 64 KiB memfds attached.
        pub fn msg(&mut self, request: u8, flags: u8, body: &[u8], nfds: u8) -> &mut Self {
            assert!(nfds <= 9);
            self.out.push(nfds);
            let len = u16::try_from(body.len()).expect("body over 64 KiB");
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.push(request);
            self.out.push(flags);
            self.out.extend_from_slice(body);
            self
        }

        /// Raw bytes on the socket with `nfds` memfds of 4 KiB (`small`) or 64 KiB attached.
        pub fn raw(&mut self, bytes: &[u8], nfds: u8, small: bool) -> &mut Self {
            assert!(nfds <= 9);
            let ctl = nfds | RAW | if small { SMALL_MEMFD } else { 0 };
            self.chunk(ctl, bytes)
        }

        /// Writes `bytes` at `offset` of the `k`-th memfd sent so far.
        pub fn poke(&mut self, k: u8, offset: u16, bytes: &[u8]) -> &mut Self {
            let mut p = vec![k];
            p.extend_from_slice(&offset.to_le_bytes());
            p.extend_from_slice(bytes);
            self.chunk(OP_POKE, &p)
        }

        pub fn sync(&mut self) -> &mut Self {
            self.chunk(OP_SYNC, &[])
        }

        pub fn shutdown(&mut self) -> &mut Self {
            self.chunk(OP_SHUTDOWN, &[])
        }
    }
}

/// Input format of the `descriptor_chains` target.
///
/// ```text
/// features: u8   bit 0 indirect, 1 mrg_rxbuf, 2 event_idx, 3 10-byte header (else 12),
///                4 call eventfd
/// per queue (A then B):
///   size_log2: u8 (mod 9: 1..=256 entries), desc: u16, avail: u16, used: u16 (ring offsets in
///   units of 16, 2 and 4 bytes, mod the memory size), base: u16, used_idx: u16 (written to
///   the ring before the device queue is built), avail_idx: u16
/// then operations until the input ends (at most MAX_OPS), each an opcode byte (mod OPS)
/// followed by its arguments, see `fuzz_targets/descriptor_chains.rs`.
/// ```
pub mod chains {
    /// Guest memory: two adjacent regions of half this size each.
    pub const MEM_SIZE: usize = 128 << 10;
    pub const MAX_OPS: usize = 512;

    pub const OP_DESC: u8 = 0;
    pub const OP_AVAIL: u8 = 1;
    pub const OP_AVAIL_IDX: u8 = 2;
    pub const OP_WRITE: u8 = 3;
    pub const OP_INDIRECT: u8 = 4;
    pub const OP_POP_TX: u8 = 5;
    pub const OP_ENQUEUE: u8 = 6;
    pub const OP_FLUSH: u8 = 7;
    pub const OP_FLAGS: u8 = 8;
    pub const OP_AVAILABLE: u8 = 9;
    pub const OPS: u8 = 10;

    pub const F_INDIRECT: u8 = 1;
    pub const F_MRG: u8 = 2;
    pub const F_EVENT_IDX: u8 = 4;
    pub const F_HDR10: u8 = 8;
    pub const F_CALL: u8 = 16;

    /// How a descriptor's address is encoded: a mode byte, then a u32 offset from the start of
    /// guest memory when the mode is below this, else a raw u64.
    pub const ADDR_RAW_MODE: u8 = 0xf0;

    /// One descriptor as the input encodes it.
    #[derive(Clone, Copy, Debug)]
    pub struct Desc {
        /// Offset into guest memory, or a raw guest-physical address with `raw`.
        pub addr: u64,
        pub raw: bool,
        pub len: u32,
        pub flags: u16,
        pub next: u16,
    }

    impl Desc {
        pub fn at(offset: u32, len: u32, flags: u16, next: u16) -> Self {
            Desc {
                addr: u64::from(offset),
                raw: false,
                len,
                flags,
                next,
            }
        }
    }

    #[derive(Clone, Copy, Debug)]
    pub struct QueueSpec {
        pub size_log2: u8,
        pub desc: u16,
        pub avail: u16,
        pub used: u16,
        pub base: u16,
        pub used_idx: u16,
        pub avail_idx: u16,
    }

    /// Encoder for seeds.
    pub struct Builder {
        pub out: Vec<u8>,
    }

    impl Builder {
        pub fn new(features: u8, a: QueueSpec, b: QueueSpec) -> Self {
            let mut out = vec![features];
            for q in [a, b] {
                out.push(q.size_log2);
                for v in [q.desc, q.avail, q.used, q.base, q.used_idx, q.avail_idx] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Builder { out }
        }

        fn desc_bytes(&mut self, d: Desc) {
            if d.raw {
                self.out.push(ADDR_RAW_MODE);
                self.out.extend_from_slice(&d.addr.to_le_bytes());
            } else {
                self.out.push(0);
                self.out
                    .extend_from_slice(&u32::try_from(d.addr).unwrap_or(0).to_le_bytes());
            }
            self.out.extend_from_slice(&d.len.to_le_bytes());
            self.out.extend_from_slice(&d.flags.to_le_bytes());
            self.out.extend_from_slice(&d.next.to_le_bytes());
        }

        pub fn desc(&mut self, q: u8, i: u16, d: Desc) -> &mut Self {
            self.out.extend_from_slice(&[OP_DESC, q]);
            self.out.extend_from_slice(&i.to_le_bytes());
            self.desc_bytes(d);
            self
        }

        /// Makes `head` available and publishes the driver's avail index.
        pub fn avail(&mut self, q: u8, head: u16) -> &mut Self {
            self.out.extend_from_slice(&[OP_AVAIL, q]);
            self.out.extend_from_slice(&head.to_le_bytes());
            self
        }

        pub fn avail_idx(&mut self, q: u8, idx: u16) -> &mut Self {
            self.out.extend_from_slice(&[OP_AVAIL_IDX, q]);
            self.out.extend_from_slice(&idx.to_le_bytes());
            self
        }

        pub fn write(&mut self, offset: u32, bytes: &[u8]) -> &mut Self {
            self.out.push(OP_WRITE);
            self.out.extend_from_slice(&offset.to_le_bytes());
            self.out
                .push(u8::try_from(bytes.len()).expect("write of over 255 bytes"));
            self.out.extend_from_slice(bytes);
            self
        }

        /// Writes `descs` as a table at `offset` and, in queue `q`'s slot `i`, an indirect
        /// descriptor pointing at it (of length `len`, or the table's when `len` is 0).
        pub fn indirect(
            &mut self,
            q: u8,
            i: u16,
            len: u8,
            offset: u32,
            descs: &[Desc],
        ) -> &mut Self {
            self.out.extend_from_slice(&[OP_INDIRECT, q]);
            self.out.extend_from_slice(&i.to_le_bytes());
            self.out.push(len);
            self.out.extend_from_slice(&offset.to_le_bytes());
            self.out
                .push(u8::try_from(descs.len()).expect("indirect table of over 255"));
            for d in descs {
                self.desc_bytes(*d);
            }
            self
        }

        /// Pops a burst from queue `q`, reads each chain at `read_off`, and forwards the burst
        /// into the other queue skipping `skip` bytes: not at all (`forward` 0), chain by chain
        /// with `enqueue` (1), with `enqueue_burst` as the PMD does (2), or with `available()`
        /// on the destination and then `enqueue_burst` (3).
        pub fn pop_tx(&mut self, q: u8, read_off: u16, forward: u8, skip: u8) -> &mut Self {
            self.out.extend_from_slice(&[OP_POP_TX, q]);
            self.out.extend_from_slice(&read_off.to_le_bytes());
            self.out.push(forward);
            self.out.push(skip);
            self
        }

        pub fn enqueue(&mut self, q: u8, len: u16) -> &mut Self {
            self.out.extend_from_slice(&[OP_ENQUEUE, q]);
            self.out.extend_from_slice(&len.to_le_bytes());
            self
        }

        pub fn flush(&mut self, q: u8) -> &mut Self {
            self.out.extend_from_slice(&[OP_FLUSH, q]);
            self
        }

        /// Sets avail flags (`which` even) or used_event (odd).
        pub fn flags(&mut self, q: u8, which: u8, v: u16) -> &mut Self {
            self.out.extend_from_slice(&[OP_FLAGS, q, which]);
            self.out.extend_from_slice(&v.to_le_bytes());
            self
        }

        pub fn available(&mut self, q: u8) -> &mut Self {
            self.out.extend_from_slice(&[OP_AVAILABLE, q]);
            self
        }
    }
}

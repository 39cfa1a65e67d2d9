//! A hostile device against the guest driver's receive (`vhost_user::driver::DriverQueue::recv`
//! and `reclaim`): what a fast-path peer writes into our dedicated receive queue in copy mode,
//! or a backend into any of our receive queues. Fuzz-chosen used entries (ids in and out of
//! range, ids never posted or returned twice, lengths up to and past the buffer), used-index
//! jumps (also more than a queue ahead) and buffer bytes (virtio-net headers with any
//! `num_buffers`), interleaved with receives of fuzz-chosen sizes, with a 12- or 10-byte header.
//! Half the runs receive as a copy-mode fast-path channel does, frames packed as records
//! (`DriverQueue::recv_records`, `vhost_user::records`): then the buffer bytes are record
//! length fields as much as frame bytes, and a buffer read part-way is held between receives.
//!
//! Oracles besides "no panic, no fault": a receive delivers at most `max` frames, each at most
//! the bytes of every buffer of the queue; after a receive every buffer it took back is posted
//! again (the free list is empty); a well-formed frame (written first) arrives intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_user::driver::{DriverMemory, DriverQueue, Received};
use vswitch_fuzz::{trace, Reader};

fn bytes_of(f: Received<'_>) -> Vec<u8> {
    match f {
        Received::Shared(b) => {
            let mut v = Vec::new();
            b.append_to(&mut v);
            v
        }
        Received::Gathered(b) => b.to_vec(),
    }
}

const SIZES: [u16; 3] = [8, 16, 64];
const BUFS: [u32; 3] = [64, 256, 2048];

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let size = SIZES[usize::from(r.u8()) % SIZES.len()];
    let buf = BUFS[usize::from(r.u8()) % BUFS.len()];
    let mode = r.u8();
    let hdr = if mode & 1 == 0 { 12 } else { 10 };
    let as_records = mode & 2 != 0;
    let mut mem = DriverMemory::new("fuzz-driver-rx", 1 << 20, false).expect("driver memory");
    let mut q = DriverQueue::new(&mut mem, size, buf, hdr).expect("queue");
    assert_eq!(q.refill_rx(), usize::from(size));
    let mut scratch = Vec::new();
    // First a well-behaved device: one frame in the first posted buffer arrives intact.
    let id = q.raw().avail_entry(0);
    let frame: Vec<u8> = (0..60u8).map(|b| b ^ r.u8()).collect();
    let mut b = vec![0u8; hdr];
    if hdr == 12 {
        b[10] = 1; // num_buffers
    }
    if as_records {
        vhost_user::records::push(&mut b, &frame);
    } else {
        b.extend_from_slice(&frame);
    }
    if b.len() <= buf as usize {
        mem.write(q.buf_gpa(id), &b).expect("inside the buffer");
        q.raw().set_used_elem(0, u32::from(id), b.len() as u32);
        q.raw().set_used_idx(1);
        let mut got = Vec::new();
        let n = if as_records {
            q.recv_records(8, &mut scratch, |f| got.push(bytes_of(f)))
        } else {
            q.recv(8, &mut scratch, |f| got.push(f.to_vec()))
        };
        assert_eq!(n, 1);
        assert_eq!(got, vec![frame], "a well-formed frame arrived changed");
        assert_eq!(q.errors, Default::default());
    } else {
        q.raw().set_used_elem(0, u32::from(id), 0);
        q.raw().set_used_idx(1);
        if as_records {
            q.recv_records(8, &mut scratch, |_| {});
        } else {
            q.recv(8, &mut scratch, |_| {});
        }
    }
    // Then whatever the input says. The device's side: the next used slot it writes.
    let mut next = 1u16;
    let most = size as usize * buf as usize;
    while !r.is_empty() {
        match r.u8() % 5 {
            0 => {
                // One used entry; ids mostly in range so frames form, sometimes not.
                let id = u32::from(r.u8()) % (u32::from(size) + 2);
                let len = match r.u8() % 4 {
                    0 => r.u32(),
                    _ => u32::from(r.u16()) % (buf + 16),
                };
                q.raw().set_used_elem(next, id, len);
                next = next.wrapping_add(1);
            }
            1 => q.raw().set_used_idx(next),
            2 => {
                // An index jump: entries never written, or more than a queue ahead.
                let jump = r.u16();
                next = next.wrapping_add(jump);
                q.raw().set_used_idx(next);
            }
            3 => {
                // Bytes into a buffer: headers with any num_buffers, frame bytes.
                let id = u16::from(r.u8()) % size;
                let off = u64::from(r.u16()) % u64::from(buf);
                let n = usize::from(r.u8() % 32);
                let bytes = r.bytes(n);
                let room = (u64::from(buf) - off) as usize;
                let bytes = &bytes[..bytes.len().min(room)];
                mem.write(q.buf_gpa(id) + off, bytes)
                    .expect("inside the buffer");
            }
            _ => {
                let max = 1 + usize::from(r.u8() % 80);
                let before = q.errors;
                let mut frames = 0usize;
                let mut check = |len: usize| {
                    frames += 1;
                    assert!(len <= most, "frame of {len} bytes from {most}");
                    assert!(len > 0 || !as_records, "an empty record was delivered");
                };
                let got = if as_records {
                    q.recv_records(max, &mut scratch, |f| check(bytes_of(f).len()))
                } else {
                    q.recv(max, &mut scratch, |f| check(f.len()))
                };
                assert_eq!(got, frames);
                assert!(got <= max, "{got} frames for a receive of at most {max}");
                assert_eq!(q.free_count(), 0, "a returned buffer was not posted again");
                if trace() {
                    eprintln!(
                        "recv(max {max}) -> {got} frames; errors {:?} (before {before:?})",
                        q.errors
                    );
                }
            }
        }
    }
});

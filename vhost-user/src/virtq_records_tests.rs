//! Frames as records ([`crate::records`]): the device side packing them
//! ([`DeviceQueue::enqueue_records`]) and the driver side reading them
//! ([`DriverQueue::recv_records`]), against each other and against a hostile other side.
//! Negative tests are named after the bad input.

use super::*;
use crate::records;

fn recv_all(r: &mut Rig, max: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut scratch = Vec::new();
    r.drv
        .recv_records(max, &mut scratch, |rx| got.push(bytes_of(rx)));
    got
}

fn bytes_of(rx: crate::driver::Received<'_>) -> Vec<u8> {
    match rx {
        crate::driver::Received::Shared(b) => {
            let mut v = Vec::new();
            b.append_to(&mut v);
            v
        }
        crate::driver::Received::Gathered(b) => b.to_vec(),
    }
}

/// Places `frames` as records and publishes them.
fn place(r: &mut Rig, frames: &[Vec<u8>]) -> RxTally {
    let mut t = RxTally::default();
    r.dev.enqueue_records(frames, &mut t);
    r.dev.flush();
    t
}

fn rx_rig(size: u16, buf: u32, mrg: bool) -> Rig {
    let mut r = rig_with(size, buf, features(false, mrg, false));
    r.drv.refill_rx();
    r
}

#[test]
fn records_pack_many_frames_per_buffer_and_arrive_intact_in_order() {
    let mut r = rx_rig(64, 2048, true);
    let frames: Vec<_> = (0..300).map(|i| frame(60 + i % 40, i as u8)).collect();
    let t = place(&mut r, &frames);
    assert_eq!(t.packets, 300);
    assert_eq!(t.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
    // 2036 bytes after the header hold 20..30 records of 62..101 bytes.
    assert!(
        t.buffers <= 300 / 19,
        "{} buffers for 300 frames",
        t.buffers
    );
    assert_eq!(u64::from(r.drv.raw().used_idx()), t.buffers);
    assert_eq!(recv_all(&mut r, 1000), frames);
    assert_eq!(r.drv.errors, Default::default());
    assert_eq!(r.drv.free_count(), 0, "every buffer posted again");
}

#[test]
fn recv_records_takes_exactly_max_and_resumes_inside_a_buffer() {
    let mut r = rx_rig(16, 2048, true);
    let frames: Vec<_> = (0..100).map(|i| frame(64, i as u8)).collect();
    assert_eq!(place(&mut r, &frames).packets, 100);
    let mut got = Vec::new();
    loop {
        let part = recv_all(&mut r, 7);
        assert!(part.len() <= 7);
        if part.is_empty() {
            break;
        }
        got.extend(part);
    }
    assert_eq!(got, frames);
    // A buffer read part-way is held, not reposted; once read, all are posted.
    assert_eq!(r.drv.free_count(), 0);
}

#[test]
fn records_jumbo_frame_spans_mergeable_buffers_between_packed_ones() {
    let mut r = rx_rig(64, 2048, true);
    let frames = vec![frame(100, 1), frame(5000, 2), frame(100, 3), frame(9000, 4)];
    let t = place(&mut r, &frames);
    assert_eq!(t.packets, 4);
    assert_eq!(recv_all(&mut r, 10), frames);
    assert_eq!(r.drv.errors, Default::default());
}

#[test]
fn test_records_jumbo_frame_without_mrg_rxbuf() {
    let mut r = rx_rig(64, 2048, false);
    let frames = vec![frame(100, 1), frame(5000, 2), frame(100, 3)];
    let t = place(&mut r, &frames);
    assert_eq!((t.packets, t.too_small), (2, 1));
    assert_eq!(
        recv_all(&mut r, 10),
        vec![frames[0].clone(), frames[2].clone()]
    );
}

#[test]
fn test_records_empty_frame() {
    let mut r = rx_rig(64, 2048, true);
    let frames = vec![frame(60, 1), Vec::new(), frame(60, 3)];
    let t = place(&mut r, &frames);
    assert_eq!((t.packets, t.too_small), (2, 1));
    assert_eq!(
        recv_all(&mut r, 10),
        vec![frames[0].clone(), frames[2].clone()]
    );
}

#[test]
fn test_records_run_out_of_buffers() {
    let mut r = rx_rig(2, 256, true);
    // 244 bytes per buffer: 3 records of 66 bytes each, 6 frames in two buffers.
    let frames: Vec<_> = (0..10).map(|i| frame(64, i as u8)).collect();
    let t = place(&mut r, &frames);
    assert_eq!((t.packets, t.no_buffers, t.buffers), (6, 4, 2));
    assert_eq!(recv_all(&mut r, 10), frames[..6].to_vec());
}

#[test]
fn test_records_bad_receive_descriptor_midway() {
    let mut r = rig_with(64, 256, features(false, true, false));
    // Buffers 0, 1 good; 2 unmapped; 3 device-readable; 4.. good.
    for id in 0..8u16 {
        let addr = if id == 2 { 0x10 } else { r.drv.buf_gpa(id) };
        let flags = if id == 3 { 0 } else { VRING_DESC_F_WRITE };
        r.drv.raw().write_desc(
            id,
            Descriptor {
                addr,
                len: 256,
                flags,
                next: 0,
            },
        );
        r.drv.push_avail(id);
    }
    r.drv.publish();
    let frames: Vec<_> = (0..12).map(|i| frame(64, i as u8)).collect();
    let t = place(&mut r, &frames);
    assert_eq!(t.bad_buffers, 2, "{t:?}");
    assert_eq!(r.dev.counters().get(ChainError::AddressUnmapped), 1);
    assert_eq!(r.dev.counters().get(ChainError::WrongDirection), 1);
    // Each bad buffer cost the one frame that went to it; the rest were packed into 0, 1, 4, 5.
    assert_eq!(t.packets, 10);
    let used: Vec<_> = (0..6).map(|i| r.drv.raw().used_elem(i)).collect();
    assert_eq!(used[2], (2, 0));
    assert_eq!(used[3], (3, 0));
}

/// The driver side against a hostile device: used entries and buffer bytes written by hand.
mod hostile_device {
    use super::*;

    /// Writes `payload` behind a one-buffer header into the first posted buffer, returns it used
    /// with length `used_len` (None: the bytes written) and receives.
    fn deliver(payload: &[u8], used_len: Option<u32>) -> (Rig, Vec<Vec<u8>>) {
        deliver_as(1, payload, used_len)
    }

    /// [`deliver`] behind a header that says `num_buffers`.
    fn deliver_as(num_buffers: u16, payload: &[u8], used_len: Option<u32>) -> (Rig, Vec<Vec<u8>>) {
        let mut r = rx_rig(8, 2048, true);
        let id = r.drv.raw().avail_entry(0);
        let mut b = crate::net::rx_header(num_buffers).to_vec();
        b.extend_from_slice(payload);
        r.mem.write(r.drv.buf_gpa(id), &b).unwrap();
        let len = used_len.unwrap_or(b.len() as u32);
        r.drv.raw().set_used_elem(0, u32::from(id), len);
        r.drv.raw().set_used_idx(1);
        let got = recv_all(&mut r, 100);
        assert_eq!(r.drv.free_count(), 0, "the buffer went back to the device");
        (r, got)
    }

    fn recs(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            records::push(&mut v, f);
        }
        v
    }

    #[test]
    fn test_device_record_length_zero() {
        let mut p = recs(&[&[1; 20]]);
        p.extend_from_slice(&[0, 0]);
        p.extend(recs(&[&[2; 20]]));
        let (r, got) = deliver(&p, None);
        assert_eq!(got, vec![vec![1; 20]], "records before the bad one only");
        assert_eq!(r.drv.errors.bad_record, 1);
    }

    #[test]
    fn test_device_record_past_used_length() {
        let p = recs(&[&[1; 20], &[2; 40]]);
        // The used length cuts the second record short.
        let (r, got) = deliver(&p, Some((12 + p.len() - 5) as u32));
        assert_eq!(got, vec![vec![1; 20]]);
        assert_eq!(r.drv.errors.bad_record, 1);
    }

    #[test]
    fn test_device_record_length_field_cut_off() {
        let p = recs(&[&[1; 20]]);
        let (r, got) = deliver(&p, Some((12 + p.len() + 1) as u32));
        assert_eq!(got.len(), 1);
        assert_eq!(r.drv.errors.bad_record, 1);
    }

    #[test]
    fn test_device_used_length_shorter_than_header() {
        let (r, got) = deliver(&recs(&[&[1; 20]]), Some(5));
        assert!(got.is_empty());
        assert_eq!(r.drv.errors.bad_rx_header, 1);
    }

    #[test]
    fn test_device_used_length_past_buffer() {
        let (r, got) = deliver(&recs(&[&[1; 20]]), Some(4096));
        assert!(got.is_empty());
        assert_eq!(r.drv.errors.bad_used_len, 1);
    }

    #[test]
    fn test_device_merged_packet_with_two_records() {
        let mut r = rx_rig(8, 2048, true);
        // num_buffers 2: buffer A holds the header and records, buffer B more bytes.
        let (a, b) = (r.drv.raw().avail_entry(0), r.drv.raw().avail_entry(1));
        let mut bytes = crate::net::rx_header(2).to_vec();
        bytes.extend(recs(&[&[1; 20], &[2; 20]]));
        r.mem.write(r.drv.buf_gpa(a), &bytes).unwrap();
        r.mem.write(r.drv.buf_gpa(b), &[3; 30]).unwrap();
        r.drv
            .raw()
            .set_used_elem(0, u32::from(a), bytes.len() as u32);
        r.drv.raw().set_used_elem(1, u32::from(b), 30);
        r.drv.raw().set_used_idx(2);
        assert!(recv_all(&mut r, 10).is_empty());
        assert_eq!(r.drv.errors.bad_record, 1);
        assert_eq!(r.drv.free_count(), 0, "both buffers posted again");
    }

    #[test]
    fn test_device_merged_packet_missing_its_last_buffer() {
        let (r, got) = deliver_as(3, &recs(&[&[1; 20]]), None);
        assert!(got.is_empty());
        assert_eq!(r.drv.errors.bad_rx_header, 1);
    }

    #[test]
    fn test_device_num_buffers_zero() {
        let (r, got) = deliver_as(0, &recs(&[&[1; 20]]), None);
        assert!(got.is_empty());
        assert_eq!(r.drv.errors.bad_rx_header, 1);
    }
}

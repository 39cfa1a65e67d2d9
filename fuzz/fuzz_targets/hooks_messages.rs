//! What a fast-path guest sends the hooks authority (`hypervisor-hooks`): frames on the hooks
//! socket (`Wire::recv`: a length, JSON, descriptors), the `GuestMsg` JSON inside them, the MAC
//! strings in those messages, and the guest's own code and mapping list that trampoline
//! verification scans (`verify::scan`, `verify::executable_mappings`).
//!
//! Oracles: a message that parses re-encodes to an equal message; a parsed MAC prints back as
//! its input; `scan` reports exactly the offsets a plain reference scan finds; the frame reader
//! returns each frame at most once and stops at the end of the stream.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use hypervisor_hooks::proto::{format_mac, parse_mac, GuestMsg, HooksMsg};
use hypervisor_hooks::verify::{executable_mappings, scan, Pattern};
use hypervisor_hooks::wire::Wire;
use libfuzzer_sys::fuzz_target;

/// The patterns, spelled out independently of `verify::scan`.
fn reference_scan(code: &[u8]) -> Vec<(usize, Pattern)> {
    code.windows(3)
        .enumerate()
        .filter_map(|(i, w)| {
            let (reg, mem) = ((w[2] >> 3) & 7, w[2] < 0xc0);
            match (w[0], w[1]) {
                (0x0f, 0x01) if w[2] == 0xef => Some((i, Pattern::Wrpkru)),
                (0x0f, 0xae) if reg == 5 && mem => Some((i, Pattern::Xrstor)),
                (0x0f, 0xc7) if reg == 3 && mem => Some((i, Pattern::Xrstor)),
                _ => None,
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<GuestMsg>(data) {
        let again: GuestMsg = serde_json::from_slice(&serde_json::to_vec(&m).expect("encode"))
            .expect("a message we encoded must parse");
        assert_eq!(again, m);
    }
    if let Ok(m) = serde_json::from_slice::<HooksMsg>(data) {
        let again: HooksMsg = serde_json::from_slice(&serde_json::to_vec(&m).expect("encode"))
            .expect("a message we encoded must parse");
        assert_eq!(again, m);
    }

    let text = String::from_utf8_lossy(data);
    if let Some(mac) = parse_mac(&text) {
        assert!(format_mac(mac).eq_ignore_ascii_case(&text), "{text:?}");
    }
    for m in executable_mappings(&text) {
        let _ = m.end.checked_sub(m.start);
    }

    assert_eq!(scan(data), reference_scan(data));

    // The same bytes as a stream on the hooks socket. libFuzzer inputs are far smaller than the
    // socket buffer, so one thread writes everything, closes, and then reads.
    let (a, b) = UnixStream::pair().expect("socketpair");
    (&a).write_all(data).expect("write");
    drop(a);
    let mut w = Wire::new(b);
    let mut frames = 0usize;
    while let Ok(Some((_, fds))) = w.recv::<GuestMsg>() {
        assert!(fds.is_empty());
        frames += 1;
        // Every frame takes at least its 4-byte length.
        assert!(
            frames * 4 <= data.len(),
            "more frames than the stream holds"
        );
    }
});

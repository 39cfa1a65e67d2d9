//! A whole vhost-user byte stream, with descriptors attached, fed to the backend state machine
//! (`Backend::serve` over a `Connection`) through a socket pair, as a hostile frontend would.
//!
//! The input is a list of chunks (format: `vswitch_fuzz::stream`): framed messages or raw bytes,
//! each with 0..=9 fresh memfds attached, writes into those memfds (a guest changing its
//! memory), and sync points where the harness waits for the backend to catch up and then polls
//! every running queue pair once, as a PMD thread would (TX burst delivered into the RX queue),
//! over whatever rings the input set up.
//!
//! The backend runs in its own thread; this side never blocks without a deadline (non-blocking
//! socket, `poll` with a timeout), reads every reply as it comes, and closes its end at the end
//! of the input so that `serve` returns.
//!
//! Oracles besides "no panic, no fault, no hang": every reply is a well-formed reply header with
//! a payload within bounds; when `serve` has returned, no queue is left running or installed;
//! and the process has exactly the descriptors it had before the input (nothing the frontend
//! sent, nor anything the backend opened, leaks).
#![no_main]

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags};
use vhost_user::backend::{Backend, BackendConfig, QueueSlot};
use vhost_user::connection::Connection;
use vhost_user::message::{Header, Request, HEADER_SIZE, MAX_PAYLOAD, VERSION};
use vhost_user::mmap::create_memfd;
use vhost_user::virtq::{RxTally, Source};
use vswitch_fuzz::stream::*;
use vswitch_fuzz::{open_fds, trace, Reader};

/// Longest the harness waits for the backend, per input. A backend that neither answers nor
/// reads for this long is hung; the harness panics so the input is kept.
const DEADLINE: Duration = Duration::from_secs(10);
/// Memfds one input may create (the process's descriptor table is shared with the backend).
const MAX_MEMFDS: usize = 64;
const QUEUE_PAIRS: u16 = 2;
const SYNC_REQUEST: Request = Request::GET_QUEUE_NUM;

/// Follows the framing of what we send, as the backend will parse it, to know when the stream
/// is between messages and how many `GET_QUEUE_NUM` replies are due.
#[derive(Default)]
struct Mirror {
    hdr: Vec<u8>,
    body_left: usize,
    /// The backend will close the connection at a header it cannot parse.
    broken: bool,
    /// Well-formed `GET_QUEUE_NUM` requests sent: each gets a reply, or (with descriptors
    /// attached) closes the connection.
    sync_due: usize,
}

impl Mirror {
    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() && !self.broken {
            if self.body_left > 0 {
                let k = self.body_left.min(b.len());
                self.body_left -= k;
                b = &b[k..];
                continue;
            }
            let k = (HEADER_SIZE - self.hdr.len()).min(b.len());
            self.hdr.extend_from_slice(&b[..k]);
            b = &b[k..];
            if self.hdr.len() == HEADER_SIZE {
                let hb: [u8; HEADER_SIZE] = self.hdr[..].try_into().expect("12 bytes");
                match Header::parse(&hb) {
                    Ok(h) => {
                        self.body_left = h.size as usize;
                        if h.request == SYNC_REQUEST as u32 && !h.is_reply() {
                            self.sync_due += 1;
                        }
                    }
                    Err(_) => self.broken = true,
                }
                self.hdr.clear();
            }
        }
    }

    fn at_boundary(&self) -> bool {
        !self.broken && self.hdr.is_empty() && self.body_left == 0
    }
}

/// The frontend side of the socket pair.
struct Peer {
    sock: UnixStream,
    rx: Vec<u8>,
    sync_replies: usize,
    /// The backend closed its end (or the socket failed): nothing more can be sent.
    closed: bool,
    deadline: Instant,
    mirror: Mirror,
}

impl Peer {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn wait(&self, events: PollFlags) {
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "backend neither read nor answered for {DEADLINE:?}: hung"
        );
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.sock.as_fd(), events)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    /// Reads whatever the backend has sent and checks every complete reply.
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match recv(self.fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut at = 0;
        while self.rx.len() - at >= HEADER_SIZE {
            let hb: [u8; HEADER_SIZE] = self.rx[at..at + HEADER_SIZE].try_into().expect("12");
            let h = Header::parse(&hb)
                .unwrap_or_else(|e| panic!("backend sent a bad header {hb:?}: {e}"));
            assert!(
                h.is_reply() && !h.need_reply(),
                "backend sent a non-reply {h:?}"
            );
            assert_eq!(h.flags, VERSION | vhost_user::message::FLAG_REPLY, "{h:?}");
            assert!(h.size as usize <= MAX_PAYLOAD);
            let end = at + HEADER_SIZE + h.size as usize;
            if self.rx.len() < end {
                break;
            }
            if h.request == SYNC_REQUEST as u32 {
                assert_eq!(h.size, 8, "GET_QUEUE_NUM reply size");
                self.sync_replies += 1;
            }
            at = end;
        }
        self.rx.drain(..at);
    }

    /// Sends `bytes` with `fds` attached to the first byte.
    fn send(&mut self, bytes: &[u8], fds: &[RawFd]) {
        let mut off = 0;
        while off < bytes.len() && !self.closed {
            let iov = [IoSlice::new(&bytes[off..])];
            let rights = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage] = if off == 0 && !fds.is_empty() {
                &rights
            } else {
                &[]
            };
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(self.fd(), &iov, cmsgs, flags, None) {
                Ok(n) => {
                    self.mirror.feed(&bytes[off..off + n]);
                    off += n;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    // The backend is behind; it may be waiting for us to read its replies.
                    self.pump();
                    self.wait(PollFlags::POLLOUT | PollFlags::POLLIN);
                }
                Err(_) => self.closed = true,
            }
        }
        self.pump();
    }

    /// Waits until the backend has handled everything sent so far. False when that cannot be
    /// known (the stream is inside a message, or the connection is gone).
    fn sync(&mut self) -> bool {
        if self.closed || !self.mirror.at_boundary() {
            return false;
        }
        let h = Header::request(SYNC_REQUEST, 0, false);
        self.send(&h.to_bytes(), &[]);
        loop {
            self.pump();
            if self.closed {
                return false;
            }
            if self.sync_replies >= self.mirror.sync_due {
                return true;
            }
            self.wait(PollFlags::POLLIN);
        }
    }
}

fn frame() -> &'static [u8] {
    static F: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let mut f: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        f
    })
}

/// One data-plane pass over a queue pair, as a PMD thread does it: a TX burst from queue 2k+1
/// delivered into queue 2k, then a frame of our own into queue 2k.
fn poll_data_plane(slots: &[QueueSlot]) {
    for pair in slots.chunks(2) {
        let (Some(mut rxg), Some(mut txg)) = (pair[0].try_lock(), pair[1].try_lock()) else {
            continue;
        };
        if let Some(tx) = txg.as_mut() {
            let hdr = tx.features().hdr_len;
            let n = tx.pop_tx_burst();
            if trace() {
                eprintln!("  tx burst of {n}");
            }
            for c in tx.burst() {
                let mut b = [0u8; 64];
                assert_eq!(c.read(0, &mut b), c.len().min(64));
                let _ = c.peek::<18>(hdr);
                let _ = c.head_words(hdr);
            }
            if let Some(rx) = rxg.as_mut() {
                let mut t = RxTally::default();
                rx.enqueue_burst(tx.burst().iter(), hdr, &mut t);
                if trace() {
                    eprintln!("  delivered: {t:?}");
                }
            }
            tx.complete_burst();
        }
        if let Some(rx) = rxg.as_mut() {
            let a = rx.enqueue(Source::Bytes(frame()));
            let b = rx.enqueue(Source::Bytes(&frame()[..60]));
            if trace() {
                eprintln!("  rx enqueue: {a:?} {b:?}");
            }
            rx.flush();
        }
    }
}

fn run(data: &[u8]) {
    let fds_before = open_fds();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_nonblocking(true).expect("nonblocking");
    let slots = Backend::make_slots(QUEUE_PAIRS);
    let backend_slots = slots.clone();
    let backend = std::thread::spawn(move || {
        let cfg = BackendConfig {
            queue_pairs: QUEUE_PAIRS,
            ..BackendConfig::default()
        };
        let mut be = Backend::new(cfg, backend_slots);
        let mut conn = Connection::new(theirs);
        let _ = be.serve(&mut conn);
    });
    let mut peer = Peer {
        sock: ours,
        rx: Vec::new(),
        sync_replies: 0,
        closed: false,
        deadline: Instant::now() + DEADLINE,
        mirror: Mirror::default(),
    };
    let mut memfds: Vec<(File, u64)> = Vec::new();
    let mut created = 0usize;
    let mut r = Reader::new(data);
    while !r.is_empty() && !peer.closed {
        let ctl = r.u8();
        let len = usize::from(r.u16());
        let op = ctl & 0x0f;
        match op {
            OP_POKE => {
                let p = r.bytes(len);
                if memfds.is_empty() || p.len() < 3 {
                    continue;
                }
                let (f, size) = &memfds[usize::from(p[0]) % memfds.len()];
                let off = u64::from(u16::from_le_bytes([p[1], p[2]]));
                let room = size.saturating_sub(off) as usize;
                let b = &p[3..];
                let _ = f.write_at(&b[..b.len().min(room)], off);
            }
            OP_SYNC => {
                r.bytes(len);
                let synced = peer.sync();
                if trace() {
                    let running: Vec<bool> = slots.iter().map(|s| s.is_running()).collect();
                    eprintln!("sync: {synced}, running {running:?}");
                }
                if synced {
                    poll_data_plane(&slots);
                }
            }
            OP_SHUTDOWN => {
                let _ = peer.sock.shutdown(std::net::Shutdown::Write);
                break;
            }
            _ => {
                let nfds = if op <= 9 { usize::from(op) } else { 0 };
                let bytes = if ctl & RAW != 0 {
                    r.bytes(len).to_vec()
                } else {
                    let request = u32::from(r.u8());
                    let flags = u32::from(r.u8());
                    let body = r.bytes(len);
                    let h = Header {
                        request,
                        flags,
                        size: u32::try_from(body.len()).unwrap_or(u32::MAX),
                    };
                    let mut v = h.to_bytes().to_vec();
                    v.extend_from_slice(body);
                    v
                };
                let size = if ctl & SMALL_MEMFD != 0 {
                    SMALL_MEMFD_SIZE
                } else {
                    MEMFD_SIZE
                };
                let mut raw = Vec::new();
                for _ in 0..nfds {
                    if created == MAX_MEMFDS {
                        break;
                    }
                    created += 1;
                    let f = File::from(create_memfd("fuzz-vu", size, false).expect("memfd"));
                    raw.push(f.as_raw_fd());
                    memfds.push((f, size));
                }
                peer.send(&bytes, &raw[..]);
            }
        }
    }
    if trace() {
        eprintln!(
            "end: {} sync replies, closed {}, {} memfds",
            peer.sync_replies, peer.closed, created
        );
    }
    // Whatever the input did, the backend must come back once the frontend is gone.
    drop(peer);
    drop(memfds);
    backend.join().expect("backend thread");
    for (i, s) in slots.iter().enumerate() {
        assert!(
            !s.is_running(),
            "queue {i} still running after serve returned"
        );
        let g = s.try_lock().expect("slot lock free after serve");
        assert!(
            g.is_none(),
            "queue {i} still installed after serve returned"
        );
    }
    drop(slots);
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
}

fuzz_target!(
    init: {
        frame();
    },
    |data: &[u8]| run(data)
);

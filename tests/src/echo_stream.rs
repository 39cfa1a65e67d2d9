//! A sequenced ICMP echo stream, for tests that must see whether a guest's receive buffers hold
//! what the switch wrote into them (live migration: a page the switch wrote but did not mark in
//! the dirty log reaches the destination stale).
//!
//! The source is an in-process virtio-net guest ([`vhost_user::guest::Guest`]) on a port of the
//! switch. It sends echo requests at a steady rate, each carrying a sequence number and a
//! payload derived from it, to a guest that answers pings; the answering kernel copies the
//! request's payload into its reply, so what it read from its receive buffer comes back on the
//! wire. Every reply is checked against what was sent for its sequence ([`check_reply`]), and
//! [`Log`] keeps when each request went out and each reply came back, for [`Log::analyse`].
//! The source answers ARP for its own address, and finds the peer with ARP requests first
//! (which also gives the peer a neighbour entry for us).
//!
//! A request can go as two IPv4 fragments, the second sent a while after the first
//! ([`StreamConfig::split`]): the first then waits in the peer's reassembly queue, its bytes
//! still in the receive buffer the switch wrote, so at any moment (a migration's switchover
//! included) the peer holds data it has not yet copied anywhere. The payload's words are all
//! 0x0000 or 0xffff, which add nothing to a checksum: a datagram reassembled from a stale
//! fragment still passes the peer's checks and comes back, visibly wrong ([`payload`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost_user::guest::{Guest, GuestConfig};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// The ICMP identifier of our requests.
const ICMP_ID: u16 = 0x4e46;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
/// Ethernet + IPv4 (no options) + ICMP echo header.
const HEADERS: usize = 14 + 20 + 8;
/// Bytes of payload that carry the 64-bit sequence number, one bit per 16-bit word (the rest
/// is derived from it).
const SEQ_BYTES: usize = 128;
/// How long a reply may take to come back once the stream stops sending.
const DRAIN: Duration = Duration::from_secs(2);
const ARP_PROBE_EVERY: Duration = Duration::from_millis(250);

/// Who talks to whom, and how fast.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub peer_ip: [u8; 4],
    /// Echo requests per second.
    pub rate: u32,
    /// Requests sent back to back each time the stream is due (the rest of the time it only
    /// receives): bursts leave frames waiting in the peer's receive ring.
    pub burst: u32,
    /// ICMP payload bytes (even, at least 128: the sequence number).
    pub payload_len: usize,
    /// `Some(n)`: each request goes as two IPv4 fragments, the first with `n` bytes of the
    /// ICMP message (a multiple of 8), the second `hold` bursts later: meanwhile the first
    /// waits in the peer's reassembly queue, its bytes in the receive buffer the switch wrote.
    pub split: Option<usize>,
    pub hold: u32,
}

/// What the stream has seen so far.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// When the peer first answered our ARP request.
    pub peer_up: Option<Instant>,
    /// When request `seq` went out (its last fragment), by `seq`.
    pub sent: Vec<Instant>,
    /// Replies in the order they arrived.
    pub replies: Vec<Reply>,
    /// ARP requests for our address we answered.
    pub arp_answered: u64,
    /// Frames that were neither replies, ARP nor for someone else (announcements, IPv6).
    pub ignored: u64,
}

/// One echo reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The sequence number it carries (from the payload, or the ICMP header when the payload
    /// is too short to hold one).
    pub seq: u64,
    pub at: Instant,
    /// What is wrong with it: corrupted payload, mismatched sequence, bad checksum.
    pub fault: Option<String>,
}

/// A running stream; [`EchoStream::finish`] stops it and returns the full log.
pub struct EchoStream {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl EchoStream {
    /// Connects a guest to the switch's port socket `socket` and starts the stream's thread:
    /// ARP for the peer until it answers, then the echo stream.
    pub fn start(socket: &std::path::Path, cfg: StreamConfig) -> EchoStream {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, sock) = (log.clone(), stop.clone(), socket.to_path_buf());
        let thread = std::thread::spawn(move || run(&sock, &cfg, &l, &s));
        EchoStream {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of the log so far.
    pub fn snapshot(&self) -> Log {
        lock(&self.log).clone()
    }

    /// The stream's thread ended (an error, or a panic) before it was told to stop.
    pub fn failed(&mut self) -> Option<String> {
        if !self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        Some(join(self.thread.take()))
    }

    /// Stops sending, waits for the replies still on their way, and returns the log.
    pub fn finish(mut self) -> Result<Log, String> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take();
        match thread.map(|t| t.join()) {
            Some(Ok(Ok(()))) => Ok(lock(&self.log).clone()),
            other => Err(join_outcome(other)),
        }
    }
}

impl Drop for EchoStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<Log>) -> MutexGuard<'_, Log> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn join(t: Option<JoinHandle<Result<(), String>>>) -> String {
    join_outcome(t.map(|t| t.join()))
}

fn join_outcome(r: Option<std::thread::Result<Result<(), String>>>) -> String {
    match r {
        Some(Ok(Ok(()))) => "the echo stream ended before it was stopped".into(),
        Some(Ok(Err(e))) => format!("echo stream: {e}"),
        Some(Err(_)) => "the echo stream's thread panicked".into(),
        None => "the echo stream was already joined".into(),
    }
}

/// The stream's thread: connect, find the peer, send and check until told to stop, drain.
fn run(
    socket: &std::path::Path,
    cfg: &StreamConfig,
    log: &Mutex<Log>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let gcfg = GuestConfig {
        name: "echo-stream".into(),
        ..GuestConfig::default()
    };
    let mut g = Guest::connect(socket, &gcfg)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let mut scratch = Vec::new();
    let mut rx: Vec<Vec<u8>> = Vec::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut peer_mac = None;
    let mut last_probe: Option<Instant> = None;
    let mut next_seq = 0u64;
    let mut t0 = None;
    let mut stopped_at = None;
    // Second fragments waiting for their burst: (burst, seq, frame).
    let mut held: VecDeque<(u64, u64, Vec<u8>)> = VecDeque::new();
    let burst = u64::from(cfg.burst.max(1));
    let period = Duration::from_secs_f64(f64::from(cfg.burst) / f64::from(cfg.rate.max(1)));
    loop {
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(Instant::now());
            release(&mut held, u64::MAX, &mut out, &mut lock(log).sent);
        }
        if stopped_at.is_some_and(|s| s.elapsed() > DRAIN) {
            return Ok(());
        }
        rx.clear();
        g.rx.recv(usize::MAX, &mut scratch, |f| rx.push(f.to_vec()));
        let now = Instant::now();
        {
            let mut l = lock(log);
            for f in &rx {
                if let Some(mac) = arp_reply_from(f, cfg.peer_ip, cfg.ip) {
                    if peer_mac.is_none() {
                        l.peer_up = Some(now);
                    }
                    peer_mac = Some(mac);
                } else if let Some(answer) = arp_answer(f, cfg.mac, cfg.ip) {
                    out.push(answer);
                    l.arp_answered += 1;
                } else if let Some(r) = check_reply(f, cfg, now) {
                    l.replies.push(r);
                } else {
                    l.ignored += 1;
                }
            }
        }
        match (peer_mac, stopped_at) {
            (None, None) if last_probe.is_none_or(|p| p.elapsed() >= ARP_PROBE_EVERY) => {
                out.push(arp_request(cfg.mac, cfg.ip, cfg.peer_ip));
                last_probe = Some(now);
            }
            (Some(peer), None) => {
                let start = *t0.get_or_insert(now);
                // Requests of burst k are due at start + k * period.
                let k = next_seq / burst;
                if now >= start + period.mul_f64(k as f64) {
                    let mut l = lock(log);
                    let upto = k.saturating_sub(u64::from(cfg.hold));
                    release(&mut held, upto, &mut out, &mut l.sent);
                    for _ in 0..burst {
                        let mut frames = echo_request(cfg, peer, next_seq).into_iter();
                        out.extend(frames.next());
                        held.extend(frames.map(|f| (k, next_seq, f)));
                        l.sent.push(now);
                        next_seq += 1;
                    }
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            send_all(&mut g, &out)?;
            out.clear();
        } else if rx.is_empty() {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Moves the held second fragments of bursts up to `upto` to `out`; their requests count as
/// sent now.
fn release(
    held: &mut VecDeque<(u64, u64, Vec<u8>)>,
    upto: u64,
    out: &mut Vec<Vec<u8>>,
    sent: &mut [Instant],
) {
    let now = Instant::now();
    while held.front().is_some_and(|h| h.0 <= upto) {
        let Some((_, seq, f)) = held.pop_front() else {
            break;
        };
        out.push(f);
        if let Some(t) = usize::try_from(seq).ok().and_then(|s| sent.get_mut(s)) {
            *t = now;
        }
    }
}

/// Transmits `frames`; the switch polls our transmit queue, so a full queue empties soon.
fn send_all(g: &mut Guest, frames: &[Vec<u8>]) -> Result<(), String> {
    for f in frames {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !g.tx.push_tx(f) {
            g.tx.publish();
            g.tx.reclaim();
            if Instant::now() > deadline {
                return Err(format!(
                    "the switch took no frame from the stream's transmit queue in 5 s ({} of {} \
                     descriptors free)",
                    g.tx.free_count(),
                    g.tx.size()
                ));
            }
            std::thread::yield_now();
        }
    }
    g.tx.publish();
    g.tx.reclaim();
    Ok(())
}

/// The payload of request `seq`: 16-bit words that are all 0x0000 or 0xffff (each adds
/// nothing to a ones'-complement sum, so a datagram put together from parts of different
/// requests still has a valid checksum: the peer answers it, and the reply shows the mix). The
/// first 64 words are the sequence number's bits, the rest bits derived from it throughout.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len + 16);
    let word =
        |p: &mut Vec<u8>, bit: u64| p.extend_from_slice(&[if bit & 1 == 1 { 0xff } else { 0 }; 2]);
    for k in 0..64 {
        word(&mut p, seq >> k);
    }
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for k in 0..64 {
            word(&mut p, x >> k);
        }
    }
    p.truncate(len);
    p
}

/// The sequence number a payload carries, `None` when its first words are not all 0x0000 or
/// 0xffff.
pub fn payload_seq(data: &[u8]) -> Option<u64> {
    let words = data.get(..SEQ_BYTES)?.chunks(2);
    words.enumerate().try_fold(0u64, |seq, (k, w)| match w {
        [0, 0] => Some(seq),
        [0xff, 0xff] => Some(seq | 1 << k),
        _ => None,
    })
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The low 16 bits of `seq`: the ICMP header's sequence number.
fn seq16(seq: u64) -> u16 {
    let b = seq.to_le_bytes();
    u16::from_le_bytes([b[0], b[1]])
}

/// An IPv4 header for `payload_len` bytes of ICMP; `frag`: (identification, offset in bytes,
/// more fragments), or `None` for a whole datagram (don't fragment).
fn ipv4_header(
    src: [u8; 4],
    dst: [u8; 4],
    payload_len: usize,
    frag: Option<(u16, usize, bool)>,
) -> [u8; 20] {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    let field = match frag {
        None => 0x4000, // don't fragment
        Some((id, offset, more)) => {
            h[4..6].copy_from_slice(&id.to_be_bytes());
            u16::try_from(offset / 8).unwrap_or(0x1fff) | if more { 0x2000 } else { 0 }
        }
    };
    h[6..8].copy_from_slice(&field.to_be_bytes());
    h[8] = 64;
    h[9] = 1; // ICMP
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// Echo request `seq` from us to the peer: one frame, or two fragments with
/// [`StreamConfig::split`].
pub fn echo_request(cfg: &StreamConfig, peer_mac: [u8; 6], seq: u64) -> Vec<Vec<u8>> {
    let data = payload(seq, cfg.payload_len.max(SEQ_BYTES));
    let mut icmp = vec![ICMP_ECHO_REQUEST, 0, 0, 0];
    icmp.extend_from_slice(&ICMP_ID.to_be_bytes());
    icmp.extend_from_slice(&seq16(seq).to_be_bytes());
    icmp.extend_from_slice(&data);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let frame = |part: &[u8], frag| {
        let mut f = Vec::with_capacity(HEADERS + data.len());
        f.extend_from_slice(&peer_mac);
        f.extend_from_slice(&cfg.mac);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&ipv4_header(cfg.ip, cfg.peer_ip, part.len(), frag));
        f.extend_from_slice(part);
        f
    };
    match cfg.split.filter(|&n| n < icmp.len()) {
        None => vec![frame(&icmp, None)],
        Some(n) => {
            let id = seq16(seq);
            vec![
                frame(&icmp[..n], Some((id, 0, true))),
                frame(&icmp[n..], Some((id, n, false))),
            ]
        }
    }
}

/// Checks `f` as a reply to one of our requests: `None` when it is not an echo reply to us at
/// all, otherwise the reply, with a fault when anything in it differs from what a faithful echo
/// of request `seq` holds.
pub fn check_reply(f: &[u8], cfg: &StreamConfig, at: Instant) -> Option<Reply> {
    if f.len() < HEADERS
        || f[0..6] != cfg.mac
        || f[12..14] != ETHERTYPE_IPV4.to_be_bytes()
        || f[14] != 0x45
        || f[23] != 1
        || f[26..30] != cfg.peer_ip
        || f[30..34] != cfg.ip
    {
        return None;
    }
    let icmp_at = 34;
    let id = u16::from_be_bytes([f[icmp_at + 4], f[icmp_at + 5]]);
    if f[icmp_at] != ICMP_ECHO_REPLY || id != ICMP_ID {
        return None;
    }
    let icmp_seq = u16::from_be_bytes([f[icmp_at + 6], f[icmp_at + 7]]);
    let data = &f[HEADERS..];
    let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let Some(seq) = payload_seq(data) else {
        return Some(Reply {
            seq: u64::from(icmp_seq),
            at,
            fault: Some(format!(
                "no sequence number in the payload's first {SEQ_BYTES} bytes: {:02x?}",
                &data[..data.len().min(SEQ_BYTES)]
            )),
        });
    };
    let want = payload(seq, cfg.payload_len.max(SEQ_BYTES));
    let fault = if checksum(&f[14..34]) != 0 {
        Some("bad IPv4 header checksum".to_string())
    } else if ip_len != 20 + 8 + want.len() || data.len() < want.len() {
        Some(format!(
            "IPv4 length {ip_len} and {} payload bytes, for {} sent",
            data.len(),
            want.len()
        ))
    } else if checksum(&f[icmp_at..14 + ip_len]) != 0 {
        Some("bad ICMP checksum".to_string())
    } else if seq16(seq) != icmp_seq {
        Some(format!(
            "the payload says sequence {seq}, the ICMP header {icmp_seq}"
        ))
    } else {
        (0..want.len()).find(|&i| data[i] != want[i]).map(|i| {
            format!(
                "payload differs from what was sent from byte {i} on (got {:02x?}, sent {:02x?})",
                &data[i..(i + 8).min(want.len())],
                &want[i..(i + 8).min(want.len())]
            )
        })
    };
    Some(Reply { seq, at, fault })
}

fn arp(op: u16, src_mac: [u8; 6], src_ip: [u8; 4], dst_mac: [u8; 6], dst_ip: [u8; 4]) -> Vec<u8> {
    let eth_dst = if op == 1 { [0xff; 6] } else { dst_mac };
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&dst_ip);
    f.resize(60, 0);
    f
}

/// Who has `target`? (broadcast, from us).
pub fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    arp(1, mac, ip, [0; 6], target)
}

/// The MAC in `f` when it is an ARP reply from `peer_ip` to `ip`.
fn arp_reply_from(f: &[u8], peer_ip: [u8; 4], ip: [u8; 4]) -> Option<[u8; 6]> {
    let is = f.len() >= 42
        && f[12..14] == ETHERTYPE_ARP.to_be_bytes()
        && f[20..22] == 2u16.to_be_bytes()
        && f[28..32] == peer_ip
        && f[38..42] == ip;
    is.then(|| f[22..28].try_into().ok()).flatten()
}

/// Our answer when `f` is an ARP request for `ip`.
fn arp_answer(f: &[u8], mac: [u8; 6], ip: [u8; 4]) -> Option<Vec<u8>> {
    let is = f.len() >= 42
        && f[12..14] == ETHERTYPE_ARP.to_be_bytes()
        && f[20..22] == 1u16.to_be_bytes()
        && f[38..42] == ip;
    if !is {
        return None;
    }
    let asker_mac: [u8; 6] = f[22..28].try_into().ok()?;
    let asker_ip: [u8; 4] = f[28..32].try_into().ok()?;
    Some(arp(2, mac, ip, asker_mac, asker_ip))
}

/// What a finished stream says about one interval (a migration) in it.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    pub sent: usize,
    pub answered: usize,
    /// Replies with a fault: (seq, what).
    pub corrupt: Vec<(u64, String)>,
    /// Replies that did not come after a higher sequence: (previous, this).
    pub out_of_order: Vec<(u64, u64)>,
    /// Replies for sequences never sent.
    pub unknown: Vec<u64>,
    /// Requests without a reply.
    pub lost: Vec<u64>,
    /// Answered requests sent inside the interval.
    pub answered_inside: usize,
    /// Send-time span from the first to the last lost request.
    pub loss_span: Duration,
    /// Lost requests sent before the interval began.
    pub lost_before: usize,
    /// Lost requests sent more than `after` past the interval's end.
    pub lost_after: usize,
}

impl Log {
    /// Replies without a fault.
    pub fn good_replies(&self) -> usize {
        self.replies.iter().filter(|r| r.fault.is_none()).count()
    }

    /// Checks the stream against the interval `[from, to]`; losses more than `after` past `to`
    /// are counted apart.
    pub fn analyse(&self, from: Instant, to: Instant, after: Duration) -> Analysis {
        let mut a = Analysis {
            sent: self.sent.len(),
            ..Analysis::default()
        };
        let mut answered = vec![false; self.sent.len()];
        let mut last: Option<u64> = None;
        for r in &self.replies {
            if let Some(f) = &r.fault {
                a.corrupt.push((r.seq, f.clone()));
            }
            if let Some(p) = last.filter(|&p| r.seq <= p) {
                a.out_of_order.push((p, r.seq));
            }
            last = Some(last.map_or(r.seq, |p| p.max(r.seq)));
            match usize::try_from(r.seq).ok().filter(|&s| s < answered.len()) {
                Some(s) if r.fault.is_none() => answered[s] = true,
                Some(_) => {}
                None => a.unknown.push(r.seq),
            }
        }
        for (seq, (&at, &ok)) in self.sent.iter().zip(&answered).enumerate() {
            if ok {
                a.answered += 1;
                if at >= from && at <= to {
                    a.answered_inside += 1;
                }
                continue;
            }
            a.lost.push(seq as u64);
            if at < from {
                a.lost_before += 1;
            } else if at > to + after {
                a.lost_after += 1;
            }
        }
        if let (Some(&f), Some(&l)) = (a.lost.first(), a.lost.last()) {
            let at = |s: u64| {
                usize::try_from(s)
                    .ok()
                    .and_then(|s| self.sent.get(s).copied())
            };
            if let (Some(f), Some(l)) = (at(f), at(l)) {
                a.loss_span = l.saturating_duration_since(f);
            }
        }
        a
    }
}

/// `lost` as ranges, `3-7 9 12-13`, for messages.
pub fn ranges(seqs: &[u64]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}-{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StreamConfig {
        StreamConfig {
            mac: [0x52, 0x54, 0, 0, 0, 1],
            ip: [10, 0, 0, 1],
            peer_ip: [10, 0, 0, 2],
            rate: 100,
            burst: 1,
            payload_len: 400,
            split: None,
            hold: 0,
        }
    }

    const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    /// What a faithful peer answers to `req`: addresses swapped, type 0, checksum fixed.
    fn echo(req: &[u8]) -> Vec<u8> {
        let mut f = req.to_vec();
        f[0..6].copy_from_slice(&req[6..12]);
        f[6..12].copy_from_slice(&req[0..6]);
        f[26..30].copy_from_slice(&req[30..34]);
        f[30..34].copy_from_slice(&req[26..30]);
        f[24..26].fill(0);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34] = ICMP_ECHO_REPLY;
        f[36..38].fill(0);
        let c = checksum(&f[34..]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn one(frames: Vec<Vec<u8>>) -> Vec<u8> {
        assert_eq!(frames.len(), 1);
        frames.into_iter().next().unwrap()
    }

    #[test]
    fn a_faithful_echo_passes() {
        let c = cfg();
        let req = one(echo_request(&c, PEER, 70_000));
        assert_eq!(checksum(&req[14..34]), 0);
        assert_eq!(checksum(&req[34..]), 0);
        assert_eq!(payload_seq(&req[HEADERS..]), Some(70_000));
        let r = check_reply(&echo(&req), &c, Instant::now()).expect("a reply");
        assert_eq!((r.seq, r.fault), (70_000, None));
        // Our own request is not a reply.
        assert!(check_reply(&req, &c, Instant::now()).is_none());
    }

    #[test]
    fn fragments_carry_the_whole_request() {
        let whole = one(echo_request(&cfg(), PEER, 9));
        let c = StreamConfig {
            split: Some(304),
            ..cfg()
        };
        let f = echo_request(&c, PEER, 9);
        assert_eq!(f.len(), 2);
        // Offset 0 with more fragments, then offset 304 / 8 = 38 without.
        assert_eq!(&f[0][20..22], &0x2000u16.to_be_bytes());
        assert_eq!(&f[1][20..22], &38u16.to_be_bytes());
        assert_eq!(&f[0][18..20], &f[1][18..20], "one identification");
        assert!(f.iter().all(|f| checksum(&f[14..34]) == 0));
        assert_eq!([&f[0][34..], &f[1][34..]].concat(), &whole[34..]);
    }

    #[test]
    fn test_echo_with_a_stale_payload_is_a_fault() {
        let c = cfg();
        // Request 6, whose bytes from 200 on are those of request 5 at the same place: a
        // buffer that kept part of an older frame. The payload's words add nothing to the
        // checksum, so the mix is a valid datagram, which a peer answers.
        let mut f = echo(&one(echo_request(&c, PEER, 6)));
        let old = payload(5, 400);
        f[HEADERS + 200..].copy_from_slice(&old[200..]);
        assert_eq!(checksum(&f[34..]), 0);
        let r = check_reply(&f, &c, Instant::now()).unwrap();
        assert!(
            r.fault.as_deref().unwrap().contains("from byte 2"),
            "{:?}",
            r.fault
        );
        // The sequence words of request 5 under request 6's header.
        let mut f = echo(&one(echo_request(&c, PEER, 6)));
        f[HEADERS..].copy_from_slice(&old);
        let r = check_reply(&f, &c, Instant::now()).unwrap();
        assert!(r.fault.unwrap().contains("ICMP header 6"));
        // One byte flipped deep in the payload.
        let mut f = echo(&one(echo_request(&c, PEER, 6)));
        f[HEADERS + 390] ^= 1;
        let r = check_reply(&f, &c, Instant::now()).unwrap();
        assert!(r.fault.unwrap().contains("bad ICMP checksum"));
        let mut f = echo(&one(echo_request(&c, PEER, 6)));
        f.truncate(HEADERS + 200);
        let r = check_reply(&f, &c, Instant::now()).unwrap();
        assert!(r.fault.unwrap().contains("IPv4 length"));
        let mut f = echo(&one(echo_request(&c, PEER, 6)));
        f[HEADERS + 3] = 0x12;
        let r = check_reply(&f, &c, Instant::now()).unwrap();
        assert!(r.fault.unwrap().contains("no sequence number"));
    }

    #[test]
    fn arp_is_answered_for_our_address_only() {
        let c = cfg();
        let q = arp_request(PEER, c.peer_ip, c.ip);
        let a = arp_answer(&q, c.mac, c.ip).expect("an answer");
        assert_eq!(arp_reply_from(&a, c.ip, c.peer_ip), Some(c.mac));
        assert_eq!(&a[0..6], &PEER);
        assert!(arp_answer(&arp_request(PEER, c.peer_ip, [10, 0, 0, 9]), c.mac, c.ip).is_none());
    }

    #[test]
    fn analysis_finds_loss_repeats_and_faults() {
        let t = Instant::now();
        let s = |ms: u64| t + Duration::from_millis(ms);
        let reply = |seq, fault: Option<&str>| Reply {
            seq,
            at: t,
            fault: fault.map(str::to_string),
        };
        let log = Log {
            sent: (0..10).map(|i| s(i * 100)).collect(),
            replies: vec![
                reply(0, None),
                reply(1, None),
                reply(4, None),
                reply(3, None),
                reply(5, Some("stale")),
                reply(6, None),
                reply(8, None),
                reply(9, None),
                reply(42, None),
            ],
            ..Log::default()
        };
        let a = log.analyse(s(150), s(450), Duration::from_millis(200));
        assert_eq!(a.out_of_order, vec![(4, 3)]);
        assert_eq!(a.corrupt, vec![(5, "stale".to_string())]);
        assert_eq!(a.unknown, vec![42]);
        assert_eq!(a.lost, vec![2, 5, 7]);
        assert_eq!(ranges(&a.lost), "2 5 7");
        assert_eq!(ranges(&[1, 2, 3, 5]), "1-3 5");
        assert_eq!(a.loss_span, Duration::from_millis(500));
        assert_eq!((a.lost_before, a.lost_after), (0, 1));
        // 3 and 4 sent inside, answered.
        assert_eq!(a.answered_inside, 2);
        assert_eq!(a.answered, 7);
    }
}

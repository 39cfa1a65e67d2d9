//! The capture stream: how the control socket answers `capture`, and its framing.
//!
//! After the request, the server sends one ordinary reply line (`ok:true` with a
//! [`CaptureStarted`], or `ok:false` and the connection goes on as usual). Then come chunks,
//! each a little-endian `u32` length and that many bytes of a pcap file (its file header
//! first, then whole records), until a chunk of length 0; then one JSON line, the
//! [`CaptureSummary`], and the server closes the connection. The client stops a capture by
//! shutting down its sending side (or closing); the server then ends the stream as above.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::socket::{recv, MsgFlags};
use serde_json::json;

use super::dispatch::CtlHandler;
use super::protocol::{CaptureArgs, CaptureStarted, CaptureSummary};
use crate::capture::{first_records, CaptureSession, BUFFER_BYTES, SNAPLEN};
use crate::pcap;

/// Largest chunk a server sends: one drained buffer, or the file header.
pub const MAX_CHUNK: usize = BUFFER_BYTES;
/// How often the control thread drains the capture buffer: a quarter of the time a full-rate
/// 10GbE stream of minimum-size frames takes to fill it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Attaches the capture `args` asks for; `Err` is the refusal to send back.
pub fn start(handler: &dyn CtlHandler, args: &CaptureArgs) -> Result<CaptureSession, String> {
    let tap = handler.tap(&args.port)?;
    tap.attach(&args.port, args.direction, BUFFER_BYTES)
        .map_err(|e| e.to_string())
}

fn write_chunk(w: &mut UnixStream, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("chunk too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

/// Whether the client has shut down its side (or sent anything, which a capture client never
/// does): a non-blocking peek, so a silent live client costs nothing.
fn client_stopped(s: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    match recv(
        s.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(_) => true,
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Streams an attached capture to the client until its budget is spent, the client stops, the
/// port goes away or the switch stops; then ends the stream (the caller closes the connection).
pub fn run(
    w: &mut UnixStream,
    mut session: CaptureSession,
    args: &CaptureArgs,
    stop: &AtomicBool,
) -> io::Result<()> {
    let started = CaptureStarted {
        port: args.port.clone(),
        direction: args.direction,
        snaplen: SNAPLEN,
    };
    let mut line = json!({"ok": true, "data": started}).to_string();
    line.push('\n');
    w.write_all(line.as_bytes())?;
    write_chunk(w, &pcap::file_header(SNAPLEN))?;
    let budget = args.count.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let ended = loop {
        std::thread::sleep(DRAIN_INTERVAL);
        let records = session.drain();
        let (len, n) = first_records(records, budget - sent);
        if len > 0 {
            write_chunk(w, &records[..len])?;
        }
        sent += n;
        if sent >= budget {
            break "count reached";
        }
        if session.port_closed() {
            break "port deleted";
        }
        if stop.load(Ordering::Relaxed) {
            break "switch stopping";
        }
        if client_stopped(w) {
            break "client stopped";
        }
    };
    let summary = CaptureSummary {
        captured: sent,
        dropped: session.counts().1,
        ended: ended.to_owned(),
    };
    drop(session);
    tracing::info!(
        "capture on port {}: {} frame(s) sent, {} missed, {ended}",
        args.port,
        summary.captured,
        summary.dropped
    );
    write_chunk(w, &[])?;
    let mut line = serde_json::to_string(&summary).map_err(io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes())
}

//! One fast-path guest of the `fastpath-*` scenarios, as a process of its own (`bench
//! fastpath-peer`, started by the scenario, not by hand).
//!
//! Each guest must be its own process, as it would be its own VM: the view switches of the
//! mprotect backend change the page tables of the process, and every other core the process runs
//! on must then drop its TLB entries (an inter-processor interrupt, which in a VM is a VM exit).
//! With the two guests (or a guest and the switch) as threads of one process, each switch
//! interrupts the other core; as processes, each guest's switches stay on its own core.
//!
//! The scenario drives the peer with one command per line on stdin and reads one JSON line per
//! answer on stdout.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver as Chan};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fastpath_guest::{FastpathGuest, FpConfig, VisitStats};
use hypervisor_hooks::proto::Mode;
use notify::tsc;
use serde_json::json;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::pacing::Pacer;
use crate::packet::{self, Receiver};
use crate::pin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Sender,
    Receiver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Copy,
    ZeroCopy,
}

#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub port: String,
    #[arg(long, value_parser = fastpath_guest::cli::mac_arg)]
    pub mac: [u8; 6],
    #[arg(long, value_parser = fastpath_guest::cli::mac_arg)]
    pub peer: [u8; 6],
    #[arg(long)]
    pub hooks: PathBuf,
    #[arg(long)]
    pub core: usize,
    /// Entries of every queue: room for the adaptive visits (up to 7/8 of a queue) to fill
    /// while the other side works on the previous one. Default: 8192 for zero-copy, 2048 for
    /// copy, whose receive buffers (2 KiB each) the sender writes whole: 2048 of them fit a
    /// core's L2, and copy ran 14-15 % faster at 64 and 1518 B than with 8192 (Intel Xeon,
    /// 2026-12-07, two alternated pairs).
    #[arg(long)]
    pub queue: Option<u16>,
    /// Most frames the sender offers per `send`. Copy mode offers what one visit to the peer's
    /// queue should carry so view switches stay under 8 % of it (measured as it runs, see
    /// fastpath_guest::visits), up to this (64-byte frames packed as records need ~20 000 a
    /// visit against a 20 000-cycle mprotect switch); zero-copy (no view on the sender's side) publishes
    /// every 256 frames, up to this.
    #[arg(long, default_value_t = 32768)]
    pub burst: usize,
    /// Most frames the receiver takes per `recv` (zero-copy: per visit to its view of the
    /// sender's queue, which it enters once enough frames wait; see fastpath_guest::visits).
    /// Twice the queue: a visit gives buffers back as it goes, so the sender refills behind it
    /// and a visit can carry more than the queue holds. At 8192 the cut visits at 1518 B
    /// (6 500 frames, a ~21 600-cycle switch at 26 cycles a frame) put the switch at 10.6-11.9 %;
    /// at 16384, 10 300-10 600 frames and 7.3-8.2 % (Intel Xeon, 2026-12-07).
    #[arg(long, default_value_t = 16384)]
    pub rx_batch: usize,
    #[arg(long, default_value = "adaptive")]
    pub notify: String,
}

/// One frame in this many has its latency recorded (as `ring-limit` does).
const LATENCY_EVERY: u64 = crate::scenario::ring_limit::STAMP_EVERY;

/// Frames a zero-copy sender publishes at a time.
const ZC_BURST: usize = 256;

/// The visit figures of our channel since `before`, for the scenario's report.
fn visits_json(g: &FastpathGuest, before: VisitStats) -> serde_json::Value {
    let now = channel_visits(g);
    let d = VisitStats {
        visits: now.visits - before.visits,
        frames: now.frames - before.frames,
        enter_cycles: now.enter_cycles - before.enter_cycles,
        work_cycles: now.work_cycles - before.work_cycles,
        leave_cycles: now.leave_cycles - before.leave_cycles,
    };
    json!({
        "backend": format!("{:?}", g.backend()),
        "visits": d.visits,
        "frames": d.frames,
        "switch_cycles": d.switch_cycles(),
        "switch_share": d.switch_share(),
        "work_per_frame": d.work_per_frame(),
    })
}

fn channel_visits(g: &FastpathGuest) -> VisitStats {
    g.channels()
        .first()
        .map(|c| c.visit_stats())
        .unwrap_or_default()
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn fail(e: impl std::fmt::Display) -> Error {
    Error::measurement("fastpath-peer", e.to_string())
}

/// Runs a peer until `quit` or end of input.
pub fn main(a: PeerArgs) -> Result<()> {
    if a.burst == 0 || a.rx_batch == 0 {
        return Err(Error::BadArgument(
            "--burst and --rx-batch must be at least 1".into(),
        ));
    }
    let _pin = pin::current(a.core)?;
    let cfg = FpConfig {
        hooks: Some(a.hooks.clone()),
        queue_size: a.queue.unwrap_or(match a.mode {
            ModeArg::Copy => 2048,
            ModeArg::ZeroCopy => 8192,
        }),
        ..FpConfig::new(a.socket.clone(), &a.port, a.mac)
    };
    let mut g = FastpathGuest::connect(&cfg).map_err(fail)?;
    let mode = match a.mode {
        ModeArg::Copy => Mode::Copy,
        ModeArg::ZeroCopy => Mode::ZeroCopy,
    };
    // Commands arrive on a thread of their own, so the receiver can poll for `stop` cheaply.
    let (tx, rx) = channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    say(json!({"ready": true}));
    while let Ok(line) = rx.recv() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["open"] => match g.open_channel(a.peer, mode, &a.notify, Duration::from_secs(10)) {
                Ok(id) => say(json!({"channel": id})),
                Err(e) => say(json!({"error": e.to_string()})),
            },
            ["wait-channel"] => {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    g.poll_events().map_err(fail)?;
                    if !g.channels().is_empty() {
                        say(json!({"channel": g.channels()[0].id}));
                        break;
                    }
                    if Instant::now() >= deadline {
                        say(json!({"error": "no channel opened to us"}));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            ["window", run, secs, size, rate] => {
                let f = |s: &str| s.parse::<f64>().map_err(fail);
                let rate = f(rate)?;
                let r = send_window(
                    &mut g,
                    a.peer,
                    run.parse().map_err(fail)?,
                    f(secs)?,
                    size.parse().map_err(fail)?,
                    (rate > 0.0).then_some(rate),
                    a.burst,
                    mode,
                )?;
                say(r);
            }
            ["recv", run] => {
                let run = run.parse::<u32>().map_err(fail)?;
                say(receive(&mut g, run, &rx, a.rx_batch)?);
            }
            ["quit"] => break,
            _ => say(json!({"error": format!("unknown command `{line}`")})),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_window(
    g: &mut FastpathGuest,
    dst: [u8; 6],
    run: u32,
    secs: f64,
    size: usize,
    rate: Option<f64>,
    burst: usize,
    mode: Mode,
) -> Result<serde_json::Value> {
    let hz = tsc::hz();
    let src = g.mac;
    let mut bufs: Vec<Vec<u8>> = (0..burst)
        .map(|_| packet::template(dst, src, size, run))
        .collect();
    let in_place = mode == Mode::ZeroCopy;
    let before = channel_visits(g);
    // Which transmit buffers hold this run's frame already (by descriptor id).
    let mut filled = vec![false; usize::from(u16::MAX)];
    let size = bufs[0].len();
    let mut sent = 0u64;
    let start = tsc::now();
    let end = start + crate::num::cycles(secs, hz);
    let pacer = Pacer::new(start, rate, hz);
    let mut t = start;
    while t < end {
        let burst = if in_place {
            burst.min(ZC_BURST)
        } else {
            g.channels()
                .iter()
                .find(|c| c.sends())
                .map_or(burst, |c| c.visit_target().min(burst))
        };
        let due = pacer.due(t, sent, burst);
        if due > 0 {
            let now = tsc::now();
            sent += if in_place {
                // Zero-copy: frames are built in the transmit buffers themselves. A buffer that
                // already holds this run's frame (it comes back in order, lap after lap) only
                // gets its sequence number and timestamp, as two stores from registers.
                let template = &bufs[0];
                g.rewrite_in_place(dst, std::iter::repeat_n(size, due), |i, id, buf| {
                    let id = usize::from(id);
                    if !filled.get(id).copied().unwrap_or(false) {
                        buf.copy_from_slice(template);
                        if let Some(f) = filled.get_mut(id) {
                            *f = true;
                        }
                    }
                    packet::stamp(buf, sent + i as u64, now);
                })
                .map_err(fail)?
            } else {
                for (i, f) in bufs.iter_mut().enumerate().take(due) {
                    packet::stamp(f, sent + i as u64, now);
                }
                g.send(dst, &bufs[..due]).map_err(fail)?
            } as u64;
        }
        t = tsc::now();
    }
    Ok(json!({
        "sent": sent,
        "cycles": t.saturating_sub(start),
        "visits": visits_json(g, before),
    }))
}

fn receive(
    g: &mut FastpathGuest,
    run: u32,
    cmds: &Chan<String>,
    batch: usize,
) -> Result<serde_json::Value> {
    let before = channel_visits(g);
    let mut rx = Receiver::new(run);
    let mut latency = Latency::new();
    let mut expect: Option<u64> = None;
    let mut quiet_since: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        let got = g
            .recv(batch, |f| {
                // In place for zero-copy: only the header is read, never the frame copied.
                let (hdr, n) = f.head::<{ packet::HEADER_LEN }>();
                if let Some(st) = rx.accept(&hdr[..n]) {
                    // Every frame is checked; one in LATENCY_EVERY is timed (reading the clock
                    // and recording it costs about what taking the frame does).
                    if st.seq % LATENCY_EVERY == 0 {
                        latency.record(st.tsc, tsc::now());
                    }
                }
            })
            .map_err(fail)?;
        polls = polls.wrapping_add(1);
        // The command channel costs a lock-free queue probe per look: look when idle or every
        // 64 polls, not at every poll of the receive loop (it was 15 % of a busy receiver).
        if expect.is_none() && (got == 0 || polls.is_multiple_of(64)) {
            if let Ok(c) = cmds.try_recv() {
                match c.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["stop", n] => expect = Some(n.parse().map_err(fail)?),
                    _ => return Err(fail(format!("`{c}` while receiving"))),
                }
            }
        }
        if let Some(n) = expect {
            if rx.received >= n {
                break;
            }
            if got == 0 {
                if quiet_since.get_or_insert_with(Instant::now).elapsed()
                    > Duration::from_millis(200)
                {
                    break;
                }
            } else {
                quiet_since = None;
            }
        }
    }
    Ok(json!({
        "received": rx.received,
        "out_of_order": rx.out_of_order,
        "latency": latency.to_pairs(),
        "visits": visits_json(g, before),
    }))
}

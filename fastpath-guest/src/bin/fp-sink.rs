//! `fp-sink`: a fast-path guest that receives test frames from the switch and from fast-path
//! channels, checks each one (header, length, every payload byte, sequence per source), and
//! prints counts and latency as JSON.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fastpath_guest::cli::{init_logging, GuestArgs};
use fastpath_guest::frame::{self, Bad, SeqTracker};
use fastpath_guest::{FastpathGuest, Rx};

#[derive(Debug, Parser)]
#[command(
    name = "fp-sink",
    about = "Receive and check test frames from the switch and fast-path channels",
    after_help = "EXAMPLE:\n  fp-sink --socket /tmp/b.sock --port b --mac 02:00:00:00:00:02 --hooks /tmp/hooks.sock --count 1000000"
)]
struct Cli {
    #[command(flatten)]
    guest: GuestArgs,
    /// Stop after this many good frames (0: run until --duration or --idle).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Stop when nothing arrived for this many seconds after the first frame.
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// Check the headers only, not every payload byte.
    #[arg(long)]
    headers_only: bool,
    /// Sleep (with the channel's notification) instead of busy polling when idle.
    #[arg(long)]
    sleep: bool,
}

fn main() -> ExitCode {
    init_logging();
    fastpath_guest::handle_print_trampoline();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("fp-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Stats {
    good: u64,
    bytes: u64,
    foreign: u64,
    bad_length: u64,
    corrupt: u64,
    per_source: HashMap<[u8; 6], SeqTracker>,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

impl Stats {
    fn take(&mut self, rx: &Rx<'_>, full: bool, buf: &mut [u8], hz: u64) {
        let len = rx.len();
        if len > buf.len() {
            self.bad_length += 1;
            return;
        }
        // In place for zero-copy frames: read them once into our stack buffer to check them.
        let n = rx.read(0, &mut buf[..len]);
        match frame::check(&buf[..n], full) {
            Ok(info) => {
                self.good += 1;
                self.bytes += len as u64;
                self.per_source.entry(info.src).or_default().see(info.seq);
                let now = notify::tsc::now();
                if let Some(h) = &mut self.latency {
                    let ns =
                        u128::from(now.wrapping_sub(info.tsc)) * 1_000_000_000 / u128::from(hz);
                    let _ = h.record(u64::try_from(ns).unwrap_or(u64::MAX).min(60_000_000_000));
                }
            }
            Err(Bad::Foreign) => self.foreign += 1,
            Err(Bad::Length) => self.bad_length += 1,
            Err(Bad::Corrupt) => self.corrupt += 1,
        }
    }
}

/// Tells the switch our MAC (a broadcast frame), so frames to us are forwarded, not flooded.
fn announce(g: &mut FastpathGuest) -> Result<(), String> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&g.mac);
    f[12..14].copy_from_slice(&0x88b6u16.to_be_bytes());
    g.send([0xff; 6], &[&f]).map_err(|e| e.to_string())?;
    Ok(())
}

fn run(cli: &Cli) -> Result<bool, String> {
    cli.guest.pin();
    let mut g = FastpathGuest::connect(&cli.guest.config()).map_err(|e| e.to_string())?;
    let hz = notify::tsc::hz();
    let mut st = Stats {
        latency: hdrhistogram::Histogram::new(3).ok(),
        ..Stats::default()
    };
    let full = !cli.headers_only;
    let mut buf = vec![0u8; 16384];
    let start = Instant::now();
    let mut last = Instant::now();
    let mut last_announce = Instant::now() - Duration::from_secs(10);
    let limit = Duration::from_secs_f64(cli.duration);
    let idle = Duration::from_secs_f64(cli.idle);
    loop {
        g.poll_events().map_err(|e| e.to_string())?;
        if last_announce.elapsed() >= Duration::from_secs(1) {
            announce(&mut g)?;
            last_announce = Instant::now();
        }
        let n = g
            .recv(256, |rx| st.take(&rx, full, &mut buf, hz))
            .map_err(|e| e.to_string())?;
        if n > 0 {
            last = Instant::now();
        } else if cli.sleep {
            g.wait(Duration::from_millis(1));
        }
        if cli.count > 0 && st.good >= cli.count {
            break;
        }
        if start.elapsed() >= limit {
            break;
        }
        if st.good > 0 && last.elapsed() >= idle {
            break;
        }
    }
    let lost: u64 = st.per_source.values().map(|t| t.lost).sum();
    let ooo: u64 = st.per_source.values().map(|t| t.out_of_order).sum();
    let secs = start.elapsed().as_secs_f64();
    let q = |p: f64| st.latency.as_ref().map_or(0, |h| h.value_at_quantile(p));
    let summary = serde_json::json!({
        "received": st.good,
        "bytes": st.bytes,
        "lost": lost,
        "out_of_order": ooo,
        "corrupt": st.corrupt,
        "bad_length": st.bad_length,
        "foreign": st.foreign,
        "via_channel": g.counts.received_channel,
        "via_switch": g.counts.received_switch,
        "channels_opened": g.counts.channels_opened,
        "channels_revoked": g.counts.channels_revoked,
        "seconds": secs,
        "latency_ns": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999)},
        "backend": g.backend().name(),
    });
    println!("{summary}");
    Ok(st.corrupt == 0 && st.bad_length == 0 && lost == 0)
}

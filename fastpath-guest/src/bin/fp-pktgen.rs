//! `fp-pktgen`: a fast-path guest that transmits test frames (sequence number and TSC timestamp
//! in the payload) to one destination, at a given rate and size, through the switch or through a
//! fast-path channel, and prints what it sent as JSON.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fastpath_guest::cli::{init_logging, mac_arg, GuestArgs, PathArg};
use fastpath_guest::frame;
use fastpath_guest::FastpathGuest;

/// How long the destination may refuse every frame before we give up.
const STALL: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "fp-pktgen",
    about = "Transmit test frames to one destination, through the switch or a fast-path channel",
    after_help = "EXAMPLE:\n  fp-pktgen --socket /tmp/a.sock --port a --mac 02:00:00:00:00:01 \\\n    --hooks /tmp/hooks.sock --dst 02:00:00:00:00:02 --path copy --count 1000000 --size mixed"
)]
struct Cli {
    #[command(flatten)]
    guest: GuestArgs,
    /// Destination MAC.
    #[arg(long, value_parser = mac_arg)]
    dst: [u8; 6],
    /// Path to the destination.
    #[arg(long, value_enum, default_value = "switch")]
    path: PathArg,
    /// Notification strategy of the channel (spin, futex, eventfd, adaptive, umwait).
    #[arg(long, default_value = "adaptive")]
    notify: String,
    /// Frame size in bytes without FCS (60..=9014), or `mixed` (64, 576 and 1518-byte frames).
    #[arg(long, default_value = "60")]
    size: String,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Frames to send (0: until --duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seconds to send (when --count is 0).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frames per burst.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Seconds to wait for the channel (the peer may start later).
    #[arg(long, default_value_t = 10.0)]
    open_timeout: f64,
}

fn main() -> ExitCode {
    init_logging();
    fastpath_guest::handle_print_trampoline();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fp-pktgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn size_of(spec: &str, seq: u64) -> Result<usize, String> {
    if spec == "mixed" {
        return Ok(frame::mixed_size(seq));
    }
    let n: usize = spec
        .parse()
        .map_err(|_| format!("size `{spec}`: a number or `mixed`"))?;
    if !(frame::MIN_FRAME..=frame::MAX_FRAME).contains(&n) {
        return Err(format!(
            "size {n} outside {}..={}",
            frame::MIN_FRAME,
            frame::MAX_FRAME
        ));
    }
    Ok(n)
}

fn run(cli: &Cli) -> Result<(), String> {
    size_of(&cli.size, 0)?;
    if cli.burst == 0 || cli.burst > 256 {
        return Err(format!("burst {}: expected 1..=256", cli.burst));
    }
    cli.guest.pin();
    let mut g = FastpathGuest::connect(&cli.guest.config()).map_err(|e| e.to_string())?;
    if let Some(mode) = cli.path.mode() {
        let deadline = Instant::now() + Duration::from_secs_f64(cli.open_timeout);
        // The peer may not have registered yet: retry until it has, or the time is up.
        loop {
            match g.open_channel(cli.dst, mode, &cli.notify, Duration::from_secs(5)) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("registered") => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => return Err(format!("opening a {mode} channel: {e}")),
            }
        }
    }
    let hz = notify::tsc::hz();
    let start = Instant::now();
    let t0 = notify::tsc::now();
    let gap = if cli.rate > 0 {
        hz / cli.rate.max(1)
    } else {
        0
    };
    let limit = Duration::from_secs_f64(cli.duration);
    let mut seq = 0u64;
    let mut full_retries = 0u64;
    let mut bufs: Vec<Vec<u8>> = (0..cli.burst)
        .map(|_| vec![0u8; frame::MAX_FRAME])
        .collect();
    let mut lens = vec![0usize; cli.burst];
    let mut bytes = 0u64;
    loop {
        if cli.count > 0 && seq >= cli.count {
            break;
        }
        if cli.count == 0 && start.elapsed() >= limit {
            break;
        }
        let mut n = cli.burst;
        if cli.count > 0 {
            n = n.min(usize::try_from(cli.count - seq).unwrap_or(n));
        }
        if gap > 0 {
            // Pace: frame `seq` is due at t0 + seq * gap.
            let due = t0 + seq * gap;
            while notify::tsc::now() < due {
                std::hint::spin_loop();
            }
        }
        let now = notify::tsc::now();
        for i in 0..n {
            let s = seq + i as u64;
            let len = size_of(&cli.size, s)?;
            frame::build(&mut bufs[i], cli.dst, cli.guest.mac, s, now, len);
            lens[i] = len;
        }
        let frames: Vec<&[u8]> = bufs[..n].iter().zip(&lens).map(|(b, l)| &b[..*l]).collect();
        let mut done = 0;
        let mut progress = Instant::now();
        // Back-pressure, not loss: retry what did not fit until the peer makes room.
        while done < n {
            g.poll_events().map_err(|e| e.to_string())?;
            let k = g
                .send(cli.dst, &frames[done..])
                .map_err(|e| e.to_string())?;
            if k == 0 {
                full_retries += 1;
                std::hint::spin_loop();
                if progress.elapsed() > STALL {
                    return Err(format!(
                        "the destination took no frame for {STALL:?}: it stopped receiving"
                    ));
                }
            } else {
                progress = Instant::now();
            }
            done += k;
        }
        bytes += lens[..n].iter().map(|l| *l as u64).sum::<u64>();
        seq += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "sent": seq,
        "bytes": bytes,
        "seconds": secs,
        "mpps": seq as f64 / secs / 1e6,
        "via_channel": g.counts.sent_channel,
        "via_switch": g.counts.sent_switch,
        "full_retries": full_retries,
        "channels_revoked": g.counts.channels_revoked,
        "backend": g.backend().name(),
    });
    println!("{summary}");
    // Give the receiver time to drain before our rings go away.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

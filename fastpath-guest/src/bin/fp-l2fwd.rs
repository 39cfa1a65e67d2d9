//! `fp-l2fwd`: a VNF with two ports that forwards every frame arriving on one port out of the
//! other, rewriting the source MAC to its own and the destination to the configured next hop
//! (like DPDK's l2fwd with MAC updating). Either port may use fast-path channels.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fastpath_guest::cli::{init_logging, mac_arg, GuestArgs};
use fastpath_guest::{FastpathGuest, FpConfig};

#[derive(Debug, Parser)]
#[command(
    name = "fp-l2fwd",
    about = "Forward frames between two ports, rewriting MACs (a two-port VNF)",
    after_help = "EXAMPLE:\n  fp-l2fwd --socket /tmp/w.sock --port w --mac 02:00:00:00:01:01 --next-a 02:00:00:00:00:01 \\\n           --socket-b /tmp/e.sock --port-b e --mac-b 02:00:00:00:01:02 --next-b 02:00:00:00:00:02"
)]
struct Cli {
    /// Port A.
    #[command(flatten)]
    a: GuestArgs,
    /// Where frames leaving port A go (the next hop's MAC).
    #[arg(long, value_parser = mac_arg)]
    next_a: [u8; 6],
    /// Port B's vhost-user socket.
    #[arg(long)]
    socket_b: std::path::PathBuf,
    /// Port B's name in the switch.
    #[arg(long)]
    port_b: String,
    /// Port B's MAC.
    #[arg(long, value_parser = mac_arg)]
    mac_b: [u8; 6],
    /// Where frames leaving port B go.
    #[arg(long, value_parser = mac_arg)]
    next_b: [u8; 6],
    /// Seconds to run (0: until killed).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
}

fn main() -> ExitCode {
    init_logging();
    fastpath_guest::handle_print_trampoline();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fp-l2fwd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Moves up to a burst from `from` to `to`; returns (forwarded, dropped).
fn forward(
    from: &mut FastpathGuest,
    to: &mut FastpathGuest,
    next: [u8; 6],
    store: &mut [Vec<u8>],
) -> Result<(u64, u64), String> {
    let mut n = 0;
    let src = to.mac;
    from.recv(store.len(), |rx| {
        let len = rx.len().min(store[n].len());
        let got = rx.read(0, &mut store[n][..len]);
        if got >= 14 {
            store[n][0..6].copy_from_slice(&next);
            store[n][6..12].copy_from_slice(&src);
            store[n].truncate(got);
            n += 1;
        }
    })
    .map_err(|e| e.to_string())?;
    let frames: Vec<&[u8]> = store[..n].iter().map(|v| v.as_slice()).collect();
    let sent = to.send(next, &frames).map_err(|e| e.to_string())?;
    for v in store.iter_mut().take(n) {
        v.resize(9014, 0);
    }
    Ok((sent as u64, (n - sent) as u64))
}

fn run(cli: &Cli) -> Result<(), String> {
    cli.a.pin();
    let mut a = FastpathGuest::connect(&cli.a.config()).map_err(|e| e.to_string())?;
    let bcfg = FpConfig {
        hooks: cli.a.hooks.clone(),
        queue_size: cli.a.queue_size,
        huge: cli.a.huge,
        ..FpConfig::new(cli.socket_b.clone(), &cli.port_b, cli.mac_b)
    };
    let mut b = FastpathGuest::connect(&bcfg).map_err(|e| e.to_string())?;
    let mut store: Vec<Vec<u8>> = (0..32).map(|_| vec![0u8; 9014]).collect();
    let start = Instant::now();
    let (mut fwd, mut drop) = (0u64, 0u64);
    loop {
        a.poll_events().map_err(|e| e.to_string())?;
        b.poll_events().map_err(|e| e.to_string())?;
        let (f1, d1) = forward(&mut a, &mut b, cli.next_b, &mut store)?;
        let (f2, d2) = forward(&mut b, &mut a, cli.next_a, &mut store)?;
        fwd += f1 + f2;
        drop += d1 + d2;
        if cli.duration > 0.0 && start.elapsed() >= Duration::from_secs_f64(cli.duration) {
            break;
        }
    }
    println!(
        "{}",
        serde_json::json!({"forwarded": fwd, "dropped": drop, "seconds": start.elapsed().as_secs_f64()})
    );
    Ok(())
}

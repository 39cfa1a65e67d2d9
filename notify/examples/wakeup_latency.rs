//! Wake-up latency of every notification strategy available here: p50/p99/p99.9, sender
//! pinned to core 0 and receiver to core 1, printed as a table and as JSON.
//!
//! ```sh
//! cargo run --release -p notify --example wakeup_latency -- [--samples N] [--gap-us G] [STRATEGY...]
//! ```
//!
//! Without strategy names it runs every available strategy with the gap given (default 100 µs,
//! so the sleeping strategies are asleep when notified), plus `adaptive` with a 5 µs gap (inside
//! its polling budget: its polling path). Both threads poll while they wait for each other;
//! the run takes the workspace's heavy-test lock so that it does not share the cores with a
//! heavy test.

use std::fs::File;
use std::process::ExitCode;
use std::time::Duration;

use notify::latency::{table, to_json};
use notify::{measure_wakeup_with, Strategy, WakeupConfig};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wakeup_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = WakeupConfig::default();
    let mut strategies = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--samples" => cfg.samples = args.next().ok_or("--samples needs a number")?.parse()?,
            "--gap-us" => {
                let us: u64 = args.next().ok_or("--gap-us needs a number")?.parse()?;
                cfg.gap = Duration::from_micros(us);
            }
            "-h" | "--help" => {
                println!("usage: wakeup_latency [--samples N] [--gap-us G] [STRATEGY...]");
                println!(
                    "strategies here: {}",
                    Strategy::available()
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
            name => strategies.push(name.parse::<Strategy>()?),
        }
    }
    let mut runs: Vec<(Strategy, Duration)> = Vec::new();
    if strategies.is_empty() {
        runs.extend(Strategy::available().into_iter().map(|s| (s, cfg.gap)));
        if Strategy::Adaptive.is_available() {
            runs.push((Strategy::Adaptive, Duration::from_micros(5)));
        }
        for s in Strategy::ALL.into_iter().filter(|s| !s.is_available()) {
            if let Err(e) = s.check_available() {
                eprintln!("not measured: {e}");
            }
        }
    } else {
        runs.extend(strategies.into_iter().map(|s| (s, cfg.gap)));
    }

    let _heavy = heavy_lock()?;
    let mut rows = Vec::new();
    for (s, gap) in runs {
        let run_cfg = WakeupConfig { gap, ..cfg.clone() };
        eprintln!(
            "measuring {s} ({} samples, gap {gap:?})...",
            run_cfg.samples
        );
        rows.push(measure_wakeup_with(s, &run_cfg)?);
    }
    println!("tsc: {} Hz", notify::tsc::hz());
    print!("{}", table(&rows));
    println!("{}", to_json(&rows));
    Ok(())
}

/// The workspace's lock for runs that busy-poll (see tests/src/serial.rs).
fn heavy_lock() -> std::io::Result<File> {
    let path = std::env::temp_dir().join("nfv-dataplane-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}

//! `vswitchctl capture`: opens the output first (so a bad path fails before the switch is
//! bothered), streams the switch's pcap into it, and on SIGINT or SIGTERM asks the switch to
//! end the capture, so the file always ends with whole records and the summary is printed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vswitch::capture::Direction;
use vswitch::ctl::{CaptureArgs, CtlClient};

use crate::Failure;

pub fn run(
    ctl: &Path,
    port: &str,
    direction: &str,
    count: Option<u64>,
    write: &Path,
) -> Result<String, Failure> {
    let direction = match direction {
        "rx" => Direction::Rx,
        "tx" => Direction::Tx,
        _ => Direction::Both,
    };
    let to_stdout = write == Path::new("-");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let f = File::create(write).map_err(|e| {
            Failure::Output(format!(
                "cannot write the capture file {}: {e}",
                write.display()
            ))
        })?;
        Box::new(BufWriter::new(f))
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Failure::Output(format!("installing a signal handler: {e}")))?;
    }
    let args = CaptureArgs {
        port: port.to_owned(),
        direction,
        count,
    };
    let mut client = CtlClient::connect(ctl)?;
    let summary = client.capture(&args, &mut out, &stop, |s| {
        eprintln!(
            "vswitchctl: capturing on {} ({}), {} bytes per frame at most{}",
            s.port,
            s.direction,
            s.snaplen,
            match count {
                Some(n) => format!(", {n} frame(s)"),
                None => ", Ctrl-C to stop".to_owned(),
            }
        );
    })?;
    out.flush()
        .map_err(|e| Failure::Output(format!("writing the capture failed: {e}")))?;
    eprintln!(
        "vswitchctl: {} frame(s) captured, {} dropped by the capture ({})",
        summary.captured, summary.dropped, summary.ended
    );
    Ok(String::new())
}

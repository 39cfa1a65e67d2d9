//! The loop the per-packet transition baselines share: one thread, pinned, moves packets one at
//! a time through a transition (a system call, a KVM exit, a view switch) and a copy, stamping
//! each packet before and reading the stamp back after, as the two-core scenarios do.
//!
//! Nothing can be lost here (the transition either happens or the trial fails), so these rows
//! show loss 0 by construction; what they show is the cost of one transition per packet.

use notify::tsc;

use crate::error::Result;
use crate::latency::Latency;
use crate::pacing::Pacer;
use crate::packet::{self, Receiver};
use crate::pin;

use super::{Measurement, Trial};

/// Packets between two looks at the clock when not rate-limited.
const BURST: usize = 32;

/// Runs `trial` (warm-up, then the window) on `core`: `transit(src, dst)` takes one packet
/// through the transition and leaves what arrived in `dst`.
pub fn measure(
    trial: &Trial,
    core: usize,
    mut transit: impl FnMut(&[u8], &mut [u8]) -> Result<()>,
) -> Result<Measurement> {
    let _pin = pin::current(core)?;
    if !trial.warmup.is_zero() {
        window(trial, 0, trial.warmup.as_secs_f64(), &mut transit)?;
    }
    window(trial, 1, trial.duration.as_secs_f64(), &mut transit)
}

fn window(
    trial: &Trial,
    run: u32,
    secs: f64,
    transit: &mut impl FnMut(&[u8], &mut [u8]) -> Result<()>,
) -> Result<Measurement> {
    let size = trial.frame_size as usize;
    let hz = tsc::hz();
    let mut src = packet::template(packet::mac(2), packet::mac(1), size, run);
    let mut dst = vec![0u8; size];
    let mut rx = Receiver::new(run);
    let mut latency = Latency::new();
    let mut sent = 0u64;
    let start = tsc::now();
    let end = start + crate::num::cycles(secs, hz);
    let pacer = Pacer::new(start, trial.rate_pps, hz);
    loop {
        let t = tsc::now();
        if t >= end {
            break;
        }
        let n = pacer.due(t, sent, BURST);
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        for _ in 0..n {
            packet::stamp(&mut src, sent, tsc::now());
            transit(&src, &mut dst)?;
            sent += 1;
            if let Some(s) = rx.accept(&dst) {
                latency.record(s.tsc, tsc::now());
            }
        }
    }
    let elapsed = tsc::now().saturating_sub(start).max(1);
    Ok(Measurement {
        sent,
        received: rx.received,
        seconds: elapsed as f64 / hz as f64,
        cycles_per_packet: elapsed as f64 / sent.max(1) as f64,
        cycles_of: "loop",
        latency,
        errors: rx.out_of_order,
        detail: None,
    })
}

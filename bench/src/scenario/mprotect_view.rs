//! `mprotect-view`: the per-packet cost of the fast path's mprotect fallback. Each packet enters
//! a protected view of the "peer's buffers" (mprotect to read-write), copies the packet into the
//! next buffer there, reads it back (what the peer will find), and leaves the view (mprotect to
//! none): two system calls and a TLB flush per packet.
//!
//! The view covers 64 KiB (16 pages), the order of one peer queue's ring and buffers; buffers
//! rotate through it so the copy does not always hit the same cache lines.

use crate::error::{Error, Result};
use crate::view::View;

use super::{baseline, Env, Measurement, Scenario, Trial};

/// Bytes the view covers.
const VIEW_BYTES: usize = 64 << 10;

struct MprotectView {
    core: usize,
    view: View,
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    let view = View::new(VIEW_BYTES).map_err(Error::io("mapping the protected view"))?;
    Ok(Box::new(MprotectView {
        core: env.cores.generator,
        view,
    }))
}

impl Scenario for MprotectView {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        let stride = (trial.frame_size as usize).next_multiple_of(64);
        let slots = (self.view.len() / stride).max(1);
        let view = &mut self.view;
        let mut slot = 0usize;
        baseline::measure(trial, self.core, |src, dst| {
            let off = slot * stride;
            slot = (slot + 1) % slots;
            let mut e = view
                .enter()
                .map_err(Error::io("mprotect (enter the view)"))?;
            e.write(off, src);
            e.read(off, dst);
            e.leave().map_err(Error::io("mprotect (leave the view)"))
        })
    }
}

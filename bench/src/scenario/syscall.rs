//! `syscall`: one system call per packet. `getppid` is the cheapest call glibc does not answer
//! from a cache, so each packet pays one real user -> kernel -> user transition, plus the packet
//! copy every scenario pays.

use crate::error::Result;

use super::{baseline, Env, Measurement, Scenario, Trial};

struct Syscall {
    core: usize,
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    Ok(Box::new(Syscall {
        core: env.cores.generator,
    }))
}

impl Scenario for Syscall {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        baseline::measure(trial, self.core, |src, dst| {
            std::hint::black_box(nix::unistd::getppid());
            dst.copy_from_slice(src);
            Ok(())
        })
    }
}

//! The scenarios and their registry: what a scenario is (something that runs a timed trial at a
//! frame size and an optional rate, and says what it measured), and the list of them.
//!
//! Adding a scenario is one module with an `open` function and one line in [`REGISTRY`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::pin::Cores;

pub mod baseline;
pub mod fastpath;
pub mod kvm_exit;
pub mod mprotect_view;
pub mod ring_limit;
pub mod switch;
pub mod syscall;

/// What one trial asks for.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub frame_size: u32,
    /// The measured window.
    pub duration: Duration,
    /// Traffic before the window, not counted (caches, branch predictors, the switch's FDB).
    pub warmup: Duration,
    /// Offered rate in packets per second; `None`: as fast as the generator can.
    pub rate_pps: Option<f64>,
}

/// What one trial measured.
pub struct Measurement {
    /// Packets the generator handed over during the window.
    pub sent: u64,
    /// Of those, packets that arrived (after draining what was in flight).
    pub received: u64,
    /// Length of the window in seconds (TSC).
    pub seconds: f64,
    /// TSC cycles per packet, of the part named by `cycles_of`.
    pub cycles_per_packet: f64,
    /// Whose cycles: `pmd-busy` (the switch's poll thread, busy iterations only), `consumer`
    /// (the ring's consumer core, busy all the window), `loop` (the single thread of a baseline).
    pub cycles_of: &'static str,
    pub latency: Latency,
    /// Packets that arrived out of order or damaged.
    pub errors: u64,
    /// How the scenario ran, when it chose (the ring limits' winning configuration).
    pub detail: Option<String>,
}

impl Measurement {
    /// Received packets per second.
    pub fn pps(&self) -> f64 {
        crate::num::per_second(self.received, self.seconds)
    }

    /// Packets the generator offered per second.
    pub fn offered_pps(&self) -> f64 {
        crate::num::per_second(self.sent, self.seconds)
    }

    /// Lost fraction of what was sent.
    pub fn loss_ratio(&self) -> f64 {
        crate::num::loss_ratio(self.sent, self.received)
    }
}

/// Where and how scenarios run.
#[derive(Debug, Clone)]
pub struct Env {
    pub cores: Cores,
    /// Scratch space (the switch's sockets); removed by whoever created it.
    pub work_dir: PathBuf,
}

/// A scenario, set up and ready for trials (the switch started, the VM created).
pub trait Scenario {
    /// Runs one trial. Called on the thread the CLI drives, which the scenario pins.
    fn run(&mut self, trial: &Trial) -> Result<Measurement>;
}

/// Sets a scenario up; `Error::Unavailable` when the machine lacks what it needs.
pub type Open = fn(&Env) -> Result<Box<dyn Scenario>>;

/// One line of the registry.
pub struct Entry {
    pub name: &'static str,
    pub summary: &'static str,
    pub open: Open,
}

impl Entry {
    /// Sets the scenario up.
    pub fn open(&self, env: &Env) -> Result<Box<dyn Scenario>> {
        (self.open)(env)
    }
}

/// Every scenario of the design, in the order tables list them.
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: "switch",
        summary: "guest -> vswitch -> guest: two built-in virtio-net guests on one thread, the \
                  switch's poll thread on the other core",
        open: switch::open,
    },
    Entry {
        name: "fastpath-copy",
        summary: "guest -> guest through the fast path, copying into the peer's buffers",
        open: fastpath::open_copy,
    },
    Entry {
        name: "fastpath-zerocopy",
        summary: "guest -> guest through the fast path, the peer's view maps the source buffers",
        open: fastpath::open_zerocopy,
    },
    Entry {
        name: "ring-limit",
        summary: "a bare shared-memory SPSC ring between two cores (memfd mapped twice): the \
                  physical limit of this machine",
        open: ring_limit::open,
    },
    Entry {
        name: "ring-limit-desc",
        summary: "the same ring carrying 16-byte descriptors of frames that stay in the \
                  producer's pool, read in place: the limit of zero-copy",
        open: ring_limit::open_desc,
    },
    Entry {
        name: "syscall",
        summary: "one system call (getppid) and a packet copy per packet",
        open: syscall::open,
    },
    Entry {
        name: "kvm-exit",
        summary: "one KVM exit per packet: a minimal real-mode guest executing `out` in a loop",
        open: kvm_exit::open,
    },
    Entry {
        name: "mprotect-view",
        summary: "enter and leave a protected view with two mprotect calls per packet around \
                  the packet copy (the fast path's fallback where PKU is missing)",
        open: mprotect_view::open,
    },
];

fn known() -> String {
    REGISTRY
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry entry named `name`.
pub fn find(name: &str) -> Result<&'static Entry> {
    REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::UnknownScenario {
            name: name.to_owned(),
            known: known(),
        })
}

/// Resolves a `--scenario` list: names, or `all` (every scenario that has landed). Duplicates
/// are dropped; registry order is kept for `all`, the given order otherwise.
pub fn resolve(names: &[String]) -> Result<Vec<&'static Entry>> {
    let mut out: Vec<&'static Entry> = Vec::new();
    for n in names {
        let add: Vec<&'static Entry> = if n == "all" {
            REGISTRY.iter().collect()
        } else {
            vec![find(n)?]
        };
        for e in add {
            if !out.iter().any(|o| o.name == e.name) {
                out.push(e);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::BadArgument(
            "no scenario given: --scenario NAME[,NAME...] or --scenario all".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unknown_scenario_lists_the_known_ones() {
        let msg = find("warp-drive").err().expect("refused").to_string();
        assert!(
            msg.contains("ring-limit") && msg.contains("warp-drive"),
            "{msg}"
        );
    }

    #[test]
    fn all_means_every_scenario_once() {
        let v = resolve(&["switch".into(), "all".into()]).unwrap();
        let names: Vec<_> = v.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "switch",
                "fastpath-copy",
                "fastpath-zerocopy",
                "ring-limit",
                "ring-limit-desc",
                "syscall",
                "kvm-exit",
                "mprotect-view"
            ]
        );
        assert!(resolve(&[]).is_err());
    }

    #[test]
    fn registry_names_are_unique() {
        for (i, a) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[i + 1..].iter().all(|b| b.name != a.name));
        }
    }
}

//! `switch`: guest -> vswitch -> guest. The switch runs in this process exactly as the `vswitch`
//! binary would (library `Switch`, one poll thread pinned to the peer core, two server-mode
//! vhost-user ports on sockets in a scratch directory). Two built-in virtio-net guests
//! ([`vhost_user::guest::Guest`]: their own memfd memory, one queue pair) connect to it over
//! vhost-user.
//!
//! ONE thread, pinned to the generator core, drives both guests: it fills guest A's transmit
//! queue with frames to B's MAC (B announced itself first, so the switch has learnt it and does
//! not flood) and empties guest B's receive queue. Frames carry a sequence number and a TSC
//! timestamp; loss is what was sent minus what arrived after draining, latency the TSC difference
//! at arrival. Two busy threads in all: this one and the switch's poll thread.
//!
//! A full transmit queue pushes back on the generator instead of dropping (virtio has no loss on
//! transmit), so at an unlimited rate the switch sets the pace; loss happens where the switch
//! finds no receive buffer in B.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use notify::tsc;
use vhost_user::guest::{Guest, GuestConfig};
use vswitch::config::{Config, PortSpec};
use vswitch::ctl::{CtlHandler, PmdStatsReply};
use vswitch::switch::Switch;

use crate::error::{Error, Result};
use crate::latency::Latency;
use crate::pacing::Pacer;
use crate::packet::{self, Receiver};
use crate::pin::{self, Cores};

use super::{Env, Measurement, Scenario, Trial};

const MAC_A: [u8; 6] = packet::mac(0x0a);
const MAC_B: [u8; 6] = packet::mac(0x0b);
/// Frames pushed per transmit burst (the switch's burst size).
const TX_BURST: usize = 32;
/// Frames taken per receive call.
const RX_BURST: usize = 64;
/// Run id of the set-up frames (never a window's).
const HELLO_RUN: u32 = u32::MAX;
/// How long the guests may take to come up and see each other's frames.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Draining after a window stops when everything arrived, nothing arrived for this long, or
/// [`DRAIN_MAX`] passed.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// The switch and its scratch directory; shut down and removed on drop.
struct Running {
    switch: Switch,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.switch.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct SwitchScenario {
    cores: Cores,
    // Guests first: they disconnect before the switch shuts down.
    a: Guest,
    b: Guest,
    running: Running,
    runs: u32,
    scratch: Vec<u8>,
}

fn guest_config(name: &str) -> GuestConfig {
    GuestConfig {
        name: name.into(),
        ..GuestConfig::default()
    }
}

pub fn open(env: &Env) -> Result<Box<dyn Scenario>> {
    env.cores.check().map_err(|e| e.unavailable("switch"))?;
    let dir = env.work_dir.join(format!("switch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    // The ports are built by the switch's own configuration code, as `vswitch --vhost-server`
    // would build them.
    let peer = env.cores.peer.to_string();
    let sock = |n: &str| format!("{n}={}", dir.join(format!("{n}.sock")).display());
    let (sa, sb) = (sock("a"), sock("b"));
    let args = [
        "vswitch",
        "--pmd-cores",
        peer.as_str(),
        "--vhost-server",
        sa.as_str(),
        "--vhost-server",
        sb.as_str(),
    ];
    let cfg = Config::parse_from(args).map_err(|e| Error::Switch(e.to_string()))?;
    let switch = Switch::start(&cfg).map_err(Error::Switch)?;
    let running = Running { switch, dir };
    for p in &cfg.ports {
        running.switch.add_port(p.clone()).map_err(Error::Switch)?;
    }
    let [pa, pb] = cfg.ports.as_slice() else {
        return Err(Error::Switch(format!(
            "expected two ports from the configuration, got {}",
            cfg.ports.len()
        )));
    };
    let connect = |p: &PortSpec, name: &str| {
        Guest::connect(&p.path, &guest_config(name)).map_err(|source| Error::Guest {
            guest: name.into(),
            source,
        })
    };
    let a = connect(pa, "bench-guest-a")?;
    let b = connect(pb, "bench-guest-b")?;
    let mut s = SwitchScenario {
        cores: env.cores,
        a,
        b,
        running,
        runs: 0,
        scratch: Vec::with_capacity(4096),
    };
    s.handshake()?;
    Ok(Box::new(s))
}

/// Sends `frame` from `from` until `to` receives a frame from `src_mac`, or times out.
fn greet(
    from: &mut Guest,
    to: &mut Guest,
    frame: &[u8],
    src_mac: [u8; 6],
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut scratch = Vec::new();
    loop {
        from.tx.reclaim();
        if from.tx.push_tx(frame) {
            from.tx.publish();
        }
        std::thread::sleep(Duration::from_millis(10));
        let mut seen = false;
        to.rx.recv(usize::MAX, &mut scratch, |f| {
            seen |= f.len() >= 12 && f[6..12] == src_mac;
        });
        if seen {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::measurement(
                "switch",
                format!(
                    "{what}: no frame crossed the switch within {SETUP_TIMEOUT:?} (are the \
                     guests' ports running? RUST_LOG=info shows the switch's log)"
                ),
            ));
        }
    }
}

fn pmd_totals(r: &PmdStatsReply) -> (u64, u64) {
    r.pmds
        .iter()
        .fold((0, 0), |(p, b), s| (p + s.packets, b + s.busy_cycles))
}

impl SwitchScenario {
    /// B announces itself (flooded to A: the switch learns B), then A sends to B (unicast now:
    /// the switch learns A). Both directions have crossed the switch when this returns.
    fn handshake(&mut self) -> Result<()> {
        let hello_b = packet::template(MAC_A, MAC_B, 64, HELLO_RUN);
        greet(
            &mut self.b,
            &mut self.a,
            &hello_b,
            MAC_B,
            "guest B announcing itself",
        )?;
        let hello_a = packet::template(MAC_B, MAC_A, 64, HELLO_RUN);
        greet(
            &mut self.a,
            &mut self.b,
            &hello_a,
            MAC_A,
            "guest A reaching guest B",
        )?;
        Ok(())
    }

    fn window(&mut self, trial: &Trial, secs: f64) -> Result<Measurement> {
        self.runs += 1;
        let run = self.runs;
        let size = trial.frame_size as usize;
        let hz = tsc::hz();
        let mut pkt = packet::template(MAC_B, MAC_A, size, run);
        let mut rx = Receiver::new(run);
        let mut latency = Latency::new();
        let (a, b, scratch) = (&mut self.a, &mut self.b, &mut self.scratch);
        let mut sent = 0u64;
        let before = self.running.switch.pmd_stats();
        let start = tsc::now();
        let end = start + crate::num::cycles(secs, hz);
        let pacer = Pacer::new(start, trial.rate_pps, hz);
        loop {
            let t = tsc::now();
            if t >= end {
                break;
            }
            a.tx.reclaim();
            let due = pacer.due(t, sent, TX_BURST);
            let mut n = 0;
            while n < due {
                packet::stamp(&mut pkt, sent, tsc::now());
                if !a.tx.push_tx(&pkt) {
                    break;
                }
                sent += 1;
                n += 1;
            }
            if n > 0 {
                a.tx.publish();
            }
            b.rx.recv(RX_BURST, scratch, |f| {
                if let Some(s) = rx.accept(f) {
                    latency.record(s.tsc, tsc::now());
                }
            });
        }
        let stop = tsc::now();
        let after = self.running.switch.pmd_stats();
        // Drain what is still in the rings.
        let deadline = Instant::now() + DRAIN_MAX;
        let mut last_progress = Instant::now();
        while rx.received < sent && Instant::now() < deadline {
            a.tx.reclaim();
            let got = b.rx.recv(RX_BURST, scratch, |f| {
                if let Some(s) = rx.accept(f) {
                    latency.record(s.tsc, tsc::now());
                }
            });
            if got > 0 {
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= DRAIN_QUIET {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
        let (p0, b0) = pmd_totals(&before);
        let (p1, b1) = pmd_totals(&after);
        let cycles = stop.saturating_sub(start).max(1);
        Ok(Measurement {
            sent,
            received: rx.received,
            seconds: cycles as f64 / hz as f64,
            cycles_per_packet: b1.saturating_sub(b0) as f64 / p1.saturating_sub(p0).max(1) as f64,
            cycles_of: "pmd-busy",
            latency,
            errors: rx.out_of_order,
            detail: None,
        })
    }
}

impl Scenario for SwitchScenario {
    fn run(&mut self, trial: &Trial) -> Result<Measurement> {
        let _pin = pin::current(self.cores.generator)?;
        if !trial.warmup.is_zero() {
            self.window(trial, trial.warmup.as_secs_f64())?;
        }
        self.window(trial, trial.duration.as_secs_f64())
    }
}

//! Command-line pieces shared by the example VNFs.

use std::path::PathBuf;

use clap::Args;
use hypervisor_hooks::proto::{parse_mac, Mode};

use crate::FpConfig;

/// How a fast-path guest attaches to the switch. (Every example binary also takes
/// `--print-trampoline`: print the manifest line that approves its trampoline, and exit.)
#[derive(Debug, Clone, Args)]
pub struct GuestArgs {
    /// The switch's vhost-user socket of this guest's port (a server-mode port).
    #[arg(long, value_name = "SOCKETPATH")]
    pub socket: PathBuf,
    /// The port's name in the switch (the hooks check it is us).
    #[arg(long)]
    pub port: String,
    /// This guest's MAC address.
    #[arg(long, value_parser = mac_arg)]
    pub mac: [u8; 6],
    /// The switch's hooks socket: enables fast-path channels.
    #[arg(long, value_name = "SOCKETPATH")]
    pub hooks: Option<PathBuf>,
    /// Ring size of every queue (power of two, 64..=4096).
    #[arg(long, default_value_t = 256, value_parser = ring_arg)]
    pub queue_size: u16,
    /// Use hugepage-backed memory (needs free 2 MB hugepages).
    #[arg(long)]
    pub huge: bool,
    /// Pin the data-path thread to this core.
    #[arg(long)]
    pub core: Option<usize>,
}

impl GuestArgs {
    pub fn config(&self) -> FpConfig {
        FpConfig {
            hooks: self.hooks.clone(),
            queue_size: self.queue_size,
            huge: self.huge,
            ..FpConfig::new(self.socket.clone(), &self.port, self.mac)
        }
    }

    /// Pins the calling thread when `--core` was given.
    pub fn pin(&self) {
        if let Some(c) = self.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                eprintln!("warning: could not pin to core {c}");
            }
        }
    }
}

/// Which path frames take to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathArg {
    /// Through the switch.
    Switch,
    /// Fast path, copy mode (the receiver dedicates a receive queue; we write into it).
    Copy,
    /// Fast path, zero-copy (we dedicate a transmit queue; the receiver reads it in place).
    ZeroCopy,
}

impl PathArg {
    pub fn mode(self) -> Option<Mode> {
        match self {
            PathArg::Switch => None,
            PathArg::Copy => Some(Mode::Copy),
            PathArg::ZeroCopy => Some(Mode::ZeroCopy),
        }
    }
}

pub fn mac_arg(s: &str) -> Result<[u8; 6], String> {
    let m =
        parse_mac(s).ok_or_else(|| format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if m[0] & 1 != 0 {
        return Err(format!(
            "`{s}` is a group address; a guest's MAC must be unicast"
        ));
    }
    Ok(m)
}

fn ring_arg(s: &str) -> Result<u16, String> {
    let n: u16 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(64..=4096).contains(&n) || !n.is_power_of_two() {
        return Err(format!(
            "ring size {n}: expected a power of two in 64..=4096"
        ));
    }
    Ok(n)
}

/// Sets up logging to stderr (RUST_LOG, default warn).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

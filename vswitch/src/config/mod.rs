//! The switch's configuration: the command line (clap) and an optional TOML file, merged
//! and validated into one [`Config`] before anything is opened or spawned.
//!
//! The file gives the base; the command line wins for single settings and adds ports.
//! Every value is checked here so that a typo is reported once, naming the offending value
//! and what was expected, instead of surfacing later as a failed bind or a silent default.
//! [`PortSpec::validate`] is public because the control socket's `add-port` carries a
//! `PortSpec` from outside and must pass the same checks.

mod cli;
mod cores;
mod error;
mod file;
mod merge;
mod spec;
#[cfg(test)]
mod tests;
mod validate;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use cli::Cli;
use file::parse_file;
use merge::build;

pub use cores::{available_cores, format_core_list, parse_core_list};
pub use error::ConfigError;
pub use spec::{
    DpdkPortSpec, PortMode, PortSpec, VxlanSpec, DEFAULT_MAC_AGING_SECS, DPDK_MTU_RANGE,
    MAC_AGING_RANGE, MAX_PORT_NAME_LEN, MAX_QUEUE_PAIRS, MAX_SOCKET_PATH_LEN,
    MAX_TUNNELS_PER_UPLINK, VLAN_RANGE,
};
pub use validate::{is_pci_devargs, parse_vxlan, validate_port_name};

/// The validated configuration the switch starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// File ports first, in file order; then `--vhost-server` ports, then `--vhost-client`.
    pub ports: Vec<PortSpec>,
    /// One PMD thread per entry, pinned to that core. Never empty.
    pub pmd_cores: Vec<usize>,
    /// Longest nap of an idle PMD thread, microseconds (0: poll without pause).
    pub pmd_sleep_max_us: u32,
    /// Length of one interval of queue-load measurement, seconds
    /// ([`crate::rxq::INTERVAL_SECS_RANGE`]).
    pub pmd_rxq_interval_secs: u32,
    /// Control socket to listen on; `None`: no control socket.
    pub ctl: Option<PathBuf>,
    /// Where to serve Prometheus metrics; `None`: no metrics server.
    pub metrics: Option<std::net::SocketAddr>,
    pub mac_aging_secs: u32,
    /// `--log` or the file's `log`; `None`: use RUST_LOG, see [`Config::log_filter`].
    pub log: Option<String>,
    /// The `--config` file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The hooks socket fast-path guests talk to; `None`: no fast path.
    pub hooks: Option<PathBuf>,
    /// Approved trampoline digests (required with `hooks`).
    pub fastpath_manifest: Option<PathBuf>,
    /// Set only by code embedding the switch, never by a flag or file: verify fast-path
    /// trampolines by digest alone, for this reason (see
    /// `hypervisor_hooks::verify::Manifest::without_mapping_scan`).
    pub fastpath_unscanned: Option<String>,
    /// `--dpdk-eal`, split at whitespace; `None`: the switch chooses (`dpdk::default_eal_args`).
    pub dpdk_eal: Option<Vec<String>>,
    pub dpdk_ports: Vec<DpdkPortSpec>,
    pub vxlan: Vec<VxlanSpec>,
    /// Remote MACs accepted (and local MACs exported) per EVPN segment.
    pub evpn_mac_limit: usize,
    /// Seconds a withdrawn remote MAC or flood VTEP stays in the data path (0: none).
    pub evpn_hold_secs: u32,
}

impl Config {
    /// Whether the switch needs the DPDK EAL.
    pub fn uses_dpdk(&self) -> bool {
        !self.dpdk_ports.is_empty()
    }

    /// Whether the DPDK port `name` carries VXLAN tunnels.
    pub fn is_underlay(&self, name: &str) -> bool {
        self.vxlan.iter().any(|v| v.uplink == name)
    }
}

impl Config {
    /// Parses the process's command line (and the `--config` file it names).
    pub fn from_args() -> Result<Config, ConfigError> {
        Config::parse_from(std::env::args_os())
    }

    /// Parses `args` (the first item is the program name, as with `std::env::args_os`).
    pub fn parse_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Config::parse_with_cores(args, &available_cores())
    }

    /// As [`Config::parse_from`], checking `--pmd-cores` against `available` instead of
    /// this process's affinity (tests, and tools that plan for another machine).
    pub fn parse_with_cores<I, T>(args: I, available: &[usize]) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let file = match &cli.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((path.clone(), parse_file(path, &text)?))
            }
            None => None,
        };
        build(cli, file, available)
    }

    /// The tracing filter to install: `--log`/file `log`, else RUST_LOG, else `info`.
    pub fn log_filter(&self) -> String {
        match &self.log {
            Some(filter) => filter.clone(),
            None => std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "info".to_owned()),
        }
    }
}

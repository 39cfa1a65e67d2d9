//! [`ConfigError`], the crate's one error enum for configuration: every way a command line,
//! a config file or an `add-port` request can be wrong.

use std::path::PathBuf;

use super::spec::{MAX_PORT_NAME_LEN, MAX_QUEUE_PAIRS};

/// Everything that can be wrong with a configuration. Messages name the value and say what
/// is expected, because the operator reads them on a terminal with no other context.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Command-line syntax error, or `--help`/`--version` (use [`clap::Error::exit`] on it).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("--hooks needs --fastpath-manifest: without approved trampolines no guest could be granted a channel")]
    HooksWithoutManifest,
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{option} `{value}`: expected {expected}")]
    BadArgument {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "port name `{name}` is not valid: {reason} (expected 1 to {MAX_PORT_NAME_LEN} of \
         A-Z a-z 0-9 _ - starting with a letter or digit)"
    )]
    BadPortName { name: String, reason: &'static str },
    #[error("port name `{0}` is used twice: every port needs its own name")]
    DuplicatePortName(String),
    #[error("socket path {path} is used by both {first} and {second}: give each its own path")]
    DuplicateSocketPath {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("socket path `{path}` for {owner} is not valid: {reason}")]
    BadSocketPath {
        owner: String,
        path: PathBuf,
        reason: String,
    },
    #[error("port `{port}`: VLAN `{value}` is out of range: expected an access VLAN id 1..=4094")]
    VlanOutOfRange { port: String, value: String },
    #[error(
        "port `{port}`: queues `{value}` is out of range: expected 1..={MAX_QUEUE_PAIRS} \
         queue pairs"
    )]
    QueuesOutOfRange { port: String, value: String },
    #[error("{option} names port `{name}`, which is not configured by --vhost-server, --vhost-client, --dpdk-port, --vxlan or the config file")]
    UnknownPort { option: &'static str, name: String },
    #[error("DPDK ports need a vswitch built with the `dpdk` feature (cargo build -p vswitch --features dpdk, with libdpdk-dev installed)")]
    DpdkNotBuilt,
    #[error("--dpdk-port `{value}`: {reason} (expected NAME=DEVARGS, e.g. up0=net_af_packet0,iface=eth1 or up0=0000:01:00.0)")]
    BadDpdkPort { value: String, reason: String },
    #[error("--vxlan `{value}`: {reason} (expected NAME=LOCAL_IP,REMOTE_IP[,REMOTE_IP...],VNI,UPLINK, e.g. vx0=10.0.0.1,10.0.0.2,42,up0; with --evpn the remotes may be left out: vx0=10.0.0.1,42,up0)")]
    BadVxlan { value: String, reason: String },
    #[error("{option} is given twice for port `{name}`: give it once")]
    DuplicatePortSetting { option: &'static str, name: String },
    #[error("core list `{list}` is not valid: {reason} (expected e.g. `1`, `0,1`, `2-5`)")]
    BadCoreList { list: String, reason: String },
    #[error("core list `{list}` names core {core}, which this process cannot run on (available: {available})")]
    CoreNotAvailable {
        list: String,
        core: usize,
        available: String,
    },
    #[error("EVPN MAC limit `{value}` is out of range: expected 1..=65536 MACs per segment")]
    EvpnMacLimitOutOfRange { value: String },
    #[error("EVPN hold `{value}` seconds is out of range: expected 0..=3600")]
    EvpnHoldOutOfRange { value: String },
    #[error("MAC aging `{value}` seconds is out of range: expected 1..=86400")]
    MacAgingOutOfRange { value: String },
    #[error("log filter `{value}` is not valid: {reason} (expected a level off|error|warn|info|debug|trace, or target=level,...)")]
    BadLogFilter { value: String, reason: String },
}

//! The switch's configuration: the command line (clap) and an optional TOML file, merged
//! and validated into one [`Config`] before anything is opened or spawned.
//!
//! The file gives the base; the command line wins for single settings and adds ports.
//! Every value is checked here so that a typo is reported once, naming the offending value
//! and what was expected, instead of surfacing later as a failed bind or a silent default.
//! [`PortSpec::validate`] is public because the control socket's `add-port` carries a
//! `PortSpec` from outside and must pass the same checks.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Longest port name: it is printed in tables and used as a key in the control protocol.
pub const MAX_PORT_NAME_LEN: usize = 32;
/// Highest queue-pair count a port may ask for (virtio-net MQ; more only costs PMD polling).
pub const MAX_QUEUE_PAIRS: u16 = 16;
/// Access VLAN ids: 0 means "priority tag only" and 4095 is reserved (IEEE 802.1Q).
pub const VLAN_RANGE: std::ops::RangeInclusive<u16> = 1..=4094;
/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// MAC aging bounds. The FDB compares 32-bit second counters with a signed difference, so
/// the ceiling must stay far below 2^31; a day is already longer than any sane setting.
pub const MAC_AGING_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;
/// Default MAC aging, as in Open vSwitch and most hardware bridges.
pub const DEFAULT_MAC_AGING_SECS: u32 = 300;
/// Core ids beyond this are surely typos; the bound also keeps `0-4000000000` from
/// allocating a huge list before the availability check rejects it.
const MAX_CORE_ID: usize = 4095;

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
    #[error("--vxlan `{value}`: {reason} (expected NAME=LOCAL_IP,REMOTE_IP[,REMOTE_IP...],VNI,UPLINK, e.g. vx0=10.0.0.1,10.0.0.2,42,up0)")]
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
    #[error("MAC aging `{value}` seconds is out of range: expected 1..=86400")]
    MacAgingOutOfRange { value: String },
    #[error("log filter `{value}` is not valid: {reason} (expected a level off|error|warn|info|debug|trace, or target=level,...)")]
    BadLogFilter { value: String, reason: String },
}

/// How the switch reaches the vhost-user frontend of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// The switch listens on the socket; the frontend (QEMU, virtio-user) connects.
    Server,
    /// The switch connects to a socket the frontend listens on, and reconnects by itself.
    Client,
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortMode::Server => "server",
            PortMode::Client => "client",
        })
    }
}

fn default_queues() -> u16 {
    1
}

/// One vhost-user port as configured. Also the payload of the control socket's `add-port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub mode: PortMode,
    pub path: PathBuf,
    /// Access VLAN: frames from this port are in this VLAN and leave it untagged.
    /// `None`: the port is in the untagged domain (VLAN 0 in the FDB).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Maximum queue pairs offered to the frontend (virtio-net MQ).
    #[serde(default = "default_queues")]
    pub queues: u16,
    /// The port may open fast-path channels with other such ports of its VLAN.
    #[serde(default)]
    pub fastpath: bool,
}

impl PortSpec {
    /// The checks that hold for one port alone (name, path, VLAN, queues). Checks across
    /// ports (duplicates) are the caller's: the config does them at start, the switch at
    /// `add-port` against its live ports.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_port_name(&self.name)?;
        validate_socket_path(&self.path, || format!("port `{}`", self.name))?;
        if let Some(vlan) = self.vlan {
            if !VLAN_RANGE.contains(&vlan) {
                return Err(ConfigError::VlanOutOfRange {
                    port: self.name.clone(),
                    value: vlan.to_string(),
                });
            }
        }
        if !(1..=MAX_QUEUE_PAIRS).contains(&self.queues) {
            return Err(ConfigError::QueuesOutOfRange {
                port: self.name.clone(),
                value: self.queues.to_string(),
            });
        }
        Ok(())
    }
}

/// A DPDK port (an uplink) as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpdkPortSpec {
    pub name: String,
    /// Device arguments as `rte_dev_probe` takes them: a PCI address, or a vdev name and its
    /// arguments (`net_af_packet0,iface=eth1`).
    pub devargs: String,
    /// Access VLAN when the port is bridged.
    pub vlan: Option<u16>,
    /// IP MTU to configure; `None`: the device's own (1500 for most).
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// IP MTUs a DPDK port may be given.
pub const DPDK_MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=9000;

/// A VXLAN tunnel port as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    pub name: String,
    /// This VTEP's address on the underlay.
    pub local: Ipv4Addr,
    /// The remote VTEPs (head-end replication list).
    pub remotes: Vec<Ipv4Addr>,
    pub vni: u32,
    /// The DPDK port it runs over (which then carries tunnels only).
    pub uplink: String,
    /// The switch VLAN the tunnel's segment belongs to.
    pub vlan: Option<u16>,
}

/// Most tunnels over one uplink.
pub const MAX_TUNNELS_PER_UPLINK: usize = 64;

/// The validated configuration the switch starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// File ports first, in file order; then `--vhost-server` ports, then `--vhost-client`.
    pub ports: Vec<PortSpec>,
    /// One PMD thread per entry, pinned to that core. Never empty.
    pub pmd_cores: Vec<usize>,
    /// Longest nap of an idle PMD thread, microseconds (0: poll without pause).
    pub pmd_sleep_max_us: u32,
    /// Control socket to listen on; `None`: no control socket.
    pub ctl: Option<PathBuf>,
    pub mac_aging_secs: u32,
    /// `--log` or the file's `log`; `None`: use RUST_LOG, see [`Config::log_filter`].
    pub log: Option<String>,
    /// The `--config` file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The hooks socket fast-path guests talk to; `None`: no fast path.
    pub hooks: Option<PathBuf>,
    /// Approved trampoline digests (required with `hooks`).
    pub fastpath_manifest: Option<PathBuf>,
    /// `--dpdk-eal`, split at whitespace; `None`: the switch chooses (`dpdk::default_eal_args`).
    pub dpdk_eal: Option<Vec<String>>,
    pub dpdk_ports: Vec<DpdkPortSpec>,
    pub vxlan: Vec<VxlanSpec>,
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

const AFTER_HELP: &str = "\
EXAMPLES:
  Two QEMU guests connecting to the switch, two PMD threads on cores 2 and 3:
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --vhost-server vm2=/run/vswitch/vm2.sock \\
            --port-vlan vm2=20 --port-queues vm1=4 --pmd-cores 2-3 --ctl /run/vswitch/ctl.sock

  A DPDK virtio-user guest that listens itself (the switch connects and reconnects):
    vswitch --vhost-client pktgen=/tmp/pktgen.sock --ctl /tmp/vswitch.ctl

  A guest bridged to the host's eth1 through DPDK's AF_PACKET driver (feature `dpdk`):
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --dpdk-port up0=net_af_packet0,iface=eth1

  The same guest on VXLAN segment 42 to two other hosts, over eth1 (which then carries only
  the tunnels: give this host's VTEP address, not an address the kernel has on eth1):
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --dpdk-port up0=net_af_packet0,iface=eth1 \\
            --vxlan vx42=192.0.2.1,192.0.2.2,192.0.2.3,42,up0

CONFIG FILE (TOML, every key optional, unknown keys are rejected):
    pmd_cores = \"2-3\"
    ctl = \"/run/vswitch/ctl.sock\"
    mac_aging_secs = 300
    log = \"info\"

    dpdk_eal = \"-l 0 --in-memory --no-huge -m 512\"   # optional, see --dpdk-eal
    hooks = \"/run/vswitch/hooks.sock\"   # fast path: guests ask here for channels
    fastpath_manifest = \"/etc/vswitch/trampolines\"

    [[port]]
    name = \"vm1\"
    mode = \"server\"          # or \"client\"
    fastpath = true          # optional: may open fast-path channels
    path = \"/run/vswitch/vm1.sock\"
    vlan = 10                # optional, 1..=4094
    queues = 4               # optional, 1..=16, default 1

    [[dpdk_port]]
    name = \"up0\"
    devargs = \"net_af_packet0,iface=eth1\"
    vlan = 10                # optional, when bridged
    mtu = 1550               # optional, 1280..=9000

    [[vxlan]]
    name = \"vx42\"
    local = \"192.0.2.1\"
    remotes = [\"192.0.2.2\", \"192.0.2.3\"]
    vni = 42
    uplink = \"up0\"
    vlan = 10                # optional

  The command line wins over the file for single settings and adds ports to the file's.
  Relative socket paths are relative to the switch's working directory.";

/// Command-line surface. Values stay strings here so that validation, and its messages,
/// live in one place for the command line and the file alike.
#[derive(Debug, Parser)]
#[command(
    name = "vswitch",
    version,
    about = "Poll-mode userspace L2 switch serving virtio-net guests over vhost-user",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// Add a port in server mode: the switch listens on SOCKETPATH and the guest's
    /// vhost-user frontend (QEMU, virtio-user) connects. NAME: 1-32 of A-Z a-z 0-9 _ -.
    /// Repeatable.
    #[arg(
        long = "vhost-server",
        value_name = "NAME=SOCKETPATH",
        allow_hyphen_values = true
    )]
    vhost_server: Vec<String>,

    /// Add a port in client mode: the frontend listens on SOCKETPATH, the switch connects
    /// to it, and reconnects by itself whenever the frontend goes away. Repeatable.
    #[arg(
        long = "vhost-client",
        value_name = "NAME=SOCKETPATH",
        allow_hyphen_values = true
    )]
    vhost_client: Vec<String>,

    /// Put port NAME in access VLAN VID (1..=4094). Without it the port is untagged.
    /// Repeatable, once per port; overrides the file's `vlan`.
    #[arg(
        long = "port-vlan",
        value_name = "NAME=VID",
        allow_hyphen_values = true
    )]
    port_vlan: Vec<String>,

    /// Offer at most N queue pairs (1..=16, default 1) to port NAME's frontend.
    /// Repeatable, once per port; overrides the file's `queues`.
    #[arg(
        long = "port-queues",
        value_name = "NAME=N",
        allow_hyphen_values = true
    )]
    port_queues: Vec<String>,

    /// Allow port NAME fast-path channels (with other allowed ports of its VLAN). Repeatable.
    #[arg(
        long = "port-fastpath",
        value_name = "NAME",
        allow_hyphen_values = true
    )]
    port_fastpath: Vec<String>,

    /// Add a DPDK port (an uplink; needs the `dpdk` build): DEVARGS as DPDK probes a device, a
    /// NIC's PCI address (`0000:01:00.0`, bound to vfio-pci) or a virtual device
    /// (`net_af_packet0,iface=eth1`, `net_tap0,iface=dtap0`, `net_ring0`). The port is a member
    /// of the switch (bridged), unless a --vxlan runs over it (then it carries only the
    /// tunnels). Repeatable.
    #[arg(
        long = "dpdk-port",
        value_name = "NAME=DEVARGS",
        allow_hyphen_values = true
    )]
    dpdk_port: Vec<String>,

    /// DPDK EAL arguments, one string split at spaces. Default: `-l <a core> --in-memory
    /// --no-telemetry`, with hugepages when at least 256 MB are free and `--no-huge -m 512`
    /// otherwise, and `--no-pci` unless a --dpdk-port is a PCI address.
    #[arg(long = "dpdk-eal", value_name = "ARGS", allow_hyphen_values = true)]
    dpdk_eal: Option<String>,

    /// Give DPDK port NAME an IP MTU of MTU bytes (1280..=9000; default: the device's, 1500
    /// for most). A VXLAN underlay needs the tunnel's inner MTU + 50 to carry full-size frames
    /// (1550 for 1500-byte guests). Repeatable, once per port.
    #[arg(long = "dpdk-mtu", value_name = "NAME=MTU", allow_hyphen_values = true)]
    dpdk_mtu: Vec<String>,

    /// Add a VXLAN tunnel port (RFC 7348) on segment VNI (0..=16777215) from this host's VTEP
    /// address LOCAL_IP to the listed remote VTEPs (flood and learn, head-end replication),
    /// over the DPDK port UPLINK. Frames whose encapsulation would exceed UPLINK's MTU
    /// (inner frame + 36 bytes) are dropped and counted. Repeatable.
    #[arg(
        long = "vxlan",
        value_name = "NAME=LOCAL_IP,REMOTE_IP[,REMOTE_IP...],VNI,UPLINK",
        allow_hyphen_values = true
    )]
    vxlan: Vec<String>,

    /// Listen for fast-path guests on this unix socket (the hypervisor hooks): they ask there
    /// for channels to each other. Needs --fastpath-manifest.
    #[arg(long, value_name = "SOCKETPATH")]
    hooks: Option<PathBuf>,

    /// File of approved trampoline SHA-256 digests, one per line (`fp-pktgen --print-trampoline`
    /// prints a binary's). A guest whose trampoline is not listed gets no channel.
    #[arg(long = "fastpath-manifest", value_name = "FILE")]
    fastpath_manifest: Option<PathBuf>,

    /// Cores for the poll-mode threads, one thread pinned per core: `1`, `0,1`, `2-5`,
    /// `0,2-3`. Every core must be one this process may run on (its CPU affinity).
    /// Default: one PMD thread pinned to the last core this process may run on.
    #[arg(long = "pmd-cores", value_name = "LIST")]
    pmd_cores: Option<String>,

    /// Let an idle poll thread nap, up to USECS microseconds at a time (0..=10000; default 0:
    /// poll continuously, lowest latency). After 1 ms without packets it sleeps 10 us, then
    /// doubles up to USECS, so an idle switch leaves its cores to other work; the first packet
    /// after a pause waits at most one nap. Like Open vSwitch's pmd-sleep-max.
    #[arg(
        long = "pmd-sleep-max",
        value_name = "USECS",
        allow_hyphen_values = true
    )]
    pmd_sleep_max: Option<String>,

    /// Listen for `vswitchctl` on this unix socket. Default: no control socket.
    #[arg(long, value_name = "SOCKETPATH")]
    ctl: Option<PathBuf>,

    /// Read settings and ports from this TOML file first (format below, in --help).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Forget a learned MAC address after SECS seconds without traffic from it
    /// (1..=86400, default 300).
    #[arg(long = "mac-aging", value_name = "SECS", allow_hyphen_values = true)]
    mac_aging: Option<String>,

    /// Log filter: a level (off, error, warn, info, debug, trace) or `target=level,...`.
    /// Default: the RUST_LOG environment variable, else `info`.
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,
}

/// The file's shape. Numbers are read as i64 so that an out-of-range value gets our
/// message ("expected 1..=4094") rather than the TOML parser's integer-overflow one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    port: Vec<FilePort>,
    pmd_cores: Option<String>,
    ctl: Option<PathBuf>,
    mac_aging_secs: Option<i64>,
    log: Option<String>,
    hooks: Option<PathBuf>,
    fastpath_manifest: Option<PathBuf>,
    dpdk_eal: Option<String>,
    #[serde(default)]
    dpdk_port: Vec<FileDpdkPort>,
    #[serde(default)]
    vxlan: Vec<FileVxlan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDpdkPort {
    name: String,
    devargs: String,
    vlan: Option<i64>,
    mtu: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVxlan {
    name: String,
    local: String,
    remotes: Vec<String>,
    vni: i64,
    uplink: String,
    vlan: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePort {
    name: String,
    mode: PortMode,
    path: PathBuf,
    vlan: Option<i64>,
    queues: Option<i64>,
    fastpath: Option<bool>,
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

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn build(
    cli: Cli,
    file: Option<(PathBuf, FileConfig)>,
    available: &[usize],
) -> Result<Config, ConfigError> {
    let (config_file, file) = match file {
        Some((path, f)) => (Some(path), f),
        None => (None, FileConfig::default()),
    };

    let mut ports = Vec::new();
    for p in file.port {
        let vlan = p
            .vlan
            .map(|v| vlan_from_i64(&p.name, v, &v.to_string()))
            .transpose()?;
        let queues = match p.queues {
            Some(q) => queues_from_i64(&p.name, q, &q.to_string())?,
            None => default_queues(),
        };
        ports.push(PortSpec {
            name: p.name,
            mode: p.mode,
            path: p.path,
            vlan,
            queues,
            fastpath: p.fastpath.unwrap_or(false),
        });
    }
    for (option, mode, values) in [
        ("--vhost-server", PortMode::Server, &cli.vhost_server),
        ("--vhost-client", PortMode::Client, &cli.vhost_client),
    ] {
        for value in values {
            let (name, path) = split_assignment(option, value, "NAME=SOCKETPATH")?;
            ports.push(PortSpec {
                name: name.to_owned(),
                mode,
                path: PathBuf::from(path),
                vlan: None,
                queues: default_queues(),
                fastpath: false,
            });
        }
    }

    let mut dpdk_ports = Vec::new();
    for p in file.dpdk_port {
        let vlan = p
            .vlan
            .map(|v| vlan_from_i64(&p.name, v, &v.to_string()))
            .transpose()?;
        let mtu = p
            .mtu
            .map(|m| mtu_from_i64(&p.name, m, &m.to_string()))
            .transpose()?;
        dpdk_ports.push(DpdkPortSpec {
            name: p.name,
            devargs: p.devargs,
            vlan,
            mtu,
        });
    }
    for value in &cli.dpdk_port {
        let (name, devargs) = split_assignment("--dpdk-port", value, "NAME=DEVARGS")?;
        dpdk_ports.push(DpdkPortSpec {
            name: name.to_owned(),
            devargs: devargs.to_owned(),
            vlan: None,
            mtu: None,
        });
    }
    let mut vxlan = Vec::new();
    for v in file.vxlan {
        let text = format!(
            "{}={},{},{},{}",
            v.name,
            v.local,
            v.remotes.join(","),
            v.vni,
            v.uplink
        );
        let mut spec = parse_vxlan(&text)?;
        spec.vlan = v
            .vlan
            .map(|x| vlan_from_i64(&v.name, x, &x.to_string()))
            .transpose()?;
        vxlan.push(spec);
    }
    for value in &cli.vxlan {
        vxlan.push(parse_vxlan(value)?);
    }

    // Names are checked before the per-port overrides so that "unknown port" is never
    // reported for what is really a malformed or duplicated name.
    let mut index_by_name = HashMap::new();
    for (i, port) in ports.iter().enumerate() {
        validate_port_name(&port.name)?;
        if index_by_name.insert(port.name.clone(), i).is_some() {
            return Err(ConfigError::DuplicatePortName(port.name.clone()));
        }
    }
    // Device ports share the name space; their indices are kept apart.
    let mut dpdk_by_name = HashMap::new();
    for (i, p) in dpdk_ports.iter().enumerate() {
        validate_port_name(&p.name)?;
        if index_by_name.contains_key(&p.name) || dpdk_by_name.insert(p.name.clone(), i).is_some() {
            return Err(ConfigError::DuplicatePortName(p.name.clone()));
        }
        validate_devargs(&p.devargs, &format!("{}={}", p.name, p.devargs))?;
    }
    let mut vxlan_by_name = HashMap::new();
    for (i, v) in vxlan.iter().enumerate() {
        validate_port_name(&v.name)?;
        if index_by_name.contains_key(&v.name)
            || dpdk_by_name.contains_key(&v.name)
            || vxlan_by_name.insert(v.name.clone(), i).is_some()
        {
            return Err(ConfigError::DuplicatePortName(v.name.clone()));
        }
    }
    validate_tunnels(&vxlan, &dpdk_by_name)?;

    let mut mtu_set = BTreeSet::new();
    for value in &cli.dpdk_mtu {
        let (name, m) = split_assignment("--dpdk-mtu", value, "NAME=MTU")?;
        let i = port_index(&dpdk_by_name, "--dpdk-mtu", name, &mut mtu_set)?;
        let parsed = m.trim().parse::<i64>().unwrap_or(-1);
        dpdk_ports[i].mtu = Some(mtu_from_i64(name, parsed, m)?);
    }

    let mut vlan_set = BTreeSet::new();
    for value in &cli.port_vlan {
        let (name, vid) = split_assignment("--port-vlan", value, "NAME=VID")?;
        let parsed = vid.trim().parse::<i64>().unwrap_or(-1);
        let vlan = Some(vlan_from_i64(name, parsed, vid)?);
        if let Some(&i) = dpdk_by_name.get(name) {
            port_index(&dpdk_by_name, "--port-vlan", name, &mut vlan_set)?;
            if vxlan.iter().any(|v| v.uplink == name) {
                return Err(ConfigError::BadArgument {
                    option: "--port-vlan",
                    value: value.clone(),
                    expected: "a port that is a member of the switch: this DPDK port carries VXLAN tunnels (give the tunnel the VLAN instead)",
                });
            }
            dpdk_ports[i].vlan = vlan;
            continue;
        }
        if let Some(&i) = vxlan_by_name.get(name) {
            port_index(&vxlan_by_name, "--port-vlan", name, &mut vlan_set)?;
            vxlan[i].vlan = vlan;
            continue;
        }
        let i = port_index(&index_by_name, "--port-vlan", name, &mut vlan_set)?;
        ports[i].vlan = vlan;
    }
    let mut queues_set = BTreeSet::new();
    for value in &cli.port_queues {
        let (name, n) = split_assignment("--port-queues", value, "NAME=N")?;
        let i = port_index(&index_by_name, "--port-queues", name, &mut queues_set)?;
        let parsed = n.trim().parse::<i64>().unwrap_or(-1);
        ports[i].queues = queues_from_i64(name, parsed, n)?;
    }

    let mut fastpath_set = BTreeSet::new();
    for name in &cli.port_fastpath {
        let i = port_index(&index_by_name, "--port-fastpath", name, &mut fastpath_set)?;
        ports[i].fastpath = true;
    }

    for port in &ports {
        port.validate()?;
    }
    if !cfg!(feature = "dpdk") && (!dpdk_ports.is_empty() || cli.dpdk_eal.is_some()) {
        return Err(ConfigError::DpdkNotBuilt);
    }

    let pmd_sleep_max_us = match &cli.pmd_sleep_max {
        None => 0,
        Some(t) => match t.trim().parse::<u32>() {
            Ok(v) if v <= 10_000 => v,
            _ => {
                return Err(ConfigError::BadArgument {
                    option: "--pmd-sleep-max",
                    value: t.clone(),
                    expected: "microseconds, 0..=10000",
                })
            }
        },
    };
    let hooks = cli.hooks.or(file.hooks);
    let fastpath_manifest = cli.fastpath_manifest.or(file.fastpath_manifest);
    if let Some(h) = &hooks {
        validate_socket_path(h, || "--hooks".to_owned())?;
        match &fastpath_manifest {
            None => return Err(ConfigError::HooksWithoutManifest),
            Some(m) if !m.is_file() => {
                return Err(ConfigError::ReadFile {
                    path: m.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the fast-path manifest does not exist or is not a file",
                    ),
                })
            }
            Some(_) => {}
        }
    }

    let ctl = cli.ctl.or(file.ctl);
    let mut owners: HashMap<PathBuf, String> = HashMap::new();
    if let Some(ctl) = &ctl {
        validate_socket_path(ctl, || "--ctl".to_owned())?;
        owners.insert(ctl.clone(), "the control socket".to_owned());
    }
    if let Some(h) = &hooks {
        if let Some(first) = owners.insert(h.clone(), "the hooks socket".to_owned()) {
            return Err(ConfigError::DuplicateSocketPath {
                path: h.clone(),
                first,
                second: "the hooks socket".to_owned(),
            });
        }
    }
    for port in &ports {
        let owner = format!("port `{}`", port.name);
        if let Some(first) = owners.insert(port.path.clone(), owner.clone()) {
            return Err(ConfigError::DuplicateSocketPath {
                path: port.path.clone(),
                first,
                second: owner,
            });
        }
    }

    let pmd_cores = match cli.pmd_cores.or(file.pmd_cores) {
        Some(list) => {
            let cores = parse_core_list(&list).map_err(|reason| ConfigError::BadCoreList {
                list: list.clone(),
                reason,
            })?;
            if let Some(&core) = cores.iter().find(|c| !available.contains(c)) {
                return Err(ConfigError::CoreNotAvailable {
                    list,
                    core,
                    available: format_core_list(available),
                });
            }
            cores
        }
        // The last core is the one least likely to carry the kernel's housekeeping and
        // interrupt load (those default to CPU 0), so the PMD's busy-polling hurts least there.
        None => vec![available.last().copied().unwrap_or(0)],
    };

    let mac_aging_secs = match (cli.mac_aging, file.mac_aging_secs) {
        (Some(text), _) => {
            let secs = text.trim().parse::<u32>().ok();
            match secs {
                Some(s) if MAC_AGING_RANGE.contains(&s) => s,
                _ => return Err(ConfigError::MacAgingOutOfRange { value: text }),
            }
        }
        (None, Some(n)) => match u32::try_from(n) {
            Ok(s) if MAC_AGING_RANGE.contains(&s) => s,
            _ => {
                return Err(ConfigError::MacAgingOutOfRange {
                    value: n.to_string(),
                })
            }
        },
        (None, None) => DEFAULT_MAC_AGING_SECS,
    };

    let log = cli.log.or(file.log);
    if let Some(filter) = &log {
        validate_log_filter(filter)?;
    }

    let dpdk_eal = cli
        .dpdk_eal
        .or(file.dpdk_eal)
        .map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    if let Some(a) = &dpdk_eal {
        if a.is_empty() {
            return Err(ConfigError::BadArgument {
                option: "--dpdk-eal",
                value: String::new(),
                expected: "EAL arguments such as `-l 0 --in-memory --no-huge -m 512`",
            });
        }
    }

    Ok(Config {
        ports,
        pmd_cores,
        ctl,
        mac_aging_secs,
        log,
        config_file,
        pmd_sleep_max_us,
        hooks,
        fastpath_manifest,
        dpdk_eal,
        dpdk_ports,
        vxlan,
    })
}

fn mtu_from_i64(port: &str, m: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(m) {
        Ok(m) if DPDK_MTU_RANGE.contains(&m) => Ok(m),
        _ => Err(ConfigError::BadArgument {
            option: "--dpdk-mtu",
            value: format!("{port}={text}"),
            expected: "an IP MTU in 1280..=9000",
        }),
    }
}

/// DPDK device arguments: not empty, no whitespace (they are one argument to the EAL).
fn validate_devargs(devargs: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| {
        Err(ConfigError::BadDpdkPort {
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if devargs.trim().is_empty() {
        return bad("the device arguments are empty");
    }
    if devargs.chars().any(|c| c.is_whitespace() || c == '\0') {
        return bad("the device arguments contain whitespace");
    }
    Ok(())
}

/// Whether DPDK device arguments name a PCI device (`0000:01:00.0` or `01:00.0`).
pub fn is_pci_devargs(devargs: &str) -> bool {
    let name = devargs.split(',').next().unwrap_or("");
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = name.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    matches!(devfn.split_once('.'), Some((d, f)) if hex(bus, 2) && hex(d, 2) && hex(f, 1))
}

/// Parses `NAME=LOCAL_IP,REMOTE_IP[,REMOTE_IP...],VNI,UPLINK`.
pub fn parse_vxlan(value: &str) -> Result<VxlanSpec, ConfigError> {
    let bad = |reason: String| ConfigError::BadVxlan {
        value: value.to_owned(),
        reason,
    };
    let (name, rest) = value
        .split_once('=')
        .ok_or_else(|| bad("no `=` after the port name".to_owned()))?;
    let fields: Vec<&str> = rest.split(',').map(str::trim).collect();
    if fields.len() < 4 {
        return Err(bad(format!(
            "{} field(s) after `=`; at least 4 are needed",
            fields.len()
        )));
    }
    let ip = |what: &str, s: &str| -> Result<Ipv4Addr, ConfigError> {
        let a: Ipv4Addr = s
            .parse()
            .map_err(|_| bad(format!("{what} `{s}` is not an IPv4 address")))?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(bad(format!("{what} `{s}` is not a unicast host address")));
        }
        Ok(a)
    };
    let n = fields.len();
    let local = ip("local address", fields[0])?;
    let mut remotes = Vec::new();
    for s in &fields[1..n - 2] {
        let r = ip("remote address", s)?;
        if r == local {
            return Err(bad(format!("remote `{s}` is the local address")));
        }
        if remotes.contains(&r) {
            return Err(bad(format!("remote `{s}` is listed twice")));
        }
        remotes.push(r);
    }
    if remotes.len() > crate::vxlan::MAX_REMOTES {
        return Err(bad(format!(
            "{} remotes; at most {} per tunnel",
            remotes.len(),
            crate::vxlan::MAX_REMOTES
        )));
    }
    let vni = fields[n - 2]
        .parse::<u32>()
        .ok()
        .filter(|v| *v <= crate::wire::MAX_VNI)
        .ok_or_else(|| {
            bad(format!(
                "VNI `{}` is not a number in 0..=16777215",
                fields[n - 2]
            ))
        })?;
    let uplink = fields[n - 1];
    if uplink.is_empty() {
        return Err(bad("the uplink name is empty".to_owned()));
    }
    Ok(VxlanSpec {
        name: name.to_owned(),
        local,
        remotes,
        vni,
        uplink: uplink.to_owned(),
        vlan: None,
    })
}

/// Checks across tunnels: each runs over a configured DPDK port, no two on one uplink share
/// local address and VNI, and an uplink carries at most [`MAX_TUNNELS_PER_UPLINK`].
fn validate_tunnels(
    vxlan: &[VxlanSpec],
    dpdk_by_name: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    for (i, v) in vxlan.iter().enumerate() {
        let value = || format!("{}=...,{},{}", v.name, v.vni, v.uplink);
        if !dpdk_by_name.contains_key(&v.uplink) {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!("uplink `{}` is not a --dpdk-port", v.uplink),
            });
        }
        if let Some(o) = vxlan[..i]
            .iter()
            .find(|o| o.uplink == v.uplink && o.vni == v.vni && o.local == v.local)
        {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!(
                    "tunnel `{}` already carries VNI {} from {} over `{}`",
                    o.name, v.vni, v.local, v.uplink
                ),
            });
        }
        if vxlan.iter().filter(|o| o.uplink == v.uplink).count() > MAX_TUNNELS_PER_UPLINK {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!(
                    "more than {MAX_TUNNELS_PER_UPLINK} tunnels over `{}`",
                    v.uplink
                ),
            });
        }
    }
    Ok(())
}

fn split_assignment<'a>(
    option: &'static str,
    value: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), ConfigError> {
    match value.split_once('=') {
        Some((name, rest)) if !rest.is_empty() => Ok((name, rest)),
        _ => Err(ConfigError::BadArgument {
            option,
            value: value.to_owned(),
            expected,
        }),
    }
}

fn port_index(
    index_by_name: &HashMap<String, usize>,
    option: &'static str,
    name: &str,
    seen: &mut BTreeSet<String>,
) -> Result<usize, ConfigError> {
    let Some(&i) = index_by_name.get(name) else {
        return Err(ConfigError::UnknownPort {
            option,
            name: name.to_owned(),
        });
    };
    if !seen.insert(name.to_owned()) {
        return Err(ConfigError::DuplicatePortSetting {
            option,
            name: name.to_owned(),
        });
    }
    Ok(i)
}

fn vlan_from_i64(port: &str, v: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(v) {
        Ok(v) if VLAN_RANGE.contains(&v) => Ok(v),
        _ => Err(ConfigError::VlanOutOfRange {
            port: port.to_owned(),
            value: text.to_owned(),
        }),
    }
}

fn queues_from_i64(port: &str, q: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(q) {
        Ok(q) if (1..=MAX_QUEUE_PAIRS).contains(&q) => Ok(q),
        _ => Err(ConfigError::QueuesOutOfRange {
            port: port.to_owned(),
            value: text.to_owned(),
        }),
    }
}

/// Port names: 1 to 32 of `A-Z a-z 0-9 _ -`, starting with a letter or digit, so they are
/// safe in tables, log lines, JSON keys and shell command lines without quoting.
pub fn validate_port_name(name: &str) -> Result<(), ConfigError> {
    let bad = |reason| {
        Err(ConfigError::BadPortName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_PORT_NAME_LEN {
        return bad("it is too long");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it does not start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("it contains a character other than A-Z a-z 0-9 _ -");
    }
    Ok(())
}

fn validate_socket_path(path: &Path, owner: impl Fn() -> String) -> Result<(), ConfigError> {
    let bytes = path.as_os_str().as_bytes();
    let reason = if bytes.is_empty() {
        "it is empty".to_owned()
    } else if bytes.contains(&0) {
        "it contains a NUL byte".to_owned()
    } else if bytes.len() > MAX_SOCKET_PATH_LEN {
        format!(
            "it is {} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH_LEN}",
            bytes.len()
        )
    } else if bytes.ends_with(b"/") {
        "it names a directory; give the socket file's path".to_owned()
    } else {
        return Ok(());
    };
    Err(ConfigError::BadSocketPath {
        owner: owner(),
        path: path.to_owned(),
        reason,
    })
}

/// Parses a core list such as `1`, `0,1`, `2-5`, `0,2-3` into core ids in the given order.
/// Rejects empty items, reversed ranges and cores named twice.
pub fn parse_core_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    let parse = |s: &str| -> Result<usize, String> {
        let s = s.trim();
        let n: usize = s
            .parse()
            .map_err(|_| format!("`{s}` is not a core number"))?;
        if n > MAX_CORE_ID {
            return Err(format!("core {n} is beyond {MAX_CORE_ID}"));
        }
        Ok(n)
    };
    if list.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    for item in list.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let n = parse(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range `{}` runs backwards", item.trim()));
        }
        for core in lo..=hi {
            if cores.contains(&core) {
                return Err(format!("core {core} is named twice"));
            }
            cores.push(core);
        }
    }
    Ok(cores)
}

/// Formats core ids compactly (`0-3,6`), the inverse of [`parse_core_list`].
pub fn format_core_list(cores: &[usize]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        if sorted[i] == start {
            out.push(start.to_string());
        } else {
            out.push(format!("{start}-{}", sorted[i]));
        }
        i += 1;
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(",")
    }
}

/// The cores this process may run on, ascending: its scheduler affinity as the kernel
/// reports it (`Cpus_allowed_list`, which also reflects cgroup cpusets), falling back to
/// `0..available_parallelism` where /proc is not mounted.
pub fn available_cores() -> Vec<usize> {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_core_list(list).ok())
        });
    let mut cores = from_proc.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    });
    cores.sort_unstable();
    cores
}

fn validate_log_filter(filter: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |reason: String| {
        Err(ConfigError::BadLogFilter {
            value: filter.to_owned(),
            reason,
        })
    };
    if filter.trim().is_empty() {
        return bad("it is empty".to_owned());
    }
    for directive in filter.split(',') {
        let directive = directive.trim();
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if let Some(target) = target {
            if target.is_empty()
                || !target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
            {
                return bad(format!("`{target}` is not a module path"));
            }
        }
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return bad(format!("`{level}` is not a level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CORES: [usize; 4] = [0, 1, 2, 3];

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("vswitch").chain(args.iter().copied());
        Config::parse_with_cores(argv, &CORES)
    }

    /// A config file in a fresh temp dir; tests run in parallel, so each gets its own.
    fn write_file(text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vswitch-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vswitch.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn parse_file_args(text: &str, extra: &[&str]) -> Result<Config, ConfigError> {
        let path = write_file(text);
        let path_str = path.to_str().unwrap().to_owned();
        let mut args = vec!["--config", path_str.as_str()];
        args.extend_from_slice(extra);
        let r = parse(&args);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
        r
    }

    #[test]
    fn test_config_defaults() {
        let c = parse(&[]).unwrap();
        assert!(c.ports.is_empty(), "an empty port list is allowed");
        assert_eq!(
            c.pmd_cores,
            vec![3],
            "default PMD core is the last available"
        );
        assert_eq!(c.mac_aging_secs, DEFAULT_MAC_AGING_SECS);
        assert_eq!(c.ctl, None);
        assert_eq!(c.log, None);
    }

    #[test]
    fn test_config_full_command_line() {
        let c = parse(&[
            "--vhost-server",
            "vm1=/tmp/vm1.sock",
            "--vhost-client",
            "vm2=/tmp/vm2.sock",
            "--port-vlan",
            "vm2=20",
            "--port-queues",
            "vm1=4",
            "--pmd-cores",
            "0,2-3",
            "--ctl",
            "/tmp/ctl.sock",
            "--mac-aging",
            "60",
            "--log",
            "vswitch=debug,warn",
        ])
        .unwrap();
        assert_eq!(
            c.ports,
            vec![
                PortSpec {
                    name: "vm1".into(),
                    mode: PortMode::Server,
                    path: "/tmp/vm1.sock".into(),
                    vlan: None,
                    queues: 4,
                    fastpath: false,
                },
                PortSpec {
                    name: "vm2".into(),
                    mode: PortMode::Client,
                    path: "/tmp/vm2.sock".into(),
                    vlan: Some(20),
                    queues: 1,
                    fastpath: false,
                },
            ]
        );
        assert_eq!(c.pmd_cores, vec![0, 2, 3]);
        assert_eq!(c.ctl, Some(PathBuf::from("/tmp/ctl.sock")));
        assert_eq!(c.mac_aging_secs, 60);
        assert_eq!(c.log.as_deref(), Some("vswitch=debug,warn"));
        assert_eq!(c.log_filter(), "vswitch=debug,warn");
    }

    #[test]
    fn test_config_file_merged_with_command_line() {
        let c = parse_file_args(
            r#"
pmd_cores = "1"
ctl = "/tmp/file-ctl.sock"
mac_aging_secs = 120
log = "debug"

[[port]]
name = "a"
mode = "server"
path = "/tmp/a.sock"
vlan = 10
queues = 2

[[port]]
name = "b"
mode = "client"
path = "/tmp/b.sock"
"#,
            &[
                "--vhost-server",
                "c=/tmp/c.sock",
                "--pmd-cores",
                "2",
                "--port-vlan",
                "a=11",
            ],
        )
        .unwrap();
        let names: Vec<_> = c.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "c"],
            "command line adds ports to the file's"
        );
        assert_eq!(c.ports[0].vlan, Some(11), "command line wins over the file");
        assert_eq!(c.ports[0].queues, 2);
        assert_eq!(c.ports[1].mode, PortMode::Client);
        assert_eq!(c.ports[1].queues, 1);
        assert_eq!(c.pmd_cores, vec![2], "command line wins over the file");
        assert_eq!(c.ctl, Some(PathBuf::from("/tmp/file-ctl.sock")));
        assert_eq!(c.mac_aging_secs, 120);
        assert_eq!(c.log.as_deref(), Some("debug"));
        assert!(c.config_file.is_some());
    }

    #[test]
    fn test_config_help_explains_options_and_example() {
        let err = parse(&["--help"]).unwrap_err();
        let ConfigError::Cli(e) = err else {
            panic!("--help must come back as a clap error to print")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        for needle in [
            "--vhost-server",
            "--vhost-client",
            "--port-vlan",
            "--port-queues",
            "--pmd-cores",
            "--ctl",
            "--config",
            "--mac-aging",
            "--log",
            "last core",
            "EXAMPLES",
            "[[port]]",
        ] {
            assert!(help.contains(needle), "--help lacks `{needle}`:\n{help}");
        }
    }

    #[test]
    fn test_config_port_spec_json_round_trip() {
        let spec: PortSpec =
            serde_json::from_str(r#"{"name":"vm1","mode":"client","path":"/tmp/x.sock"}"#).unwrap();
        assert_eq!(spec.queues, 1);
        assert_eq!(spec.vlan, None);
        let back: PortSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn test_config_vhost_server_without_equals() {
        let err = parse(&["--vhost-server", "/tmp/vm1.sock"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadArgument { option: "--vhost-server", value, .. } if value == "/tmp/vm1.sock"),
            "{err}"
        );
        assert!(err.to_string().contains("NAME=SOCKETPATH"));
    }

    #[test]
    fn test_config_vhost_client_empty_path() {
        let err = parse(&["--vhost-client", "vm1="]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::BadArgument {
                    option: "--vhost-client",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn test_config_port_name_empty() {
        let err = parse(&["--vhost-server", "=/tmp/x.sock"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadPortName { name, .. } if name.is_empty()),
            "{err}"
        );
    }

    #[test]
    fn test_config_port_name_too_long() {
        let name = "a".repeat(MAX_PORT_NAME_LEN + 1);
        let arg = format!("{name}=/tmp/x.sock");
        let err = parse(&["--vhost-server", &arg]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadPortName { name: n, .. } if *n == name),
            "{err}"
        );
        let ok = format!("{}=/tmp/x.sock", "a".repeat(MAX_PORT_NAME_LEN));
        assert!(
            parse(&["--vhost-server", &ok]).is_ok(),
            "32 chars is allowed"
        );
    }

    #[test]
    fn test_config_port_name_bad_chars() {
        for bad in ["vm 1", "vm/1", "vm.1", "-vm", "vm\u{e9}"] {
            let arg = format!("{bad}=/tmp/x.sock");
            let err = parse(&["--vhost-server", &arg]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadPortName { name, .. } if name == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad));
        }
    }

    #[test]
    fn test_config_duplicate_port_name() {
        let err = parse(&[
            "--vhost-server",
            "vm1=/tmp/a.sock",
            "--vhost-client",
            "vm1=/tmp/b.sock",
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::DuplicatePortName(n) if n == "vm1"),
            "{err}"
        );
    }

    #[test]
    fn test_config_duplicate_port_name_file_and_command_line() {
        let err = parse_file_args(
            "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\n",
            &["--vhost-server", "vm1=/tmp/b.sock"],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::DuplicatePortName(_)), "{err}");
    }

    #[test]
    fn test_config_duplicate_socket_path() {
        let err = parse(&[
            "--vhost-server",
            "vm1=/tmp/same.sock",
            "--vhost-server",
            "vm2=/tmp//same.sock",
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::DuplicateSocketPath { path, .. } if path == Path::new("/tmp//same.sock")),
            "{err}"
        );
        assert!(err.to_string().contains("vm1") && err.to_string().contains("vm2"));
    }

    #[test]
    fn test_config_socket_path_same_as_ctl() {
        let err = parse(&[
            "--vhost-server",
            "vm1=/tmp/ctl.sock",
            "--ctl",
            "/tmp/ctl.sock",
        ])
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateSocketPath { .. }),
            "{err}"
        );
    }

    #[test]
    fn test_config_socket_path_too_long() {
        let arg = format!("vm1=/tmp/{}", "x".repeat(MAX_SOCKET_PATH_LEN));
        let err = parse(&["--vhost-server", &arg]).unwrap_err();
        assert!(matches!(err, ConfigError::BadSocketPath { .. }), "{err}");
        assert!(err.to_string().contains("at most 107"));
    }

    #[test]
    fn test_config_socket_path_directory() {
        let err = parse(&["--ctl", "/tmp/"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadSocketPath { owner, .. } if owner == "--ctl"),
            "{err}"
        );
    }

    #[test]
    fn test_config_vlan_out_of_range() {
        for bad in ["0", "4095", "70000", "-1", "ten"] {
            let arg = format!("vm1={bad}");
            let err =
                parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-vlan", &arg]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::VlanOutOfRange { port, value } if port == "vm1" && value == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("1..=4094"));
        }
        for good in ["1", "4094"] {
            let arg = format!("vm1={good}");
            let c = parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-vlan", &arg]).unwrap();
            assert_eq!(c.ports[0].vlan, Some(good.parse().unwrap()));
        }
    }

    #[test]
    fn test_config_vlan_out_of_range_in_file() {
        let err = parse_file_args(
            "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\nvlan = 4095\n",
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::VlanOutOfRange { value, .. } if value == "4095"),
            "{err}"
        );
    }

    #[test]
    fn test_config_queues_out_of_range() {
        for bad in ["0", "17", "-3", "many"] {
            let arg = format!("vm1={bad}");
            let err =
                parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-queues", &arg]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::QueuesOutOfRange { port, value } if port == "vm1" && value == bad),
                "{bad}: {err}"
            );
        }
        let c = parse(&[
            "--vhost-server",
            "vm1=/tmp/a.sock",
            "--port-queues",
            "vm1=16",
        ])
        .unwrap();
        assert_eq!(c.ports[0].queues, 16);
    }

    #[test]
    fn test_config_queues_out_of_range_in_file() {
        let err = parse_file_args(
            "[[port]]\nname = \"vm1\"\nmode = \"client\"\npath = \"/tmp/a.sock\"\nqueues = 99999999999\n",
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::QueuesOutOfRange { .. }), "{err}");
    }

    #[test]
    fn test_config_port_vlan_unknown_port() {
        let err = parse(&["--port-vlan", "ghost=10"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownPort { option: "--port-vlan", name } if name == "ghost"),
            "{err}"
        );
    }

    #[test]
    fn test_config_port_queues_given_twice() {
        let err = parse(&[
            "--vhost-server",
            "vm1=/tmp/a.sock",
            "--port-queues",
            "vm1=2",
            "--port-queues",
            "vm1=3",
        ])
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::DuplicatePortSetting {
                    option: "--port-queues",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn test_config_pmd_cores_bad_syntax() {
        for bad in ["", "a", "1,,2", "3-1", "1-", "1,1", "0-99999"] {
            let err = parse(&["--pmd-cores", bad]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadCoreList { list, .. } if list == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn test_config_pmd_cores_not_available() {
        let err = parse(&["--pmd-cores", "2-5"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::CoreNotAvailable { core: 4, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("available: 0-3"), "{err}");
    }

    #[test]
    fn test_config_pmd_cores_checked_against_this_machine() {
        let beyond = available_cores().last().copied().unwrap_or(0) + 1;
        let list = beyond.to_string();
        let err = Config::parse_from(["vswitch", "--pmd-cores", list.as_str()]).unwrap_err();
        assert!(matches!(err, ConfigError::CoreNotAvailable { .. }), "{err}");
    }

    #[test]
    fn test_config_mac_aging_out_of_range() {
        for bad in ["0", "86401", "-5", "soon"] {
            let err = parse(&["--mac-aging", bad]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::MacAgingOutOfRange { value } if value == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn test_config_bad_log_level() {
        for bad in ["loud", "vswitch=loud", "=info", "a b=info", ""] {
            let err = parse(&["--log", bad]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadLogFilter { value, .. } if value == bad),
                "{bad:?}: {err}"
            );
        }
        assert!(parse(&["--log", "WARN"]).is_ok());
    }

    #[test]
    fn test_config_file_unknown_key() {
        let err = parse_file_args("pmd_core = \"1\"\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Toml { .. }), "{err}");
        assert!(err.to_string().contains("pmd_core"), "{err}");
    }

    #[test]
    fn test_config_file_unknown_port_key() {
        let err = parse_file_args(
            "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\nvlans = 3\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("vlans"), "{err}");
    }

    #[test]
    fn test_config_file_bad_mode() {
        let err = parse_file_args(
            "[[port]]\nname = \"vm1\"\nmode = \"listen\"\npath = \"/tmp/a.sock\"\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn test_config_file_missing_path() {
        let err =
            parse_file_args("[[port]]\nname = \"vm1\"\nmode = \"server\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
    }

    #[test]
    fn test_config_file_missing() {
        let err = parse(&["--config", "/nonexistent/vswitch.toml"]).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/vswitch.toml"));
    }

    #[test]
    fn test_config_file_mac_aging_out_of_range() {
        let err = parse_file_args("mac_aging_secs = 0\n", &[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::MacAgingOutOfRange { .. }),
            "{err}"
        );
    }

    #[test]
    fn test_config_unknown_option() {
        let err = parse(&["--vhost-sever", "a=/b"]).unwrap_err();
        assert!(matches!(err, ConfigError::Cli(_)), "{err}");
    }

    #[test]
    fn vxlan_spec_parsed() {
        let v = parse_vxlan("vx0=10.0.0.1,10.0.0.2,10.0.0.3,42,up0").unwrap();
        assert_eq!(v.name, "vx0");
        assert_eq!(v.local, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            v.remotes,
            vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert_eq!((v.vni, v.uplink.as_str()), (42, "up0"));
    }

    #[test]
    fn test_config_vxlan_bad_specs() {
        for (bad, needle) in [
            ("vx0", "no `=`"),
            ("vx0=10.0.0.1,42,up0", "at least 4"),
            ("vx0=10.0.0.300,10.0.0.2,42,up0", "not an IPv4 address"),
            ("vx0=0.0.0.0,10.0.0.2,42,up0", "not a unicast"),
            ("vx0=10.0.0.1,224.0.0.1,42,up0", "not a unicast"),
            ("vx0=10.0.0.1,10.0.0.1,42,up0", "is the local address"),
            ("vx0=10.0.0.1,10.0.0.2,10.0.0.2,42,up0", "listed twice"),
            ("vx0=10.0.0.1,10.0.0.2,16777216,up0", "VNI"),
            ("vx0=10.0.0.1,10.0.0.2,-1,up0", "VNI"),
            ("vx0=10.0.0.1,10.0.0.2,42,", "uplink name is empty"),
        ] {
            let err = parse(&["--vxlan", bad]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadVxlan { value, reason } if value == bad && reason.contains(needle)),
                "{bad}: {err}"
            );
        }
        let many: Vec<String> = (2..20).map(|i| format!("10.0.0.{i}")).collect();
        let arg = format!("vx0=10.0.0.1,{},42,up0", many.join(","));
        let err = parse(&["--vxlan", &arg]).unwrap_err();
        assert!(err.to_string().contains("at most 16"), "{err}");
    }

    #[test]
    fn test_config_vxlan_uplink_not_a_dpdk_port() {
        let err = parse(&[
            "--vhost-server",
            "up0=/tmp/a.sock",
            "--vxlan",
            "vx0=10.0.0.1,10.0.0.2,42,up0",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not a --dpdk-port"), "{err}");
    }

    #[test]
    fn test_config_vxlan_same_vni_twice_on_one_uplink() {
        let err = parse(&[
            "--dpdk-port",
            "up0=net_ring0",
            "--vxlan",
            "vx0=10.0.0.1,10.0.0.2,42,up0",
            "--vxlan",
            "vx1=10.0.0.1,10.0.0.3,42,up0",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("already carries VNI 42"), "{err}");
    }

    #[test]
    fn test_config_device_port_names_shared_with_vhost_ports() {
        for args in [
            &[
                "--vhost-server",
                "a=/tmp/a.sock",
                "--dpdk-port",
                "a=net_ring0",
            ][..],
            &["--dpdk-port", "a=net_ring0", "--dpdk-port", "a=net_ring1"][..],
            &[
                "--dpdk-port",
                "up0=net_ring0",
                "--vxlan",
                "up0=10.0.0.1,10.0.0.2,42,up0",
            ][..],
        ] {
            let err = parse(args).unwrap_err();
            assert!(
                matches!(err, ConfigError::DuplicatePortName(_)),
                "{args:?}: {err}"
            );
        }
        let err = parse(&["--dpdk-port", "b=net_tap0, iface=x"]).unwrap_err();
        assert!(err.to_string().contains("whitespace"), "{err}");
    }

    #[test]
    fn test_config_port_vlan_on_underlay_refused() {
        let err = parse(&[
            "--dpdk-port",
            "up0=net_ring0",
            "--vxlan",
            "vx0=10.0.0.1,10.0.0.2,42,up0",
            "--port-vlan",
            "up0=10",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("carries VXLAN tunnels"), "{err}");
    }

    #[test]
    fn test_config_dpdk_mtu_out_of_range() {
        for bad in ["1279", "9001", "big"] {
            let arg = format!("up0={bad}");
            let err = parse(&["--dpdk-port", "up0=net_ring0", "--dpdk-mtu", &arg]).unwrap_err();
            assert!(err.to_string().contains("1280..=9000"), "{bad}: {err}");
        }
        let err = parse(&["--dpdk-mtu", "ghost=1500"]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownPort { .. }), "{err}");
    }

    #[test]
    fn pci_devargs_recognised() {
        assert!(is_pci_devargs("0000:01:00.0"));
        assert!(is_pci_devargs("01:00.1,rx_queues=2"));
        assert!(!is_pci_devargs("net_ring0"));
        assert!(!is_pci_devargs("net_af_packet0,iface=eth1"));
        assert!(!is_pci_devargs("net_tap0,iface=a:b.c"));
    }

    #[cfg(feature = "dpdk")]
    #[test]
    fn dpdk_ports_and_tunnels_configured() {
        let c = parse(&[
            "--vhost-server",
            "vm1=/tmp/vm1.sock",
            "--dpdk-port",
            "up0=net_af_packet0,iface=veth0",
            "--dpdk-port",
            "up1=net_ring0",
            "--dpdk-mtu",
            "up0=1550",
            "--vxlan",
            "vx0=10.0.0.1,10.0.0.2,42,up0",
            "--port-vlan",
            "vx0=10",
            "--port-vlan",
            "up1=20",
            "--dpdk-eal",
            "-l 0 --no-huge  -m 256",
        ])
        .unwrap();
        assert_eq!(
            c.dpdk_ports,
            vec![
                DpdkPortSpec {
                    name: "up0".into(),
                    devargs: "net_af_packet0,iface=veth0".into(),
                    vlan: None,
                    mtu: Some(1550),
                },
                DpdkPortSpec {
                    name: "up1".into(),
                    devargs: "net_ring0".into(),
                    vlan: Some(20),
                    mtu: None,
                },
            ]
        );
        assert_eq!(c.vxlan[0].vlan, Some(10));
        assert!(c.is_underlay("up0") && !c.is_underlay("up1"));
        assert_eq!(
            c.dpdk_eal,
            Some(vec![
                "-l".into(),
                "0".into(),
                "--no-huge".into(),
                "-m".into(),
                "256".into()
            ])
        );
        let file = parse_file_args(
            "dpdk_eal = \"--no-huge\"\n[[dpdk_port]]\nname = \"u\"\ndevargs = \"net_ring0\"\nmtu = 1600\n[[vxlan]]\nname = \"v\"\nlocal = \"10.1.0.1\"\nremotes = [\"10.1.0.2\"]\nvni = 7\nuplink = \"u\"\nvlan = 3\n",
            &[],
        )
        .unwrap();
        assert_eq!(file.dpdk_ports[0].mtu, Some(1600));
        assert_eq!(file.vxlan[0].vni, 7);
        assert_eq!(file.vxlan[0].vlan, Some(3));
        assert_eq!(file.dpdk_eal, Some(vec!["--no-huge".into()]));
    }

    #[cfg(not(feature = "dpdk"))]
    #[test]
    fn test_config_dpdk_port_without_the_feature() {
        let err = parse(&["--dpdk-port", "up0=net_ring0"]).unwrap_err();
        assert!(matches!(err, ConfigError::DpdkNotBuilt), "{err}");
        assert!(err.to_string().contains("--features dpdk"), "{err}");
    }

    #[test]
    fn test_config_core_list_round_trip() {
        assert_eq!(parse_core_list("0,2-4, 7").unwrap(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_core_list(&[7, 0, 2, 3, 4]), "0,2-4,7");
        assert_eq!(format_core_list(&[]), "none");
        assert!(!available_cores().is_empty());
    }
}

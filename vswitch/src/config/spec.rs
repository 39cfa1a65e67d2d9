//! The configured things themselves: vhost-user ports, DPDK ports, VXLAN tunnels, and the
//! bounds their values must keep. Shared by the command line, the file and the control socket.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::validate::{validate_port_name, validate_socket_path};

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

pub(super) fn default_queues() -> u16 {
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
    /// Remote VTEPs and MACs from BGP EVPN (FRR) through the kernel mirror (`--evpn`);
    /// `remotes` may then be empty.
    #[serde(default)]
    pub evpn: bool,
}

/// Most tunnels over one uplink.
pub const MAX_TUNNELS_PER_UPLINK: usize = 64;

//! What `vswitchctl evpn` shows: per segment, the local MACs exported, the MACs BGP gave and
//! behind which VTEP, the flood list, and the refused control input by reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::translate::Refused;
use super::Segment;
use crate::fdb::format_mac;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnReply {
    pub segments: Vec<EvpnSegmentInfo>,
    /// Netlink messages the mirror could not decode (skipped).
    #[serde(default)]
    pub undecodable_messages: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMacInfo {
    pub mac: String,
    /// The guest port it was learned on.
    pub port: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMacInfo {
    pub mac: String,
    pub vtep: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvpnSegmentInfo {
    /// The tunnel port.
    pub port: String,
    pub vni: u32,
    pub vlan: u16,
    pub local_vtep: String,
    /// The mirror's kernel devices.
    pub bridge: String,
    pub vxlan_device: String,
    pub mirror_ports: Vec<String>,
    pub mac_limit: usize,
    /// Learned on guest ports and exported (type-2 routes).
    pub local_macs: Vec<LocalMacInfo>,
    /// Local MACs not exported because the limit is reached.
    pub local_macs_left_out: usize,
    /// From BGP (type-2 routes of other VTEPs).
    pub remote_macs: Vec<RemoteMacInfo>,
    /// From BGP (type-3 routes): where broadcast and unknown unicast go.
    pub flood_vteps: Vec<String>,
    /// Withdrawn remote MACs and flood VTEPs still used for `hold_secs` (`--evpn-hold`).
    #[serde(default)]
    pub held_macs: usize,
    #[serde(default)]
    pub held_flood_vteps: usize,
    pub refused: Refused,
    /// Refused entries still in the kernel (each counted once in `refused`).
    #[serde(default)]
    pub refused_present: usize,
    /// Kernel writes that failed (exports, mirror ports).
    pub kernel_errors: u64,
    /// Full reads of the kernel's FDB (at start, after an overrun, every minute).
    pub resyncs: u64,
}

pub(super) fn segment_info(
    s: &Segment,
    names: &BTreeMap<u16, String>,
    resyncs: u64,
) -> EvpnSegmentInfo {
    let name_of = |id: &u16| names.get(id).cloned().unwrap_or_else(|| format!("#{id}"));
    EvpnSegmentInfo {
        port: s.port.name.clone(),
        vni: s.port.vni,
        vlan: s.port.vlan,
        local_vtep: s.port.local.to_string(),
        bridge: super::bridge_name(s.port.vni),
        vxlan_device: super::vxlan_name(s.port.vni),
        mirror_ports: s.mirrors.values().map(|(_, n)| n.clone()).collect(),
        mac_limit: s.remote.mac_limit,
        local_macs: s
            .local
            .exported
            .iter()
            .map(|(mac, port)| LocalMacInfo {
                mac: format_mac(*mac),
                port: name_of(port),
            })
            .collect(),
        local_macs_left_out: s.local_left_out,
        remote_macs: s
            .remote
            .effective_macs()
            .iter()
            .map(|(mac, vtep)| RemoteMacInfo {
                mac: format_mac(*mac),
                vtep: vtep.to_string(),
            })
            .collect(),
        flood_vteps: s.remote.flood.iter().map(|v| v.to_string()).collect(),
        held_macs: s.installed.held().0,
        held_flood_vteps: s.installed.held().1,
        refused: s.remote.refused,
        refused_present: s.remote.refused_present(),
        kernel_errors: s.kernel_errors,
        resyncs,
    }
}

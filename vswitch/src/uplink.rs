//! An uplink port: a switch port over a network device ([`crate::netdev::NetDev`]: a DPDK
//! ethdev — a NIC, or a vdev such as `net_af_packet`, `net_tap`, `net_ring` — or a test pipe).
//!
//! An uplink has one of two roles, fixed when it is added. *Bridged*: it is a member of the
//! switch like a guest's port (learned from, flooded to, in its access VLAN). *Underlay*: it
//! carries VXLAN tunnels and is not itself a member: what arrives is ARP for a VTEP address or
//! VXLAN to one (anything else is dropped and counted), and what leaves is encapsulated frames
//! of its tunnels and ARP.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::Tap;
use crate::netdev::NetDev;
use crate::port::{counter_blocks, sum_counter, CounterBlock};
use crate::rxq::QueueLoad;

/// What an uplink is to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkRole {
    /// A member of the switch: frames are switched to and from it.
    Bridged,
    /// The transport of VXLAN tunnels: only their packets (and ARP) use it.
    Underlay,
}

impl std::fmt::Display for UplinkRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UplinkRole::Bridged => "bridged",
            UplinkRole::Underlay => "underlay",
        })
    }
}

/// An uplink port, shared by the control plane and the poll threads.
pub struct UplinkPort {
    pub id: u16,
    pub name: String,
    /// What the operator gave to open the device (DPDK devargs), for `vswitchctl show`.
    pub devargs: String,
    /// Forwarding domain when bridged: the access VLAN, or 0.
    pub vlan: u16,
    pub role: UplinkRole,
    pub dev: Arc<dyn NetDev>,
    /// The poll thread that receives from it (for good: the device's receive queue is that
    /// thread's).
    pub rx_pmd: usize,
    /// Busy cycles of its receive queue.
    pub rxq_load: QueueLoad,
    /// One block per PMD.
    pub counters: Box<[CounterBlock]>,
    /// Packet capture hook (`vswitchctl capture`).
    pub tap: std::sync::Arc<Tap>,
}

impl UplinkPort {
    pub fn new(
        id: u16,
        name: &str,
        devargs: &str,
        vlan: u16,
        role: UplinkRole,
        dev: Arc<dyn NetDev>,
        pmds: usize,
    ) -> UplinkPort {
        UplinkPort {
            id,
            name: name.to_owned(),
            devargs: devargs.to_owned(),
            vlan,
            role,
            dev,
            rx_pmd: usize::from(id) % pmds.max(1),
            rxq_load: QueueLoad::default(),
            counters: counter_blocks(pmds),
            tap: Default::default(),
        }
    }

    /// Sum of a counter over the PMD blocks.
    pub fn sum(&self, f: impl Fn(&CounterBlock) -> &AtomicU64) -> u64 {
        sum_counter(&self.counters, f)
    }
}

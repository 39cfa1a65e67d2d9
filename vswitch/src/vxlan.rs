//! A VXLAN tunnel port (RFC 7348): one VNI between a local VTEP address and a list of remote
//! VTEPs, over an underlay uplink. To the switch it is a port like any other (learned from,
//! flooded to, in its VLAN); inside, it keeps which remote VTEP each inner MAC lives behind.
//!
//! Flood and learn, with head-end replication: a frame for an inner MAC the tunnel has seen
//! arrive from a remote goes to that remote only; broadcast, multicast and unknown unicast go
//! to every remote. Decapsulation learns the inner source MAC's remote, and the remote's own MAC
//! (the outer source address: the VTEP itself, or the router in front of it).
//!
//! The outer destination MAC of a remote is learned from its ARP and from its VXLAN packets; a
//! remote never heard from is asked by ARP, at most once a second, and frames for it are dropped
//! (and counted) until it answers. The underlay is one L2 segment (or the remote speaks first).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::capture::Tap;
use crate::eth::Mac;
use crate::fdb::Fdb;
use crate::port::{counter_blocks, sum_counter, CounterBlock};

/// Most remote VTEPs one tunnel port has.
pub const MAX_REMOTES: usize = 16;
/// Capacity of a tunnel's inner-MAC-to-VTEP table.
const VTEP_TABLE_CAPACITY: usize = 4096;
const MAC_VALID: u64 = 1 << 63;

/// A remote VTEP and what is known of its MAC address.
pub struct Remote {
    pub ip: Ipv4Addr,
    /// The next hop's MAC (bit 63: known), written when it changes.
    mac: AtomicU64,
    /// The second (+1) of the last ARP request for it; 0: never.
    arp_at: AtomicU32,
}

impl Remote {
    fn new(ip: Ipv4Addr) -> Remote {
        Remote {
            ip,
            mac: AtomicU64::new(0),
            arp_at: AtomicU32::new(0),
        }
    }

    /// The MAC to send to, once known.
    #[inline]
    pub fn mac(&self) -> Option<Mac> {
        let v = self.mac.load(Ordering::Relaxed);
        (v & MAC_VALID != 0).then(|| {
            let b = v.to_le_bytes();
            [b[0], b[1], b[2], b[3], b[4], b[5]]
        })
    }

    /// Records the remote's MAC; writes only when it changed, so steady traffic reads a line
    /// every core shares.
    #[inline]
    pub fn learn_mac(&self, mac: Mac) {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return;
        }
        let v =
            MAC_VALID | u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
        if self.mac.load(Ordering::Relaxed) != v {
            self.mac.store(v, Ordering::Relaxed);
        }
    }

    /// Whether an ARP request for this remote is due at second `now`: true for one caller a
    /// second, whichever poll thread asks first.
    pub fn arp_due(&self, now: u32) -> bool {
        let stamp = now.wrapping_add(1);
        let last = self.arp_at.load(Ordering::Relaxed);
        last != stamp
            && self
                .arp_at
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A tunnel port, shared by the control plane and the poll threads.
pub struct VxlanPort {
    pub id: u16,
    pub name: String,
    pub vlan: u16,
    pub vni: u32,
    pub local: Ipv4Addr,
    /// Port id of the underlay uplink.
    pub uplink: u16,
    pub uplink_name: String,
    pub remotes: Box<[Remote]>,
    /// Inner MAC -> index into `remotes` (the table's "port").
    pub vteps: Fdb,
    /// One block per PMD.
    pub counters: Box<[CounterBlock]>,
    /// Packet capture hook (`vswitchctl capture`).
    pub tap: std::sync::Arc<Tap>,
}

impl VxlanPort {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u16,
        name: &str,
        vlan: u16,
        vni: u32,
        local: Ipv4Addr,
        remotes: &[Ipv4Addr],
        uplink: (u16, &str),
        aging_secs: u32,
        pmds: usize,
    ) -> VxlanPort {
        VxlanPort {
            id,
            name: name.to_owned(),
            vlan,
            vni,
            local,
            uplink: uplink.0,
            uplink_name: uplink.1.to_owned(),
            remotes: remotes
                .iter()
                .take(MAX_REMOTES)
                .map(|&ip| Remote::new(ip))
                .collect(),
            vteps: Fdb::new(VTEP_TABLE_CAPACITY, aging_secs),
            counters: counter_blocks(pmds),
            tap: Default::default(),
        }
    }

    /// Index of the remote VTEP with address `ip`.
    #[inline]
    pub fn remote_index(&self, ip: Ipv4Addr) -> Option<usize> {
        self.remotes.iter().position(|r| r.ip == ip)
    }

    /// Sum of a counter over the PMD blocks.
    pub fn sum(&self, f: impl Fn(&CounterBlock) -> &AtomicU64) -> u64 {
        sum_counter(&self.counters, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mac_learned_once_and_arp_rate_limited() {
        let r = Remote::new(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(r.mac(), None);
        r.learn_mac([0xff; 6]);
        assert_eq!(r.mac(), None, "a group address is never a VTEP's");
        r.learn_mac([2, 0, 0, 0, 0, 9]);
        assert_eq!(r.mac(), Some([2, 0, 0, 0, 0, 9]));
        assert!(r.arp_due(5));
        assert!(!r.arp_due(5), "once a second");
        assert!(r.arp_due(6));
    }
}

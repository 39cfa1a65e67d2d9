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
//!
//! With EVPN ([`crate::evpn`]) the remotes are not fixed: the tunnel has [`MAX_REMOTES`] slots,
//! which the EVPN mirror fills and empties as BGP routes come and go (a slot is a remote VTEP;
//! its flood bit says whether a type-3 route put it in the flood list), and the inner MAC table
//! is the control plane's alone: decapsulation does not learn into it, as a kernel VXLAN device
//! with `nolearning` would not.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::capture::Tap;
use crate::eth::Mac;
use crate::fdb::Fdb;
use crate::port::{counter_blocks, sum_counter, CounterBlock};

/// Most remote VTEPs one tunnel port has.
pub const MAX_REMOTES: usize = 16;
/// Capacity of a tunnel's inner-MAC-to-VTEP table.
const VTEP_TABLE_CAPACITY: usize = 4096;
const MAC_VALID: u64 = 1 << 63;

/// A remote VTEP slot and what is known of its MAC address.
pub struct Remote {
    /// The VTEP's address; 0: the slot is free (EVPN tunnels only: static remotes stay).
    ip: AtomicU32,
    /// Whether broadcast, multicast and unknown unicast go to it (head-end replication).
    flood: AtomicBool,
    /// The next hop's MAC (bit 63: known), written when it changes.
    mac: AtomicU64,
    /// The second (+1) of the last ARP request for it; 0: never.
    arp_at: AtomicU32,
}

impl Remote {
    fn new(ip: Option<Ipv4Addr>) -> Remote {
        Remote {
            ip: AtomicU32::new(ip.map_or(0, u32::from)),
            flood: AtomicBool::new(ip.is_some()),
            mac: AtomicU64::new(0),
            arp_at: AtomicU32::new(0),
        }
    }

    /// The VTEP's address, if the slot is in use.
    #[inline]
    pub fn addr(&self) -> Option<Ipv4Addr> {
        match self.ip.load(Ordering::Acquire) {
            0 => None,
            v => Some(Ipv4Addr::from(v)),
        }
    }

    /// Whether the slot is in use and in the flood list.
    #[inline]
    pub fn floods(&self) -> bool {
        self.flood.load(Ordering::Relaxed) && self.addr().is_some()
    }

    /// Puts `ip` into this (free) slot: control thread only. The MAC and ARP state of the
    /// slot's previous VTEP are forgotten first, so no thread pairs the new address with them.
    pub fn occupy(&self, ip: Ipv4Addr, flood: bool) {
        self.mac.store(0, Ordering::Relaxed);
        self.arp_at.store(0, Ordering::Relaxed);
        self.flood.store(flood, Ordering::Relaxed);
        self.ip.store(u32::from(ip), Ordering::Release);
    }

    /// Sets whether the slot's VTEP is in the flood list: control thread only.
    pub fn set_flood(&self, flood: bool) {
        self.flood.store(flood, Ordering::Relaxed);
    }

    /// Frees the slot: control thread only.
    pub fn vacate(&self) {
        self.flood.store(false, Ordering::Relaxed);
        self.ip.store(0, Ordering::Release);
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
    /// Remote VTEP slots: the static remotes, then (EVPN) free slots up to [`MAX_REMOTES`].
    pub remotes: Box<[Remote]>,
    /// Inner MAC -> index into `remotes` (the table's "port").
    pub vteps: Fdb,
    /// Remotes and inner MACs come from the EVPN control plane, not from the data plane.
    pub evpn: bool,
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
                .map(|&ip| Remote::new(Some(ip)))
                .collect(),
            vteps: Fdb::new(VTEP_TABLE_CAPACITY, aging_secs),
            evpn: false,
            counters: counter_blocks(pmds),
            tap: Default::default(),
        }
    }

    /// Makes this an EVPN tunnel: free remote slots up to [`MAX_REMOTES`] after the static
    /// ones, and an inner MAC table only the control plane writes, sized for `mac_limit`
    /// entries at a quarter full, so that a bucket (7 entries) overflows only with odds of
    /// about 1e-5 and every MAC BGP gives finds a place.
    pub fn with_evpn(mut self, mac_limit: usize) -> VxlanPort {
        let capacity = mac_limit.max(VTEP_TABLE_CAPACITY).saturating_mul(4);
        self.vteps = Fdb::new(capacity, self.vteps.aging_secs());
        let mut slots: Vec<Remote> = std::mem::take(&mut self.remotes).into_vec();
        slots.resize_with(MAX_REMOTES.max(slots.len()), || Remote::new(None));
        self.remotes = slots.into_boxed_slice();
        self.evpn = true;
        self
    }

    /// Index of the remote VTEP with address `ip` (never a free slot).
    #[inline]
    pub fn remote_index(&self, ip: Ipv4Addr) -> Option<usize> {
        let v = u32::from(ip);
        if v == 0 {
            return None;
        }
        self.remotes
            .iter()
            .position(|r| r.ip.load(Ordering::Acquire) == v)
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
    fn test_evpn_slots_free_until_occupied() {
        let t = VxlanPort::new(
            1,
            "vx0",
            0,
            42,
            Ipv4Addr::new(10, 0, 0, 1),
            &[Ipv4Addr::new(10, 0, 0, 9)],
            (0, "up0"),
            300,
            1,
        )
        .with_evpn(16);
        assert_eq!(t.remotes.len(), MAX_REMOTES);
        assert!(
            t.remotes[0].floods(),
            "a static remote stays in the flood list"
        );
        assert!(!t.remotes[1].floods());
        assert_eq!(
            t.remote_index(Ipv4Addr::UNSPECIFIED),
            None,
            "free slots never match"
        );
        t.remotes[1].learn_mac([2, 0, 0, 0, 0, 1]);
        t.remotes[1].occupy(Ipv4Addr::new(10, 0, 0, 2), false);
        assert_eq!(
            t.remotes[1].mac(),
            None,
            "a reused slot forgets the old MAC"
        );
        assert_eq!(t.remote_index(Ipv4Addr::new(10, 0, 0, 2)), Some(1));
        assert!(!t.remotes[1].floods());
        t.remotes[1].set_flood(true);
        assert!(t.remotes[1].floods());
        t.remotes[1].vacate();
        assert_eq!(t.remote_index(Ipv4Addr::new(10, 0, 0, 2)), None);
        assert!(!t.remotes[1].floods());
    }

    #[test]
    fn remote_mac_learned_once_and_arp_rate_limited() {
        let r = Remote::new(Some(Ipv4Addr::new(10, 0, 0, 2)));
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

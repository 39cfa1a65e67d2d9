//! Applying a VNI's [`RemoteTable`] to its tunnel port: remote VTEPs into the port's slots
//! (with their flood bits) and remote MACs into its inner MAC table, pointing at the slots.
//!
//! The poll threads read slots and the table without locks, so the order of writes is what
//! keeps them right: a VTEP that goes away first loses its MACs, then its slot; a slot is
//! reused only after its MACs are gone, and a slot freed in this pass is taken last, so a
//! frame in flight is never sent to a VTEP that took over an index a moment ago.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::translate::RemoteTable;
use crate::eth::Mac;
use crate::vxlan::VxlanPort;

/// What this segment has written into its tunnel port.
#[derive(Debug, Default)]
pub struct Installed {
    /// The configured (`--vxlan`) remotes: they keep their slots and always flood.
    static_slots: BTreeMap<Ipv4Addr, usize>,
    /// Remote VTEPs the control plane put into slots.
    slot_of: BTreeMap<Ipv4Addr, usize>,
    /// Remote MACs installed, and the slot each points at.
    macs: BTreeMap<Mac, usize>,
}

impl Installed {
    pub fn new(port: &VxlanPort) -> Installed {
        let static_slots = port
            .remotes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.addr().map(|ip| (ip, i)))
            .collect();
        Installed {
            static_slots,
            ..Installed::default()
        }
    }

    /// Slots left for the control plane.
    pub fn free_slots(&self, port: &VxlanPort) -> usize {
        port.remotes.len().saturating_sub(self.static_slots.len())
    }

    fn slot(&self, ip: Ipv4Addr) -> Option<usize> {
        self.static_slots
            .get(&ip)
            .or_else(|| self.slot_of.get(&ip))
            .copied()
    }

    /// Makes the port say what `table` says; refreshes every remote MAC's timestamp (the
    /// control plane, not traffic, keeps them alive). Returns how many VTEPs found no slot
    /// (the table's limit makes that 0 unless the port changed under it).
    pub fn sync(&mut self, port: &VxlanPort, table: &RemoteTable, now: u32) -> usize {
        let wanted: BTreeSet<Ipv4Addr> = table
            .vteps()
            .into_iter()
            .filter(|ip| !self.static_slots.contains_key(ip))
            .collect();
        // VTEPs gone: their MACs first, then the slot.
        let gone: Vec<(Ipv4Addr, usize)> = self
            .slot_of
            .iter()
            .filter(|(ip, _)| !wanted.contains(ip))
            .map(|(ip, s)| (*ip, *s))
            .collect();
        let mut freed = BTreeSet::new();
        for (ip, s) in gone {
            self.macs.retain(|mac, slot| {
                if *slot == s {
                    port.vteps.remove(0, *mac);
                }
                *slot != s
            });
            port.remotes[s].vacate();
            port.vteps.flush_port(u16::try_from(s).unwrap_or(u16::MAX));
            self.slot_of.remove(&ip);
            freed.insert(s);
        }
        // MACs withdrawn or moved elsewhere.
        let stale: Vec<Mac> = self
            .macs
            .iter()
            .filter(|(mac, slot)| {
                table
                    .macs
                    .get(*mac)
                    .and_then(|ip| self.slot(*ip))
                    .is_none_or(|s| s != **slot)
            })
            .map(|(mac, _)| *mac)
            .collect();
        for mac in stale {
            self.macs.remove(&mac);
            port.vteps.remove(0, mac);
        }
        // New VTEPs: free slots never used in this pass first.
        let mut homeless = 0;
        for ip in &wanted {
            if self.slot_of.contains_key(ip) {
                continue;
            }
            let free = |s: &usize| port.remotes[*s].addr().is_none();
            let slot = (0..port.remotes.len())
                .filter(free)
                .find(|s| !freed.contains(s))
                .or_else(|| (0..port.remotes.len()).find(free));
            match slot {
                Some(s) => {
                    port.remotes[s].occupy(*ip, table.flood.contains(ip));
                    self.slot_of.insert(*ip, s);
                }
                None => homeless += 1,
            }
        }
        for (ip, s) in &self.slot_of {
            port.remotes[*s].set_flood(table.flood.contains(ip));
        }
        for (mac, ip) in &table.macs {
            let Some(s) = self.slot(*ip) else { continue };
            port.vteps
                .learn(0, *mac, u16::try_from(s).unwrap_or(u16::MAX), now);
            self.macs.insert(*mac, s);
        }
        homeless
    }

    /// Takes everything this segment installed out of the port (the mirror is stopping).
    pub fn clear(&mut self, port: &VxlanPort) {
        for mac in std::mem::take(&mut self.macs).into_keys() {
            port.vteps.remove(0, mac);
        }
        for (_, s) in std::mem::take(&mut self.slot_of) {
            port.remotes[s].vacate();
            port.vteps.flush_port(u16::try_from(s).unwrap_or(u16::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evpn::translate::VxlanFdb;
    use crate::vxlan::MAX_REMOTES;
    use std::net::IpAddr;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const STATIC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const M1: Mac = [0x02, 0, 0, 0, 0, 1];
    const M2: Mac = [0x02, 0, 0, 0, 0, 2];

    fn port(statics: &[Ipv4Addr]) -> VxlanPort {
        VxlanPort::new(5, "vx0", 0, 100, LOCAL, statics, (0, "up0"), 300, 1).with_evpn()
    }

    fn add(t: &mut RemoteTable, mac: Mac, ip: Ipv4Addr) {
        t.apply(&VxlanFdb {
            ifindex: 1,
            add: true,
            mac: Some(mac),
            dst: Some(IpAddr::V4(ip)),
            vni: None,
            extern_learn: true,
        })
        .unwrap();
    }

    fn del(t: &mut RemoteTable, mac: Mac, ip: Ipv4Addr) {
        t.apply(&VxlanFdb {
            ifindex: 1,
            add: false,
            mac: Some(mac),
            dst: Some(IpAddr::V4(ip)),
            vni: None,
            extern_learn: true,
        })
        .unwrap();
    }

    #[test]
    fn test_install_vteps_flood_and_macs() {
        let p = port(&[STATIC]);
        let mut inst = Installed::new(&p);
        assert_eq!(inst.free_slots(&p), MAX_REMOTES - 1);
        let mut t = RemoteTable::new(100, LOCAL, 16, inst.free_slots(&p));
        add(&mut t, [0; 6], B);
        add(&mut t, M1, B);
        add(&mut t, M2, C);
        assert_eq!(inst.sync(&p, &t, 10), 0);
        let b = p.remote_index(B).expect("B has a slot");
        let c = p.remote_index(C).expect("C has a slot");
        assert!(p.remotes[b].floods(), "type-3 route: flooded to");
        assert!(!p.remotes[c].floods(), "MACs only: not flooded to");
        assert!(p.remotes[0].floods(), "the static remote still floods");
        assert_eq!(p.vteps.lookup(0, M1, 10), Some(u16::try_from(b).unwrap()));
        assert_eq!(p.vteps.lookup(0, M2, 10), Some(u16::try_from(c).unwrap()));
        // Kept alive by the control plane, not by traffic.
        inst.sync(&p, &t, 10 + 299);
        assert_eq!(
            p.vteps.lookup(0, M1, 10 + 500),
            Some(u16::try_from(b).unwrap())
        );
    }

    #[test]
    fn test_install_mac_moves_then_vtep_goes() {
        let p = port(&[]);
        let mut inst = Installed::new(&p);
        let mut t = RemoteTable::new(100, LOCAL, 16, MAX_REMOTES);
        add(&mut t, M1, B);
        inst.sync(&p, &t, 0);
        let b = p.remote_index(B).unwrap();
        add(&mut t, M1, C);
        inst.sync(&p, &t, 1);
        let c = p.remote_index(C).unwrap();
        assert_eq!(p.vteps.lookup(0, M1, 1), Some(u16::try_from(c).unwrap()));
        assert_eq!(
            p.remote_index(B),
            None,
            "B has nothing left: its slot is free"
        );
        assert!(p.remotes[b].addr().is_none());
        del(&mut t, M1, C);
        inst.sync(&p, &t, 2);
        assert_eq!(p.vteps.lookup(0, M1, 2), None);
        assert_eq!(p.remote_index(C), None);
    }

    #[test]
    fn test_install_freed_slot_not_reused_in_same_pass() {
        let p = port(&[]);
        let mut inst = Installed::new(&p);
        let mut t = RemoteTable::new(100, LOCAL, 16, MAX_REMOTES);
        add(&mut t, [0; 6], B);
        inst.sync(&p, &t, 0);
        let b = p.remote_index(B).unwrap();
        t.clear();
        add(&mut t, [0; 6], C);
        inst.sync(&p, &t, 0);
        assert_ne!(p.remote_index(C), Some(b));
        inst.clear(&p);
        assert!(p.remotes.iter().all(|r| r.addr().is_none()));
    }

    #[test]
    fn test_install_every_slot_taken() {
        let p = port(&[]);
        let mut inst = Installed::new(&p);
        let mut t = RemoteTable::new(100, LOCAL, 64, MAX_REMOTES + 4);
        for i in 0..MAX_REMOTES + 2 {
            let ip = Ipv4Addr::new(10, 1, 0, u8::try_from(i + 1).unwrap());
            add(&mut t, [0; 6], ip);
        }
        assert_eq!(inst.sync(&p, &t, 0), 2, "two VTEPs beyond the slots");
        assert!(p.remotes.iter().all(|r| r.floods()));
    }
}

//! Applying a VNI's [`RemoteTable`] to its tunnel port: remote VTEPs into the port's slots
//! (with their flood bits) and remote MACs into its inner MAC table, pointing at the slots.
//!
//! The poll threads read slots and the table without locks, so the order of writes is what
//! keeps them right: a VTEP that goes away first loses its MACs, then its slot; a slot is
//! reused only after its MACs are gone, and a slot freed in this pass is taken last, so a
//! frame in flight is never sent to a VTEP that took over an index a moment ago.
//!
//! A withdrawal may be held (`--evpn-hold`): a remote MAC or flood VTEP the control plane
//! removes stays in the data path for that many seconds unless a route brings it back or moves
//! the MAC (a move always takes effect at once). That rides out a restart of the control plane
//! on either side, which stock FRR 8.4 does not preserve for EVPN routes (its graceful restart
//! keeps no stale L2VPN EVPN paths); the price is that a MAC or VTEP really gone still gets
//! frames for the hold time, which the far end drops.

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
    /// Seconds a withdrawal is held.
    hold: u32,
    /// What the data path was given last time (the table plus what is held).
    last_macs: BTreeMap<Mac, Ipv4Addr>,
    last_flood: BTreeSet<Ipv4Addr>,
    /// Withdrawn but held: MAC -> (its VTEP, the second it was withdrawn).
    held_macs: BTreeMap<Mac, (Ipv4Addr, u32)>,
    /// Withdrawn flood VTEPs held, with the second each was withdrawn.
    held_flood: BTreeMap<Ipv4Addr, u32>,
    /// MACs installed (or moved to another VTEP) since `take_fresh` last ran.
    fresh: Vec<Mac>,
}

impl Installed {
    pub fn new(port: &VxlanPort, hold_secs: u32) -> Installed {
        let static_slots = port
            .remotes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.addr().map(|ip| (ip, i)))
            .collect();
        Installed {
            static_slots,
            hold: hold_secs,
            ..Installed::default()
        }
    }

    /// Withdrawn MACs and flood VTEPs still in the data path.
    pub fn held(&self) -> (usize, usize) {
        (self.held_macs.len(), self.held_flood.len())
    }

    /// The table plus the withdrawals still held at `now`.
    fn effective(
        &mut self,
        table: &RemoteTable,
        now: u32,
    ) -> (BTreeMap<Mac, Ipv4Addr>, BTreeSet<Ipv4Addr>) {
        let current = table.effective_macs();
        for (mac, ip) in &self.last_macs {
            if !current.contains_key(mac) {
                self.held_macs.entry(*mac).or_insert((*ip, now));
            }
        }
        for ip in &self.last_flood {
            if !table.flood.contains(ip) {
                self.held_flood.entry(*ip).or_insert(now);
            }
        }
        let hold = self.hold;
        let live = |since: u32| now.wrapping_sub(since) < hold;
        self.held_macs
            .retain(|mac, (_, since)| !current.contains_key(mac) && live(*since));
        self.held_flood
            .retain(|ip, since| !table.flood.contains(ip) && live(*since));
        let mut macs = current;
        for (mac, (ip, _)) in &self.held_macs {
            macs.insert(*mac, *ip);
        }
        let mut flood = table.flood.clone();
        flood.extend(self.held_flood.keys().copied());
        self.last_macs = macs.clone();
        self.last_flood = flood.clone();
        (macs, flood)
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
        let (macs, flood) = self.effective(table, now);
        let wanted: BTreeSet<Ipv4Addr> = flood
            .iter()
            .chain(macs.values())
            .filter(|ip| !self.static_slots.contains_key(ip))
            .copied()
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
                macs.get(*mac)
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
                    port.remotes[s].occupy(*ip, flood.contains(ip));
                    self.slot_of.insert(*ip, s);
                }
                None => homeless += 1,
            }
        }
        for (ip, s) in &self.slot_of {
            port.remotes[*s].set_flood(flood.contains(ip));
        }
        for (mac, ip) in &macs {
            let Some(s) = self.slot(*ip) else { continue };
            port.vteps
                .learn(0, *mac, u16::try_from(s).unwrap_or(u16::MAX), now);
            if self.macs.insert(*mac, s) != Some(s) {
                self.fresh.push(*mac);
            }
        }
        homeless
    }

    /// The MACs newly installed (or moved to another VTEP) by the passes since the last call:
    /// the control plane's moves, which the switch's FDB follows once each.
    pub fn take_fresh(&mut self) -> Vec<Mac> {
        std::mem::take(&mut self.fresh)
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
        VxlanPort::new(5, "vx0", 0, 100, LOCAL, statics, (0, "up0"), 300, 1).with_evpn(16)
    }

    /// Applies zebra's entry for `mac` behind `ip`, installed (`add`) or withdrawn.
    fn zebra(t: &mut RemoteTable, add: bool, mac: Mac, ip: Ipv4Addr) {
        t.apply(&VxlanFdb {
            ifindex: 1,
            add,
            mac: Some(mac),
            dst: Some(IpAddr::V4(ip)),
            vni: None,
            extern_learn: true,
            master: false,
        })
        .unwrap();
    }

    fn add(t: &mut RemoteTable, mac: Mac, ip: Ipv4Addr) {
        zebra(t, true, mac, ip);
    }

    fn del(t: &mut RemoteTable, mac: Mac, ip: Ipv4Addr) {
        zebra(t, false, mac, ip);
    }

    #[test]
    fn test_install_vteps_flood_and_macs() {
        let p = port(&[STATIC]);
        let mut inst = Installed::new(&p, 0);
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
        let mut inst = Installed::new(&p, 0);
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
    fn test_install_reports_each_control_plane_move_once() {
        let p = port(&[]);
        let mut inst = Installed::new(&p, 0);
        let mut t = RemoteTable::new(100, LOCAL, 16, MAX_REMOTES);
        add(&mut t, M1, B);
        inst.sync(&p, &t, 0);
        assert_eq!(inst.take_fresh(), vec![M1]);
        inst.sync(&p, &t, 1);
        assert_eq!(inst.take_fresh(), Vec::<Mac>::new(), "unchanged: not fresh");
        add(&mut t, M1, C);
        add(&mut t, M2, B);
        inst.sync(&p, &t, 2);
        let mut fresh = inst.take_fresh();
        fresh.sort();
        assert_eq!(fresh, vec![M1, M2], "moved to C, and new");
        del(&mut t, M1, C);
        inst.sync(&p, &t, 3);
        assert_eq!(
            inst.take_fresh(),
            Vec::<Mac>::new(),
            "withdrawn: nothing to follow"
        );
    }

    #[test]
    fn test_install_freed_slot_not_reused_in_same_pass() {
        let p = port(&[]);
        let mut inst = Installed::new(&p, 0);
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
    fn test_install_withdrawal_held_then_dropped() {
        let p = port(&[]);
        let mut inst = Installed::new(&p, 10);
        let mut t = RemoteTable::new(100, LOCAL, 16, MAX_REMOTES);
        add(&mut t, [0; 6], B);
        add(&mut t, M1, B);
        add(&mut t, M2, B);
        inst.sync(&p, &t, 100);
        // The control plane goes away: everything withdrawn at once.
        t.clear();
        inst.sync(&p, &t, 101);
        let b = p.remote_index(B).expect("B held");
        assert!(p.remotes[b].floods());
        assert_eq!(p.vteps.lookup(0, M1, 101), Some(u16::try_from(b).unwrap()));
        assert_eq!(inst.held(), (2, 1));
        // It comes back with M1 moved to C: the move is immediate, M2 stays held.
        add(&mut t, [0; 6], B);
        add(&mut t, M1, C);
        inst.sync(&p, &t, 105);
        let c = p.remote_index(C).unwrap();
        assert_eq!(p.vteps.lookup(0, M1, 105), Some(u16::try_from(c).unwrap()));
        assert_eq!(inst.held(), (1, 0));
        // M2 never comes back: gone after the hold.
        inst.sync(&p, &t, 110);
        assert_eq!(p.vteps.lookup(0, M2, 110), Some(u16::try_from(b).unwrap()));
        inst.sync(&p, &t, 111);
        assert_eq!(p.vteps.lookup(0, M2, 111), None);
        assert_eq!(inst.held(), (0, 0));
    }

    #[test]
    fn test_install_every_slot_taken() {
        let p = port(&[]);
        let mut inst = Installed::new(&p, 0);
        let mut t = RemoteTable::new(100, LOCAL, 64, MAX_REMOTES + 4);
        for i in 0..MAX_REMOTES + 2 {
            let ip = Ipv4Addr::new(10, 1, 0, u8::try_from(i + 1).unwrap());
            add(&mut t, [0; 6], ip);
        }
        assert_eq!(inst.sync(&p, &t, 0), 2, "two VTEPs beyond the slots");
        assert!(p.remotes.iter().all(|r| r.floods()));
    }
}

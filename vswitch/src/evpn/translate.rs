//! From kernel FDB messages to the remote state of one VNI: which inner MAC lives behind which
//! remote VTEP (zebra's type-2 routes, `extern_learn` entries on the mirror's vxlan device)
//! and which VTEPs get flooded frames (type-3 routes, all-zero MAC entries). Pure logic: no
//! socket, no switch; [`super::install`] applies the result to the tunnel port.
//!
//! What zebra (or anyone else with CAP_NET_ADMIN) writes there is control input, and it is
//! checked like any other: an entry for another VNI, a remote VTEP that is our own address, a
//! VTEP address that is not a unicast IPv4 host, more MACs or VTEPs than the limits, are each
//! refused and counted by reason; the switch's state never sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

use crate::eth::Mac;

/// One FDB entry of a vxlan device as the kernel reported it, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanFdb {
    pub ifindex: u32,
    /// RTM_NEWNEIGH (true) or RTM_DELNEIGH.
    pub add: bool,
    /// `None`: the message had no 6-byte link-layer address.
    pub mac: Option<Mac>,
    /// The remote VTEP (`dst`); `None`: the bridge's own record of the entry (no `dst`).
    pub dst: Option<IpAddr>,
    /// A per-entry VNI, when it differs from the device's.
    pub vni: Option<u32>,
    /// Installed by a control plane (`extern_learn`), as zebra does for type-2 routes.
    pub extern_learn: bool,
    /// The bridge's entry (`master`), which says on which bridge port the MAC is.
    pub master: bool,
}

/// Reads an AF_BRIDGE neighbour message (an FDB entry). `None`: another family.
pub fn parse_fdb(msg: &NeighbourMessage, add: bool) -> Option<VxlanFdb> {
    if msg.header.family != AddressFamily::Bridge {
        return None;
    }
    let mut e = VxlanFdb {
        ifindex: msg.header.ifindex,
        add,
        mac: None,
        dst: None,
        vni: None,
        extern_learn: msg.header.flags.contains(NeighbourFlags::ExtLearned),
        master: msg.header.flags.contains(NeighbourFlags::Controller),
    };
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(b) => {
                e.mac = <[u8; 6]>::try_from(b.as_slice()).ok();
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                e.dst = Some(IpAddr::V4(*ip));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                e.dst = Some(IpAddr::V6(*ip));
            }
            // In an AF_BRIDGE message the crate cannot know the address's family: the
            // length tells (4: a VXLAN over IPv4, 16: over IPv6); anything else is unusable.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                e.dst = Some(match b.len() {
                    4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                    16 => IpAddr::V6(
                        <[u8; 16]>::try_from(b.as_slice())
                            .map(std::net::Ipv6Addr::from)
                            .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
                    ),
                    _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                });
            }
            NeighbourAttribute::Vni(v) | NeighbourAttribute::SourceVni(v) => e.vni = Some(*v),
            NeighbourAttribute::Controller(_) => e.master = true,
            _ => {}
        }
    }
    Some(e)
}

/// Why an entry was refused; each has its counter in [`Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The entry names a VNI this segment does not serve.
    UnknownVni,
    /// The remote VTEP is this switch's own VTEP address.
    OwnVtep,
    /// The VTEP is not a unicast IPv4 host address, or the entry has no usable MAC.
    BadEntry,
    /// A unicast MAC entry not installed by a control plane (no `extern_learn`).
    NotExternLearn,
    /// More remote MACs than the configured limit.
    MacLimit,
    /// More remote VTEPs than a tunnel has slots.
    VtepLimit,
}

/// Refused entries by reason, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub unknown_vni: u64,
    pub own_vtep: u64,
    pub bad_entry: u64,
    pub not_extern_learn: u64,
    pub mac_limit: u64,
    pub vtep_limit: u64,
}

impl Refused {
    pub fn count(&mut self, why: Refusal) {
        let c = match why {
            Refusal::UnknownVni => &mut self.unknown_vni,
            Refusal::OwnVtep => &mut self.own_vtep,
            Refusal::BadEntry => &mut self.bad_entry,
            Refusal::NotExternLearn => &mut self.not_extern_learn,
            Refusal::MacLimit => &mut self.mac_limit,
            Refusal::VtepLimit => &mut self.vtep_limit,
        };
        *c += 1;
    }

    pub fn total(&self) -> u64 {
        self.unknown_vni
            + self.own_vtep
            + self.bad_entry
            + self.not_extern_learn
            + self.mac_limit
            + self.vtep_limit
    }
}

/// What an accepted entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    MacAdded,
    MacMoved,
    MacRemoved,
    FloodAdded,
    FloodRemoved,
}

/// An entry's identity in the kernel: MAC, `dst`, per-entry VNI.
type EntryKey = (Option<Mac>, Option<IpAddr>, Option<u32>);
/// Most MACs remembered as local in the mirror bridge (more than the switch could export).
const BRIDGE_LOCAL_MEMORY: usize = 65536;
/// Refused entries remembered, so that one that stays in the kernel is counted once rather
/// than at every full read; beyond this many, each read counts them again.
const REFUSED_MEMORY: usize = 4096;

/// The remote side of one VNI, as the control plane describes it.
#[derive(Debug, Clone)]
pub struct RemoteTable {
    pub vni: u32,
    pub local: Ipv4Addr,
    /// Most remote MACs accepted.
    pub mac_limit: usize,
    /// Most remote VTEPs (MAC destinations and flood list together).
    pub vtep_limit: usize,
    pub macs: BTreeMap<Mac, Ipv4Addr>,
    pub flood: BTreeSet<Ipv4Addr>,
    /// Refusals, each counted when the entry appears (not again while it stays).
    pub refused: Refused,
    /// Refused entries still in the kernel, as far as the notifications tell.
    refused_present: BTreeSet<EntryKey>,
    /// MACs the mirror bridge has on a guest's mirror port (local here). After a MAC moves
    /// here, zebra repoints the bridge entry but may leave the vxlan device's own entry
    /// (`dst` the old VTEP) behind; a MAC the bridge has locally is never remote.
    bridge_local: BTreeSet<Mac>,
    /// During a full read: the refused entries it met.
    dump_seen: Option<BTreeSet<EntryKey>>,
}

fn unicast_host(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
}

impl RemoteTable {
    pub fn new(vni: u32, local: Ipv4Addr, mac_limit: usize, vtep_limit: usize) -> RemoteTable {
        RemoteTable {
            vni,
            local,
            mac_limit,
            vtep_limit,
            macs: BTreeMap::new(),
            flood: BTreeSet::new(),
            refused: Refused::default(),
            refused_present: BTreeSet::new(),
            dump_seen: None,
            bridge_local: BTreeSet::new(),
        }
    }

    /// Records where the mirror bridge has `mac`: on a guest's mirror port (`local`), or not
    /// (on the vxlan port, or gone). Whether the remote MACs changed.
    pub fn note_bridge_entry(&mut self, mac: Mac, local: bool) -> bool {
        let was = self.bridge_local.contains(&mac);
        if local && !was && self.bridge_local.len() < BRIDGE_LOCAL_MEMORY {
            self.bridge_local.insert(mac);
        } else if !local && was {
            self.bridge_local.remove(&mac);
        }
        was != self.bridge_local.contains(&mac) && self.macs.contains_key(&mac)
    }

    /// The remote MACs in force: what the vxlan device says, less what the bridge has here.
    pub fn effective_macs(&self) -> BTreeMap<Mac, Ipv4Addr> {
        self.macs
            .iter()
            .filter(|(m, _)| !self.bridge_local.contains(*m))
            .map(|(m, v)| (*m, *v))
            .collect()
    }

    /// Refused entries that are (as far as is known) still in the kernel.
    pub fn refused_present(&self) -> usize {
        self.refused_present.len()
    }

    /// Every remote VTEP the table refers to.
    pub fn vteps(&self) -> BTreeSet<Ipv4Addr> {
        let mut v = self.flood.clone();
        v.extend(self.effective_macs().values().copied());
        v
    }

    fn knows_vtep(&self, ip: Ipv4Addr) -> bool {
        self.flood.contains(&ip) || self.macs.values().any(|v| *v == ip)
    }

    /// Applies one entry of this segment's vxlan device; a refusal is counted here, once
    /// per appearance of the entry (a withdrawal is never counted).
    pub fn apply(&mut self, e: &VxlanFdb) -> Result<Change, Refusal> {
        let key = (e.mac, e.dst, e.vni);
        if !e.add {
            self.refused_present.remove(&key);
        }
        let r = self.check_and_apply(e);
        if let (Err(why), true) = (r, e.add) {
            if !self.refused_present.contains(&key) {
                self.refused.count(why);
                if self.refused_present.len() < REFUSED_MEMORY {
                    self.refused_present.insert(key);
                }
            }
            if let Some(seen) = &mut self.dump_seen {
                seen.insert(key);
            }
        }
        r
    }

    /// Starts a full read: the remote state is rebuilt from what it delivers.
    pub fn begin_dump(&mut self) {
        self.clear();
        self.dump_seen = Some(BTreeSet::new());
    }

    /// Ends a full read: refused entries it did not meet are gone from the kernel.
    pub fn end_dump(&mut self) {
        if let Some(seen) = self.dump_seen.take() {
            self.refused_present.retain(|k| seen.contains(k));
        }
    }

    fn check_and_apply(&mut self, e: &VxlanFdb) -> Result<Change, Refusal> {
        // The bridge's own record of an entry (no `dst`) mirrors the vxlan device's: the
        // device's is the one that says where the MAC lives.
        let Some(dst) = e.dst else {
            return Ok(Change::None);
        };
        if e.vni.is_some_and(|v| v != self.vni) {
            return Err(Refusal::UnknownVni);
        }
        let IpAddr::V4(vtep) = dst else {
            return Err(Refusal::BadEntry);
        };
        if !unicast_host(vtep) {
            return Err(Refusal::BadEntry);
        }
        if vtep == self.local {
            return Err(Refusal::OwnVtep);
        }
        let Some(mac) = e.mac else {
            return Err(Refusal::BadEntry);
        };
        if mac == [0; 6] {
            return self.apply_flood(e.add, vtep);
        }
        if mac[0] & 1 != 0 {
            // A group address is flooded anyway; an entry for one is nothing we can use.
            return Err(Refusal::BadEntry);
        }
        if !e.add {
            if self.macs.get(&mac) == Some(&vtep) {
                self.macs.remove(&mac);
                return Ok(Change::MacRemoved);
            }
            return Ok(Change::None);
        }
        if !e.extern_learn {
            return Err(Refusal::NotExternLearn);
        }
        let old = self.macs.get(&mac).copied();
        if old == Some(vtep) {
            return Ok(Change::None);
        }
        if old.is_none() && self.macs.len() >= self.mac_limit {
            return Err(Refusal::MacLimit);
        }
        if !self.knows_vtep(vtep) && self.vteps().len() >= self.vtep_limit {
            return Err(Refusal::VtepLimit);
        }
        self.macs.insert(mac, vtep);
        Ok(if old.is_some() {
            Change::MacMoved
        } else {
            Change::MacAdded
        })
    }

    fn apply_flood(&mut self, add: bool, vtep: Ipv4Addr) -> Result<Change, Refusal> {
        if !add {
            return Ok(if self.flood.remove(&vtep) {
                Change::FloodRemoved
            } else {
                Change::None
            });
        }
        if self.flood.contains(&vtep) {
            return Ok(Change::None);
        }
        if !self.knows_vtep(vtep) && self.vteps().len() >= self.vtep_limit {
            return Err(Refusal::VtepLimit);
        }
        self.flood.insert(vtep);
        Ok(Change::FloodAdded)
    }

    /// Forgets everything (before a full dump replaces it); the counters stay.
    pub fn clear(&mut self) {
        self.macs.clear();
        self.flood.clear();
        self.bridge_local.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};
    use netlink_packet_route::neighbour::NeighbourState;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const M1: Mac = [0x02, 0, 0, 0, 0, 1];
    const M2: Mac = [0x02, 0, 0, 0, 0, 2];

    fn entry(add: bool, mac: Mac, dst: Ipv4Addr) -> VxlanFdb {
        VxlanFdb {
            ifindex: 7,
            add,
            mac: Some(mac),
            dst: Some(IpAddr::V4(dst)),
            vni: None,
            extern_learn: true,
            master: false,
        }
    }

    fn table() -> RemoteTable {
        RemoteTable::new(100, LOCAL, 4, 3)
    }

    /// What the kernel sends for `bridge fdb add MAC dev vx dst VTEP self extern_learn`,
    /// built as bytes and read back through the crate's parser, as the mirror reads it.
    fn kernel_bytes(mac: &[u8], dst: Option<NeighbourAddress>, vni: Option<u32>) -> Vec<u8> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = 7;
        m.header.state = NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Own | NeighbourFlags::ExtLearned;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(d) = dst {
            m.attributes.push(NeighbourAttribute::Destination(d));
        }
        if let Some(v) = vni {
            m.attributes.push(NeighbourAttribute::Vni(v));
        }
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    fn parse_bytes(buf: &[u8]) -> VxlanFdb {
        let m = NeighbourMessage::parse(buf).expect("message");
        parse_fdb(&m, true).expect("bridge family")
    }

    #[test]
    fn test_parse_fdb_remote_mac_from_kernel_bytes() {
        let e = parse_bytes(&kernel_bytes(&M1, Some(NeighbourAddress::Inet(B)), None));
        assert_eq!(e, entry(true, M1, B));
        let mut t = table();
        assert_eq!(t.apply(&e), Ok(Change::MacAdded));
        assert_eq!(t.macs.get(&M1), Some(&B));
    }

    #[test]
    fn test_parse_fdb_other_family_ignored() {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        assert_eq!(parse_fdb(&m, true), None);
    }

    #[test]
    fn test_flood_list_from_all_zero_mac() {
        let mut t = table();
        assert_eq!(t.apply(&entry(true, [0; 6], B)), Ok(Change::FloodAdded));
        assert_eq!(t.apply(&entry(true, [0; 6], B)), Ok(Change::None));
        assert_eq!(t.apply(&entry(true, [0; 6], C)), Ok(Change::FloodAdded));
        assert_eq!(t.flood, BTreeSet::from([B, C]));
        assert_eq!(t.apply(&entry(false, [0; 6], B)), Ok(Change::FloodRemoved));
        assert_eq!(t.flood, BTreeSet::from([C]));
        assert_eq!(t.refused.total(), 0);
    }

    #[test]
    fn test_mac_moves_between_vteps_and_is_withdrawn() {
        let mut t = table();
        t.apply(&entry(true, M1, B)).unwrap();
        assert_eq!(t.apply(&entry(true, M1, C)), Ok(Change::MacMoved));
        // The old VTEP's withdrawal arriving after the move must not undo it.
        assert_eq!(t.apply(&entry(false, M1, B)), Ok(Change::None));
        assert_eq!(t.macs.get(&M1), Some(&C));
        assert_eq!(t.apply(&entry(false, M1, C)), Ok(Change::MacRemoved));
        assert!(t.macs.is_empty());
    }

    #[test]
    fn test_bridge_record_without_dst_ignored() {
        let mut t = table();
        let mut e = entry(true, M1, B);
        e.dst = None;
        assert_eq!(t.apply(&e), Ok(Change::None));
        assert!(t.macs.is_empty());
        assert_eq!(t.refused.total(), 0);
    }

    #[test]
    fn test_fdb_entry_for_unknown_vni_refused() {
        let e = parse_bytes(&kernel_bytes(
            &M1,
            Some(NeighbourAddress::Inet(B)),
            Some(101),
        ));
        let mut t = table();
        assert_eq!(t.apply(&e), Err(Refusal::UnknownVni));
        assert_eq!(t.refused.unknown_vni, 1);
        assert!(t.macs.is_empty());
        // The segment's own VNI given explicitly is fine.
        let e = parse_bytes(&kernel_bytes(
            &M1,
            Some(NeighbourAddress::Inet(B)),
            Some(100),
        ));
        assert_eq!(t.apply(&e), Ok(Change::MacAdded));
    }

    #[test]
    fn test_remote_vtep_is_own_address_refused() {
        let mut t = table();
        assert_eq!(t.apply(&entry(true, M1, LOCAL)), Err(Refusal::OwnVtep));
        assert_eq!(t.apply(&entry(true, [0; 6], LOCAL)), Err(Refusal::OwnVtep));
        assert_eq!(t.refused.own_vtep, 2);
        assert!(t.vteps().is_empty());
    }

    #[test]
    fn test_more_macs_than_limit_refused() {
        let mut t = table();
        for i in 0..4u8 {
            assert_eq!(
                t.apply(&entry(true, [2, 0, 0, 0, 1, i], B)),
                Ok(Change::MacAdded)
            );
        }
        assert_eq!(t.apply(&entry(true, M2, B)), Err(Refusal::MacLimit));
        assert_eq!(t.refused.mac_limit, 1);
        assert_eq!(t.macs.len(), 4);
        // A known MAC may still move at the limit.
        assert_eq!(
            t.apply(&entry(true, [2, 0, 0, 0, 1, 0], C)),
            Ok(Change::MacMoved)
        );
    }

    #[test]
    fn test_more_vteps_than_slots_refused() {
        let mut t = table();
        for last in 2..5u8 {
            let ip = Ipv4Addr::new(10, 0, 0, last);
            assert_eq!(t.apply(&entry(true, [0; 6], ip)), Ok(Change::FloodAdded));
        }
        let fourth = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(
            t.apply(&entry(true, [0; 6], fourth)),
            Err(Refusal::VtepLimit)
        );
        assert_eq!(t.apply(&entry(true, M1, fourth)), Err(Refusal::VtepLimit));
        // MACs behind a known VTEP are fine.
        assert_eq!(t.apply(&entry(true, M1, B)), Ok(Change::MacAdded));
        assert_eq!(t.refused.vtep_limit, 2);
    }

    #[test]
    fn test_vtep_not_unicast_host_refused() {
        let mut t = table();
        for bad in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(239, 1, 1, 1),
            Ipv4Addr::LOCALHOST,
        ] {
            assert_eq!(t.apply(&entry(true, M1, bad)), Err(Refusal::BadEntry));
        }
        let e = parse_bytes(&kernel_bytes(
            &M1,
            Some(NeighbourAddress::Inet6("fd00::2".parse().unwrap())),
            None,
        ));
        assert_eq!(t.apply(&e), Err(Refusal::BadEntry), "IPv6 underlay");
        assert_eq!(t.refused.bad_entry, 5);
    }

    #[test]
    fn test_fdb_entry_with_odd_length_dst_refused() {
        let e = parse_bytes(&kernel_bytes(
            &M1,
            Some(NeighbourAddress::Other(vec![10, 0, 0])),
            None,
        ));
        let mut t = table();
        assert_eq!(t.apply(&e), Err(Refusal::BadEntry));
    }

    #[test]
    fn test_fdb_entry_with_short_mac_refused() {
        let e = parse_bytes(&kernel_bytes(
            &[2, 0, 0],
            Some(NeighbourAddress::Inet(B)),
            None,
        ));
        assert_eq!(e.mac, None);
        let mut t = table();
        assert_eq!(t.apply(&e), Err(Refusal::BadEntry));
    }

    #[test]
    fn test_group_mac_entry_refused() {
        let mut t = table();
        assert_eq!(
            t.apply(&entry(true, [0x01, 0, 0x5e, 0, 0, 1], B)),
            Err(Refusal::BadEntry)
        );
    }

    #[test]
    fn test_refused_entry_counted_once_while_it_stays() {
        let mut t = table();
        let bad = entry(true, M1, LOCAL);
        assert_eq!(t.apply(&bad), Err(Refusal::OwnVtep));
        // A full read meets it again: not a new refusal.
        t.begin_dump();
        assert_eq!(t.apply(&bad), Err(Refusal::OwnVtep));
        t.end_dump();
        assert_eq!(t.refused.own_vtep, 1);
        assert_eq!(t.refused_present(), 1);
        // Its withdrawal is not a refusal; written again, it counts again.
        assert_eq!(t.apply(&entry(false, M1, LOCAL)), Err(Refusal::OwnVtep));
        assert_eq!(t.refused.own_vtep, 1);
        assert_eq!(t.refused_present(), 0);
        t.apply(&bad).unwrap_err();
        assert_eq!(t.refused.own_vtep, 2);
        // Gone without a notification (an overrun): the next full read forgets it.
        t.begin_dump();
        t.end_dump();
        assert_eq!(t.refused_present(), 0);
    }

    #[test]
    fn test_stale_vxlan_entry_of_a_mac_now_local_is_not_remote() {
        let mut t = table();
        t.apply(&entry(true, M1, B)).unwrap();
        // M1 moved here: the bridge has it on a mirror port, the vxlan device still says B.
        assert!(t.note_bridge_entry(M1, true));
        assert!(t.effective_macs().is_empty());
        assert!(
            t.vteps().is_empty(),
            "B has nothing else: not a VTEP of ours"
        );
        // And back: the bridge entry is on the vxlan port again.
        assert!(t.note_bridge_entry(M1, false));
        assert_eq!(t.effective_macs().get(&M1), Some(&B));
        assert!(
            !t.note_bridge_entry(M2, true),
            "not a remote MAC: no change"
        );
    }

    /// Random bytes as kernel messages, and random well-formed entries: nothing panics, and
    /// whatever was applied, the table keeps its limits and never names our own VTEP or a
    /// non-unicast one.
    #[test]
    fn test_random_fdb_input_keeps_the_table_sound() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut t = RemoteTable::new(100, LOCAL, 8, 4);
        let good = kernel_bytes(&M1, Some(NeighbourAddress::Inet(B)), Some(100));
        for round in 0..20_000u32 {
            if round % 2 == 0 {
                // A real message with some bytes flipped or cut short.
                let mut b = good.clone();
                let n = usize::try_from(next() % 4).unwrap();
                for _ in 0..n {
                    let i = usize::try_from(next()).unwrap() % b.len();
                    b[i] = next().to_le_bytes()[0];
                }
                b.truncate(usize::try_from(next()).unwrap() % (b.len() + 1));
                if let Ok(m) = NeighbourMessage::parse(&b) {
                    if let Some(e) = parse_fdb(&m, next() % 3 != 0) {
                        let _ = t.apply(&e);
                    }
                }
            } else {
                let r = next().to_le_bytes();
                let e = VxlanFdb {
                    ifindex: 7,
                    add: r[0] % 3 != 0,
                    mac: (r[1] % 8 != 0).then(|| [r[2] & 0x03, 0, 0, 0, 0, r[3] % 16]),
                    dst: (r[4] % 8 != 0).then(|| {
                        IpAddr::V4(match r[5] % 8 {
                            0 => LOCAL,
                            1 => Ipv4Addr::BROADCAST,
                            _ => Ipv4Addr::new(10, 0, 0, 2 + r[6] % 8),
                        })
                    }),
                    vni: (r[7] % 8 == 0).then_some(100 + u32::from(r[0] % 2)),
                    extern_learn: r[6] % 8 != 0,
                    master: false,
                };
                let _ = t.apply(&e);
            }
            assert!(t.macs.len() <= t.mac_limit, "{t:?}");
            assert!(t.vteps().len() <= t.vtep_limit, "{t:?}");
            for v in t.vteps() {
                assert!(v != LOCAL && unicast_host(v), "{v} in {t:?}");
            }
            assert!(t.macs.keys().all(|m| m[0] & 1 == 0 && *m != [0; 6]));
        }
        assert!(
            t.refused.total() > 0 && !t.macs.is_empty(),
            "the input must exercise both"
        );
    }

    #[test]
    fn test_static_entry_without_extern_learn_refused() {
        let mut t = table();
        let mut e = entry(true, M1, B);
        e.extern_learn = false;
        assert_eq!(t.apply(&e), Err(Refusal::NotExternLearn));
        assert_eq!(t.refused.not_extern_learn, 1);
        assert!(t.macs.is_empty());
    }
}

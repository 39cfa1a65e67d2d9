//! The local side of one VNI: which MACs the switch learned on its guest ports in the
//! segment's VLAN, and the bridge FDB writes that make the mirror say the same (a static
//! entry on the guest's mirror port, which zebra exports as a type-2 route).

use std::collections::BTreeMap;

use crate::eth::Mac;
use crate::fdb::FdbEntry;

/// One write to the mirror bridge's FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbOp {
    /// Add (or move) `mac` to the mirror port of guest port `port`.
    Add { mac: Mac, port: u16 },
    /// Remove `mac` from the mirror port of guest port `port`.
    Del { mac: Mac, port: u16 },
}

/// What the mirror's FDB holds for the guest ports, and the limit of it.
#[derive(Debug, Clone, Default)]
pub struct LocalExport {
    /// Exported MAC -> guest port id.
    pub exported: BTreeMap<Mac, u16>,
    pub limit: usize,
}

/// The local MACs to export: learned (live) entries of `vlan` on one of `ports`.
pub fn desired(entries: &[FdbEntry], vlan: u16, ports: &[u16]) -> BTreeMap<Mac, u16> {
    entries
        .iter()
        .filter(|e| e.vlan == vlan && ports.contains(&e.port))
        .map(|e| (e.mac, e.port))
        .collect()
}

impl LocalExport {
    pub fn new(limit: usize) -> LocalExport {
        LocalExport {
            exported: BTreeMap::new(),
            limit,
        }
    }

    /// The writes that take the mirror from `exported` to `want`, removals first (they make
    /// room under the limit), and how many wanted MACs the limit leaves out.
    pub fn plan(&self, want: &BTreeMap<Mac, u16>) -> (Vec<FdbOp>, usize) {
        let mut ops = Vec::new();
        let mut kept = 0usize;
        for (mac, port) in &self.exported {
            match want.get(mac) {
                Some(p) if p == port => kept += 1,
                // Moved to another guest port: the add below replaces it in place.
                Some(_) => {}
                None => ops.push(FdbOp::Del {
                    mac: *mac,
                    port: *port,
                }),
            }
        }
        let mut room = self.limit.saturating_sub(kept);
        let mut left_out = 0;
        for (mac, port) in want {
            if self.exported.get(mac) == Some(port) {
                continue;
            }
            if self.exported.contains_key(mac) || room > 0 {
                if !self.exported.contains_key(mac) {
                    room -= 1;
                }
                ops.push(FdbOp::Add {
                    mac: *mac,
                    port: *port,
                });
            } else {
                left_out += 1;
            }
        }
        (ops, left_out)
    }

    /// Records a write the kernel accepted.
    pub fn done(&mut self, op: FdbOp) {
        match op {
            FdbOp::Add { mac, port } => {
                self.exported.insert(mac, port);
            }
            FdbOp::Del { mac, .. } => {
                self.exported.remove(&mac);
            }
        }
    }

    /// Forgets what was exported on mirror port `port` (the port and its entries are gone).
    pub fn forget_port(&mut self, port: u16) {
        self.exported.retain(|_, p| *p != port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: Mac = [0x02, 0, 0, 0, 0, 1];
    const M2: Mac = [0x02, 0, 0, 0, 0, 2];
    const M3: Mac = [0x02, 0, 0, 0, 0, 3];

    fn e(vlan: u16, mac: Mac, port: u16) -> FdbEntry {
        FdbEntry {
            vlan,
            mac,
            port,
            age_secs: 0,
        }
    }

    fn apply(x: &mut LocalExport, ops: &[FdbOp]) {
        for op in ops {
            x.done(*op);
        }
    }

    #[test]
    fn test_local_macs_only_from_guest_ports_in_the_vlan() {
        let entries = [e(10, M1, 1), e(20, M2, 1), e(10, M3, 7)];
        // Port 7 is the tunnel (remote MACs are learned on it): not exported.
        assert_eq!(desired(&entries, 10, &[1, 2]), BTreeMap::from([(M1, 1)]));
    }

    #[test]
    fn test_local_export_add_move_remove() {
        let mut x = LocalExport::new(16);
        let (ops, out) = x.plan(&BTreeMap::from([(M1, 1), (M2, 2)]));
        assert_eq!(out, 0);
        assert_eq!(
            ops,
            vec![
                FdbOp::Add { mac: M1, port: 1 },
                FdbOp::Add { mac: M2, port: 2 }
            ]
        );
        apply(&mut x, &ops);
        assert_eq!(x.plan(&BTreeMap::from([(M1, 1), (M2, 2)])).0, vec![]);
        // M1 moves to port 2, M2 ages out.
        let (ops, _) = x.plan(&BTreeMap::from([(M1, 2)]));
        assert_eq!(
            ops,
            vec![
                FdbOp::Del { mac: M2, port: 2 },
                FdbOp::Add { mac: M1, port: 2 }
            ]
        );
        apply(&mut x, &ops);
        assert_eq!(x.exported, BTreeMap::from([(M1, 2)]));
        x.forget_port(2);
        assert!(x.exported.is_empty());
    }

    #[test]
    fn test_more_local_macs_than_limit_left_out() {
        let mut x = LocalExport::new(2);
        let want = BTreeMap::from([(M1, 1), (M2, 1), (M3, 1)]);
        let (ops, out) = x.plan(&want);
        assert_eq!(ops.len(), 2);
        assert_eq!(out, 1);
        apply(&mut x, &ops);
        // One goes away: the one left out gets its place.
        let (ops, out) = x.plan(&BTreeMap::from([(M2, 1), (M3, 1)]));
        assert_eq!(out, 0);
        assert_eq!(
            ops,
            vec![
                FdbOp::Del { mac: M1, port: 1 },
                FdbOp::Add { mac: M3, port: 1 }
            ]
        );
    }
}

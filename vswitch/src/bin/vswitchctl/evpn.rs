//! `vswitchctl evpn`: the EVPN segments as a person reads them.

use std::fmt::Write;

use vswitch::evpn::EvpnReply;

pub fn render(r: &EvpnReply) -> String {
    let mut s = String::new();
    if r.segments.is_empty() {
        s.push_str("no EVPN segments (the switch runs no tunnel with --evpn)\n");
        return s;
    }
    for g in &r.segments {
        let _ = writeln!(
            s,
            "{}: vni {}, vlan {}, local vtep {} (mirror {} + {}, ports: {})",
            g.port,
            g.vni,
            g.vlan,
            g.local_vtep,
            g.bridge,
            g.vxlan_device,
            if g.mirror_ports.is_empty() {
                "none".to_owned()
            } else {
                g.mirror_ports.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "  local MACs (exported): {}{}",
            g.local_macs.len(),
            if g.local_macs_left_out > 0 {
                format!(
                    ", {} left out at the limit of {}",
                    g.local_macs_left_out, g.mac_limit
                )
            } else {
                String::new()
            }
        );
        for m in &g.local_macs {
            let _ = writeln!(s, "    {}  on {}", m.mac, m.port);
        }
        let _ = writeln!(
            s,
            "  remote MACs (from BGP): {} of at most {}",
            g.remote_macs.len(),
            g.mac_limit
        );
        for m in &g.remote_macs {
            let _ = writeln!(s, "    {}  behind vtep {}", m.mac, m.vtep);
        }
        let _ = writeln!(
            s,
            "  flood vteps (from BGP): {}",
            if g.flood_vteps.is_empty() {
                "none".to_owned()
            } else {
                g.flood_vteps.join(", ")
            }
        );
        if g.held_macs + g.held_flood_vteps > 0 {
            let _ = writeln!(
                s,
                "  withdrawn but held (--evpn-hold): {} MACs, {} flood vteps",
                g.held_macs, g.held_flood_vteps
            );
        }
        let f = &g.refused;
        let _ = writeln!(
            s,
            "  refused: {} (unknown vni {}, own vtep {}, bad entry {}, not extern_learn {}, mac limit {}, vtep limit {}); {} still in the kernel",
            f.total(),
            f.unknown_vni,
            f.own_vtep,
            f.bad_entry,
            f.not_extern_learn,
            f.mac_limit,
            f.vtep_limit,
            g.refused_present
        );
        let _ = writeln!(
            s,
            "  kernel errors: {}, full FDB reads: {}",
            g.kernel_errors, g.resyncs
        );
    }
    if r.undecodable_messages > 0 {
        let _ = writeln!(
            s,
            "netlink messages not understood: {}",
            r.undecodable_messages
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::evpn::{EvpnSegmentInfo, LocalMacInfo, RemoteMacInfo};

    #[test]
    fn test_render_evpn_segment() {
        let mut g = EvpnSegmentInfo {
            port: "vx0".into(),
            vni: 100,
            vlan: 0,
            local_vtep: "10.0.0.1".into(),
            bridge: "evbr100".into(),
            vxlan_device: "evvx100".into(),
            mirror_ports: vec!["ev0-100".into()],
            mac_limit: 4096,
            local_macs: vec![LocalMacInfo {
                mac: "02:00:00:00:00:01".into(),
                port: "g".into(),
            }],
            remote_macs: vec![RemoteMacInfo {
                mac: "02:00:00:00:00:02".into(),
                vtep: "10.0.0.2".into(),
            }],
            flood_vteps: vec!["10.0.0.2".into()],
            ..Default::default()
        };
        g.refused.own_vtep = 2;
        let out = render(&EvpnReply {
            segments: vec![g],
            undecodable_messages: 0,
        });
        assert!(
            out.contains("vx0: vni 100, vlan 0, local vtep 10.0.0.1"),
            "{out}"
        );
        assert!(out.contains("02:00:00:00:00:01  on g"), "{out}");
        assert!(
            out.contains("02:00:00:00:00:02  behind vtep 10.0.0.2"),
            "{out}"
        );
        assert!(out.contains("flood vteps (from BGP): 10.0.0.2"), "{out}");
        assert!(
            out.contains("refused: 2 (unknown vni 0, own vtep 2"),
            "{out}"
        );
        assert!(render(&EvpnReply::default()).contains("no EVPN segments"));
    }
}

//! The EVPN mirror's control input: datagrams of rtnetlink notifications as the kernel (zebra,
//! or anyone with CAP_NET_ADMIN) sends them, split and decoded by
//! `evpn::netlink::decode_notifications`, read by `evpn::translate::parse_fdb` and applied to a
//! segment's remote table as the mirror does (bridge entries on the vxlan device first). Whatever
//! arrives, the table stays within its limits and never names the switch's own VTEP or a VTEP
//! that is not a unicast IPv4 host.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vswitch::evpn::netlink::decode_notifications;
use vswitch::evpn::translate::{parse_fdb, RemoteTable};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const MAC_LIMIT: usize = 8;
const VTEP_LIMIT: usize = 4;

fuzz_target!(|data: &[u8]| {
    let (changes, _undecodable) = decode_notifications(data);
    let mut t = RemoteTable::new(100, LOCAL, MAC_LIMIT, VTEP_LIMIT);
    for (add, msg) in &changes {
        let Some(e) = parse_fdb(msg, *add) else {
            continue;
        };
        if let (Some(m), true, true) = (e.mac, e.master, e.add) {
            t.note_bridge_entry(m, e.ifindex % 2 == 0);
        }
        let _ = t.apply(&e);
        assert!(t.macs.len() <= MAC_LIMIT, "{} MACs", t.macs.len());
        let vteps = t.vteps();
        assert!(vteps.len() <= VTEP_LIMIT, "{vteps:?}");
        for v in vteps.iter().chain(t.effective_macs().values()) {
            assert_ne!(*v, LOCAL, "own VTEP installed");
            assert!(
                !v.is_unspecified() && !v.is_broadcast() && !v.is_multicast() && !v.is_loopback(),
                "VTEP {v} installed"
            );
        }
    }
});

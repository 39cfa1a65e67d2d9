//! The switch as the control socket's handler: what `vswitchctl` sees of it (ports, devices,
//! counters, the FDB, poll threads, fast-path channels) and the changes it asks for.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhost_user::message::protocol_features;
use vhost_user::net::feature_names;

use super::{DevEntry, Switch};
use crate::capture::Tap;
use crate::config::PortSpec;
use crate::ctl::{
    ChannelStats, ChannelsReply, CtlHandler, DeviceInfo, FdbReply, PmdStats, PmdStatsReply,
    PortInfo, PortState, PortStats, QueueInfo, RebalanceArgs, RebalanceReply, RemoteVtepInfo,
    RxqShowReply, ShowReply, StatsReply, TunnelInfo, UplinkInfo,
};
use crate::fdb::format_mac;
use crate::port::{CounterBlock, Drop, Port};
use crate::uplink::UplinkRole;
use crate::wire::VXLAN_MTU_OVERHEAD;

impl Switch {
    fn port_info(port: &Port) -> PortInfo {
        let st = port.status();
        let dev = st
            .device
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        let running = dev.connected && dev.queues.iter().any(|q| q.running);
        let state = match st.state {
            Some(PortState::Connected) if running => PortState::Running,
            Some(s) => s,
            None => PortState::Disconnected,
        };
        let mut names: Vec<String> = feature_names(dev.features)
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.extend(
            protocol_features::names(dev.protocol_features)
                .into_iter()
                .map(|n| format!("protocol:{n}")),
        );
        let queues = (0..port.slots.len())
            .map(|i| {
                let q = dev.queues.get(i);
                QueueInfo {
                    index: u16::try_from(i).unwrap_or(u16::MAX),
                    enabled: q.is_some_and(|q| q.enabled),
                    started: q.is_some_and(|q| q.running),
                    size: q.map_or(0, |q| q.size),
                    pmd: st.pmd_of_queue.get(i).copied().flatten(),
                    error: q.and_then(|q| q.error.clone()),
                    logging: q.is_some_and(|q| q.logging),
                    log_used: q.is_some_and(|q| q.log_used),
                    ring: q.map_or("split", |q| q.layout.name()).to_owned(),
                }
            })
            .collect();
        PortInfo {
            name: port.name().to_owned(),
            mode: port.spec.mode,
            path: port.spec.path.clone(),
            vlan: port.spec.vlan,
            state,
            features: dev.features,
            features_names: names,
            protocol_features: dev.protocol_features,
            queue_pairs: port.spec.queues,
            queues,
            mtu: dev.connected.then_some(dev.mtu),
            mac: Some(format_mac(port.mac)),
            announcements: port
                .announce
                .sent
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn port_stats(port: &Port) -> PortStats {
        let mut drops = BTreeMap::new();
        for d in Drop::VHOST_PORT {
            drops.insert(d.name().to_owned(), port.sum(|b| &b.drops[d as usize]));
        }
        // The rings' own refusals, by reason, for both directions. Of these only the chains
        // refused on the guest's transmit queues (odd) are frames no other counter saw; on its
        // receive queues every refusal already counts as a `tx_*` drop above.
        let mut ring_errors = BTreeMap::new();
        let mut rx_refused = 0;
        for (i, qc) in port.queue_counters.iter().enumerate() {
            let dir = if i % 2 == 1 { "rx" } else { "tx" };
            for (name, v) in qc.snapshot() {
                *ring_errors.entry(format!("{dir}_{name}")).or_insert(0) += v;
            }
            if i % 2 == 1 {
                rx_refused += qc.total_errors();
            }
        }
        drops.insert("rx_malformed_descriptor_chain".to_owned(), rx_refused);
        PortStats {
            name: port.name().to_owned(),
            rx_packets: port.sum(|b| &b.rx_packets),
            rx_bytes: port.sum(|b| &b.rx_bytes),
            tx_packets: port.sum(|b| &b.tx_packets),
            tx_bytes: port.sum(|b| &b.tx_bytes),
            drops,
            ring_errors,
            control: {
                use std::sync::atomic::Ordering::Relaxed;
                let m = &port.messages;
                BTreeMap::from([
                    ("requests".to_owned(), m.requests.load(Relaxed)),
                    ("refused".to_owned(), m.refused.load(Relaxed)),
                    ("unknown".to_owned(), m.unknown.load(Relaxed)),
                ])
            },
        }
    }
}

fn device_stats(name: &str, counters: &[CounterBlock], reasons: &[Drop]) -> PortStats {
    let sum = |f: &dyn Fn(&CounterBlock) -> u64| counters.iter().map(f).sum::<u64>();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    PortStats {
        name: name.to_owned(),
        rx_packets: sum(&|b| ld(&b.rx_packets)),
        rx_bytes: sum(&|b| ld(&b.rx_bytes)),
        tx_packets: sum(&|b| ld(&b.tx_packets)),
        tx_bytes: sum(&|b| ld(&b.tx_bytes)),
        drops: reasons
            .iter()
            .map(|&d| (d.name().to_owned(), sum(&|b| ld(&b.drops[d as usize]))))
            .collect(),
        ring_errors: BTreeMap::new(),
        control: BTreeMap::new(),
    }
}

impl DevEntry {
    fn stats(&self) -> PortStats {
        match self {
            DevEntry::Uplink(u) => {
                let reasons: &[Drop] = match u.role {
                    UplinkRole::Bridged => &Drop::UPLINK_PORT,
                    UplinkRole::Underlay => &Drop::UNDERLAY_PORT,
                };
                device_stats(&u.name, &u.counters, reasons)
            }
            DevEntry::Vxlan(t) => device_stats(&t.name, &t.counters, &Drop::VXLAN_PORT),
        }
    }

    fn info(&self, devices: &BTreeMap<String, DevEntry>, now: u32) -> DeviceInfo {
        match self {
            DevEntry::Uplink(u) => DeviceInfo {
                name: u.name.clone(),
                kind: "uplink".to_owned(),
                vlan: (u.vlan != 0).then_some(u.vlan),
                uplink: Some(UplinkInfo {
                    devargs: u.devargs.clone(),
                    driver: u.dev.driver(),
                    role: u.role.to_string(),
                    mac: format_mac(u.dev.mac()),
                    mtu: u.dev.mtu(),
                    link: u.dev.link(),
                    rx_pmd: u.rx_pmd,
                    device_counters: u.dev.stats(),
                }),
                tunnel: None,
            },
            DevEntry::Vxlan(t) => {
                let mtu = match devices.get(&t.uplink_name) {
                    Some(DevEntry::Uplink(u)) => u.dev.mtu(),
                    _ => 0,
                };
                DeviceInfo {
                    name: t.name.clone(),
                    kind: "vxlan".to_owned(),
                    vlan: (t.vlan != 0).then_some(t.vlan),
                    uplink: None,
                    tunnel: Some(TunnelInfo {
                        vni: t.vni,
                        local: t.local.to_string(),
                        uplink: t.uplink_name.clone(),
                        remotes: t
                            .remotes
                            .iter()
                            .filter_map(|r| {
                                r.addr().map(|ip| RemoteVtepInfo {
                                    ip: ip.to_string(),
                                    mac: r.mac().map(format_mac),
                                })
                            })
                            .collect(),
                        max_inner_frame: mtu.saturating_sub(VXLAN_MTU_OVERHEAD),
                        learned_macs: t.vteps.entries(now).len(),
                        evpn: t.evpn,
                    }),
                }
            }
        }
    }
}

impl CtlHandler for Switch {
    fn show(&self) -> ShowReply {
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        let ports = self
            .ports()
            .values()
            .map(|e| Switch::port_info(&e.port))
            .collect();
        let devices = self.devices();
        ShowReply {
            ports,
            devices: devices.values().map(|d| d.info(&devices, now)).collect(),
        }
    }

    fn stats(&self) -> StatsReply {
        let mut ports: Vec<PortStats> = self
            .ports()
            .values()
            .map(|e| Switch::port_stats(&e.port))
            .collect();
        ports.extend(self.devices().values().map(DevEntry::stats));
        StatsReply { ports }
    }

    fn fdb(&self) -> FdbReply {
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        FdbReply {
            entries: self.shared.fdb.entries(now),
            port_names: self
                .ports()
                .values()
                .map(|e| (e.port.id, e.port.name().to_owned()))
                .chain(self.devices().iter().map(|(n, d)| (d.id(), n.clone())))
                .collect(),
            counters: self.shared.fdb.counters(),
        }
    }

    fn pmd_stats(&self) -> PmdStatsReply {
        PmdStatsReply {
            pmds: self
                .pmds
                .iter()
                .map(|p| {
                    let c = &p.counters;
                    let packets = c.packets.load(Ordering::Relaxed);
                    let busy = c.busy_cycles.load(Ordering::Relaxed);
                    let idle = c.idle_cycles.load(Ordering::Relaxed);
                    PmdStats {
                        id: p.id,
                        core: p.core,
                        packets,
                        busy_cycles: busy,
                        idle_cycles: idle,
                        cycles_per_packet: if packets > 0 {
                            (busy + idle) as f64 / packets as f64
                        } else {
                            0.0
                        },
                        iterations: c.iterations.load(Ordering::Relaxed),
                        rx_queues: p
                            .rx_queues
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone(),
                    }
                })
                .collect(),
            tsc_hz: Some(notify::tsc::hz()),
        }
    }

    fn pmd_rxq_show(&self) -> RxqShowReply {
        self.rxq_show()
    }

    fn pmd_rxq_rebalance(&self, args: &RebalanceArgs) -> Result<RebalanceReply, String> {
        self.rxq_rebalance(args)
    }

    fn evpn(&self) -> crate::evpn::EvpnReply {
        self.evpn_status()
    }

    fn channels(&self) -> ChannelsReply {
        let Some(h) = &self.hooks else {
            return ChannelsReply::default();
        };
        ChannelsReply {
            enabled: true,
            channels: h
                .channels()
                .into_iter()
                .map(|c| ChannelStats {
                    id: c.id,
                    mode: c.mode.to_string(),
                    owner: c.owner,
                    user: c.user,
                    notify: c.notify,
                    age_secs: c.age.as_secs(),
                    sent_packets: c.sent_packets,
                    sent_bytes: c.sent_bytes,
                    sender_drops: c.sender_drops,
                    received_packets: c.received_packets,
                    received_bytes: c.received_bytes,
                    device_errors: c.device_errors,
                })
                .collect(),
        }
    }

    fn add_port(&self, spec: PortSpec) -> Result<(), String> {
        Switch::add_port(self, spec)
    }

    fn del_port(&self, name: &str) -> Result<(), String> {
        Switch::del_port(self, name)
    }

    fn tap(&self, name: &str) -> Result<Arc<Tap>, String> {
        if let Some(e) = self.ports().get(name) {
            return Ok(e.port.tap.clone());
        }
        match self.devices().get(name) {
            Some(DevEntry::Uplink(u)) => Ok(u.tap.clone()),
            Some(DevEntry::Vxlan(t)) => Ok(t.tap.clone()),
            None => Err(format!("no port named `{name}`")),
        }
    }
}

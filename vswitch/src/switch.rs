//! The switch: its ports, its poll threads, the control plane that adds and removes ports at run
//! time, and what `vswitchctl` sees.
//!
//! Adding a port: create it, start its session (the socket is bound at once), tell every PMD.
//! Removing a port: stop its session (the device state machine stops its queues and unmaps the
//! guest's memory), tell every PMD to forget it (they acknowledge), flush its MACs. A port's
//! connection coming and going never touches another port.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hypervisor_hooks::authority::{Authority, Directory, PortFacts};
use hypervisor_hooks::verify::Manifest;
use vhost_user::message::protocol_features;
use vhost_user::net::feature_names;

use crate::config::{Config, PortSpec};
use crate::ctl::{
    ChannelStats, ChannelsReply, CtlHandler, FdbReply, PmdStats, PmdStatsReply, PortInfo,
    PortState, PortStats, QueueInfo, ShowReply, StatsReply,
};
use crate::fdb::{format_mac, Fdb};
use crate::pmd::{Command, PmdHandle, Shared};
use crate::port::{Drop, Port, MAX_PORTS};
use crate::session::Session;

/// FDB capacity: entries the switch can learn.
const FDB_CAPACITY: usize = 65536;

struct PortEntry {
    port: Arc<Port>,
    session: Option<Session>,
}

type Ports = Arc<Mutex<BTreeMap<String, PortEntry>>>;

/// A running switch.
pub struct Switch {
    shared: Arc<Shared>,
    pmds: Vec<PmdHandle>,
    ports: Ports,
    started: Instant,
    /// The fast-path authority, when the switch runs with `--hooks`.
    hooks: Option<Authority>,
}

/// The ports as the hooks authority sees them.
struct PortDirectory(Ports);

impl Directory for PortDirectory {
    fn port(&self, name: &str) -> Option<PortFacts> {
        let ports = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let p = &ports.get(name)?.port;
        let pid = p.status().frontend_pid;
        Some(PortFacts {
            vlan: p.vlan,
            fastpath: p.spec.fastpath,
            frontend_pid: pid,
        })
    }
}

impl Switch {
    /// Starts the poll threads (no ports yet).
    pub fn start(cfg: &Config) -> Result<Switch, String> {
        let shared = Arc::new(Shared {
            fdb: Fdb::new(FDB_CAPACITY, cfg.mac_aging_secs),
            now_secs: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        });
        let pmds = cfg
            .pmd_cores
            .iter()
            .enumerate()
            .map(|(i, &core)| {
                PmdHandle::start(
                    i,
                    Some(core),
                    u64::from(cfg.pmd_sleep_max_us),
                    shared.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("starting poll threads: {e}"))?;
        // Calibrate now, not on the first `pmd-stats`.
        notify::tsc::hz();
        let ports: Ports = Arc::default();
        let hooks = match &cfg.fastpath_manifest {
            Some(m) if cfg.hooks.is_some() => {
                let manifest = Manifest::load(m).map_err(|e| e.to_string())?;
                tracing::info!(
                    "fast path: {} approved trampoline(s) in {}",
                    manifest.len(),
                    m.display()
                );
                Some(Authority::new(
                    Arc::new(PortDirectory(ports.clone())),
                    manifest,
                ))
            }
            _ => None,
        };
        Ok(Switch {
            shared,
            pmds,
            ports,
            started: Instant::now(),
            hooks,
        })
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PortEntry>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a port and starts serving it.
    pub fn add_port(&self, spec: PortSpec) -> Result<(), String> {
        spec.validate().map_err(|e| e.to_string())?;
        let mut ports = self.ports();
        if ports.contains_key(&spec.name) {
            return Err(format!("a port named `{}` already exists", spec.name));
        }
        if let Some(other) = ports.values().find(|e| e.port.spec.path == spec.path) {
            return Err(format!(
                "socket path {} is already used by port `{}`",
                spec.path.display(),
                other.port.name()
            ));
        }
        let id = (0..MAX_PORTS)
            .find(|i| !ports.values().any(|e| usize::from(e.port.id) == *i))
            .ok_or_else(|| format!("the switch already has {MAX_PORTS} ports"))?;
        let id = u16::try_from(id).map_err(|_| "port id".to_owned())?;
        let port = Arc::new(Port::new(id, spec, self.pmds.len()));
        // Guest transmit queues (odd slots) spread over the PMDs.
        let npmd = self.pmds.len();
        let mut assign: Vec<Vec<u16>> = vec![Vec::new(); npmd];
        for pair in 0..port.queue_pairs() {
            let pmd = (usize::from(id) + pair) % npmd;
            let slot = u16::try_from(2 * pair + 1).unwrap_or(u16::MAX);
            assign[pmd].push(slot);
            port.status().pmd_of_queue[2 * pair + 1] = Some(pmd);
        }
        let session = Session::start(port.clone(), self.hooks.clone())?;
        for (pmd, poll) in self.pmds.iter().zip(assign) {
            let p = port.clone();
            if let Err(e) = pmd.command(|done| Command::AddPort {
                port: p,
                poll,
                done,
            }) {
                session.stop();
                return Err(e);
            }
        }
        tracing::info!(
            "port {} added: {} {} (id {id}, vlan {}, {} queue pairs)",
            port.name(),
            port.spec.mode,
            port.spec.path.display(),
            port.vlan,
            port.queue_pairs()
        );
        ports.insert(
            port.name().to_owned(),
            PortEntry {
                port,
                session: Some(session),
            },
        );
        Ok(())
    }

    /// Removes a port: its guest is disconnected, its memory unmapped, its MACs forgotten.
    pub fn del_port(&self, name: &str) -> Result<(), String> {
        let mut entry = self
            .ports()
            .remove(name)
            .ok_or_else(|| format!("no port named `{name}`"))?;
        if let Some(s) = entry.session.take() {
            s.stop();
        }
        let id = entry.port.id;
        for pmd in &self.pmds {
            pmd.command(|done| Command::DelPort { id, done })?;
        }
        let flushed = self.shared.fdb.flush_port(id);
        tracing::info!("port {name} removed ({flushed} MAC entries flushed)");
        Ok(())
    }

    /// Advances the FDB clock and ages MACs out; called about every 100 ms.
    pub fn housekeeping(&self) {
        let secs = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        if self.shared.now_secs.swap(secs, Ordering::Relaxed) != secs {
            self.shared.fdb.expire(secs);
        }
    }

    /// Serves fast-path guests on `listener` (the hooks socket).
    pub fn serve_hooks(
        &self,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<std::thread::JoinHandle<()>, String> {
        let h = self
            .hooks
            .as_ref()
            .ok_or("the switch was started without --hooks")?;
        h.serve(listener).map_err(|e| format!("hooks: {e}"))
    }

    /// Stops everything: sessions (guests disconnected, sockets removed), then poll threads.
    pub fn shutdown(&self) {
        if let Some(h) = &self.hooks {
            h.stop();
        }
        let names: Vec<String> = self.ports().keys().cloned().collect();
        for n in names {
            if let Err(e) = self.del_port(&n) {
                tracing::warn!("removing port {n}: {e}");
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for pmd in &self.pmds {
            let t = pmd.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }

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
        }
    }

    fn port_stats(port: &Port) -> PortStats {
        let mut drops = BTreeMap::new();
        for d in Drop::ALL {
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
        }
    }
}

impl CtlHandler for Switch {
    fn show(&self) -> ShowReply {
        ShowReply {
            ports: self
                .ports()
                .values()
                .map(|e| Switch::port_info(&e.port))
                .collect(),
        }
    }

    fn stats(&self) -> StatsReply {
        StatsReply {
            ports: self
                .ports()
                .values()
                .map(|e| Switch::port_stats(&e.port))
                .collect(),
        }
    }

    fn fdb(&self) -> FdbReply {
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        FdbReply {
            entries: self.shared.fdb.entries(now),
            port_names: self
                .ports()
                .values()
                .map(|e| (e.port.id, e.port.name().to_owned()))
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
}

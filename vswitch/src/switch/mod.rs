//! The switch: its ports, its poll threads, and the control plane that adds and removes ports at
//! run time. What `vswitchctl` sees of it is in `handler`.
//!
//! Adding a port: create it, start its session (the socket is bound at once), tell every PMD.
//! Removing a port: stop its session (the device state machine stops its queues and unmaps the
//! guest's memory), tell every PMD to forget it (they acknowledge), flush its MACs. A port's
//! connection coming and going never touches another port.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hypervisor_hooks::authority::{Authority, Directory, PortFacts};
use hypervisor_hooks::verify::Manifest;

use crate::config::{Config, PortSpec, VxlanSpec};
use crate::netdev::NetDev;
use crate::pmd::{Command, PmdHandle, Shared};
use crate::port::{Port, MAX_PORTS};
use crate::session::Session;
use crate::uplink::{UplinkPort, UplinkRole};
use crate::vxlan::VxlanPort;
use crate::wire::VXLAN_MTU_OVERHEAD;

mod handler;
mod placement;

use placement::Placement;

/// FDB capacity: entries the switch can learn.
const FDB_CAPACITY: usize = 65536;

struct PortEntry {
    port: Arc<Port>,
    session: Option<Session>,
}

type Ports = Arc<Mutex<BTreeMap<String, PortEntry>>>;

/// A port over a device: an uplink or a tunnel.
#[derive(Clone)]
enum DevEntry {
    Uplink(Arc<UplinkPort>),
    Vxlan(Arc<VxlanPort>),
}

impl DevEntry {
    fn id(&self) -> u16 {
        match self {
            DevEntry::Uplink(u) => u.id,
            DevEntry::Vxlan(t) => t.id,
        }
    }
}

/// A running switch.
pub struct Switch {
    shared: Arc<Shared>,
    pmds: Vec<PmdHandle>,
    ports: Ports,
    /// Uplinks and tunnels. Lock order: `ports`, then `devices`.
    devices: Mutex<BTreeMap<String, DevEntry>>,
    started: Instant,
    /// The fast-path authority, when the switch runs with `--hooks`.
    hooks: Option<Authority>,
    mac_aging_secs: u32,
    /// Queue loads and their intervals (`pmd-rxq-show`, `pmd-rxq-rebalance`).
    placement: Placement,
    /// Remote MACs per EVPN tunnel (`--evpn-mac-limit`), for sizing their tables.
    evpn_mac_limit: usize,
    /// The kernel mirror of the EVPN tunnels (`--evpn`), once they are up.
    evpn: Mutex<Option<crate::evpn::Mirror>>,
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
    /// Starts the poll threads (no ports yet). With DPDK ports configured, the EAL comes up
    /// first (before any thread of ours exists to inherit its affinity games).
    pub fn start(cfg: &Config) -> Result<Switch, String> {
        if cfg.uses_dpdk() {
            start_eal(cfg)?;
        }
        let shared = Arc::new(Shared::new(FDB_CAPACITY, cfg.mac_aging_secs));
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
                let mut manifest = Manifest::load(m).map_err(|e| e.to_string())?;
                if let Some(why) = &cfg.fastpath_unscanned {
                    tracing::warn!("fast path: trampolines verified by digest only: {why}");
                    manifest = manifest.without_mapping_scan(why);
                }
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
        let placement = Placement::new(cfg.pmd_rxq_interval_secs, pmds.len());
        Ok(Switch {
            shared,
            pmds,
            ports,
            devices: Mutex::default(),
            started: Instant::now(),
            hooks,
            mac_aging_secs: cfg.mac_aging_secs,
            placement,
            evpn: Mutex::default(),
            evpn_mac_limit: cfg.evpn_mac_limit,
        })
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DevEntry>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest port id no port of any kind uses.
    fn free_id(
        ports: &BTreeMap<String, PortEntry>,
        devices: &BTreeMap<String, DevEntry>,
    ) -> Result<u16, String> {
        let id = (0..MAX_PORTS)
            .find(|i| {
                !ports.values().any(|e| usize::from(e.port.id) == *i)
                    && !devices.values().any(|d| usize::from(d.id()) == *i)
            })
            .ok_or_else(|| format!("the switch already has {MAX_PORTS} ports"))?;
        u16::try_from(id).map_err(|_| "port id".to_owned())
    }

    /// Opens the configured DPDK ports and tunnels (the EAL is up: [`Switch::start`]).
    #[cfg(feature = "dpdk")]
    pub fn add_configured_devices(&self, cfg: &Config) -> Result<(), String> {
        for p in &cfg.dpdk_ports {
            let dev = crate::dpdk::EthDev::open(&p.devargs, self.pmds.len(), p.mtu)
                .map_err(|e| format!("--dpdk-port {}: {e}", p.name))?;
            let role = if cfg.is_underlay(&p.name) {
                UplinkRole::Underlay
            } else {
                UplinkRole::Bridged
            };
            self.add_uplink(
                &p.name,
                &p.devargs,
                p.vlan.unwrap_or(0),
                role,
                Arc::new(crate::dpdk::DpdkDev(dev)),
            )?;
        }
        for v in &cfg.vxlan {
            self.add_vxlan(v)?;
        }
        self.start_evpn(cfg)
    }

    /// Starts the kernel mirror of the EVPN tunnels, if there are any.
    #[cfg(feature = "dpdk")]
    fn start_evpn(&self, cfg: &Config) -> Result<(), String> {
        let tunnels: Vec<Arc<VxlanPort>> = self
            .devices()
            .values()
            .filter_map(|d| match d {
                DevEntry::Vxlan(t) if t.evpn => Some(t.clone()),
                _ => None,
            })
            .collect();
        if tunnels.is_empty() {
            return Ok(());
        }
        let ports = self.ports.clone();
        let list: crate::evpn::PortList = Arc::new(move || {
            ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .map(|e| (e.port.id, e.port.vlan, e.port.name().to_owned()))
                .collect()
        });
        let m = crate::evpn::Mirror::start(
            &tunnels,
            self.shared.clone(),
            list,
            cfg.evpn_mac_limit,
            cfg.evpn_hold_secs,
        )?;
        *self.evpn.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        Ok(())
    }

    /// What the EVPN mirror holds (empty without EVPN tunnels).
    pub fn evpn_status(&self) -> crate::evpn::EvpnReply {
        self.evpn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.status())
            .unwrap_or_default()
    }

    /// Without the `dpdk` feature there are no devices to open (the configuration refuses
    /// DPDK ports).
    #[cfg(not(feature = "dpdk"))]
    pub fn add_configured_devices(&self, cfg: &Config) -> Result<(), String> {
        if cfg.uses_dpdk() {
            return Err(crate::config::ConfigError::DpdkNotBuilt.to_string());
        }
        Ok(())
    }

    /// Adds an uplink port over `dev` and starts receiving from it.
    pub fn add_uplink(
        &self,
        name: &str,
        devargs: &str,
        vlan: u16,
        role: UplinkRole,
        dev: Arc<dyn NetDev>,
    ) -> Result<u16, String> {
        crate::config::validate_port_name(name).map_err(|e| e.to_string())?;
        let ports = self.ports();
        let mut devices = self.devices();
        if ports.contains_key(name) || devices.contains_key(name) {
            return Err(format!("a port named `{name}` already exists"));
        }
        let id = Switch::free_id(&ports, &devices)?;
        let port = Arc::new(UplinkPort::new(
            id,
            name,
            devargs,
            vlan,
            role,
            dev,
            self.pmds.len(),
        ));
        for pmd in &self.pmds {
            let p = port.clone();
            let poll = pmd.id == port.rx_pmd;
            pmd.command_with(|done| Command::AddUplink {
                port: p,
                poll,
                done,
            })??;
        }
        tracing::info!(
            "uplink {name} added: {devargs} ({}, {role}, id {id}, mtu {}, rx on pmd{})",
            port.dev.driver(),
            port.dev.mtu(),
            port.rx_pmd
        );
        devices.insert(name.to_owned(), DevEntry::Uplink(port));
        Ok(id)
    }

    /// Adds a VXLAN tunnel port over an underlay uplink.
    pub fn add_vxlan(&self, spec: &VxlanSpec) -> Result<u16, String> {
        crate::config::validate_port_name(&spec.name).map_err(|e| e.to_string())?;
        let ports = self.ports();
        let mut devices = self.devices();
        if ports.contains_key(&spec.name) || devices.contains_key(&spec.name) {
            return Err(format!("a port named `{}` already exists", spec.name));
        }
        let uplink = match devices.get(&spec.uplink) {
            Some(DevEntry::Uplink(u)) if u.role == UplinkRole::Underlay => u.clone(),
            Some(DevEntry::Uplink(_)) => {
                return Err(format!(
                    "tunnel {}: uplink {} is bridged; a tunnel needs an underlay uplink",
                    spec.name, spec.uplink
                ))
            }
            _ => {
                return Err(format!(
                    "tunnel {}: no uplink named `{}`",
                    spec.name, spec.uplink
                ))
            }
        };
        let id = Switch::free_id(&ports, &devices)?;
        let mut t = VxlanPort::new(
            id,
            &spec.name,
            spec.vlan.unwrap_or(0),
            spec.vni,
            spec.local,
            &spec.remotes,
            (uplink.id, &uplink.name),
            self.mac_aging_secs,
            self.pmds.len(),
        );
        if spec.evpn {
            t = t.with_evpn(self.evpn_mac_limit);
        }
        let t = Arc::new(t);
        for pmd in &self.pmds {
            let p = t.clone();
            pmd.command_with(|done| Command::AddVxlan { port: p, done })??;
        }
        tracing::info!(
            "vxlan {} added: vni {} from {} to {:?}{} over {} (id {id}, vlan {}, inner frames up to {} bytes)",
            spec.name,
            spec.vni,
            spec.local,
            spec.remotes,
            if spec.evpn { " and EVPN's remotes" } else { "" },
            spec.uplink,
            t.vlan,
            uplink.dev.mtu().saturating_sub(VXLAN_MTU_OVERHEAD)
        );
        devices.insert(spec.name.clone(), DevEntry::Vxlan(t));
        Ok(id)
    }

    /// Removes an uplink (refused while tunnels run over it) or a tunnel.
    fn del_device(&self, name: &str) -> Result<(), String> {
        let mut devices = self.devices();
        let entry = devices
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no port named `{name}`"))?;
        if let DevEntry::Uplink(u) = &entry {
            let users: Vec<&str> = devices
                .values()
                .filter_map(|d| match d {
                    DevEntry::Vxlan(t) if t.uplink == u.id => Some(t.name.as_str()),
                    _ => None,
                })
                .collect();
            if !users.is_empty() {
                return Err(format!(
                    "uplink {name} carries tunnel(s) {}; remove them first",
                    users.join(", ")
                ));
            }
        }
        let id = entry.id();
        for pmd in &self.pmds {
            pmd.command(|done| Command::DelPort { id, done })?;
        }
        devices.remove(name);
        match &entry {
            DevEntry::Uplink(u) => u.tap.close(),
            DevEntry::Vxlan(t) => t.tap.close(),
        }
        let flushed = self.shared.fdb.flush_port(id);
        tracing::info!("port {name} removed ({flushed} MAC entries flushed)");
        Ok(())
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
        if self.devices().contains_key(&spec.name) {
            return Err(format!("a port named `{}` already exists", spec.name));
        }
        let id = Switch::free_id(&ports, &self.devices())?;
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
        let removed = self.ports().remove(name);
        let Some(mut entry) = removed else {
            return self.del_device(name);
        };
        if let Some(s) = entry.session.take() {
            s.stop();
        }
        let id = entry.port.id;
        for pmd in &self.pmds {
            pmd.command(|done| Command::DelPort { id, done })?;
        }
        entry.port.tap.close();
        let flushed = self.shared.fdb.flush_port(id);
        tracing::info!("port {name} removed ({flushed} MAC entries flushed)");
        Ok(())
    }

    /// Ages MACs out and advances the FDB clock, and closes queue-load intervals when due;
    /// called about every 100 ms, from one thread.
    ///
    /// Expiry comes before the clock moves: a control request reading the clock in between
    /// would otherwise list an entry as gone (no longer live at the new second) while the
    /// `expired` counter does not count it yet.
    pub fn housekeeping(&self) {
        let secs = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        if self.shared.now_secs.load(Ordering::Relaxed) != secs {
            self.shared.fdb.expire(secs);
            for d in self.devices().values() {
                if let DevEntry::Vxlan(t) = d {
                    t.vteps.expire(secs);
                }
            }
            self.shared.now_secs.store(secs, Ordering::Relaxed);
        }
        self.close_load_interval();
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
        // The mirror first: its routes leave the tunnels before the tunnels go.
        let mirror = self.evpn.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut m) = mirror {
            m.stop();
        }
        let names: Vec<String> = self.ports().keys().cloned().collect();
        for n in names {
            if let Err(e) = self.del_port(&n) {
                tracing::warn!("removing port {n}: {e}");
            }
        }
        let mut devs: Vec<(bool, String)> = self
            .devices()
            .iter()
            .map(|(n, d)| (matches!(d, DevEntry::Uplink(_)), n.clone()))
            .collect();
        // Tunnels (false) before the uplinks they run over.
        devs.sort();
        for (_, n) in devs {
            if let Err(e) = self.del_device(&n) {
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
}

/// Brings the DPDK EAL up with `--dpdk-eal` or the switch's defaults (main lcore on a core the
/// poll threads do not use, when there is one).
#[cfg(feature = "dpdk")]
fn start_eal(cfg: &Config) -> Result<(), String> {
    let args = match &cfg.dpdk_eal {
        Some(a) => a.clone(),
        None => {
            let avail = crate::config::available_cores();
            let core = avail
                .iter()
                .copied()
                .find(|c| !cfg.pmd_cores.contains(c))
                .or_else(|| avail.first().copied())
                .unwrap_or(0);
            let pci = cfg
                .dpdk_ports
                .iter()
                .any(|p| crate::config::is_pci_devargs(&p.devargs));
            crate::dpdk::default_eal_args(core, pci)
        }
    };
    crate::dpdk::init(&args).map(drop)
}

#[cfg(not(feature = "dpdk"))]
fn start_eal(_cfg: &Config) -> Result<(), String> {
    Err(crate::config::ConfigError::DpdkNotBuilt.to_string())
}

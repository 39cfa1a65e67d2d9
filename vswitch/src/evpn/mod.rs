//! BGP EVPN (RFC 7432, RFC 8365) for VXLAN tunnels, with a stock routing suite (FRR's zebra
//! and bgpd) as the control plane: the switch mirrors each EVPN segment into kernel objects
//! that carry no traffic and that zebra reads and writes over netlink.
//!
//! Per segment (VNI): a Linux bridge `evbr<VNI>`, a vxlan device `evvx<VNI>` in it
//! (`nolearning`, local address = the tunnel's VTEP, UDP port 4789), and per guest port in the
//! tunnel's VLAN a veth pair `ev<PORT>-<VNI>`/`ew<PORT>-<VNI>` whose first end is a bridge
//! port. Both directions:
//! - MACs the switch learns on a guest port become static FDB entries on its mirror port;
//!   zebra sees local MACs on a bridge port and bgpd advertises type-2 routes. Aged out or
//!   moved away from the port, the entry goes and the route is withdrawn.
//! - zebra installs what BGP learned on the vxlan device: `extern_learn` entries with `dst`
//!   (type-2: inner MAC behind a remote VTEP) and all-zero MAC entries (type-3: the flood
//!   list). The mirror watches them (netlink notifications, a full dump at start, after an
//!   overrun and every minute) and installs them into the tunnel port's remote VTEP slots
//!   and inner MAC table ([`install`]), after checking them ([`translate`]).
//!
//! The switch's own data path still carries every frame; the kernel objects only describe.
//! Why a mirror rather than speaking BGP or zebra's protocol ourselves: zebra's netlink
//! interface to a Linux bridge is the interface FRR keeps stable (it is how every Linux EVPN
//! deployment runs), so stock FRR works unmodified, with all of its BGP, and the switch's
//! control input is one narrow, checkable thing: FDB entries.

pub mod install;
pub mod local;
pub mod netlink;
mod status;
pub mod translate;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use status::{EvpnReply, EvpnSegmentInfo, LocalMacInfo, RemoteMacInfo};

use install::Installed;
use local::{FdbOp, LocalExport};
use netlink::{Events, Received, Rtnl};
use translate::{parse_fdb, RemoteTable};

use crate::eth::Mac;
use crate::pmd::Shared;
use crate::vxlan::VxlanPort;
use crate::wire::VXLAN_PORT;

/// Default of `--evpn-mac-limit`: remote MACs accepted per segment (and local MACs exported).
pub const DEFAULT_MAC_LIMIT: usize = 4096;
/// Most seconds `--evpn-hold` may hold a withdrawal.
pub const MAX_HOLD_SECS: u32 = 3600;
/// How long the mirror waits for notifications before looking at the switch again.
const TICK: Duration = Duration::from_millis(100);
/// How often local MACs are compared with the switch's table.
const LOCAL_EVERY: Duration = Duration::from_millis(250);
/// A full dump now and then, in case a notification was lost without an overrun.
const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// At most one warning per segment this often about failing kernel writes.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A switch port that can have local MACs: (id, VLAN, name).
pub type LocalPort = (u16, u16, String);
/// The switch's guest ports now.
pub type PortList = Arc<dyn Fn() -> Vec<LocalPort> + Send + Sync>;

/// The kernel names of a segment's mirror.
pub fn bridge_name(vni: u32) -> String {
    format!("evbr{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("evvx{vni}")
}

/// The mirror port of guest port `port` (bridge end) and its peer.
pub fn mirror_port_names(vni: u32, port: u16) -> (String, String) {
    (format!("ev{port}-{vni}"), format!("ew{port}-{vni}"))
}

/// Whether `name` is one of segment `vni`'s mirror ports (either end).
fn is_mirror_port_name(name: &str, vni: u32) -> bool {
    let Some(rest) = name.strip_prefix("ev").or_else(|| name.strip_prefix("ew")) else {
        return false;
    };
    let Some((port, v)) = rest.split_once('-') else {
        return false;
    };
    !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) && v == vni.to_string()
}

struct Segment {
    port: Arc<VxlanPort>,
    bridge: u32,
    vxlan: u32,
    /// Guest port id -> its mirror port's index and name.
    mirrors: BTreeMap<u16, (u32, String)>,
    remote: RemoteTable,
    installed: Installed,
    local: LocalExport,
    local_left_out: usize,
    kernel_errors: u64,
    last_warn: Option<Instant>,
}

impl Segment {
    fn kernel_error(&mut self, what: &str, e: &std::io::Error) {
        self.kernel_errors += 1;
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(
                "evpn {} (vni {}): {what}: {e} ({} kernel errors so far)",
                self.port.name,
                self.port.vni,
                self.kernel_errors
            );
        }
    }
}

/// Deletes what a previous run (or a crashed one) left of segment `vni`'s mirror.
fn remove_stale(nl: &mut Rtnl, vni: u32) -> std::io::Result<usize> {
    let (br, vx) = (bridge_name(vni), vxlan_name(vni));
    let mut n = 0;
    for (index, name) in nl.links()? {
        if name == br || name == vx || is_mirror_port_name(&name, vni) {
            match nl.del_link(index) {
                Ok(()) => n += 1,
                // The other end of a veth pair deleted a moment ago.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

fn up_quietly(nl: &mut Rtnl, index: u32) -> std::io::Result<()> {
    if let Err(e) = nl.set_no_ipv6_addr(index) {
        // IPv6 may be off in this namespace: then there is no link-local address anyway.
        tracing::debug!("evpn: addrgenmode none on link {index}: {e}");
    }
    nl.set_up(index)
}

fn create_segment(
    nl: &mut Rtnl,
    port: &Arc<VxlanPort>,
    mac_limit: usize,
    hold_secs: u32,
) -> Result<Segment, String> {
    let vni = port.vni;
    let what = |step: &str, e: std::io::Error| {
        let hint = if e.raw_os_error() == Some(nix::libc::EPERM) {
            " (--evpn needs CAP_NET_ADMIN in the switch's network namespace)"
        } else {
            ""
        };
        format!("evpn {} (vni {vni}): {step}: {e}{hint}", port.name)
    };
    let stale = remove_stale(nl, vni).map_err(|e| what("removing a stale mirror", e))?;
    if stale > 0 {
        tracing::info!(
            "evpn {}: removed {stale} stale mirror link(s) of vni {vni}",
            port.name
        );
    }
    let (br, vx) = (bridge_name(vni), vxlan_name(vni));
    let bridge = nl
        .add_bridge(&br)
        .map_err(|e| what(&format!("creating bridge {br}"), e))?;
    let made = (|| -> std::io::Result<u32> {
        let vxlan = nl.add_vxlan(&vx, vni, port.local, VXLAN_PORT)?;
        nl.set_master(vxlan, bridge)?;
        nl.set_port_no_learning(vxlan)?;
        up_quietly(nl, bridge)?;
        up_quietly(nl, vxlan)?;
        Ok(vxlan)
    })();
    let vxlan = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = remove_stale(nl, vni);
            return Err(what(&format!("creating vxlan device {vx} in {br}"), e));
        }
    };
    let installed = Installed::new(port, hold_secs);
    let vtep_limit = installed.free_slots(port);
    tracing::info!(
        "evpn {}: mirror {br} + {vx} (vni {vni}, local vtep {}), up to {mac_limit} remote MACs and {vtep_limit} remote VTEPs, withdrawals held {hold_secs} s",
        port.name,
        port.local
    );
    Ok(Segment {
        port: port.clone(),
        bridge,
        vxlan,
        mirrors: BTreeMap::new(),
        remote: RemoteTable::new(vni, port.local, mac_limit, vtep_limit),
        installed,
        local: LocalExport::new(mac_limit),
        local_left_out: 0,
        kernel_errors: 0,
        last_warn: None,
    })
}

/// The running mirror of every EVPN segment.
pub struct Mirror {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Mutex<EvpnReply>>,
}

struct Worker {
    nl: Rtnl,
    events: Events,
    segments: Vec<Segment>,
    shared: Arc<Shared>,
    ports: PortList,
    status: Arc<Mutex<EvpnReply>>,
    resyncs: u64,
    undecodable: u64,
    /// Names of the guest ports, for the status.
    port_names: BTreeMap<u16, String>,
}

impl Mirror {
    /// Creates the mirrors of `tunnels` (each an EVPN tunnel port), reads what the kernel
    /// already holds, and starts the thread that keeps both sides in step.
    pub fn start(
        tunnels: &[Arc<VxlanPort>],
        shared: Arc<Shared>,
        ports: PortList,
        mac_limit: usize,
        hold_secs: u32,
    ) -> Result<Mirror, String> {
        let mut nl = Rtnl::open().map_err(|e| format!("evpn: netlink socket: {e}"))?;
        // Subscribed before anything is read: no change falls between the dump and the events.
        let events = Events::open(TICK).map_err(|e| format!("evpn: netlink notifications: {e}"))?;
        let mut segments = Vec::new();
        for t in tunnels {
            match create_segment(&mut nl, t, mac_limit, hold_secs) {
                Ok(s) => segments.push(s),
                Err(e) => {
                    for s in &segments {
                        let _ = remove_stale(&mut nl, s.port.vni);
                    }
                    return Err(e);
                }
            }
        }
        let status = Arc::new(Mutex::new(EvpnReply::default()));
        let mut w = Worker {
            nl,
            events,
            segments,
            shared,
            ports,
            status: status.clone(),
            resyncs: 0,
            undecodable: 0,
            port_names: BTreeMap::new(),
        };
        w.full_dump();
        w.sync_local();
        w.install();
        w.publish();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("evpn".to_owned())
            .spawn(move || w.run(&s))
            .map_err(|e| format!("evpn: starting its thread: {e}"))?;
        Ok(Mirror {
            stop,
            thread: Some(thread),
            status,
        })
    }

    /// What the segments hold now (refreshed every tick).
    pub fn status(&self) -> EvpnReply {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the thread, which takes its routes out of the tunnels and deletes the mirrors.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        let mut last_local = Instant::now();
        let mut last_dump = Instant::now();
        let mut last_second = self.shared.now_secs.load(Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) {
            let mut dirty = false;
            match self.events.recv() {
                Ok(Received::Changes(changes, bad)) => {
                    self.undecodable += bad as u64;
                    for (add, msg) in changes {
                        dirty |= self.apply(&msg, add);
                    }
                }
                Ok(Received::Overrun) => {
                    let stale = self.events.drain();
                    tracing::warn!(
                        "evpn: netlink notifications overran; {stale} queued ones dropped, reading the full FDB"
                    );
                    self.full_dump();
                    last_dump = Instant::now();
                    dirty = true;
                }
                Err(e) => {
                    tracing::warn!("evpn: reading netlink notifications: {e}");
                    std::thread::sleep(TICK);
                }
            }
            if last_dump.elapsed() >= RESYNC_EVERY {
                self.full_dump();
                last_dump = Instant::now();
                dirty = true;
            }
            let now = self.shared.now_secs.load(Ordering::Relaxed);
            if dirty || now != last_second {
                last_second = now;
                self.install();
            }
            if last_local.elapsed() >= LOCAL_EVERY {
                last_local = Instant::now();
                self.sync_local();
                self.publish();
            }
        }
        self.teardown();
    }

    /// Applies one notification; whether it changed a segment's remote state.
    fn apply(
        &mut self,
        msg: &netlink_packet_route::neighbour::NeighbourMessage,
        add: bool,
    ) -> bool {
        let Some(e) = parse_fdb(msg, add) else {
            return false;
        };
        let Some(seg) = self
            .segments
            .iter_mut()
            .find(|s| s.vxlan == e.ifindex || s.mirrors.values().any(|(i, _)| *i == e.ifindex))
        else {
            return false;
        };
        let mac = e.mac.filter(|_| e.master);
        if e.ifindex != seg.vxlan {
            // The bridge's entry on a guest's mirror port: the MAC is local here.
            return mac.is_some_and(|m| seg.remote.note_bridge_entry(m, e.add));
        }
        let mut changed = false;
        if let (Some(m), true) = (mac, e.add) {
            changed |= seg.remote.note_bridge_entry(m, false);
        }
        changed
            | match seg.remote.apply(&e) {
                Ok(c) => c != translate::Change::None,
                Err(why) => {
                    tracing::debug!(
                        "evpn {} (vni {}): refused FDB entry {e:?}: {why:?}",
                        seg.port.name,
                        seg.port.vni
                    );
                    false
                }
            }
    }

    /// Replaces every segment's remote state with what the kernel holds now.
    fn full_dump(&mut self) {
        let entries = match self.nl.dump_fdb() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("evpn: dumping the bridge FDB: {e}; keeping the last state");
                return;
            }
        };
        self.resyncs += 1;
        for s in &mut self.segments {
            s.remote.begin_dump();
        }
        for m in &entries {
            self.apply(m, true);
        }
        for s in &mut self.segments {
            s.remote.end_dump();
        }
    }

    fn install(&mut self) {
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        for s in &mut self.segments {
            let homeless = s.installed.sync(&s.port, &s.remote, now);
            for mac in s.installed.take_fresh() {
                follow_remote(&self.shared.fdb, &s.port, mac, now);
            }
            if homeless > 0 {
                tracing::warn!(
                    "evpn {}: {homeless} remote VTEP(s) found no free slot",
                    s.port.name
                );
            }
        }
    }

    /// Mirror ports for the guest ports in each segment's VLAN, and their MACs exported.
    fn sync_local(&mut self) {
        let ports = (self.ports)();
        self.port_names = ports.iter().map(|(id, _, n)| (*id, n.clone())).collect();
        let now = self.shared.now_secs.load(Ordering::Relaxed);
        let entries = self.shared.fdb.entries(now);
        for s in &mut self.segments {
            let members: Vec<u16> = ports
                .iter()
                .filter(|(_, vlan, _)| *vlan == s.port.vlan)
                .map(|(id, _, _)| *id)
                .collect();
            // Ports gone (or moved to another VLAN).
            let gone: Vec<u16> = s
                .mirrors
                .keys()
                .filter(|id| !members.contains(id))
                .copied()
                .collect();
            for id in gone {
                if let Some((index, name)) = s.mirrors.remove(&id) {
                    if let Err(e) = self.nl.del_link(index) {
                        s.kernel_error(&format!("deleting mirror port {name}"), &e);
                    }
                }
                s.local.forget_port(id);
            }
            for &id in &members {
                if s.mirrors.contains_key(&id) {
                    continue;
                }
                let (name, peer) = mirror_port_names(s.port.vni, id);
                let bridge = s.bridge;
                let made = (|| -> std::io::Result<u32> {
                    let index = self.nl.add_veth(&name, &peer)?;
                    self.nl.set_master(index, bridge)?;
                    up_quietly(&mut self.nl, index)?;
                    if let Some(p) = self.nl.link_index(&peer)? {
                        up_quietly(&mut self.nl, p)?;
                    }
                    Ok(index)
                })();
                match made {
                    Ok(index) => {
                        s.mirrors.insert(id, (index, name));
                    }
                    Err(e) => {
                        s.kernel_error(&format!("creating mirror port {name}"), &e);
                        // A half-made pair is retried from scratch next time.
                        if let Ok(Some(i)) = self.nl.link_index(&name) {
                            let _ = self.nl.del_link(i);
                        }
                    }
                }
            }
            let mirrored: Vec<u16> = s.mirrors.keys().copied().collect();
            let want = local::desired(&entries, s.port.vlan, &mirrored);
            let (ops, left_out) = s.local.plan(&want);
            s.local_left_out = left_out;
            for op in ops {
                let (add, mac, port) = match op {
                    FdbOp::Add { mac, port } => (true, mac, port),
                    FdbOp::Del { mac, port } => (false, mac, port),
                };
                let Some((index, _)) = s.mirrors.get(&port) else {
                    continue;
                };
                match self.nl.bridge_fdb(add, *index, mac) {
                    Ok(()) => s.local.done(op),
                    // Already gone (the port was flushed): as good as removed.
                    Err(e) if !add && e.raw_os_error() == Some(nix::libc::ENOENT) => {
                        s.local.done(op)
                    }
                    Err(e) => s.kernel_error(
                        &format!(
                            "{} local MAC {}",
                            if add { "exporting" } else { "withdrawing" },
                            crate::fdb::format_mac(mac)
                        ),
                        &e,
                    ),
                }
            }
        }
    }

    fn publish(&self) {
        let reply = EvpnReply {
            segments: self
                .segments
                .iter()
                .map(|s| status::segment_info(s, &self.port_names, self.resyncs))
                .collect(),
            undecodable_messages: self.undecodable + self.nl.undecodable,
        };
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }

    fn teardown(&mut self) {
        for s in &mut self.segments {
            s.installed.clear(&s.port);
            match remove_stale(&mut self.nl, s.port.vni) {
                Ok(n) => tracing::info!(
                    "evpn {}: mirror of vni {} removed ({n} links)",
                    s.port.name,
                    s.port.vni
                ),
                Err(e) => tracing::warn!(
                    "evpn {}: removing the mirror of vni {}: {e}",
                    s.port.name,
                    s.port.vni
                ),
            }
        }
    }
}

/// A remote route for `mac` was just installed: zebra chose it over a local copy (a higher MAC
/// mobility sequence), so a local FDB entry for `mac` is stale and moves onto the tunnel. The
/// data path does not move it (an EVPN tunnel learns only MACs no other port holds), and the
/// move is made once per install, so a guest that really comes back is learned and exported
/// again, and outbids the remote route in turn.
fn follow_remote(fdb: &crate::fdb::Fdb, port: &VxlanPort, mac: Mac, now: u32) {
    if let Some(old) = fdb.move_live(port.vlan, mac, port.id, now) {
        tracing::info!(
            "evpn {}: {} moved from port {old} to VTEP route (control plane)",
            port.name,
            crate::fdb::format_mac(mac)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mirror_names_fit_interface_names() {
        let vni = crate::wire::MAX_VNI;
        let port = u16::try_from(crate::port::MAX_PORTS - 1).unwrap();
        let (a, b) = mirror_port_names(vni, port);
        for n in [bridge_name(vni), vxlan_name(vni), a.clone(), b.clone()] {
            assert!(n.len() <= 15, "{n} is longer than IFNAMSIZ - 1");
        }
        assert!(is_mirror_port_name(&a, vni) && is_mirror_port_name(&b, vni));
        assert!(!is_mirror_port_name(&a, vni - 1));
        assert!(!is_mirror_port_name("eth0", vni));
        assert!(!is_mirror_port_name(&format!("evx-{vni}"), vni));
        assert!(!is_mirror_port_name(&format!("ev-{vni}"), vni));
    }

    #[test]
    fn test_follow_remote_moves_a_local_entry_onto_the_tunnel_once() {
        let fdb = crate::fdb::Fdb::new(64, 300);
        let port = VxlanPort::new(
            5,
            "vx0",
            0,
            100,
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            &[],
            (0, "up0"),
            300,
            1,
        )
        .with_evpn(16);
        let (x, y, z) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        fdb.learn(0, x, 3, 10);
        fdb.learn(0, y, 5, 10);
        follow_remote(&fdb, &port, x, 11);
        follow_remote(&fdb, &port, y, 11);
        follow_remote(&fdb, &port, z, 11);
        assert_eq!(
            fdb.lookup(0, x, 11),
            Some(5),
            "local copy moved onto the tunnel"
        );
        assert_eq!(fdb.lookup(0, y, 11), Some(5), "already on the tunnel");
        assert_eq!(
            fdb.lookup(0, z, 11),
            None,
            "nothing invented for unknown MACs"
        );
        // The guest comes back: the data path learns it on its port, and nothing moves it
        // again until the control plane installs a remote route anew.
        fdb.learn(0, x, 3, 12);
        assert_eq!(fdb.lookup(0, x, 12), Some(3));
    }
}

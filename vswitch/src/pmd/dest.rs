//! A port as a poll thread sees it when delivering: [`Dest`], and for uplinks the thread's own
//! I/O on the device ([`UplinkIo`]) with the counting of what the device sent.

use std::sync::Arc;

use crate::capture::Tap;
use crate::eth::Mac;
use crate::netdev::{DevIo, TxOutcome};
use crate::port::{bump, CounterBlock, Drop, Port};
use crate::uplink::{UplinkPort, UplinkRole};
use crate::vxlan::VxlanPort;

/// A port as a destination.
pub enum Dest {
    Vhost(Arc<Port>),
    Uplink(Arc<UplinkPort>),
    Vxlan(Arc<VxlanPort>),
}

impl Dest {
    #[inline]
    pub(super) fn id(&self) -> u16 {
        match self {
            Dest::Vhost(p) => p.id,
            Dest::Uplink(u) => u.id,
            Dest::Vxlan(t) => t.id,
        }
    }

    #[inline]
    pub(super) fn vlan(&self) -> u16 {
        match self {
            Dest::Vhost(p) => p.vlan,
            Dest::Uplink(u) => u.vlan,
            Dest::Vxlan(t) => t.vlan,
        }
    }

    /// Whether the port is a member of the switch (an underlay uplink is not).
    #[inline]
    pub(super) fn is_member(&self) -> bool {
        !matches!(self, Dest::Uplink(u) if u.role == UplinkRole::Underlay)
    }

    #[inline]
    pub(super) fn is_tunnel(&self) -> bool {
        matches!(self, Dest::Vxlan(_))
    }

    #[inline]
    pub(super) fn tap(&self) -> &Tap {
        match self {
            Dest::Vhost(p) => &p.tap,
            Dest::Uplink(u) => &u.tap,
            Dest::Vxlan(t) => &t.tap,
        }
    }
}

/// A poll thread's own state for one uplink: its I/O handle on the device and the tunnels the
/// uplink carries.
pub(super) struct UplinkIo {
    pub(super) port: Arc<UplinkPort>,
    pub(super) io: Box<dyn DevIo>,
    pub(super) mac: Mac,
    /// Largest frame the device carries (IP MTU + Ethernet header).
    pub(super) max_frame: usize,
    /// IP MTU.
    pub(super) mtu: usize,
    pub(super) tunnels: Vec<Arc<VxlanPort>>,
    /// The second of the last ARP round for unresolved remotes (+1; 0: never).
    pub(super) arp_tick: u32,
}

/// Counts the outcome of a device flush on `c`; `overhead` bytes of each sent frame were
/// encapsulation, not the port's traffic.
pub(super) fn count_tx(c: &CounterBlock, o: &TxOutcome, overhead: u64) {
    bump(&c.tx_packets, o.sent);
    bump(&c.tx_bytes, o.sent_bytes.saturating_sub(overhead * o.sent));
    c.drop(Drop::TxDeviceFull, o.full);
    c.drop(Drop::TxQueueBusy, o.busy);
}

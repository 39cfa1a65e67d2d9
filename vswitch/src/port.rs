//! A switch port: one vhost-user device, its queues as the data plane sees them, and its
//! counters.
//!
//! Counters are kept per poll thread: each PMD owns one block per port and is its only writer,
//! so counting costs a plain load and store per burst, never a locked instruction. Readers sum
//! the blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vhost_user::backend::{DeviceInfo, QueueSlot};
use vhost_user::virtq::QueueCounters;

use crate::announce::Announce;
use crate::capture::Tap;
use crate::config::PortSpec;
use crate::ctl::PortState;
use crate::rxq::QueueLoad;

/// Most ports a switch holds (port ids are below this).
pub const MAX_PORTS: usize = 256;

/// Why the switch dropped a frame, counted per port. Each kind of port shows the reasons that
/// can happen to it ([`Drop::VHOST_PORT`], [`Drop::UPLINK_PORT`], [`Drop::UNDERLAY_PORT`],
/// [`Drop::VXLAN_PORT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// A tagged frame arrived on an access (VLAN) port.
    VlanTagged,
    /// The destination was learned on the port the frame came from.
    SamePort,
    /// The destination guest had no receive buffers (its RX queue is full).
    TxNoBuffers,
    /// The destination's buffer is too small for the frame (no MRG_RXBUF).
    TxTooBig,
    /// The destination guest posted malformed receive buffers.
    TxBadBuffers,
    /// The destination has no running receive queue.
    TxNotReady,
    /// The destination queue was being reconfigured (or, on a device, held by another poll
    /// thread for too long).
    TxQueueBusy,
    /// The frame is larger than the switch carries (9000-byte MTU).
    RxTooBig,
    /// A frame from a device shorter than an Ethernet header.
    RxRunt,
    /// A frame for a device larger than its MTU allows.
    TxExceedsMtu,
    /// The device's buffer pool was empty.
    TxNoDeviceBuffers,
    /// The device's transmit ring was full.
    TxDeviceFull,
    /// Underlay: neither ARP nor VXLAN to one of our VTEP addresses.
    RxNotVxlan,
    /// Underlay: outer IPv4, UDP or VXLAN header cut short, or lengths beyond the frame.
    RxTruncatedOuter,
    /// Underlay: outer IPv4 header invalid (version, length, checksum) or a fragment.
    RxBadOuterIpv4,
    /// Underlay: VXLAN header without the I flag.
    RxBadVxlan,
    /// Underlay: a VNI no tunnel on this uplink carries.
    RxUnknownVni,
    /// Underlay: sent by a VTEP that is not one of the tunnel's remotes.
    RxUnknownVtep,
    /// Underlay: the encapsulated frame is shorter than an Ethernet header.
    RxInnerRunt,
    /// Underlay: an ARP packet that is not IPv4 over Ethernet.
    RxBadArp,
    /// Tunnel: a frame from one tunnel for another (split horizon: VTEPs do not relay).
    TunnelToTunnel,
    /// Tunnel: the encapsulated frame would exceed the uplink's MTU (VXLAN never fragments).
    TxExceedsTunnelMtu,
    /// Tunnel: the remote VTEP's MAC address is not known yet (an ARP request is on its way).
    TxVtepUnresolved,
}

impl Drop {
    pub const COUNT: usize = 23;
    pub const ALL: [Drop; Self::COUNT] = [
        Drop::VlanTagged,
        Drop::SamePort,
        Drop::TxNoBuffers,
        Drop::TxTooBig,
        Drop::TxBadBuffers,
        Drop::TxNotReady,
        Drop::TxQueueBusy,
        Drop::RxTooBig,
        Drop::RxRunt,
        Drop::TxExceedsMtu,
        Drop::TxNoDeviceBuffers,
        Drop::TxDeviceFull,
        Drop::RxNotVxlan,
        Drop::RxTruncatedOuter,
        Drop::RxBadOuterIpv4,
        Drop::RxBadVxlan,
        Drop::RxUnknownVni,
        Drop::RxUnknownVtep,
        Drop::RxInnerRunt,
        Drop::RxBadArp,
        Drop::TunnelToTunnel,
        Drop::TxExceedsTunnelMtu,
        Drop::TxVtepUnresolved,
    ];
    /// What can happen to frames of a vhost-user port.
    pub const VHOST_PORT: [Drop; 8] = [
        Drop::VlanTagged,
        Drop::SamePort,
        Drop::TxNoBuffers,
        Drop::TxTooBig,
        Drop::TxBadBuffers,
        Drop::TxNotReady,
        Drop::TxQueueBusy,
        Drop::RxTooBig,
    ];
    /// ... of a device port that is a member of the switch (bridged).
    pub const UPLINK_PORT: [Drop; 9] = [
        Drop::VlanTagged,
        Drop::SamePort,
        Drop::RxTooBig,
        Drop::RxRunt,
        Drop::TxExceedsMtu,
        Drop::TxNoDeviceBuffers,
        Drop::TxDeviceFull,
        Drop::TxQueueBusy,
        Drop::TxNotReady,
    ];
    /// ... of a device port that carries VXLAN tunnels (the underlay).
    pub const UNDERLAY_PORT: [Drop; 13] = [
        Drop::RxRunt,
        Drop::RxTooBig,
        Drop::RxNotVxlan,
        Drop::RxTruncatedOuter,
        Drop::RxBadOuterIpv4,
        Drop::RxBadVxlan,
        Drop::RxUnknownVni,
        Drop::RxUnknownVtep,
        Drop::RxInnerRunt,
        Drop::RxBadArp,
        Drop::TxNoDeviceBuffers,
        Drop::TxDeviceFull,
        Drop::TxQueueBusy,
    ];
    /// ... of a VXLAN tunnel port.
    pub const VXLAN_PORT: [Drop; 10] = [
        Drop::VlanTagged,
        Drop::SamePort,
        Drop::RxTooBig,
        Drop::TunnelToTunnel,
        Drop::TxExceedsTunnelMtu,
        Drop::TxVtepUnresolved,
        Drop::TxNoDeviceBuffers,
        Drop::TxDeviceFull,
        Drop::TxQueueBusy,
        Drop::TxNotReady,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::VlanTagged => "rx_vlan_tagged_on_access_port",
            Drop::SamePort => "rx_destination_is_source_port",
            Drop::TxNoBuffers => "tx_no_guest_buffers",
            Drop::TxTooBig => "tx_guest_buffer_too_small",
            Drop::TxBadBuffers => "tx_guest_buffers_malformed",
            Drop::TxNotReady => "tx_queue_not_running",
            Drop::TxQueueBusy => "tx_queue_busy",
            Drop::RxTooBig => "rx_frame_too_big",
            Drop::RxRunt => "rx_runt_frame",
            Drop::TxExceedsMtu => "tx_frame_exceeds_mtu",
            Drop::TxNoDeviceBuffers => "tx_no_device_buffers",
            Drop::TxDeviceFull => "tx_device_queue_full",
            Drop::RxNotVxlan => "rx_not_vxlan",
            Drop::RxTruncatedOuter => "rx_truncated_outer_headers",
            Drop::RxBadOuterIpv4 => "rx_bad_outer_ipv4",
            Drop::RxBadVxlan => "rx_bad_vxlan_header",
            Drop::RxUnknownVni => "rx_unknown_vni",
            Drop::RxUnknownVtep => "rx_unknown_remote_vtep",
            Drop::RxInnerRunt => "rx_inner_runt_frame",
            Drop::RxBadArp => "rx_bad_arp",
            Drop::TunnelToTunnel => "rx_tunnel_to_tunnel",
            Drop::TxExceedsTunnelMtu => "tx_frame_exceeds_tunnel_mtu",
            Drop::TxVtepUnresolved => "tx_remote_vtep_unresolved",
        }
    }
}

/// One poll thread's counters for one port. Single writer (that PMD).
#[derive(Default)]
#[repr(align(64))]
pub struct CounterBlock {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; Drop::COUNT],
}

/// Adds to a counter that only the calling thread writes: no read-modify-write instruction.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl CounterBlock {
    #[inline]
    pub fn drop(&self, why: Drop, n: u64) {
        bump(&self.drops[why as usize], n);
    }
}

/// One counter block per poll thread (at least one).
pub fn counter_blocks(pmds: usize) -> Box<[CounterBlock]> {
    (0..pmds.max(1)).map(|_| CounterBlock::default()).collect()
}

/// Sum of a counter over the per-PMD blocks.
pub fn sum_counter(blocks: &[CounterBlock], f: impl Fn(&CounterBlock) -> &AtomicU64) -> u64 {
    blocks.iter().map(|b| f(b).load(Ordering::Relaxed)).sum()
}

/// What the control plane tracks about a port's connection.
#[derive(Default)]
pub struct PortStatus {
    pub state: Option<PortState>,
    /// The current (or last) connection's device state.
    pub device: Option<Arc<Mutex<DeviceInfo>>>,
    /// PMD polling each queue (slot index), when assigned.
    pub pmd_of_queue: Vec<Option<usize>>,
    pub connections: u64,
    pub last_error: Option<String>,
    /// Process id of the connected frontend (SO_PEERCRED).
    pub frontend_pid: Option<i32>,
}

/// A port, shared by the control plane, its session thread and the poll threads.
pub struct Port {
    pub id: u16,
    pub spec: PortSpec,
    /// Forwarding domain: the access VLAN, or 0 for untagged ports.
    pub vlan: u16,
    pub mac: [u8; 6],
    pub slots: Arc<[QueueSlot]>,
    /// Error counters of each virtqueue, kept across reconnections.
    pub queue_counters: Vec<Arc<QueueCounters>>,
    /// vhost-user messages served and refused, kept across reconnections.
    pub messages: Arc<vhost_user::backend::BackendCounters>,
    /// One block per PMD.
    pub counters: Box<[CounterBlock]>,
    /// Busy cycles of each queue slot; only the guest's transmit queues (odd) are polled.
    pub rxq_load: Box<[QueueLoad]>,
    pub status: Mutex<PortStatus>,
    /// Packet capture hook (`vswitchctl capture`).
    pub tap: Arc<Tap>,
    /// A guest's MAC to announce from this port (`SEND_RARP` after a live migration).
    pub announce: Announce,
}

impl Port {
    pub fn new(id: u16, spec: PortSpec, pmds: usize) -> Port {
        let slots = vhost_user::backend::Backend::make_slots(spec.queues);
        Port::with_slots(id, spec, pmds, slots)
    }

    /// A port over queue slots that already exist (a backend made them).
    pub fn with_slots(id: u16, spec: PortSpec, pmds: usize, slots: Arc<[QueueSlot]>) -> Port {
        let nq = slots.len();
        // A locally administered unicast MAC unique per port id, for the device config space.
        let [hi, lo] = id.to_be_bytes();
        let mac = [0x02, 0x56, 0x53, 0x57, hi, lo];
        Port {
            id,
            vlan: spec.vlan.unwrap_or(0),
            spec,
            mac,
            slots,
            queue_counters: (0..nq).map(|_| Arc::default()).collect(),
            messages: Arc::default(),
            counters: counter_blocks(pmds),
            rxq_load: (0..nq).map(|_| QueueLoad::default()).collect(),
            status: Mutex::new(PortStatus {
                pmd_of_queue: vec![None; nq],
                ..Default::default()
            }),
            tap: Arc::default(),
            announce: Announce::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn status(&self) -> std::sync::MutexGuard<'_, PortStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sum of a counter over the PMD blocks.
    pub fn sum(&self, f: impl Fn(&CounterBlock) -> &AtomicU64) -> u64 {
        sum_counter(&self.counters, f)
    }

    /// Number of queue pairs.
    pub fn queue_pairs(&self) -> usize {
        self.slots.len() / 2
    }
}

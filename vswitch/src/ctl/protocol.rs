//! The control protocol's vocabulary: the requests and every reply type, as they go over the
//! wire (serde), plus the protocol's bounds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::capture::Direction;
use crate::config::{PortMode, PortSpec};
use crate::fdb::{FdbCounters, FdbEntry};
pub use crate::netdev::LinkInfo;

/// Longest request line the server reads (newline excluded). Requests are small; the bound
/// keeps one client from making the switch buffer without limit.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The commands, for error messages.
pub const COMMANDS: &str = "show, stats, fdb, pmd-stats, pmd-rxq-show, pmd-rxq-rebalance, \
                            channels, evpn, add-port, del-port, capture";

/// A request, as the client sends it. The server parses by hand (see [`dispatch`]) to give
/// precise messages, but accepts exactly what this serializes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Show,
    Stats,
    Fdb,
    PmdStats,
    PmdRxqShow,
    PmdRxqRebalance(RebalanceArgs),
    Channels,
    Evpn,
    AddPort(PortSpec),
    DelPort {
        name: String,
    },
    /// Answered by a stream of frames, not one reply: see `ctl::stream`.
    Capture(CaptureArgs),
}

/// The arguments of `pmd-rxq-rebalance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceArgs {
    /// Plan and report the moves, make none.
    #[serde(default)]
    pub dry_run: bool,
}

/// The arguments of `capture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureArgs {
    pub port: String,
    #[serde(default)]
    pub direction: Direction,
    /// Stop after this many frames (at least 1); `None`: until the client stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The reply line that starts a capture stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub port: String,
    pub direction: Direction,
    /// Captured bytes per frame at most (longer frames are cut, their length kept).
    pub snaplen: u32,
}

/// The line that ends a capture stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSummary {
    /// Frames sent in the stream.
    pub captured: u64,
    /// Frames the capture missed because its buffer was full or busy; forwarding went on.
    pub dropped: u64,
    /// Why it ended: `count reached`, `client stopped`, `port deleted`, `switch stopping`.
    pub ended: String,
}

/// The life of a port's vhost-user connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// Server mode, no frontend connected.
    Listening,
    /// Client mode, trying to reach the frontend's socket.
    Connecting,
    /// Connected, negotiation not finished (no ring started).
    Connected,
    /// At least one queue pair is started and polled.
    Running,
    /// The frontend went away (client mode: a reconnect is pending).
    Disconnected,
}

impl std::fmt::Display for PortState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortState::Listening => "listening",
            PortState::Connecting => "connecting",
            PortState::Connected => "connected",
            PortState::Running => "running",
            PortState::Disconnected => "disconnected",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Virtqueue index: even = the guest's receive queue, odd = its transmit queue.
    pub index: u16,
    pub enabled: bool,
    pub started: bool,
    /// Ring size (SET_VRING_NUM); 0 before it is set.
    pub size: u16,
    /// The PMD polling it (transmit queues) or `None`.
    pub pmd: Option<usize>,
    /// Why the queue could not start (a ring outside guest memory, ...), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A live migration has the queue's writes into guest memory logged (VHOST_F_LOG_ALL).
    #[serde(default)]
    pub logging: bool,
    /// ... including its used-ring writes (VHOST_VRING_F_LOG).
    #[serde(default)]
    pub log_used: bool,
    /// The ring layout: "split" or "packed" (VIRTIO_F_RING_PACKED).
    #[serde(default = "split_name")]
    pub ring: String,
}

fn split_name() -> String {
    "split".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    pub mode: PortMode,
    pub path: PathBuf,
    pub vlan: Option<u16>,
    pub state: PortState,
    /// Negotiated virtio features (the frontend's SET_FEATURES).
    pub features: u64,
    pub features_names: Vec<String>,
    pub protocol_features: u64,
    pub queue_pairs: u16,
    pub queues: Vec<QueueInfo>,
    pub mtu: Option<u16>,
    pub mac: Option<String>,
    /// Guests announced from this port after a migration (SEND_RARP).
    #[serde(default)]
    pub announcements: u64,
}

/// An uplink's device and link, as `show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkInfo {
    /// What the device was opened with (DPDK devargs).
    pub devargs: String,
    /// `dpdk <driver>` or `pipe`.
    pub driver: String,
    /// `bridged` (a member of the switch) or `underlay` (carries VXLAN tunnels only).
    pub role: String,
    pub mac: String,
    /// IP MTU of the device.
    pub mtu: usize,
    pub link: LinkInfo,
    /// The poll thread receiving from it.
    pub rx_pmd: usize,
    /// The device's own counters (DPDK: ethdev statistics, free mbufs).
    pub device_counters: BTreeMap<String, u64>,
}

/// A remote VTEP of a tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteVtepInfo {
    pub ip: String,
    /// Its (next hop's) MAC address once learned; `None`: unresolved (ARP pending).
    pub mac: Option<String>,
}

/// A VXLAN tunnel port, as `show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    pub vni: u32,
    pub local: String,
    pub uplink: String,
    pub remotes: Vec<RemoteVtepInfo>,
    /// Largest inner frame (Ethernet header included) the uplink's MTU lets through.
    pub max_inner_frame: usize,
    /// Inner MACs learned behind the remotes (with EVPN: installed from BGP).
    pub learned_macs: usize,
    /// Remotes and inner MACs come from BGP EVPN (`--evpn`; `vswitchctl evpn` has the rest).
    #[serde(default)]
    pub evpn: bool,
}

/// A port that is not a vhost-user port: a DPDK uplink or a VXLAN tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// `uplink` or `vxlan`.
    pub kind: String,
    pub vlan: Option<u16>,
    #[serde(default)]
    pub uplink: Option<UplinkInfo>,
    #[serde(default)]
    pub tunnel: Option<TunnelInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReply {
    pub ports: Vec<PortInfo>,
    /// Uplinks and tunnels.
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
}

/// Counters from the switch's point of view: `rx` is what the switch received from the
/// port (the guest's transmit), `tx` what it delivered to the port (the guest's receive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped, by reason; each dropped frame is counted once.
    pub drops: BTreeMap<String, u64>,
    /// The rings' own refusals by reason (`rx_`: the guest's transmit queues, `tx_`: its
    /// receive queues), the detail behind some of the drops.
    #[serde(default)]
    pub ring_errors: BTreeMap<String, u64>,
    /// vhost-user messages: `requests` served, `refused` (answered with a failure or closed),
    /// `unknown` (request codes this switch does not know).
    #[serde(default)]
    pub control: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub ports: Vec<PortStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbReply {
    pub entries: Vec<FdbEntry>,
    /// Port number to name, so that `vswitchctl fdb` can print names; may be empty.
    #[serde(default)]
    pub port_names: BTreeMap<u16, String>,
    #[serde(default)]
    pub counters: FdbCounters,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PmdStats {
    pub id: usize,
    pub core: Option<usize>,
    pub packets: u64,
    /// TSC cycles spent in iterations that moved at least one packet.
    pub busy_cycles: u64,
    /// TSC cycles spent in iterations that found nothing to do.
    pub idle_cycles: u64,
    /// (busy + idle) / packets, as Open vSwitch's "avg cycles per packet".
    pub cycles_per_packet: f64,
    pub iterations: u64,
    /// `port/queue` names this PMD polls.
    pub rx_queues: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PmdStatsReply {
    pub pmds: Vec<PmdStats>,
    /// TSC frequency, if the switch measured it: lets a reader turn cycles into time.
    pub tsc_hz: Option<u64>,
}

/// What kind of queue a poll thread polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxqKind {
    /// A guest's transmit virtqueue.
    Vhost,
    /// An uplink device's receive queue.
    Uplink,
}

/// One polled queue in `pmd-rxq-show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RxqInfo {
    pub port: String,
    /// The virtqueue index of a guest's transmit queue (2 x pair + 1), as in `show`; 0 for an
    /// uplink's receive queue.
    pub queue: u16,
    pub kind: RxqKind,
    /// Rebalancing leaves it where it is (an uplink's receive queue belongs to its thread).
    pub pinned: bool,
    /// Started by its guest (a queue that is not has nothing to poll).
    pub running: bool,
    /// TSC cycles its poll threads spent on bursts from it over the window.
    pub busy_cycles: u64,
    /// `busy_cycles` as a share of the window: how much of one poll thread's time it takes
    /// (Open vSwitch's "pmd usage").
    pub usage_percent: f64,
}

/// A poll thread and the queues it polls, in `pmd-rxq-show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmdRxqs {
    pub id: usize,
    pub core: Option<usize>,
    /// TSC cycles of the window it spent in iterations that moved packets.
    pub busy_cycles: u64,
    /// `busy_cycles` as a share of the window.
    pub busy_percent: f64,
    pub queues: Vec<RxqInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RxqShowReply {
    /// Length of one measuring interval (`vswitch --pmd-rxq-interval`).
    pub interval_secs: u32,
    /// Completed intervals in the window: at most 6, 0 until the first ends.
    pub intervals: usize,
    /// Length of the window in TSC cycles (what the percentages are of).
    pub window_cycles: u64,
    pub tsc_hz: Option<u64>,
    pub pmds: Vec<PmdRxqs>,
}

/// A queue `pmd-rxq-rebalance` moved (or, dry run, would move).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RxqMove {
    pub port: String,
    pub queue: u16,
    pub from_pmd: usize,
    pub to_pmd: usize,
    /// Its load over the window, as in `pmd-rxq-show`.
    pub usage_percent: f64,
}

/// A poll thread's load (the sum of its queues' usage) before and after a rebalance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmdLoad {
    pub id: usize,
    pub before_percent: f64,
    pub after_percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceReply {
    pub dry_run: bool,
    /// The moves were made. False for a dry run, and when no plan lowers the busiest thread's
    /// load (then `moves` is empty).
    pub applied: bool,
    /// Completed intervals the plan is based on.
    pub intervals: usize,
    pub moves: Vec<RxqMove>,
    pub pmds: Vec<PmdLoad>,
}

/// One fast-path channel: who owns the dedicated queue, who uses it through a view, and the
/// counters the two guests keep in the channel's doorbell page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub id: u64,
    /// `copy` or `zero-copy`.
    pub mode: String,
    /// Port that dedicated the queue (copy: the receiver; zero-copy: the sender).
    pub owner: String,
    /// Port granted a view of it.
    pub user: String,
    pub notify: String,
    pub age_secs: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub sender_drops: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    pub device_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsReply {
    /// False when the switch runs without `--hooks`.
    pub enabled: bool,
    pub channels: Vec<ChannelStats>,
}

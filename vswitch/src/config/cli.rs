//! The command line's surface (clap): options and their help. Values stay strings; the
//! merge step validates them with the file's.

use std::path::PathBuf;

use clap::Parser;

const AFTER_HELP: &str = "\
EXAMPLES:
  Two QEMU guests connecting to the switch, two PMD threads on cores 2 and 3:
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --vhost-server vm2=/run/vswitch/vm2.sock \\
            --port-vlan vm2=20 --port-queues vm1=4 --pmd-cores 2-3 --ctl /run/vswitch/ctl.sock

  A DPDK virtio-user guest that listens itself (the switch connects and reconnects):
    vswitch --vhost-client pktgen=/tmp/pktgen.sock --ctl /tmp/vswitch.ctl

  A guest bridged to the host's eth1 through DPDK's AF_PACKET driver (feature `dpdk`):
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --dpdk-port up0=net_af_packet0,iface=eth1

  The same guest on VXLAN segment 42 to two other hosts, over eth1 (which then carries only
  the tunnels: give this host's VTEP address, not an address the kernel has on eth1):
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --dpdk-port up0=net_af_packet0,iface=eth1 \\
            --vxlan vx42=192.0.2.1,192.0.2.2,192.0.2.3,42,up0

  Segment 42 with BGP EVPN instead of a remote list: FRR (zebra + bgpd with
  `address-family l2vpn evpn` / `advertise-all-vni`) runs beside the switch in its network
  namespace; the kernel there needs a route to the other VTEPs (for BGP's next hops):
    vswitch --vhost-server vm1=/run/vswitch/vm1.sock --dpdk-port up0=net_af_packet0,iface=eth1 \\
            --vxlan vx42=192.0.2.1,42,up0 --evpn vx42

CONFIG FILE (TOML, every key optional, unknown keys are rejected):
    pmd_cores = \"2-3\"
    ctl = \"/run/vswitch/ctl.sock\"
    metrics = \"9101\"                # optional, [ADDR:]PORT, see --metrics
    mac_aging_secs = 300
    evpn_mac_limit = 4096            # optional, see --evpn-mac-limit
    evpn_hold_secs = 0               # optional, see --evpn-hold
    log = \"info\"

    dpdk_eal = \"-l 0 --in-memory --no-huge -m 512\"   # optional, see --dpdk-eal
    hooks = \"/run/vswitch/hooks.sock\"   # fast path: guests ask here for channels
    fastpath_manifest = \"/etc/vswitch/trampolines\"

    [[port]]
    name = \"vm1\"
    mode = \"server\"          # or \"client\"
    fastpath = true          # optional: may open fast-path channels
    path = \"/run/vswitch/vm1.sock\"
    vlan = 10                # optional, 1..=4094
    queues = 4               # optional, 1..=16, default 1

    [[dpdk_port]]
    name = \"up0\"
    devargs = \"net_af_packet0,iface=eth1\"
    vlan = 10                # optional, when bridged
    mtu = 1550               # optional, 1280..=9000

    [[vxlan]]
    name = \"vx42\"
    local = \"192.0.2.1\"
    remotes = [\"192.0.2.2\", \"192.0.2.3\"]
    vni = 42
    uplink = \"up0\"
    vlan = 10                # optional
    evpn = false             # optional: remotes from BGP EVPN (remotes may then be [])

  The command line wins over the file for single settings and adds ports to the file's.
  Relative socket paths are relative to the switch's working directory.";

/// Command-line surface. Values stay strings here so that validation, and its messages,
/// live in one place for the command line and the file alike.
#[derive(Debug, Parser)]
#[command(
    name = "vswitch",
    version,
    about = "Poll-mode userspace L2 switch serving virtio-net guests over vhost-user",
    after_long_help = AFTER_HELP
)]
pub(super) struct Cli {
    /// Add a port in server mode: the switch listens on SOCKETPATH and the guest's
    /// vhost-user frontend (QEMU, virtio-user) connects. NAME: 1-32 of A-Z a-z 0-9 _ -.
    /// Repeatable.
    #[arg(
        long = "vhost-server",
        value_name = "NAME=SOCKETPATH",
        allow_hyphen_values = true
    )]
    pub(super) vhost_server: Vec<String>,

    /// Add a port in client mode: the frontend listens on SOCKETPATH, the switch connects
    /// to it, and reconnects by itself whenever the frontend goes away. Repeatable.
    #[arg(
        long = "vhost-client",
        value_name = "NAME=SOCKETPATH",
        allow_hyphen_values = true
    )]
    pub(super) vhost_client: Vec<String>,

    /// Put port NAME in access VLAN VID (1..=4094). Without it the port is untagged.
    /// Repeatable, once per port; overrides the file's `vlan`.
    #[arg(
        long = "port-vlan",
        value_name = "NAME=VID",
        allow_hyphen_values = true
    )]
    pub(super) port_vlan: Vec<String>,

    /// Offer at most N queue pairs (1..=16, default 1) to port NAME's frontend.
    /// Repeatable, once per port; overrides the file's `queues`.
    #[arg(
        long = "port-queues",
        value_name = "NAME=N",
        allow_hyphen_values = true
    )]
    pub(super) port_queues: Vec<String>,

    /// Allow port NAME fast-path channels (with other allowed ports of its VLAN). Repeatable.
    #[arg(
        long = "port-fastpath",
        value_name = "NAME",
        allow_hyphen_values = true
    )]
    pub(super) port_fastpath: Vec<String>,

    /// Add a DPDK port (an uplink; needs the `dpdk` build): DEVARGS as DPDK probes a device, a
    /// NIC's PCI address (`0000:01:00.0`, bound to vfio-pci) or a virtual device
    /// (`net_af_packet0,iface=eth1`, `net_tap0,iface=dtap0`, `net_ring0`). The port is a member
    /// of the switch (bridged), unless a --vxlan runs over it (then it carries only the
    /// tunnels). Repeatable.
    #[arg(
        long = "dpdk-port",
        value_name = "NAME=DEVARGS",
        allow_hyphen_values = true
    )]
    pub(super) dpdk_port: Vec<String>,

    /// DPDK EAL arguments, one string split at spaces. Default: `-l <a core> --in-memory
    /// --no-telemetry`, with hugepages when at least 256 MB are free and `--no-huge -m 512`
    /// otherwise, and `--no-pci` unless a --dpdk-port is a PCI address.
    #[arg(long = "dpdk-eal", value_name = "ARGS", allow_hyphen_values = true)]
    pub(super) dpdk_eal: Option<String>,

    /// Give DPDK port NAME an IP MTU of MTU bytes (1280..=9000; default: the device's, 1500
    /// for most). A VXLAN underlay needs the tunnel's inner MTU + 50 to carry full-size frames
    /// (1550 for 1500-byte guests). Repeatable, once per port.
    #[arg(long = "dpdk-mtu", value_name = "NAME=MTU", allow_hyphen_values = true)]
    pub(super) dpdk_mtu: Vec<String>,

    /// Add a VXLAN tunnel port (RFC 7348) on segment VNI (0..=16777215) from this host's VTEP
    /// address LOCAL_IP to the listed remote VTEPs (flood and learn, head-end replication),
    /// over the DPDK port UPLINK. Frames whose encapsulation would exceed UPLINK's MTU
    /// (inner frame + 36 bytes) are dropped and counted. With --evpn NAME the remote list may
    /// be empty (NAME=LOCAL_IP,VNI,UPLINK). Repeatable.
    #[arg(
        long = "vxlan",
        value_name = "NAME=LOCAL_IP[,REMOTE_IP...],VNI,UPLINK",
        allow_hyphen_values = true
    )]
    pub(super) vxlan: Vec<String>,

    /// Run BGP EVPN on VXLAN tunnel NAME with FRR (zebra + bgpd, `advertise-all-vni`) as its
    /// control plane: the switch mirrors the segment into kernel objects that carry no
    /// traffic (bridge evbr<VNI>, vxlan device evvx<VNI> with the tunnel's VTEP address,
    /// a veth ev<PORT>-<VNI> per guest port in the tunnel's VLAN), exports the MACs it learns
    /// on guest ports there (type-2 routes), and takes remote MACs and the flood list from
    /// what zebra installs (type-2 and type-3 routes of other VTEPs). Static remotes of the
    /// tunnel stay in its flood list. Needs CAP_NET_ADMIN; one EVPN tunnel per VNI, and one
    /// switch per network namespace (at start it deletes what a previous run left of these
    /// names).
    /// Repeatable. `vswitchctl evpn` shows the state.
    #[arg(long = "evpn", value_name = "NAME")]
    pub(super) evpn: Vec<String>,

    /// Accept at most N remote MACs (from BGP) per EVPN segment and export at most N local
    /// ones (1..=65536, default 4096); more are refused and counted (`vswitchctl evpn`).
    #[arg(long = "evpn-mac-limit", value_name = "N", allow_hyphen_values = true)]
    pub(super) evpn_mac_limit: Option<String>,

    /// Keep a remote MAC or flood VTEP that BGP withdraws in the data path for SECS seconds
    /// (0..=3600, default 0: withdrawals act at once), unless a route brings it back; a MAC
    /// move always acts at once. Rides out a restart of FRR on this or the other host (FRR 8.4
    /// keeps no stale EVPN routes across a BGP restart); a MAC that is really gone still gets
    /// frames for SECS seconds, which its old VTEP drops.
    #[arg(long = "evpn-hold", value_name = "SECS", allow_hyphen_values = true)]
    pub(super) evpn_hold: Option<String>,

    /// Listen for fast-path guests on this unix socket (the hypervisor hooks): they ask there
    /// for channels to each other. Needs --fastpath-manifest.
    #[arg(long, value_name = "SOCKETPATH")]
    pub(super) hooks: Option<PathBuf>,

    /// File of approved trampoline SHA-256 digests, one per line (`fp-pktgen --print-trampoline`
    /// prints a binary's). A guest whose trampoline is not listed gets no channel.
    #[arg(long = "fastpath-manifest", value_name = "FILE")]
    pub(super) fastpath_manifest: Option<PathBuf>,

    /// Cores for the poll-mode threads, one thread pinned per core: `1`, `0,1`, `2-5`,
    /// `0,2-3`. Every core must be one this process may run on (its CPU affinity).
    /// Default: one PMD thread pinned to the last core this process may run on.
    #[arg(long = "pmd-cores", value_name = "LIST")]
    pub(super) pmd_cores: Option<String>,

    /// Let an idle poll thread nap, up to USECS microseconds at a time (0..=10000; default 0:
    /// poll continuously, lowest latency). After 1 ms without packets it sleeps 10 us, then
    /// doubles up to USECS, so an idle switch leaves its cores to other work; the first packet
    /// after a pause waits at most one nap. Like Open vSwitch's pmd-sleep-max.
    #[arg(
        long = "pmd-sleep-max",
        value_name = "USECS",
        allow_hyphen_values = true
    )]
    pub(super) pmd_sleep_max: Option<String>,

    /// Measure each polled queue's load over intervals of SECS seconds (1..=3600, default 10):
    /// `vswitchctl pmd-rxq-show` reports, and `pmd-rxq-rebalance` plans on, the last 6
    /// intervals, as Open vSwitch does.
    #[arg(
        long = "pmd-rxq-interval",
        value_name = "SECS",
        allow_hyphen_values = true
    )]
    pub(super) pmd_rxq_interval: Option<String>,

    /// Serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics (per-port counters and
    /// drops by reason, poll threads' cycles, FDB, fast-path channels, vhost-user messages).
    /// A bare PORT listens on loopback (127.0.0.1) only. Default: no metrics server.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub(super) metrics: Option<String>,

    /// Listen for `vswitchctl` on this unix socket. Default: no control socket.
    #[arg(long, value_name = "SOCKETPATH")]
    pub(super) ctl: Option<PathBuf>,

    /// Read settings and ports from this TOML file first (format below, in --help).
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,

    /// Forget a learned MAC address after SECS seconds without traffic from it
    /// (1..=86400, default 300).
    #[arg(long = "mac-aging", value_name = "SECS", allow_hyphen_values = true)]
    pub(super) mac_aging: Option<String>,

    /// Log filter: a level (off, error, warn, info, debug, trace) or `target=level,...`.
    /// Default: the RUST_LOG environment variable, else `info`.
    #[arg(long, value_name = "LEVEL")]
    pub(super) log: Option<String>,
}

//! `vswitchctl`: the operator's command-line client for a running `vswitch`'s control socket.
//! Prints tables for people and, with `--json`, the switch's reply for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};
use vswitch::config::{PortMode, PortSpec};
use vswitch::ctl::{
    ChannelsReply, CtlClient, CtlError, DeviceInfo, FdbReply, PmdStatsReply, Request, ShowReply,
    StatsReply,
};
use vswitch::fdb::format_mac;

const AFTER_HELP: &str = "\
EXAMPLES:
  vswitchctl --ctl /run/vswitch/ctl.sock show
  vswitchctl --ctl /run/vswitch/ctl.sock pmd-stats
  vswitchctl --ctl /run/vswitch/ctl.sock stats --json | jq '.ports[].drops'
  vswitchctl --ctl /run/vswitch/ctl.sock add-port --name vm3 --server /run/vswitch/vm3.sock --vlan 20 --queues 2
  VSWITCH_CTL=/run/vswitch/ctl.sock vswitchctl del-port vm3

EXIT STATUS:
  0 success, 1 the switch refused the request (its message is printed),
  2 bad command line, 3 the switch could not be reached or answered nonsense.";

#[derive(Debug, Parser)]
#[command(
    name = "vswitchctl",
    version,
    about = "Query and reconfigure a running vswitch through its control socket",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// The switch's control socket, as given to `vswitch --ctl`.
    #[arg(long, env = "VSWITCH_CTL", value_name = "SOCKETPATH")]
    ctl: PathBuf,

    /// Print the switch's reply as JSON (one object) instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ports: mode, socket, VLAN, connection state, negotiated features and queues; uplinks
    /// (device, link state, device counters) and VXLAN tunnels (remote VTEPs).
    Show,
    /// Per-port packet and byte counters (from the switch's side: rx = from the guest)
    /// and drops by reason.
    Stats,
    /// The MAC learning table: port, VLAN, MAC, seconds since last seen.
    Fdb,
    /// Poll-mode threads: packets, busy and idle cycles, cycles per packet, rx queues.
    PmdStats,
    /// Fast-path channels granted by the hooks: owner, user, mode, counters.
    Channels,
    /// Add a vhost-user port to the running switch.
    #[command(group(ArgGroup::new("mode").required(true).args(["server", "client"])))]
    AddPort {
        /// Port name: 1-32 of A-Z a-z 0-9 _ -.
        #[arg(long)]
        name: String,
        /// The switch listens on PATH and the guest's frontend connects.
        #[arg(long, value_name = "PATH")]
        server: Option<PathBuf>,
        /// The switch connects to PATH, where the frontend listens, and reconnects by itself.
        #[arg(long, value_name = "PATH")]
        client: Option<PathBuf>,
        /// Access VLAN, 1..=4094 (default: untagged).
        #[arg(long, value_name = "VID")]
        vlan: Option<u16>,
        /// Maximum queue pairs, 1..=16.
        #[arg(long, value_name = "N", default_value_t = 1)]
        queues: u16,
        /// Allow the port fast-path channels (needs a switch started with --hooks).
        #[arg(long)]
        fastpath: bool,
    },
    /// Remove a port; its guest is disconnected and its MAC addresses forgotten.
    DelPort {
        /// The port's name.
        name: String,
    },
}

/// Why the command failed, mapped to the exit status documented in --help.
#[derive(Debug)]
enum Failure {
    Refused(String),
    Unreachable(String),
}

impl From<CtlError> for Failure {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::Refused(m) => Failure::Refused(format!("the switch refused: {m}")),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(m)) => {
            eprintln!("vswitchctl: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("vswitchctl: {m}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: &Cli) -> Result<String, Failure> {
    let request = match &cli.command {
        Command::Show => Request::Show,
        Command::Stats => Request::Stats,
        Command::Fdb => Request::Fdb,
        Command::PmdStats => Request::PmdStats,
        Command::Channels => Request::Channels,
        Command::AddPort {
            name,
            server,
            client,
            vlan,
            queues,
            fastpath,
        } => {
            let (mode, path) = match (server, client) {
                (Some(p), _) => (PortMode::Server, p.clone()),
                (None, Some(p)) => (PortMode::Client, p.clone()),
                (None, None) => unreachable!("clap requires --server or --client"),
            };
            let spec = PortSpec {
                name: name.clone(),
                mode,
                path,
                vlan: *vlan,
                queues: *queues,
                fastpath: *fastpath,
            };
            // The switch checks too; checking here spares a round trip and names the flag.
            spec.validate()
                .map_err(|e| Failure::Refused(format!("add-port: {e}")))?;
            Request::AddPort(spec)
        }
        Command::DelPort { name } => Request::DelPort { name: name.clone() },
    };

    let mut client = CtlClient::connect(&cli.ctl)?;
    let data = client.call(&request)?;
    if cli.json {
        let mut s =
            serde_json::to_string_pretty(&data).map_err(|e| Failure::Unreachable(e.to_string()))?;
        s.push('\n');
        return Ok(s);
    }
    let decode = |e: serde_json::Error| {
        Failure::Unreachable(format!(
            "the switch's reply does not match this vswitchctl ({e}); try --json"
        ))
    };
    Ok(match request {
        Request::Show => render_show(&serde_json::from_value(data).map_err(decode)?),
        Request::Stats => render_stats(&serde_json::from_value(data).map_err(decode)?),
        Request::Fdb => render_fdb(&serde_json::from_value(data).map_err(decode)?),
        Request::PmdStats => render_pmd_stats(&serde_json::from_value(data).map_err(decode)?),
        Request::Channels => render_channels(&serde_json::from_value(data).map_err(decode)?),
        Request::AddPort(spec) => format!("added port {}\n", spec.name),
        Request::DelPort { name } => format!("deleted port {name}\n"),
    })
}

/// Left-aligned text columns, right-aligned where `numeric`, two spaces apart.
fn table(headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                line.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn render_show(reply: &ShowReply) -> String {
    if reply.ports.is_empty() && reply.devices.is_empty() {
        return "no ports\n".to_owned();
    }
    let mut out = String::new();
    for p in &reply.ports {
        let vlan = p
            .vlan
            .map_or("untagged".to_owned(), |v| format!("vlan {v}"));
        let _ = writeln!(
            out,
            "{}: {} {}, {vlan}, {}",
            p.name,
            p.mode,
            p.path.display(),
            p.state
        );
        let _ = writeln!(
            out,
            "  features: {:#018x} {}",
            p.features,
            p.features_names.join(" ")
        );
        let _ = writeln!(out, "  protocol features: {:#018x}", p.protocol_features);
        let mtu = p.mtu.map_or("-".to_owned(), |m| m.to_string());
        let mac = p.mac.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  queue pairs: {}, mtu: {mtu}, mac: {mac}",
            p.queue_pairs
        );
        if !p.queues.is_empty() {
            let rows: Vec<Vec<String>> = p
                .queues
                .iter()
                .map(|q| {
                    vec![
                        q.index.to_string(),
                        yes_no(q.enabled),
                        yes_no(q.started),
                        q.size.to_string(),
                        q.pmd.map_or("-".to_owned(), |n| n.to_string()),
                    ]
                })
                .collect();
            let t = table(
                &["QUEUE", "ENABLED", "STARTED", "SIZE", "PMD"],
                &[true, false, false, true, true],
                &rows,
            );
            for line in t.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    for d in &reply.devices {
        render_device(&mut out, d);
    }
    out
}

fn render_device(out: &mut String, d: &DeviceInfo) {
    let vlan = d
        .vlan
        .map_or("untagged".to_owned(), |v| format!("vlan {v}"));
    if let Some(u) = &d.uplink {
        let link = if u.link.up {
            let speed = if u.link.speed_mbps > 0 {
                format!(" {} Mb/s", u.link.speed_mbps)
            } else {
                String::new()
            };
            let duplex = if u.link.full_duplex {
                " full-duplex"
            } else {
                " half-duplex"
            };
            format!("up{speed}{duplex}")
        } else {
            "down".to_owned()
        };
        let role = if u.role == "bridged" {
            format!("bridged, {vlan}")
        } else {
            u.role.clone()
        };
        let _ = writeln!(
            out,
            "{}: uplink {} ({}), {role}, link {link}",
            d.name, u.devargs, u.driver
        );
        let _ = writeln!(
            out,
            "  mac: {}, mtu: {}, rx pmd: {}",
            u.mac, u.mtu, u.rx_pmd
        );
        let counters: Vec<String> = u
            .device_counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !counters.is_empty() {
            let _ = writeln!(out, "  device counters: {}", counters.join(" "));
        }
    }
    if let Some(t) = &d.tunnel {
        let _ = writeln!(
            out,
            "{}: vxlan vni {} from {} over {}, {vlan}",
            d.name, t.vni, t.local, t.uplink
        );
        for r in &t.remotes {
            match &r.mac {
                Some(m) => {
                    let _ = writeln!(out, "  remote {} at {m}", r.ip);
                }
                None => {
                    let _ = writeln!(out, "  remote {} unresolved (ARP pending)", r.ip);
                }
            }
        }
        let _ = writeln!(
            out,
            "  largest inner frame: {} bytes, learned inner MACs: {}",
            t.max_inner_frame, t.learned_macs
        );
    }
}

fn render_stats(reply: &StatsReply) -> String {
    if reply.ports.is_empty() {
        return "no ports\n".to_owned();
    }
    let rows: Vec<Vec<String>> = reply
        .ports
        .iter()
        .map(|p| {
            let total: u64 = p.drops.values().sum();
            let reasons: Vec<String> = p
                .drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            let drops = if reasons.is_empty() {
                total.to_string()
            } else {
                format!("{total} ({})", reasons.join(", "))
            };
            vec![
                p.name.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                drops,
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "RX_PACKETS",
            "RX_BYTES",
            "TX_PACKETS",
            "TX_BYTES",
            "DROPS",
        ],
        &[false, true, true, true, true, false],
        &rows,
    )
}

fn render_fdb(reply: &FdbReply) -> String {
    let rows: Vec<Vec<String>> = reply
        .entries
        .iter()
        .map(|e| {
            vec![
                reply
                    .port_names
                    .get(&e.port)
                    .cloned()
                    .unwrap_or_else(|| e.port.to_string()),
                e.vlan.to_string(),
                format_mac(e.mac),
                e.age_secs.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["PORT", "VLAN", "MAC", "AGE"],
        &[false, true, false, true],
        &rows,
    );
    let c = &reply.counters;
    let _ = writeln!(
        out,
        "{} entries; learned {}, moved {}, table full {}, expired {}, flushed {}",
        reply.entries.len(),
        c.learned,
        c.moved,
        c.full,
        c.expired,
        c.flushed
    );
    out
}

fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        "0.00%".to_owned()
    } else {
        // f64 is exact far beyond any cycle count a run can reach (2^53 cycles = 36 days at
        // 3 GHz), and a ratio needs no more.
        format!("{:.2}%", part as f64 * 100.0 / total as f64)
    }
}

/// Laid out like Open vSwitch's `ovs-appctl dpif-netdev/pmd-stats-show`, so operators who
/// know that output can read this one.
fn render_pmd_stats(reply: &PmdStatsReply) -> String {
    let mut out = String::new();
    if let Some(hz) = reply.tsc_hz {
        let _ = writeln!(out, "cycles are TSC cycles at {:.1} MHz", hz as f64 / 1e6);
    }
    if reply.pmds.is_empty() {
        out.push_str("no pmd threads\n");
        return out;
    }
    for p in &reply.pmds {
        let core = p
            .core
            .map_or("unpinned".to_owned(), |c| format!("core_id {c}"));
        let total = p.busy_cycles.saturating_add(p.idle_cycles);
        let _ = writeln!(out, "pmd thread {} {core}:", p.id);
        let _ = writeln!(out, "  packets received: {}", p.packets);
        let _ = writeln!(out, "  iterations: {}", p.iterations);
        if p.iterations > 0 {
            let _ = writeln!(
                out,
                "  avg. packets per iteration: {:.2}",
                p.packets as f64 / p.iterations as f64
            );
        }
        let _ = writeln!(
            out,
            "  idle cycles: {} ({})",
            p.idle_cycles,
            percent(p.idle_cycles, total)
        );
        let _ = writeln!(
            out,
            "  processing cycles: {} ({})",
            p.busy_cycles,
            percent(p.busy_cycles, total)
        );
        if p.packets > 0 {
            let _ = writeln!(
                out,
                "  avg cycles per packet: {:.2} ({total}/{})",
                p.cycles_per_packet, p.packets
            );
            let _ = writeln!(
                out,
                "  avg processing cycles per packet: {:.2} ({}/{})",
                p.busy_cycles as f64 / p.packets as f64,
                p.busy_cycles,
                p.packets
            );
        }
        let queues = if p.rx_queues.is_empty() {
            "none".to_owned()
        } else {
            p.rx_queues.join(" ")
        };
        let _ = writeln!(out, "  rx queues: {queues}");
    }
    out
}

fn render_channels(r: &ChannelsReply) -> String {
    if !r.enabled {
        return "the fast path is off (start the switch with --hooks and --fastpath-manifest)\n"
            .to_owned();
    }
    if r.channels.is_empty() {
        return "no fast-path channels\n".to_owned();
    }
    let mut out = String::new();
    for c in &r.channels {
        let _ = writeln!(
            out,
            "channel {} ({}, notify {}): owner {} -> user {}, {} s\n  sent {} packets {} bytes, {} not sent (queue full)\n  received {} packets {} bytes, {} refused descriptor chains",
            c.id,
            c.mode,
            c.notify,
            c.owner,
            c.user,
            c.age_secs,
            c.sent_packets,
            c.sent_bytes,
            c.sender_drops,
            c.received_packets,
            c.received_bytes,
            c.device_errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use vswitch::ctl::{
        serve, CtlHandler, DeviceInfo, LinkInfo, PmdStats, PortInfo, PortState, PortStats,
        QueueInfo, RemoteVtepInfo, TunnelInfo, UplinkInfo,
    };
    use vswitch::fdb::{FdbCounters, FdbEntry};

    #[derive(Default)]
    struct Fake {
        added: Mutex<Vec<PortSpec>>,
    }

    impl CtlHandler for Fake {
        fn show(&self) -> ShowReply {
            ShowReply {
                ports: vec![PortInfo {
                    name: "vm1".into(),
                    mode: PortMode::Server,
                    path: "/tmp/vm1.sock".into(),
                    vlan: Some(10),
                    state: PortState::Running,
                    features: 0x1_0000_8000,
                    features_names: vec!["VERSION_1".into(), "MRG_RXBUF".into()],
                    protocol_features: 0x8003,
                    queue_pairs: 1,
                    queues: vec![QueueInfo {
                        index: 1,
                        enabled: true,
                        started: true,
                        size: 256,
                        pmd: Some(0),
                        error: None,
                    }],
                    mtu: Some(1500),
                    mac: None,
                }],
                devices: vec![
                    DeviceInfo {
                        name: "up0".into(),
                        kind: "uplink".into(),
                        vlan: None,
                        uplink: Some(UplinkInfo {
                            devargs: "net_af_packet0,iface=veth0".into(),
                            driver: "dpdk net_af_packet".into(),
                            role: "underlay".into(),
                            mac: "02:00:00:00:00:0a".into(),
                            mtu: 1500,
                            link: LinkInfo {
                                up: true,
                                speed_mbps: 10000,
                                full_duplex: true,
                            },
                            rx_pmd: 0,
                            device_counters: BTreeMap::from([("ipackets".into(), 5)]),
                        }),
                        tunnel: None,
                    },
                    DeviceInfo {
                        name: "vx0".into(),
                        kind: "vxlan".into(),
                        vlan: Some(10),
                        uplink: None,
                        tunnel: Some(TunnelInfo {
                            vni: 42,
                            local: "10.0.0.1".into(),
                            uplink: "up0".into(),
                            remotes: vec![
                                RemoteVtepInfo {
                                    ip: "10.0.0.2".into(),
                                    mac: Some("02:00:00:00:00:0b".into()),
                                },
                                RemoteVtepInfo {
                                    ip: "10.0.0.3".into(),
                                    mac: None,
                                },
                            ],
                            max_inner_frame: 1464,
                            learned_macs: 1,
                        }),
                    },
                ],
            }
        }
        fn stats(&self) -> StatsReply {
            StatsReply {
                ports: vec![PortStats {
                    name: "vm1".into(),
                    rx_packets: 123_456,
                    rx_bytes: 7,
                    tx_packets: 8,
                    tx_bytes: 9,
                    drops: BTreeMap::from([("tx_ring_full".into(), 3), ("rx_bad_chain".into(), 0)]),
                    ring_errors: BTreeMap::new(),
                    control: BTreeMap::new(),
                }],
            }
        }
        fn fdb(&self) -> FdbReply {
            FdbReply {
                entries: vec![
                    FdbEntry {
                        vlan: 10,
                        mac: [0x52, 0x54, 0, 0, 0, 1],
                        port: 1,
                        age_secs: 4,
                    },
                    FdbEntry {
                        vlan: 10,
                        mac: [0x52, 0x54, 0, 0, 0, 2],
                        port: 2,
                        age_secs: 0,
                    },
                ],
                port_names: BTreeMap::from([(1, "vm1".into())]),
                counters: FdbCounters {
                    learned: 2,
                    ..Default::default()
                },
            }
        }
        fn pmd_stats(&self) -> PmdStatsReply {
            PmdStatsReply {
                pmds: vec![PmdStats {
                    id: 0,
                    core: Some(1),
                    packets: 4,
                    busy_cycles: 300,
                    idle_cycles: 100,
                    cycles_per_packet: 100.0,
                    iterations: 2,
                    rx_queues: vec!["vm1/1".into()],
                }],
                tsc_hz: Some(2_500_000_000),
            }
        }
        fn add_port(&self, spec: PortSpec) -> Result<(), String> {
            self.added.lock().unwrap().push(spec);
            Ok(())
        }
        fn del_port(&self, name: &str) -> Result<(), String> {
            Err(format!("no port named `{name}`"))
        }
    }

    struct Server {
        dir: PathBuf,
        path: PathBuf,
        fake: Arc<Fake>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start() -> Server {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vswitchctl-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ctl.sock");
            let fake = Arc::new(Fake::default());
            let stop = Arc::new(AtomicBool::new(false));
            let thread = serve(
                UnixListener::bind(&path).unwrap(),
                fake.clone(),
                stop.clone(),
            );
            Server {
                dir,
                path,
                fake,
                stop,
                thread: Some(thread),
            }
        }

        fn run(&self, args: &[&str]) -> Result<String, Failure> {
            let ctl = self.path.to_str().unwrap();
            let argv = ["vswitchctl", "--ctl", ctl]
                .into_iter()
                .chain(args.iter().copied());
            run(&Cli::try_parse_from(argv).unwrap())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn test_vswitchctl_show_table() {
        let s = Server::start();
        let out = s.run(&["show"]).unwrap();
        assert!(
            out.starts_with("vm1: server /tmp/vm1.sock, vlan 10, running\n"),
            "{out}"
        );
        assert!(
            out.contains("features: 0x0000000100008000 VERSION_1 MRG_RXBUF"),
            "{out}"
        );
        assert!(out.contains("QUEUE  ENABLED  STARTED  SIZE  PMD"), "{out}");
    }

    #[test]
    fn test_vswitchctl_show_uplinks_and_tunnels() {
        let s = Server::start();
        let out = s.run(&["show"]).unwrap();
        for needle in [
            "up0: uplink net_af_packet0,iface=veth0 (dpdk net_af_packet), underlay, link up 10000 Mb/s full-duplex",
            "  mac: 02:00:00:00:00:0a, mtu: 1500, rx pmd: 0",
            "  device counters: ipackets=5",
            "vx0: vxlan vni 42 from 10.0.0.1 over up0, vlan 10",
            "  remote 10.0.0.2 at 02:00:00:00:00:0b",
            "  remote 10.0.0.3 unresolved (ARP pending)",
            "  largest inner frame: 1464 bytes, learned inner MACs: 1",
        ] {
            assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
        }
    }

    #[test]
    fn test_vswitchctl_stats_table_and_json() {
        let s = Server::start();
        let out = s.run(&["stats"]).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "PORT  RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES  DROPS"
        );
        assert_eq!(
            lines[1],
            "vm1       123456         7           8         9  3 (tx_ring_full=3)"
        );
        let json: serde_json::Value =
            serde_json::from_str(&s.run(&["stats", "--json"]).unwrap()).unwrap();
        assert_eq!(json["ports"][0]["drops"]["tx_ring_full"], 3);
    }

    #[test]
    fn test_vswitchctl_fdb_uses_port_names() {
        let s = Server::start();
        let out = s.run(&["fdb"]).unwrap();
        assert!(out.contains("vm1     10  52:54:00:00:00:01    4"), "{out}");
        assert!(
            out.contains("2       10  52:54:00:00:00:02    0"),
            "unnamed port by number: {out}"
        );
        assert!(out.contains("2 entries; learned 2"), "{out}");
    }

    #[test]
    fn test_vswitchctl_pmd_stats_like_ovs() {
        let s = Server::start();
        let out = s.run(&["pmd-stats"]).unwrap();
        for needle in [
            "cycles are TSC cycles at 2500.0 MHz",
            "pmd thread 0 core_id 1:",
            "packets received: 4",
            "idle cycles: 100 (25.00%)",
            "processing cycles: 300 (75.00%)",
            "avg cycles per packet: 100.00 (400/4)",
            "avg processing cycles per packet: 75.00 (300/4)",
            "rx queues: vm1/1",
        ] {
            assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&s.run(&["--json", "pmd-stats"]).unwrap()).unwrap();
        assert_eq!(json["pmds"][0]["busy_cycles"], 300);
    }

    #[test]
    fn test_vswitchctl_add_port() {
        let s = Server::start();
        let out = s
            .run(&[
                "add-port",
                "--name",
                "vm3",
                "--client",
                "/tmp/vm3.sock",
                "--vlan",
                "20",
                "--queues",
                "2",
            ])
            .unwrap();
        assert_eq!(out, "added port vm3\n");
        let added = s.fake.added.lock().unwrap().clone();
        assert_eq!(
            added,
            vec![PortSpec {
                name: "vm3".into(),
                mode: PortMode::Client,
                path: "/tmp/vm3.sock".into(),
                vlan: Some(20),
                queues: 2,
                fastpath: false,
            }]
        );
    }

    #[test]
    fn test_vswitchctl_add_port_vlan_out_of_range() {
        let s = Server::start();
        let err = s
            .run(&[
                "add-port",
                "--name",
                "vm3",
                "--server",
                "/tmp/vm3.sock",
                "--vlan",
                "4095",
            ])
            .unwrap_err();
        assert!(
            matches!(&err, Failure::Refused(m) if m.contains("1..=4094")),
            "{err:?}"
        );
        assert!(s.fake.added.lock().unwrap().is_empty());
    }

    #[test]
    fn test_vswitchctl_add_port_needs_one_mode() {
        for args in [
            &["vswitchctl", "--ctl", "/x", "add-port", "--name", "a"][..],
            &[
                "vswitchctl",
                "--ctl",
                "/x",
                "add-port",
                "--name",
                "a",
                "--server",
                "/p",
                "--client",
                "/q",
            ][..],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn test_vswitchctl_switch_refusal_is_error() {
        let s = Server::start();
        let err = s.run(&["del-port", "ghost"]).unwrap_err();
        assert!(
            matches!(&err, Failure::Refused(m) if m.contains("no port named `ghost`")),
            "{err:?}"
        );
    }

    #[test]
    fn test_vswitchctl_socket_missing() {
        let cli =
            Cli::try_parse_from(["vswitchctl", "--ctl", "/nonexistent/ctl.sock", "show"]).unwrap();
        let err = run(&cli).unwrap_err();
        assert!(
            matches!(&err, Failure::Unreachable(m) if m.contains("/nonexistent/ctl.sock")),
            "{err:?}"
        );
    }

    #[test]
    fn test_vswitchctl_help_explains() {
        let err = Cli::try_parse_from(["vswitchctl", "--help"]).unwrap_err();
        let help = err.to_string();
        for needle in [
            "--ctl",
            "--json",
            "show",
            "stats",
            "fdb",
            "pmd-stats",
            "add-port",
            "del-port",
            "EXAMPLES",
            "EXIT STATUS",
        ] {
            assert!(help.contains(needle), "--help lacks `{needle}`:\n{help}");
        }
    }

    #[test]
    fn test_vswitchctl_empty_replies() {
        assert_eq!(render_show(&ShowReply::default()), "no ports\n");
        assert_eq!(render_stats(&StatsReply::default()), "no ports\n");
        assert!(render_pmd_stats(&PmdStatsReply::default()).contains("no pmd threads"));
        assert!(render_fdb(&FdbReply::default()).contains("0 entries"));
    }
}

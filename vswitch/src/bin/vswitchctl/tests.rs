//! `vswitchctl` against a fake switch behind a real socket: tables, JSON, refusals.

use super::render::*;
use super::*;
use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vswitch::ctl::{
    serve, CtlHandler, DeviceInfo, FdbReply, LinkInfo, PmdLoad, PmdRxqs, PmdStats, PmdStatsReply,
    PortInfo, PortState, PortStats, QueueInfo, RebalanceArgs, RebalanceReply, RemoteVtepInfo,
    RxqInfo, RxqKind, RxqMove, RxqShowReply, ShowReply, StatsReply, TunnelInfo, UplinkInfo,
};
use vswitch::fdb::{FdbCounters, FdbEntry};

#[derive(Default)]
struct Fake {
    added: Mutex<Vec<PortSpec>>,
    rebalanced: Mutex<Vec<RebalanceArgs>>,
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
                    logging: true,
                    log_used: true,
                    ring: "packed".into(),
                }],
                mtu: Some(1500),
                mac: None,
                announcements: 1,
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
                        evpn: false,
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
    fn pmd_rxq_show(&self) -> RxqShowReply {
        RxqShowReply {
            interval_secs: 1,
            intervals: 3,
            window_cycles: 7_500_000_000,
            tsc_hz: Some(2_500_000_000),
            pmds: vec![
                PmdRxqs {
                    id: 0,
                    core: Some(1),
                    busy_cycles: 5_000_000_000,
                    busy_percent: 66.67,
                    queues: vec![
                        RxqInfo {
                            port: "vm1".into(),
                            queue: 1,
                            kind: RxqKind::Vhost,
                            pinned: false,
                            running: true,
                            busy_cycles: 4_612_500_000,
                            usage_percent: 61.5,
                        },
                        RxqInfo {
                            port: "vm2".into(),
                            queue: 3,
                            kind: RxqKind::Vhost,
                            pinned: false,
                            running: false,
                            busy_cycles: 0,
                            usage_percent: 0.0,
                        },
                        RxqInfo {
                            port: "up0".into(),
                            queue: 0,
                            kind: RxqKind::Uplink,
                            pinned: true,
                            running: true,
                            busy_cycles: 243_750_000,
                            usage_percent: 3.25,
                        },
                    ],
                },
                PmdRxqs {
                    id: 1,
                    core: None,
                    busy_cycles: 0,
                    busy_percent: 0.0,
                    queues: Vec::new(),
                },
            ],
        }
    }
    fn pmd_rxq_rebalance(&self, args: &RebalanceArgs) -> Result<RebalanceReply, String> {
        self.rebalanced.lock().unwrap().push(args.clone());
        Ok(RebalanceReply {
            dry_run: args.dry_run,
            applied: !args.dry_run,
            intervals: 3,
            moves: vec![RxqMove {
                port: "vm1".into(),
                queue: 1,
                from_pmd: 0,
                to_pmd: 1,
                usage_percent: 61.5,
            }],
            pmds: vec![
                PmdLoad {
                    id: 0,
                    before_percent: 64.75,
                    after_percent: 3.25,
                },
                PmdLoad {
                    id: 1,
                    before_percent: 0.0,
                    after_percent: 61.5,
                },
            ],
        })
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
    assert!(
        out.contains("QUEUE  ENABLED  STARTED  SIZE  PMD  RING    DIRTY LOG"),
        "{out}"
    );
    // The sample's queue is being logged for a migration, used ring included; its ring is
    // packed.
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('1') && l.trim_end().ends_with("yes")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('1') && l.contains(" packed ")),
        "{out}"
    );
    assert!(
        out.contains("migration announcements (RARP) sent: 1"),
        "{out}"
    );
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

#[test]
fn test_vswitchctl_pmd_rxq_show_table_and_json() {
    let s = Server::start();
    let out = s.run(&["pmd-rxq-show"]).unwrap();
    let want = "\
load over the last 3 interval(s) of 1 s (3.0 s); usage: share of the poll thread's time
pmd thread 0 core_id 1: 66.67% busy
  PORT  QUEUE  STATE     USAGE
  vm1       1  running  61.50%
  vm2       3  stopped   0.00%
  up0      rx  pinned    3.25%
pmd thread 1 unpinned: 0.00% busy
  no queues
";
    assert_eq!(out, want);
    let json: serde_json::Value =
        serde_json::from_str(&s.run(&["pmd-rxq-show", "--json"]).unwrap()).unwrap();
    assert_eq!(json["pmds"][0]["queues"][0]["usage_percent"], 61.5);
    assert_eq!(json["pmds"][0]["queues"][2]["kind"], "uplink");
}

#[test]
fn test_vswitchctl_pmd_rxq_rebalance_and_dry_run() {
    let s = Server::start();
    let out = s.run(&["pmd-rxq-rebalance"]).unwrap();
    let want = "\
moved 1 queue(s):
  vm1 queue 1: pmd 0 -> pmd 1 (61.50%)
estimated load per poll thread, from the last 3 interval(s):
  pmd 0: 64.75% -> 3.25%
  pmd 1: 0.00% -> 61.50%
";
    assert_eq!(out, want);
    let out = s.run(&["pmd-rxq-rebalance", "--dry-run"]).unwrap();
    assert!(
        out.starts_with("dry run: would move 1 queue(s):\n"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &s.run(&["--json", "pmd-rxq-rebalance", "--dry-run"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["applied"], false);
    assert_eq!(json["moves"][0]["from_pmd"], 0);
    let asked: Vec<bool> = s
        .fake
        .rebalanced
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.dry_run)
        .collect();
    assert_eq!(asked, vec![false, true, true]);
}

#[test]
fn test_vswitchctl_pmd_rxq_unknown_options() {
    for args in [
        &["pmd-rxq-rebalance", "--force"][..],
        &["pmd-rxq-rebalance", "pmd0"][..],
        &["pmd-rxq-show", "--dry-run"][..],
        &["pmd-rxq-show", "vm1"][..],
    ] {
        let argv = ["vswitchctl", "--ctl", "/x"]
            .into_iter()
            .chain(args.iter().copied());
        let err = Cli::try_parse_from(argv).unwrap_err();
        assert!(
            matches!(err.kind(), clap::error::ErrorKind::UnknownArgument),
            "{args:?}: {:?} {err}",
            err.kind()
        );
        // Exit status 2, as --help documents for a bad command line.
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

/// The help clap prints for `args` (after `vswitchctl --ctl /x`) holds every one of `needles`.
fn assert_help_mentions(args: &[&str], needles: &[&str]) {
    let argv = ["vswitchctl", "--ctl", "/x"].iter().chain(args);
    let help = Cli::try_parse_from(argv).unwrap_err().to_string();
    for needle in needles {
        assert!(help.contains(needle), "{args:?} lacks `{needle}`:\n{help}");
    }
}

#[test]
fn test_vswitchctl_pmd_rxq_help_explains() {
    assert_help_mentions(&["--help"], &["pmd-rxq-show", "pmd-rxq-rebalance"]);
    assert_help_mentions(
        &["pmd-rxq-rebalance", "--help"],
        &[
            "--dry-run",
            "least loaded",
            "two poll threads",
            "lost or reordered",
        ],
    );
    assert_help_mentions(
        &["pmd-rxq-show", "--help"],
        &[
            "--pmd-rxq-interval",
            "share of the poll thread's time",
            "pinned",
        ],
    );
}

#[test]
fn test_vswitchctl_pmd_rxq_empty_replies() {
    let out = render_rxq_show(&RxqShowReply::default());
    assert!(out.contains("no load measured yet"), "{out}");
    assert!(out.contains("no pmd threads"), "{out}");
    let out = render_rebalance(&RebalanceReply::default());
    assert!(out.starts_with("nothing to move"), "{out}");
}

//! A fake switch behind a real socket, for the control socket's tests.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::*;
use crate::capture::Tap;
use crate::config::PortSpec;
use crate::fdb::{FdbCounters, FdbEntry};

#[derive(Default)]
pub struct FakeSwitch {
    pub ports: Mutex<Vec<PortSpec>>,
    /// The capture hook of its one capturable port, `vm1`.
    pub tap: Arc<Tap>,
    /// The `pmd-rxq-rebalance` requests it got.
    pub rebalances: Mutex<Vec<RebalanceArgs>>,
}

/// Two poll threads: `vm1`'s queues 1 and 3 on pmd 0, an uplink pinned on pmd 1.
pub fn sample_rxq_show() -> RxqShowReply {
    let q = |port: &str, queue, kind, usage: u64| RxqInfo {
        port: port.into(),
        queue,
        kind,
        pinned: kind == RxqKind::Uplink,
        running: true,
        busy_cycles: usage * 1_000_000,
        usage_percent: usage as f64,
    };
    RxqShowReply {
        interval_secs: 10,
        intervals: 6,
        window_cycles: 100_000_000,
        tsc_hz: Some(2_000_000_000),
        pmds: vec![
            PmdRxqs {
                id: 0,
                core: Some(1),
                busy_cycles: 75_000_000,
                busy_percent: 75.0,
                queues: vec![
                    q("vm1", 1, RxqKind::Vhost, 50),
                    q("vm1", 3, RxqKind::Vhost, 20),
                ],
            },
            PmdRxqs {
                id: 1,
                core: Some(2),
                busy_cycles: 5_000_000,
                busy_percent: 5.0,
                queues: vec![q("up0", 0, RxqKind::Uplink, 4)],
            },
        ],
    }
}

/// What the fake answers to `pmd-rxq-rebalance`: `vm1` queue 3 from pmd 0 to pmd 1.
pub fn sample_rebalance(args: &RebalanceArgs) -> RebalanceReply {
    RebalanceReply {
        dry_run: args.dry_run,
        applied: !args.dry_run,
        intervals: 6,
        moves: vec![RxqMove {
            port: "vm1".into(),
            queue: 3,
            from_pmd: 0,
            to_pmd: 1,
            usage_percent: 20.0,
        }],
        pmds: vec![
            PmdLoad {
                id: 0,
                before_percent: 70.0,
                after_percent: 50.0,
            },
            PmdLoad {
                id: 1,
                before_percent: 4.0,
                after_percent: 24.0,
            },
        ],
    }
}

pub fn sample_port_info(spec: &PortSpec) -> PortInfo {
    PortInfo {
        name: spec.name.clone(),
        mode: spec.mode,
        path: spec.path.clone(),
        vlan: spec.vlan,
        state: PortState::Running,
        features: (1 << 32) | (1 << 15),
        features_names: vec!["VERSION_1".into(), "MRG_RXBUF".into()],
        protocol_features: 0x8003,
        queue_pairs: spec.queues,
        queues: vec![
            QueueInfo {
                index: 0,
                enabled: true,
                started: true,
                size: 256,
                pmd: None,
                error: None,
                logging: false,
                log_used: false,
                ring: "split".into(),
            },
            QueueInfo {
                index: 1,
                enabled: true,
                started: true,
                size: 256,
                pmd: Some(0),
                error: None,
                logging: false,
                log_used: false,
                ring: "split".into(),
            },
        ],
        mtu: Some(1500),
        mac: Some("52:54:00:12:34:56".into()),
        announcements: 0,
    }
}

impl CtlHandler for FakeSwitch {
    fn show(&self) -> ShowReply {
        ShowReply {
            ports: self
                .ports
                .lock()
                .unwrap()
                .iter()
                .map(sample_port_info)
                .collect(),
            devices: Vec::new(),
        }
    }
    fn stats(&self) -> StatsReply {
        StatsReply {
            ports: vec![PortStats {
                name: "vm1".into(),
                rx_packets: 10,
                rx_bytes: 640,
                tx_packets: 9,
                tx_bytes: 576,
                drops: BTreeMap::from([("tx_ring_full".into(), 1)]),
                ring_errors: BTreeMap::new(),
                control: BTreeMap::new(),
            }],
        }
    }
    fn fdb(&self) -> FdbReply {
        FdbReply {
            entries: vec![FdbEntry {
                vlan: 10,
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                port: 1,
                age_secs: 7,
            }],
            port_names: BTreeMap::from([(1, "vm1".into())]),
            counters: FdbCounters {
                learned: 1,
                ..FdbCounters::default()
            },
        }
    }
    fn pmd_stats(&self) -> PmdStatsReply {
        PmdStatsReply {
            pmds: vec![PmdStats {
                id: 0,
                core: Some(1),
                packets: 1000,
                busy_cycles: 250_000,
                idle_cycles: 750_000,
                cycles_per_packet: 1000.0,
                iterations: 5000,
                rx_queues: vec!["vm1/1".into()],
            }],
            tsc_hz: Some(2_000_000_000),
        }
    }
    fn pmd_rxq_show(&self) -> RxqShowReply {
        sample_rxq_show()
    }
    fn pmd_rxq_rebalance(&self, args: &RebalanceArgs) -> Result<RebalanceReply, String> {
        self.rebalances.lock().unwrap().push(args.clone());
        Ok(sample_rebalance(args))
    }
    fn add_port(&self, spec: PortSpec) -> Result<(), String> {
        if spec.name == "boom" {
            panic!("fake handler panics on request");
        }
        let mut ports = self.ports.lock().unwrap();
        if ports.iter().any(|p| p.name == spec.name) {
            return Err(format!("port `{}` already exists", spec.name));
        }
        ports.push(spec);
        Ok(())
    }
    fn tap(&self, name: &str) -> Result<Arc<Tap>, String> {
        match name {
            "vm1" => Ok(self.tap.clone()),
            _ => Err(format!("no port named `{name}`")),
        }
    }
    fn del_port(&self, name: &str) -> Result<(), String> {
        let mut ports = self.ports.lock().unwrap();
        let before = ports.len();
        ports.retain(|p| p.name != name);
        if ports.len() == before {
            return Err(format!("no port named `{name}`"));
        }
        Ok(())
    }
}

/// A served fake switch in its own temp dir; stops and cleans up on drop.
pub struct TestServer {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub switch: Arc<FakeSwitch>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(ServeOptions::default())
    }

    pub fn start_with(options: ServeOptions) -> TestServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vswitch-ctl-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let switch = Arc::new(FakeSwitch::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = serve_with(listener, switch.clone(), stop.clone(), options);
        TestServer {
            dir,
            path,
            switch,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The configuration as a whole, through [`Config::parse_with_cores`]: command lines and
//! files, good and bad.

use super::*;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const CORES: [usize; 4] = [0, 1, 2, 3];

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once("vswitch").chain(args.iter().copied());
    Config::parse_with_cores(argv, &CORES)
}

/// A config file in a fresh temp dir; tests run in parallel, so each gets its own.
fn write_file(text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vswitch-config-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vswitch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(super) fn parse_file_args(text: &str, extra: &[&str]) -> Result<Config, ConfigError> {
    let path = write_file(text);
    let path_str = path.to_str().unwrap().to_owned();
    let mut args = vec!["--config", path_str.as_str()];
    args.extend_from_slice(extra);
    let r = parse(&args);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    r
}

#[test]
fn test_config_defaults() {
    let c = parse(&[]).unwrap();
    assert!(c.ports.is_empty(), "an empty port list is allowed");
    assert_eq!(
        c.pmd_cores,
        vec![3],
        "default PMD core is the last available"
    );
    assert_eq!(c.mac_aging_secs, DEFAULT_MAC_AGING_SECS);
    assert_eq!(c.pmd_rxq_interval_secs, crate::rxq::DEFAULT_INTERVAL_SECS);
    assert_eq!(c.ctl, None);
    assert_eq!(c.log, None);
}

#[test]
fn test_config_full_command_line() {
    let c = parse(&[
        "--vhost-server",
        "vm1=/tmp/vm1.sock",
        "--vhost-client",
        "vm2=/tmp/vm2.sock",
        "--port-vlan",
        "vm2=20",
        "--port-queues",
        "vm1=4",
        "--pmd-cores",
        "0,2-3",
        "--ctl",
        "/tmp/ctl.sock",
        "--mac-aging",
        "60",
        "--log",
        "vswitch=debug,warn",
    ])
    .unwrap();
    assert_eq!(
        c.ports,
        vec![
            PortSpec {
                name: "vm1".into(),
                mode: PortMode::Server,
                path: "/tmp/vm1.sock".into(),
                vlan: None,
                queues: 4,
                fastpath: false,
            },
            PortSpec {
                name: "vm2".into(),
                mode: PortMode::Client,
                path: "/tmp/vm2.sock".into(),
                vlan: Some(20),
                queues: 1,
                fastpath: false,
            },
        ]
    );
    assert_eq!(c.pmd_cores, vec![0, 2, 3]);
    assert_eq!(c.ctl, Some(PathBuf::from("/tmp/ctl.sock")));
    assert_eq!(c.mac_aging_secs, 60);
    assert_eq!(c.log.as_deref(), Some("vswitch=debug,warn"));
    assert_eq!(c.log_filter(), "vswitch=debug,warn");
}

#[test]
fn test_config_file_merged_with_command_line() {
    let c = parse_file_args(
        r#"
pmd_cores = "1"
ctl = "/tmp/file-ctl.sock"
mac_aging_secs = 120
log = "debug"

[[port]]
name = "a"
mode = "server"
path = "/tmp/a.sock"
vlan = 10
queues = 2

[[port]]
name = "b"
mode = "client"
path = "/tmp/b.sock"
"#,
        &[
            "--vhost-server",
            "c=/tmp/c.sock",
            "--pmd-cores",
            "2",
            "--port-vlan",
            "a=11",
        ],
    )
    .unwrap();
    let names: Vec<_> = c.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c"],
        "command line adds ports to the file's"
    );
    assert_eq!(c.ports[0].vlan, Some(11), "command line wins over the file");
    assert_eq!(c.ports[0].queues, 2);
    assert_eq!(c.ports[1].mode, PortMode::Client);
    assert_eq!(c.ports[1].queues, 1);
    assert_eq!(c.pmd_cores, vec![2], "command line wins over the file");
    assert_eq!(c.ctl, Some(PathBuf::from("/tmp/file-ctl.sock")));
    assert_eq!(c.mac_aging_secs, 120);
    assert_eq!(c.log.as_deref(), Some("debug"));
    assert!(c.config_file.is_some());
}

#[test]
fn test_config_help_explains_options_and_example() {
    let err = parse(&["--help"]).unwrap_err();
    let ConfigError::Cli(e) = err else {
        panic!("--help must come back as a clap error to print")
    };
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    let help = e.to_string();
    for needle in [
        "--vhost-server",
        "--vhost-client",
        "--port-vlan",
        "--port-queues",
        "--pmd-cores",
        "--ctl",
        "--config",
        "--mac-aging",
        "--log",
        "last core",
        "EXAMPLES",
        "[[port]]",
    ] {
        assert!(help.contains(needle), "--help lacks `{needle}`:\n{help}");
    }
}

#[test]
fn test_config_port_spec_json_round_trip() {
    let spec: PortSpec =
        serde_json::from_str(r#"{"name":"vm1","mode":"client","path":"/tmp/x.sock"}"#).unwrap();
    assert_eq!(spec.queues, 1);
    assert_eq!(spec.vlan, None);
    let back: PortSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn test_config_vhost_server_without_equals() {
    let err = parse(&["--vhost-server", "/tmp/vm1.sock"]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadArgument { option: "--vhost-server", value, .. } if value == "/tmp/vm1.sock"),
        "{err}"
    );
    assert!(err.to_string().contains("NAME=SOCKETPATH"));
}

#[test]
fn test_config_vhost_client_empty_path() {
    let err = parse(&["--vhost-client", "vm1="]).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::BadArgument {
                option: "--vhost-client",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn test_config_port_name_empty() {
    let err = parse(&["--vhost-server", "=/tmp/x.sock"]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadPortName { name, .. } if name.is_empty()),
        "{err}"
    );
}

#[test]
fn test_config_port_name_too_long() {
    let name = "a".repeat(MAX_PORT_NAME_LEN + 1);
    let arg = format!("{name}=/tmp/x.sock");
    let err = parse(&["--vhost-server", &arg]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadPortName { name: n, .. } if *n == name),
        "{err}"
    );
    let ok = format!("{}=/tmp/x.sock", "a".repeat(MAX_PORT_NAME_LEN));
    assert!(
        parse(&["--vhost-server", &ok]).is_ok(),
        "32 chars is allowed"
    );
}

#[test]
fn test_config_port_name_bad_chars() {
    for bad in ["vm 1", "vm/1", "vm.1", "-vm", "vm\u{e9}"] {
        let arg = format!("{bad}=/tmp/x.sock");
        let err = parse(&["--vhost-server", &arg]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadPortName { name, .. } if name == bad),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(bad));
    }
}

#[test]
fn test_config_duplicate_port_name() {
    let err = parse(&[
        "--vhost-server",
        "vm1=/tmp/a.sock",
        "--vhost-client",
        "vm1=/tmp/b.sock",
    ])
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::DuplicatePortName(n) if n == "vm1"),
        "{err}"
    );
}

#[test]
fn test_config_duplicate_port_name_file_and_command_line() {
    let err = parse_file_args(
        "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\n",
        &["--vhost-server", "vm1=/tmp/b.sock"],
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::DuplicatePortName(_)), "{err}");
}

#[test]
fn test_config_duplicate_socket_path() {
    let err = parse(&[
        "--vhost-server",
        "vm1=/tmp/same.sock",
        "--vhost-server",
        "vm2=/tmp//same.sock",
    ])
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::DuplicateSocketPath { path, .. } if path == Path::new("/tmp//same.sock")),
        "{err}"
    );
    assert!(err.to_string().contains("vm1") && err.to_string().contains("vm2"));
}

#[test]
fn test_config_socket_path_same_as_ctl() {
    let err = parse(&[
        "--vhost-server",
        "vm1=/tmp/ctl.sock",
        "--ctl",
        "/tmp/ctl.sock",
    ])
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::DuplicateSocketPath { .. }),
        "{err}"
    );
}

#[test]
fn test_config_socket_path_too_long() {
    let arg = format!("vm1=/tmp/{}", "x".repeat(MAX_SOCKET_PATH_LEN));
    let err = parse(&["--vhost-server", &arg]).unwrap_err();
    assert!(matches!(err, ConfigError::BadSocketPath { .. }), "{err}");
    assert!(err.to_string().contains("at most 107"));
}

#[test]
fn test_config_socket_path_directory() {
    let err = parse(&["--ctl", "/tmp/"]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadSocketPath { owner, .. } if owner == "--ctl"),
        "{err}"
    );
}

#[test]
fn test_config_vlan_out_of_range() {
    for bad in ["0", "4095", "70000", "-1", "ten"] {
        let arg = format!("vm1={bad}");
        let err = parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-vlan", &arg]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::VlanOutOfRange { port, value } if port == "vm1" && value == bad),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("1..=4094"));
    }
    for good in ["1", "4094"] {
        let arg = format!("vm1={good}");
        let c = parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-vlan", &arg]).unwrap();
        assert_eq!(c.ports[0].vlan, Some(good.parse().unwrap()));
    }
}

#[test]
fn test_config_vlan_out_of_range_in_file() {
    let err = parse_file_args(
        "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\nvlan = 4095\n",
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::VlanOutOfRange { value, .. } if value == "4095"),
        "{err}"
    );
}

#[test]
fn test_config_queues_out_of_range() {
    for bad in ["0", "17", "-3", "many"] {
        let arg = format!("vm1={bad}");
        let err = parse(&["--vhost-server", "vm1=/tmp/a.sock", "--port-queues", &arg]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::QueuesOutOfRange { port, value } if port == "vm1" && value == bad),
            "{bad}: {err}"
        );
    }
    let c = parse(&[
        "--vhost-server",
        "vm1=/tmp/a.sock",
        "--port-queues",
        "vm1=16",
    ])
    .unwrap();
    assert_eq!(c.ports[0].queues, 16);
}

#[test]
fn test_config_queues_out_of_range_in_file() {
    let err = parse_file_args(
        "[[port]]\nname = \"vm1\"\nmode = \"client\"\npath = \"/tmp/a.sock\"\nqueues = 99999999999\n",
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::QueuesOutOfRange { .. }), "{err}");
}

#[test]
fn test_config_port_vlan_unknown_port() {
    let err = parse(&["--port-vlan", "ghost=10"]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownPort { option: "--port-vlan", name } if name == "ghost"),
        "{err}"
    );
}

#[test]
fn test_config_port_queues_given_twice() {
    let err = parse(&[
        "--vhost-server",
        "vm1=/tmp/a.sock",
        "--port-queues",
        "vm1=2",
        "--port-queues",
        "vm1=3",
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::DuplicatePortSetting {
                option: "--port-queues",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn test_config_pmd_cores_bad_syntax() {
    for bad in ["", "a", "1,,2", "3-1", "1-", "1,1", "0-99999"] {
        let err = parse(&["--pmd-cores", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadCoreList { list, .. } if list == bad),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn test_config_pmd_cores_not_available() {
    let err = parse(&["--pmd-cores", "2-5"]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::CoreNotAvailable { core: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("available: 0-3"), "{err}");
}

#[test]
fn test_config_pmd_cores_checked_against_this_machine() {
    let beyond = available_cores().last().copied().unwrap_or(0) + 1;
    let list = beyond.to_string();
    let err = Config::parse_from(["vswitch", "--pmd-cores", list.as_str()]).unwrap_err();
    assert!(matches!(err, ConfigError::CoreNotAvailable { .. }), "{err}");
}

#[test]
fn config_metrics_address() {
    assert_eq!(parse(&[]).unwrap().metrics, None);
    let c = parse(&["--metrics", "9101"]).unwrap();
    assert_eq!(
        c.metrics,
        Some("127.0.0.1:9101".parse().unwrap()),
        "loopback by default"
    );
    let c = parse(&["--metrics", "0.0.0.0:9200"]).unwrap();
    assert_eq!(c.metrics, Some("0.0.0.0:9200".parse().unwrap()));
    let c = parse_file_args("metrics = \"[::1]:9300\"\n", &[]).unwrap();
    assert_eq!(c.metrics, Some("[::1]:9300".parse().unwrap()));
}

#[test]
fn test_config_metrics_bad_address() {
    for bad in ["0", "70000", "localhost:9101", "1.2.3.4", "1.2.3.4:0", ""] {
        let err = parse(&["--metrics", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadArgument { option: "--metrics", value, .. } if value == bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn test_config_mac_aging_out_of_range() {
    for bad in ["0", "86401", "-5", "soon"] {
        let err = parse(&["--mac-aging", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::MacAgingOutOfRange { value } if value == bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn test_config_pmd_rxq_interval() {
    for (arg, secs) in [("1", 1), (" 30 ", 30), ("3600", 3600)] {
        let c = parse(&["--pmd-rxq-interval", arg]).unwrap();
        assert_eq!(c.pmd_rxq_interval_secs, secs, "{arg:?}");
    }
    for bad in ["0", "3601", "-1", "1.5", "soon", ""] {
        let err = parse(&["--pmd-rxq-interval", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadArgument { option: "--pmd-rxq-interval", value, .. } if value == bad),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("1..=3600"), "{err}");
    }
}

#[test]
fn test_config_bad_log_level() {
    for bad in ["loud", "vswitch=loud", "=info", "a b=info", ""] {
        let err = parse(&["--log", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadLogFilter { value, .. } if value == bad),
            "{bad:?}: {err}"
        );
    }
    assert!(parse(&["--log", "WARN"]).is_ok());
}

#[test]
fn test_config_file_unknown_key() {
    let err = parse_file_args("pmd_core = \"1\"\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Toml { .. }), "{err}");
    assert!(err.to_string().contains("pmd_core"), "{err}");
}

#[test]
fn test_config_file_unknown_port_key() {
    let err = parse_file_args(
        "[[port]]\nname = \"vm1\"\nmode = \"server\"\npath = \"/tmp/a.sock\"\nvlans = 3\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("vlans"), "{err}");
}

#[test]
fn test_config_file_bad_mode() {
    let err = parse_file_args(
        "[[port]]\nname = \"vm1\"\nmode = \"listen\"\npath = \"/tmp/a.sock\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
}

#[test]
fn test_config_file_missing_path() {
    let err = parse_file_args("[[port]]\nname = \"vm1\"\nmode = \"server\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("path"), "{err}");
}

#[test]
fn test_config_file_missing() {
    let err = parse(&["--config", "/nonexistent/vswitch.toml"]).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/vswitch.toml"));
}

#[test]
fn test_config_file_mac_aging_out_of_range() {
    let err = parse_file_args("mac_aging_secs = 0\n", &[]).unwrap_err();
    assert!(
        matches!(err, ConfigError::MacAgingOutOfRange { .. }),
        "{err}"
    );
}

#[test]
fn test_config_unknown_option() {
    let err = parse(&["--vhost-sever", "a=/b"]).unwrap_err();
    assert!(matches!(err, ConfigError::Cli(_)), "{err}");
}

#[test]
fn vxlan_spec_parsed() {
    let v = parse_vxlan("vx0=10.0.0.1,10.0.0.2,10.0.0.3,42,up0").unwrap();
    assert_eq!(v.name, "vx0");
    assert_eq!(v.local, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        v.remotes,
        vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
    );
    assert_eq!((v.vni, v.uplink.as_str()), (42, "up0"));
}

#[test]
fn test_config_vxlan_bad_specs() {
    for (bad, needle) in [
        ("vx0", "no `=`"),
        ("vx0=42,up0", "at least 3"),
        ("vx0=10.0.0.300,10.0.0.2,42,up0", "not an IPv4 address"),
        ("vx0=0.0.0.0,10.0.0.2,42,up0", "not a unicast"),
        ("vx0=10.0.0.1,224.0.0.1,42,up0", "not a unicast"),
        ("vx0=10.0.0.1,10.0.0.1,42,up0", "is the local address"),
        ("vx0=10.0.0.1,10.0.0.2,10.0.0.2,42,up0", "listed twice"),
        ("vx0=10.0.0.1,10.0.0.2,16777216,up0", "VNI"),
        ("vx0=10.0.0.1,10.0.0.2,-1,up0", "VNI"),
        ("vx0=10.0.0.1,10.0.0.2,42,", "uplink name is empty"),
    ] {
        let err = parse(&["--vxlan", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadVxlan { value, reason } if value == bad && reason.contains(needle)),
            "{bad}: {err}"
        );
    }
    let many: Vec<String> = (2..20).map(|i| format!("10.0.0.{i}")).collect();
    let arg = format!("vx0=10.0.0.1,{},42,up0", many.join(","));
    let err = parse(&["--vxlan", &arg]).unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");
}

#[test]
fn test_config_vxlan_without_remotes_needs_evpn() {
    let err = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--vxlan",
        "vx0=10.0.0.1,42,up0",
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("no remote VTEP") && err.to_string().contains("--evpn"),
        "{err}"
    );
}

#[test]
fn test_config_evpn_names_unknown_tunnel() {
    let err = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--vxlan",
        "vx0=10.0.0.1,42,up0",
        "--evpn",
        "vx1",
    ])
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownPort { option: "--evpn", name } if name == "vx1"),
        "{err}"
    );
}

#[test]
fn test_config_evpn_same_vni_twice() {
    let err = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--dpdk-port",
        "up1=net_ring1",
        "--vxlan",
        "vx0=10.0.0.1,42,up0",
        "--vxlan",
        "vx1=10.0.1.1,42,up1",
        "--evpn",
        "vx0",
        "--evpn",
        "vx1",
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("already runs EVPN for VNI 42"),
        "{err}"
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn test_config_evpn_tunnel_without_remotes() {
    let c = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--vxlan",
        "vx0=10.0.0.1,42,up0",
        "--evpn",
        "vx0",
        "--evpn-mac-limit",
        "100",
    ])
    .unwrap();
    assert!(c.vxlan[0].evpn && c.vxlan[0].remotes.is_empty());
    assert_eq!(c.evpn_mac_limit, 100);
    let c = parse(&["--dpdk-port", "up0=net_ring0"]).unwrap();
    assert_eq!(c.evpn_mac_limit, crate::evpn::DEFAULT_MAC_LIMIT);
    let file = parse_file_args(
        "evpn_mac_limit = 9\n[[dpdk_port]]\nname = \"u\"\ndevargs = \"net_ring0\"\n[[vxlan]]\nname = \"v\"\nlocal = \"10.1.0.1\"\nvni = 7\nuplink = \"u\"\nevpn = true\n",
        &[],
    )
    .unwrap();
    assert!(file.vxlan[0].evpn && file.vxlan[0].remotes.is_empty());
    assert_eq!(file.evpn_mac_limit, 9);
}

#[test]
fn test_config_evpn_hold() {
    assert_eq!(parse(&[]).unwrap().evpn_hold_secs, 0);
    assert_eq!(parse(&["--evpn-hold", "60"]).unwrap().evpn_hold_secs, 60);
    for bad in ["3601", "-1", "soon"] {
        let err = parse(&["--evpn-hold", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::EvpnHoldOutOfRange { value } if value == bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn test_config_evpn_mac_limit_out_of_range() {
    for bad in ["0", "65537", "-1", "many"] {
        let err = parse(&["--evpn-mac-limit", bad]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::EvpnMacLimitOutOfRange { value } if value == bad),
            "{bad}: {err}"
        );
    }
}

#[test]
fn test_config_vxlan_uplink_not_a_dpdk_port() {
    let err = parse(&[
        "--vhost-server",
        "up0=/tmp/a.sock",
        "--vxlan",
        "vx0=10.0.0.1,10.0.0.2,42,up0",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("not a --dpdk-port"), "{err}");
}

#[test]
fn test_config_vxlan_same_vni_twice_on_one_uplink() {
    let err = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--vxlan",
        "vx0=10.0.0.1,10.0.0.2,42,up0",
        "--vxlan",
        "vx1=10.0.0.1,10.0.0.3,42,up0",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("already carries VNI 42"), "{err}");
}

#[test]
fn test_config_device_port_names_shared_with_vhost_ports() {
    for args in [
        &[
            "--vhost-server",
            "a=/tmp/a.sock",
            "--dpdk-port",
            "a=net_ring0",
        ][..],
        &["--dpdk-port", "a=net_ring0", "--dpdk-port", "a=net_ring1"][..],
        &[
            "--dpdk-port",
            "up0=net_ring0",
            "--vxlan",
            "up0=10.0.0.1,10.0.0.2,42,up0",
        ][..],
    ] {
        let err = parse(args).unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicatePortName(_)),
            "{args:?}: {err}"
        );
    }
    let err = parse(&["--dpdk-port", "b=net_tap0, iface=x"]).unwrap_err();
    assert!(err.to_string().contains("whitespace"), "{err}");
}

#[test]
fn test_config_port_vlan_on_underlay_refused() {
    let err = parse(&[
        "--dpdk-port",
        "up0=net_ring0",
        "--vxlan",
        "vx0=10.0.0.1,10.0.0.2,42,up0",
        "--port-vlan",
        "up0=10",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("carries VXLAN tunnels"), "{err}");
}

#[test]
fn test_config_dpdk_mtu_out_of_range() {
    for bad in ["1279", "9001", "big"] {
        let arg = format!("up0={bad}");
        let err = parse(&["--dpdk-port", "up0=net_ring0", "--dpdk-mtu", &arg]).unwrap_err();
        assert!(err.to_string().contains("1280..=9000"), "{bad}: {err}");
    }
    let err = parse(&["--dpdk-mtu", "ghost=1500"]).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownPort { .. }), "{err}");
}

#[test]
fn pci_devargs_recognised() {
    assert!(is_pci_devargs("0000:01:00.0"));
    assert!(is_pci_devargs("01:00.1,rx_queues=2"));
    assert!(!is_pci_devargs("net_ring0"));
    assert!(!is_pci_devargs("net_af_packet0,iface=eth1"));
    assert!(!is_pci_devargs("net_tap0,iface=a:b.c"));
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_ports_and_tunnels_configured() {
    let c = parse(&[
        "--vhost-server",
        "vm1=/tmp/vm1.sock",
        "--dpdk-port",
        "up0=net_af_packet0,iface=veth0",
        "--dpdk-port",
        "up1=net_ring0",
        "--dpdk-mtu",
        "up0=1550",
        "--vxlan",
        "vx0=10.0.0.1,10.0.0.2,42,up0",
        "--port-vlan",
        "vx0=10",
        "--port-vlan",
        "up1=20",
        "--dpdk-eal",
        "-l 0 --no-huge  -m 256",
    ])
    .unwrap();
    assert_eq!(
        c.dpdk_ports,
        vec![
            DpdkPortSpec {
                name: "up0".into(),
                devargs: "net_af_packet0,iface=veth0".into(),
                vlan: None,
                mtu: Some(1550),
            },
            DpdkPortSpec {
                name: "up1".into(),
                devargs: "net_ring0".into(),
                vlan: Some(20),
                mtu: None,
            },
        ]
    );
    assert_eq!(c.vxlan[0].vlan, Some(10));
    assert!(c.is_underlay("up0") && !c.is_underlay("up1"));
    assert_eq!(
        c.dpdk_eal,
        Some(vec![
            "-l".into(),
            "0".into(),
            "--no-huge".into(),
            "-m".into(),
            "256".into()
        ])
    );
    let file = parse_file_args(
        "dpdk_eal = \"--no-huge\"\n[[dpdk_port]]\nname = \"u\"\ndevargs = \"net_ring0\"\nmtu = 1600\n[[vxlan]]\nname = \"v\"\nlocal = \"10.1.0.1\"\nremotes = [\"10.1.0.2\"]\nvni = 7\nuplink = \"u\"\nvlan = 3\n",
        &[],
    )
    .unwrap();
    assert_eq!(file.dpdk_ports[0].mtu, Some(1600));
    assert_eq!(file.vxlan[0].vni, 7);
    assert_eq!(file.vxlan[0].vlan, Some(3));
    assert_eq!(file.dpdk_eal, Some(vec!["--no-huge".into()]));
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn test_config_dpdk_port_without_the_feature() {
    let err = parse(&["--dpdk-port", "up0=net_ring0"]).unwrap_err();
    assert!(matches!(err, ConfigError::DpdkNotBuilt), "{err}");
    assert!(err.to_string().contains("--features dpdk"), "{err}");
}

#[test]
fn test_config_core_list_round_trip() {
    assert_eq!(parse_core_list("0,2-4, 7").unwrap(), vec![0, 2, 3, 4, 7]);
    assert_eq!(format_core_list(&[7, 0, 2, 3, 4]), "0,2-4,7");
    assert_eq!(format_core_list(&[]), "none");
    assert!(!available_cores().is_empty());
}

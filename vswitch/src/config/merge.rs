//! Merging the file and the command line into one [`Config`]: the file gives the base, the
//! command line wins for single settings and adds ports; checks across ports live here.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::cli::Cli;
use super::cores::{format_core_list, parse_core_list};
use super::error::ConfigError;
use super::file::FileConfig;
use super::spec::{
    default_queues, DpdkPortSpec, PortMode, PortSpec, DEFAULT_MAC_AGING_SECS, MAC_AGING_RANGE,
};
use super::validate::{
    mtu_from_i64, parse_metrics_addr, parse_vxlan, port_index, queues_from_i64, split_assignment,
    validate_devargs, validate_log_filter, validate_port_name, validate_socket_path,
    validate_tunnels, vlan_from_i64,
};
use super::Config;

pub(super) fn build(
    cli: Cli,
    file: Option<(PathBuf, FileConfig)>,
    available: &[usize],
) -> Result<Config, ConfigError> {
    let (config_file, file) = match file {
        Some((path, f)) => (Some(path), f),
        None => (None, FileConfig::default()),
    };

    let mut ports = Vec::new();
    for p in file.port {
        let vlan = p
            .vlan
            .map(|v| vlan_from_i64(&p.name, v, &v.to_string()))
            .transpose()?;
        let queues = match p.queues {
            Some(q) => queues_from_i64(&p.name, q, &q.to_string())?,
            None => default_queues(),
        };
        ports.push(PortSpec {
            name: p.name,
            mode: p.mode,
            path: p.path,
            vlan,
            queues,
            fastpath: p.fastpath.unwrap_or(false),
        });
    }
    for (option, mode, values) in [
        ("--vhost-server", PortMode::Server, &cli.vhost_server),
        ("--vhost-client", PortMode::Client, &cli.vhost_client),
    ] {
        for value in values {
            let (name, path) = split_assignment(option, value, "NAME=SOCKETPATH")?;
            ports.push(PortSpec {
                name: name.to_owned(),
                mode,
                path: PathBuf::from(path),
                vlan: None,
                queues: default_queues(),
                fastpath: false,
            });
        }
    }

    let mut dpdk_ports = Vec::new();
    for p in file.dpdk_port {
        let vlan = p
            .vlan
            .map(|v| vlan_from_i64(&p.name, v, &v.to_string()))
            .transpose()?;
        let mtu = p
            .mtu
            .map(|m| mtu_from_i64(&p.name, m, &m.to_string()))
            .transpose()?;
        dpdk_ports.push(DpdkPortSpec {
            name: p.name,
            devargs: p.devargs,
            vlan,
            mtu,
        });
    }
    for value in &cli.dpdk_port {
        let (name, devargs) = split_assignment("--dpdk-port", value, "NAME=DEVARGS")?;
        dpdk_ports.push(DpdkPortSpec {
            name: name.to_owned(),
            devargs: devargs.to_owned(),
            vlan: None,
            mtu: None,
        });
    }
    let mut vxlan = Vec::new();
    for v in file.vxlan {
        let mut fields = vec![v.local.clone()];
        fields.extend(v.remotes.iter().cloned());
        fields.push(v.vni.to_string());
        fields.push(v.uplink.clone());
        let text = format!("{}={}", v.name, fields.join(","));
        let mut spec = parse_vxlan(&text)?;
        spec.evpn = v.evpn.unwrap_or(false);
        spec.vlan = v
            .vlan
            .map(|x| vlan_from_i64(&v.name, x, &x.to_string()))
            .transpose()?;
        vxlan.push(spec);
    }
    for value in &cli.vxlan {
        vxlan.push(parse_vxlan(value)?);
    }

    // Names are checked before the per-port overrides so that "unknown port" is never
    // reported for what is really a malformed or duplicated name.
    let mut index_by_name = HashMap::new();
    for (i, port) in ports.iter().enumerate() {
        validate_port_name(&port.name)?;
        if index_by_name.insert(port.name.clone(), i).is_some() {
            return Err(ConfigError::DuplicatePortName(port.name.clone()));
        }
    }
    // Device ports share the name space; their indices are kept apart.
    let mut dpdk_by_name = HashMap::new();
    for (i, p) in dpdk_ports.iter().enumerate() {
        validate_port_name(&p.name)?;
        if index_by_name.contains_key(&p.name) || dpdk_by_name.insert(p.name.clone(), i).is_some() {
            return Err(ConfigError::DuplicatePortName(p.name.clone()));
        }
        validate_devargs(&p.devargs, &format!("{}={}", p.name, p.devargs))?;
    }
    let mut vxlan_by_name = HashMap::new();
    for (i, v) in vxlan.iter().enumerate() {
        validate_port_name(&v.name)?;
        if index_by_name.contains_key(&v.name)
            || dpdk_by_name.contains_key(&v.name)
            || vxlan_by_name.insert(v.name.clone(), i).is_some()
        {
            return Err(ConfigError::DuplicatePortName(v.name.clone()));
        }
    }
    let mut evpn_set = BTreeSet::new();
    for name in &cli.evpn {
        let i = port_index(&vxlan_by_name, "--evpn", name, &mut evpn_set)?;
        vxlan[i].evpn = true;
    }
    validate_tunnels(&vxlan, &dpdk_by_name)?;
    let evpn_mac_limit = match (&cli.evpn_mac_limit, file.evpn_mac_limit) {
        (Some(text), _) => text.trim().parse::<i64>().unwrap_or(-1),
        (None, Some(n)) => n,
        (None, None) => i64::try_from(crate::evpn::DEFAULT_MAC_LIMIT).unwrap_or(4096),
    };
    let evpn_mac_limit = usize::try_from(evpn_mac_limit)
        .ok()
        .filter(|n| (1..=65536).contains(n))
        .ok_or_else(|| ConfigError::EvpnMacLimitOutOfRange {
            value: cli
                .evpn_mac_limit
                .clone()
                .unwrap_or_else(|| evpn_mac_limit.to_string()),
        })?;
    let evpn_hold = match (&cli.evpn_hold, file.evpn_hold_secs) {
        (Some(text), _) => text.trim().parse::<i64>().unwrap_or(-1),
        (None, Some(n)) => n,
        (None, None) => 0,
    };
    let evpn_hold_secs = u32::try_from(evpn_hold)
        .ok()
        .filter(|n| *n <= crate::evpn::MAX_HOLD_SECS)
        .ok_or_else(|| ConfigError::EvpnHoldOutOfRange {
            value: cli
                .evpn_hold
                .clone()
                .unwrap_or_else(|| evpn_hold.to_string()),
        })?;

    let mut mtu_set = BTreeSet::new();
    for value in &cli.dpdk_mtu {
        let (name, m) = split_assignment("--dpdk-mtu", value, "NAME=MTU")?;
        let i = port_index(&dpdk_by_name, "--dpdk-mtu", name, &mut mtu_set)?;
        let parsed = m.trim().parse::<i64>().unwrap_or(-1);
        dpdk_ports[i].mtu = Some(mtu_from_i64(name, parsed, m)?);
    }

    let mut vlan_set = BTreeSet::new();
    for value in &cli.port_vlan {
        let (name, vid) = split_assignment("--port-vlan", value, "NAME=VID")?;
        let parsed = vid.trim().parse::<i64>().unwrap_or(-1);
        let vlan = Some(vlan_from_i64(name, parsed, vid)?);
        if let Some(&i) = dpdk_by_name.get(name) {
            port_index(&dpdk_by_name, "--port-vlan", name, &mut vlan_set)?;
            if vxlan.iter().any(|v| v.uplink == name) {
                return Err(ConfigError::BadArgument {
                    option: "--port-vlan",
                    value: value.clone(),
                    expected: "a port that is a member of the switch: this DPDK port carries VXLAN tunnels (give the tunnel the VLAN instead)",
                });
            }
            dpdk_ports[i].vlan = vlan;
            continue;
        }
        if let Some(&i) = vxlan_by_name.get(name) {
            port_index(&vxlan_by_name, "--port-vlan", name, &mut vlan_set)?;
            vxlan[i].vlan = vlan;
            continue;
        }
        let i = port_index(&index_by_name, "--port-vlan", name, &mut vlan_set)?;
        ports[i].vlan = vlan;
    }
    let mut queues_set = BTreeSet::new();
    for value in &cli.port_queues {
        let (name, n) = split_assignment("--port-queues", value, "NAME=N")?;
        let i = port_index(&index_by_name, "--port-queues", name, &mut queues_set)?;
        let parsed = n.trim().parse::<i64>().unwrap_or(-1);
        ports[i].queues = queues_from_i64(name, parsed, n)?;
    }

    let mut fastpath_set = BTreeSet::new();
    for name in &cli.port_fastpath {
        let i = port_index(&index_by_name, "--port-fastpath", name, &mut fastpath_set)?;
        ports[i].fastpath = true;
    }

    for port in &ports {
        port.validate()?;
    }
    if !cfg!(feature = "dpdk") && (!dpdk_ports.is_empty() || cli.dpdk_eal.is_some()) {
        return Err(ConfigError::DpdkNotBuilt);
    }

    let pmd_sleep_max_us = match &cli.pmd_sleep_max {
        None => 0,
        Some(t) => match t.trim().parse::<u32>() {
            Ok(v) if v <= 10_000 => v,
            _ => {
                return Err(ConfigError::BadArgument {
                    option: "--pmd-sleep-max",
                    value: t.clone(),
                    expected: "microseconds, 0..=10000",
                })
            }
        },
    };
    let pmd_rxq_interval_secs = match &cli.pmd_rxq_interval {
        None => crate::rxq::DEFAULT_INTERVAL_SECS,
        Some(t) => match t.trim().parse::<u32>() {
            Ok(v) if crate::rxq::INTERVAL_SECS_RANGE.contains(&v) => v,
            _ => {
                return Err(ConfigError::BadArgument {
                    option: "--pmd-rxq-interval",
                    value: t.clone(),
                    expected: "seconds, 1..=3600",
                })
            }
        },
    };
    let hooks = cli.hooks.or(file.hooks);
    let fastpath_manifest = cli.fastpath_manifest.or(file.fastpath_manifest);
    if let Some(h) = &hooks {
        validate_socket_path(h, || "--hooks".to_owned())?;
        match &fastpath_manifest {
            None => return Err(ConfigError::HooksWithoutManifest),
            Some(m) if !m.is_file() => {
                return Err(ConfigError::ReadFile {
                    path: m.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the fast-path manifest does not exist or is not a file",
                    ),
                })
            }
            Some(_) => {}
        }
    }

    let metrics = cli
        .metrics
        .or(file.metrics)
        .map(|m| parse_metrics_addr(&m))
        .transpose()?;
    let ctl = cli.ctl.or(file.ctl);
    let mut owners: HashMap<PathBuf, String> = HashMap::new();
    if let Some(ctl) = &ctl {
        validate_socket_path(ctl, || "--ctl".to_owned())?;
        owners.insert(ctl.clone(), "the control socket".to_owned());
    }
    if let Some(h) = &hooks {
        if let Some(first) = owners.insert(h.clone(), "the hooks socket".to_owned()) {
            return Err(ConfigError::DuplicateSocketPath {
                path: h.clone(),
                first,
                second: "the hooks socket".to_owned(),
            });
        }
    }
    for port in &ports {
        let owner = format!("port `{}`", port.name);
        if let Some(first) = owners.insert(port.path.clone(), owner.clone()) {
            return Err(ConfigError::DuplicateSocketPath {
                path: port.path.clone(),
                first,
                second: owner,
            });
        }
    }

    let pmd_cores = match cli.pmd_cores.or(file.pmd_cores) {
        Some(list) => {
            let cores = parse_core_list(&list).map_err(|reason| ConfigError::BadCoreList {
                list: list.clone(),
                reason,
            })?;
            if let Some(&core) = cores.iter().find(|c| !available.contains(c)) {
                return Err(ConfigError::CoreNotAvailable {
                    list,
                    core,
                    available: format_core_list(available),
                });
            }
            cores
        }
        // The last core is the one least likely to carry the kernel's housekeeping and
        // interrupt load (those default to CPU 0), so the PMD's busy-polling hurts least there.
        None => vec![available.last().copied().unwrap_or(0)],
    };

    let mac_aging_secs = match (cli.mac_aging, file.mac_aging_secs) {
        (Some(text), _) => {
            let secs = text.trim().parse::<u32>().ok();
            match secs {
                Some(s) if MAC_AGING_RANGE.contains(&s) => s,
                _ => return Err(ConfigError::MacAgingOutOfRange { value: text }),
            }
        }
        (None, Some(n)) => match u32::try_from(n) {
            Ok(s) if MAC_AGING_RANGE.contains(&s) => s,
            _ => {
                return Err(ConfigError::MacAgingOutOfRange {
                    value: n.to_string(),
                })
            }
        },
        (None, None) => DEFAULT_MAC_AGING_SECS,
    };

    let log = cli.log.or(file.log);
    if let Some(filter) = &log {
        validate_log_filter(filter)?;
    }

    let dpdk_eal = cli
        .dpdk_eal
        .or(file.dpdk_eal)
        .map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    if let Some(a) = &dpdk_eal {
        if a.is_empty() {
            return Err(ConfigError::BadArgument {
                option: "--dpdk-eal",
                value: String::new(),
                expected: "EAL arguments such as `-l 0 --in-memory --no-huge -m 512`",
            });
        }
    }

    Ok(Config {
        ports,
        pmd_cores,
        ctl,
        metrics,
        mac_aging_secs,
        log,
        config_file,
        pmd_sleep_max_us,
        pmd_rxq_interval_secs,
        hooks,
        fastpath_manifest,
        fastpath_unscanned: None,
        dpdk_eal,
        dpdk_ports,
        vxlan,
        evpn_mac_limit,
        evpn_hold_secs,
    })
}

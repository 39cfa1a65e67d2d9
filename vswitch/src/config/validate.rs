//! Checks of single values (names, socket paths, VLANs, queue counts, MTUs, devargs, tunnel
//! specs, log filters), each turning a bad value into the [`ConfigError`] that names it.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::ConfigError;
use super::spec::{
    VxlanSpec, DPDK_MTU_RANGE, MAX_PORT_NAME_LEN, MAX_QUEUE_PAIRS, MAX_SOCKET_PATH_LEN,
    MAX_TUNNELS_PER_UPLINK, VLAN_RANGE,
};

pub(super) fn mtu_from_i64(port: &str, m: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(m) {
        Ok(m) if DPDK_MTU_RANGE.contains(&m) => Ok(m),
        _ => Err(ConfigError::BadArgument {
            option: "--dpdk-mtu",
            value: format!("{port}={text}"),
            expected: "an IP MTU in 1280..=9000",
        }),
    }
}

/// DPDK device arguments: not empty, no whitespace (they are one argument to the EAL).
pub(super) fn validate_devargs(devargs: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| {
        Err(ConfigError::BadDpdkPort {
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if devargs.trim().is_empty() {
        return bad("the device arguments are empty");
    }
    if devargs.chars().any(|c| c.is_whitespace() || c == '\0') {
        return bad("the device arguments contain whitespace");
    }
    Ok(())
}

/// Whether DPDK device arguments name a PCI device (`0000:01:00.0` or `01:00.0`).
pub fn is_pci_devargs(devargs: &str) -> bool {
    let name = devargs.split(',').next().unwrap_or("");
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = name.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    matches!(devfn.split_once('.'), Some((d, f)) if hex(bus, 2) && hex(d, 2) && hex(f, 1))
}

/// Parses `NAME=LOCAL_IP[,REMOTE_IP...],VNI,UPLINK` (no remote: EVPN gives them, which the
/// merge step checks).
pub fn parse_vxlan(value: &str) -> Result<VxlanSpec, ConfigError> {
    let bad = |reason: String| ConfigError::BadVxlan {
        value: value.to_owned(),
        reason,
    };
    let (name, rest) = value
        .split_once('=')
        .ok_or_else(|| bad("no `=` after the port name".to_owned()))?;
    let fields: Vec<&str> = rest.split(',').map(str::trim).collect();
    if fields.len() < 3 {
        return Err(bad(format!(
            "{} field(s) after `=`; at least 3 are needed (4 with a remote VTEP)",
            fields.len()
        )));
    }
    let ip = |what: &str, s: &str| -> Result<Ipv4Addr, ConfigError> {
        let a: Ipv4Addr = s
            .parse()
            .map_err(|_| bad(format!("{what} `{s}` is not an IPv4 address")))?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(bad(format!("{what} `{s}` is not a unicast host address")));
        }
        Ok(a)
    };
    let n = fields.len();
    let local = ip("local address", fields[0])?;
    let mut remotes = Vec::new();
    for s in &fields[1..n - 2] {
        let r = ip("remote address", s)?;
        if r == local {
            return Err(bad(format!("remote `{s}` is the local address")));
        }
        if remotes.contains(&r) {
            return Err(bad(format!("remote `{s}` is listed twice")));
        }
        remotes.push(r);
    }
    if remotes.len() > crate::vxlan::MAX_REMOTES {
        return Err(bad(format!(
            "{} remotes; at most {} per tunnel",
            remotes.len(),
            crate::vxlan::MAX_REMOTES
        )));
    }
    let vni = fields[n - 2]
        .parse::<u32>()
        .ok()
        .filter(|v| *v <= crate::wire::MAX_VNI)
        .ok_or_else(|| {
            bad(format!(
                "VNI `{}` is not a number in 0..=16777215",
                fields[n - 2]
            ))
        })?;
    let uplink = fields[n - 1];
    if uplink.is_empty() {
        return Err(bad("the uplink name is empty".to_owned()));
    }
    Ok(VxlanSpec {
        name: name.to_owned(),
        local,
        remotes,
        vni,
        uplink: uplink.to_owned(),
        vlan: None,
        evpn: false,
    })
}

/// Checks across tunnels: each runs over a configured DPDK port, no two on one uplink share
/// local address and VNI, and an uplink carries at most [`MAX_TUNNELS_PER_UPLINK`].
pub(super) fn validate_tunnels(
    vxlan: &[VxlanSpec],
    dpdk_by_name: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    for (i, v) in vxlan.iter().enumerate() {
        let value = || format!("{}=...,{},{}", v.name, v.vni, v.uplink);
        if v.remotes.is_empty() && !v.evpn {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason:
                    "no remote VTEP: list at least one, or give --evpn to learn them from BGP EVPN"
                        .to_owned(),
            });
        }
        if v.evpn {
            if let Some(o) = vxlan[..i].iter().find(|o| o.evpn && o.vni == v.vni) {
                return Err(ConfigError::BadVxlan {
                    value: value(),
                    reason: format!(
                        "tunnel `{}` already runs EVPN for VNI {} (the kernel mirror is one per VNI)",
                        o.name, v.vni
                    ),
                });
            }
        }
        if !dpdk_by_name.contains_key(&v.uplink) {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!("uplink `{}` is not a --dpdk-port", v.uplink),
            });
        }
        if let Some(o) = vxlan[..i]
            .iter()
            .find(|o| o.uplink == v.uplink && o.vni == v.vni && o.local == v.local)
        {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!(
                    "tunnel `{}` already carries VNI {} from {} over `{}`",
                    o.name, v.vni, v.local, v.uplink
                ),
            });
        }
        if vxlan.iter().filter(|o| o.uplink == v.uplink).count() > MAX_TUNNELS_PER_UPLINK {
            return Err(ConfigError::BadVxlan {
                value: value(),
                reason: format!(
                    "more than {MAX_TUNNELS_PER_UPLINK} tunnels over `{}`",
                    v.uplink
                ),
            });
        }
    }
    Ok(())
}

pub(super) fn split_assignment<'a>(
    option: &'static str,
    value: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), ConfigError> {
    match value.split_once('=') {
        Some((name, rest)) if !rest.is_empty() => Ok((name, rest)),
        _ => Err(ConfigError::BadArgument {
            option,
            value: value.to_owned(),
            expected,
        }),
    }
}

pub(super) fn port_index(
    index_by_name: &HashMap<String, usize>,
    option: &'static str,
    name: &str,
    seen: &mut BTreeSet<String>,
) -> Result<usize, ConfigError> {
    let Some(&i) = index_by_name.get(name) else {
        return Err(ConfigError::UnknownPort {
            option,
            name: name.to_owned(),
        });
    };
    if !seen.insert(name.to_owned()) {
        return Err(ConfigError::DuplicatePortSetting {
            option,
            name: name.to_owned(),
        });
    }
    Ok(i)
}

pub(super) fn vlan_from_i64(port: &str, v: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(v) {
        Ok(v) if VLAN_RANGE.contains(&v) => Ok(v),
        _ => Err(ConfigError::VlanOutOfRange {
            port: port.to_owned(),
            value: text.to_owned(),
        }),
    }
}

pub(super) fn queues_from_i64(port: &str, q: i64, text: &str) -> Result<u16, ConfigError> {
    match u16::try_from(q) {
        Ok(q) if (1..=MAX_QUEUE_PAIRS).contains(&q) => Ok(q),
        _ => Err(ConfigError::QueuesOutOfRange {
            port: port.to_owned(),
            value: text.to_owned(),
        }),
    }
}

/// Port names: 1 to 32 of `A-Z a-z 0-9 _ -`, starting with a letter or digit, so they are
/// safe in tables, log lines, JSON keys and shell command lines without quoting.
pub fn validate_port_name(name: &str) -> Result<(), ConfigError> {
    let bad = |reason| {
        Err(ConfigError::BadPortName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_PORT_NAME_LEN {
        return bad("it is too long");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it does not start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("it contains a character other than A-Z a-z 0-9 _ -");
    }
    Ok(())
}

pub(super) fn validate_socket_path(
    path: &Path,
    owner: impl Fn() -> String,
) -> Result<(), ConfigError> {
    let bytes = path.as_os_str().as_bytes();
    let reason = if bytes.is_empty() {
        "it is empty".to_owned()
    } else if bytes.contains(&0) {
        "it contains a NUL byte".to_owned()
    } else if bytes.len() > MAX_SOCKET_PATH_LEN {
        format!(
            "it is {} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH_LEN}",
            bytes.len()
        )
    } else if bytes.ends_with(b"/") {
        "it names a directory; give the socket file's path".to_owned()
    } else {
        return Ok(());
    };
    Err(ConfigError::BadSocketPath {
        owner: owner(),
        path: path.to_owned(),
        reason,
    })
}

pub(super) fn validate_log_filter(filter: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |reason: String| {
        Err(ConfigError::BadLogFilter {
            value: filter.to_owned(),
            reason,
        })
    };
    if filter.trim().is_empty() {
        return bad("it is empty".to_owned());
    }
    for directive in filter.split(',') {
        let directive = directive.trim();
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if let Some(target) = target {
            if target.is_empty()
                || !target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
            {
                return bad(format!("`{target}` is not a module path"));
            }
        }
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return bad(format!("`{level}` is not a level"));
        }
    }
    Ok(())
}

/// `--metrics`: `PORT` (loopback only, the safe default for counters that describe tenants'
/// traffic) or `ADDR:PORT` (`0.0.0.0:9101`, `[::1]:9101`).
pub(super) fn parse_metrics_addr(value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::BadArgument {
        option: "--metrics",
        value: value.to_owned(),
        expected: "[ADDR:]PORT with a port in 1..=65535, e.g. 9101 (loopback) or 0.0.0.0:9101",
    };
    let v = value.trim();
    let addr = match v.parse::<u16>() {
        Ok(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Err(_) => v.parse::<SocketAddr>().map_err(|_| bad())?,
    };
    if addr.port() == 0 {
        return Err(bad());
    }
    Ok(addr)
}

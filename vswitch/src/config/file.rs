//! The TOML config file's shape and its parsing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ConfigError;
use super::spec::PortMode;

/// The file's shape. Numbers are read as i64 so that an out-of-range value gets our
/// message ("expected 1..=4094") rather than the TOML parser's integer-overflow one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) port: Vec<FilePort>,
    pub(super) pmd_cores: Option<String>,
    pub(super) ctl: Option<PathBuf>,
    pub(super) metrics: Option<String>,
    pub(super) mac_aging_secs: Option<i64>,
    pub(super) evpn_mac_limit: Option<i64>,
    pub(super) evpn_hold_secs: Option<i64>,
    pub(super) log: Option<String>,
    pub(super) hooks: Option<PathBuf>,
    pub(super) fastpath_manifest: Option<PathBuf>,
    pub(super) dpdk_eal: Option<String>,
    #[serde(default)]
    pub(super) dpdk_port: Vec<FileDpdkPort>,
    #[serde(default)]
    pub(super) vxlan: Vec<FileVxlan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDpdkPort {
    pub(super) name: String,
    pub(super) devargs: String,
    pub(super) vlan: Option<i64>,
    pub(super) mtu: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileVxlan {
    pub(super) name: String,
    pub(super) local: String,
    #[serde(default)]
    pub(super) remotes: Vec<String>,
    pub(super) vni: i64,
    pub(super) uplink: String,
    pub(super) vlan: Option<i64>,
    pub(super) evpn: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePort {
    pub(super) name: String,
    pub(super) mode: PortMode,
    pub(super) path: PathBuf,
    pub(super) vlan: Option<i64>,
    pub(super) queues: Option<i64>,
    pub(super) fastpath: Option<bool>,
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Toml {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

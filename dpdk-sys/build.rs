//! Finds the system's DPDK with pkg-config, compiles the C shims against it and generates the
//! bindings with bindgen. Without libdpdk the crate builds empty (`AVAILABLE` is false) so that
//! `cargo build --workspace` needs no DPDK; only the `dpdk` feature of `vswitch` uses it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The DPDK major version the bindings are written for (Debian 12's libdpdk-dev).
const SUPPORTED: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rustc-check-cfg=cfg(dpdk_sys_stub)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    let lib = match pkg_config::Config::new()
        .atleast_version(SUPPORTED)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            println!(
                "cargo:warning=dpdk-sys: libdpdk {SUPPORTED} not found by pkg-config ({}); \
                 building without DPDK (install libdpdk-dev for the vswitch `dpdk` feature)",
                e.to_string().lines().next().unwrap_or("")
            );
            println!("cargo:rustc-cfg=dpdk_sys_stub");
            std::fs::write(out.join("bindings.rs"), "").expect("write stub bindings");
            return;
        }
    };
    if !lib.version.starts_with(SUPPORTED) {
        println!(
            "cargo:warning=dpdk-sys: found DPDK {}, written for {SUPPORTED}; struct layouts may differ",
            lib.version
        );
    }

    // The full compiler flags (`-include rte_config.h`, `-march=...`): the headers need them and
    // the pkg-config crate keeps only -I and -D.
    let cflags = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let cflags: Vec<String> = cflags.split_whitespace().map(str::to_owned).collect();

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").include("shim").opt_level(3);
    for f in &cflags {
        cc.flag(f);
    }
    // DPDK's headers use GNU extensions and trip a few warnings we do not own.
    cc.flag_if_supported("-Wno-unused-parameter");
    cc.compile("nfv_dpdk_shim");
    // The ring PMD's own API (rte_eth_from_rings: an ethdev over rings we made, for crossover
    // pairs in tests and benchmarks) lives in the driver library, which libdpdk.pc does not
    // list for shared linking.
    println!("cargo:rustc-link-lib=rte_net_ring");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .allowlist_function("nfv_.*")
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_version")
        .allowlist_function("rte_eth_dev_is_valid_port")
        .allowlist_function("rte_eth_dev_get_name_by_port")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_dev_get_mtu")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_ring_create")
        .allowlist_function("rte_ring_free")
        .allowlist_function("rte_eth_from_rings")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .allowlist_var("RTE_ETH_LINK_.*")
        .allowlist_var("RTE_ETHER_.*")
        .allowlist_var("RTE_MBUF_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("dpdk-sys: bindgen failed on the DPDK headers");
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("dpdk-sys: writing bindings.rs");
}

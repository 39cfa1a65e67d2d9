//! `vswitch`: the switch daemon. Parses its configuration, starts the poll threads and the
//! ports, serves the control socket, and on SIGTERM or SIGINT disconnects every guest, stops,
//! and removes its sockets.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vswitch::config::{Config, ConfigError};
use vswitch::switch::Switch;
use vswitch::{ctl, metrics};

fn main() -> ExitCode {
    let cfg = match Config::from_args() {
        Ok(c) => c,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("vswitch: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cfg.log_filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("vswitch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing signal handler: {e}"))?;
    }
    let switch = Arc::new(Switch::start(cfg)?);
    tracing::info!(
        "vswitch {} starting: {} PMD thread(s) on cores {:?}",
        env!("CARGO_PKG_VERSION"),
        cfg.pmd_cores.len(),
        cfg.pmd_cores
    );
    for spec in &cfg.ports {
        if let Err(e) = switch.add_port(spec.clone()) {
            switch.shutdown();
            return Err(e);
        }
    }
    if let Err(e) = switch.add_configured_devices(cfg) {
        switch.shutdown();
        dpdk_cleanup();
        return Err(e);
    }
    let hooks_thread = match &cfg.hooks {
        Some(path) => {
            let listener = bind_socket(path, "hooks socket").inspect_err(|_| switch.shutdown())?;
            tracing::info!("fast-path hooks on {}", path.display());
            Some(switch.serve_hooks(listener)?)
        }
        None => None,
    };
    let metrics_server = match cfg.metrics {
        Some(addr) => match metrics::serve(addr, switch.clone()) {
            Ok(m) => {
                tracing::info!("metrics on http://{}/metrics", m.addr);
                Some(m)
            }
            Err(e) => {
                switch.shutdown();
                return Err(e);
            }
        },
        None => None,
    };
    let ctl_stop = Arc::new(AtomicBool::new(false));
    let ctl_thread = match &cfg.ctl {
        Some(path) => {
            let listener =
                bind_socket(path, "control socket").inspect_err(|_| switch.shutdown())?;
            tracing::info!("control socket {}", path.display());
            Some(ctl::serve(listener, switch.clone(), ctl_stop.clone()))
        }
        None => None,
    };
    while !stop.load(Ordering::Relaxed) {
        switch.housekeeping();
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping");
    if let Some(m) = metrics_server {
        m.stop();
    }
    ctl_stop.store(true, Ordering::Relaxed);
    if let Some(t) = ctl_thread {
        let _ = t.join();
    }
    if let Some(p) = &cfg.ctl {
        let _ = std::fs::remove_file(p);
    }
    switch.shutdown();
    if let Some(t) = hooks_thread {
        let _ = t.join();
    }
    if let Some(p) = &cfg.hooks {
        let _ = std::fs::remove_file(p);
    }
    drop(switch);
    dpdk_cleanup();
    tracing::info!("stopped");
    Ok(())
}

/// Releases the DPDK EAL once every port is closed (a no-op without DPDK).
fn dpdk_cleanup() {
    #[cfg(feature = "dpdk")]
    vswitch::dpdk::cleanup();
}

/// Binds a listening socket of the switch, replacing a stale one but never a live switch's.
fn bind_socket(
    path: &std::path::Path,
    what: &str,
) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a stale socket is ours to replace: never delete a file that is something else.
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{what} {} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{what} {} is in use by another process (another vswitch?)",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale {what} {}: {e}", path.display()))?;
    }
    UnixListener::bind(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

//! A port's vhost-user session: the thread that listens (server mode) or connects and
//! reconnects (client mode), and runs the device state machine for each connection.
//!
//! One thread per port, blocking on its own socket, rather than one epoll loop for all: a
//! frontend that stalls in the middle of a message then stalls only its own port, never the
//! negotiation of the others. The threads sleep in the kernel; they are not pollers.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor_hooks::authority::Authority;
use vhost_user::backend::{Backend, BackendConfig};
use vhost_user::connection::Connection;

use crate::config::PortMode;
use crate::ctl::PortState;
use crate::port::Port;

/// How often a sleeping session looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Client mode: pause between connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The control plane's handle on a port's session thread.
pub struct Session {
    stop: Arc<AtomicBool>,
    conn: Arc<Mutex<Option<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
    /// Server mode: the socket file we created, removed at stop.
    socket: Option<PathBuf>,
}

impl Session {
    /// Starts serving `port`. In server mode the socket is bound before this returns, so a bad
    /// path is reported to the caller, not just logged.
    pub fn start(port: Arc<Port>, hooks: Option<Authority>) -> Result<Session, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let conn: Arc<Mutex<Option<UnixStream>>> = Arc::default();
        let path = port.spec.path.clone();
        let (listener, socket) = match port.spec.mode {
            PortMode::Server => {
                let l = bind(&path).map_err(|e| {
                    format!(
                        "port {}: cannot listen on {}: {e}",
                        port.name(),
                        path.display()
                    )
                })?;
                (Some(l), Some(path.clone()))
            }
            PortMode::Client => (None, None),
        };
        let (st, cn) = (stop.clone(), conn.clone());
        let name = format!("vhost-{}", port.name());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || match listener {
                Some(l) => serve_listener(&port, l, &st, &cn, hooks.as_ref()),
                None => serve_client(&port, &st, &cn, hooks.as_ref()),
            })
            .map_err(|e| format!("port thread: {e}"))?;
        Ok(Session {
            stop,
            conn,
            thread: Some(thread),
            socket,
        })
    }

    /// Ends the session: closes the connection (the device state machine then stops every
    /// queue and unmaps the guest's memory), joins the thread, removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds a listening socket, replacing a stale socket file left by a dead process but never a
/// live one or a file that is not a socket.
fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn set_state(port: &Port, s: PortState) {
    port.status().state = Some(s);
}

fn serve_listener(
    port: &Arc<Port>,
    l: UnixListener,
    stop: &AtomicBool,
    conn: &Mutex<Option<UnixStream>>,
    hooks: Option<&Authority>,
) {
    set_state(port, PortState::Listening);
    tracing::info!(
        "port {}: listening on {}",
        port.name(),
        port.spec.path.display()
    );
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                if let Err(e) = s.set_nonblocking(false) {
                    tracing::warn!("port {}: {e}", port.name());
                    continue;
                }
                run_connection(port, s, stop, conn, hooks);
                if !stop.load(Ordering::Relaxed) {
                    set_state(port, PortState::Listening);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) => {
                tracing::warn!("port {}: accept: {e}", port.name());
                std::thread::sleep(TICK);
            }
        }
    }
}

fn serve_client(
    port: &Arc<Port>,
    stop: &AtomicBool,
    conn: &Mutex<Option<UnixStream>>,
    hooks: Option<&Authority>,
) {
    let mut logged = false;
    while !stop.load(Ordering::Relaxed) {
        set_state(port, PortState::Connecting);
        match UnixStream::connect(&port.spec.path) {
            Ok(s) => {
                logged = false;
                run_connection(port, s, stop, conn, hooks);
            }
            Err(e) => {
                if !logged {
                    tracing::info!(
                        "port {}: cannot reach {} ({e}); retrying every {} ms",
                        port.name(),
                        port.spec.path.display(),
                        RECONNECT_PAUSE.as_millis()
                    );
                    logged = true;
                }
                port.status().last_error = Some(format!("connect: {e}"));
            }
        }
        let mut waited = Duration::ZERO;
        while waited < RECONNECT_PAUSE && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            waited += TICK;
        }
    }
}

/// Serves one frontend connection to its end.
fn run_connection(
    port: &Arc<Port>,
    s: UnixStream,
    stop: &AtomicBool,
    conn: &Mutex<Option<UnixStream>>,
    hooks: Option<&Authority>,
) {
    match s.try_clone() {
        Ok(c) => *conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c),
        Err(e) => {
            tracing::warn!("port {}: {e}", port.name());
            return;
        }
    }
    // A stop that raced with the accept: do not start serving.
    if stop.load(Ordering::Relaxed) {
        return;
    }
    let cfg = BackendConfig {
        queue_pairs: port.spec.queues,
        mac: port.mac,
        mtu: 9000,
    };
    let mut backend = Backend::with_counters(
        cfg,
        port.slots.clone(),
        port.queue_counters.clone(),
        port.messages.clone(),
    );
    let p = port.clone();
    backend.on_rarp(Box::new(move |mac| {
        tracing::info!(
            "port {}: announcing {} after a migration (SEND_RARP)",
            p.name(),
            crate::fdb::format_mac(mac)
        );
        p.announce.post(mac);
    }));
    // The kernel's word on who is at the other end: the hooks grant fast-path channels only to
    // the process that is this port's frontend.
    let pid = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.pid())
        .ok();
    {
        let mut st = port.status();
        st.frontend_pid = pid;
        st.state = Some(PortState::Connected);
        st.device = Some(backend.info());
        st.connections += 1;
        st.last_error = None;
    }
    tracing::info!("port {}: frontend connected", port.name());
    let res = backend.serve(&mut Connection::new(s));
    drop(backend);
    *conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    port.status().frontend_pid = None;
    if let Some(h) = hooks {
        h.port_gone(port.name(), "its vhost-user frontend disconnected");
    }
    match res {
        Ok(()) => tracing::info!("port {}: frontend disconnected", port.name()),
        Err(e) => {
            tracing::warn!("port {}: connection closed: {e}", port.name());
            port.status().last_error = Some(e.to_string());
        }
    }
    set_state(port, PortState::Disconnected);
}

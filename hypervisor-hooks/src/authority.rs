//! The hooks authority: the server inside the switch that fast-path guests talk to.
//!
//! Per guest connection one thread reads messages (blocking on its own socket, so a slow guest
//! stalls nobody else). Opening a channel: find the peer by MAC among registered guests, check
//! policy (both ports allowed the fast path, same VLAN), verify the trampoline of the side that
//! will be granted a view, ask the other side to dedicate a queue in a region of its own, check
//! what it sends, record the grant, hand the region and doorbell to the user and tell the owner.
//! A guest that disconnects (from the hooks or from its vhost-user port) loses every channel, and
//! each counterpart is told to stop using it.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use vhost_user::mmap::Mapping;

use crate::error::{Error, Result};
use crate::proto::{
    doorbell, format_mac, parse_mac, GrantRange, GuestMsg, HooksMsg, Mode, QueueLayout, Trampoline,
    PROTOCOL_VERSION,
};
use crate::verify::{self, Manifest};
use crate::wire::Wire;

/// How long the owner has to dedicate a queue.
const DEDICATE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 << 20;

/// What the authority needs to know about a switch port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFacts {
    /// Forwarding domain (access VLAN, 0 for untagged).
    pub vlan: u16,
    /// The switch's configuration allows this port fast-path channels.
    pub fastpath: bool,
    /// Process id of the vhost-user frontend connected to the port, as the kernel reported it.
    pub frontend_pid: Option<i32>,
}

/// The switch, as the authority sees it.
pub trait Directory: Send + Sync {
    fn port(&self, name: &str) -> Option<PortFacts>;
}

/// A granted channel, as `vswitchctl` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: u64,
    pub mode: Mode,
    pub owner: String,
    pub user: String,
    pub notify: String,
    pub age: Duration,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub sender_drops: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    pub device_errors: u64,
}

struct Guest {
    conn: u64,
    mac: [u8; 6],
    pid: i32,
    trampoline: Trampoline,
    writer: Arc<Mutex<Wire>>,
    socket: UnixStream,
}

struct Channel {
    mode: Mode,
    owner: String,
    user: String,
    notify: String,
    created: Instant,
    /// The doorbell, mapped here to read the counters.
    doorbell: Mapping,
    /// The region, kept so the grant is on record with its file.
    _region: OwnedFd,
}

struct Dedication {
    layout: QueueLayout,
    grants: Vec<GrantRange>,
    doorbell_len: u64,
    fds: Vec<OwnedFd>,
}

#[derive(Default)]
struct State {
    guests: HashMap<String, Guest>,
    channels: HashMap<u64, Channel>,
    pending: HashMap<u64, SyncSender<std::result::Result<Dedication, String>>>,
}

struct Inner {
    dir: Arc<dyn Directory>,
    manifest: Manifest,
    state: Mutex<State>,
    next_id: AtomicU64,
    stop: AtomicBool,
}

/// The authority. Cheap to clone; all clones are the same authority.
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

impl Authority {
    pub fn new(dir: Arc<dyn Directory>, manifest: Manifest) -> Authority {
        Authority {
            inner: Arc::new(Inner {
                dir,
                manifest,
                state: Mutex::new(State::default()),
                next_id: AtomicU64::new(1),
                stop: AtomicBool::new(false),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Accepts guests on `listener` until [`Authority::stop`].
    pub fn serve(&self, listener: UnixListener) -> std::io::Result<JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("hooks".into())
            .spawn(move || {
                while !me.inner.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let a = me.clone();
                            let _ = std::thread::Builder::new()
                                .name("hooks-guest".into())
                                .spawn(move || a.run_guest(s));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => {
                            tracing::warn!("hooks accept: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
    }

    /// Stops accepting and disconnects every guest (their channels are revoked).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let names: Vec<String> = self.state().guests.keys().cloned().collect();
        for n in names {
            self.port_gone(&n, "the switch is stopping");
        }
    }

    /// The switch lost port `name` (its frontend disconnected or the port was deleted): every
    /// channel of the port is revoked and the guest's hooks connection closed.
    pub fn port_gone(&self, name: &str, reason: &str) {
        let guest = self.state().guests.remove(name);
        if let Some(g) = guest {
            let _ = g.socket.shutdown(std::net::Shutdown::Both);
            tracing::info!("fast path: port {name} left ({reason})");
        }
        self.revoke_port(name, reason);
    }

    fn revoke_port(&self, name: &str, reason: &str) {
        let ids: Vec<u64> = self
            .state()
            .channels
            .iter()
            .filter(|(_, c)| c.owner == name || c.user == name)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.revoke(id, reason);
        }
    }

    /// Revokes a channel: both sides are told to stop using it (the one that is gone will not
    /// hear it), and the record is dropped.
    pub fn revoke(&self, id: u64, reason: &str) {
        let (ch, writers) = {
            let mut st = self.state();
            let Some(ch) = st.channels.remove(&id) else {
                return;
            };
            let writers: Vec<_> = [&ch.owner, &ch.user]
                .iter()
                .filter_map(|n| st.guests.get(*n).map(|g| g.writer.clone()))
                .collect();
            (ch, writers)
        };
        for w in writers {
            let msg = HooksMsg::Revoke {
                channel: id,
                reason: reason.to_owned(),
            };
            let _ = lock(&w).send(&msg, &[]);
        }
        tracing::info!(
            "fast path: channel {id} ({} {} -> {}) revoked: {reason}",
            ch.mode,
            ch.owner,
            ch.user
        );
    }

    /// Every live channel with its counters.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let st = self.state();
        let mut v: Vec<ChannelInfo> = st
            .channels
            .iter()
            .map(|(id, c)| {
                let r = |off| c.doorbell.load_u64(off).unwrap_or(0);
                ChannelInfo {
                    id: *id,
                    mode: c.mode,
                    owner: c.owner.clone(),
                    user: c.user.clone(),
                    notify: c.notify.clone(),
                    age: c.created.elapsed(),
                    sent_packets: r(doorbell::SENT_PACKETS),
                    sent_bytes: r(doorbell::SENT_BYTES),
                    sender_drops: r(doorbell::SENDER_DROPS),
                    received_packets: r(doorbell::RECEIVED_PACKETS),
                    received_bytes: r(doorbell::RECEIVED_BYTES),
                    device_errors: r(doorbell::DEVICE_ERRORS),
                }
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    fn run_guest(&self, s: UnixStream) {
        let conn = self.next_id();
        let name = match self.hello(conn, &s) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("fast path: guest refused at hello: {e}");
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
        };
        let mut wire = match s.try_clone() {
            Ok(c) => Wire::new(c),
            Err(_) => return,
        };
        let _ = wire.socket().set_read_timeout(None);
        loop {
            let msg = match wire.recv::<GuestMsg>() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("fast path: port {name}: {e}; disconnecting it");
                    break;
                }
            };
            match msg {
                (
                    GuestMsg::Open {
                        request,
                        peer,
                        mode,
                        notify,
                    },
                    _,
                ) => {
                    let a = self.clone();
                    let n = name.clone();
                    // Opening waits for the peer; the reader must stay free to hear from this
                    // guest meanwhile (in zero-copy it is the one asked to dedicate).
                    let _ = std::thread::Builder::new()
                        .name("hooks-open".into())
                        .spawn(move || a.open(&n, request, &peer, mode, &notify));
                }
                (
                    GuestMsg::Dedicated {
                        request,
                        layout,
                        grants,
                        doorbell_len,
                    },
                    fds,
                ) => {
                    self.answer(
                        request,
                        Ok(Dedication {
                            layout,
                            grants,
                            doorbell_len,
                            fds,
                        }),
                    );
                }
                (GuestMsg::DedicateFailed { request, reason }, _) => {
                    self.answer(request, Err(reason));
                }
                (GuestMsg::Close { channel }, _) => {
                    let mine = self
                        .state()
                        .channels
                        .get(&channel)
                        .is_some_and(|c| c.owner == name || c.user == name);
                    if mine {
                        self.revoke(channel, &format!("closed by {name}"));
                    }
                }
                (GuestMsg::Hello { .. }, _) => {
                    tracing::warn!("fast path: port {name} said hello twice; disconnecting it");
                    break;
                }
            }
        }
        // Only this connection's registration: a newer one for the same port stays.
        let mine = self
            .state()
            .guests
            .get(&name)
            .is_some_and(|g| g.conn == conn);
        if mine {
            self.port_gone(&name, "its hooks connection closed");
        }
    }

    fn answer(&self, request: u64, r: std::result::Result<Dedication, String>) {
        if let Some(tx) = self.state().pending.remove(&request) {
            let _ = tx.send(r);
        }
    }

    /// Reads and checks the guest's hello; registers it.
    fn hello(&self, conn: u64, s: &UnixStream) -> Result<String> {
        s.set_read_timeout(Some(HELLO_TIMEOUT))?;
        let pid = getsockopt(s, PeerCredentials)
            .map_err(|e| Error::Protocol(format!("peer credentials: {e}")))?
            .pid();
        let mut wire = Wire::new(s.try_clone()?);
        let Some((msg, _fds)) = wire.recv::<GuestMsg>()? else {
            return Err(Error::Protocol("closed before hello".into()));
        };
        let GuestMsg::Hello {
            version,
            port,
            mac,
            trampoline,
            notify: _,
        } = msg
        else {
            return Err(Error::Protocol("first message is not hello".into()));
        };
        let mut refuse = |why: String| -> Result<String> {
            let _ = wire.send(
                &HooksMsg::Refused {
                    request: 0,
                    reason: why.clone(),
                },
                &[],
            );
            Err(Error::Refused(why))
        };
        if version != PROTOCOL_VERSION {
            return refuse(format!(
                "protocol version {version}; this switch speaks {PROTOCOL_VERSION}"
            ));
        }
        let Some(mac) = parse_mac(&mac) else {
            return refuse(format!("`{mac}` is not a MAC address"));
        };
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return refuse("a guest's MAC must be unicast".into());
        }
        let Some(facts) = self.inner.dir.port(&port) else {
            return refuse(format!("no port named `{port}`"));
        };
        if !facts.fastpath {
            return refuse(format!("port `{port}` is not allowed the fast path"));
        }
        if facts.frontend_pid != Some(pid) {
            return refuse(format!(
                "process {pid} is not the vhost-user frontend of port `{port}`"
            ));
        }
        {
            let mut st = self.state();
            if st.guests.values().any(|g| g.mac == mac) && !st.guests.contains_key(&port) {
                drop(st);
                return refuse(format!("MAC {} is already registered", format_mac(mac)));
            }
            let writer = Arc::new(Mutex::new(Wire::new(s.try_clone()?)));
            st.guests.insert(
                port.clone(),
                Guest {
                    conn,
                    mac,
                    pid,
                    trampoline,
                    writer,
                    socket: s.try_clone()?,
                },
            );
        }
        wire.send(
            &HooksMsg::Welcome {
                version: PROTOCOL_VERSION,
            },
            &[],
        )?;
        tracing::info!(
            "fast path: port {port} registered (pid {pid}, MAC {})",
            format_mac(mac)
        );
        Ok(port)
    }

    fn writer_of(&self, port: &str) -> Option<Arc<Mutex<Wire>>> {
        self.state().guests.get(port).map(|g| g.writer.clone())
    }

    /// Opens a channel for `requester`, answering it either way.
    fn open(&self, requester: &str, request: u64, peer: &str, mode: Mode, notify: &str) {
        match self.try_open(requester, request, peer, mode, notify) {
            Ok(id) => {
                tracing::info!("fast path: channel {id} open ({mode}, {requester} -> {peer})")
            }
            Err(e) => {
                tracing::info!("fast path: channel {requester} -> {peer} refused: {e}");
                if let Some(w) = self.writer_of(requester) {
                    let msg = HooksMsg::Refused {
                        request,
                        reason: e.to_string(),
                    };
                    let _ = lock(&w).send(&msg, &[]);
                }
            }
        }
    }

    fn try_open(
        &self,
        requester: &str,
        request: u64,
        peer_mac: &str,
        mode: Mode,
        notify: &str,
    ) -> Result<u64> {
        let mac = parse_mac(peer_mac)
            .ok_or_else(|| Error::Refused(format!("`{peer_mac}` is not a MAC address")))?;
        let (me, peer, my_tramp, peer_tramp, my_pid, peer_pid, my_mac) = {
            let st = self.state();
            let me = st
                .guests
                .get(requester)
                .ok_or_else(|| Error::Refused("not registered".into()))?;
            let (peer_name, peer) =
                st.guests
                    .iter()
                    .find(|(_, g)| g.mac == mac)
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "no fast-path guest with MAC {peer_mac} is registered"
                        ))
                    })?;
            (
                requester.to_owned(),
                peer_name.clone(),
                me.trampoline,
                peer.trampoline,
                me.pid,
                peer.pid,
                me.mac,
            )
        };
        if me == peer {
            return Err(Error::Refused("a channel to oneself".into()));
        }
        let (fa, fb) = (self.inner.dir.port(&me), self.inner.dir.port(&peer));
        let (Some(fa), Some(fb)) = (fa, fb) else {
            return Err(Error::Refused("a port of the channel is gone".into()));
        };
        if !(fa.fastpath && fb.fastpath) {
            return Err(Error::Refused(
                "both ports must be allowed the fast path".into(),
            ));
        }
        if fa.vlan != fb.vlan {
            return Err(Error::Refused(format!(
                "ports are in different VLANs ({} and {})",
                fa.vlan, fb.vlan
            )));
        }
        // The user is granted a view of the owner's region: its trampoline is what must be
        // trusted.
        let (owner, user, user_pid, user_tramp) = match mode {
            Mode::Copy => (peer.clone(), me.clone(), my_pid, my_tramp),
            Mode::ZeroCopy => (me.clone(), peer.clone(), peer_pid, peer_tramp),
        };
        let report = verify::verify(user_pid, user_tramp, &self.inner.manifest)?;
        tracing::debug!(
            "fast path: {user}'s trampoline verified ({} mappings, {} bytes, {} PKRU-changing instructions in system libraries, {} unintended byte patterns)",
            report.mappings,
            report.bytes,
            report.library_sites,
            report.unintended
        );
        let owner_peer_mac = if owner == me {
            peer_mac.to_owned()
        } else {
            format_mac(my_mac)
        };
        let user_peer_mac = if user == me {
            peer_mac.to_owned()
        } else {
            format_mac(my_mac)
        };
        // Ask the owner to dedicate a queue.
        let hid = self.next_id();
        let (tx, rx) = sync_channel(1);
        self.state().pending.insert(hid, tx);
        let owner_w = self
            .writer_of(&owner)
            .ok_or_else(|| Error::Refused("the owner is gone".into()))?;
        lock(&owner_w).send(
            &HooksMsg::Dedicate {
                request: hid,
                peer: owner_peer_mac.clone(),
                mode,
                notify: notify.to_owned(),
            },
            &[],
        )?;
        let ded = rx.recv_timeout(DEDICATE_TIMEOUT);
        self.state().pending.remove(&hid);
        let ded = match ded {
            Ok(Ok(d)) => d,
            Ok(Err(reason)) => {
                return Err(Error::Refused(format!(
                    "{owner} could not dedicate a queue: {reason}"
                )))
            }
            Err(_) => {
                return Err(Error::Refused(format!(
                    "{owner} did not dedicate a queue within {DEDICATE_TIMEOUT:?}"
                )))
            }
        };
        let (region, bell) = check_dedication(&ded, mode)?;
        let doorbell = Mapping::map_shared(&bell, usize::try_from(doorbell::LEN).unwrap_or(4096))
            .map_err(|e| Error::Refused(format!("mapping the doorbell: {e}")))?;
        let id = self.next_id();
        let user_w = self
            .writer_of(&user)
            .ok_or_else(|| Error::Refused("the user is gone".into()))?;
        lock(&user_w).send(
            &HooksMsg::Granted {
                request: if user == me { request } else { 0 },
                channel: id,
                peer: user_peer_mac,
                mode,
                notify: notify.to_owned(),
                layout: ded.layout,
                grants: ded.grants.clone(),
                doorbell_len: ded.doorbell_len,
            },
            &[region.as_raw_fd(), bell.as_raw_fd()],
        )?;
        lock(&owner_w).send(
            &HooksMsg::Opened {
                request: if owner == me { request } else { 0 },
                channel: id,
                peer: owner_peer_mac,
                mode,
                notify: notify.to_owned(),
            },
            &[],
        )?;
        self.state().channels.insert(
            id,
            Channel {
                mode,
                owner,
                user,
                notify: notify.to_owned(),
                created: Instant::now(),
                doorbell,
                _region: region,
            },
        );
        Ok(id)
    }
}

fn lock(w: &Mutex<Wire>) -> std::sync::MutexGuard<'_, Wire> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks what an owner dedicated: two descriptors (region, doorbell) whose files are as long
/// as claimed, page-aligned grants inside the region that give the user no more than its role
/// needs (copy: it writes buffers and the used ring; zero-copy: it writes only the used ring),
/// rings inside the region.
fn check_dedication(d: &Dedication, mode: Mode) -> Result<(OwnedFd, OwnedFd)> {
    let bad = |why: String| Err(Error::Refused(format!("dedicated queue refused: {why}")));
    if d.fds.len() != 2 {
        return bad(format!("{} descriptors attached, expected 2", d.fds.len()));
    }
    let size = |f: &OwnedFd| -> u64 {
        nix::sys::stat::fstat(f.as_fd())
            .map(|s| u64::try_from(s.st_size).unwrap_or(0))
            .unwrap_or(0)
    };
    let l = &d.layout;
    if size(&d.fds[0]) < l.region_len || l.region_len == 0 || !l.region_len.is_multiple_of(PAGE) {
        return bad("region file shorter than the layout says, or not whole pages".into());
    }
    if d.doorbell_len != doorbell::LEN || size(&d.fds[1]) < doorbell::LEN {
        return bad("doorbell is not one page".into());
    }
    if l.queue_size == 0 || !l.queue_size.is_power_of_two() || l.queue_size > 32768 {
        return bad(format!("queue size {}", l.queue_size));
    }
    if l.hdr_len != 10 && l.hdr_len != 12 {
        return bad(format!("virtio-net header length {}", l.hdr_len));
    }
    let inside = |uva: u64, len: u64| {
        uva.checked_sub(l.uva_base)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= l.region_len)
    };
    let n = u64::from(l.queue_size);
    if !(inside(l.desc, 16 * n) && inside(l.avail, 6 + 2 * n) && inside(l.used, 6 + 8 * n)) {
        return bad("rings outside the region".into());
    }
    for g in &d.grants {
        let end = g.offset.checked_add(g.len);
        if !g.offset.is_multiple_of(PAGE)
            || !g.len.is_multiple_of(PAGE)
            || g.len == 0
            || end.is_none_or(|e| e > l.region_len)
        {
            return bad(format!("grant {g:?} not whole pages inside the region"));
        }
    }
    // Zero-copy: the user reads frames in place and writes only the used ring: a writable grant
    // must hold the used ring, be no larger than the ring on the region's pages (2 MiB pages at
    // most), and leave the descriptors and avail ring read-only.
    if mode == Mode::ZeroCopy {
        let used_off = l.used - l.uva_base;
        let ring_span = (6 + 8 * n).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let (desc_off, avail_off) = (l.desc - l.uva_base, l.avail - l.uva_base);
        for g in d
            .grants
            .iter()
            .filter(|g| g.perm == crate::proto::Perm::ReadWrite)
        {
            let covers = |off: u64| (g.offset..g.offset + g.len).contains(&off);
            if !covers(used_off) || g.len > ring_span || covers(desc_off) || covers(avail_off) {
                return bad("a zero-copy user may write only the used ring".into());
            }
        }
    }
    let mut fds = d.fds.iter();
    let dup = |f: Option<&OwnedFd>| -> Result<OwnedFd> {
        f.ok_or_else(|| Error::Refused("missing descriptor".into()))?
            .try_clone()
            .map_err(Error::Io)
    };
    Ok((dup(fds.next())?, dup(fds.next())?))
}

//! The guest's connection to the hooks authority. A background thread reads what the hooks say:
//! requests to dedicate a queue are answered there at once (allocating the region and
//! doorbell), everything else becomes an [`Event`] the data path picks up between bursts, so the
//! data path never blocks on the hooks.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor_hooks::proto::{
    format_mac, GrantRange, GuestMsg, HooksMsg, Mode, QueueLayout, Trampoline, PROTOCOL_VERSION,
};
use hypervisor_hooks::wire::Wire;

use crate::error::{Error, Result};
use crate::owner::Dedicated;

/// What the data path learns from the hooks.
pub enum Event {
    /// We are the user of a new channel: map the region through a view.
    Granted {
        request: u64,
        channel: u64,
        peer: [u8; 6],
        mode: Mode,
        notify: String,
        layout: QueueLayout,
        grants: Vec<GrantRange>,
        region: OwnedFd,
        doorbell: OwnedFd,
    },
    /// We are the owner of a new channel: the queue we dedicated is live.
    Opened {
        request: u64,
        channel: u64,
        peer: [u8; 6],
        mode: Mode,
        notify: String,
        dedicated: Box<Dedicated>,
    },
    /// An `Open` of ours was refused.
    Refused { request: u64, reason: String },
    /// Stop using a channel.
    Revoked { channel: u64, reason: String },
    /// The hooks connection is gone: every channel with it.
    Disconnected,
}

/// How dedicated queues are sized.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    pub size: u16,
    pub buf_size: u32,
    pub hdr_len: usize,
}

/// A connection to the hooks.
pub struct HooksClient {
    writer: Mutex<Wire>,
    events: Receiver<Event>,
    next_request: u64,
    reader: Option<JoinHandle<()>>,
    socket: UnixStream,
}

impl HooksClient {
    /// Connects, says hello as port `port` with `mac`, and waits for the welcome.
    pub fn connect(
        path: &Path,
        port: &str,
        mac: [u8; 6],
        trampoline: Trampoline,
        spec: QueueSpec,
    ) -> Result<HooksClient> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut wire = Wire::new(s.try_clone()?);
        wire.send(
            &GuestMsg::Hello {
                version: PROTOCOL_VERSION,
                port: port.to_owned(),
                mac: format_mac(mac),
                trampoline,
                notify: notify_names(),
            },
            &[],
        )?;
        match wire.recv::<HooksMsg>()? {
            Some((HooksMsg::Welcome { .. }, _)) => {}
            Some((HooksMsg::Refused { reason, .. }, _)) => {
                return Err(Error::Channel(format!("the hooks refused us: {reason}")))
            }
            Some(_) => {
                return Err(Error::Channel(
                    "unexpected first message from the hooks".into(),
                ))
            }
            None => return Err(Error::Channel("the hooks closed the connection".into())),
        }
        s.set_read_timeout(None)?;
        let (tx, rx) = channel();
        let writer = Wire::new(s.try_clone()?);
        let reply = Arc::new(Mutex::new(Wire::new(s.try_clone()?)));
        let name = port.to_owned();
        let reader = std::thread::Builder::new()
            .name("hooks-client".into())
            .spawn(move || read_loop(wire, reply, tx, spec, &name))?;
        Ok(HooksClient {
            writer: Mutex::new(writer),
            events: rx,
            next_request: 1,
            reader: Some(reader),
            socket: s,
        })
    }

    /// Asks for a channel to `peer`; the answer comes as an event with the returned request id.
    pub fn open(&mut self, peer: [u8; 6], mode: Mode, notify: &str) -> Result<u64> {
        let request = self.next_request;
        self.next_request += 1;
        self.send(&GuestMsg::Open {
            request,
            peer: format_mac(peer),
            mode,
            notify: notify.to_owned(),
        })?;
        Ok(request)
    }

    /// Tells the hooks we stop using a channel.
    pub fn close(&self, channel: u64) -> Result<()> {
        self.send(&GuestMsg::Close { channel })
    }

    fn send(&self, m: &GuestMsg) -> Result<()> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(m, &[])?;
        Ok(())
    }

    /// The next event, if any (never blocks).
    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Waits up to `t` for the next event.
    pub fn wait_event(&self, t: Duration) -> Option<Event> {
        self.events.recv_timeout(t).ok()
    }
}

impl Drop for HooksClient {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

fn notify_names() -> Vec<String> {
    notify::Strategy::available()
        .into_iter()
        .map(|s| s.name().to_owned())
        .collect()
}

fn mac_of(s: &str) -> [u8; 6] {
    hypervisor_hooks::proto::parse_mac(s).unwrap_or([0; 6])
}

fn read_loop(
    mut wire: Wire,
    reply: Arc<Mutex<Wire>>,
    tx: Sender<Event>,
    spec: QueueSpec,
    name: &str,
) {
    // Queues dedicated and waiting for the hooks to say the channel is open.
    let mut dedicated: HashMap<u64, Box<Dedicated>> = HashMap::new();
    let mut pending_by_peer: HashMap<String, u64> = HashMap::new();
    let mut serial = 0u64;
    loop {
        let msg = match wire.recv::<HooksMsg>() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("hooks connection: {e}");
                break;
            }
        };
        let event = match msg {
            (
                HooksMsg::Dedicate {
                    request,
                    peer,
                    mode,
                    notify: _,
                },
                _,
            ) => {
                serial += 1;
                let answer = Dedicated::new(
                    &format!("fp-{name}-{serial}"),
                    mode,
                    spec.size,
                    spec.buf_size,
                    spec.hdr_len,
                );
                let mut w = reply.lock().unwrap_or_else(|p| p.into_inner());
                match answer {
                    Ok(d) => {
                        let fds = [d.region_fd().as_raw_fd(), d.doorbell.fd().as_raw_fd()];
                        let sent = w.send(
                            &GuestMsg::Dedicated {
                                request,
                                layout: d.layout,
                                grants: d.grants.clone(),
                                doorbell_len: hypervisor_hooks::proto::doorbell::LEN,
                            },
                            &fds,
                        );
                        if sent.is_ok() {
                            pending_by_peer.insert(peer, request);
                            dedicated.insert(request, Box::new(d));
                        }
                    }
                    Err(e) => {
                        let _ = w.send(
                            &GuestMsg::DedicateFailed {
                                request,
                                reason: e.to_string(),
                            },
                            &[],
                        );
                    }
                }
                continue;
            }
            (
                HooksMsg::Opened {
                    request,
                    channel,
                    peer,
                    mode,
                    notify,
                },
                _,
            ) => {
                let Some(hid) = pending_by_peer.remove(&peer) else {
                    continue;
                };
                let Some(d) = dedicated.remove(&hid) else {
                    continue;
                };
                Event::Opened {
                    request,
                    channel,
                    peer: mac_of(&peer),
                    mode,
                    notify,
                    dedicated: d,
                }
            }
            (
                HooksMsg::Granted {
                    request,
                    channel,
                    peer,
                    mode,
                    notify,
                    layout,
                    grants,
                    doorbell_len: _,
                },
                mut fds,
            ) => {
                if fds.len() != 2 {
                    tracing::warn!("hooks granted channel {channel} without its two descriptors");
                    continue;
                }
                let doorbell = fds.pop();
                let region = fds.pop();
                let (Some(region), Some(doorbell)) = (region, doorbell) else {
                    continue;
                };
                Event::Granted {
                    request,
                    channel,
                    peer: mac_of(&peer),
                    mode,
                    notify,
                    layout,
                    grants,
                    region,
                    doorbell,
                }
            }
            (HooksMsg::Refused { request, reason }, _) => Event::Refused { request, reason },
            (HooksMsg::Revoke { channel, reason }, _) => Event::Revoked { channel, reason },
            (HooksMsg::Welcome { .. }, _) => continue,
        };
        if tx.send(event).is_err() {
            break;
        }
    }
    let _ = tx.send(Event::Disconnected);
}

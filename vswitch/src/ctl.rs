//! The control socket: its protocol, the server the switch runs, and the client
//! `vswitchctl` uses.
//!
//! Protocol: one JSON object per line over a unix stream socket. A request is
//! `{"cmd":"show"|"stats"|"fdb"|"pmd-stats"|"add-port"|"del-port", ...args}`; each request
//! line gets exactly one response line, `{"ok":true,"data":...}` or
//! `{"ok":false,"error":"message"}`. Requests are bounded in size, connections in number and
//! idleness; whatever a client sends, the server answers or closes that one connection, and
//! keeps serving the others.
//!
//! The switch's side is the [`CtlHandler`] trait; this module owns only the transport, the
//! parsing and the reply types.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{PortMode, PortSpec};
use crate::fdb::{FdbCounters, FdbEntry};
pub use crate::netdev::LinkInfo;

/// Longest request line the server reads (newline excluded). Requests are small; the bound
/// keeps one client from making the switch buffer without limit.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The commands, for error messages.
pub const COMMANDS: &str = "show, stats, fdb, pmd-stats, channels, add-port, del-port";

/// A request, as the client sends it. The server parses by hand (see [`dispatch`]) to give
/// precise messages, but accepts exactly what this serializes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Show,
    Stats,
    Fdb,
    PmdStats,
    Channels,
    AddPort(PortSpec),
    DelPort { name: String },
}

/// The life of a port's vhost-user connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// Server mode, no frontend connected.
    Listening,
    /// Client mode, trying to reach the frontend's socket.
    Connecting,
    /// Connected, negotiation not finished (no ring started).
    Connected,
    /// At least one queue pair is started and polled.
    Running,
    /// The frontend went away (client mode: a reconnect is pending).
    Disconnected,
}

impl std::fmt::Display for PortState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortState::Listening => "listening",
            PortState::Connecting => "connecting",
            PortState::Connected => "connected",
            PortState::Running => "running",
            PortState::Disconnected => "disconnected",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Virtqueue index: even = the guest's receive queue, odd = its transmit queue.
    pub index: u16,
    pub enabled: bool,
    pub started: bool,
    /// Ring size (SET_VRING_NUM); 0 before it is set.
    pub size: u16,
    /// The PMD polling it (transmit queues) or `None`.
    pub pmd: Option<usize>,
    /// Why the queue could not start (a ring outside guest memory, ...), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    pub mode: PortMode,
    pub path: PathBuf,
    pub vlan: Option<u16>,
    pub state: PortState,
    /// Negotiated virtio features (the frontend's SET_FEATURES).
    pub features: u64,
    pub features_names: Vec<String>,
    pub protocol_features: u64,
    pub queue_pairs: u16,
    pub queues: Vec<QueueInfo>,
    pub mtu: Option<u16>,
    pub mac: Option<String>,
}

/// An uplink's device and link, as `show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkInfo {
    /// What the device was opened with (DPDK devargs).
    pub devargs: String,
    /// `dpdk <driver>` or `pipe`.
    pub driver: String,
    /// `bridged` (a member of the switch) or `underlay` (carries VXLAN tunnels only).
    pub role: String,
    pub mac: String,
    /// IP MTU of the device.
    pub mtu: usize,
    pub link: LinkInfo,
    /// The poll thread receiving from it.
    pub rx_pmd: usize,
    /// The device's own counters (DPDK: ethdev statistics, free mbufs).
    pub device_counters: BTreeMap<String, u64>,
}

/// A remote VTEP of a tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteVtepInfo {
    pub ip: String,
    /// Its (next hop's) MAC address once learned; `None`: unresolved (ARP pending).
    pub mac: Option<String>,
}

/// A VXLAN tunnel port, as `show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    pub vni: u32,
    pub local: String,
    pub uplink: String,
    pub remotes: Vec<RemoteVtepInfo>,
    /// Largest inner frame (Ethernet header included) the uplink's MTU lets through.
    pub max_inner_frame: usize,
    /// Inner MACs learned behind the remotes.
    pub learned_macs: usize,
}

/// A port that is not a vhost-user port: a DPDK uplink or a VXLAN tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// `uplink` or `vxlan`.
    pub kind: String,
    pub vlan: Option<u16>,
    #[serde(default)]
    pub uplink: Option<UplinkInfo>,
    #[serde(default)]
    pub tunnel: Option<TunnelInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReply {
    pub ports: Vec<PortInfo>,
    /// Uplinks and tunnels.
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
}

/// Counters from the switch's point of view: `rx` is what the switch received from the
/// port (the guest's transmit), `tx` what it delivered to the port (the guest's receive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped, by reason; each dropped frame is counted once.
    pub drops: BTreeMap<String, u64>,
    /// The rings' own refusals by reason (`rx_`: the guest's transmit queues, `tx_`: its
    /// receive queues), the detail behind some of the drops.
    #[serde(default)]
    pub ring_errors: BTreeMap<String, u64>,
    /// vhost-user messages: `requests` served, `refused` (answered with a failure or closed),
    /// `unknown` (request codes this switch does not know).
    #[serde(default)]
    pub control: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub ports: Vec<PortStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbReply {
    pub entries: Vec<FdbEntry>,
    /// Port number to name, so that `vswitchctl fdb` can print names; may be empty.
    #[serde(default)]
    pub port_names: BTreeMap<u16, String>,
    #[serde(default)]
    pub counters: FdbCounters,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PmdStats {
    pub id: usize,
    pub core: Option<usize>,
    pub packets: u64,
    /// TSC cycles spent in iterations that moved at least one packet.
    pub busy_cycles: u64,
    /// TSC cycles spent in iterations that found nothing to do.
    pub idle_cycles: u64,
    /// (busy + idle) / packets, as Open vSwitch's "avg cycles per packet".
    pub cycles_per_packet: f64,
    pub iterations: u64,
    /// `port/queue` names this PMD polls.
    pub rx_queues: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PmdStatsReply {
    pub pmds: Vec<PmdStats>,
    /// TSC frequency, if the switch measured it: lets a reader turn cycles into time.
    pub tsc_hz: Option<u64>,
}

/// One fast-path channel: who owns the dedicated queue, who uses it through a view, and the
/// counters the two guests keep in the channel's doorbell page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub id: u64,
    /// `copy` or `zero-copy`.
    pub mode: String,
    /// Port that dedicated the queue (copy: the receiver; zero-copy: the sender).
    pub owner: String,
    /// Port granted a view of it.
    pub user: String,
    pub notify: String,
    pub age_secs: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub sender_drops: u64,
    pub received_packets: u64,
    pub received_bytes: u64,
    pub device_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsReply {
    /// False when the switch runs without `--hooks`.
    pub enabled: bool,
    pub channels: Vec<ChannelStats>,
}

/// What the switch provides to the control socket. Called from the control socket's
/// connection threads, never from a PMD.
pub trait CtlHandler: Send + Sync {
    fn show(&self) -> ShowReply;
    fn stats(&self) -> StatsReply;
    fn fdb(&self) -> FdbReply;
    fn pmd_stats(&self) -> PmdStatsReply;
    /// Fast-path channels granted by the hooks, with their counters.
    fn channels(&self) -> ChannelsReply {
        ChannelsReply::default()
    }
    /// `spec` has passed [`PortSpec::validate`]; the handler checks it against live ports.
    fn add_port(&self, spec: PortSpec) -> Result<(), String>;
    fn del_port(&self, name: &str) -> Result<(), String>;
}

/// Server limits; [`serve`] uses the defaults.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_request_bytes: usize,
    /// A connection with no byte received for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this are told so and closed.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_request_bytes: MAX_REQUEST_BYTES,
            idle_timeout: Duration::from_secs(60),
            max_connections: 16,
        }
    }
}

/// How often blocked accepts and reads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A client that stops reading its responses cannot hold a connection thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the control protocol on `listener` in a new thread until `stop` is set; the
/// thread then waits for its connection threads and ends. The socket file is the caller's
/// to remove. Panics only if the OS refuses to create the thread (at start-up, not per request).
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn CtlHandler>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    serve_with(listener, handler, stop, ServeOptions::default())
}

/// [`serve`] with explicit limits.
pub fn serve_with(
    listener: UnixListener,
    handler: Arc<dyn CtlHandler>,
    stop: Arc<AtomicBool>,
    options: ServeOptions,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("vswitch-ctl".to_owned())
        .spawn(move || accept_loop(&listener, &handler, &stop, &options))
        .expect("spawning the control socket thread")
}

fn accept_loop(
    listener: &UnixListener,
    handler: &Arc<dyn CtlHandler>,
    stop: &Arc<AtomicBool>,
    options: &ServeOptions,
) {
    // Non-blocking so the loop can notice `stop` without someone connecting to wake it.
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("control socket: cannot make the listener non-blocking: {e}");
        return;
    }
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                connections.retain(|c| !c.is_finished());
                if connections.len() >= options.max_connections {
                    tracing::warn!(
                        "control socket: refusing a connection, {} already open",
                        connections.len()
                    );
                    let mut stream = stream;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(POLL));
                    let _ = stream.write_all(
                        error_line("too many control connections open; retry later").as_bytes(),
                    );
                    continue;
                }
                let (handler, stop, options) = (handler.clone(), stop.clone(), options.clone());
                let spawned = std::thread::Builder::new()
                    .name("vswitch-ctl-conn".to_owned())
                    .spawn(move || {
                        if let Err(e) = connection(stream, &*handler, &stop, &options) {
                            tracing::debug!("control connection ended: {e}");
                        }
                    });
                match spawned {
                    Ok(c) => connections.push(c),
                    Err(e) => tracing::warn!("control socket: cannot spawn a thread: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: wait instead of spinning on the error.
                tracing::warn!("control socket: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// What reading one request line produced.
enum Event {
    Line(Vec<u8>),
    TooLong,
    Closed,
}

/// Reads up to the next newline, holding at most `max` bytes; the rest of an oversized line
/// is discarded as it arrives so that the next line is read normally.
fn read_request(
    reader: &mut BufReader<UnixStream>,
    max: usize,
    stop: &AtomicBool,
    idle_timeout: Duration,
) -> io::Result<Event> {
    let mut line = Vec::new();
    let mut discarding = false;
    let mut last_byte = Instant::now();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) || last_byte.elapsed() >= idle_timeout {
                    return Ok(Event::Closed);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            // A last request without its newline still counts (`printf '...' | socat`).
            return Ok(if line.is_empty() || discarding {
                Event::Closed
            } else {
                Event::Line(line)
            });
        }
        last_byte = Instant::now();
        let newline = chunk.iter().position(|&b| b == b'\n');
        let take = newline.unwrap_or(chunk.len());
        if !discarding {
            if line.len() + take > max {
                discarding = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&chunk[..take]);
            }
        }
        match newline {
            Some(pos) => {
                reader.consume(pos + 1);
                return Ok(if discarding {
                    Event::TooLong
                } else {
                    Event::Line(line)
                });
            }
            None => reader.consume(take),
        }
    }
}

fn connection(
    stream: UnixStream,
    handler: &dyn CtlHandler,
    stop: &AtomicBool,
    options: &ServeOptions,
) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux, but say so anyway:
    // the timeouts below are what bound this thread's waits.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(8192, stream);
    loop {
        let reply = match read_request(
            &mut reader,
            options.max_request_bytes,
            stop,
            options.idle_timeout,
        )? {
            Event::Closed => return Ok(()),
            Event::TooLong => error_line(&format!(
                "request too large: more than {} bytes before the newline; send one JSON \
                 object per line",
                options.max_request_bytes
            )),
            Event::Line(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Event::Line(line) => respond(handler, &line),
        };
        writer.write_all(reply.as_bytes())?;
    }
}

fn error_line(message: &str) -> String {
    let mut s = json!({"ok": false, "error": message}).to_string();
    s.push('\n');
    s
}

/// The response line for one request line.
fn respond(handler: &dyn CtlHandler, line: &[u8]) -> String {
    // A panicking handler must cost one request, not the connection or the switch.
    let result = catch_unwind(AssertUnwindSafe(|| dispatch(handler, line))).unwrap_or_else(|_| {
        Err("internal error in the switch while handling this request; see its log".to_owned())
    });
    match result {
        Ok(data) => {
            let mut s = json!({"ok": true, "data": data}).to_string();
            s.push('\n');
            s
        }
        Err(message) => {
            tracing::debug!("control request refused: {message}");
            error_line(&message)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelPortArgs {
    name: String,
}

fn to_data<T: Serialize>(reply: T) -> Result<Value, String> {
    serde_json::to_value(reply).map_err(|e| format!("internal error encoding the reply: {e}"))
}

/// Parses one request line and runs it. Public so that other transports (tests, an
/// in-process console) answer exactly as the socket does.
pub fn dispatch(handler: &dyn CtlHandler, line: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("malformed request: not UTF-8 ({e})"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut args) = value else {
        return Err(format!(
            "request must be a JSON object such as {{\"cmd\":\"show\"}}, got {}",
            kind_of(&value)
        ));
    };
    let cmd = match args.remove("cmd") {
        Some(Value::String(cmd)) => cmd,
        Some(other) => {
            return Err(format!(
                "`cmd` must be a string (one of {COMMANDS}), got {}",
                kind_of(&other)
            ))
        }
        None => return Err(format!("missing `cmd`: expected one of {COMMANDS}")),
    };
    let no_args = |args: &serde_json::Map<String, Value>| match args.keys().next() {
        Some(k) => Err(format!("{cmd} takes no arguments, got `{k}`")),
        None => Ok(()),
    };
    match cmd.as_str() {
        "show" => no_args(&args).and_then(|()| to_data(handler.show())),
        "stats" => no_args(&args).and_then(|()| to_data(handler.stats())),
        "fdb" => no_args(&args).and_then(|()| to_data(handler.fdb())),
        "pmd-stats" => no_args(&args).and_then(|()| to_data(handler.pmd_stats())),
        "channels" => no_args(&args).and_then(|()| to_data(handler.channels())),
        "add-port" => {
            field_types(
                &cmd,
                &args,
                &[
                    ("name", Kind::String),
                    ("mode", Kind::String),
                    ("path", Kind::String),
                    ("vlan", Kind::Number),
                    ("queues", Kind::Number),
                    ("fastpath", Kind::Bool),
                ],
            )?;
            let spec: PortSpec = serde_json::from_value(Value::Object(args))
                .map_err(|e| format!("add-port: {e}"))?;
            spec.validate().map_err(|e| format!("add-port: {e}"))?;
            handler.add_port(spec).map(|()| Value::Null)
        }
        "del-port" => {
            field_types(&cmd, &args, &[("name", Kind::String)])?;
            let a: DelPortArgs = serde_json::from_value(Value::Object(args))
                .map_err(|e| format!("del-port: {e}"))?;
            handler.del_port(&a.name).map(|()| Value::Null)
        }
        other => Err(format!(
            "unknown command `{other}`: expected one of {COMMANDS}"
        )),
    }
}

/// The JSON type a request field must have.
#[derive(Clone, Copy)]
enum Kind {
    String,
    Number,
    Bool,
}

/// Checks the type of each known field present in `args` (`null` stands for an absent optional
/// field), so a wrong type is refused with the field's name; serde's own message for a
/// `Value` names the type but not the field.
fn field_types(
    cmd: &str,
    args: &serde_json::Map<String, Value>,
    fields: &[(&str, Kind)],
) -> Result<(), String> {
    for &(name, kind) in fields {
        let Some(v) = args.get(name) else { continue };
        let ok = matches!(
            (kind, v),
            (_, Value::Null)
                | (Kind::String, Value::String(_))
                | (Kind::Number, Value::Number(_))
                | (Kind::Bool, Value::Bool(_))
        );
        if !ok {
            let want = match kind {
                Kind::String => "a string",
                Kind::Number => "a number",
                Kind::Bool => "a boolean",
            };
            return Err(format!(
                "{cmd}: `{name}` must be {want}, got {}",
                kind_of(v)
            ));
        }
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "cannot connect to the control socket {}: {source} (is vswitch running with --ctl {}?)",
        path.display(),
        path.display()
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("the switch closed the control connection without answering")]
    Closed,
    #[error("the switch sent a response this vswitchctl does not understand: {0}")]
    BadResponse(String),
    /// The switch answered `ok:false`.
    #[error("{0}")]
    Refused(String),
}

/// The largest response the client accepts: an FDB dump of a full table is a few MB.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// A connection to the switch's control socket.
#[derive(Debug)]
pub struct CtlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl CtlClient {
    pub fn connect(path: &Path) -> Result<CtlClient, CtlError> {
        let stream = UnixStream::connect(path).map_err(|source| CtlError::Connect {
            path: path.to_owned(),
            source,
        })?;
        // A wedged switch must not hang the operator's shell forever.
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(CtlClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one raw line (a newline is added) and returns the raw response object.
    pub fn call_raw(&mut self, line: &str) -> Result<Value, CtlError> {
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        self.writer.write_all(&out)?;
        let mut buf = Vec::new();
        (&mut self.reader)
            .take(MAX_RESPONSE_BYTES)
            .read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            return Err(CtlError::Closed);
        }
        serde_json::from_slice(&buf).map_err(|e| CtlError::BadResponse(e.to_string()))
    }

    /// Sends `request`; `Ok(data)` for `ok:true`, [`CtlError::Refused`] for `ok:false`.
    pub fn call(&mut self, request: &Request) -> Result<Value, CtlError> {
        let line = serde_json::to_string(request)
            .map_err(|e| CtlError::BadResponse(format!("cannot encode the request: {e}")))?;
        let mut response = self.call_raw(&line)?;
        match response.get("ok") {
            Some(Value::Bool(true)) => Ok(response
                .get_mut("data")
                .map(Value::take)
                .unwrap_or(Value::Null)),
            Some(Value::Bool(false)) => Err(CtlError::Refused(
                response
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the switch refused without saying why")
                    .to_owned(),
            )),
            _ => Err(CtlError::BadResponse(format!(
                "no boolean `ok` in {response}"
            ))),
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, CtlError> {
        let data = self.call(request)?;
        serde_json::from_value(data).map_err(|e| CtlError::BadResponse(e.to_string()))
    }

    pub fn show(&mut self) -> Result<ShowReply, CtlError> {
        self.typed(&Request::Show)
    }

    pub fn stats(&mut self) -> Result<StatsReply, CtlError> {
        self.typed(&Request::Stats)
    }

    pub fn fdb(&mut self) -> Result<FdbReply, CtlError> {
        self.typed(&Request::Fdb)
    }

    pub fn channels(&mut self) -> Result<ChannelsReply, CtlError> {
        self.typed(&Request::Channels)
    }

    pub fn pmd_stats(&mut self) -> Result<PmdStatsReply, CtlError> {
        self.typed(&Request::PmdStats)
    }

    pub fn add_port(&mut self, spec: PortSpec) -> Result<(), CtlError> {
        self.call(&Request::AddPort(spec)).map(drop)
    }

    pub fn del_port(&mut self, name: &str) -> Result<(), CtlError> {
        self.call(&Request::DelPort {
            name: name.to_owned(),
        })
        .map(drop)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake switch behind a real socket, shared by these tests and `vswitchctl`'s.

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeSwitch {
        pub ports: Mutex<Vec<PortSpec>>,
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
                },
                QueueInfo {
                    index: 1,
                    enabled: true,
                    started: true,
                    size: 256,
                    pmd: Some(0),
                    error: None,
                },
            ],
            mtu: Some(1500),
            mac: Some("52:54:00:12:34:56".into()),
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
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// A raw line-level client, to send what `CtlClient` never would.
    struct Raw {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    }

    impl Raw {
        fn connect(path: &Path) -> Raw {
            let s = UnixStream::connect(path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Raw {
                writer: s.try_clone().unwrap(),
                reader: BufReader::new(s),
            }
        }
        fn send(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).unwrap();
        }
        fn response(&mut self) -> Value {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.ends_with('\n'), "response must be one line: {line:?}");
            serde_json::from_str(&line).unwrap()
        }
        fn request(&mut self, line: &str) -> Value {
            self.send(format!("{line}\n").as_bytes());
            self.response()
        }
        /// The error message of an `ok:false` response, then proof the connection still works.
        fn refused_then_usable(&mut self, line: &[u8]) -> String {
            self.send(line);
            let r = self.response();
            assert_eq!(r["ok"], false, "{r}");
            let message = r["error"].as_str().unwrap().to_owned();
            let again = self.request(r#"{"cmd":"show"}"#);
            assert_eq!(
                again["ok"], true,
                "connection unusable after an error: {again}"
            );
            message
        }
    }

    fn spec(name: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            mode: PortMode::Server,
            path: format!("/tmp/{name}.sock").into(),
            vlan: Some(10),
            queues: 2,
            fastpath: false,
        }
    }

    #[test]
    fn test_ctl_round_trip_every_command() {
        let server = TestServer::start();
        let mut c = CtlClient::connect(&server.path).unwrap();
        assert_eq!(c.show().unwrap(), ShowReply::default());
        c.add_port(spec("vm1")).unwrap();
        assert_eq!(*server.switch.ports.lock().unwrap(), vec![spec("vm1")]);
        let show = c.show().unwrap();
        assert_eq!(show.ports, vec![sample_port_info(&spec("vm1"))]);
        assert_eq!(c.stats().unwrap(), server.switch.stats());
        assert_eq!(c.fdb().unwrap(), server.switch.fdb());
        assert_eq!(c.pmd_stats().unwrap(), server.switch.pmd_stats());
        c.del_port("vm1").unwrap();
        assert!(server.switch.ports.lock().unwrap().is_empty());
    }

    #[test]
    fn test_ctl_response_shape() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let r = raw.request(r#"{"cmd":"pmd-stats"}"#);
        assert_eq!(r["ok"], true);
        assert_eq!(r["data"]["pmds"][0]["core"], 1);
        let r = raw.request(r#"{"cmd":"del-port","name":"nope"}"#);
        assert_eq!(r, json!({"ok": false, "error": "no port named `nope`"}));
        let r = raw
            .request(r#"{"cmd":"add-port","name":"vm2","mode":"client","path":"/tmp/vm2.sock"}"#);
        assert_eq!(r, json!({"ok": true, "data": null}));
        assert_eq!(server.switch.ports.lock().unwrap()[0].queues, 1);
    }

    #[test]
    fn test_ctl_handler_error_is_refused() {
        let server = TestServer::start();
        let mut c = CtlClient::connect(&server.path).unwrap();
        c.add_port(spec("vm1")).unwrap();
        let err = c.add_port(spec("vm1")).unwrap_err();
        assert!(
            matches!(&err, CtlError::Refused(m) if m.contains("already exists")),
            "{err}"
        );
        c.show().unwrap();
    }

    #[test]
    fn test_ctl_malformed_json() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"cmd\": \"show\"\n");
        assert!(m.starts_with("malformed JSON"), "{m}");
        let m = raw.refused_then_usable(b"show\n");
        assert!(m.starts_with("malformed JSON"), "{m}");
        let m = raw.refused_then_usable(b"\xff\xfe\n");
        assert!(m.contains("not UTF-8"), "{m}");
    }

    #[test]
    fn test_ctl_not_an_object() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"[\"show\"]\n");
        assert!(m.contains("JSON object") && m.contains("an array"), "{m}");
    }

    #[test]
    fn test_ctl_unknown_command() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"cmd\":\"reboot\"}\n");
        assert!(m.contains("unknown command `reboot`"), "{m}");
        assert!(
            m.contains("pmd-stats"),
            "the message lists the commands: {m}"
        );
    }

    #[test]
    fn test_ctl_missing_cmd() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"name\":\"vm1\"}\n");
        assert!(m.contains("missing `cmd`"), "{m}");
        let m = raw.refused_then_usable(b"{\"cmd\":7}\n");
        assert!(m.contains("`cmd` must be a string"), "{m}");
    }

    #[test]
    fn test_ctl_show_with_arguments() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"cmd\":\"stats\",\"port\":\"vm1\"}\n");
        assert!(
            m.contains("takes no arguments") && m.contains("port"),
            "{m}"
        );
    }

    #[test]
    fn test_ctl_oversized_request() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        // Valid JSON, just too big: the size bound must hold before parsing.
        let mut big = br#"{"cmd":"show","pad":""#.to_vec();
        big.resize(MAX_REQUEST_BYTES + 1000, b'a');
        big.extend_from_slice(b"\"}\n");
        let m = raw.refused_then_usable(&big);
        assert!(m.contains("too large") && m.contains("65536"), "{m}");
        // Exactly at the bound is still read.
        let mut at = br#"{"cmd":"show"}"#.to_vec();
        at.resize(MAX_REQUEST_BYTES, b' ');
        at.push(b'\n');
        raw.send(&at);
        assert_eq!(raw.response()["ok"], true);
    }

    #[test]
    fn test_ctl_add_port_missing_path() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw
            .refused_then_usable(b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\"}\n");
        assert!(m.starts_with("add-port:") && m.contains("`path`"), "{m}");
        assert!(server.switch.ports.lock().unwrap().is_empty());
    }

    #[test]
    fn test_ctl_add_port_vlan_out_of_range() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"vlan\":4095}\n",
        );
        assert!(m.contains("4095") && m.contains("1..=4094"), "{m}");
    }

    #[test]
    fn test_ctl_add_port_bad_mode_and_unknown_field() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"listen\",\"path\":\"/tmp/a\"}\n",
        );
        assert!(m.contains("listen"), "{m}");
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"vlans\":3}\n",
        );
        assert!(m.contains("vlans"), "{m}");
    }

    #[test]
    fn test_ctl_field_of_wrong_type() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"cmd\":\"del-port\",\"name\":3}\n");
        assert!(m.contains("`name` must be a string, got a number"), "{m}");
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":[\"/tmp/a\"]}\n",
        );
        assert!(m.contains("`path` must be a string, got an array"), "{m}");
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"vm1\",\"mode\":\"server\",\"path\":\"/tmp/a\",\"fastpath\":\"yes\"}\n",
        );
        assert!(m.contains("`fastpath` must be a boolean"), "{m}");
        assert!(server.switch.ports.lock().unwrap().is_empty());
    }

    #[test]
    fn test_ctl_del_port_missing_name() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(b"{\"cmd\":\"del-port\"}\n");
        assert!(m.contains("`name`"), "{m}");
    }

    #[test]
    fn test_ctl_handler_panic_is_refused() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        let m = raw.refused_then_usable(
            b"{\"cmd\":\"add-port\",\"name\":\"boom\",\"mode\":\"server\",\"path\":\"/tmp/boom\"}\n",
        );
        assert!(m.contains("internal error"), "{m}");
    }

    #[test]
    fn test_ctl_blank_lines_and_last_line_without_newline() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        raw.send(b"\n  \n{\"cmd\":\"show\"}");
        raw.writer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(raw.response()["ok"], true);
        let mut rest = String::new();
        raw.reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "blank lines get no response");
    }

    #[test]
    fn test_ctl_pipelined_requests_answered_in_order() {
        let server = TestServer::start();
        let mut raw = Raw::connect(&server.path);
        raw.send(b"{\"cmd\":\"show\"}\n{\"cmd\":\"nope\"}\n{\"cmd\":\"fdb\"}\n");
        assert_eq!(raw.response()["ok"], true);
        assert_eq!(raw.response()["ok"], false);
        assert_eq!(
            raw.response()["data"]["entries"][0]["mac"],
            "52:54:00:12:34:56"
        );
    }

    #[test]
    fn test_ctl_idle_connection_closed() {
        let server = TestServer::start_with(ServeOptions {
            idle_timeout: Duration::from_millis(200),
            ..ServeOptions::default()
        });
        let mut raw = Raw::connect(&server.path);
        // Half a request, then silence: the server must not wait forever.
        raw.send(b"{\"cmd\":");
        let mut rest = String::new();
        let started = Instant::now();
        raw.reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Others are still served.
        CtlClient::connect(&server.path).unwrap().show().unwrap();
    }

    #[test]
    fn test_ctl_too_many_connections() {
        let server = TestServer::start_with(ServeOptions {
            max_connections: 1,
            ..ServeOptions::default()
        });
        let mut first = CtlClient::connect(&server.path).unwrap();
        first.show().unwrap();
        let mut second = Raw::connect(&server.path);
        let r = second.response();
        assert!(r["error"].as_str().unwrap().contains("too many"), "{r}");
        first.show().unwrap();
    }

    #[test]
    fn test_ctl_stop_ends_server_and_connections() {
        let mut server = TestServer::start();
        let mut c = CtlClient::connect(&server.path).unwrap();
        c.show().unwrap();
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(c.show().is_err(), "connections close when the server stops");
    }

    #[test]
    fn test_ctl_client_socket_missing() {
        let err = CtlClient::connect(Path::new("/nonexistent/ctl.sock")).unwrap_err();
        assert!(matches!(err, CtlError::Connect { .. }));
        assert!(err.to_string().contains("/nonexistent/ctl.sock"), "{err}");
    }

    #[test]
    fn test_ctl_request_wire_format() {
        assert_eq!(
            serde_json::to_value(Request::PmdStats).unwrap(),
            json!({"cmd": "pmd-stats"})
        );
        assert_eq!(
            serde_json::to_value(Request::DelPort { name: "a".into() }).unwrap(),
            json!({"cmd": "del-port", "name": "a"})
        );
        assert_eq!(
            serde_json::to_value(Request::AddPort(spec("vm1"))).unwrap(),
            json!({"cmd": "add-port", "name": "vm1", "mode": "server",
                   "path": "/tmp/vm1.sock", "vlan": 10, "queues": 2, "fastpath": false})
        );
    }
}

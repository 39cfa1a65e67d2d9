//! The control socket's server: accepting, bounded request lines, idle and connection
//! limits, one response line per request, and a panicking handler costing one request only.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::dispatch::{capture_request, dispatch, CtlHandler};
use super::protocol::MAX_REQUEST_BYTES;
use super::stream;

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
            Event::Line(line) => match capture_request(&line) {
                None => respond(handler, &line),
                Some(Err(message)) => error_line(&message),
                Some(Ok(args)) => match stream::start(handler, &args) {
                    Err(message) => error_line(&message),
                    // A capture is a connection's last request: the stream ends it.
                    Ok(session) => return stream::run(&mut writer, session, &args, stop),
                },
            },
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

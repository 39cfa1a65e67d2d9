//! `vswitchctl`'s side of the control socket: a connection, typed calls, and [`CtlError`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::protocol::{
    CaptureArgs, CaptureStarted, CaptureSummary, ChannelsReply, FdbReply, PmdStatsReply,
    RebalanceArgs, RebalanceReply, Request, RxqShowReply, ShowReply, StatsReply,
};
use super::stream::MAX_CHUNK;
use crate::config::PortSpec;

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
    /// A capture's output could not be written (a full disk, a reader that went away).
    #[error("writing the capture failed: {0}")]
    Output(io::Error),
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

    pub fn evpn(&mut self) -> Result<crate::evpn::EvpnReply, CtlError> {
        self.typed(&Request::Evpn)
    }

    pub fn pmd_stats(&mut self) -> Result<PmdStatsReply, CtlError> {
        self.typed(&Request::PmdStats)
    }

    pub fn pmd_rxq_show(&mut self) -> Result<RxqShowReply, CtlError> {
        self.typed(&Request::PmdRxqShow)
    }

    pub fn pmd_rxq_rebalance(&mut self, args: RebalanceArgs) -> Result<RebalanceReply, CtlError> {
        self.typed(&Request::PmdRxqRebalance(args))
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

    /// Runs a capture: writes the pcap stream into `out` (flushed per chunk, so a pipe reader
    /// sees frames as they come) until the switch ends it; once `stop` is set, asks the switch
    /// to end it. `started` is told when the switch has attached the capture.
    pub fn capture(
        &mut self,
        args: &CaptureArgs,
        out: &mut dyn Write,
        stop: &AtomicBool,
        started: impl FnOnce(&CaptureStarted),
    ) -> Result<CaptureSummary, CtlError> {
        let data = self.call(&Request::Capture(args.clone()))?;
        let s: CaptureStarted =
            serde_json::from_value(data).map_err(|e| CtlError::BadResponse(e.to_string()))?;
        started(&s);
        // Short reads so that `stop` is seen while no frame comes.
        self.writer
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut stopping = false;
        let mut check_stop = |w: &UnixStream| -> io::Result<()> {
            if !stopping && stop.load(Ordering::Relaxed) {
                stopping = true;
                w.shutdown(std::net::Shutdown::Write)?;
            }
            Ok(())
        };
        let mut chunk = Vec::new();
        loop {
            let mut len = [0u8; 4];
            read_full(&mut self.reader, &mut len, &mut || check_stop(&self.writer))?;
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                break;
            }
            if len > MAX_CHUNK {
                return Err(CtlError::BadResponse(format!(
                    "a capture chunk of {len} bytes (at most {MAX_CHUNK} are sent)"
                )));
            }
            chunk.resize(len, 0);
            read_full(&mut self.reader, &mut chunk, &mut || {
                check_stop(&self.writer)
            })?;
            out.write_all(&chunk)
                .and_then(|()| out.flush())
                .map_err(CtlError::Output)?;
        }
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            match (&mut self.reader)
                .take(64 * 1024)
                .read_until(b'\n', &mut line)
            {
                Ok(0) => return Err(CtlError::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => check_stop(&self.writer)?,
                Err(e) => return Err(e.into()),
            }
        }
        serde_json::from_slice(&line).map_err(|e| CtlError::BadResponse(e.to_string()))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Fills `buf` from `r`, calling `idle` whenever a read times out (data read before a timeout
/// is kept, unlike `read_exact`'s).
fn read_full(
    r: &mut impl Read,
    buf: &mut [u8],
    idle: &mut dyn FnMut() -> io::Result<()>,
) -> Result<(), CtlError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(CtlError::Closed),
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) => idle()?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

//! Framing of the hooks protocol on a unix stream socket: a 4-byte little-endian length, then
//! that many bytes of JSON; descriptors travel with the frame (SCM_RIGHTS). Frames are bounded
//! (64 KiB, 4 descriptors); anything else closes the connection.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::Serialize;
use vhost_user::connection::Connection;

use crate::error::{Error, Result};

/// Largest frame body.
pub const MAX_FRAME: usize = 64 * 1024;
/// Most descriptors one frame carries.
pub const MAX_FDS: usize = 4;

/// A framed hooks connection.
pub struct Wire {
    conn: Connection,
}

impl Wire {
    pub fn new(s: UnixStream) -> Wire {
        Wire {
            conn: Connection::new(s),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        self.conn.socket()
    }

    /// Sends a message with descriptors.
    pub fn send<T: Serialize>(&mut self, msg: &T, fds: &[RawFd]) -> Result<()> {
        let body = serde_json::to_vec(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        if body.len() > MAX_FRAME || fds.len() > MAX_FDS {
            return Err(Error::Protocol("frame too large".into()));
        }
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
        self.conn
            .send_parts([&len, &body], fds)
            .map_err(Error::from)
    }

    /// Receives one message and its descriptors. `Ok(None)` when the peer closed cleanly.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<(T, Vec<OwnedFd>)>> {
        let mut fds = Vec::new();
        let mut lenb = [0u8; 4];
        let got = self.conn.read_full(&mut lenb, &mut fds)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(Error::Protocol(
                "connection closed inside a frame header".into(),
            ));
        }
        let len = u32::from_le_bytes(lenb) as usize;
        if len > MAX_FRAME {
            return Err(Error::Protocol(format!(
                "frame of {len} bytes exceeds {MAX_FRAME}"
            )));
        }
        let mut body = vec![0u8; len];
        if self.conn.read_full(&mut body, &mut fds)? < len {
            return Err(Error::Protocol("connection closed inside a frame".into()));
        }
        if fds.len() > MAX_FDS {
            return Err(Error::Protocol(format!(
                "{} descriptors attached; at most {MAX_FDS}",
                fds.len()
            )));
        }
        let msg = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("malformed message: {e}")))?;
        Ok(Some((msg, fds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GuestMsg, Mode};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn frame_with_fds_roundtrip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Wire::new(a), Wire::new(b));
        let f = std::fs::File::open("/dev/null").unwrap();
        let m = GuestMsg::Open {
            request: 1,
            peer: "02:00:00:00:00:02".into(),
            mode: Mode::Copy,
            notify: "spin".into(),
        };
        a.send(&m, &[f.as_raw_fd()]).unwrap();
        let (got, fds): (GuestMsg, _) = b.recv().unwrap().unwrap();
        assert_eq!(got, m);
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(b.recv::<GuestMsg>().unwrap().is_none());
    }

    #[test]
    fn test_frame_oversized() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Wire::new(b);
        (&a).write_all(&(1u32 << 30).to_le_bytes()).unwrap();
        assert!(b.recv::<GuestMsg>().is_err());
    }

    #[test]
    fn test_frame_truncated() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Wire::new(b);
        (&a).write_all(&10u32.to_le_bytes()).unwrap();
        (&a).write_all(b"{\"ms").unwrap();
        drop(a);
        assert!(b.recv::<GuestMsg>().is_err());
    }

    #[test]
    fn test_frame_not_json() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut b = Wire::new(b);
        (&a).write_all(&3u32.to_le_bytes()).unwrap();
        (&a).write_all(b"\xff\x00x").unwrap();
        assert!(b.recv::<GuestMsg>().is_err());
    }
}

//! A vhost-user connection: framing of messages on a unix stream socket and the file descriptors
//! that travel with them (SCM_RIGHTS).
//!
//! Received descriptors become [`OwnedFd`]s at once, so every path that rejects a message closes
//! them by dropping; nothing leaks. The control-message buffer has room for the kernel's maximum
//! (`SCM_MAX_FD` = 253) so a peer sending too many descriptors cannot make the kernel truncate
//! them silently: we see them all, and refuse the message.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};
use crate::message::{Header, HEADER_SIZE, MAX_FDS};

/// The kernel's per-message limit on passed descriptors (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// One received message: header, payload, attached descriptors.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A framed vhost-user connection over a unix stream socket.
#[derive(Debug)]
pub struct Connection {
    sock: UnixStream,
    cmsg: Vec<u8>,
}

impl Connection {
    pub fn new(sock: UnixStream) -> Self {
        Connection {
            sock,
            cmsg: nix::cmsg_space!([RawFd; SCM_MAX_FD]),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Reads exactly `buf.len()` bytes, collecting any descriptors that arrive on the way.
    /// Returns the number of bytes read before EOF (less than `buf.len()` only at EOF).
    /// Other framings over a unix socket with passed descriptors (the hooks protocol) use it.
    pub fn read_full(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            let fd = self.sock.as_raw_fd();
            let mut iov = [IoSliceMut::new(&mut buf[got..])];
            let res = recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut self.cmsg[..]),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match res {
                Ok(m) => m,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Io(e.into())),
            };
            let n = msg.bytes;
            // The buffer holds SCM_MAX_FD descriptors, so the kernel never truncates rights;
            // a truncation here would mean some other control message, which we do not use.
            let cmsgs = msg.cmsgs().map_err(|_| Error::TruncatedFds)?;
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for r in raw {
                        // SAFETY: the kernel has just installed `r` in our descriptor table for
                        // this message; nothing else in the process knows it, so we are its only
                        // owner and wrapping it transfers that ownership.
                        fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
            }
            if n == 0 {
                return Ok(got);
            }
            got += n;
        }
        Ok(got)
    }

    /// Receives one message. Framing errors (short read, bad header, too many descriptors) are
    /// fatal for the connection; see [`Error::must_close`].
    pub fn recv(&mut self) -> Result<Message> {
        let mut fds = Vec::new();
        let mut hb = [0u8; HEADER_SIZE];
        let got = self.read_full(&mut hb, &mut fds)?;
        if got == 0 {
            return Err(Error::Disconnected);
        }
        if got < HEADER_SIZE {
            return Err(Error::PartialMessage {
                got,
                want: HEADER_SIZE,
            });
        }
        let header = Header::parse(&hb)?;
        let mut body = vec![0u8; header.size as usize];
        let got = self.read_full(&mut body, &mut fds)?;
        if got < body.len() {
            return Err(Error::PartialMessage {
                got: HEADER_SIZE + got,
                want: HEADER_SIZE + body.len(),
            });
        }
        if fds.len() > MAX_FDS {
            return Err(Error::TruncatedFds);
        }
        Ok(Message { header, body, fds })
    }

    /// Sends one message with optional descriptors.
    pub fn send(&mut self, header: &Header, body: &[u8], fds: &[RawFd]) -> Result<()> {
        let hb = header.to_bytes();
        self.send_parts([&hb, body], fds)
    }

    /// Sends two byte strings back to back, the descriptors attached to the first byte.
    pub fn send_parts(&mut self, mut parts: [&[u8]; 2], fds: &[RawFd]) -> Result<()> {
        let mut first = true;
        loop {
            let iov = [IoSlice::new(parts[0]), IoSlice::new(parts[1])];
            let rights = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage] = if first && !fds.is_empty() {
                &rights
            } else {
                &[]
            };
            let n = match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Io(e.into())),
            };
            first = false;
            // Advance over what was written; the descriptors went with the first byte.
            let mut left = n;
            for p in parts.iter_mut() {
                let k = left.min(p.len());
                *p = &p[k..];
                left -= k;
            }
            if parts[0].is_empty() && parts[1].is_empty() {
                return Ok(());
            }
            if n == 0 {
                return Err(Error::Disconnected);
            }
        }
    }

    /// Sends a request and, when `expect_reply`, waits for the reply to it.
    pub fn request(
        &mut self,
        header: &Header,
        body: &[u8],
        fds: &[RawFd],
        expect_reply: bool,
    ) -> Result<Option<Message>> {
        self.send(header, body, fds)?;
        if !expect_reply {
            return Ok(None);
        }
        let reply = self.recv()?;
        if !reply.header.is_reply() || reply.header.request != header.request {
            return Err(Error::ReplyMismatch {
                sent: header.request,
                got: reply.header.request,
            });
        }
        Ok(Some(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Request;
    use std::io::Write;

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Connection::new(a), b)
    }

    fn memfd() -> OwnedFd {
        memfd_named(c"t")
    }

    fn memfd_named(name: &std::ffi::CStr) -> OwnedFd {
        nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap()
    }

    #[test]
    fn message_with_fds_roundtrip() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let f1 = memfd();
        let f2 = memfd();
        let h = Header::request(Request::SET_VRING_KICK, 8, false);
        tx.send(&h, &1u64.to_le_bytes(), &[f1.as_raw_fd(), f2.as_raw_fd()])
            .unwrap();
        let m = rx.recv().unwrap();
        assert_eq!(m.header, h);
        assert_eq!(m.body, 1u64.to_le_bytes());
        assert_eq!(m.fds.len(), 2);
    }

    #[test]
    fn test_recv_eof_is_disconnected() {
        let (mut c, peer) = pair();
        drop(peer);
        assert!(matches!(c.recv(), Err(Error::Disconnected)));
    }

    #[test]
    fn test_recv_partial_header() {
        let (mut c, mut peer) = pair();
        peer.write_all(&[1, 0, 0, 0, 1]).unwrap();
        drop(peer);
        let e = c.recv().unwrap_err();
        assert!(matches!(e, Error::PartialMessage { got: 5, .. }), "{e}");
        assert!(e.must_close());
    }

    #[test]
    fn test_recv_partial_body() {
        let (mut c, mut peer) = pair();
        let h = Header::request(Request::SET_FEATURES, 8, false);
        peer.write_all(&h.to_bytes()).unwrap();
        peer.write_all(&[0, 0, 0]).unwrap();
        drop(peer);
        assert!(matches!(c.recv(), Err(Error::PartialMessage { .. })));
    }

    #[test]
    fn test_recv_header_split_across_writes() {
        let (mut c, mut peer) = pair();
        let h = Header::request(Request::SET_FEATURES, 8, false);
        let b = h.to_bytes();
        let t = std::thread::spawn(move || {
            for chunk in b.chunks(5) {
                peer.write_all(chunk).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peer.write_all(&9u64.to_le_bytes()).unwrap();
            peer
        });
        let m = c.recv().unwrap();
        assert_eq!(m.body, 9u64.to_le_bytes());
        drop(t.join());
    }

    #[test]
    fn test_recv_too_many_fds_closed_not_leaked() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let name = c"vhost-user-fdleak-check-too-many";
        let files: Vec<OwnedFd> = (0..12).map(|_| memfd_named(name)).collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let h = Header::request(Request::SET_OWNER, 0, false);
        tx.send(&h, &[], &raw).unwrap();
        drop(files);
        let e = rx.recv().unwrap_err();
        assert!(matches!(e, Error::TruncatedFds));
        assert_eq!(
            open_fds_named("vhost-user-fdleak-check-too-many"),
            0,
            "received descriptors must be closed"
        );
    }

    /// Counts this process's open descriptors whose target names `name` (memfds show up as
    /// `/memfd:NAME (deleted)`); robust against other tests opening descriptors concurrently.
    pub(crate) fn open_fds_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains(name))
            .count()
    }
}

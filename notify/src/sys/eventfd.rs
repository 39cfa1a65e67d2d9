//! An eventfd: the kernel's 64-bit event counter behind the vhost-user kick and call paths.
//! Writing adds to the counter and wakes pollers; reading returns and clears it.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::Error;

/// An eventfd shared by the two sides of a channel (each side may hold its own descriptor of
/// the same eventfd, e.g. received over SCM_RIGHTS). Cloning shares the descriptor.
///
/// The descriptor is non-blocking (set on the open file, hence also for the peer's descriptors
/// of it: a signal never blocks, a consume never blocks).
#[derive(Debug, Clone)]
pub struct EventFd {
    file: Arc<File>,
}

impl EventFd {
    /// A new eventfd, counter zero, non-blocking and close-on-exec.
    pub fn new() -> Result<EventFd, Error> {
        // SAFETY: eventfd(2) takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::io("eventfd", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd {
            file: Arc::new(File::from(fd)),
        })
    }

    /// Wraps an eventfd received from the peer (a vhost-user kick or call fd), making it
    /// non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<EventFd, Error> {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers involved.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 {
            return Err(Error::io(
                "fcntl(F_GETFL) eventfd",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(Error::io(
                "fcntl(F_SETFL) eventfd",
                io::Error::last_os_error(),
            ));
        }
        Ok(EventFd {
            file: Arc::new(File::from(fd)),
        })
    }

    /// Adds one to the counter, waking a poller. A full counter (2^64 - 2) already means
    /// "signalled", so EAGAIN counts as success.
    pub fn signal(&self) -> io::Result<()> {
        match (&*self.file).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.signal(),
            Err(e) => Err(e),
        }
    }

    /// Reads and clears the counter without blocking: the number of signals since the last
    /// consume (0 if none).
    pub fn consume(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        loop {
            match (&*self.file).read(&mut buf) {
                Ok(8) => return Ok(u64::from_ne_bytes(buf)),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("short read of {n} bytes from an eventfd"),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the counter is non-zero or `timeout` passes (None: no limit), without
    /// consuming. Returns whether it is readable. EINTR returns `Ok(false)` early; callers
    /// re-check their deadline.
    pub fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(d.subsec_nanos()),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pfd` is one valid pollfd (nfds = 1) and `ts_ptr` null or a valid timespec,
        // both alive for the call; a null sigmask leaves the signal mask alone.
        let r = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("eventfd poll reported revents {:#x}", pfd.revents),
            ));
        }
        Ok(r > 0 && pfd.revents & libc::POLLIN != 0)
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_accumulate_and_consume_clears() {
        let e = EventFd::new().expect("eventfd");
        assert_eq!(e.consume().expect("read"), 0);
        assert!(!e.poll(Some(Duration::ZERO)).expect("poll"));
        e.signal().expect("write");
        e.clone().signal().expect("write");
        assert!(e.poll(Some(Duration::ZERO)).expect("poll"));
        assert_eq!(e.consume().expect("read"), 2);
        assert_eq!(e.consume().expect("read"), 0);
    }

    #[test]
    fn from_fd_makes_a_blocking_eventfd_non_blocking() {
        // SAFETY: eventfd(2) takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let e = EventFd::from_fd(fd).expect("wrap");
        // Would block forever on a blocking eventfd.
        assert_eq!(e.consume().expect("read"), 0);
    }
}

//! `eventfd`: the vhost-user kick/call path, the software analogue of an interrupt. Notify is
//! a write(2) to the channel's eventfd, always a system call; wait polls it (ppoll, nanosecond
//! timeout) and reads it, which consumes every pending signal at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::deadline::{Deadline, Remaining};
use crate::{EventFd, Notifier, WaitOutcome};

/// Eventfd notifier; see the module documentation.
#[derive(Debug)]
pub struct EventFdNotifier {
    fd: EventFd,
    errors: AtomicU64,
}

impl EventFdNotifier {
    pub fn new(fd: EventFd) -> EventFdNotifier {
        EventFdNotifier {
            fd,
            errors: AtomicU64::new(0),
        }
    }

    /// The eventfd (to hand to a peer or register with epoll).
    pub fn eventfd(&self) -> &EventFd {
        &self.fd
    }

    /// System calls on the eventfd that failed (a closed or foreign descriptor); each one made
    /// a notify lost or a wait sleep in 1 ms steps instead of polling.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Consumes pending signals; true if there were any.
    fn consume(&self) -> bool {
        match self.fd.consume() {
            Ok(n) => n > 0,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Notifier for EventFdNotifier {
    fn notify(&self) {
        if self.fd.signal().is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> WaitOutcome {
        // Read first: under load the counter is already non-zero and one syscall suffices.
        if self.consume() {
            return WaitOutcome::Notified;
        }
        let deadline = Deadline::after(timeout);
        loop {
            let left = match deadline.remaining() {
                Remaining::Expired => return WaitOutcome::TimedOut,
                Remaining::Forever => None,
                Remaining::Left(d) => Some(d),
            };
            if self.fd.poll(left).is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(left.unwrap_or(Duration::MAX).min(Duration::from_millis(1)));
            }
            if self.consume() {
                return WaitOutcome::Notified;
            }
        }
    }

    fn name(&self) -> &'static str {
        "eventfd"
    }
}

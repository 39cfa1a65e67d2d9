//! Where the data plane finds one virtqueue: a [`QueueSlot`], taken for one burst with
//! `try_lock` by a poll thread and with `lock` by the backend to install, stop or replace it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::virtq::DeviceQueue;

/// Where the data plane finds one virtqueue. `None` while the queue is not running.
#[derive(Default)]
pub struct QueueSlot {
    queue: Mutex<Option<DeviceQueue>>,
    running: AtomicBool,
}

impl QueueSlot {
    /// Cheap check before trying the lock: false when no queue is installed.
    #[inline]
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// The data plane's access: the queue for one burst, or `None` when the slot is busy (the
    /// control side is changing it) or empty.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Option<DeviceQueue>>> {
        match self.queue.try_lock() {
            Ok(g) => Some(g),
            // A poll thread panicked holding the lock; the queue state is still consistent at
            // burst granularity, so keep serving rather than wedging the port.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Option<DeviceQueue>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn install(&self, q: DeviceQueue) {
        *self.lock() = Some(q);
        self.running.store(true, Ordering::Release);
    }

    pub(super) fn take(&self) -> Option<DeviceQueue> {
        self.running.store(false, Ordering::Release);
        self.lock().take()
    }
}

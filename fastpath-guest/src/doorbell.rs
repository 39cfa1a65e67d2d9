//! A channel's doorbell: one shared page both guests keep mapped for the channel's life (the
//! protected region is reachable only through a view; this page never is protected). It holds
//! the two notification words and the channel's counters, each counter written by one side only;
//! the switch maps it too, to show the counters.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use hypervisor_hooks::proto::doorbell as layout;
use vhost_user::mmap::{create_memfd, Mapping};

use crate::error::{Error, Result};

/// A mapped doorbell page.
pub struct Doorbell {
    map: Mapping,
    fd: OwnedFd,
}

impl Doorbell {
    /// Creates a fresh doorbell (the owner of a channel does).
    pub fn create(name: &str) -> Result<Arc<Doorbell>> {
        let fd = create_memfd(name, layout::LEN, false)?;
        let d = Doorbell::map(fd)?;
        d.map
            .store_u64(0, layout::MAGIC)
            .ok_or_else(|| Error::Channel("doorbell too small".into()))?;
        Ok(Arc::new(d))
    }

    /// Maps a doorbell received from the hooks; refuses one that is not initialised.
    pub fn open(fd: OwnedFd) -> Result<Arc<Doorbell>> {
        let d = Doorbell::map(fd)?;
        if d.map.load_u64(0) != Some(layout::MAGIC) {
            return Err(Error::Channel("doorbell page is not initialised".into()));
        }
        Ok(Arc::new(d))
    }

    fn map(fd: OwnedFd) -> Result<Doorbell> {
        let map = Mapping::map_shared(&fd, usize::try_from(layout::LEN).unwrap_or(4096))?;
        Ok(Doorbell { map, fd })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Adds to one of the counters this side writes.
    #[inline]
    pub fn bump(&self, counter: usize, n: u64) {
        if n != 0 {
            let _ = self.map.bump_u64(counter, n);
        }
    }

    pub fn get(&self, counter: usize) -> u64 {
        self.map.load_u64(counter).unwrap_or(0)
    }

    /// Address of a notification word (one of `WORD_TO_OWNER`, `WORD_TO_USER`), inside this
    /// mapping, which lives as long as the `Doorbell`.
    pub fn word_ptr(&self, word: usize) -> *mut u8 {
        debug_assert!(word == layout::WORD_TO_OWNER || word == layout::WORD_TO_USER);
        self.map.as_ptr().wrapping_add(word)
    }
}

//! A guest's view list: index 0 is the default view, up to [`MAX_VIEWS`] entries in all, like
//! VMFUNC's EPTP list. Adding a view binds its regions to the list's backend (for PKU: tags
//! their granted pages with the region's key); switching is the trampoline's
//! ([`ViewList::enter`], in [`crate::trampoline`]).

use crate::error::{Error, Result};
use crate::pkru;
use crate::view::{View, ViewIndex, MAX_VIEWS};
use crate::Backend;

/// A view and what switching to it takes under the list's backend.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) view: View,
    /// PKU: the access- and write-disable bits of the view's keys (cleared on enter).
    pub(crate) pkru_open: u32,
    /// PKU: the access-disable bits of the view's keys (set on leave).
    pub(crate) pkru_closed: u32,
}

/// The views of one guest. See the module documentation.
#[derive(Debug)]
pub struct ViewList {
    backend: Backend,
    /// `slots[0]` (the default view) is always `None`.
    slots: Vec<Option<Entry>>,
    count: usize,
}

impl ViewList {
    /// An empty list (only the default view) switched by `backend`; refused if the backend is
    /// not available here.
    pub fn new(backend: Backend) -> Result<ViewList> {
        if !backend.available() {
            return Err(Error::BackendUnavailable(backend));
        }
        Ok(ViewList {
            backend,
            slots: vec![None],
            count: 0,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Adds `view` at the lowest free index (1..512). Its regions are bound to this backend: a
    /// region used by the other backend, or (PKU) granted with different ranges by another view,
    /// is refused.
    pub fn add(&mut self, view: View) -> Result<ViewIndex> {
        let index = match self.slots.iter().skip(1).position(Option::is_none) {
            Some(i) => i + 1,
            None if self.slots.len() < MAX_VIEWS => self.slots.len(),
            None => return Err(Error::TooManyViews),
        };
        let (mut pkru_open, mut pkru_closed) = (0, 0);
        match self.backend {
            Backend::Mprotect => {
                for g in view.grants() {
                    g.region.bind_mprotect()?;
                }
            }
            Backend::Pku => {
                for (region, ranges) in view.by_region() {
                    let key = region.bind_pku(&ranges)?;
                    pkru_open |= pkru::key_bits(key);
                    pkru_closed |= pkru::access_disable(key);
                }
            }
        }
        let entry = Entry {
            view,
            pkru_open,
            pkru_closed,
        };
        if index == self.slots.len() {
            self.slots.push(Some(entry));
        } else {
            self.slots[index] = Some(entry);
        }
        self.count += 1;
        let index = u16::try_from(index).map_err(|_| Error::TooManyViews)?;
        Ok(ViewIndex::new(index))
    }

    /// Removes a view and returns it. Its index may be reused by a later `add`.
    pub fn remove(&mut self, index: ViewIndex) -> Result<View> {
        check_range(index)?;
        let slot = self
            .slots
            .get_mut(usize::from(index.get()))
            .ok_or(Error::NoSuchView(index))?;
        let entry = slot.take().ok_or(Error::NoSuchView(index))?;
        self.count -= 1;
        Ok(entry.view)
    }

    /// The view at `index`, if there is one.
    pub fn get(&self, index: ViewIndex) -> Option<&View> {
        self.entry(index).ok().map(|e| &e.view)
    }

    /// Number of protected views (the default view not counted).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when only the default view exists.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Indices of the protected views, ascending.
    pub fn indices(&self) -> impl Iterator<Item = ViewIndex> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .filter_map(|(i, _)| u16::try_from(i).ok().map(ViewIndex::new))
    }

    pub(crate) fn entry(&self, index: ViewIndex) -> Result<&Entry> {
        check_range(index)?;
        if index.is_default() {
            return Err(Error::DefaultViewNotEnterable);
        }
        self.slots
            .get(usize::from(index.get()))
            .and_then(Option::as_ref)
            .ok_or(Error::NoSuchView(index))
    }
}

fn check_range(index: ViewIndex) -> Result<()> {
    if usize::from(index.get()) >= MAX_VIEWS {
        return Err(Error::ViewIndexOutOfRange(index));
    }
    Ok(())
}

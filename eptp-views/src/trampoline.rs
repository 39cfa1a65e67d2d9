//! The trampoline: the only code that switches views. [`ViewList::enter`] opens a view, runs
//! the caller's closure, and leaves the view (back to the default view 0) on every exit path,
//! unwinding included: the leave is the `Drop` of a guard that only this module can build.
//! Views do not nest: a thread inside a view cannot enter another.
//!
//! Failure to leave is not survivable: if the protections cannot be restored (mprotect fails,
//! or PKRU does not read back as written), the process aborts rather than run on with peer
//! memory open.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::pkru;
use crate::view::{Grant, View, ViewIndex};
use crate::view_list::{Entry, ViewList};
use crate::Backend;

thread_local! {
    /// The view this thread is in; 0 outside the trampoline. Const-initialised and without a
    /// destructor, so reading it is a plain TLS load, safe in a signal handler.
    static CURRENT: Cell<u16> = const { Cell::new(0) };
}

/// The mprotect backend's protections are per process: one thread at a time may be inside a
/// view, or one thread's leave would close a range another thread is using.
static MPROTECT_SWITCH: Mutex<()> = Mutex::new(());

/// The view the calling thread is in (the default view outside the trampoline).
pub fn current_view() -> ViewIndex {
    ViewIndex::new(current_raw())
}

/// As [`current_view`]; async-signal-safe.
pub(crate) fn current_raw() -> u16 {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

/// Proof, handed to the closure of [`ViewList::enter`], that the calling thread is inside a
/// view. It cannot be built elsewhere, cannot leave the closure (it is only ever borrowed) and
/// cannot move to another thread, so a memory accessor that asks for `&InView` is only callable
/// inside the trampoline.
#[derive(Debug)]
pub struct InView<'a> {
    index: ViewIndex,
    view: &'a View,
    _thread: PhantomData<*const ()>,
}

impl InView<'_> {
    pub fn index(&self) -> ViewIndex {
        self.index
    }

    pub fn view(&self) -> &View {
        self.view
    }

    pub fn grants(&self) -> &[Grant] {
        self.view.grants()
    }
}

/// Being inside a view; dropping it leaves. Only [`ViewList::enter`] builds one.
struct Entered<'a> {
    entry: &'a Entry,
    how: How,
}

enum How {
    /// Held until the protections are closed again (fields drop after `Drop::drop`).
    Mprotect(#[allow(dead_code)] MutexGuard<'static, ()>),
    /// PKRU value of the default view, written back on leave.
    Pku { closed: u32 },
}

impl<'a> Entered<'a> {
    fn enter(backend: Backend, index: u16, entry: &'a Entry) -> Result<Self> {
        match backend {
            Backend::Mprotect => {
                let lock = MPROTECT_SWITCH
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                CURRENT.set(index);
                for op in entry.view.open_ops() {
                    if let Err(e) = op.apply() {
                        close_mprotect(entry);
                        CURRENT.set(0);
                        return Err(Error::sys("mprotect (entering a view)", e));
                    }
                }
                Ok(Entered {
                    entry,
                    how: How::Mprotect(lock),
                })
            }
            Backend::Pku => {
                // Whatever this thread's PKRU held, the view's keys are closed in the default
                // view we return to.
                let closed = pkru::rdpkru() | entry.pkru_closed;
                CURRENT.set(index);
                pkru::wrpkru_checked(closed & !entry.pkru_open);
                Ok(Entered {
                    entry,
                    how: How::Pku { closed },
                })
            }
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        match self.how {
            How::Mprotect(_) => close_mprotect(self.entry),
            How::Pku { closed } => pkru::wrpkru_checked(closed),
        }
        CURRENT.set(0);
    }
}

fn close_mprotect(entry: &Entry) {
    for op in entry.view.close_ops() {
        if op.apply().is_err() {
            crate::sys::write_raw(
                2,
                b"eptp-views: cannot close a view (mprotect failed); aborting\n",
            );
            std::process::abort();
        }
    }
}

impl ViewList {
    /// Enters view `index`, runs `f` inside it, and leaves it (also when `f` panics). Refused
    /// for an index out of range, the default view, a missing view, and when the calling thread
    /// is already inside a view. With the mprotect backend, waits while another thread of the
    /// process is inside a view.
    pub fn enter<R>(&self, index: ViewIndex, f: impl FnOnce(&InView<'_>) -> R) -> Result<R> {
        let entry = self.entry(index)?;
        let active = current_raw();
        if active != 0 {
            return Err(Error::NestedEnter {
                active: ViewIndex::new(active),
                requested: index,
            });
        }
        let inside = Entered::enter(self.backend(), index.get(), entry)?;
        let r = f(&InView {
            index,
            view: &entry.view,
            _thread: PhantomData,
        });
        drop(inside);
        Ok(r)
    }
}

/// The trampoline's view-switching code in this process, as `(start address, length in
/// bytes)`: the only code that may contain `WRPKRU`. The guest reports it to the hooks
/// (`Trampoline { start, len }`), which hash it and scan the guest's executable mappings
/// against it. It is the linker-bounded section `eptp_trampoline` (a few dozen bytes).
pub fn trampoline_range() -> (usize, usize) {
    let r = pkru::code_range();
    (r.start, r.len())
}

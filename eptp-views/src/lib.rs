//! Protected memory views: our software realisation of EPTP switching (DESIGN.md §1, §5).
//!
//! A guest maps a peer's memory file as a [`Region`] (inaccessible, PROT_NONE). A [`View`] is a
//! set of [`Grant`]s — page ranges of regions, each [`Perm::Read`] or [`Perm::ReadWrite`]. A
//! guest's [`ViewList`] holds up to [`MAX_VIEWS`] entries like VMFUNC's EPTP list, index 0
//! being the default view in which no peer memory is accessible. The only way into a view is
//! the trampoline, [`ViewList::enter`]: it opens the view, runs a closure, and returns to view
//! 0 on every exit path, unwinding included.
//!
//! Two [`Backend`]s switch views: `Mprotect` (system calls per switch; works everywhere) and
//! `Pku` (protection keys: one `WRPKRU` per switch, checked with `RDPKRU`; used only where
//! [`Backend::available`]). See [`Backend`] for what per-process vs per-thread protection means.
//!
//! An access to a region outside a view that grants it is a violation, like an EPT violation:
//! the handler installed by [`install_violation_handler`] records it ([`violations`],
//! [`violation_count`]), reports it on a descriptor, and applies the [`ViolationPolicy`].
//!
//! ```
//! use std::sync::Arc;
//! use eptp_views::{memfd, page_size, Backend, Grant, Perm, Region, RegionId, View, ViewList};
//!
//! // The peer's memory file would come from the hooks; here we make one.
//! let len = page_size();
//! let region = Arc::new(Region::map(memfd("peer-rxq", len)?, len, RegionId(1))?);
//! let mut views = ViewList::new(Backend::detect())?;
//! let idx = views.add(View::new(vec![Grant::whole(region.clone(), Perm::ReadWrite)])?)?;
//! let p = region.as_ptr();
//! let seen = views.enter(idx, |_in_view| {
//!     // SAFETY: byte 0 of a ReadWrite grant, inside the view that grants it.
//!     unsafe {
//!         p.write_volatile(7);
//!         p.read_volatile()
//!     }
//! })?;
//! assert_eq!(seen, 7);
//! // Here, outside the trampoline, reading `p` would be a violation (SIGSEGV).
//! # Ok::<(), eptp_views::Error>(())
//! ```
//!
//! Modules: [`region`], [`view`], [`view_list`], [`trampoline`], [`backend`], [`violation`];
//! unsafe code lives only in the leaves `sys` (mappings, protections), `pkru` (protection
//! keys, RDPKRU/WRPKRU) and `signal` (the SIGSEGV handler).
#![deny(unsafe_code)]

pub mod backend;
pub mod error;
mod pkru;
pub mod region;
mod registry;
mod signal;
mod sys;
pub mod trampoline;
pub mod view;
pub mod view_list;
pub mod violation;

pub use backend::Backend;
pub use error::{Error, Result};
pub use region::{memfd, Region, RegionId};
pub use registry::MAX_REGIONS;
pub use signal::install_violation_handler;
pub use sys::page_size;
pub use trampoline::{current_view, trampoline_range, InView};
pub use view::{Grant, Perm, View, ViewIndex, MAX_VIEWS};
pub use view_list::ViewList;
pub use violation::{
    violation_count, violations, ReportTo, Violation, ViolationPolicy, SEGV_ACCERR, SEGV_PKUERR,
};

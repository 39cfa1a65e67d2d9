//! The crate's one error type. Every message names what went wrong and what the operator (or the
//! engineer wiring the hooks) can do about it.

use crate::region::RegionId;
use crate::view::{ViewIndex, MAX_VIEWS};
use crate::Backend;

/// Errors of region mapping, view management, switching and violation-handler installation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{what} failed: {source} (check the descriptor the hooks passed, the process's \
         memory limits and vm.max_map_count)"
    )]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "region {id}: length {len} is not a positive multiple of the page size ({page}); \
         the hooks must grant whole pages"
    )]
    RegionLength {
        id: RegionId,
        len: usize,
        page: usize,
    },

    #[error(
        "region {id}: file offset {offset} is not a multiple of the page size ({page}); \
         the hooks must grant whole pages"
    )]
    RegionOffset {
        id: RegionId,
        offset: u64,
        page: usize,
    },

    #[error(
        "region {id}: the file holds {file_len} bytes but bytes {offset}..{offset}+{len} were \
         asked for; the peer's memory file is shorter than the grant (stale grant or wrong fd)"
    )]
    RegionBeyondFile {
        id: RegionId,
        offset: u64,
        len: usize,
        file_len: u64,
    },

    #[error(
        "more than {max} regions are mapped in this process; drop views and regions of closed \
         channels before opening new ones"
    )]
    TooManyRegions { max: usize },

    #[error(
        "grant on region {id}: bytes {offset}..{offset}+{len} do not lie in the region \
         ({region_len} bytes); the grant does not match the region it names"
    )]
    GrantOutOfRegion {
        id: RegionId,
        offset: usize,
        len: usize,
        region_len: usize,
    },

    #[error(
        "grant on region {id}: offset {offset} / length {len} are not whole pages ({page} \
         bytes) or the length is zero; protections are page-granular, so grant whole pages"
    )]
    GrantNotPageAligned {
        id: RegionId,
        offset: usize,
        len: usize,
        page: usize,
    },

    #[error(
        "view: two grants on region {id} overlap (at offsets {first} and {second}); a page has \
         one permission per view, so merge or split the grants"
    )]
    OverlappingGrants {
        id: RegionId,
        first: usize,
        second: usize,
    },

    #[error("view has no grants; a view must grant at least one range of peer memory")]
    EmptyView,

    #[error(
        "the {0} backend is not available on this machine (PKU needs CPUID PKU+OSPKE and a \
         kernel with protection keys); use Backend::detect() or the mprotect backend"
    )]
    BackendUnavailable(Backend),

    #[error(
        "region {id} is already protected by the {bound} backend and cannot also be used by \
         the {wanted} backend; use one backend per process"
    )]
    BackendMismatch {
        id: RegionId,
        bound: Backend,
        wanted: Backend,
    },

    #[error(
        "region {id} is already granted, under the pku backend, with a different set of ranges \
         or permissions; with PKU a region's key covers all its granted pages, so every view \
         that grants the region must grant exactly the same ranges with the same permissions \
         (give each differing grant its own region)"
    )]
    PkuGrantMismatch { id: RegionId },

    #[error(
        "no protection key is free for region {id} (a process has 15); close channels or use \
         the mprotect backend"
    )]
    NoFreeProtectionKey { id: RegionId },

    #[error(
        "the view list is full ({} entries including the default view 0)",
        MAX_VIEWS
    )]
    TooManyViews,

    #[error("view index {0} is out of range (0..{max})", max = MAX_VIEWS)]
    ViewIndexOutOfRange(ViewIndex),

    #[error("view {0} is not in the view list (never added, or removed)")]
    NoSuchView(ViewIndex),

    #[error(
        "view 0 is the default view (no peer memory); it is left, not entered: enter a \
         protected view by the index ViewList::add returned"
    )]
    DefaultViewNotEnterable,

    #[error(
        "this thread is already inside view {active} and asked to enter view {requested}; \
         views do not nest: leave the first before entering another"
    )]
    NestedEnter {
        active: ViewIndex,
        requested: ViewIndex,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn sys(what: &'static str, source: std::io::Error) -> Self {
        Error::Sys { what, source }
    }
}

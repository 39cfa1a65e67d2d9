//! View lists and the trampoline, in process: what a view opens and closes (checked with
//! kernel-side probes, so nothing here faults), refusals, unwinding, limits, and what per-process
//! (mprotect) and per-thread (pku) protection mean. Violations that kill a process are in
//! `violations.rs`.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Barrier};

use common::{backends, pku_or_skip, readable, region, writable};
use eptp_views::{
    current_view, page_size, Backend, Error, Grant, Perm, View, ViewIndex, ViewList, MAX_VIEWS,
};

fn list_with(backend: Backend, grants: Vec<Grant>) -> (ViewList, ViewIndex) {
    let mut list = ViewList::new(backend).unwrap();
    let idx = list.add(View::new(grants).unwrap()).unwrap();
    (list, idx)
}

#[test]
fn read_grant_opens_for_reading_only_and_only_inside_the_view() {
    for backend in backends("read_grant_opens_for_reading_only_and_only_inside_the_view") {
        let r = region(2, 10);
        let p = page_size();
        let (list, idx) = list_with(backend, vec![Grant::new(r.clone(), 0, p, Perm::Read)]);
        let (first, second) = (r.as_ptr(), r.as_ptr().wrapping_add(p));
        assert!(
            !readable(first),
            "{backend}: granted page readable outside the view"
        );
        let inside = list
            .enter(idx, |v| {
                assert_eq!(v.index(), idx);
                assert_eq!(current_view(), idx);
                // SAFETY: the page is granted Read in the view this closure runs in.
                let b = unsafe { std::ptr::read_volatile(first) };
                (b, readable(first), writable(first, 1), readable(second))
            })
            .unwrap();
        assert_eq!(
            inside,
            (0, true, false, false),
            "{backend}: (byte, read, write, ungranted page read)"
        );
        assert_eq!(current_view(), ViewIndex::DEFAULT);
        assert!(
            !readable(first),
            "{backend}: granted page still readable after leaving"
        );
    }
}

#[test]
fn read_write_grant_opens_for_writing_and_the_data_is_the_peers() {
    for backend in backends("read_write_grant_opens_for_writing_and_the_data_is_the_peers") {
        let r = region(1, 11);
        let (list, idx) = list_with(backend, vec![Grant::whole(r.clone(), Perm::ReadWrite)]);
        let p = r.as_ptr().wrapping_add(100);
        list.enter(idx, |v| {
            let g = &v.grants()[0];
            assert_eq!(g.as_ptr(), r.as_ptr());
            // SAFETY: byte 100 of a whole-region ReadWrite grant, inside its view.
            unsafe { std::ptr::write_volatile(p, 0xA5) };
        })
        .unwrap();
        assert!(
            !readable(p) && !writable(p, 0),
            "{backend}: open after leaving"
        );
        // SAFETY: as above.
        let back = list
            .enter(idx, |_| unsafe { std::ptr::read_volatile(p) })
            .unwrap();
        assert_eq!(back, 0xA5, "{backend}");
    }
}

#[test]
fn panic_inside_trampoline_leaves_the_view() {
    for backend in backends("panic_inside_trampoline_leaves_the_view") {
        let r = region(1, 12);
        let (list, idx) = list_with(backend, vec![Grant::whole(r.clone(), Perm::ReadWrite)]);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            list.enter(idx, |_| {
                assert!(readable(r.as_ptr()));
                panic!("bad descriptor in peer ring");
            })
        }));
        assert!(caught.is_err(), "{backend}: the panic was not propagated");
        assert_eq!(current_view(), ViewIndex::DEFAULT, "{backend}");
        assert!(
            !readable(r.as_ptr()),
            "{backend}: view left open by a panic"
        );
        // The trampoline still works (the mprotect switch lock is not stuck or poisoned).
        assert!(
            list.enter(idx, |_| readable(r.as_ptr())).unwrap(),
            "{backend}"
        );
    }
}

#[test]
fn enter_of_out_of_range_view_index_is_refused() {
    let r = region(1, 13);
    let (list, _) = list_with(Backend::Mprotect, vec![Grant::whole(r, Perm::Read)]);
    for bad in [u16::try_from(MAX_VIEWS).unwrap(), 513, u16::MAX] {
        let e = list
            .enter(ViewIndex::new(bad), |_| panic!("closure must not run"))
            .unwrap_err();
        assert!(
            matches!(e, Error::ViewIndexOutOfRange(i) if i.get() == bad),
            "{e}"
        );
    }
}

#[test]
fn enter_of_default_view_is_refused() {
    let list = ViewList::new(Backend::Mprotect).unwrap();
    let e = list
        .enter(ViewIndex::DEFAULT, |_| panic!("closure must not run"))
        .unwrap_err();
    assert!(matches!(e, Error::DefaultViewNotEnterable), "{e}");
}

#[test]
fn enter_of_removed_or_never_added_view_is_refused() {
    let r = region(1, 14);
    let (mut list, idx) = list_with(Backend::Mprotect, vec![Grant::whole(r.clone(), Perm::Read)]);
    let e = list.enter(ViewIndex::new(7), |_| ()).unwrap_err();
    assert!(matches!(e, Error::NoSuchView(_)), "{e}");
    let view = list.remove(idx).unwrap();
    assert_eq!(view.grants().len(), 1);
    let e = list.enter(idx, |_| ()).unwrap_err();
    assert!(matches!(e, Error::NoSuchView(i) if i == idx), "{e}");
    assert!(matches!(list.remove(idx), Err(Error::NoSuchView(_))));
    assert!(matches!(
        list.remove(ViewIndex::new(600)),
        Err(Error::ViewIndexOutOfRange(_))
    ));
}

#[test]
fn nested_enter_is_refused_and_leaves_the_outer_view_open() {
    for backend in backends("nested_enter_is_refused_and_leaves_the_outer_view_open") {
        let a = region(1, 15);
        let b = region(1, 16);
        let (list, ia) = list_with(backend, vec![Grant::whole(a.clone(), Perm::Read)]);
        let (other, ib) = list_with(backend, vec![Grant::whole(b.clone(), Perm::Read)]);
        list.enter(ia, |_| {
            let e = list
                .enter(ia, |_| panic!("nested closure ran"))
                .unwrap_err();
            assert!(matches!(e, Error::NestedEnter { .. }), "{e}");
            let e = other
                .enter(ib, |_| panic!("nested closure ran"))
                .unwrap_err();
            let Error::NestedEnter { active, requested } = e else {
                panic!("{e}")
            };
            assert_eq!((active, requested), (ia, ib));
            assert!(
                readable(a.as_ptr()),
                "{backend}: refused nested enter closed the outer view"
            );
            assert!(
                !readable(b.as_ptr()),
                "{backend}: refused nested enter opened its view"
            );
            assert_eq!(current_view(), ia);
        })
        .unwrap();
    }
}

#[test]
fn view_list_holds_at_most_512_views() {
    let r = region(1, 17);
    let mut list = ViewList::new(Backend::Mprotect).unwrap();
    for i in 1..MAX_VIEWS {
        let idx = list
            .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
            .unwrap();
        assert_eq!(usize::from(idx.get()), i);
    }
    assert_eq!(list.len(), MAX_VIEWS - 1);
    let e = list
        .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::TooManyViews), "{e}");
    // A freed index is handed out again, lowest first.
    list.remove(ViewIndex::new(300)).unwrap();
    list.remove(ViewIndex::new(42)).unwrap();
    let idx = list
        .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
        .unwrap();
    assert_eq!(idx.get(), 42);
    assert_eq!(list.indices().count(), MAX_VIEWS - 2);
    assert!(list
        .enter(ViewIndex::new(511), |_| readable(r.as_ptr()))
        .unwrap());
}

#[test]
fn pku_backend_is_refused_where_pku_is_missing() {
    if Backend::Pku.available() {
        assert_eq!(Backend::detect(), Backend::Pku);
        assert!(ViewList::new(Backend::Pku).is_ok());
    } else {
        assert_eq!(Backend::detect(), Backend::Mprotect);
        let e = ViewList::new(Backend::Pku).unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable(Backend::Pku)), "{e}");
        assert!(
            e.to_string().contains("mprotect"),
            "the message names the fallback: {e}"
        );
    }
}

#[test]
fn region_stays_mapped_while_the_view_list_holds_it() {
    let r = region(1, 18);
    let ptr = r.as_ptr();
    let (list, idx) = list_with(Backend::Mprotect, vec![Grant::whole(r, Perm::ReadWrite)]);
    // Our Arc is gone; the grant in the list keeps the mapping.
    list.enter(idx, |v| {
        assert_eq!(v.grants()[0].as_ptr(), ptr);
        // SAFETY: whole-region ReadWrite grant, inside its view, region kept alive by the list.
        unsafe { std::ptr::write_volatile(ptr, 3) };
    })
    .unwrap();
}

#[test]
fn view_over_two_regions_opens_and_closes_both() {
    for backend in backends("view_over_two_regions_opens_and_closes_both") {
        let a = region(3, 19);
        let b = region(1, 20);
        let p = page_size();
        let (list, idx) = list_with(
            backend,
            vec![
                Grant::new(a.clone(), 0, p, Perm::ReadWrite),
                Grant::new(a.clone(), 2 * p, p, Perm::Read),
                Grant::whole(b.clone(), Perm::ReadWrite),
            ],
        );
        let a2 = a.as_ptr().wrapping_add(2 * p);
        let a1 = a.as_ptr().wrapping_add(p);
        let seen = list
            .enter(idx, |_| {
                [
                    writable(a.as_ptr(), 1),
                    readable(a1),
                    readable(a2),
                    writable(a2, 1),
                    writable(b.as_ptr(), 1),
                ]
            })
            .unwrap();
        assert_eq!(seen, [true, false, true, false, true], "{backend}");
        for ptr in [a.as_ptr(), a1, a2, b.as_ptr()] {
            assert!(!readable(ptr), "{backend}: left open");
        }
    }
}

#[test]
fn view_is_per_process_with_mprotect_and_per_thread_with_pku() {
    for backend in backends("view_is_per_process_with_mprotect_and_per_thread_with_pku") {
        let r = region(1, 21);
        let (list, idx) = list_with(backend, vec![Grant::whole(r.clone(), Perm::Read)]);
        let inside = Barrier::new(2);
        let probed = Barrier::new(2);
        let ptr = r.as_ptr() as usize;
        let other_thread_sees = std::thread::scope(|s| {
            let h = s.spawn(|| {
                inside.wait();
                let seen = readable(ptr as *const u8);
                probed.wait();
                seen
            });
            list.enter(idx, |_| {
                inside.wait();
                probed.wait();
            })
            .unwrap();
            h.join().unwrap()
        });
        // mprotect: the consequence documented on `Backend` — while one thread is inside a view,
        // the whole process can reach its grants. PKU: only the thread inside.
        assert_eq!(other_thread_sees, backend == Backend::Mprotect, "{backend}");
    }
}

#[test]
fn concurrent_enters_of_views_sharing_a_region_never_close_it_under_each_other() {
    for backend in
        backends("concurrent_enters_of_views_sharing_a_region_never_close_it_under_each_other")
    {
        let r = region(1, 22);
        let mut list = ViewList::new(backend).unwrap();
        let v1 = list
            .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
            .unwrap();
        let v2 = list
            .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
            .unwrap();
        let list = Arc::new(list);
        let start = Arc::new(Barrier::new(2));
        let ptr = r.as_ptr() as usize;
        let workers: Vec<_> = [v1, v2]
            .into_iter()
            .map(|idx| {
                let (list, start) = (list.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..2000).all(|_| {
                        list.enter(idx, |_| {
                            // Widen the window in which the other thread could leave its view.
                            std::thread::yield_now();
                            readable(ptr as *const u8)
                        })
                        .unwrap()
                    })
                })
            })
            .collect();
        for w in workers {
            assert!(
                w.join().unwrap(),
                "{backend}: a view was closed while a thread was inside it"
            );
        }
    }
}

#[test]
fn pku_region_granted_with_different_ranges_by_two_views_is_refused() {
    if !pku_or_skip("pku_region_granted_with_different_ranges_by_two_views_is_refused") {
        return;
    }
    let r = region(2, 23);
    let p = page_size();
    let mut list = ViewList::new(Backend::Pku).unwrap();
    list.add(View::new(vec![Grant::new(r.clone(), 0, p, Perm::Read)]).unwrap())
        .unwrap();
    list.add(View::new(vec![Grant::new(r.clone(), 0, p, Perm::Read)]).unwrap())
        .unwrap();
    let e = list
        .add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::PkuGrantMismatch { .. }), "{e}");
    let e = list
        .add(View::new(vec![Grant::new(r, 0, p, Perm::ReadWrite)]).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::PkuGrantMismatch { .. }), "{e}");
}

#[test]
fn region_switched_by_both_backends_is_refused() {
    if !pku_or_skip("region_switched_by_both_backends_is_refused") {
        return;
    }
    let r = region(1, 24);
    let mut m = ViewList::new(Backend::Mprotect).unwrap();
    m.add(View::new(vec![Grant::whole(r.clone(), Perm::Read)]).unwrap())
        .unwrap();
    let mut k = ViewList::new(Backend::Pku).unwrap();
    let e = k
        .add(View::new(vec![Grant::whole(r, Perm::Read)]).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::BackendMismatch { .. }), "{e}");
}

#[test]
fn view_list_and_regions_can_be_shared_between_poll_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ViewList>();
    shared::<eptp_views::Region>();
    shared::<View>();
}

#[test]
fn trampoline_range_is_a_small_nonempty_code_range() {
    let (start, len) = eptp_views::trampoline_range();
    assert_ne!(start, 0);
    assert!((1..256).contains(&len), "{len}");
}

//! Violations, end to end: each test re-runs this test binary as a child with a scenario named
//! in `EPTP_VIEWS_CHILD` (only `child_scenario_runner` acts on it), in which the child installs
//! the violation handler, touches a peer region the wrong way, and should die. The parent checks
//! how the child died and the report the handler wrote to the child's stderr (a pipe), against
//! the address, region and view the child announced just before the bad access.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

use common::{pku_or_skip, region};
use eptp_views::{
    install_violation_handler, page_size, Backend, Grant, Perm, ReportTo, View, ViewIndex,
    ViewList, Violation, ViolationPolicy, SEGV_ACCERR, SEGV_PKUERR,
};

const CHILD_ENV: &str = "EPTP_VIEWS_CHILD";
const REGION_ID: u64 = 4242;

/// How a child scenario ended.
#[derive(Debug)]
struct Outcome {
    signal: Option<i32>,
    /// The `EXPECT` line the child printed before its bad access, parsed like a report.
    expected: Option<Violation>,
    reports: Vec<Violation>,
    stderr: String,
}

fn run_child(scenario: &str) -> Outcome {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_scenario_runner",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, scenario)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let expected = stderr.lines().find_map(|l| {
        l.strip_prefix("EXPECT ")
            .and_then(|rest| Violation::parse_report(&format!("eptp-views: VIOLATION {rest}")))
    });
    let reports = stderr.lines().filter_map(Violation::parse_report).collect();
    Outcome {
        signal: out.status.signal(),
        expected,
        reports,
        stderr,
    }
}

/// The child died of SIGSEGV after exactly one report naming the announced address, region and
/// view, with the given `si_code`.
fn assert_caught(o: &Outcome, si_code: i32) {
    assert_eq!(
        o.signal,
        Some(libc::SIGSEGV),
        "child did not die of SIGSEGV: {o:#?}"
    );
    let want = o
        .expected
        .unwrap_or_else(|| panic!("child announced nothing: {o:#?}"));
    assert_eq!(o.reports.len(), 1, "{o:#?}");
    let got = o.reports[0];
    assert_eq!(
        (got.addr, got.region, got.view),
        (want.addr, want.region, want.view),
        "{o:#?}"
    );
    assert_eq!(got.si_code, si_code, "{o:#?}");
    assert!(o.stderr.contains("policy=abort") || o.stderr.contains("policy=chain"));
}

fn expected_code(backend: Backend) -> i32 {
    match backend {
        Backend::Mprotect => SEGV_ACCERR,
        Backend::Pku => SEGV_PKUERR,
    }
}

// ---- parent side -------------------------------------------------------------------------

#[test]
fn read_outside_trampoline_is_caught_mprotect() {
    assert_caught(&run_child("read_outside:mprotect"), SEGV_ACCERR);
}

#[test]
fn read_outside_trampoline_is_caught_pku() {
    if pku_or_skip("read_outside_trampoline_is_caught_pku") {
        assert_caught(&run_child("read_outside:pku"), expected_code(Backend::Pku));
    }
}

#[test]
fn write_to_read_only_grant_inside_trampoline_is_caught_mprotect() {
    assert_caught(&run_child("write_read_only:mprotect"), SEGV_ACCERR);
}

#[test]
fn write_to_read_only_grant_inside_trampoline_is_caught_pku() {
    if pku_or_skip("write_to_read_only_grant_inside_trampoline_is_caught_pku") {
        // The key is open inside the view; the page protection refuses the write.
        assert_caught(&run_child("write_read_only:pku"), SEGV_ACCERR);
    }
}

#[test]
fn read_of_ungranted_page_inside_view_is_caught_mprotect() {
    assert_caught(&run_child("read_ungranted:mprotect"), SEGV_ACCERR);
}

#[test]
fn read_of_ungranted_page_inside_view_is_caught_pku() {
    if pku_or_skip("read_of_ungranted_page_inside_view_is_caught_pku") {
        // Ungranted pages of a keyed region stay PROT_NONE.
        assert_caught(&run_child("read_ungranted:pku"), SEGV_ACCERR);
    }
}

#[test]
fn read_after_panic_in_trampoline_is_caught_mprotect() {
    let o = run_child("read_after_panic:mprotect");
    assert!(
        o.stderr.contains("bad descriptor"),
        "the panic did not happen: {o:#?}"
    );
    assert_caught(&o, SEGV_ACCERR);
}

#[test]
fn read_after_panic_in_trampoline_is_caught_pku() {
    if pku_or_skip("read_after_panic_in_trampoline_is_caught_pku") {
        assert_caught(&run_child("read_after_panic:pku"), SEGV_PKUERR);
    }
}

#[test]
fn read_by_other_thread_while_inside_view_is_caught_pku() {
    if pku_or_skip("read_by_other_thread_while_inside_view_is_caught_pku") {
        assert_caught(&run_child("other_thread:pku"), SEGV_PKUERR);
    }
}

#[test]
fn read_outside_trampoline_under_chain_policy_is_reported_then_passed_on() {
    let o = run_child("chain:mprotect");
    // The handler before ours is Rust's, which hands a non-stack-overflow fault to the default
    // action: the process still dies of SIGSEGV, after our report.
    assert_caught(&o, SEGV_ACCERR);
    assert!(o.stderr.contains("policy=chain"), "{o:#?}");
}

#[test]
fn fault_outside_any_region_is_passed_on_unreported() {
    let o = run_child("null_deref");
    assert_eq!(o.signal, Some(libc::SIGSEGV), "{o:#?}");
    assert!(
        o.reports.is_empty(),
        "a fault outside every region was reported: {o:#?}"
    );
    assert!(o.stderr.contains("EXPECT-NOTHING"), "{o:#?}");
}

#[test]
fn stack_overflow_still_reaches_rusts_handler() {
    let o = run_child("stack_overflow");
    assert!(
        o.stderr.contains("has overflowed its stack"),
        "Rust's handler did not run: {o:#?}"
    );
    assert_eq!(o.signal, Some(libc::SIGABRT), "{o:#?}");
    assert!(o.reports.is_empty(), "{o:#?}");
}

// ---- child side --------------------------------------------------------------------------

/// Runs the scenario named in `EPTP_VIEWS_CHILD`; does nothing in a normal test run. A scenario
/// that returns means the bad access was not caught: it exits 0 and the parent's test fails.
#[test]
fn child_scenario_runner() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    no_core_dumps();
    let (name, backend) = match scenario.split_once(':') {
        Some((n, "pku")) => (n.to_string(), Backend::Pku),
        Some((n, _)) => (n.to_string(), Backend::Mprotect),
        None => (scenario.clone(), Backend::Mprotect),
    };
    let policy = if name == "chain" {
        ViolationPolicy::Chain
    } else {
        ViolationPolicy::Abort
    };
    install_violation_handler(policy, ReportTo::Stderr).unwrap();
    match name.as_str() {
        "read_outside" | "chain" => {
            let (_list, _idx, r) = setup(backend, Perm::Read);
            touch(
                r.as_ptr().wrapping_add(page_size() + 40),
                ViewIndex::DEFAULT,
                false,
            );
        }
        "write_read_only" => {
            let (list, idx, r) = setup(backend, Perm::Read);
            list.enter(idx, |_| touch(r.as_ptr().wrapping_add(8), idx, true))
                .unwrap();
        }
        "read_ungranted" => {
            let r = region(3, REGION_ID);
            let p = page_size();
            let mut list = ViewList::new(backend).unwrap();
            let idx = list
                .add(View::new(vec![Grant::new(r.clone(), 0, p, Perm::ReadWrite)]).unwrap())
                .unwrap();
            list.enter(idx, |_| {
                touch(r.as_ptr().wrapping_add(2 * p + 1), idx, false)
            })
            .unwrap();
        }
        "read_after_panic" => {
            let (list, idx, r) = setup(backend, Perm::ReadWrite);
            let res = catch_unwind(AssertUnwindSafe(|| {
                list.enter(idx, |_| panic!("bad descriptor"))
            }));
            assert!(res.is_err());
            touch(r.as_ptr(), ViewIndex::DEFAULT, false);
        }
        "other_thread" => {
            let (list, idx, r) = setup(backend, Perm::Read);
            let addr = r.as_ptr() as usize;
            list.enter(idx, |_| {
                std::thread::scope(|s| {
                    s.spawn(|| touch(addr as *mut u8, ViewIndex::DEFAULT, false));
                });
            })
            .unwrap();
        }
        "null_deref" => {
            eprintln!("EXPECT-NOTHING");
            // SAFETY: deliberately invalid: the point is to fault outside every region.
            unsafe { std::ptr::read_volatile(std::hint::black_box(std::ptr::null::<u8>())) };
        }
        "stack_overflow" => {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .ok();
        }
        other => panic!("unknown scenario {other}"),
    }
    eprintln!("SURVIVED: the bad access was not caught");
}

/// A region of two pages granted whole with `perm` in view 1 of a fresh list.
fn setup(
    backend: Backend,
    perm: Perm,
) -> (ViewList, ViewIndex, std::sync::Arc<eptp_views::Region>) {
    let r = region(2, REGION_ID);
    let mut list = ViewList::new(backend).unwrap();
    let idx = list
        .add(View::new(vec![Grant::whole(r.clone(), perm)]).unwrap())
        .unwrap();
    (list, idx, r)
}

/// Announces the access, then makes it.
fn touch(ptr: *mut u8, view: ViewIndex, write: bool) {
    eprintln!(
        "EXPECT addr={:#x} region={REGION_ID} view={view} si_code=0 tid=0",
        ptr as usize
    );
    if write {
        // SAFETY: `ptr` lies in a live mapping of ours; if the view forbids the write the handler
        // kills the process, which is what the scenario tests.
        unsafe { std::ptr::write_volatile(ptr, 1) };
    } else {
        // SAFETY: as above, for a read.
        unsafe { std::ptr::read_volatile(ptr) };
    }
}

fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let buf = std::hint::black_box([depth; 64]);
    buf[0] + recurse(depth + 1) + std::hint::black_box(1)
}

fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one valid `rlimit`; lowering RLIMIT_CORE only affects this child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

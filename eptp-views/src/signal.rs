//! The SIGSEGV handler leaf: installation (chained to the handler found before ours) and the
//! handler itself. The handler is async-signal-safe: it reads `siginfo`, looks the address up in
//! the region table, records and reports through [`crate::violation`] (atomics, a stack buffer,
//! raw `write`), and either kills the process with SIGSEGV or hands the fault on. A fault
//! outside every registered region (a plain bug, a stack overflow) goes to the previous handler
//! unchanged, so Rust's stack-overflow message still works.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::region::RegionId;
use crate::view::ViewIndex;
use crate::violation::{self, ReportTo, Violation, ViolationPolicy};
use crate::{registry, sys, trampoline};

/// The SIGSEGV action found when ours was installed.
struct Prev(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: PREV is written exactly once, by `install_violation_handler` holding INSTALLED's lock,
// before PREV_SET is published with Release and before our handler is installed; the handler
// reads it only after seeing PREV_SET with Acquire. It is never written again.
unsafe impl Sync for Prev {}

static PREV: Prev = Prev(UnsafeCell::new(MaybeUninit::uninit()));
static PREV_SET: AtomicBool = AtomicBool::new(false);
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Installs the violation handler for SIGSEGV (once per process; later calls only change the
/// policy and the report descriptor). A report descriptor passed in is kept open for the life
/// of the process.
pub fn install_violation_handler(policy: ViolationPolicy, report: ReportTo) -> Result<()> {
    let fd = match report {
        ReportTo::Stderr => 2,
        ReportTo::Fd(fd) => fd.into_raw_fd(),
        ReportTo::Nowhere => -1,
    };
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    violation::set_policy(policy, fd);
    if *installed {
        return Ok(());
    }
    // SAFETY: PREV is written only here, under INSTALLED's lock and before PREV_SET is set, so
    // no reader exists yet; sigaction with a NULL new action only writes the old one into the
    // provided storage, which is large enough for a `sigaction`.
    let r = unsafe {
        libc::sigaction(
            libc::SIGSEGV,
            std::ptr::null(),
            (*PREV.0.get()).as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Error::sys(
            "sigaction (reading the SIGSEGV action)",
            std::io::Error::last_os_error(),
        ));
    }
    PREV_SET.store(true, Ordering::Release);

    // SAFETY: an all-zero `sigaction` is a valid value (no handler, no flags, empty mask).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction =
        on_sigsegv as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    // SA_ONSTACK: a stack overflow is still handled on the alternate stack Rust sets up.
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `new` is a valid, initialised `sigaction`; the handler it names is an
    // `extern "C"` function with the SA_SIGINFO signature, async-signal-safe (see the module
    // documentation); a NULL old-action pointer is allowed.
    let r = unsafe {
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(libc::SIGSEGV, &new, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(Error::sys(
            "sigaction (installing the violation handler)",
            std::io::Error::last_os_error(),
        ));
    }
    *installed = true;
    Ok(())
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life;
    // saved here and restored before returning so the interrupted code sees its own errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGSEGV the
    // fault-address field of the union is the one filled in.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code > 0: sent by the kernel for a real fault (kill(2) and friends send <= 0, and
    // their si_addr means nothing).
    let ours = if code > 0 {
        registry::lookup(addr)
    } else {
        None
    };
    match ours {
        Some(region) => {
            let v = Violation {
                addr,
                region: RegionId(region),
                view: ViewIndex::new(trampoline::current_raw()),
                si_code: code,
                tid: sys::gettid(),
            };
            violation::record(&v);
            let policy = violation::policy();
            violation::report(&v, policy);
            match policy {
                ViolationPolicy::Abort => die(sig),
                ViolationPolicy::Chain => chain(sig, code, info, ctx),
            }
        }
        None => chain(sig, code, info, ctx),
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Restores the default action and re-raises: the signal stays pending while this handler
/// runs (it is blocked during its own handler) and kills the process with SIGSEGV on return.
fn die(sig: libc::c_int) {
    // SAFETY: resetting a signal's disposition to SIG_DFL and raise(3) are async-signal-safe
    // and touch no memory of ours.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Hands the signal to the action found before ours.
fn chain(sig: libc::c_int, code: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if !PREV_SET.load(Ordering::Acquire) {
        die(sig);
        return;
    }
    // SAFETY: PREV_SET was seen set (Acquire), so PREV was fully written and is never written
    // again (see `Prev`).
    let prev = unsafe { (*PREV.0.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_IGN && code <= 0 {
        return; // an ignored SIGSEGV sent by a process stays ignored
    }
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // A real fault cannot be ignored (the kernel forces the default action too).
        die(sig);
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO, `sa_sigaction` holds a handler of this signature, installed
        // by whoever had SIGSEGV before us; we call it as the kernel would have.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO, `sa_sigaction` holds a plain `void (*)(int)` handler
        // (not SIG_DFL/SIG_IGN, excluded above).
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

//! Violations: accesses to peer memory outside the view that grants them (our "EPT
//! violations"). The SIGSEGV handler (installed by [`crate::install_violation_handler`])
//! records each one in a fixed lock-free ring and a counter, writes a one-line report to a
//! pre-registered descriptor, and applies the guest's [`ViolationPolicy`]. Everything the
//! handler calls here is async-signal-safe: atomics, stack buffers, raw `write`.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::region::RegionId;
use crate::view::ViewIndex;

/// `si_code` of a SIGSEGV on a mapped page whose protection forbids the access.
pub const SEGV_ACCERR: i32 = 2;
/// `si_code` of a SIGSEGV refused by a protection key in PKRU.
pub const SEGV_PKUERR: i32 = 4;
const SEGV_MAPERR: i32 = 1;

/// What the handler does after recording and reporting a violation. The guest decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationPolicy {
    /// Restore the default SIGSEGV action and re-raise: the process dies with SIGSEGV, as an EPT
    /// violation would kill a guest.
    Abort,
    /// Hand the fault on to the handler that was installed before ours (the guest's own
    /// recovery or crash reporting); with none, the default action kills the process.
    Chain,
}

/// Where the handler writes its one-line reports.
#[derive(Debug)]
pub enum ReportTo {
    /// File descriptor 2.
    Stderr,
    /// A descriptor of the caller's (a pipe, a log file). It is kept open for the life of the
    /// process: the handler may write to it at any time.
    Fd(OwnedFd),
    /// No report; violations are still recorded and counted.
    Nowhere,
}

/// One recorded violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// Faulting address (`si_addr`).
    pub addr: usize,
    /// Region the address lies in.
    pub region: RegionId,
    /// View the faulting thread was in (0: outside the trampoline).
    pub view: ViewIndex,
    /// `si_code` of the SIGSEGV: [`SEGV_ACCERR`] (mprotect, or a write to a read-only grant),
    /// [`SEGV_PKUERR`] (protection key).
    pub si_code: i32,
    /// Kernel thread id of the faulting thread.
    pub tid: i32,
}

impl Violation {
    /// The `si_code` by name, as in the report.
    pub fn code_name(&self) -> &'static str {
        code_name(self.si_code)
    }

    /// Parses a report line written by the handler, e.g. by a supervisor reading a guest's
    /// stderr: `eptp-views: VIOLATION addr=0x.. region=N view=N si_code=N (NAME) tid=N
    /// policy=P`. Returns `None` for any other line.
    pub fn parse_report(line: &str) -> Option<Violation> {
        let rest = line.trim_end().strip_prefix(REPORT_PREFIX)?;
        let field = |name: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let addr = usize::from_str_radix(field("addr")?.strip_prefix("0x")?, 16).ok()?;
        Some(Violation {
            addr,
            region: RegionId(field("region")?.parse().ok()?),
            view: ViewIndex::new(field("view")?.parse().ok()?),
            si_code: field("si_code")?.parse().ok()?,
            tid: field("tid")?.parse().ok()?,
        })
    }
}

fn code_name(code: i32) -> &'static str {
    match code {
        SEGV_ACCERR => "SEGV_ACCERR",
        SEGV_PKUERR => "SEGV_PKUERR",
        SEGV_MAPERR => "SEGV_MAPERR",
        _ => "other",
    }
}

/// Records kept; older ones are overwritten (the counter still counts them).
pub const RING_LEN: usize = 64;

struct Slot {
    /// 2n+1 while record n is written, 2n+2 once it is complete.
    seq: AtomicU64,
    addr: AtomicUsize,
    region: AtomicU64,
    view: AtomicU64,
    code: AtomicI32,
    tid: AtomicI32,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            seq: AtomicU64::new(0),
            addr: AtomicUsize::new(0),
            region: AtomicU64::new(0),
            view: AtomicU64::new(0),
            code: AtomicI32::new(0),
            tid: AtomicI32::new(0),
        }
    }
}

static RING: [Slot; RING_LEN] = [const { Slot::new() }; RING_LEN];
static COUNT: AtomicU64 = AtomicU64::new(0);

const POLICY_ABORT: u8 = 0;
const POLICY_CHAIN: u8 = 1;
static POLICY: AtomicU8 = AtomicU8::new(POLICY_ABORT);
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

fn slot_of(n: u64) -> &'static Slot {
    let i = usize::try_from(n % RING_LEN as u64).unwrap_or(0);
    &RING[i]
}

/// Appends `v` to the ring and counts it. Async-signal-safe and safe against concurrent
/// writers (each takes its own sequence number).
pub(crate) fn record(v: &Violation) {
    let n = COUNT.fetch_add(1, Ordering::AcqRel);
    let s = slot_of(n);
    s.seq.store(2 * n + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    s.addr.store(v.addr, Ordering::Relaxed);
    s.region.store(v.region.0, Ordering::Relaxed);
    s.view.store(u64::from(v.view.get()), Ordering::Relaxed);
    s.code.store(v.si_code, Ordering::Relaxed);
    s.tid.store(v.tid, Ordering::Relaxed);
    s.seq.store(2 * n + 2, Ordering::Release);
}

/// Violations recorded in this process, oldest first: the last [`RING_LEN`] at most.
pub fn violations() -> Vec<Violation> {
    let head = COUNT.load(Ordering::Acquire);
    let mut out = Vec::new();
    for n in head.saturating_sub(RING_LEN as u64)..head {
        let s = slot_of(n);
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 != 2 * n + 2 {
            continue; // overwritten meanwhile, or still being written
        }
        let v = Violation {
            addr: s.addr.load(Ordering::Relaxed),
            region: RegionId(s.region.load(Ordering::Relaxed)),
            view: ViewIndex::new(u16::try_from(s.view.load(Ordering::Relaxed)).unwrap_or(u16::MAX)),
            si_code: s.code.load(Ordering::Relaxed),
            tid: s.tid.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) == s1 {
            out.push(v);
        }
    }
    out
}

/// Violations caught in this process since it started.
pub fn violation_count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

pub(crate) fn set_policy(policy: ViolationPolicy, fd: libc::c_int) {
    POLICY.store(
        match policy {
            ViolationPolicy::Abort => POLICY_ABORT,
            ViolationPolicy::Chain => POLICY_CHAIN,
        },
        Ordering::Release,
    );
    REPORT_FD.store(fd, Ordering::Release);
}

pub(crate) fn policy() -> ViolationPolicy {
    match POLICY.load(Ordering::Acquire) {
        POLICY_CHAIN => ViolationPolicy::Chain,
        _ => ViolationPolicy::Abort,
    }
}

/// Writes the report of `v` to the registered descriptor, if any. Async-signal-safe.
pub(crate) fn report(v: &Violation, policy: ViolationPolicy) {
    let fd = REPORT_FD.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let mut line = Line::new();
    format_report(v, policy, &mut line);
    crate::sys::write_raw(fd, line.as_bytes());
}

const REPORT_PREFIX: &str = "eptp-views: VIOLATION ";

/// `eptp-views: VIOLATION addr=0x7f.. region=7 view=0 si_code=2 (SEGV_ACCERR) tid=123 policy=abort`
fn format_report(v: &Violation, policy: ViolationPolicy, line: &mut Line) {
    line.push(REPORT_PREFIX);
    line.push("addr=0x");
    line.push_hex(v.addr as u64);
    line.push(" region=");
    line.push_dec(v.region.0);
    line.push(" view=");
    line.push_dec(u64::from(v.view.get()));
    line.push(" si_code=");
    if v.si_code < 0 {
        line.push("-");
    }
    line.push_dec(u64::from(v.si_code.unsigned_abs()));
    line.push(" (");
    line.push(code_name(v.si_code));
    line.push(") tid=");
    line.push_dec(u64::from(v.tid.unsigned_abs()));
    line.push(match policy {
        ViolationPolicy::Abort => " policy=abort\n",
        ViolationPolicy::Chain => " policy=chain\n",
    });
}

/// A fixed stack buffer for one report line: formatting without the allocator.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 192],
            len: 0,
        }
    }

    fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn push(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push_bytes(&digits[i..]);
    }

    fn push_hex(&mut self, mut v: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[usize::try_from(v & 0xf).unwrap_or(0)];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push_bytes(&digits[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Violation {
        Violation {
            addr: 0x7f12_3456_7000,
            region: RegionId(42),
            view: ViewIndex::new(3),
            si_code: SEGV_PKUERR,
            tid: 4711,
        }
    }

    #[test]
    fn report_line_is_formatted_without_allocation_and_parses_back() {
        let mut line = Line::new();
        format_report(&sample(), ViolationPolicy::Abort, &mut line);
        let text = std::str::from_utf8(line.as_bytes()).unwrap();
        assert_eq!(
            text,
            "eptp-views: VIOLATION addr=0x7f1234567000 region=42 view=3 si_code=4 (SEGV_PKUERR) \
             tid=4711 policy=abort\n"
        );
        assert_eq!(Violation::parse_report(text), Some(sample()));
        let mut line = Line::new();
        let extreme = Violation {
            addr: usize::MAX,
            region: RegionId(u64::MAX),
            view: ViewIndex::new(u16::MAX),
            si_code: i32::MIN,
            tid: i32::MAX,
        };
        format_report(&extreme, ViolationPolicy::Chain, &mut line);
        let text = std::str::from_utf8(line.as_bytes()).unwrap();
        assert!(text.ends_with(" policy=chain\n"), "{text}");
        let want =
            "addr=0xffffffffffffffff region=18446744073709551615 view=65535 si_code=-2147483648";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn report_line_of_another_program_is_not_a_violation() {
        assert_eq!(
            Violation::parse_report("thread 'main' panicked at src/lib.rs"),
            None
        );
        assert_eq!(
            Violation::parse_report("eptp-views: VIOLATION addr=zz"),
            None
        );
    }

    #[test]
    fn ring_keeps_the_latest_records_and_counts_all() {
        // The ring is process-wide; this is the only unit test that records into it.
        let before = violation_count();
        for i in 0..(RING_LEN as u64 + 10) {
            record(&Violation {
                addr: 0x1000 + usize::try_from(i).unwrap(),
                ..sample()
            });
        }
        assert_eq!(violation_count(), before + RING_LEN as u64 + 10);
        let v = violations();
        assert_eq!(v.len(), RING_LEN);
        assert_eq!(v.last().unwrap().addr, 0x1000 + RING_LEN + 9);
        assert_eq!(v.first().unwrap().addr, 0x1000 + 10);
        assert!(v.windows(2).all(|w| w[1].addr == w[0].addr + 1));
    }
}

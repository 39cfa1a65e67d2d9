//! Processes the end-to-end tests start (QEMU, switches, DPDK peers): each one killed when its
//! handle drops (panics included) and by a watchdog if the test process dies without unwinding;
//! and the per-test scratch directory for their sockets and logs.

use std::fs::{self, File};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often log files are polled while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Lines of a log shown in an error message.
pub(crate) const TAIL_LINES: usize = 40;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going so Drop can
    // still kill the process.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    format!("{}-{n}-{t}", std::process::id())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A per-test scratch directory for sockets and logs, under the system temp dir (short paths:
/// unix socket paths are limited to 107 bytes).
///
/// Removed when dropped, unless the test is panicking, [`TestDir::keep`] was called or
/// `NFV_KEEP_LOGS` is set: then its path is printed and it stays for inspection.
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Creates `<tmp>/nfv-tests/<test>-<pid>-<n>-<us>/`.
    pub fn new(test: &str) -> Result<TestDir, String> {
        let path = std::env::temp_dir()
            .join("nfv-tests")
            .join(format!("{test}-{}", unique_suffix()));
        fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TestDir { path, keep: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Keeps the directory after the test, even when it passes.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() || std::env::var_os("NFV_KEEP_LOGS").is_some() {
            eprintln!("nfv-tests: logs kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process owned by a test: output to a log file, killed on drop.
pub struct Process {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    /// Kills the child if this process dies without dropping us (see the module doc).
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    /// Signal and grace period used by Drop before SIGKILL; `None`: SIGKILL at once.
    graceful: Option<(&'static str, Duration)>,
}

impl Process {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Process, String> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{name}: open log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{name}: dup log fd: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let pid = child.id();
        let watchdog = spawn_watchdog(pid);
        Ok(Process {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
            child: Mutex::new(child),
            exit: Mutex::new(None),
            watchdog: Mutex::new(watchdog),
            graceful: None,
        })
    }

    /// On drop, send `signal` (for example `"TERM"`) and wait up to `grace` before SIGKILL, so the
    /// process can clean up (DPDK removes its runtime files, the switch closes its sockets).
    pub fn with_graceful_stop(mut self, signal: &'static str, grace: Duration) -> Self {
        self.graceful = Some((signal, grace));
        self
    }

    /// Name given at spawn time (used in messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of the stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// The exit status once the process has exited; never blocks.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                *exit = Some(status);
                drop(exit);
                // Reaped: its pid may be reused, so the watchdog must never fire any more.
                self.stop_watchdog();
                return Some(status);
            }
        }
        *exit
    }

    /// True until the process has exited.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`, ...) with `kill(1)`, which keeps this crate
    /// free of unsafe code. Refused once the process has been reaped (its pid may be reused).
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        // Holding `exit` keeps `exit_status` from reaping between the check and the kill; an
        // exited but unreaped child is a zombie whose pid cannot be reused.
        let exit = lock(&self.exit);
        if let Some(status) = *exit {
            return Err(format!("{} already exited ({status})", self.name));
        }
        let out = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run kill: {e}"))?;
        drop(exit);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kill -{signal} {} ({}): {}",
                self.pid,
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal`, waits up to `grace` for the exit, then kills. Returns the exit status.
    pub fn stop(&self, signal: &str, grace: Duration) -> Option<ExitStatus> {
        if self.signal(signal).is_ok() {
            if let Some(status) = self.wait_exit(grace) {
                return Some(status);
            }
            eprintln!(
                "nfv-tests: {} ignored SIG{signal} for {grace:?}; killing it",
                self.name
            );
        }
        self.kill()
    }

    /// SIGKILL and reap. Returns the exit status (None if it could not be reaped).
    pub fn kill(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            let mut child = lock(&self.child);
            let _ = child.kill();
            *exit = child.wait().ok();
        }
        let status = *exit;
        drop(exit);
        self.stop_watchdog();
        status
    }

    fn stop_watchdog(&self) {
        if let Some((mut watchdog, stdin)) = lock(&self.watchdog).take() {
            // Kill before closing its stdin: a closed stdin is its cue to kill our child's pid.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            drop(stdin);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some((signal, grace)) = self.graceful {
            if self.is_running() {
                self.stop(signal, grace);
            }
        }
        self.kill();
    }
}

/// `sh` waiting on a pipe whose only writer is this process; when the pipe closes (this process
/// died) it SIGKILLs `pid`. Best effort: without `sh` there is only the Drop guard.
fn spawn_watchdog(pid: u32) -> Option<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read -r _ignored; kill -KILL \"$1\" 2>/dev/null")
        .arg("nfv-watchdog")
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

/// Waits until every path is a unix socket, failing early when `owner` exits.
pub fn wait_for_sockets(paths: &[&Path], timeout: Duration, owner: &Process) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<&&Path> = paths
            .iter()
            .filter(|p| {
                !fs::metadata(p)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false)
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let why = if let Some(status) = owner.exit_status() {
            format!("{} exited ({status})", owner.name())
        } else if Instant::now() >= deadline {
            format!("not there after {timeout:?}")
        } else {
            std::thread::sleep(POLL);
            continue;
        };
        return Err(format!(
            "vhost-user socket(s) {:?} of {}: {why}\n--- {} (last {TAIL_LINES} lines) ---\n{}",
            missing,
            owner.name(),
            owner.log_path().display(),
            owner.log_tail(TAIL_LINES)
        ));
    }
}

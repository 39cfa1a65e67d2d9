//! Progress on stderr while trials run: a line when a step starts and one when it ends; on a
//! terminal, a ticking elapsed-time line in between. The ticker sleeps between updates, so it
//! never becomes a third busy thread.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Steps of a command.
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// Seconds since the command started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A message outside the steps.
    pub fn note(&self, msg: &str) {
        eprintln!("[bench] {msg}");
    }

    /// Starts step `what`, expected to take about `expect_secs`; the ticker runs until the
    /// returned guard is finished or dropped.
    pub fn start(&mut self, what: &str, expect_secs: f64) -> Step {
        self.done += 1;
        let tag = if self.total > 0 {
            format!("[bench {}/{}]", self.done, self.total)
        } else {
            format!("[bench #{}]", self.done)
        };
        eprintln!("{tag} {what}: running (~{expect_secs:.1} s)");
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = self.tty.then(|| {
            let stop = stop.clone();
            let line = format!("{tag} {what}");
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let el = t0.elapsed().as_secs_f64();
                    let width = 20usize;
                    let filled = if expect_secs > 0.0 {
                        crate::num::floor_u64((el / expect_secs).min(1.0) * width as f64)
                    } else {
                        0
                    };
                    let filled = crate::num::small(filled).min(width);
                    let mut e = std::io::stderr().lock();
                    let _ = write!(
                        e,
                        "\r{line} [{}{}] {el:.1}/{expect_secs:.1} s\x1b[K",
                        "#".repeat(filled),
                        ".".repeat(width - filled)
                    );
                    let _ = e.flush();
                }
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "\r\x1b[K");
                let _ = e.flush();
            })
        });
        Step {
            tag,
            what: what.to_owned(),
            stop,
            ticker,
            t0: Instant::now(),
        }
    }
}

/// A running step.
pub struct Step {
    tag: String,
    what: String,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    t0: Instant,
}

impl Step {
    fn stop_ticker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }

    /// Ends the step with a one-line result.
    pub fn finish(mut self, result: &str) {
        self.stop_ticker();
        eprintln!(
            "{} {}: {result} ({:.1} s)",
            self.tag,
            self.what,
            self.t0.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

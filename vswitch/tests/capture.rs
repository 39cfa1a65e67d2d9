//! `vswitchctl capture` against the real switch: frames from in-process guests come out as a
//! pcap file (or a pipe) that `tcpdump -r` reads, byte for byte what the guests sent, while
//! forwarding goes on; Ctrl-C, `--count` and a deleted port end a capture cleanly; every bad
//! input is refused with a message and its exit status.
#![forbid(unsafe_code)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

use common::*;

const A: u8 = 1;
const B: u8 = 2;

fn under_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("yes")
    )
}

/// tcpdump, or a loud SKIPPED (a failure under CI, where .ci/run installs it).
fn tcpdump() -> Option<&'static str> {
    let ok = Command::new("tcpdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some("tcpdump");
    }
    if under_ci() {
        panic!("required under CI: tcpdump; .ci/run installs it");
    }
    eprintln!("\n*** SKIPPED: tcpdump is not available on this machine; install it (see .ci/run) to read the capture back with it ***\n");
    None
}

/// The frames of a pcap file, as our own reader sees them: (length on the wire, bytes).
fn pcap_frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    assert!(
        bytes.len() >= 24,
        "no pcap file header: {} bytes",
        bytes.len()
    );
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "pcap magic");
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let mut at = 24;
    let mut out = Vec::new();
    while at < bytes.len() {
        let cap = u32_at(at + 8) as usize;
        let orig = u32_at(at + 12);
        out.push((orig, bytes[at + 16..at + 16 + cap].to_vec()));
        at += 16 + cap;
    }
    out
}

/// tcpdump's one line per frame (it hex-dumps unknown EtherTypes on indented lines after it).
fn frame_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .collect()
}

/// The lines `r` yields, on a channel, read by a thread of their own.
fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A running `vswitchctl capture` whose stderr lines arrive on a channel.
struct Capture {
    child: Child,
    stderr: Receiver<String>,
}

impl Capture {
    /// Starts `vswitchctl capture ARGS` and waits until the switch has attached it.
    fn start(sw: &Switch, args: &[&str]) -> Capture {
        let mut child = Command::new(VSWITCHCTL)
            .arg("--ctl")
            .arg(&sw.ctl)
            .arg("capture")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines_of(child.stderr.take().unwrap());
        let line = rx
            .recv_timeout(RECV_TIMEOUT)
            .unwrap_or_else(|_| panic!("no word from vswitchctl capture\n{}", sw.report()));
        assert!(line.contains("capturing on"), "{line}\n{}", sw.report());
        Capture { child, stderr: rx }
    }

    /// Waits for the exit; returns its code and the remaining stderr.
    fn finish(mut self) -> (i32, String) {
        let mut status = None;
        assert!(
            wait_for(RECV_TIMEOUT, || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            }),
            "vswitchctl capture did not end"
        );
        let rest: Vec<String> = self.stderr.iter().collect();
        (status.unwrap().code().unwrap_or(-1), rest.join("\n"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vswitchctl ARGS` without a switch behind it (refusals that need none).
fn ctl_alone(args: &[&str]) -> Finished {
    let mut all = vec!["--ctl".into(), "/nonexistent/vswitch.ctl".into()];
    all.extend(args.iter().map(|a| a.into()));
    run_to_exit(VSWITCHCTL, &all, RECV_TIMEOUT)
}

/// Two guests, a and b, learned by the switch.
fn two_guests(test: &str) -> (Switch, vhost_user::guest::Guest, vhost_user::guest::Guest) {
    let sw = SwitchBuilder::new(test).server("a").server("b").spawn();
    let mut a = connect(&sw.sock("a"), "a");
    let mut b = connect(&sw.sock("b"), "b");
    send_one(&mut a, &frame(BROADCAST, mac(A), b"hello from a"));
    send_one(&mut b, &frame(BROADCAST, mac(B), b"hello from b"));
    assert_eq!(recv_n(&mut b, 1, RECV_TIMEOUT).len(), 1);
    assert_eq!(recv_n(&mut a, 1, RECV_TIMEOUT).len(), 1);
    (sw, a, b)
}

#[test]
fn capture_rx_to_a_file_is_what_the_guest_sent_and_tcpdump_reads_it() {
    let _heavy = heavy();
    let (sw, mut a, mut b) = two_guests("capture-file");
    let file = sw.dir.join("a.pcap");
    let cap = Capture::start(
        &sw,
        &[
            "a",
            "--direction",
            "rx",
            "--count",
            "10",
            "-w",
            file.to_str().unwrap(),
        ],
    );
    let frames: Vec<Vec<u8>> = (0..10u16)
        .map(|i| {
            frame(
                mac(B),
                mac(A),
                &payload(u64::from(i), 60 + 100 * usize::from(i)),
            )
        })
        .collect();
    send(&mut a, &frames);
    assert_eq!(
        recv_n(&mut b, 10, RECV_TIMEOUT),
        frames,
        "forwarding goes on while capturing"
    );
    let (code, stderr) = cap.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("10 frame(s) captured, 0 dropped") && stderr.contains("count reached"),
        "{stderr}"
    );
    let got = pcap_frames(&std::fs::read(&file).unwrap());
    let want: Vec<(u32, Vec<u8>)> = frames
        .iter()
        .map(|f| (u32::try_from(f.len()).unwrap(), f.clone()))
        .collect();
    assert_eq!(got, want, "the capture holds exactly the frames a sent");

    let Some(tcpdump) = tcpdump() else { return };
    let out = Command::new(tcpdump)
        .args(["-nn", "-e", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = frame_lines(&text);
    assert_eq!(lines.len(), 10, "tcpdump reads 10 frames:\n{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("02:00:00:00:00:01 > 02:00:00:00:00:02")),
        "{text}"
    );
}

#[test]
fn capture_both_directions_streams_into_tcpdump_through_a_pipe() {
    let _heavy = heavy();
    let Some(_) = tcpdump() else { return };
    let (sw, mut a, mut b) = two_guests("capture-pipe");
    let script = format!(
        "'{}' --ctl '{}' capture b --count 4 -w - | tcpdump -nn -e -r -",
        VSWITCHCTL,
        sw.ctl.display()
    );
    let mut pipeline = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(pipeline.stderr.take().unwrap());
    let started = stderr.recv_timeout(RECV_TIMEOUT).unwrap_or_default();
    assert!(
        started.contains("capturing on"),
        "{started}\n{}",
        sw.report()
    );
    let to_b = frame(mac(B), mac(A), b"to b");
    let from_b = frame(mac(A), mac(B), b"from b");
    send(&mut a, &[to_b.clone(), to_b.clone()]);
    send(&mut b, &[from_b.clone(), from_b.clone()]);
    let out = pipeline.wait_with_output().unwrap();
    let rest: Vec<String> = stderr.iter().collect();
    assert!(out.status.success(), "{out:?} {rest:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = frame_lines(&text);
    assert_eq!(lines.len(), 4, "{text}\n{rest:?}");
    let tx = lines
        .iter()
        .filter(|l| l.contains("02:00:00:00:00:01 > 02:00:00:00:00:02"));
    let rx = lines
        .iter()
        .filter(|l| l.contains("02:00:00:00:00:02 > 02:00:00:00:00:01"));
    assert_eq!((tx.count(), rx.count()), (2, 2), "{text}");
}

#[test]
fn capture_ends_cleanly_on_sigint_and_when_its_port_is_deleted() {
    let _heavy = heavy();
    let (sw, mut a, mut b) = two_guests("capture-stop");
    let file = sw.dir.join("stop.pcap");
    let cap = Capture::start(&sw, &["a", "-w", file.to_str().unwrap()]);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| frame(mac(B), mac(A), &payload(i, 80)))
        .collect();
    send(&mut a, &frames);
    assert_eq!(recv_n(&mut b, 3, RECV_TIMEOUT).len(), 3);
    assert!(
        wait_for(RECV_TIMEOUT, || std::fs::read(&file)
            .is_ok_and(|f| f.len() > 24 && pcap_frames(&f).len() == 3)),
        "the capture file is written as frames come"
    );
    assert!(signal(cap.child.id(), "INT"));
    let (code, stderr) = cap.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("3 frame(s) captured") && stderr.contains("client stopped"),
        "{stderr}"
    );
    assert_eq!(pcap_frames(&std::fs::read(&file).unwrap()).len(), 3);

    // The port can be captured again, and deleting it ends that capture.
    let cap = Capture::start(&sw, &["b", "-w", file.to_str().unwrap()]);
    let del = sw.vswitchctl(&["del-port", "b"]);
    assert!(del.status.success(), "{del:?}");
    let (code, stderr) = cap.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("port deleted"), "{stderr}");
}

#[test]
fn test_capture_unknown_port() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("capture-unknown").server("a").spawn();
    let file = sw.dir.join("x.pcap");
    let out = sw.vswitchctl(&["capture", "nope", "-w", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no port named `nope`"), "{stderr}");
}

#[test]
fn test_capture_port_already_captured() {
    let _heavy = heavy();
    let sw = SwitchBuilder::new("capture-twice").server("a").spawn();
    let first = sw.dir.join("1.pcap");
    let second = sw.dir.join("2.pcap");
    let _cap = Capture::start(&sw, &["a", "-w", first.to_str().unwrap()]);
    let out = sw.vswitchctl(&["capture", "a", "-w", second.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already being captured"), "{stderr}");
}

#[test]
fn test_capture_bad_direction() {
    let done = ctl_alone(&[
        "capture",
        "a",
        "--direction",
        "sideways",
        "-w",
        "/tmp/x.pcap",
    ]);
    assert_eq!(done.code(), 2, "{done:?}");
    assert!(
        done.stderr.contains("sideways") && done.stderr.contains("rx"),
        "{done:?}"
    );
}

#[test]
fn test_capture_count_0() {
    let done = ctl_alone(&["capture", "a", "--count", "0", "-w", "/tmp/x.pcap"]);
    assert_eq!(done.code(), 2, "{done:?}");
    assert!(done.stderr.contains("--count"), "{done:?}");
}

#[test]
fn test_capture_unwritable_file() {
    let path = "/nonexistent-dir/capture.pcap";
    let done = ctl_alone(&["capture", "a", "-w", path]);
    assert_eq!(done.code(), 4, "{done:?}");
    assert!(
        done.stderr.contains(path) && done.stderr.contains("cannot write"),
        "{done:?}"
    );
    assert!(!Path::new(path).exists());
}

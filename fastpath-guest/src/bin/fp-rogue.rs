//! `fp-rogue`: a misbehaving fast-path guest, for tests. It is what the fast path must survive:
//!
//! - it carries a WRPKRU instruction outside its trampoline, so the hooks must refuse it any view
//!   (`--ask copy`: it asks to be the user of a copy channel);
//! - as the owner of a channel it fills its dedicated queue with hostile descriptors (indices
//!   past the queue, loops, buffers past the region, nested indirect tables) between good
//!   frames (`--hostile zero-copy`: it is the sender of a zero-copy channel; `--hostile copy`: it
//!   is the receiver of a copy channel and posts hostile receive buffers).
//!
//! It prints a JSON line saying what happened.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fastpath_guest::cli::{init_logging, mac_arg, GuestArgs};
use fastpath_guest::frame;
use fastpath_guest::FastpathGuest;
use hypervisor_hooks::proto::Mode;
use vhost_user::ring::{Descriptor, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Copy,
    ZeroCopy,
}

#[derive(Debug, Parser)]
#[command(name = "fp-rogue", about = "A misbehaving fast-path guest, for tests")]
struct Cli {
    #[command(flatten)]
    guest: GuestArgs,
    /// The peer's MAC.
    #[arg(long, value_parser = mac_arg)]
    peer: [u8; 6],
    /// Ask for a channel as its user (the hooks must refuse: stray WRPKRU).
    #[arg(long, value_enum)]
    ask: Option<Which>,
    /// Be the owner of a channel and feed the peer hostile descriptors.
    #[arg(long, value_enum)]
    hostile: Option<Which>,
    /// Seconds to keep misbehaving.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
}

/// Never called: its bytes are what the hooks' scan must find. `black_box` on its address keeps
/// the linker from dropping it.
#[inline(never)]
fn stray_wrpkru() {
    // SAFETY: never executed; the instruction bytes only have to exist in our text.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::asm!(".byte 0x0f, 0x01, 0xef", options(nomem, nostack))
    };
}

fn main() -> ExitCode {
    init_logging();
    fastpath_guest::handle_print_trampoline();
    let cli = Cli::parse();
    std::hint::black_box(stray_wrpkru as fn());
    match run(&cli) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fp-rogue: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<serde_json::Value, String> {
    let mut g = FastpathGuest::connect(&cli.guest.config()).map_err(|e| e.to_string())?;
    if let Some(w) = cli.ask {
        let mode = if w == Which::Copy {
            Mode::Copy
        } else {
            Mode::ZeroCopy
        };
        // The peer may not have registered with the hooks yet: ask again until it has, so the
        // answer is about us (our trampoline, the policy), not about start-up order.
        return Ok(match open_retrying(&mut g, cli.peer, mode) {
            Ok(id) => serde_json::json!({"granted": true, "channel": id}),
            Err(reason) => serde_json::json!({"granted": false, "reason": reason}),
        });
    }
    let Some(w) = cli.hostile else {
        return Err("give --ask or --hostile".into());
    };
    let deadline = Instant::now() + Duration::from_secs_f64(cli.duration);
    let channel = match w {
        // We send: we own the zero-copy transmit queue.
        Which::ZeroCopy => open_retrying(&mut g, cli.peer, Mode::ZeroCopy)?,
        // We receive: wait for the peer to open a copy channel to us.
        Which::Copy => wait_for_channel(&mut g, deadline)?,
    };
    let mut rounds = 0u64;
    let mut good = 0u64;
    let mut buf = vec![0u8; 128];
    let mut received = 0u64;
    while Instant::now() < deadline {
        g.poll_events().map_err(|e| e.to_string())?;
        // Keep taking what arrives (and so reposting good buffers among the bad).
        received += g.recv(256, |_| {}).map_err(|e| e.to_string())? as u64;
        let q = g
            .dedicated_queue(channel)
            .ok_or("the channel went away (revoked)")?;
        q.reclaim();
        let base = q.buf_gpa(0);
        let size = u64::from(q.size());
        let bad_desc = |k: u64| -> Descriptor {
            let len = 256u32;
            let write = if w == Which::Copy {
                VRING_DESC_F_WRITE
            } else {
                0
            };
            match k % 5 {
                // A buffer far past the region.
                0 => Descriptor {
                    addr: base + (1 << 40),
                    len,
                    flags: write,
                    next: 0,
                },
                // Length running past the end of the region.
                1 => Descriptor {
                    addr: base,
                    len: u32::MAX,
                    flags: write,
                    next: 0,
                },
                // A chain that loops on itself.
                2 => Descriptor {
                    addr: base,
                    len: 0,
                    flags: write | VRING_DESC_F_NEXT,
                    next: 0,
                },
                // `next` past the queue.
                3 => Descriptor {
                    addr: base,
                    len: 64,
                    flags: write | VRING_DESC_F_NEXT,
                    next: 60000,
                },
                // An indirect table pointing at itself (nested indirect).
                _ => Descriptor {
                    addr: base,
                    len: 16,
                    flags: VRING_DESC_F_INDIRECT,
                    next: 0,
                },
            }
        };
        // Write the hostile descriptors over a few slots, then a good frame, publish.
        if w == Which::Copy {
            // A receiver has every buffer posted already (it reposts what comes back at once):
            // rewrite posted descriptors and one posted avail entry in place. Publishing more
            // entries than the queue holds would be an index a queue ahead, which stops the
            // queue for good: that hostile input has tests of its own, and after it no good
            // buffer among the bad could get a frame.
            for k in 0..4u64 {
                let id = u16::try_from((rounds * 8 + k) % size).unwrap_or(0);
                q.raw().write_desc(id, bad_desc(rounds * 4 + k));
            }
            // A head index past the queue, in an entry published but maybe not yet taken.
            let slot = q
                .avail_idx()
                .wrapping_sub(1 + u16::try_from(rounds % 8).unwrap_or(0));
            q.raw()
                .set_avail_entry(slot, u16::try_from(size + 3).unwrap_or(u16::MAX));
        } else {
            for k in 0..4u64 {
                let id = u16::try_from((rounds * 8 + k) % size).unwrap_or(0);
                q.raw().write_desc(id, bad_desc(rounds * 4 + k));
                q.push_avail(id);
            }
            // A head index past the queue.
            q.push_avail(u16::try_from(size + 3).unwrap_or(u16::MAX));
        }
        if w == Which::ZeroCopy {
            frame::build(
                &mut buf,
                cli.peer,
                cli.guest.mac,
                good,
                notify::tsc::now(),
                128,
            );
            if q.push_tx(&buf) {
                good += 1;
            }
        }
        q.publish();
        g.notify_peer(channel);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(serde_json::json!({
        "channel": channel,
        "hostile_rounds": rounds,
        "good_frames_sent": good,
        "frames_received": received,
    }))
}

fn open_retrying(g: &mut FastpathGuest, peer: [u8; 6], mode: Mode) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match g.open_channel(peer, mode, "spin", Duration::from_secs(5)) {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() < deadline && e.to_string().contains("registered") => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn wait_for_channel(g: &mut FastpathGuest, deadline: Instant) -> Result<u64, String> {
    loop {
        g.poll_events().map_err(|e| e.to_string())?;
        if let Some(c) = g.channels().iter().find(|c| !c.sends()) {
            return Ok(c.id);
        }
        if Instant::now() >= deadline {
            return Err("no peer opened a channel to us".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! Poll-mode threads: each polls the guest transmit queues and uplink receive queues assigned
//! to it, switches every burst (learn the source, look up the destination, flood the rest) and
//! delivers it: into guests' receive queues, into an uplink's device buffers, or encapsulated
//! into a VXLAN tunnel's uplink.
//!
//! A burst is either descriptor chains from a guest or bytes from a device (frames in mbufs, or
//! inner frames after decapsulation). The classification and the grouping by destination are
//! one generic function over both (`frames`), compiled once per kind, so the guest-to-guest
//! path runs the same code it always did.
//!
//! The loop does no allocation, takes no blocking lock and makes no system call per packet:
//! per burst it takes the source queue's and each destination queue's slot with `try_lock`
//! (one uncontended atomic each), copies each frame once from the source guest's buffer into the
//! destination guest's buffer, publishes each used ring once, and notifies each guest at most
//! once — and only when the guest asked for interrupts (a polling guest never costs a syscall).
//! Configuration changes arrive through a lock-free command queue, checked once per iteration.
//!
//! The parts, each leaning only on those listed before it: `frames` (a burst as the switch reads
//! it), `dest` (a port as a destination), `arp` (a VTEP's ARP), `deliver` (a burst into one
//! destination), `forward` (the [`Forwarder`]: receive, classify, deliver) and `thread` (the
//! loop, its commands and the control plane's [`PmdHandle`]).

mod arp;
mod deliver;
mod dest;
mod forward;
mod frames;
mod thread;

pub use dest::Dest;
pub use forward::{Forwarder, Shared};
pub use thread::{Command, PmdCounters, PmdHandle};

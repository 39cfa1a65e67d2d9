//! The hooks protocol: what a fast-path guest and the hooks authority (inside the switch) say to
//! each other. Messages are JSON objects; region and doorbell descriptors travel beside them as
//! SCM_RIGHTS (see [`crate::wire`]).
//!
//! A channel carries frames from a sender A to a receiver B without the switch:
//! - copy mode: B dedicates one receive queue (in a region of its own) to A; A is granted a view
//!   of that region and acts as the device of that queue, copying frames into B's buffers;
//! - zero-copy mode: A dedicates one transmit queue (in a region of its own) to B; B is granted
//!   a read-mostly view and acts as the device, processing frames in place.
//!   The side that dedicates is the *owner*; the side granted a view is the *user*.

use serde::{Deserialize, Serialize};

/// Version of this protocol; a peer speaking another one is refused.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Copy,
    ZeroCopy,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Copy => "copy",
            Mode::ZeroCopy => "zero-copy",
        })
    }
}

/// Permission of one range of a dedicated region, as granted to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perm {
    Read,
    ReadWrite,
}

/// One page-aligned range of a dedicated region and what the user may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRange {
    pub offset: u64,
    pub len: u64,
    pub perm: Perm,
}

/// Where the dedicated queue lives in its region, in the owner's terms: the region's
/// guest-physical base (descriptors carry guest-physical addresses) and frontend-virtual base
/// (ring addresses), and the rings' frontend-virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLayout {
    pub region_len: u64,
    pub gpa_base: u64,
    pub uva_base: u64,
    pub queue_size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// virtio-net header length of the frames (10 or 12).
    pub hdr_len: u8,
    pub mrg_rxbuf: bool,
}

/// The trampoline a user claims: the only code that switches views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trampoline {
    /// Address of its first byte in the guest process.
    pub start: u64,
    pub len: u64,
}

/// Guest to hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum GuestMsg {
    /// First message: who the guest is. The hooks check that the process on this connection is
    /// the one connected to `port` over vhost-user.
    Hello {
        version: u32,
        port: String,
        mac: String,
        trampoline: Trampoline,
        /// Notification strategies the guest can use.
        notify: Vec<String>,
    },
    /// Ask for a channel to the guest with MAC `peer`.
    Open {
        request: u64,
        peer: String,
        mode: Mode,
        notify: String,
    },
    /// Answer to [`HooksMsg::Dedicate`]: the region (fd 0) and doorbell (fd 1) are attached.
    Dedicated {
        request: u64,
        layout: QueueLayout,
        grants: Vec<GrantRange>,
        doorbell_len: u64,
    },
    /// Refusal of a [`HooksMsg::Dedicate`].
    DedicateFailed { request: u64, reason: String },
    /// The guest stops using a channel by itself.
    Close { channel: u64 },
}

/// Hooks to guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum HooksMsg {
    Welcome {
        version: u32,
    },
    /// Dedicate a queue for a channel with `peer`: the guest answers [`GuestMsg::Dedicated`]
    /// or [`GuestMsg::DedicateFailed`].
    Dedicate {
        request: u64,
        peer: String,
        mode: Mode,
        notify: String,
    },
    /// The channel asked for with `Open` is granted: region (fd 0) and doorbell (fd 1)
    /// attached. The receiver of this message is the user of the region.
    Granted {
        request: u64,
        channel: u64,
        peer: String,
        mode: Mode,
        notify: String,
        layout: QueueLayout,
        grants: Vec<GrantRange>,
        doorbell_len: u64,
    },
    /// The owner's side: the channel it dedicated a queue for is live. `request` is the `Open`
    /// this answers when the owner asked for the channel (zero-copy), else 0.
    Opened {
        request: u64,
        channel: u64,
        peer: String,
        mode: Mode,
        notify: String,
    },
    /// An `Open` was refused, with the reason.
    Refused {
        request: u64,
        reason: String,
    },
    /// Stop using the channel now (peer gone, port disconnected, policy changed).
    Revoke {
        channel: u64,
        reason: String,
    },
}

/// The doorbell: a small shared page beside each channel's region, always mapped by both guests
/// (unlike the region, which the user reaches only through its view). It holds the notification
/// words and the channel's counters, which the switch reads to show the channel to an operator.
pub mod doorbell {
    /// Size of the doorbell file.
    pub const LEN: u64 = 4096;
    /// Magic number at offset 0 once the owner has initialised the page.
    pub const MAGIC: u64 = 0x4e46_5644_4f4f_5231; // "NFVDOOR1"
    /// Notification word the user writes to wake the owner (cache line of its own).
    pub const WORD_TO_OWNER: usize = 64;
    /// Notification word the owner writes to wake the user.
    pub const WORD_TO_USER: usize = 128;
    /// Counters, u64 each, written by the side named.
    pub const SENT_PACKETS: usize = 256; // sender
    pub const SENT_BYTES: usize = 264; // sender
    pub const SENDER_DROPS: usize = 272; // sender: no room in the queue
    pub const RECEIVED_PACKETS: usize = 320; // receiver, own cache line
    pub const RECEIVED_BYTES: usize = 328; // receiver
    pub const DEVICE_ERRORS: usize = 336; // the user (device side): refused descriptor chains
}

/// Parses a MAC written as `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        // Two hex digits exactly: `from_str_radix` alone would take a sign (`+0`).
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `hooks_messages` fuzz target (fuzz/regressions/hooks_messages).
    #[test]
    fn test_parse_mac_sign_in_a_field() {
        assert_eq!(parse_mac("02:00:+0:00:0a:0b"), None);
        assert_eq!(parse_mac("02:00:-0:00:0a:0b"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:0g"), None);
        assert_eq!(parse_mac("02:00:00:00:0a"), None);
        assert_eq!(parse_mac("02:00:00:00:0a:0b:0c"), None);
        assert_eq!(
            parse_mac("02:00:Fe:00:0a:0b"),
            Some([2, 0, 0xfe, 0, 0x0a, 0x0b])
        );
    }

    #[test]
    fn messages_roundtrip_as_json() {
        let m = GuestMsg::Open {
            request: 7,
            peer: "02:00:00:00:00:02".into(),
            mode: Mode::ZeroCopy,
            notify: "futex".into(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"msg\":\"open\""), "{s}");
        assert!(s.contains("\"zero-copy\""), "{s}");
        assert_eq!(serde_json::from_str::<GuestMsg>(&s).unwrap(), m);
    }

    #[test]
    fn test_mac_malformed() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0g:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_unknown_message_refused() {
        assert!(serde_json::from_str::<GuestMsg>(r#"{"msg":"format-disk"}"#).is_err());
        assert!(serde_json::from_str::<GuestMsg>(r#"{"msg":"open","request":1}"#).is_err());
    }
}

//! Announcing a guest that has arrived on a port after a live migration: the frontend's
//! `SEND_RARP` (for guests without `VIRTIO_NET_F_GUEST_ANNOUNCE`) becomes a RARP frame from
//! the guest's MAC, switched as if the guest had sent it through the port, so the FDB learns
//! the MAC's new port at once and every other port of the segment hears the broadcast (and any
//! upstream switch with them).
//!
//! The port's session thread posts the MAC into the port's [`Announce`] mailbox; whichever
//! poll thread next polls one of the port's queues takes it and injects the frame (see
//! `pmd::forward`). The mailbox costs the poll loop one relaxed load per poll when empty.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::eth::Mac;

/// EtherType of RARP (RFC 903).
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// RARP operation "request reverse" (RFC 903), what an announcement sends.
pub const RARP_REQUEST_REVERSE: u16 = 3;
/// An Ethernet frame without FCS is at least this long; the RARP is padded to it.
pub const RARP_FRAME_LEN: usize = 60;

/// Set in a posted word so that the all-zero word means "nothing pending".
const POSTED: u64 = 1 << 63;

/// A port's pending announcement: at most one MAC (a later one replaces it).
#[derive(Debug, Default)]
pub struct Announce {
    pending: AtomicU64,
    /// Announcements injected into the segment.
    pub sent: AtomicU64,
}

impl Announce {
    /// Asks for `mac` to be announced from this port.
    pub fn post(&self, mac: Mac) {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(&mac);
        self.pending
            .store(u64::from_le_bytes(w) | POSTED, Ordering::Release);
    }

    /// The MAC to announce, if one was posted since the last call; taken by one caller only.
    #[inline]
    pub fn take(&self) -> Option<Mac> {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.take_slow()
    }

    #[cold]
    #[inline(never)]
    fn take_slow(&self) -> Option<Mac> {
        let w = self.pending.swap(0, Ordering::Acquire);
        if w == 0 {
            return None;
        }
        let b = (w & !POSTED).to_le_bytes();
        Some([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) != 0
    }
}

/// The RARP a moved guest's announcement is: broadcast, from `mac`, "request reverse" with the
/// guest as sender and target hardware address and no protocol addresses, padded to the
/// Ethernet minimum.
pub fn rarp_frame(mac: Mac) -> [u8; RARP_FRAME_LEN] {
    let mut f = [0u8; RARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    // Hardware type Ethernet, protocol IPv4, address lengths 6 and 4.
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&RARP_REQUEST_REVERSE.to_be_bytes());
    f[22..28].copy_from_slice(&mac); // sender hardware address
                                     // 28..32: sender protocol address, unknown (0).
    f[32..38].copy_from_slice(&mac); // target hardware address
                                     // 38..42: target protocol address, 0; the rest is padding.
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_holds_the_last_mac_until_taken_once() {
        let a = Announce::default();
        assert_eq!(a.take(), None);
        a.post([2, 0, 0, 0, 0, 1]);
        a.post([2, 0, 0, 0, 0, 2]);
        assert!(a.is_pending());
        assert_eq!(a.take(), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(a.take(), None);
        // The all-zero MAC is still a posted MAC (the backend refuses it, but the mailbox must
        // not confuse it with "empty").
        a.post([0; 6]);
        assert_eq!(a.take(), Some([0; 6]));
    }

    #[test]
    fn rarp_frame_fields() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let f = rarp_frame(mac);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), 0x8035);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 3]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[0; 4]);
        assert_eq!(&f[32..38], &mac);
        assert!(f[38..].iter().all(|&b| b == 0));
    }
}

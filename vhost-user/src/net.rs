//! virtio-net: the device feature set this crate offers, the per-packet header, and the device
//! configuration space (MAC, status, queue pairs, MTU).

use virtio_bindings::virtio_config::{
    VIRTIO_F_ANY_LAYOUT, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::message::VHOST_USER_F_PROTOCOL_FEATURES;

const fn bit(b: u32) -> u64 {
    1u64 << b
}

pub const F_MTU: u64 = bit(VIRTIO_NET_F_MTU);
pub const F_MAC: u64 = bit(VIRTIO_NET_F_MAC);
pub const F_MRG_RXBUF: u64 = bit(VIRTIO_NET_F_MRG_RXBUF);
pub const F_STATUS: u64 = bit(VIRTIO_NET_F_STATUS);
pub const F_CTRL_VQ: u64 = bit(VIRTIO_NET_F_CTRL_VQ);
pub const F_MQ: u64 = bit(VIRTIO_NET_F_MQ);
pub const F_ANY_LAYOUT: u64 = bit(VIRTIO_F_ANY_LAYOUT);
pub const F_INDIRECT_DESC: u64 = bit(VIRTIO_RING_F_INDIRECT_DESC);
pub const F_EVENT_IDX: u64 = bit(VIRTIO_RING_F_EVENT_IDX);
pub const F_VERSION_1: u64 = bit(VIRTIO_F_VERSION_1);
pub const F_IN_ORDER: u64 = bit(VIRTIO_F_IN_ORDER);
/// The packed ring layout ([`crate::packed`]).
pub const F_RING_PACKED: u64 = bit(VIRTIO_F_RING_PACKED);
pub const F_GUEST_ANNOUNCE: u64 = bit(VIRTIO_NET_F_GUEST_ANNOUNCE);
/// `VHOST_F_LOG_ALL` (vhost, not virtio): the frontend wants every write into guest memory
/// logged in the dirty log (live migration). Acked only while a migration runs.
pub const F_LOG_ALL: u64 = bit(26);

/// What the switch offers a virtio-net frontend. No checksum or segmentation offloads: the
/// switch forwards frames as they are, and a guest that never sends GSO frames never makes the
/// switch segment them. The control queue is the frontend's own (QEMU and virtio-user handle it
/// and tell us about queue pairs with `SET_VRING_ENABLE`). IN_ORDER: the device side returns
/// every chain in the order it was made available, which lets drivers (DPDK's virtio PMD) use
/// their in-order fast paths. LOG_ALL and GUEST_ANNOUNCE are for live migration: the first
/// lets the frontend have our writes logged, the second lets a guest announce itself after a
/// move (without it, the frontend asks us to with `SEND_RARP`). RING_PACKED: the engine serves
/// packed rings as fully as split ones (chains, indirect, mergeable buffers, event suppression,
/// IN_ORDER, dirty logging).
pub const DEVICE_FEATURES: u64 = F_VERSION_1
    | F_RING_PACKED
    | F_IN_ORDER
    | F_ANY_LAYOUT
    | F_MRG_RXBUF
    | F_INDIRECT_DESC
    | F_EVENT_IDX
    | F_MQ
    | F_CTRL_VQ
    | F_MTU
    | F_MAC
    | F_STATUS
    | F_GUEST_ANNOUNCE
    | F_LOG_ALL
    | VHOST_USER_F_PROTOCOL_FEATURES;

/// Names of feature bits, for `vswitchctl show`.
pub fn feature_names(bits: u64) -> Vec<&'static str> {
    const ALL: &[(u64, &str)] = &[
        (F_MTU, "MTU"),
        (F_MAC, "MAC"),
        (F_MRG_RXBUF, "MRG_RXBUF"),
        (F_STATUS, "STATUS"),
        (F_CTRL_VQ, "CTRL_VQ"),
        (F_MQ, "MQ"),
        (F_ANY_LAYOUT, "ANY_LAYOUT"),
        (F_INDIRECT_DESC, "INDIRECT_DESC"),
        (F_EVENT_IDX, "EVENT_IDX"),
        (VHOST_USER_F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES"),
        (F_VERSION_1, "VERSION_1"),
        (F_IN_ORDER, "IN_ORDER"),
        (F_RING_PACKED, "RING_PACKED"),
        (F_GUEST_ANNOUNCE, "GUEST_ANNOUNCE"),
        (F_LOG_ALL, "LOG_ALL"),
    ];
    ALL.iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Length of the virtio-net header for the negotiated features: 12 bytes with VERSION_1 or
/// MRG_RXBUF (it has `num_buffers`), 10 for a legacy device without MRG_RXBUF.
pub fn header_len(features: u64) -> usize {
    if features & (F_VERSION_1 | F_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

/// The largest Ethernet frame (without FCS) the switch carries: a 9000-byte MTU plus an Ethernet
/// header and one VLAN tag.
pub const MAX_FRAME: usize = 9000 + 14 + 4;

/// Smallest frame accepted from a guest: a bare Ethernet header.
pub const MIN_FRAME: usize = 14;

/// Offset of `num_buffers` in the 12-byte header.
pub const NUM_BUFFERS_OFFSET: usize = 10;

/// A virtio-net header with no offloads requested and `num_buffers` buffers used.
pub fn rx_header(num_buffers: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[NUM_BUFFERS_OFFSET..].copy_from_slice(&num_buffers.to_le_bytes());
    h
}

/// virtio-net device configuration space (virtio 1.x §5.1.4), as returned by `GET_CONFIG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub mac: [u8; 6],
    pub status: u16,
    pub max_virtqueue_pairs: u16,
    pub mtu: u16,
}

/// `status` bit: link up.
pub const NET_S_LINK_UP: u16 = 1;

impl NetConfig {
    pub const SIZE: usize = 12;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..6].copy_from_slice(&self.mac);
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..10].copy_from_slice(&self.max_virtqueue_pairs.to_le_bytes());
        b[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        b
    }

    /// Applies a driver write to the config space. Only the MAC is driver-writable (legacy
    /// drivers set it there); writes elsewhere are refused.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), &'static str> {
        let end = offset
            .checked_add(data.len())
            .ok_or("config write overflows")?;
        if end > 6 {
            return Err("only the MAC field of the virtio-net config space is writable");
        }
        self.mac[offset..end].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_by_features() {
        assert_eq!(header_len(F_VERSION_1), 12);
        assert_eq!(header_len(F_MRG_RXBUF), 12);
        assert_eq!(header_len(0), 10);
    }

    #[test]
    fn test_config_write_outside_mac() {
        let mut c = NetConfig {
            mac: [0; 6],
            status: 1,
            max_virtqueue_pairs: 1,
            mtu: 1500,
        };
        assert!(c.write(6, &[1, 2]).is_err());
        assert!(c.write(usize::MAX, &[1]).is_err());
        c.write(2, &[9, 9]).unwrap();
        assert_eq!(c.mac, [0, 0, 9, 9, 0, 0]);
    }
}

//! Line-rate arithmetic: what a link of a given speed carries at a given frame size, and the
//! figures every result row derives from a packet rate.
//!
//! On the wire every frame is followed by 20 bytes that carry no data (7 bytes preamble, 1 byte
//! start-of-frame delimiter, 12 bytes inter-frame gap), so a link of `link_bps` carries at most
//! `link_bps / ((S + 20) * 8)` frames of S bytes per second: 14.88 Mpps at 64 B on 10GbE.
//!
//! `frame_size` is the frame as a guest hands it to its virtio-net device; software has no FCS,
//! so a 64-byte frame here is what `dpdk-testpmd --txpkts=64` sends (and what loop_bench.sh
//! measures). Gbit/s counts the frame's own bits; the line-rate percentages count the 20 bytes
//! of overhead too, as a NIC would spend them.

/// Preamble, start-of-frame delimiter and inter-frame gap, in bytes.
pub const WIRE_OVERHEAD_BYTES: u32 = 20;
/// 10 Gigabit Ethernet.
pub const LINK_10G_BPS: f64 = 10e9;
/// 40 Gigabit Ethernet.
pub const LINK_40G_BPS: f64 = 40e9;
/// Smallest frame the scenarios generate: the Ethernet minimum, and room for the benchmark's
/// sequence number and timestamp.
pub const MIN_FRAME: u32 = 64;
/// Largest frame: the standard Ethernet maximum (RFC 2544's largest size).
pub const MAX_FRAME: u32 = 1518;
/// The RFC 2544 frame sizes for Ethernet (without 1280, which it lists for some media only).
pub const RFC2544_SIZES: [u32; 6] = [64, 128, 256, 512, 1024, 1518];

/// Frames per second a link of `link_bps` carries at `frame_size` bytes.
pub fn line_rate_pps(link_bps: f64, frame_size: u32) -> f64 {
    link_bps / (f64::from(frame_size + WIRE_OVERHEAD_BYTES) * 8.0)
}

/// The figures of a result row that follow from the packet rate and the frame size alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateFigures {
    pub mpps: f64,
    /// Frame bits per second, in Gbit/s (no wire overhead).
    pub gbps: f64,
    pub line_rate_10g_pct: f64,
    pub line_rate_40g_pct: f64,
}

impl RateFigures {
    pub fn new(pps: f64, frame_size: u32) -> RateFigures {
        RateFigures {
            mpps: pps / 1e6,
            gbps: pps * f64::from(frame_size) * 8.0 / 1e9,
            line_rate_10g_pct: 100.0 * pps / line_rate_pps(LINK_10G_BPS, frame_size),
            line_rate_40g_pct: 100.0 * pps / line_rate_pps(LINK_40G_BPS, frame_size),
        }
    }
}

/// Checks a frame size against what the scenarios can generate.
pub fn check_frame_size(size: u32) -> crate::error::Result<u32> {
    if (MIN_FRAME..=MAX_FRAME).contains(&size) {
        Ok(size)
    } else {
        Err(crate::error::Error::BadFrameSize(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn sixty_four_bytes_is_14_88_mpps_at_10gbe_and_59_52_at_40gbe() {
        assert!(close(line_rate_pps(LINK_10G_BPS, 64) / 1e6, 14.88, 0.005));
        assert!(close(line_rate_pps(LINK_40G_BPS, 64) / 1e6, 59.52, 0.005));
        // The exact values: 10e9 / 672 and 40e9 / 672.
        assert!(close(line_rate_pps(LINK_10G_BPS, 64), 14_880_952.38, 0.01));
        assert!(close(line_rate_pps(LINK_40G_BPS, 64), 59_523_809.52, 0.01));
    }

    #[test]
    fn larger_frames_follow_the_formula() {
        // 1518 B at 10GbE: 10e9 / (1538 * 8) = 812,743.8 fps.
        assert!(close(line_rate_pps(LINK_10G_BPS, 1518), 812_743.8, 0.1));
        assert!(close(line_rate_pps(LINK_10G_BPS, 128), 8_445_945.9, 0.1));
        assert!(close(line_rate_pps(LINK_10G_BPS, 512), 2_349_624.1, 0.1));
    }

    #[test]
    fn figures_at_line_rate_are_one_hundred_percent() {
        let pps = line_rate_pps(LINK_10G_BPS, 64);
        let f = RateFigures::new(pps, 64);
        assert!(close(f.mpps, 14.880_952, 1e-6));
        assert!(close(f.line_rate_10g_pct, 100.0, 1e-9));
        assert!(close(f.line_rate_40g_pct, 25.0, 1e-9));
        // 64 of every 84 wire bytes are frame: 10 * 64 / 84 Gbit/s.
        assert!(close(f.gbps, 10.0 * 64.0 / 84.0, 1e-9));
    }

    #[test]
    fn test_frame_size_out_of_range() {
        assert!(check_frame_size(63).is_err());
        assert!(check_frame_size(1519).is_err());
        assert_eq!(check_frame_size(64).unwrap(), 64);
        assert_eq!(check_frame_size(1518).unwrap(), 1518);
    }
}

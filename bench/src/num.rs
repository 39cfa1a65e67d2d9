//! Conversions between rates, seconds and TSC cycles, and the loss of a window. Float-to-integer
//! `as` casts saturate in Rust (NaN becomes 0), which is the wanted behaviour for every use here,
//! so the lint against truncating casts is allowed in this one place.

/// TSC cycles in `secs` seconds at `hz`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn cycles(secs: f64, hz: u64) -> u64 {
    (secs * hz as f64) as u64
}

/// `x` rounded down to an integer, saturating at 0 and `u64::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn floor_u64(x: f64) -> u64 {
    x as u64
}

/// A count that fits a ring of at most `usize` entries.
#[allow(clippy::cast_possible_truncation)]
pub fn small(v: u64) -> usize {
    debug_assert!(usize::try_from(v).is_ok());
    v as usize
}

/// `count` per second over `seconds`; 0 for an empty window.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The lost fraction of `sent`; 0 when nothing was sent (and never below 0 when more arrived).
pub fn loss_ratio(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(received) as f64 / sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(cycles(1.5, 2_000_000_000), 3_000_000_000);
        assert_eq!(floor_u64(-1.0), 0);
        assert_eq!(floor_u64(f64::NAN), 0);
        assert_eq!(floor_u64(1e30), u64::MAX);
        assert_eq!(floor_u64(2.9), 2);
        assert_eq!(small(7), 7);
    }

    #[test]
    fn rates_and_loss_of_empty_windows_are_zero() {
        assert_eq!(per_second(10, 2.0), 5.0);
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(loss_ratio(0, 0), 0.0);
        assert_eq!(loss_ratio(4, 3), 0.25);
        assert_eq!(loss_ratio(4, 5), 0.0);
    }
}

//! Conversions between rates, seconds and TSC cycles. Float-to-integer `as` casts saturate in
//! Rust (NaN becomes 0), which is the wanted behaviour for every use here, so the lint against
//! truncating casts is allowed in this one place.

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
}

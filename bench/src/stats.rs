//! Statistics over repeated trials: median, min, max, spread and paired ratios, so a figure
//! comes with how much it moved between rounds and a `noisy` mark when it moved too much.

use serde::{Deserialize, Serialize};

/// Spread ((max - min) / median) above which a figure is marked noisy.
pub const NOISY_SPREAD: f64 = 0.15;

/// One figure over several trials.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max - min) / median; `None` when the median is zero (no relative spread exists).
    pub spread: Option<f64>,
    pub noisy: bool,
    pub trials: usize,
}

/// Median of `xs` (mean of the two middle values for an even count); `None` when empty or
/// when a value is NaN.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Summary of `xs`; `None` when empty or NaN. A zero median has no spread and is not noisy
/// unless the values differ, in which case it is noisy (a relative spread would be infinite).
pub fn summarize(xs: &[f64]) -> Option<Summary> {
    let med = median(xs)?;
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let spread = (med != 0.0).then(|| (max - min) / med.abs());
    let noisy = match spread {
        Some(s) => s > NOISY_SPREAD,
        None => max > min,
    };
    Some(Summary {
        median: med,
        min,
        max,
        spread,
        noisy,
        trials: xs.len(),
    })
}

/// Paired ratio: `num[i] / den[i]` per round, then their summary. Rounds with a zero
/// denominator are skipped; `None` when the lengths differ or no round remains.
pub fn paired_ratio(num: &[f64], den: &[f64]) -> Option<Summary> {
    if num.len() != den.len() {
        return None;
    }
    let ratios: Vec<f64> = num
        .iter()
        .zip(den)
        .filter(|(_, d)| **d != 0.0)
        .map(|(n, d)| n / d)
        .collect();
    summarize(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count_is_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn empty_input_has_no_summary() {
        assert_eq!(median(&[]), None);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn spread_and_noisy_mark() {
        let s = summarize(&[10.0, 11.0, 9.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (10.0, 9.0, 11.0));
        assert!((s.spread.unwrap() - 0.2).abs() < 1e-12);
        assert!(s.noisy);
        let q = summarize(&[10.0, 10.5, 9.5]).unwrap();
        assert!(!q.noisy);
    }

    #[test]
    fn zero_median_has_no_spread() {
        let s = summarize(&[0.0, 0.0, 0.0]).unwrap();
        assert_eq!(s.spread, None);
        assert!(!s.noisy);
        assert!(summarize(&[0.0, 0.0, 1.0]).unwrap().noisy);
    }

    #[test]
    fn paired_ratio_is_median_of_per_round_ratios() {
        // Per-round ratios 2, 1, 6 -> median 2, where the ratio of the medians (6 / 2) is 3:
        // the pairing is what is tested.
        let r = paired_ratio(&[10.0, 2.0, 6.0], &[5.0, 2.0, 1.0]).unwrap();
        assert_eq!(r.median, 2.0);
        assert_eq!(paired_ratio(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None);
    }
}

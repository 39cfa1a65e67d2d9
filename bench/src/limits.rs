//! Each data path against its own limit, from the same run: copy mode against `ring-limit`
//! (a frame copied through shared memory), zero-copy against `ring-limit-desc` (a descriptor
//! through shared memory, the frame read in place). A path above its limit means the limit is
//! not the best transfer this machine allows, and the line says so.

use crate::report::Row;

/// (label, path scenario, limit scenario)
pub const PAIRS: [(&str, &str, &str); 2] = [
    ("copy", "fastpath-copy", "ring-limit"),
    ("zero-copy", "fastpath-zerocopy", "ring-limit-desc"),
];

/// One line per frame size that has a path and its limit.
pub fn limit_ratios(rows: &[Row]) -> Vec<String> {
    let find = |name: &str, size: u32| {
        rows.iter()
            .find(|r| r.scenario == name && r.frame_size == size && r.mpps > 0.0)
    };
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.frame_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut out = Vec::new();
    for size in sizes {
        let parts: Vec<String> = PAIRS
            .iter()
            .filter_map(|&(label, path, limit)| {
                let (p, l) = (find(path, size)?, find(limit, size)?);
                let x = p.mpps / l.mpps;
                let flag = if x > 1.0 {
                    " (ABOVE ITS LIMIT: the limit is wrong)"
                } else {
                    ""
                };
                Some(format!("{label} {x:.2}x of {limit}{flag}"))
            })
            .collect();
        if !parts.is_empty() {
            out.push(format!(
                "fast path / its limit at {size} B, this run: {}",
                parts.join(", ")
            ));
        }
    }
    out
}

/// The rows' details (the ring's winning configuration, the views' costs), one line each.
pub fn details(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            r.detail
                .as_ref()
                .map(|d| format!("  {} {} B: {d}", r.scenario, r.frame_size))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: &str, size: u32, mpps: u64) -> Row {
        let n = mpps * 1_000_000;
        let m = crate::scenario::Measurement {
            sent: n,
            received: n,
            seconds: 1.0,
            cycles_per_packet: 100.0,
            cycles_of: "loop",
            latency: crate::latency::Latency::new(),
            errors: 0,
            detail: None,
        };
        Row::new(s, size, None, &m)
    }

    #[test]
    fn paths_are_compared_with_their_own_limit() {
        let rows = [
            row("fastpath-copy", 64, 20),
            row("ring-limit", 64, 80),
            row("fastpath-zerocopy", 64, 45),
            row("ring-limit-desc", 64, 50),
        ];
        assert_eq!(
            limit_ratios(&rows),
            vec![
                "fast path / its limit at 64 B, this run: copy 0.25x of ring-limit, zero-copy 0.90x of ring-limit-desc"
            ]
        );
    }

    #[test]
    fn a_path_above_its_limit_is_flagged() {
        let rows = [
            row("fastpath-zerocopy", 64, 60),
            row("ring-limit-desc", 64, 50),
        ];
        let l = limit_ratios(&rows);
        assert!(
            l[0].contains("1.20x of ring-limit-desc (ABOVE ITS LIMIT"),
            "{l:?}"
        );
    }

    #[test]
    fn no_line_without_the_limit_row() {
        assert!(limit_ratios(&[row("fastpath-copy", 64, 20)]).is_empty());
    }
}

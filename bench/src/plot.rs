//! The plot: Mpps against frame size, one line per scenario, with the 10GbE and 40GbE line-rate
//! curves drawn in (dashed), on a log scale so a system call and the bare ring fit one picture.
//! Written as SVG and as PNG (for the README), in pure Rust: the one font is DejaVu Sans,
//! embedded by the `dejavu` crate, so no system font lookup can fail on a bare machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::linerate::{line_rate_pps, LINK_10G_BPS, LINK_40G_BPS, MAX_FRAME, MIN_FRAME};
use crate::report::Row;

const SIZE: (u32, u32) = (1000, 640);
const FONT: &str = "sans-serif";
/// Scenario colours: distinct on white and from the black/grey line-rate curves.
const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; if it ever were not, text would be
        // missing from the plot and the drawing call reports it.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The SVG and PNG paths for `--plot FILE`: FILE itself, and FILE with the other extension.
pub fn paths(file: &Path) -> (PathBuf, PathBuf) {
    match file.extension().and_then(|e| e.to_str()) {
        Some("png") => (file.with_extension("svg"), file.to_owned()),
        Some("svg") => (file.to_owned(), file.with_extension("png")),
        _ => (
            PathBuf::from(format!("{}.svg", file.display())),
            PathBuf::from(format!("{}.png", file.display())),
        ),
    }
}

/// Writes the plot of `rows` to `svg` and `png`.
pub fn write(rows: &[Row], title: &str, svg: &Path, png: &Path) -> Result<()> {
    register_font();
    let err = |p: &Path| {
        let p = p.to_owned();
        move |message: String| Error::Output { path: p, message }
    };
    draw(SVGBackend::new(svg, SIZE).into_drawing_area(), rows, title).map_err(err(svg))?;
    let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw(
        BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(),
        rows,
        title,
    )
    .map_err(err(png))?;
    write_png(png, &rgb).map_err(err(png))
}

/// Encodes an RGB buffer of [`SIZE`] as PNG.
fn write_png(path: &Path, rgb: &[u8]) -> std::result::Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(rgb).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

/// Scenario -> points (frame size, Mpps), sorted by size; zero rates left out (no log of 0).
fn series(rows: &[Row]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        if !order.contains(&r.scenario) {
            order.push(r.scenario.clone());
        }
        if r.mpps > 0.0 {
            by.entry(r.scenario.clone())
                .or_default()
                .push((f64::from(r.frame_size), r.mpps));
        }
    }
    order
        .into_iter()
        .map(|name| {
            let mut pts = by.remove(&name).unwrap_or_default();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, pts)
        })
        .collect()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[Row],
    title: &str,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let data = series(rows);
    let top = line_rate_pps(LINK_40G_BPS, MIN_FRAME) / 1e6;
    let bottom = line_rate_pps(LINK_10G_BPS, MAX_FRAME) / 1e6;
    let (mut lo, mut hi) = (bottom / 2.0, top * 1.5);
    for (_, pts) in &data {
        for &(_, y) in pts {
            lo = lo.min(y / 2.0);
            hi = hi.max(y * 1.5);
        }
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..1600.0f64, (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("frame size (bytes)")
        .y_desc("Mpps (log scale)")
        .x_labels(9)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(e)?;

    let grey = RGBColor(110, 110, 110);
    for (link, label, color) in [
        (LINK_40G_BPS, "40GbE line rate", BLACK),
        (LINK_10G_BPS, "10GbE line rate", grey),
    ] {
        let pts: Vec<(f64, f64)> = (MIN_FRAME..=MAX_FRAME)
            .step_by(2)
            .map(|s| (f64::from(s), line_rate_pps(link, s) / 1e6))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(pts, 8, 5, color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    for (i, (name, pts)) in data.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyNs;

    fn row(s: &str, size: u32, mpps: f64) -> Row {
        Row {
            scenario: s.into(),
            frame_size: size,
            mpps,
            gbps: 0.0,
            line_rate_10g_pct: 0.0,
            line_rate_40g_pct: 0.0,
            cycles_per_packet: 0.0,
            loss_ratio: 0.0,
            latency_ns: LatencyNs {
                p50: None,
                p99: None,
                p999: None,
            },
            cycles_of: "loop".into(),
            detail: None,
            packets_sent: 0,
            packets_received: 0,
            duration_s: 1.0,
            rate_limit_mpps: None,
            latency_samples: 0,
            errors: 0,
            trials: 1,
            mpps_per_round: vec![Some(mpps)],
            stats: None,
            noisy: false,
        }
    }

    #[test]
    fn plot_paths_pair_svg_and_png() {
        assert_eq!(
            paths(Path::new("/x/p.svg")),
            (PathBuf::from("/x/p.svg"), PathBuf::from("/x/p.png"))
        );
        assert_eq!(
            paths(Path::new("p.png")),
            (PathBuf::from("p.svg"), PathBuf::from("p.png"))
        );
        assert_eq!(
            paths(Path::new("p")),
            (PathBuf::from("p.svg"), PathBuf::from("p.png"))
        );
    }

    #[test]
    fn series_are_sorted_by_size_and_skip_zero_rates() {
        let rows = [
            row("b", 128, 2.0),
            row("a", 64, 1.0),
            row("b", 64, 3.0),
            row("a", 128, 0.0),
        ];
        let s = series(&rows);
        assert_eq!(s[0].0, "b");
        assert_eq!(s[0].1, vec![(64.0, 3.0), (128.0, 2.0)]);
        assert_eq!(s[1].1, vec![(64.0, 1.0)]);
    }

    #[test]
    fn svg_and_png_are_written_with_the_line_rate_curves() {
        let dir = std::env::temp_dir().join(format!("bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (svg, png) = (dir.join("p.svg"), dir.join("p.png"));
        let rows = [row("ring-limit", 64, 40.0), row("ring-limit", 1518, 5.0)];
        write(&rows, "test", &svg, &png).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("10GbE line rate") && text.contains("ring-limit"));
        let head = std::fs::read(&png).unwrap();
        assert_eq!(&head[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

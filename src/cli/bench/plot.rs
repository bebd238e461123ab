//! Zeroing time against tensor count (the sweep over the first N mixed tensors), as a PNG.

use std::path::Path;

use plotters::prelude::*;

use crate::base::{Error, Result};
use crate::cli::bench::report::Report;

/// One line of the plot: an implementation and its `(tensor count, seconds)` points,
/// sorted by count.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The implementation (`per_tensor`, `foreach`, `arena`).
    pub name: String,
    /// `(tensors, median seconds per call)`.
    pub points: Vec<(usize, f64)>,
}

/// The zeroing series of `report` for `dtype`: every timed `zero` record over a `mixedN`
/// set, grouped by implementation (per_tensor, foreach, arena, in that order).
pub fn zero_sweep(report: &Report, dtype: &str) -> Vec<Series> {
    ["per_tensor", "foreach", "arena"]
        .iter()
        .map(|&name| {
            let mut points: Vec<(usize, f64)> = report
                .results
                .iter()
                .filter(|r| {
                    r.bench == "zero"
                        && r.imp.as_deref() == Some(name)
                        && r.dtype.as_deref() == Some(dtype)
                })
                .filter(|r| r.set.as_deref().is_some_and(|s| s.starts_with("mixed")))
                .filter_map(|r| r.seconds.map(|s| (r.tensors, s)))
                .collect();
            points.sort_by_key(|p| p.0);
            points.dedup_by_key(|p| p.0);
            Series {
                name: name.into(),
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
const LABEL_PX: f32 = 14.0;
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");
const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("bench", format!("{}: {e}", path.display()))
}

/// Powers of ten covering `[lo, hi]` (both > 0).
fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a..=b).map(|e| 10f64.powi(e)).collect()
}

/// Text of a time on a decade line.
fn time_label(s: f64) -> String {
    crate::cli::bench::report::format_seconds(s)
        .replace(".000", "")
        .replace(".00", "")
        .replace(".0 ", " ")
}

/// Draws the zeroing sweep of `report` for `dtype` (log-log: tensors against time per
/// call, one line per implementation) into a PNG at `path`.
pub fn plot_zero_sweep(report: &Report, dtype: &str, path: &Path) -> Result<()> {
    let series = zero_sweep(report, dtype);
    if series.is_empty() {
        return Err(plot_error(path, "no timed zeroing sweep to plot"));
    }
    let all: Vec<(usize, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let x1 = all.iter().map(|p| p.0).max().unwrap_or(1).max(10) as f64;
    let ys: Vec<f64> = all.iter().map(|p| p.1).filter(|y| *y > 0.0).collect();
    let y0 = ys.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
    let y1 = ys.iter().copied().fold(0.0, f64::max) * 2.0;
    if !(y0.is_finite() && y0 > 0.0 && y1 > y0) {
        return Err(plot_error(path, "the sweep has no positive times"));
    }
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    let mut labels: Vec<(String, i32, i32, f32)> = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(90)
            .margin_right(30)
            .margin_top(50)
            .margin_bottom(50)
            .build_cartesian_2d((0.8f64..x1 * 1.25).log_scale(), (y0..y1).log_scale())
            .map_err(|e| plot_error(path, e))?;
        let grid = RGBColor(225, 225, 225);
        let line = |pts: Vec<(f64, f64)>, c: RGBColor| std::iter::once(PathElement::new(pts, c));
        for x in decades(1.0, x1).into_iter().filter(|x| *x <= x1 * 1.25) {
            chart
                .draw_series(line(vec![(x, y0), (x, y1)], grid))
                .map_err(|e| plot_error(path, e))?;
            let (px, py) = chart.backend_coord(&(x, y0));
            labels.push((format!("{x}"), px - 8, py + 6, LABEL_PX));
        }
        for y in decades(y0, y1).into_iter().filter(|y| *y >= y0 && *y <= y1) {
            chart
                .draw_series(line(vec![(0.8, y), (x1 * 1.25, y)], grid))
                .map_err(|e| plot_error(path, e))?;
            let (px, py) = chart.backend_coord(&(0.8, y));
            labels.push((time_label(y), px - 80, py - 8, LABEL_PX));
        }
        let frame = vec![
            (0.8, y0),
            (x1 * 1.25, y0),
            (x1 * 1.25, y1),
            (0.8, y1),
            (0.8, y0),
        ];
        chart
            .draw_series(line(frame, BLACK))
            .map_err(|e| plot_error(path, e))?;
        for (i, s) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(n, t)| (n as f64, t)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| plot_error(path, e))?;
            let (lx, ly) = (110, 60 + 22 * i as i32);
            root.draw(&Rectangle::new(
                [(lx, ly + 4), (lx + 24, ly + 10)],
                c.filled(),
            ))
            .map_err(|e| plot_error(path, e))?;
            labels.push((s.name.clone(), lx + 30, ly - 1, LABEL_PX));
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let title = format!(
        "zero_grad(set_to_none=False), {dtype}, {}: time per call",
        report.meta.device
    );
    labels.push((title, 90, 15, 16.0));
    labels.push((
        "tensors (first N of mixed1000)".into(),
        (WIDTH / 2 - 120) as i32,
        (HEIGHT - 30) as i32,
        LABEL_PX,
    ));
    draw_text(&mut buf, &labels).map_err(|e| plot_error(path, e))?;
    let png = crate::cli::plot::encode_png(&buf, WIDTH, HEIGHT)?;
    std::fs::write(path, png).map_err(|e| Error::io(path, e))
}

/// Renders `(text, left, top, pixel size)` labels in black into the RGB buffer.
fn draw_text(
    buf: &mut [u8],
    labels: &[(String, i32, i32, f32)],
) -> std::result::Result<(), String> {
    use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
    let font = FontRef::try_from_slice(FONT).map_err(|e| e.to_string())?;
    for (text, left, top, px) in labels {
        let scaled = font.as_scaled(PxScale::from(*px));
        let mut x = *left as f32;
        let baseline = *top as f32 + scaled.ascent();
        for c in text.chars() {
            let id = font.glyph_id(c);
            let glyph = id.with_scale_and_position(*px, ab_glyph::point(x, baseline));
            x += scaled.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, cov| {
                    let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    if (0..WIDTH as i64).contains(&px) && (0..HEIGHT as i64).contains(&py) {
                        let i = (py as usize * WIDTH as usize + px as usize) * 3;
                        buf[i..i + 3]
                            .iter_mut()
                            .for_each(|v| *v = (*v as f32 * (1.0 - cov.clamp(0.0, 1.0))) as u8);
                    }
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::report::Record;

    fn rec(imp: &str, n: usize, s: Option<f64>) -> Record {
        Record {
            bench: "zero".into(),
            set: Some(format!("mixed{n}")),
            dtype: Some("f32".into()),
            imp: Some(imp.into()),
            tensors: n,
            seconds: s,
            ..Default::default()
        }
    }

    #[test]
    fn sweep_groups_and_sorts() {
        let report = Report {
            results: vec![
                rec("foreach", 10, Some(2.0)),
                rec("foreach", 1, Some(1.0)),
                rec("per_tensor", 1, Some(3.0)),
                rec("set_to_none", 1, Some(0.1)),
                rec("arena", 1, None),
            ],
            ..Default::default()
        };
        let s = zero_sweep(&report, "f32");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "per_tensor");
        assert_eq!(s[1].points, vec![(1, 1.0), (10, 2.0)]);
        assert!(zero_sweep(&report, "f16").is_empty());
        assert!(plot_zero_sweep(&report, "f16", Path::new("x.png")).is_err());
    }

    #[test]
    fn draws_a_png() {
        let report = Report {
            results: [1, 10, 100, 1000]
                .iter()
                .flat_map(|&n| {
                    let t = n as f64 * 1e-6;
                    [
                        rec("per_tensor", n, Some(t)),
                        rec("foreach", n, Some(t / 10.0 + 5e-6)),
                        rec("arena", n, Some(4e-6)),
                    ]
                })
                .collect(),
            ..Default::default()
        };
        let path = std::env::temp_dir().join(format!("gradstep-sweep-{}.png", std::process::id()));
        plot_zero_sweep(&report, "f32", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 2000,
            "a PNG with content: {} bytes",
            bytes.len()
        );
        let d = decades(0.002, 0.3);
        let want = [0.001, 0.01, 0.1, 1.0];
        assert_eq!(d.len(), want.len());
        assert!(d.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12 * b));
    }
}

//! PNG plots of a training run: the training loss per logged step and the test accuracy
//! per epoch, side by side.
//!
//! plotters draws the charts into an RGB buffer (its bitmap backend, no font features);
//! the labels are rendered with ab_glyph from a bundled DejaVu Sans Mono (its license is
//! in `fonts/LICENSE-DejaVu`), and the PNG is encoded here with flate2.

use std::io::Write;
use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::*;

use crate::base::{Error, Result};
use crate::train::History;

const FONT: &[u8] = include_bytes!("fonts/DejaVuSansMono.ttf");
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;
const LABEL_PX: f32 = 13.0;
const TITLE_PX: f32 = 16.0;

/// Where a label goes relative to its anchor point.
#[derive(Clone, Copy)]
enum Align {
    Center,
    Right,
}

/// A piece of text to render after the charts.
struct Label {
    text: String,
    x: i32,
    y: i32,
    px: f32,
    align: Align,
}

/// Round tick positions covering `[lo, hi]`, about `n` of them.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let raw = (hi - lo) / n as f64;
    if raw <= 0.0 || !raw.is_finite() {
        return vec![lo];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn tick_text(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// The data range with a margin, never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - 0.05 * span, hi + 0.05 * span)
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("plot", format!("{}: {e}", path.display()))
}

/// One panel: grid, axes labels and a polyline with point markers.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_title: &str,
    points: &[(f64, f64)],
    color: RGBColor,
    labels: &mut Vec<Label>,
) -> std::result::Result<(), String> {
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().cloned().unzip();
    let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let (x0, x1) = padded(min(&xs), max(&xs));
    let (y0, y1) = padded(min(&ys), max(&ys));
    let mut chart = ChartBuilder::on(area)
        .margin_left(64)
        .margin_right(20)
        .margin_top(36)
        .margin_bottom(44)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let grid = RGBColor(225, 225, 225);
    let (xt, yt) = (ticks(x0, x1, 6), ticks(y0, y1, 5));
    let step = |t: &[f64]| if t.len() > 1 { t[1] - t[0] } else { 1.0 };
    for &x in &xt {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, y0), (x, y1)],
                grid,
            )))
            .map_err(|e| e.to_string())?;
        let (px, py) = chart.backend_coord(&(x, y0));
        labels.push(Label {
            text: tick_text(x, step(&xt)),
            x: px,
            y: py + 6,
            px: LABEL_PX,
            align: Align::Center,
        });
    }
    for &y in &yt {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x0, y), (x1, y)],
                grid,
            )))
            .map_err(|e| e.to_string())?;
        let (px, py) = chart.backend_coord(&(x0, y));
        labels.push(Label {
            text: tick_text(y, step(&yt)),
            x: px - 6,
            y: py - 7,
            px: LABEL_PX,
            align: Align::Right,
        });
    }
    let frame = vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)];
    chart
        .draw_series(std::iter::once(PathElement::new(frame, BLACK)))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points.iter().cloned(),
            color.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    if points.len() <= 50 {
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    let (left, top) = chart.backend_coord(&(x0, y1));
    let (right, bottom) = chart.backend_coord(&(x1, y0));
    labels.push(Label {
        text: title.into(),
        x: (left + right) / 2,
        y: top - 26,
        px: TITLE_PX,
        align: Align::Center,
    });
    labels.push(Label {
        text: x_title.into(),
        x: (left + right) / 2,
        y: bottom + 24,
        px: LABEL_PX,
        align: Align::Center,
    });
    Ok(())
}

/// Renders `labels` into an RGB buffer of `WIDTH` x `HEIGHT`.
fn draw_labels(buf: &mut [u8], labels: &[Label]) -> std::result::Result<(), String> {
    let font = FontRef::try_from_slice(FONT).map_err(|e| e.to_string())?;
    for l in labels {
        let scaled = font.as_scaled(PxScale::from(l.px));
        let width: f32 = l
            .text
            .chars()
            .map(|c| scaled.h_advance(font.glyph_id(c)))
            .sum();
        let mut x = match l.align {
            Align::Center => l.x as f32 - width / 2.0,
            Align::Right => l.x as f32 - width,
        };
        let baseline = l.y as f32 + scaled.ascent();
        for c in l.text.chars() {
            let id = font.glyph_id(c);
            let glyph = id.with_scale_and_position(l.px, ab_glyph::point(x, baseline));
            x += scaled.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + gx as i64;
                let py = bounds.min.y as i64 + gy as i64;
                if px < 0 || py < 0 || px >= WIDTH as i64 || py >= HEIGHT as i64 {
                    return;
                }
                let i = (py as usize * WIDTH as usize + px as usize) * 3;
                for v in &mut buf[i..i + 3] {
                    *v = (*v as f32 * (1.0 - coverage.clamp(0.0, 1.0))) as u8;
                }
            });
        }
    }
    Ok(())
}

/// CRC-32 (IEEE) of PNG chunks.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
    }
    !crc
}

/// An 8-bit RGB PNG of `rgb` (`width * height * 3` bytes).
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    if rgb.len() != (width * height * 3) as usize {
        return Err(Error::invalid(
            "png",
            format!("{} bytes for a {width}x{height} RGB image", rgb.len()),
        ));
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let io = |e| Error::invalid("png", format!("compression failed: {e}"));
    for row in rgb.chunks_exact(width as usize * 3) {
        z.write_all(&[0]).map_err(io)?;
        z.write_all(row).map_err(io)?;
    }
    let idat = z.finish().map_err(io)?;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    }
    Ok(png)
}

/// Writes a PNG of the training loss per logged step (left) and the test accuracy per
/// epoch (right), atomically.
pub fn plot_history(history: &History, path: &Path) -> Result<()> {
    if history.losses.is_empty() || history.accuracy.is_empty() {
        return Err(plot_error(
            path,
            "nothing to plot: no logged loss or no finished epoch",
        ));
    }
    let losses: Vec<(f64, f64)> = history.losses.iter().map(|&(s, l)| (s as f64, l)).collect();
    let accuracy: Vec<(f64, f64)> = history
        .accuracy
        .iter()
        .enumerate()
        .map(|(i, a)| ((i + 1) as f64, 100.0 * a))
        .collect();
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    let mut labels = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        panel(
            &left,
            "training loss",
            "batch",
            &losses,
            RGBColor(31, 119, 180),
            &mut labels,
        )
        .map_err(|e| plot_error(path, e))?;
        panel(
            &right,
            "test accuracy (%)",
            "epoch",
            &accuracy,
            RGBColor(214, 39, 40),
            &mut labels,
        )
        .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    draw_labels(&mut buf, &labels).map_err(|e| plot_error(path, e))?;
    let png = encode_png(&buf, WIDTH, HEIGHT)?;
    crate::io::write_atomic(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_ticks() {
        // The CRC of the IEND chunk type, fixed by the PNG specification.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(3.0, 47.0, 4), vec![20.0, 40.0]);
    }
}

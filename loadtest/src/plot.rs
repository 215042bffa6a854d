//! PNG charts of a [`Report`](crate::report::Report)'s timeline.
//!
//! plotters draws text with a TrueType font registered at run time (its
//! `ab_glyph` feature; no fontconfig): the font comes from `--plot-font` or
//! the first of [`FONT_CANDIDATES`] that exists.
use std::collections::BTreeSet;
use std::error::Error;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;

/// Width of both charts, pixels.
pub const WIDTH: u32 = 1024;
/// Height of `latency.png`, and the least height of `sessions.png`.
pub const HEIGHT: u32 = 600;
/// Height of one panel of `sessions.png` when samples add panels.
const PANEL_HEIGHT: u32 = 250;
/// Series this short get a marker at every point (a one-second run is
/// one point, which a line alone does not show).
const MARKERS_UP_TO: usize = 120;

/// Where fonts live on common Linux distributions and macOS, in order.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

const FONT: &str = "sans-serif";

/// Line colours, in order (distinguishable, and none too pale on white).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBAColor {
    COLORS[i % COLORS.len()].to_rgba()
}

/// Axis labels without a trailing ".0".
fn axis_label(v: &f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The machine has no font we know of, or `--plot-font` names no file.
    #[error(
        "no TrueType font found for plot labels (looked for {}); install fonts-dejavu-core or pass --plot-font PATH",
        list(tried)
    )]
    NoFont { tried: Vec<PathBuf> },
    #[error("{} is not a usable TrueType font; pass --plot-font PATH with a .ttf file", path.display())]
    BadFont { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("nothing to plot: the report has an empty timeline")]
    EmptyTimeline,
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Writes `latency.png` (p50/p99 per operation kind over time) and
/// `sessions.png` (open sessions, and samples such as RSS, over time)
/// into `dir`; `font` overrides the TrueType font used for labels.
pub fn write(report: &Report, dir: &Path, font: Option<&Path>) -> Result<Vec<PathBuf>, PlotError> {
    if report.timeline.is_empty() {
        return Err(PlotError::EmptyTimeline);
    }
    use_font(font)?;
    fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let latency = dir.join("latency.png");
    drawn(&latency, draw_latency(report, &latency))?;
    let sessions = dir.join("sessions.png");
    drawn(&sessions, draw_sessions(report, &sessions))?;
    Ok(vec![latency, sessions])
}

fn drawn(path: &Path, result: DrawResult) -> Result<(), PlotError> {
    result.map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The font file registered with plotters. Its table is process-global and
/// wants `&'static` bytes, so each distinct file is read and leaked once.
static REGISTERED: Mutex<Option<PathBuf>> = Mutex::new(None);

fn use_font(font: Option<&Path>) -> Result<(), PlotError> {
    let path = match font {
        Some(path) => path.to_path_buf(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| PlotError::NoFont {
                tried: FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
            })?,
    };
    let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    if registered.as_ref() == Some(&path) {
        return Ok(());
    }
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PlotError::NoFont { tried: vec![path] });
        }
        Err(source) => return Err(PlotError::Io { path, source }),
    };
    plotters::style::register_font(FONT, FontStyle::Normal, bytes.leak())
        .map_err(|_| PlotError::BadFont { path: path.clone() })?;
    *registered = Some(path);
    Ok(())
}

type DrawResult = Result<(), Box<dyn Error + Send + Sync>>;

/// One line of a chart: label, colour, width and (t, value) points.
struct Line {
    label: String,
    color: RGBAColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

fn draw_latency(report: &Report, path: &Path) -> DrawResult {
    let kinds: BTreeSet<&str> = report
        .timeline
        .iter()
        .flat_map(|t| t.ops.keys().map(String::as_str))
        .collect();
    let mut lines = Vec::new();
    for (i, op) in kinds.into_iter().enumerate() {
        let color = color(i);
        let points = |pick: fn(&crate::report::TickOp) -> f64| -> Vec<(f64, f64)> {
            let ticks = report.timeline.iter();
            // A log axis has no zero: sub-microsecond seconds are left out.
            ticks
                .filter_map(|t| t.ops.get(op).map(|o| (t.t, pick(o))))
                .filter(|&(_, v)| v > 0.0)
                .collect()
        };
        lines.push(Line {
            label: format!("{op} p50"),
            color,
            width: 1,
            points: points(|o| o.p50),
        });
        lines.push(Line {
            label: format!("{op} p99"),
            color,
            width: 3,
            points: points(|o| o.p99),
        });
    }
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.1, 10.0)
    };
    // Headroom on the log axis for the legend (upper right, ~18 px a line)
    // so that it does not cover the data.
    let plot_height = f64::from(HEIGHT) - 100.0;
    let legend = ((lines.len() as f64 * 18.0 + 20.0) / plot_height).min(0.6);
    let hi = lo * ((hi / lo).ln() / (1.0 - legend)).exp();

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency per second (thin p50, thick p99)", (FONT, 24))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..x_end(report), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log scale)")
        .y_labels(12)
        .x_label_formatter(&axis_label)
        .y_label_formatter(&axis_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for line in &lines {
        let style = line.color.stroke_width(line.width);
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style))?
            .label(&line.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        if line.points.len() <= MARKERS_UP_TO {
            let dot = line.color.filled();
            chart.draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, line.width + 1, dot)),
            )?;
        }
    }
    if !lines.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Open sessions in the top panel, then one panel per sample name: their
/// scales (sessions, KiB, descriptors) have nothing in common.
fn draw_sessions(report: &Report, path: &Path) -> DrawResult {
    let names: BTreeSet<&str> = report
        .timeline
        .iter()
        .flat_map(|t| t.samples.keys().map(String::as_str))
        .collect();
    let mut panels = vec![(
        "Open sessions".to_string(),
        "sessions",
        report
            .timeline
            .iter()
            .map(|t| (t.t, t.open as f64))
            .collect::<Vec<_>>(),
    )];
    for name in names {
        let points = report
            .timeline
            .iter()
            .filter_map(|t| t.samples.get(name).map(|&v| (t.t, v)))
            .collect();
        panels.push((format!("Sample: {name}"), name, points));
    }
    let root = BitMapBackend::new(path, (WIDTH, sessions_height(panels.len()))).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len(), 1));
    for (i, (area, (title, y_desc, points))) in areas.iter().zip(&panels).enumerate() {
        draw_panel(area, title, y_desc, points, x_end(report), color(i))?;
    }
    root.present()?;
    Ok(())
}

fn sessions_height(panels: usize) -> u32 {
    let panels = u32::try_from(panels).unwrap_or(u32::MAX);
    HEIGHT.max(PANEL_HEIGHT.saturating_mul(panels))
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    points: &[(f64, f64)],
    x_end: f64,
    color: RGBAColor,
) -> DrawResult {
    let (lo, hi) = points
        .iter()
        .fold((0.0f64, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let hi = if hi > lo {
        hi + (hi - lo) * 0.1
    } else {
        lo + 1.0
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(y_desc)
        .x_label_formatter(&axis_label)
        .y_label_formatter(&axis_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        color.stroke_width(2),
    ))?;
    if points.len() <= MARKERS_UP_TO {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))?;
    }
    Ok(())
}

fn x_end(report: &Report) -> f64 {
    let end = report.timeline.last().map_or(0.0, |t| t.t);
    if end > 0.0 { end } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::{Tick, TickOp};

    fn report() -> Report {
        let timeline = (1..=5)
            .map(|s| {
                let s = s as f64;
                let op = |p50: f64| TickOp {
                    count: 10,
                    p50,
                    p99: p50 * 4.0,
                };
                Tick {
                    t: s,
                    open: (s * 10.0) as i64,
                    ops: BTreeMap::from([
                        ("connect".into(), op(20.0 + s)),
                        ("exec".into(), op(2.0 * s)),
                    ]),
                    samples: BTreeMap::from([
                        ("rss_kib".into(), 10_000.0 + s * 512.0),
                        ("fds".into(), 40.0 + s),
                    ]),
                    ..Tick::default()
                }
            })
            .collect();
        Report {
            elapsed_s: 5.0,
            timeline,
            ..Report::default()
        }
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = fs::read(path).expect("read png");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (be(16), be(20))
    }

    #[test]
    fn writes_latency_and_sessions_charts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("plots");
        let written =
            write(&report(), &out, None).expect("plots (needs a font: install fonts-dejavu-core)");
        assert_eq!(written, [out.join("latency.png"), out.join("sessions.png")]);
        assert_eq!(png_size(&written[0]), (WIDTH, HEIGHT));
        // Open sessions, fds and rss_kib: three stacked panels.
        assert_eq!(png_size(&written[1]), (WIDTH, 3 * PANEL_HEIGHT));
    }

    #[test]
    fn sessions_chart_without_samples_is_one_panel() {
        let mut report = report();
        for tick in &mut report.timeline {
            tick.samples.clear();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(&report, dir.path(), None).expect("plots");
        assert_eq!(png_size(&written[1]), (WIDTH, HEIGHT));
    }

    #[test]
    fn missing_font_names_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let font = dir.path().join("no-such-font.ttf");
        let err = write(&report(), &dir.path().join("plots"), Some(&font)).expect_err("no font");
        assert!(
            matches!(&err, PlotError::NoFont { tried } if tried == std::slice::from_ref(&font)),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("no-such-font.ttf"), "{message}");
        assert!(
            message.contains("install fonts-dejavu-core or pass --plot-font PATH"),
            "{message}"
        );
        assert!(
            !dir.path().join("plots").exists(),
            "nothing written without a font"
        );
    }

    #[test]
    fn a_file_that_is_not_a_font_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let font = dir.path().join("font.ttf");
        fs::write(&font, b"not a font").expect("write");
        let err = write(&report(), dir.path(), Some(&font)).expect_err("bad font");
        assert!(matches!(err, PlotError::BadFont { .. }), "{err:?}");
    }

    #[test]
    fn empty_timeline_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write(&Report::default(), dir.path(), None).expect_err("empty");
        assert!(matches!(err, PlotError::EmptyTimeline), "{err:?}");
    }

    #[test]
    fn axis_labels_drop_needless_decimals() {
        let labels: Vec<String> = [100.0, 12.5, 0.125, 0.0].iter().map(axis_label).collect();
        assert_eq!(labels, ["100", "12.5", "0.125", "0"]);
    }
}

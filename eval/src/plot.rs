//! Line charts written as PNG (loss and validation curves, ROC curves).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One named line of a chart.
pub struct Series<'a> {
    /// Legend label.
    pub name: &'a str,
    /// Points, in drawing order.
    pub points: &'a [(f64, f64)],
    /// Drawn thin and pale under the other lines: the raw values a bold running mean summarises.
    pub faint: bool,
}

/// Options for [`line_chart`].
#[derive(Clone, Copy)]
pub struct ChartSpec<'a> {
    /// Title above the chart.
    pub title: &'a str,
    /// X-axis label.
    pub x_label: &'a str,
    /// Y-axis label.
    pub y_label: &'a str,
    /// Logarithmic x axis (used for ROC curves over FAR); non-positive x values are skipped.
    pub log_x: bool,
}

/// One chart of a figure: its axes, its lines, and whether each point also gets a marker (for
/// series with few points, such as validation every thousand steps).
pub struct Panel<'a> {
    /// Title and axes.
    pub spec: ChartSpec<'a>,
    /// The lines.
    pub series: &'a [Series<'a>],
    /// Mark every point with a dot.
    pub markers: bool,
    /// X range to show instead of the data's own (so that stacked panels line up).
    pub x_range: Option<(f64, f64)>,
}

/// Draws `series` as lines into a 1000x600 PNG at `path` (written atomically).
pub(crate) fn line_chart(path: &Path, spec: &ChartSpec, series: &[Series]) -> Result<()> {
    let panel = Panel { spec: *spec, series, markers: false, x_range: None };
    figure(path, &[panel])
}

/// Draws `panels` stacked top to bottom, 1000 pixels wide and 600 (one panel) or 400 per panel
/// high, into a PNG at `path` (written atomically).
pub fn figure(path: &Path, panels: &[Panel]) -> Result<()> {
    let tmp = facekit_io::durable::temp_path(path).with_extension("png");
    let height = if panels.len() <= 1 { 600 } else { 400 * panels.len() as u32 };
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&tmp, (1000, height)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, panel) in root.split_evenly((panels.len().max(1), 1)).iter().zip(panels) {
            draw(area, panel)?;
        }
        root.present()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("cannot draw {}: {e}", path.display()));
    }
    facekit_io::durable::commit_file(&tmp, path)?;
    Ok(())
}

fn draw(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error>> {
    let (spec, series) = (&panel.spec, panel.series);
    let keep = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite() && (!spec.log_x || x > 0.0);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(keep).copied()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if all.is_empty() {
        (x0, x1, y0, y1) = (if spec.log_x { 1e-6 } else { 0.0 }, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = panel.x_range {
        (x0, x1) = (a, b);
    }
    if x1 <= x0 {
        x1 = x0 + if spec.log_x { x0.abs().max(1e-9) } else { 1.0 };
    }
    // A flat line (a constant learning rate) gets a band of 10 % around it: a band of 1e-6 would
    // print the same rounded label at every tick.
    let flat = y1 - y0 <= 1e-9 * y0.abs().max(y1.abs());
    let pad = if flat { (y1.abs() * 0.1).max(1e-6) } else { ((y1 - y0) * 0.05).max(1e-6) };
    let (y0, y1) = (y0 - pad, y1 + pad);

    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(spec.x_label).y_desc(spec.y_label).draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = colors[i % colors.len()];
                let style = if s.faint { color.mix(0.35).stroke_width(1) } else { color.stroke_width(2) };
                chart
                    .draw_series(LineSeries::new(s.points.iter().filter(keep).copied(), style))?
                    .label(s.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                if panel.markers {
                    chart.draw_series(s.points.iter().filter(keep).map(|&p| Circle::new(p, 4, color.filled())))?;
                }
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }};
    }
    let mut builder = ChartBuilder::on(root);
    builder.caption(spec.title, ("sans-serif", 24)).margin(15).x_label_area_size(45).y_label_area_size(70);
    if spec.log_x {
        body!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?);
    } else {
        body!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    Ok(())
}

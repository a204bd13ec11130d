//! Line charts written as PNG (loss curves, ROC curves).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One named line of a chart.
pub struct Series<'a> {
    /// Legend label.
    pub name: &'a str,
    /// Points, in drawing order.
    pub points: &'a [(f64, f64)],
}

/// Options for [`line_chart`].
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

/// Draws `series` as lines into a 1000x600 PNG at `path` (written atomically).
pub fn line_chart(path: &Path, spec: &ChartSpec, series: &[Series]) -> Result<()> {
    let tmp = crate::atomic::temp_path(path).with_extension("png");
    draw(&tmp, spec, series).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn draw(path: &Path, spec: &ChartSpec, series: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
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
    if x1 <= x0 {
        x1 = x0 + if spec.log_x { x0.abs().max(1e-9) } else { 1.0 };
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(spec.x_label).y_desc(spec.y_label).draw()?;
            for (i, s) in series.iter().enumerate() {
                let color = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().filter(keep).copied(), color.stroke_width(2)))?
                    .label(s.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder.caption(spec.title, ("sans-serif", 24)).margin(15).x_label_area_size(45).y_label_area_size(70);
    if spec.log_x {
        body!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?);
    } else {
        body!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    root.present()?;
    Ok(())
}

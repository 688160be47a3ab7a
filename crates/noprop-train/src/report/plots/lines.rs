//! Line charts of y against x for several runs (learning curves, schedules).
//!
//! Each series is a polyline with a marker at every point (a run of one or
//! two epochs is still visible). The y axis is linear or logarithmic; a log
//! axis drops values outside its bounds (non-positive ones, and those more
//! than `MAX_DECADES` below the largest).

use anyhow::Result;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{
    log_bounds, log_tick_label, tick_label, AXIS_DESC_SIZE, FONT, LABEL_SIZE, TITLE_SIZE,
};
use super::PlotError;

/// One line.
pub struct Series {
    pub label: String,
    pub colour: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// Draw markers (discrete data) and the line.
    pub markers: bool,
    /// Dashed line (a reference curve, e.g. an initial schedule).
    pub dashed: bool,
}

/// The y axis of a line panel.
pub enum YAxis {
    Linear {
        min: f64,
        max: f64,
    },
    /// Logarithmic, bounds chosen from the data (whole decades).
    Log,
}

/// What one line panel shows.
pub struct LinePanel<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub x_range: (f64, f64),
    pub y_axis: YAxis,
    pub series: Vec<Series>,
    /// Integer x labels only (epochs).
    pub integer_x: bool,
    /// Where the legend goes (a corner the curves leave empty).
    pub legend: SeriesLabelPosition,
}

/// Draws one line panel on `area`, with a legend.
pub fn draw_line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &LinePanel<'_>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let series: Vec<&Series> = panel
        .series
        .iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return super::draw_no_data(area, panel.title);
    }
    let (x0, x1) = panel.x_range;
    match panel.y_axis {
        YAxis::Linear { min, max } => {
            let chart = ChartBuilder::on(area)
                .caption(panel.title, (FONT, TITLE_SIZE))
                .margin(16)
                .x_label_area_size(52)
                .y_label_area_size(78)
                .build_cartesian_2d(x0..x1, min..max)
                .plot_err()?;
            finish(chart, panel, &series, &tick_label, |_| true)
        }
        YAxis::Log => {
            let Some((lo, hi)) =
                log_bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))
            else {
                return super::draw_no_data(area, panel.title);
            };
            let chart = ChartBuilder::on(area)
                .caption(panel.title, (FONT, TITLE_SIZE))
                .margin(16)
                .x_label_area_size(52)
                .y_label_area_size(78)
                .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
                .plot_err()?;
            finish(chart, panel, &series, &log_tick_label, move |y| {
                y >= lo && y <= hi
            })
        }
    }
}

fn finish<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    panel: &LinePanel<'_>,
    series: &[&Series],
    y_label: &dyn Fn(&f64) -> String,
    keep: impl Fn(f64) -> bool,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let integer_label = |x: &f64| {
        if (x - x.round()).abs() < 1e-9 {
            format!("{}", x.round() as i64)
        } else {
            String::new()
        }
    };
    let x_span = (panel.x_range.1 - panel.x_range.0).round().max(1.0) as usize;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .y_label_formatter(y_label)
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .label_style((FONT, LABEL_SIZE))
        .light_line_style(BLACK.mix(0.05));
    if panel.integer_x {
        mesh.x_labels(x_span.min(12) + 1)
            .x_label_formatter(&integer_label);
    } else {
        mesh.x_label_formatter(&tick_label);
    }
    mesh.draw().plot_err()?;

    for s in series {
        let color = s.colour;
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| keep(p.1)).collect();
        let annotation = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    points.clone(),
                    10,
                    6,
                    color.stroke_width(2),
                ))
                .plot_err()?
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                .plot_err()?
        };
        let dashed = s.dashed;
        annotation.label(s.label.clone()).legend(move |(x, y)| {
            if dashed {
                // Two dashes, like the line.
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (9, 0)], color.stroke_width(2))
                    + PathElement::new(vec![(15, 0), (24, 0)], color.stroke_width(2))
            } else {
                // Two touching halves: a solid line of the same element type.
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (12, 0)], color.stroke_width(3))
                    + PathElement::new(vec![(12, 0), (24, 0)], color.stroke_width(3))
            }
        });
        if s.markers {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 5, color.filled())))
                .plot_err()?;
        }
    }
    chart
        .configure_series_labels()
        .position(panel.legend.clone())
        .label_font((FONT, LABEL_SIZE))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .plot_err()?;
    Ok(())
}

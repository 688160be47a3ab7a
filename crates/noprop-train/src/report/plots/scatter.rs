//! Scatter of accuracy against a cost (time), one labelled point per run.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{
    headroom, tick_label, ANNOTATION_SIZE, AXIS_DESC_SIZE, FONT, LABEL_SIZE, TITLE_SIZE,
};
use super::PlotError;

/// One labelled point: x = cost, y = accuracy (%).
pub struct Point {
    pub label: String,
    pub colour: RGBColor,
    pub x: f64,
    pub y: f64,
}

/// What one scatter panel shows.
pub struct ScatterPanel<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub points: Vec<Point>,
    pub y_min: f64,
    pub y_max: f64,
}

/// Draws one scatter panel on `area`; x runs from 0 to past the largest cost.
pub fn draw_scatter_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &ScatterPanel<'_>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    if panel.points.is_empty() {
        return super::draw_no_data(area, panel.title);
    }
    let x_max = headroom(panel.points.iter().map(|p| p.x).fold(0.0, f64::max));
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, TITLE_SIZE))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(0.0..x_max, panel.y_min..panel.y_max)
        .plot_err()?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .label_style((FONT, LABEL_SIZE))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .plot_err()?;
    let label_style = TextStyle::from((FONT, ANNOTATION_SIZE).into_font());
    chart
        .draw_series(panel.points.iter().map(|p| {
            let color = p.colour;
            EmptyElement::at((p.x, p.y))
                + Circle::new((0, 0), 8, color.filled())
                + Text::new(p.label.clone(), (12, -8), label_style.clone())
        }))
        .plot_err()?;
    Ok(())
}

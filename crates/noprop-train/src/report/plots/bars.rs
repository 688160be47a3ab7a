//! Bar charts: one bar per run, labelled with its value.
//!
//! Bar i is centred on x = i, its name as the tick label; the y
//! axis starts at `y_min` (0 for times and sizes; a little under the lowest
//! accuracy for accuracies, so that differences of a point stay visible).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::style::{tick_label, ANNOTATION_SIZE, AXIS_DESC_SIZE, FONT, LABEL_SIZE, TITLE_SIZE};
use super::PlotError;

/// One bar.
pub struct Bar {
    pub label: String,
    pub colour: RGBColor,
    pub value: f64,
}

/// What one bar panel shows.
pub struct BarPanel<'a> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub bars: Vec<Bar>,
    pub y_min: f64,
    pub y_max: f64,
    /// Formats a value for the label above its bar.
    pub format: &'a dyn Fn(f64) -> String,
}

/// Draws one bar panel on `area`. Bars with no value are left out by the
/// caller; an empty panel says "no data".
pub fn draw_bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &BarPanel<'_>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    if panel.bars.is_empty() {
        return super::draw_no_data(area, panel.title);
    }
    let n = panel.bars.len();
    let labels: Vec<String> = panel.bars.iter().map(|b| b.label.clone()).collect();
    // Bar i is centred on x = i; asking for at most n labels makes the
    // axis choose a step of 1, one tick (the bar's name) per bar.
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FONT, TITLE_SIZE))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(78)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, panel.y_min..panel.y_max)
        .plot_err()?;
    let x_formatter = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&tick_label)
        .y_desc(panel.y_desc)
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .label_style((FONT, LABEL_SIZE))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .plot_err()?;
    // Bars 60% of their slot wide, narrower when there are few.
    let half_width = 0.3f64.min(0.15 * n as f64);
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, bar)| {
            let x = i as f64;
            Rectangle::new(
                [
                    (x - half_width, panel.y_min),
                    (x + half_width, bar.value.max(panel.y_min)),
                ],
                bar.colour.filled(),
            )
        }))
        .plot_err()?;
    let value_style = TextStyle::from((FONT, ANNOTATION_SIZE).into_font())
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, bar)| {
            Text::new(
                (panel.format)(bar.value),
                (i as f64, bar.value.max(panel.y_min)),
                value_style.clone(),
            )
        }))
        .plot_err()?;
    Ok(())
}

//! The report's PNG figures, drawn with plotters' bitmap backend.
//!
//! | file | content |
//! |---|---|
//! | `learning_curves.png` | test accuracy (%) and train loss (log) per epoch |
//! | `final_accuracy.png` | test and train accuracy (%) bars |
//! | `training_time.png` | training time bars (s) and inference time bars (ms per image) |
//! | `model_size.png` | parameter count bars (millions) |
//! | `accuracy_per_param.png` | test accuracy (%) per million parameters |
//! | `speed_vs_accuracy.png` | test accuracy against training time and against inference time |
//! | `noise_schedules.png` | alpha_bar(t) and SNR(t) (log) of DT's cosine schedule and CT's learned one (dashed: CT's initial schedule) |
//! | `per_class_accuracy.png` | test accuracy (%) per class of the runs with an `eval.json` |
//!
//! A figure whose numbers are missing for every run is still written, with
//! "no data" in its panel, so the report's links never break. Log axes span
//! at most 8 decades: DT's SNR(0) (about 1e-33 with the cosine schedule) is
//! left off the SNR panel.

mod bars;
mod lines;
mod scatter;
pub mod style;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use self::bars::{draw_bar_panel, Bar, BarPanel};
use self::lines::{draw_line_panel, LinePanel, Series, YAxis};
use self::scatter::{draw_scatter_panel, Point, ScatterPanel};
use self::style::{ensure_font, headroom, percent_floor, FONT, PANEL_HEIGHT, PANEL_WIDTH};
use super::row::RunRow;
use super::run::RunData;
use super::schedule::ScheduleCurve;

/// Converts plotters' drawing errors (generic over the backend) to anyhow.
pub(crate) trait PlotError<T> {
    fn plot_err(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> PlotError<T> for std::result::Result<T, E> {
    fn plot_err(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing failed: {e}"))
    }
}

/// A titled empty panel for figures with nothing to show.
fn draw_no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{title}: no data"),
        (w as i32 / 2 - 120, h as i32 / 2),
        (FONT, style::TITLE_SIZE).into_font(),
    ))
    .plot_err()
}

/// A figure of `panels` side by side, white background, saved as PNG,
/// atomically: drawn into a temporary file beside `path` (`.NAME.tmp-PID.png`,
/// the extension chooses the encoder), then renamed.
fn figure(
    path: &Path,
    panels: usize,
    draw: impl FnOnce(&[DrawingArea<BitMapBackend<'_>, Shift>]) -> Result<()>,
) -> Result<()> {
    let stem = path
        .file_stem()
        .map_or_else(|| "figure".into(), |s| s.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{stem}.tmp-{}.png", std::process::id()));
    let drawn = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, (PANEL_WIDTH * panels as u32, PANEL_HEIGHT))
            .into_drawing_area();
        root.fill(&WHITE).plot_err()?;
        let areas = root.split_evenly((1, panels));
        draw(&areas)?;
        root.present()
            .plot_err()
            .with_context(|| format!("writing {}", path.display()))
    })();
    let renamed = drawn.and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// Writes every figure into `out_dir` and returns their paths.
pub fn write_plots(
    out_dir: &Path,
    runs: &[RunData],
    rows: &[RunRow],
    schedules: &[ScheduleCurve],
) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let mut written = Vec::new();
    let mut save = |name: &str, result: Result<()>| -> Result<()> {
        result.with_context(|| format!("plotting {name}"))?;
        written.push(out_dir.join(name));
        Ok(())
    };
    save(
        "learning_curves.png",
        learning_curves(&out_dir.join("learning_curves.png"), runs, rows),
    )?;
    save(
        "final_accuracy.png",
        final_accuracy(&out_dir.join("final_accuracy.png"), rows),
    )?;
    save(
        "training_time.png",
        training_time(&out_dir.join("training_time.png"), rows),
    )?;
    save(
        "model_size.png",
        model_size(&out_dir.join("model_size.png"), rows),
    )?;
    save(
        "accuracy_per_param.png",
        accuracy_per_param(&out_dir.join("accuracy_per_param.png"), rows),
    )?;
    save(
        "speed_vs_accuracy.png",
        speed_vs_accuracy(&out_dir.join("speed_vs_accuracy.png"), rows),
    )?;
    save(
        "noise_schedules.png",
        noise_schedules(&out_dir.join("noise_schedules.png"), schedules),
    )?;
    save(
        "per_class_accuracy.png",
        per_class_accuracy(&out_dir.join("per_class_accuracy.png"), rows),
    )?;
    Ok(written)
}

/// The colour of a run in every figure (see [`RunRow::colour`]).
fn row_colour(row: &RunRow) -> RGBColor {
    let [r, g, b] = row.colour;
    RGBColor(r, g, b)
}

fn percent(x: f64) -> String {
    format!("{x:.2}%")
}

/// Bars of one number per run, skipping runs that lack it.
fn bars_of(rows: &[RunRow], value: impl Fn(&RunRow) -> Option<f64>) -> Vec<Bar> {
    rows.iter()
        .filter_map(|s| {
            Some(Bar {
                label: s.label.clone(),
                colour: row_colour(s),
                value: value(s)?,
            })
        })
        .collect()
}

/// Percentage axis bounds for the given accuracies (fractions).
fn percent_axis(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let min = values
        .into_iter()
        .map(|v| 100.0 * v)
        .fold(f64::INFINITY, f64::min);
    let lo = if min.is_finite() {
        percent_floor(min)
    } else {
        0.0
    };
    (lo, 100.0 + (100.0 - lo) * 0.08)
}

fn learning_curves(path: &Path, runs: &[RunData], rows: &[RunRow]) -> Result<()> {
    let max_epoch = runs
        .iter()
        .flat_map(|r| r.epochs.iter().map(|e| e.epoch))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let series = |value: &dyn Fn(&crate::metrics::EpochMetrics) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .zip(rows)
            .map(|(run, row)| Series {
                label: row.label.clone(),
                colour: row_colour(row),
                points: run
                    .epochs
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, value(e)?)))
                    .collect(),
                markers: true,
                dashed: false,
            })
            .collect()
    };
    let accuracy = series(&|e| Some(100.0 * e.test_accuracy));
    let (y_min, y_max) = percent_axis(
        accuracy
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1 / 100.0)),
    );
    figure(path, 2, |areas| {
        draw_line_panel(
            &areas[0],
            &LinePanel {
                title: "Test accuracy per epoch",
                x_desc: "epoch",
                y_desc: "test accuracy (%)",
                x_range: (0.8, max_epoch + 0.2),
                y_axis: YAxis::Linear {
                    min: y_min,
                    max: y_max,
                },
                series: accuracy,
                integer_x: true,
                legend: SeriesLabelPosition::LowerRight,
            },
        )?;
        draw_line_panel(
            &areas[1],
            &LinePanel {
                title: "Train loss per epoch",
                x_desc: "epoch",
                y_desc: "mean train loss (log scale)",
                x_range: (0.8, max_epoch + 0.2),
                y_axis: YAxis::Log,
                series: series(&|e| Some(e.train_loss)),
                integer_x: true,
                legend: SeriesLabelPosition::UpperRight,
            },
        )
    })
}

fn final_accuracy(path: &Path, rows: &[RunRow]) -> Result<()> {
    let (y_min, y_max) = percent_axis(
        rows.iter()
            .flat_map(|s| [s.test_accuracy, s.train_accuracy])
            .flatten(),
    );
    figure(path, 2, |areas| {
        draw_bar_panel(
            &areas[0],
            &BarPanel {
                title: "Final test accuracy",
                y_desc: "test accuracy (%)",
                bars: bars_of(rows, |s| s.test_accuracy.map(|a| 100.0 * a)),
                y_min,
                y_max,
                format: &percent,
            },
        )?;
        draw_bar_panel(
            &areas[1],
            &BarPanel {
                title: "Train accuracy (last epoch)",
                y_desc: "train accuracy (%)",
                bars: bars_of(rows, |s| s.train_accuracy.map(|a| 100.0 * a)),
                y_min,
                y_max,
                format: &percent,
            },
        )
    })
}

fn max_of(bars: &[Bar]) -> f64 {
    bars.iter().map(|b| b.value).fold(0.0, f64::max)
}

fn training_time(path: &Path, rows: &[RunRow]) -> Result<()> {
    let train = bars_of(rows, |s| s.train_seconds);
    let infer = bars_of(rows, |s| s.inference_ms_per_image);
    let (train_max, infer_max) = (headroom(max_of(&train)), headroom(max_of(&infer)));
    figure(path, 2, |areas| {
        draw_bar_panel(
            &areas[0],
            &BarPanel {
                title: "Training time",
                y_desc: "seconds (all epochs, evaluation excluded)",
                bars: train,
                y_min: 0.0,
                y_max: train_max,
                format: &|x| format!("{x:.0} s"),
            },
        )?;
        draw_bar_panel(
            &areas[1],
            &BarPanel {
                title: "Inference time",
                y_desc: "ms per test image",
                bars: infer,
                y_min: 0.0,
                y_max: infer_max,
                format: &|x| format!("{x:.3} ms"),
            },
        )
    })
}

fn model_size(path: &Path, rows: &[RunRow]) -> Result<()> {
    let bars = bars_of(rows, |s| s.parameters.map(|p| p as f64 / 1e6));
    let y_max = headroom(max_of(&bars));
    figure(path, 1, |areas| {
        draw_bar_panel(
            &areas[0],
            &BarPanel {
                title: "Model size",
                y_desc: "parameters (millions)",
                bars,
                y_min: 0.0,
                y_max,
                format: &|x| format!("{x:.3} M"),
            },
        )
    })
}

fn accuracy_per_param(path: &Path, rows: &[RunRow]) -> Result<()> {
    let bars = bars_of(rows, |s| s.accuracy_per_million_params);
    let y_max = headroom(max_of(&bars));
    figure(path, 1, |areas| {
        draw_bar_panel(
            &areas[0],
            &BarPanel {
                title: "Test accuracy per million parameters",
                y_desc: "test accuracy (%) / million parameters",
                bars,
                y_min: 0.0,
                y_max,
                format: &|x| format!("{x:.1}"),
            },
        )
    })
}

fn speed_vs_accuracy(path: &Path, rows: &[RunRow]) -> Result<()> {
    let points = |cost: &dyn Fn(&RunRow) -> Option<f64>| -> Vec<Point> {
        rows.iter()
            .filter_map(|s| {
                Some(Point {
                    label: s.label.clone(),
                    colour: row_colour(s),
                    x: cost(s)?,
                    y: 100.0 * s.test_accuracy?,
                })
            })
            .collect()
    };
    let (y_min, y_max) = percent_axis(rows.iter().filter_map(|s| s.test_accuracy));
    figure(path, 2, |areas| {
        draw_scatter_panel(
            &areas[0],
            &ScatterPanel {
                title: "Accuracy vs training time",
                x_desc: "training time (s)",
                y_desc: "test accuracy (%)",
                points: points(&|s| s.train_seconds),
                y_min,
                y_max,
            },
        )?;
        draw_scatter_panel(
            &areas[1],
            &ScatterPanel {
                title: "Accuracy vs inference time",
                x_desc: "inference time (ms per image)",
                y_desc: "test accuracy (%)",
                points: points(&|s| s.inference_ms_per_image),
                y_min,
                y_max,
            },
        )
    })
}

/// Each run's test accuracy per class (from `eval.json`), a line per run.
fn per_class_accuracy(path: &Path, rows: &[RunRow]) -> Result<()> {
    let series: Vec<Series> = rows
        .iter()
        .filter_map(|row| {
            let per_class = row.per_class_accuracy.as_ref()?;
            Some(Series {
                label: row.label.clone(),
                colour: row_colour(row),
                points: per_class
                    .iter()
                    .enumerate()
                    .filter_map(|(class, a)| Some((class as f64, 100.0 * (*a)?)))
                    .collect(),
                markers: true,
                dashed: false,
            })
        })
        .collect();
    let classes = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let (y_min, y_max) = percent_axis(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1 / 100.0)),
    );
    figure(path, 1, |areas| {
        draw_line_panel(
            &areas[0],
            &LinePanel {
                title: "Test accuracy per class",
                x_desc: "class",
                y_desc: "test accuracy (%)",
                x_range: (-0.2, classes + 0.2),
                y_axis: YAxis::Linear {
                    min: y_min,
                    max: y_max,
                },
                series,
                integer_x: true,
                legend: SeriesLabelPosition::LowerRight,
            },
        )
    })
}

fn noise_schedules(path: &Path, schedules: &[ScheduleCurve]) -> Result<()> {
    let series = |value: &dyn Fn(&ScheduleCurve, usize) -> f64| -> Vec<Series> {
        schedules
            .iter()
            .map(|c| Series {
                label: c.label.clone(),
                colour: {
                    let [r, g, b] = c.colour;
                    RGBColor(r, g, b)
                },
                points: (0..c.t.len()).map(|i| (c.t[i], value(c, i))).collect(),
                markers: c.discrete,
                dashed: c.initial,
            })
            .collect()
    };
    figure(path, 2, |areas| {
        draw_line_panel(
            &areas[0],
            &LinePanel {
                title: "Noise schedule: alpha_bar(t)",
                x_desc: "t (DT: block index / T), 0 = noise, 1 = label",
                y_desc: "alpha_bar",
                x_range: (0.0, 1.0),
                y_axis: YAxis::Linear { min: 0.0, max: 1.0 },
                series: series(&|c, i| c.alpha_bar[i]),
                integer_x: false,
                legend: SeriesLabelPosition::LowerRight,
            },
        )?;
        draw_line_panel(
            &areas[1],
            &LinePanel {
                title: "Signal-to-noise ratio: SNR(t)",
                x_desc: "t (DT: block index / T), 0 = noise, 1 = label",
                y_desc: "SNR = alpha_bar / (1 - alpha_bar), log scale",
                x_range: (0.0, 1.0),
                y_axis: YAxis::Log,
                series: series(&|c, i| c.snr[i]),
                integer_x: false,
                legend: SeriesLabelPosition::LowerRight,
            },
        )
    })
}

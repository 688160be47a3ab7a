//! Shared look of the report's plots: the embedded font, sizes, colours.
//!
//! Text is rendered with plotters' `ab_glyph` backend from DejaVu Sans
//! embedded in the binary (`report/fonts/`, licence alongside), so the plots
//! look the same on every machine and need no system fonts.

use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::style::FontStyle;

/// The font family every text element uses.
pub const FONT: &str = "sans-serif";

/// Sizes in pixels.
pub const TITLE_SIZE: u32 = 26;
pub const LABEL_SIZE: u32 = 18;
pub const AXIS_DESC_SIZE: u32 = 19;
pub const ANNOTATION_SIZE: u32 = 17;

/// One chart's size; two-panel figures are twice as wide.
pub const PANEL_WIDTH: u32 = 800;
pub const PANEL_HEIGHT: u32 = 560;

const DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Registers the embedded font (once per process) under [`FONT`].
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| plotters::style::register_font(FONT, style, DEJAVU_SANS).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font could not be loaded"))
    }
}

/// Colour-blind-safe hues (Okabe and Ito), one per run in the order given
/// when several runs share a variant (a sweep), or for variants without a
/// registered colour.
pub const RUN_PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
    [213, 94, 0],
    [240, 228, 66],
    [0, 0, 0],
];

/// A "nice" upper bound for an axis that starts at 0: the max plus headroom
/// for value labels drawn above bars.
pub fn headroom(max: f64) -> f64 {
    if max > 0.0 && max.is_finite() {
        max * 1.18
    } else {
        1.0
    }
}

/// Lower bound of a percentage axis: 10 points under the smallest value,
/// rounded down to a multiple of 10 (so small differences stay visible),
/// never below 0.
pub fn percent_floor(min_percent: f64) -> f64 {
    (((min_percent - 10.0) / 10.0).floor() * 10.0).clamp(0.0, 90.0)
}

/// Decades a log axis spans at most: smaller values (DT's SNR(0), about
/// 1e-33) are left off rather than squashing every other curve.
pub const MAX_DECADES: f64 = 8.0;

/// Log-axis bounds covering `values` (positive only), widened to whole
/// decades, at most [`MAX_DECADES`] below the largest.
pub fn log_bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let hi = 10f64.powf(hi.log10().ceil());
    let lo = 10f64
        .powf(lo.log10().floor())
        .max(hi / 10f64.powf(MAX_DECADES));
    let hi = hi.max(lo * 10.0);
    // A hair wider, so rounding never drops the end decades' tick labels.
    Some((lo * 0.999, hi * 1.001))
}

/// An axis tick label without needless decimals: 200 not "200.0", 0.05
/// not "0.05000000000000001".
pub fn tick_label(x: &f64) -> String {
    let rounded = (x * 1e6).round() / 1e6;
    if rounded == 0.0 {
        "0".to_owned()
    } else {
        format!("{rounded}")
    }
}

/// A log-axis tick label: plain for 0.001..99999, else "1e-6".
pub fn log_tick_label(x: &f64) -> String {
    if *x >= 1e-3 && *x < 1e5 {
        tick_label(x)
    } else {
        format!("{x:.0e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_helpers() {
        assert_eq!(percent_floor(97.3), 80.0);
        assert_eq!(percent_floor(12.0), 0.0);
        assert_eq!(percent_floor(100.0), 90.0);
        let close = |a: Option<(f64, f64)>, b: (f64, f64)| {
            let (lo, hi) = a.unwrap();
            (lo / b.0 - 0.999).abs() < 1e-12 && (hi / b.1 - 1.001).abs() < 1e-12
        };
        assert!(close(log_bounds([0.05, 3.0, -1.0]), (0.01, 10.0)));
        assert!(close(log_bounds([10.0]), (10.0, 100.0)));
        // 1e-33 is left off: 8 decades under 1e4.
        assert!(close(log_bounds([1e-33, 0.02, 9999.0]), (1e-4, 1e4)));
        assert_eq!(log_tick_label(&1e-6), "1e-6");
        assert_eq!(log_tick_label(&0.01), "0.01");
        assert_eq!(log_tick_label(&1e5), "1e5");
        assert_eq!(log_bounds([0.0]), None);
        assert!((headroom(1.0) - 1.18).abs() < 1e-12);
        assert_eq!(headroom(0.0), 1.0);
        assert_eq!(tick_label(&200.0), "200");
        assert_eq!(tick_label(&(0.1 + 0.2)), "0.3");
        assert_eq!(tick_label(&-0.0), "0");
        assert_eq!(tick_label(&0.001), "0.001");
    }
}

//! Noise schedules for the schedule plot, read from `noprop info --json`.
//!
//! A schedule is alpha_bar(t) on a grid of t, with SNR(t) =
//! alpha_bar / (1 - alpha_bar). In the NoProp convention t runs from noise
//! (t = 0, alpha_bar small) to label (t = 1 or t = T, alpha_bar near 1), so
//! both curves increase with t. DT's schedule is discrete (t = 0..T); it is
//! drawn against t / T so it shares the [0, 1] axis with CT's learned one.
//!
//! The info JSON holds the table either as a list of rows
//! (`[{"t": 0, "alpha_bar": ..., "snr": ...}, ...]`) or as columns
//! (`{"t": [...], "alpha_bar": [...], "snr": [...]}`), under one of the keys
//! in [`SCHEDULE_KEYS`] (possibly nested one level, e.g. `schedule.table`).

use serde::Serialize;
use serde_json::Value;

use super::fields::{at_path, numbers};

/// Where an info JSON may hold its schedule table.
pub const SCHEDULE_KEYS: &[&str] = &[
    "schedule.table",
    "schedule.grid",
    "schedule.rows",
    "schedule",
    "schedule_table",
    "noise_schedule",
    "dt_schedule",
    "ct_schedule",
];

const T_KEYS: &[&str] = &["t", "time"];
const ALPHA_BAR_KEYS: &[&str] = &["alpha_bar", "alphabar", "alpha_bar_t"];
const SNR_KEYS: &[&str] = &["snr", "SNR", "snr_t"];

/// One schedule curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleCurve {
    /// Legend label, e.g. "DT cosine (T=10)".
    pub label: String,
    /// Which run it came from (its variant, e.g. "dt").
    pub variant: String,
    /// t in [0, 1] (DT: t / T).
    pub t: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    pub snr: Vec<f64>,
    /// True for DT's T+1 discrete points (drawn with markers).
    pub discrete: bool,
    /// True for a schedule before training (CT's initial one, from
    /// `info-initial.json`), drawn dashed.
    pub initial: bool,
}

/// Reads the schedule table of one info JSON, if it has one. `initial`:
/// the info describes the untrained model (its label says so).
pub fn from_info(info: &Value, variant: &str, initial: bool) -> Option<ScheduleCurve> {
    let table = SCHEDULE_KEYS.iter().find_map(|key| {
        let v = at_path(info, key)?;
        (v.is_array() || v.is_object()).then_some(v)
    })?;
    let (t, alpha_bar, snr) = match table {
        Value::Array(rows) => {
            let mut t = Vec::new();
            let mut alpha_bar = Vec::new();
            let mut snr = Vec::new();
            for row in rows {
                t.push(cell(row, T_KEYS)?);
                let ab = cell(row, ALPHA_BAR_KEYS)?;
                alpha_bar.push(ab);
                snr.push(cell(row, SNR_KEYS).unwrap_or_else(|| snr_of(ab)));
            }
            (t, alpha_bar, snr)
        }
        Value::Object(_) => {
            let t = numbers(table, T_KEYS)?;
            let alpha_bar = numbers(table, ALPHA_BAR_KEYS)?;
            let snr = numbers(table, SNR_KEYS)
                .unwrap_or_else(|| alpha_bar.iter().copied().map(snr_of).collect());
            (t, alpha_bar, snr)
        }
        _ => return None,
    };
    if t.len() < 2 || t.len() != alpha_bar.len() || t.len() != snr.len() {
        return None;
    }
    let t_max = t.iter().copied().fold(f64::MIN, f64::max);
    // Integer steps beyond 1 are DT's block indices t = 0..T.
    let discrete = t_max > 1.0 && t.iter().all(|x| x.fract() == 0.0);
    let name = match (variant, initial) {
        ("ct", true) => "CT initial",
        (_, true) => "initial",
        _ => default_label(variant),
    };
    let (t, label) = if discrete {
        let steps = t_max.round() as usize;
        (
            t.iter().map(|x| x / t_max).collect(),
            format!("{name} (T={steps})"),
        )
    } else {
        (t, name.to_owned())
    };
    Some(ScheduleCurve {
        label,
        variant: variant.to_owned(),
        t,
        alpha_bar,
        snr,
        discrete,
        initial,
    })
}

/// A table cell: a number, or a string holding one (`noprop info` writes
/// an infinite SNR, at alpha_bar = 1, as the string "inf").
fn cell(row: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|key| match at_path(row, key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// SNR = alpha_bar / (1 - alpha_bar).
pub fn snr_of(alpha_bar: f64) -> f64 {
    alpha_bar / (1.0 - alpha_bar)
}

fn default_label(variant: &str) -> &'static str {
    match variant {
        "dt" => "DT cosine",
        "ct" => "CT learned",
        "fm" => "FM (no schedule)",
        _ => "schedule",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_dt_rows_and_scales_t_by_t_max() {
        let info = json!({"variant": "dt", "schedule": [
            {"t": 0, "alpha_bar": 0.2, "snr": 0.25},
            {"t": 1, "alpha_bar": 0.5, "snr": 1.0},
            {"t": 2, "alpha_bar": 0.8, "snr": 4.0}]});
        let c = from_info(&info, "dt", false).unwrap();
        assert!(c.discrete);
        assert_eq!(c.t, vec![0.0, 0.5, 1.0]);
        assert_eq!(c.alpha_bar, vec![0.2, 0.5, 0.8]);
        assert_eq!(c.snr, vec![0.25, 1.0, 4.0]);
        assert_eq!(c.label, "DT cosine (T=2)");
    }

    #[test]
    fn reads_the_info_command_layout_with_infinite_snr_as_a_string() {
        let info = json!({"schedule": {"label": "DT cosine schedule (T = 2)",
            "columns": ["t", "alpha_bar", "snr"],
            "table": [{"t": 0, "alpha_bar": 0.5, "snr": 1.0},
                      {"t": 1, "alpha_bar": 0.75, "snr": 3.0},
                      {"t": 2, "alpha_bar": 1.0, "snr": "inf"}]}});
        let c = from_info(&info, "dt", false).unwrap();
        assert_eq!(c.t, vec![0.0, 0.5, 1.0]);
        assert_eq!(c.snr[..2], [1.0, 3.0]);
        assert!(c.snr[2].is_infinite());
    }

    #[test]
    fn reads_ct_columns_and_derives_missing_snr() {
        // SNR = ab / (1 - ab): 0.5 -> 1, 0.75 -> 3.
        let info = json!({"schedule": {"grid": {"t": [0.0, 1.0], "alpha_bar": [0.5, 0.75]}}});
        let c = from_info(&info, "ct", false).unwrap();
        assert!(!c.discrete);
        assert_eq!(c.t, vec![0.0, 1.0]);
        assert_eq!(c.snr, vec![1.0, 3.0]);
        assert_eq!(c.label, "CT learned");
        let c = from_info(&info, "ct", true).unwrap();
        assert!(c.initial);
        assert_eq!(c.label, "CT initial");
    }

    #[test]
    fn no_or_malformed_table_gives_none() {
        assert!(from_info(&json!({"variant": "fm"}), "fm", false).is_none());
        let ragged = json!({"schedule": {"t": [0.0, 1.0], "alpha_bar": [0.5]}});
        assert!(from_info(&ragged, "ct", false).is_none());
        let missing = json!({"schedule": [{"t": 0}, {"t": 1}]});
        assert!(from_info(&missing, "ct", false).is_none());
    }
}

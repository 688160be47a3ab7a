//! Noise schedules for the schedule plot, from the saved output of `noprop
//! info --json` ([`InfoReport`]): its `schedule` is the variant's
//! [`noprop_core::ScheduleTable`] (None for a variant without a schedule).
//!
//! A schedule is alpha_bar(t) and SNR(t) = alpha_bar / (1 - alpha_bar) on a
//! grid of t. In the NoProp convention t runs from noise (t = 0, alpha_bar
//! small) to label (t = 1 or t = T, alpha_bar near 1), so both curves
//! increase with t. A discrete schedule (t = 0..T, integer steps) is drawn
//! against t / T so it shares the [0, 1] axis with a continuous one.

use serde::Serialize;

use crate::info::InfoReport;
use crate::registry;

/// One schedule curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleCurve {
    /// Legend label, e.g. "NoProp-DT (T=10)".
    pub label: String,
    /// Which run it came from (its variant, e.g. "dt").
    pub variant: String,
    /// Its run's colour ([`super::RunRow::colour`]).
    #[serde(skip)]
    pub colour: [u8; 3],
    /// t in [0, 1] (a discrete schedule: t / T).
    pub t: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    pub snr: Vec<f64>,
    /// True for a discrete schedule's T+1 points (drawn with markers).
    pub discrete: bool,
    /// True for a schedule before training (from `info-initial.json`),
    /// drawn dashed.
    pub initial: bool,
}

/// The schedule curve of a model, if it has a schedule with `t` and
/// `alpha_bar` columns and at least two points. `initial`: the model is the
/// untrained one (its label says so). Undefined values (None) of SNR are
/// derived from alpha_bar.
pub fn from_info(info: &InfoReport, initial: bool) -> Option<ScheduleCurve> {
    let table = info.schedule.as_ref()?;
    let variant = info.variant.as_str();
    let t: Vec<f64> = table.column("t")?.into_iter().collect::<Option<_>>()?;
    let alpha_bar: Vec<f64> = table
        .column("alpha_bar")?
        .into_iter()
        .collect::<Option<_>>()?;
    let snr: Vec<f64> = match table.column("snr") {
        Some(column) => column
            .iter()
            .zip(&alpha_bar)
            .map(|(s, &ab)| s.unwrap_or_else(|| snr_of(ab)))
            .collect(),
        None => alpha_bar.iter().copied().map(snr_of).collect(),
    };
    if t.len() < 2 || t.len() != alpha_bar.len() {
        return None;
    }
    let t_max = t.iter().copied().fold(f64::MIN, f64::max);
    // Integer steps beyond 1 are a discrete schedule's steps t = 0..T.
    let discrete = t_max > 1.0 && t.iter().all(|x| x.fract() == 0.0);
    let name = match initial {
        true => format!("{} initial", registry::label(variant)),
        false => registry::label(variant),
    };
    let (t, label) = if discrete {
        let steps = t_max.round() as usize;
        (
            t.iter().map(|x| x / t_max).collect(),
            format!("{name} (T={steps})"),
        )
    } else {
        (t, name)
    };
    Some(ScheduleCurve {
        label,
        variant: variant.to_owned(),
        colour: registry::find(variant)
            .map_or(super::plots::style::RUN_PALETTE[0], |entry| entry.colour()),
        t,
        alpha_bar,
        snr,
        discrete,
        initial,
    })
}

/// SNR = alpha_bar / (1 - alpha_bar) (infinite at alpha_bar = 1).
pub fn snr_of(alpha_bar: f64) -> f64 {
    alpha_bar / (1.0 - alpha_bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::info_report;
    use noprop_core::ScheduleTable;

    fn info(variant: &str, columns: &[&str], rows: &[&[Option<f64>]]) -> InfoReport {
        let table = ScheduleTable {
            label: "a schedule".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows.iter().map(|r| r.to_vec()).collect(),
        };
        info_report(variant, 1000, Some(table))
    }

    #[test]
    fn a_discrete_schedule_is_scaled_by_t_max() {
        let info = info(
            "dt",
            &["t", "alpha_bar", "snr"],
            &[
                &[Some(0.0), Some(0.2), Some(0.25)],
                &[Some(1.0), Some(0.5), Some(1.0)],
                &[Some(2.0), Some(0.8), None],
            ],
        );
        let c = from_info(&info, false).unwrap();
        assert!(c.discrete);
        assert_eq!(c.t, vec![0.0, 0.5, 1.0]);
        assert_eq!(c.alpha_bar, vec![0.2, 0.5, 0.8]);
        // The missing SNR is derived: 0.8 / 0.2 = 4.
        assert!((c.snr[2] - 4.0).abs() < 1e-12);
        assert_eq!(
            (c.label.as_str(), c.variant.as_str()),
            ("NoProp-DT (T=2)", "dt")
        );
    }

    #[test]
    fn a_continuous_schedule_without_snr_derives_it() {
        // SNR = ab / (1 - ab): 0.5 -> 1, 0.75 -> 3.
        let info = info(
            "ct",
            &["t", "gamma", "alpha_bar"],
            &[
                &[Some(0.0), Some(0.0), Some(0.5)],
                &[Some(1.0), Some(-1.1), Some(0.75)],
            ],
        );
        let c = from_info(&info, false).unwrap();
        assert!(!c.discrete);
        assert_eq!(c.t, vec![0.0, 1.0]);
        assert_eq!(c.snr, vec![1.0, 3.0]);
        let c = from_info(&info, true).unwrap();
        assert!(c.initial);
        assert_eq!(c.label, "NoProp-CT initial");
    }

    #[test]
    fn no_or_unusable_table_gives_none() {
        assert!(from_info(&info_report("fm", 1000, None), false).is_none());
        let no_alpha_bar = info(
            "ct",
            &["t", "snr"],
            &[&[Some(0.0), Some(1.0)], &[Some(1.0), Some(2.0)]],
        );
        assert!(from_info(&no_alpha_bar, false).is_none());
        let one_point = info("ct", &["t", "alpha_bar"], &[&[Some(0.0), Some(0.5)]]);
        assert!(from_info(&one_point, false).is_none());
    }
}

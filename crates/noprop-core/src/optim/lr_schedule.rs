//! [`LrSchedule`]: a learning-rate schedule over a whole run, as a factor
//! that multiplies every configured learning rate (each optimizer group
//! keeps its own rate; the schedule scales them all alike).
//!
//! For step k = 1..=N of a run of N steps, with W warm-up steps and a floor
//! f (`min_factor`):
//!
//! ```text
//! k <= W:              factor = k / W                                  linear warm-up
//! constant, k > W:     factor = 1
//! cosine,   k > W:     factor = f + (1 - f) (1 + cos(pi (k - 1 - W) / (N - W))) / 2
//! ```
//!
//! The cosine branch is PyTorch's `CosineAnnealingLR(T_max = N - W,
//! eta_min = f lr)` started after the warm-up: 1 at the first step after
//! it, falling to just above f at the last step. A function of (k, N) only,
//! so a run that resumes at step k continues exactly as it would have.

use candle_core::Result;
use serde::{Deserialize, Serialize};

/// The shape of the schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrScheduleKind {
    /// The configured rates throughout.
    #[default]
    Constant,
    /// Half a cosine from the configured rates down to `min_factor` times
    /// them at the run's last step.
    Cosine,
}

impl std::fmt::Display for LrScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrScheduleKind::Constant => "constant",
            LrScheduleKind::Cosine => "cosine",
        })
    }
}

/// A learning-rate schedule (see the module doc). `Default`: constant, no
/// warm-up, i.e. factor 1 at every step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// `constant` or `cosine`.
    pub kind: LrScheduleKind,
    /// Linear warm-up over the first W steps (0: none).
    pub warmup_steps: u64,
    /// The cosine's floor f, as a fraction of the configured rates, in
    /// [0, 1].
    pub min_factor: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            kind: LrScheduleKind::Constant,
            warmup_steps: 0,
            min_factor: 0.0,
        }
    }
}

impl LrSchedule {
    /// Checks the floor; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_factor) {
            candle_core::bail!(
                "lr_schedule.min_factor must lie in [0, 1], got {}",
                self.min_factor
            );
        }
        Ok(())
    }

    /// Whether every factor is 1 (nothing to apply).
    pub fn is_constant(&self) -> bool {
        self.kind == LrScheduleKind::Constant && self.warmup_steps == 0
    }

    /// The factor of step `step` (1-based) of a run of `total_steps` steps.
    /// Steps past the end keep the last step's factor.
    pub fn factor(&self, step: u64, total_steps: u64) -> f64 {
        let step = step.max(1);
        let warmup = self.warmup_steps;
        if step <= warmup {
            return step as f64 / warmup as f64;
        }
        match self.kind {
            LrScheduleKind::Constant => 1.0,
            LrScheduleKind::Cosine => {
                let span = total_steps.saturating_sub(warmup).max(1);
                let done = (step - 1 - warmup).min(span - 1);
                let f = self.min_factor;
                let cosine = (std::f64::consts::PI * done as f64 / span as f64).cos();
                f + (1.0 - f) * (1.0 + cosine) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(warmup_steps: u64, min_factor: f64) -> LrSchedule {
        LrSchedule {
            kind: LrScheduleKind::Cosine,
            warmup_steps,
            min_factor,
        }
    }

    #[test]
    fn constant_is_one_everywhere() {
        let s = LrSchedule::default();
        assert!(s.is_constant());
        for k in [1, 2, 50, 100, 1000] {
            assert_eq!(s.factor(k, 100), 1.0);
        }
    }

    #[test]
    fn warm_up_is_linear_then_the_schedule() {
        let s = LrSchedule {
            warmup_steps: 4,
            ..LrSchedule::default()
        };
        assert!(!s.is_constant());
        let f: Vec<f64> = (1..=6).map(|k| s.factor(k, 10)).collect();
        assert_eq!(f, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    /// Against PyTorch's closed form for CosineAnnealingLR, written out:
    /// step index i = k - 1 - W of T = N - W, eta_min + (1 - eta_min)
    /// (1 + cos(pi i / T)) / 2, at points where the cosine is known exactly.
    #[test]
    fn cosine_matches_the_closed_form() {
        let s = cosine(0, 0.0);
        // N = 4: i = 0, 1, 2, 3 -> cos 0, cos(pi/4), cos(pi/2), cos(3pi/4).
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let want = [1.0, (1.0 + r) / 2.0, 0.5, (1.0 - r) / 2.0];
        for (k, w) in (1..=4).zip(want) {
            assert!((s.factor(k, 4) - w).abs() < 1e-15, "step {k}");
        }
        // With a floor of 0.1: 0.1 + 0.9 x the same.
        let s = cosine(0, 0.1);
        for (k, w) in (1..=4).zip(want) {
            assert!((s.factor(k, 4) - (0.1 + 0.9 * w)).abs() < 1e-15, "step {k}");
        }
        // After 2 warm-up steps of N = 6, the same four values.
        let s = cosine(2, 0.0);
        assert_eq!(s.factor(1, 6), 0.5);
        assert_eq!(s.factor(2, 6), 1.0);
        for (k, w) in (3..=6).zip(want) {
            assert!((s.factor(k, 6) - w).abs() < 1e-15, "step {k}");
        }
        // Past the end: the last step's factor.
        assert_eq!(s.factor(7, 6), s.factor(6, 6));
    }

    #[test]
    fn cosine_decreases_monotonically_to_the_floor() {
        let s = cosine(10, 0.05);
        let f: Vec<f64> = (11..=1000).map(|k| s.factor(k, 1000)).collect();
        assert!(f.windows(2).all(|w| w[1] < w[0]));
        assert!(f[0] == 1.0 && *f.last().unwrap() > 0.05 && *f.last().unwrap() < 0.0501);
    }

    #[test]
    fn validation_and_serde() {
        assert!(cosine(0, 1.5).validate().is_err());
        assert!(cosine(0, -0.1).validate().is_err());
        let e = cosine(0, f64::NAN).validate().unwrap_err().to_string();
        assert!(e.contains("min_factor"), "{e}");
        cosine(5, 0.0).validate().unwrap();
        let s: LrSchedule =
            serde_json::from_str(r#"{"kind": "cosine", "warmup_steps": 3}"#).unwrap();
        assert_eq!(s, cosine(3, 0.0));
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind": "step"}"#).is_err());
        assert!(serde_json::from_str::<LrSchedule>(r#"{"floor": 0.1}"#).is_err());
    }
}

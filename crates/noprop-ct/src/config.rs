//! The configuration of a NoProp-CT model: the learned schedule and its
//! initial endpoints, the loss weight eta, how t is sampled, the class
//! embedding, the optimizer (with a separate group for the schedule and a
//! learning-rate warm-up) and the inference defaults. `Default` is the
//! paper's MNIST setting (spec, "NoProp-CT") plus the stability choices
//! measured in this crate's README.

use candle_core::Result;
use noprop_core::{EmbeddingKind, LearnedScheduleConfig, OdeSolver, VariantConfig};
use serde::{Deserialize, Serialize};

/// How the training time t is drawn for each example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampling {
    /// t ~ U[0, 1], loss weight (eta / 2) SNR'(t): Eq. 9 as written (the
    /// default: it trained better over 3 epochs, see the crate README).
    #[default]
    Uniform,
    /// t ~ p(t) proportional to SNR'(t) (optionally mixed with the uniform
    /// density), loss weight (eta / 2) SNR'(t) / p(t): the same expected loss
    /// and gradient, far lower variance; but the block then sees the noisy
    /// end of the schedule rarely.
    Importance,
}

impl std::fmt::Display for TimeSampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uniform => "uniform",
            Self::Importance => "importance",
        })
    }
}

impl std::str::FromStr for TimeSampling {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(Self::Uniform),
            "importance" => Ok(Self::Importance),
            _ => Err(format!(
                "unknown CT time sampling `{s}` (expected uniform or importance)"
            )),
        }
    }
}

/// Configuration of [`crate::NoPropCt`] (serde: every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtConfig {
    /// Class embedding W (one-hot, dimK, prototype).
    pub embedding: EmbeddingKind,
    /// Weight eta of the SNR'-weighted denoising term (paper: 1).
    pub eta: f64,
    /// Initial endpoints and size of the learned schedule. Default:
    /// alpha_bar from 0.01 to 0.99 (gamma = +-ln 99), 1024 hidden units.
    pub schedule: LearnedScheduleConfig,
    /// How t is drawn in training.
    pub time_sampling: TimeSampling,
    /// Cells of the piecewise-constant importance density.
    pub importance_cells: usize,
    /// Fraction of the uniform density mixed into the importance density
    /// (0: pure SNR'-proportional sampling), in [0, 1].
    pub importance_uniform_mix: f64,
    /// Dropout probability of the block's image branch.
    pub dropout: f32,
    /// Adam learning rate (block, head, W and schedule).
    pub lr: f64,
    /// Adam L2 weight decay (PyTorch Adam: added to the gradient) of the
    /// block, head and W.
    pub weight_decay: f64,
    /// Weight decay of the schedule variables. Default 0: decay pulls
    /// gamma_0, gamma_1 towards 0 (alpha_bar towards 0.5 at both ends).
    pub schedule_weight_decay: f64,
    /// Learning rate of the schedule variables; `None` = `lr`.
    pub schedule_lr: Option<f64>,
    /// Learning rate of the linear head d -> m; `None` = `lr` (the paper).
    /// The head only reads the almost clean z_1 and gets no gradient from
    /// the denoising term, so at lr 1e-3 it is what limits accuracy after
    /// one epoch (crate README: measured side by side).
    pub head_lr: Option<f64>,
    /// Linear learning-rate warm-up over the first `warmup_steps` steps
    /// (step k uses lr * min(1, k / warmup_steps), k = 1, 2, ...); 0 = none.
    pub warmup_steps: usize,
    /// Default ODE steps at inference (paper: 1000; 100 matched 1000 within
    /// 0.25 points in the reference runs).
    pub inference_steps: usize,
    /// Default ODE integrator.
    pub solver: OdeSolver,
}

impl Default for CtConfig {
    fn default() -> Self {
        Self {
            embedding: EmbeddingKind::OneHot,
            eta: 1.0,
            schedule: LearnedScheduleConfig::default(),
            time_sampling: TimeSampling::Uniform,
            importance_cells: 256,
            importance_uniform_mix: 0.0,
            dropout: noprop_block::config::DEFAULT_DROPOUT,
            lr: 1e-3,
            weight_decay: 1e-3,
            schedule_weight_decay: 0.0,
            schedule_lr: None,
            head_lr: None,
            warmup_steps: 0,
            inference_steps: 1000,
            solver: OdeSolver::Euler,
        }
    }
}

impl CtConfig {
    /// An error naming the first invalid field.
    pub fn validate(&self) -> Result<()> {
        let s = &self.schedule;
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            candle_core::bail!("ct config: eta must be finite and >= 0, got {}", self.eta);
        }
        if s.hidden == 0 {
            candle_core::bail!("ct config: schedule.hidden must be at least 1");
        }
        if !(s.gamma_0_init.is_finite() && s.gamma_1_init.is_finite())
            || s.gamma_1_init <= s.gamma_0_init
        {
            candle_core::bail!(
                "ct config: need finite schedule.gamma_1_init > schedule.gamma_0_init (noise end \
                 above clean end), got gamma_0_init = {}, gamma_1_init = {}",
                s.gamma_0_init,
                s.gamma_1_init
            );
        }
        if self.importance_cells == 0 {
            candle_core::bail!("ct config: importance_cells must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.importance_uniform_mix) {
            candle_core::bail!(
                "ct config: importance_uniform_mix must lie in [0, 1], got {}",
                self.importance_uniform_mix
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            candle_core::bail!(
                "ct config: dropout must lie in [0, 1), got {}",
                self.dropout
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            candle_core::bail!("ct config: lr must be finite and > 0, got {}", self.lr);
        }
        if let Some(lr) = self.schedule_lr {
            if !(lr.is_finite() && lr >= 0.0) {
                candle_core::bail!("ct config: schedule_lr must be finite and >= 0, got {lr}");
            }
        }
        if let Some(lr) = self.head_lr {
            if !(lr.is_finite() && lr > 0.0) {
                candle_core::bail!("ct config: head_lr must be finite and > 0, got {lr}");
            }
        }
        for (name, wd) in [
            ("weight_decay", self.weight_decay),
            ("schedule_weight_decay", self.schedule_weight_decay),
        ] {
            if !(wd.is_finite() && wd >= 0.0) {
                candle_core::bail!("ct config: {name} must be finite and >= 0, got {wd}");
            }
        }
        noprop_core::ode::check_ode_steps(self.inference_steps, "ct config: `inference_steps`")
    }

    /// The learning-rate factor of optimizer step `step` (1-based).
    pub fn warmup_factor(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 {
            1.0
        } else {
            (step as f64 / self.warmup_steps as f64).min(1.0)
        }
    }
}

impl VariantConfig for CtConfig {
    fn validate(&self) -> Result<()> {
        CtConfig::validate(self)
    }

    fn embedding(&self) -> EmbeddingKind {
        self.embedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_roundtrip() {
        let c = CtConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: CtConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let partial: CtConfig = serde_json::from_str(r#"{"eta": 0.5}"#).unwrap();
        assert_eq!(partial.eta, 0.5);
        assert!(serde_json::from_str::<CtConfig>(r#"{"etta": 0.5}"#).is_err());
    }

    #[test]
    fn bad_values_are_named() {
        let bad = [
            (
                CtConfig {
                    eta: -1.0,
                    ..Default::default()
                },
                "eta",
            ),
            (
                CtConfig {
                    inference_steps: 0,
                    ..Default::default()
                },
                "inference_steps",
            ),
            (
                CtConfig {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                CtConfig {
                    weight_decay: -1e-3,
                    ..Default::default()
                },
                "weight_decay",
            ),
            (
                CtConfig {
                    importance_cells: 0,
                    ..Default::default()
                },
                "importance_cells",
            ),
            (
                CtConfig {
                    importance_uniform_mix: 1.5,
                    ..Default::default()
                },
                "importance_uniform_mix",
            ),
            (
                CtConfig {
                    dropout: 1.0,
                    ..Default::default()
                },
                "dropout",
            ),
            (
                CtConfig {
                    schedule: LearnedScheduleConfig {
                        gamma_0_init: 1.0,
                        gamma_1_init: -1.0,
                        hidden: 8,
                    },
                    ..Default::default()
                },
                "gamma_1_init",
            ),
        ];
        for (c, field) in bad {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn warmup_is_linear_then_flat() {
        let c = CtConfig {
            warmup_steps: 4,
            ..Default::default()
        };
        let f: Vec<f64> = (1..=6).map(|k| c.warmup_factor(k)).collect();
        assert_eq!(f, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        assert_eq!(CtConfig::default().warmup_factor(1), 1.0);
    }
}

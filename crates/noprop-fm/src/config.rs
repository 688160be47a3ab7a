//! The NoProp-FM configuration.

use candle_core::Result;
use noprop_core::{EmbeddingKind, OdeSolver, VariantConfig};
use serde::{Deserialize, Serialize};

/// Hyperparameters of NoProp-FM. `Default` is the paper's MNIST setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FmConfig {
    /// Class embedding W: one-hot (fixed), dimN (learned) or prototype.
    pub embedding: EmbeddingKind,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam weight decay (L2, added to the gradient as in `torch.optim.Adam`).
    pub weight_decay: f64,
    /// Dropout in the block's convolutional branches.
    pub dropout: f32,
    /// Standard deviation of extra Gaussian noise on z_t (the paper's
    /// optional small sigma; not given, so 0 by default).
    pub sigma: f64,
    /// Weight of the anchor cross-entropy of Eq. 13. Used only when W is
    /// learned: with a fixed W the embeddings cannot collapse, and the
    /// paper adds the term for learned W only.
    pub anchor_weight: f64,
    /// ODE steps at inference (the paper: 1000 Euler steps).
    pub inference_steps: usize,
    /// ODE integrator at inference.
    pub solver: OdeSolver,
}

impl Default for FmConfig {
    fn default() -> Self {
        Self {
            embedding: EmbeddingKind::OneHot,
            lr: 1e-3,
            weight_decay: 1e-3,
            dropout: noprop_block::config::DEFAULT_DROPOUT,
            sigma: 0.0,
            anchor_weight: 1.0,
            inference_steps: 1000,
            solver: OdeSolver::Euler,
        }
    }
}

impl FmConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| -> Result<()> {
            candle_core::bail!("fm config: `{field}` {why}")
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be >= 0");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return bad("sigma", "must be >= 0");
        }
        if !(self.anchor_weight.is_finite() && self.anchor_weight >= 0.0) {
            return bad("anchor_weight", "must be >= 0");
        }
        noprop_core::ode::check_ode_steps(self.inference_steps, "fm config: `inference_steps`")
    }
}

impl VariantConfig for FmConfig {
    fn validate(&self) -> Result<()> {
        FmConfig::validate(self)
    }

    fn embedding(&self) -> EmbeddingKind {
        self.embedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        FmConfig::default().validate().unwrap();
        let cases = [
            FmConfig {
                lr: 0.0,
                ..Default::default()
            },
            FmConfig {
                inference_steps: 0,
                ..Default::default()
            },
            FmConfig {
                dropout: 1.0,
                ..Default::default()
            },
            FmConfig {
                sigma: -1.0,
                ..Default::default()
            },
        ];
        let fields = ["lr", "inference_steps", "dropout", "sigma"];
        for (c, f) in cases.iter().zip(fields) {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(f), "{e}");
        }
    }

    #[test]
    fn toml_like_round_trip_through_json() {
        let c = FmConfig {
            embedding: EmbeddingKind::Learned { dim: 20 },
            solver: OdeSolver::Heun,
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        let back: FmConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c, back);
        let unknown = serde_json::json!({"lr": 0.1, "no_such_field": 1});
        assert!(serde_json::from_value::<FmConfig>(unknown).is_err());
    }
}

//! The surface every NoProp variant implements, so that the trainer can drive
//! DT, CT and FM without knowing which one it holds.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ode::OdeSolver;
use crate::params::ParamStore;
use crate::rng::SeededRng;

/// Which variant a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantKind {
    Dt,
    Ct,
    Fm,
}

impl VariantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dt => "dt",
            Self::Ct => "ct",
            Self::Fm => "fm",
        }
    }
}

/// The shape of the problem a model is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Image channels (1 for MNIST, 3 for CIFAR).
    pub in_channels: usize,
    /// Image height = width (28 for MNIST, 32 for CIFAR).
    pub image_size: usize,
    /// Number of classes m.
    pub num_classes: usize,
}

impl ModelSpec {
    /// MNIST-family: 1x28x28, 10 classes.
    pub fn mnist() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            num_classes: 10,
        }
    }

    /// Number of scalars in one image (C*H*W), the prototype embedding size.
    pub fn image_dim(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }
}

/// What one training step did, as plain numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// The total loss that was minimised (for DT, summed over the blocks
    /// stepped, each of which was minimised separately).
    pub loss: f64,
    /// Named components of the loss (for example "denoise", "ce", "kl").
    pub terms: Vec<(String, f64)>,
}

/// How to run inference. `None` means the variant's configured default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceOptions {
    /// ODE steps (CT, FM).
    pub steps: Option<usize>,
    /// ODE integrator (CT, FM).
    pub solver: Option<OdeSolver>,
    /// DT: no noise injected during posterior mixing.
    pub deterministic: Option<bool>,
    /// Stochastic runs averaged (class probabilities averaged).
    pub runs: Option<usize>,
}

/// A NoProp model with its optimizers: the unit the trainer drives.
pub trait Variant {
    /// Which variant this is.
    fn kind(&self) -> VariantKind;

    /// Number of classes.
    fn num_classes(&self) -> usize;

    /// Called before each epoch (0-based), for variants whose training order
    /// depends on the epoch (the DT block sweep).
    fn begin_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// One optimisation step on a batch. `images` is `[B, C, H, W]` f32,
    /// `labels` `[B]` u32. Updates only what the variant owns; every random
    /// number comes from `rng`.
    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport>;

    /// Class probabilities `[B, m]` (rows sum to 1) in inference mode.
    fn predict_proba(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor>;

    /// Predicted classes `[B]` u32: the argmax of [`Variant::predict_proba`].
    fn predict(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        self.predict_proba(images, options, rng)?.argmax(1)
    }

    /// The model's variables (parameters and buffers), sorted by name.
    fn params(&self) -> &ParamStore;

    /// Optimizer state as named tensors (moments, step counts), for exact
    /// resumption.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores what [`Variant::optimizer_state`] returned.
    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// The variant's configuration as JSON (for checkpoint metadata).
    fn config_json(&self) -> serde_json::Value;
}

//! Inference of the back-propagation baseline: the training chain in
//! evaluation mode (no dropout, BatchNorm with its running statistics):
//!
//! ```text
//! z_0 ~ N(0, I)            (deterministic: z_0 = 0)                [B, d]
//! z_t = (1 - a_t) z_{t-1} + a_t block_t(x, z_{t-1}) W,   a_t = tanh(w_t),   t = 1..T
//!       (block_output = softmax: softmax(block_t(x, z_{t-1})) W)
//! p(y | x) = softmax(head(z_T))                                   [B, m]
//! ```
//!
//! The chain injects no noise of its own, so z_0 is its only randomness:
//! each run draws its own z_0 [B, d], run after run. Deterministic
//! inference (`InferenceOptions::deterministic`, default
//! `BackpropConfig::deterministic`) starts every run from the prior's mean
//! z_0 = 0 and draws nothing, so its runs are identical (it is computed
//! once and repeated). Each block's image branch depends only on x, so its
//! features are computed once per batch and shared by every step and run;
//! every intermediate is detached, so no gradient graph is kept. Batching
//! many images, averaging runs and scoring are `noprop_core::inference`'s.

use candle_core::{DType, Module, Result, Tensor};
use noprop_block::Mode;
use noprop_core::{InferenceOptions, SeededRng};

use crate::model::{block_prediction, mix_step, NoPropBackprop};

impl NoPropBackprop {
    /// Each run's probabilities [B, m] on one batch x [B, C, H, W] (see the
    /// module doc).
    pub(crate) fn predict_runs_batch(
        &self,
        x: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let b = self.check_images(x)?;
        let deterministic = options.deterministic.unwrap_or(self.config.deterministic);
        let d = self.embedding.dim();
        let w = self.embedding.matrix().detach();
        let a = self.mixing_coefficients()?.detach();
        let features = self
            .blocks
            .iter()
            .map(|block| Ok(block.image_features(x, Mode::Eval)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        let run = |z0: Tensor| -> Result<Tensor> {
            let mut z = z0;
            for (i, (block, f)) in self.blocks.iter().zip(&features).enumerate() {
                let logits = block.forward_from_features(f, &z, Mode::Eval)?;
                let u_hat = block_prediction(&logits, &w, self.config.block_output)?;
                // Detached: the block parameters are variables, so candle
                // would otherwise keep every step's graph alive.
                z = mix_step(&z, &u_hat, &a.narrow(0, i, 1)?)?.detach();
            }
            Ok(candle_nn::ops::softmax_last_dim(&self.head.forward(&z)?)?.detach())
        };
        if deterministic {
            if runs == 0 {
                return Ok(Vec::new());
            }
            let probs = run(Tensor::zeros((b, d), DType::F32, x.device())?)?;
            return Ok(vec![probs; runs]);
        }
        (0..runs)
            .map(|_| run(rng.normal((b, d), x.device())?))
            .collect()
    }
}

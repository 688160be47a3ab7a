//! DT inference by posterior mixing (spec Eq. 3), in evaluation mode:
//!
//! ```text
//! z_0 ~ N(0, I)                                                        [B, d]
//! z_t = a_t u_hat_t(x, z_{t-1}) + b_t z_{t-1} + sqrt(c_t) eps,  t = 1..T
//! p(y | x) = softmax(head(z_T))                                        [B, m]
//! ```
//!
//! with u_hat_t = softmax(block_t(x, z_{t-1})) W and a_t, b_t, c_t from
//! [`noprop_core::CosineSchedule::posterior_coeffs`]. Deterministic
//! inference sets eps = 0 (z_0 is still drawn). Each block's image features
//! are computed once per batch of images and reused by every run; every
//! intermediate is detached, so memory is bounded by one batch. Batching
//! many images, averaging runs and scoring are `noprop_core::inference`'s.
//!
//! Random draws, per run: z_0 [B, d], then (stochastic only) eps [B, d]
//! for t = 1..T.

use candle_core::{Module, Result, Tensor};
use noprop_block::Mode;
use noprop_core::{InferenceOptions, SeededRng};

use crate::model::NoPropDt;

impl NoPropDt {
    /// Each run's probabilities [B, m] on one batch x [B, C, H, W]: the
    /// image features of every block are computed once and reused by all
    /// runs.
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
        let features = self
            .blocks
            .iter()
            .map(|block| Ok(block.image_features(x, Mode::Eval)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut z = rng.normal((b, d), x.device())?;
            for (i, (block, f)) in self.blocks.iter().zip(&features).enumerate() {
                let logits = block.forward_from_features(f, &z, Mode::Eval)?;
                // softmax(logits) W; the fused softmax (no backward pass needed here).
                let u_hat = candle_nn::ops::softmax_last_dim(&logits)?.matmul(&w)?;
                let eps = if deterministic {
                    None
                } else {
                    Some(rng.normal((b, d), x.device())?)
                };
                // Detached: the block parameters are variables, so candle
                // would otherwise keep every step's graph alive.
                z = self
                    .schedule
                    .posterior_step(i + 1, &u_hat, &z, eps.as_ref())?
                    .detach();
            }
            out.push(candle_nn::ops::softmax_last_dim(&self.head.forward(&z)?)?.detach());
        }
        Ok(out)
    }
}

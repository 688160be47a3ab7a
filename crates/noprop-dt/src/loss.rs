//! The loss of one DT block (spec Eq. 8), per example then averaged over
//! the batch:
//!
//! ```text
//! L_t = (T/2) eta (SNR(t) - SNR(t-1)) || softmax(block_t(x, z_{t-1})) W - u_y ||^2
//!     + CE( head(z_T), y )
//!     + KL( q(z_0 | y) || N(0, I) )
//!
//! z_{t-1} = sqrt(alpha_bar_{t-1}) u_y + sqrt(1 - alpha_bar_{t-1}) eps,   eps ~ N(0, I)  [B, d]
//! z_T     = sqrt(alpha_bar_T) u_y + sqrt(1 - alpha_bar_T) eps',          eps' ~ N(0, I) [B, d]
//! KL      = 0.5 (alpha_bar_0 ||u_y||^2 + d (1 - alpha_bar_0) - d - d ln(1 - alpha_bar_0))
//! ```
//!
//! with u_y = W[y] [B, d], the squared norm summed over d, and the CE on the
//! noised *label* z_T (not on a block output). Block t is fed z_{t-1}
//! (Algorithm 1's z_t is a typo). With a learned W every term is
//! differentiable in W, including through the reparameterised samples
//! z_{t-1} and z_T (the gradient of an expectation under q, which depends on
//! W). The block runs in training mode: dropout masks come from the
//! generator and BatchNorm uses (and updates) batch statistics.

use candle_core::{Module, Result, Tensor};
use noprop_block::{DtBlock, Mode};
use noprop_core::{kl_prior, softmax_mix, CosineSchedule, SeededRng};

use crate::model::NoPropDt;

/// Block t's loss and its three terms (scalar tensors; `total` carries the
/// graph back to block t's parameters, the head and a learned W).
#[derive(Debug, Clone)]
pub struct BlockLoss {
    /// denoise + ce + kl: what block t's optimizer step minimises.
    pub total: Tensor,
    /// The SNR-weighted denoising term.
    pub denoise: Tensor,
    /// CE(head(z_T), y).
    pub ce: Tensor,
    /// The closed-form KL of q(z_0 | y) against N(0, I).
    pub kl: Tensor,
}

/// sqrt(alpha_bar) u + sqrt(1 - alpha_bar) eps: a draw from q(z | y).
pub(crate) fn noised(u_y: &Tensor, alpha_bar: f64, rng: &mut SeededRng) -> Result<Tensor> {
    let eps = rng.normal(u_y.shape(), u_y.device())?;
    (u_y * alpha_bar.sqrt())? + (eps * (1.0 - alpha_bar).sqrt())?
}

/// Block t's weighted denoising term,
/// `(T/2) eta (SNR(t) - SNR(t-1)) ||softmax(block_t(x, z_{t-1})) W - u_y||^2`
/// averaged over the batch, with z_{t-1} ~ q(z_{t-1} | y). Draws the
/// z_{t-1} noise, then the block's dropout masks, from `rng`. The one
/// definition both the sequential and the parallel step use.
#[allow(clippy::too_many_arguments)]
pub(crate) fn denoise_term(
    block: &DtBlock,
    schedule: &CosineSchedule,
    eta: f64,
    t: usize,
    images: &Tensor,
    u_y: &Tensor,
    w: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    let z_prev = noised(u_y, schedule.alpha_bar(t - 1)?, rng)?;
    let logits = block.forward(images, &z_prev, Mode::Train(rng))?;
    let u_hat = softmax_mix(&logits, w)?;
    let weight = schedule.loss_weight(t, eta)?;
    (u_hat - u_y)?.sqr()?.sum(1)?.mean(0)? * weight
}

impl NoPropDt {
    /// Block t's loss (1-based t) on a batch: images [B, C, H, W] f32,
    /// labels [B] u32, B >= 2 (BatchNorm). Draws, in order, the z_{t-1}
    /// noise, the block's dropout masks and the z_T noise from `rng`.
    /// Computing it updates block t's BatchNorm running statistics, as any
    /// training-mode forward pass does; it changes nothing else.
    pub fn block_loss(
        &self,
        t: usize,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<BlockLoss> {
        self.check_block_index(t)?;
        self.check_batch(images, labels)?;
        let w = self.embedding.matrix();
        let u_y = self.embedding.rows(labels)?; // [B, d]

        let denoise = denoise_term(
            &self.blocks[t - 1],
            &self.schedule,
            self.config.eta,
            t,
            images,
            &u_y,
            &w,
            rng,
        )?;

        let z_clean = noised(&u_y, self.schedule.alpha_bar_clean_end(), rng)?;
        let ce = candle_nn::loss::cross_entropy(&self.head.forward(&z_clean)?, labels)?;
        let kl = kl_prior(&u_y, self.schedule.alpha_bar_noise_end())?;
        let total = ((&denoise + &ce)? + &kl)?;
        Ok(BlockLoss {
            total,
            denoise,
            ce,
            kl,
        })
    }
}

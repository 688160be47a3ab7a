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
//! inference sets eps = 0 (z_0 is still drawn); `runs` > 1 averages the
//! class probabilities of independent runs. Each block's image features are
//! computed once per chunk of images and reused by every run. Images are
//! processed in chunks of `eval_batch_size`; every intermediate is detached,
//! so memory is bounded by one chunk whatever the number of images.
//!
//! Random draws, per chunk and run: z_0 [B, d], then (stochastic only) eps
//! [B, d] for t = 1..T.

use candle_core::{DType, Module, Result, Tensor};
use noprop_block::Mode;
use noprop_core::{InferenceOptions, SeededRng};

use crate::model::NoPropDt;

impl NoPropDt {
    /// Class probabilities [N, m] for images [N, C, H, W], with explicit
    /// inference settings: the mean of `runs` runs' probabilities.
    pub fn predict_proba_with(
        &self,
        images: &Tensor,
        deterministic: bool,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        let per_run = self.predict_proba_runs(images, deterministic, runs, rng)?;
        let mut sum = per_run[0].clone();
        for p in &per_run[1..] {
            sum = (sum + p)?;
        }
        if runs == 1 {
            Ok(sum)
        } else {
            sum / runs as f64
        }
    }

    /// Each run's class probabilities ([N, m] each, `runs` of them) for
    /// images [N, C, H, W]. The image features are computed once per chunk
    /// for all runs, so R runs cost little more than one.
    pub fn predict_proba_runs(
        &self,
        images: &Tensor,
        deterministic: bool,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let n = self.check_images(images)?;
        if runs == 0 {
            candle_core::bail!("dt: inference needs at least one run, got runs = 0");
        }
        let chunk = self.config.eval_batch_size;
        // chunks[c][r]: run r's probabilities on chunk c.
        let mut chunks = Vec::with_capacity(n.div_ceil(chunk));
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let x = images.narrow(0, start, len)?;
            chunks.push(self.predict_chunk(&x, deterministic, runs, rng)?);
            start += len;
        }
        (0..runs)
            .map(|r| {
                if chunks.is_empty() {
                    return Tensor::zeros((0, self.spec.num_classes), DType::F32, images.device());
                }
                let parts: Vec<&Tensor> = chunks.iter().map(|c| &c[r]).collect();
                Tensor::cat(&parts, 0)
            })
            .collect()
    }

    /// Every run's probabilities [B, m] on one chunk x [B, C, H, W].
    fn predict_chunk(
        &self,
        x: &Tensor,
        deterministic: bool,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let b = x.dim(0)?;
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

    /// Class probabilities with `options` over the configured defaults
    /// (`deterministic`, `runs`). `steps` and `solver` do not apply to DT
    /// (inference is exactly T posterior steps, one per block) and are
    /// ignored.
    pub fn predict_proba_opts(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        let deterministic = options.deterministic.unwrap_or(self.config.deterministic);
        let runs = options.runs.unwrap_or(self.config.runs);
        self.predict_proba_with(images, deterministic, runs, rng)
    }

    /// Accuracy in [0, 1] of the argmax prediction on images [N, C, H, W]
    /// against labels [N].
    pub fn evaluate(
        &self,
        images: &Tensor,
        labels: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<f64> {
        let n = self.check_batch(images, labels)?;
        if n == 0 {
            candle_core::bail!("dt: cannot evaluate on zero images");
        }
        let predicted = self.predict_proba_opts(images, options, rng)?.argmax(1)?;
        let correct = predicted
            .eq(&labels.to_dtype(DType::U32)?)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        Ok(correct / n as f64)
    }
}

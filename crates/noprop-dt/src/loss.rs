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
//! with u_y = W`[y]` [B, d], the squared norm summed over d, and the CE on the
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
    /// labels `[B]` u32, B >= 2 (BatchNorm). Draws, in order, the z_{t-1}
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

#[cfg(test)]
mod tests {
    //! Block t's loss against Eq. 8 recomputed by hand, on a tiny model
    //! (1x14x14 images, the smallest the block allows; m = 3 classes; T = 3).
    //! The hand computation shares nothing with the code under test but the
    //! block's forward pass and the generator: z_{t-1} and z_T are rebuilt in
    //! f64 from the same seeded draws (in the documented order: z_{t-1}
    //! noise, dropout masks, z_T noise), alpha_bar from the closed-form
    //! cosine formula written out below (not `CosineSchedule`), the softmax
    //! mix, the weight, the cross-entropy and the KL in f64 on the host.

    use candle_core::{DType, Device, Tensor};
    use noprop_block::Mode;
    use noprop_core::{EmbeddingKind, ModelSpec, SeededRng};

    use crate::config::DtConfig;
    use crate::model::NoPropDt;

    const T: usize = 3;
    const B: usize = 4;
    const M: usize = 3;
    const D: usize = 5;
    const ETA: f64 = 0.3;
    const AB_MIN: f64 = 0.05;
    const AB_MAX: f64 = 0.9;
    const LABELS: [u32; B] = [0, 2, 1, 2];

    /// alpha_bar_t = clamp(f(T - t) / f(0), AB_MIN, AB_MAX) with
    /// f(s) = cos^2((s/T + 0.008) / 1.008 * pi/2): the improved-DDPM cosine
    /// with time reversed (t = 0 noise, t = T clean). For T = 3 this is
    /// about [0.05 (clipped from ~4e-33), 0.2467, 0.7430, 0.9 (clipped from 1)]:
    /// both clips bite, and z_T keeps visible noise (sd 0.32), so a clean
    /// label in its place changes the CE.
    fn alpha_bar(t: usize) -> f64 {
        let f = |s: f64| {
            ((s / T as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        (f((T - t) as f64) / f(0.0)).clamp(AB_MIN, AB_MAX)
    }

    fn snr(ab: f64) -> f64 {
        ab / (1.0 - ab)
    }

    fn host(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    fn to_tensor(rows: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    /// sqrt(ab) u + sqrt(1 - ab) eps, row by row.
    fn noised_by_hand(u: &[Vec<f64>], eps: &[Vec<f64>], ab: f64) -> Vec<Vec<f64>> {
        u.iter()
            .zip(eps)
            .map(|(ur, er)| {
                ur.iter()
                    .zip(er)
                    .map(|(a, e)| ab.sqrt() * a + (1.0 - ab).sqrt() * e)
                    .collect()
            })
            .collect()
    }

    fn assert_close(got: f64, want: f64, what: &str) {
        let tol = 1e-5 * want.abs().max(1e-2);
        assert!(
            (got - want).abs() <= tol,
            "{what}: code {got}, by hand {want} (tolerance {tol})"
        );
    }

    /// A tiny model with a learned W whose rows have unequal norms (so the
    /// KL's ||u_y||^2 differs per class), and a batch of random images.
    fn setup() -> (NoPropDt, Tensor, Tensor, Vec<Vec<f64>>) {
        let dev = Device::Cpu;
        let config = DtConfig {
            num_blocks: T,
            eta: ETA,
            alpha_bar_min: AB_MIN,
            alpha_bar_max: AB_MAX,
            embedding: EmbeddingKind::Learned { dim: D },
            ..DtConfig::default()
        };
        let spec = ModelSpec {
            in_channels: 1,
            image_size: 14,
            num_classes: M,
        };
        let dt = NoPropDt::new(config, spec, None, 0, &dev).unwrap();
        let w = (SeededRng::new(5).normal((M, D), &dev).unwrap() * 1.5).unwrap();
        dt.embedding.var().unwrap().set(&w).unwrap();
        let x = SeededRng::new(6).normal((B, 1, 14, 14), &dev).unwrap();
        let y = Tensor::new(&LABELS, &dev).unwrap();
        (dt, x, y, host(&w))
    }

    /// Each term of block t's loss, for t = 1..=T, equals Eq. 8 by hand:
    /// - denoise = (T/2) eta (SNR(t) - SNR(t-1)) mean_b ||softmax(block_t(x,
    ///   z_{t-1})) W - u_y||^2 with z_{t-1} drawn with alpha_bar_{t-1};
    /// - ce = mean_b CE(head(z_T), y) with z_T the *noised label* drawn with
    ///   alpha_bar_T (not a block output);
    /// - kl = mean_b 0.5 (alpha_bar_0 ||u_y||^2 + d (1 - alpha_bar_0) - d -
    ///   d ln(1 - alpha_bar_0));
    /// - total = their sum.
    #[test]
    fn block_loss_terms_match_eq8_by_hand() {
        let (dt, x, y, w) = setup();
        let u: Vec<Vec<f64>> = LABELS.iter().map(|&c| w[c as usize].clone()).collect();
        // The schedule the test assumes, by hand (guards the formula too).
        for (t, want) in [(1, 0.2467), (2, 0.7430)] {
            assert!((alpha_bar(t) - want).abs() < 1e-3, "alpha_bar({t})");
        }
        let head_w = host(dt.head.weight());
        let head_b: Vec<f64> = dt
            .head
            .bias()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        for t in 1..=T {
            let seed = 100 + t as u64;
            let loss = dt.block_loss(t, &x, &y, &mut SeededRng::new(seed)).unwrap();

            let mut rng = SeededRng::new(seed);
            // z_{t-1} ~ q(z_{t-1} | y): alpha_bar of t - 1, not t.
            let ab_prev = alpha_bar(t - 1);
            let eps = host(&rng.normal((B, D), &Device::Cpu).unwrap());
            let z_prev = noised_by_hand(&u, &eps, ab_prev);
            let logits = dt.blocks[t - 1]
                .forward(&x, &to_tensor(&z_prev), Mode::Train(&mut rng))
                .unwrap();
            let logits = host(&logits);
            let sq_err: f64 = logits
                .iter()
                .zip(&u)
                .map(|(l, ub)| {
                    let max = l.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = l.iter().map(|v| (v - max).exp()).collect();
                    let s: f64 = e.iter().sum();
                    (0..D)
                        .map(|j| {
                            let u_hat: f64 = (0..M).map(|c| e[c] / s * w[c][j]).sum();
                            (u_hat - ub[j]).powi(2)
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
                / B as f64;
            let weight = T as f64 / 2.0 * ETA * (snr(alpha_bar(t)) - snr(ab_prev));
            assert_close(
                scalar(&loss.denoise),
                weight * sq_err,
                &format!("t={t} denoise"),
            );

            // z_T ~ q(z_T | y), drawn after the block's dropout masks.
            let eps_clean = host(&rng.normal((B, D), &Device::Cpu).unwrap());
            let z_clean = noised_by_hand(&u, &eps_clean, alpha_bar(T));
            let ce: f64 = z_clean
                .iter()
                .zip(LABELS)
                .map(|(z, label)| {
                    let out: Vec<f64> = (0..M)
                        .map(|c| head_b[c] + (0..D).map(|j| head_w[c][j] * z[j]).sum::<f64>())
                        .collect();
                    let max = out.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = max + out.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    lse - out[label as usize]
                })
                .sum::<f64>()
                / B as f64;
            assert_close(scalar(&loss.ce), ce, &format!("t={t} ce"));

            let (ab0, d) = (alpha_bar(0), D as f64);
            let kl: f64 = u
                .iter()
                .map(|ub| {
                    let norm: f64 = ub.iter().map(|v| v * v).sum();
                    0.5 * (ab0 * norm + d * (1.0 - ab0) - d - d * (1.0 - ab0).ln())
                })
                .sum::<f64>()
                / B as f64;
            assert_close(scalar(&loss.kl), kl, &format!("t={t} kl"));
            assert_close(
                scalar(&loss.total),
                weight * sq_err + ce + kl,
                &format!("t={t} total"),
            );
        }
    }
}

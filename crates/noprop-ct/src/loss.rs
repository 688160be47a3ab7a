//! The NoProp-CT training objective (paper Eq. 9), per batch:
//!
//! ```text
//! L = CE(head(z_1), y)                               z_1 ~ q(z_1 | y) = N(sqrt(ab(1)) u_y, (1 - ab(1)) I)
//!   + KL(q(z_0 | y) || N(0, I))                       closed form, alpha_bar(0) from the schedule
//!   + mean_b (eta / 2) w_b ||softmax(logits_b) W - u_{y_b}||^2
//! ```
//!
//! with logits = block(x, z_t, t), z_t ~ q(z_t | y) and the per-example
//! weight w_b = SNR'(t_b) for t ~ U[0, 1], or w_b = SNR'(t_b) / p(t_b) for t
//! drawn from the importance density p (same expectation). Shapes: u_y, z
//! [B, d], W [m, d], logits [B, m], t and w `[B]`.

use candle_core::{Result, Tensor};
use noprop_core::softmax_mix;

/// The three terms of the loss, scalar tensors (differentiable).
#[derive(Debug, Clone)]
pub struct CtLoss {
    /// The weighted denoising term, mean_b (eta / 2) w_b ||softmax(logits_b) W - u_{y_b}||^2.
    pub denoise: Tensor,
    /// CE(head(z_1), y).
    pub ce: Tensor,
    /// KL(q(z_0 | y) || N(0, I)).
    pub kl: Tensor,
}

impl CtLoss {
    /// denoise + ce + kl.
    pub fn total(&self) -> Result<Tensor> {
        (&self.denoise + &self.ce)? + &self.kl
    }
}

/// mean_b (eta / 2) w_b ||softmax(logits_b) W - u_b||^2: logits [B, m],
/// W [m, d], u_y [B, d], weight `[B]`.
pub fn denoising_loss(
    logits: &Tensor,
    w: &Tensor,
    u_y: &Tensor,
    weight: &Tensor,
    eta: f64,
) -> Result<Tensor> {
    let u_hat = softmax_mix(logits, w)?;
    let sq = (u_hat - u_y)?.sqr()?.sum(1)?; // [B]
    (sq * weight.to_dtype(u_y.dtype())?)?.mean(0)? * (0.5 * eta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn denoising_loss_matches_a_hand_computation() {
        // logits 0 -> u_hat = mean row of W = [0.5, 0.5] (W = I_2);
        // row 0: u = [1, 0], ||.||^2 = 0.5, weight 2 -> 1.0;
        // row 1: u = [0, 1], ||.||^2 = 0.5, weight 4 -> 2.0;
        // mean 1.5, times eta / 2 = 0.5 -> 0.75.
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 2), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::eye(2, candle_core::DType::F32, &dev).unwrap();
        let u = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        let weight = Tensor::new(&[2f32, 4.], &dev).unwrap();
        let l = denoising_loss(&logits, &w, &u, &weight, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 0.75).abs() < 1e-6, "{l}");
    }
}

//! The closed-form KL term of the NoProp losses.
//!
//! With q(z_0 | y) = N(sqrt(alpha_bar_0) u_y, (1 - alpha_bar_0) I_d) and the
//! prior p(z_0) = N(0, I_d), per example
//!
//! ```text
//! KL = 0.5 ( alpha_bar_0 ||u_y||^2 + d (1 - alpha_bar_0) - d - d ln(1 - alpha_bar_0) )
//! ```
//!
//! (the Gaussian KL 0.5 (tr S + |m|^2 - d - ln det S) with S = (1 - alpha_bar_0) I
//! and m = sqrt(alpha_bar_0) u_y). The functions take u_y as `[B, d]` (the rows
//! of W picked by the labels) and return the batch mean, a scalar tensor,
//! differentiable with respect to u_y (hence W) and, in the tensor version,
//! alpha_bar_0 (the learned CT schedule).

use candle_core::{Result, Tensor};

fn check_rows(u_y: &Tensor) -> Result<(usize, usize)> {
    if u_y.rank() != 2 {
        candle_core::bail!("kl: u_y must be [B, d], got shape {:?}", u_y.dims());
    }
    u_y.dims2()
}

/// Batch mean of KL(q(z_0 | y) || N(0, I)) for a fixed alpha_bar_0 in [0, 1).
pub fn kl_prior(u_y: &Tensor, alpha_bar_0: f64) -> Result<Tensor> {
    let (_, d) = check_rows(u_y)?;
    if !(0.0..1.0).contains(&alpha_bar_0) {
        candle_core::bail!("kl: alpha_bar_0 must lie in [0, 1), got {alpha_bar_0}");
    }
    let d = d as f64;
    let constant = 0.5 * (d * (1.0 - alpha_bar_0) - d - d * (1.0 - alpha_bar_0).ln());
    let sq_norm = u_y.sqr()?.sum(1)?.mean(0)?;
    (sq_norm * (0.5 * alpha_bar_0))? + constant
}

/// Batch mean of KL(q(z_0 | y) || N(0, I)) with alpha_bar_0 a one-element
/// tensor (e.g. [`crate::LearnedSchedule::alpha_bar_noise_end`]), so the
/// gradient also reaches the schedule.
pub fn kl_prior_tensor(u_y: &Tensor, alpha_bar_0: &Tensor) -> Result<Tensor> {
    let (_, d) = check_rows(u_y)?;
    if alpha_bar_0.elem_count() != 1 {
        candle_core::bail!(
            "kl: alpha_bar_0 must have one element, got shape {:?}",
            alpha_bar_0.dims()
        );
    }
    let d = d as f64;
    let ab = alpha_bar_0
        .flatten_all()?
        .squeeze(0)?
        .to_dtype(u_y.dtype())?;
    let one_minus = (1.0 - &ab)?;
    let sq_norm = u_y.sqr()?.sum(1)?.mean(0)?;
    let kl = (((sq_norm * &ab)? + (&one_minus * d)?)? - d)?;
    (kl - (one_minus.log()? * d)?)? * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use candle_core::{DType, Device, Var};

    #[test]
    fn closed_form_matches_monte_carlo() {
        // KL = E_q[ln q(z) - ln p(z)], estimated from 200k draws z ~ q; the
        // log densities are written out independently of the closed form.
        let u = [0.8f64, -0.3, 1.5];
        let ab: f64 = 0.3;
        let d = u.len() as f64;
        let var = 1.0 - ab;
        let mut rng = SeededRng::new(9);
        let n = 200_000;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for _ in 0..n {
            let mut log_ratio = 0.0;
            for &ui in &u {
                let eps = rng.normal_f32() as f64;
                let z = ab.sqrt() * ui + var.sqrt() * eps;
                let log_q = -0.5 * (eps * eps) - 0.5 * var.ln();
                let log_p = -0.5 * z * z;
                log_ratio += log_q - log_p; // the 2 pi terms cancel
            }
            sum += log_ratio;
            sum_sq += log_ratio * log_ratio;
        }
        let nf = n as f64;
        let mc = sum / nf;
        let se = ((sum_sq / nf - mc * mc) / nf).sqrt();
        let ut = Tensor::new(&[[u[0] as f32, u[1] as f32, u[2] as f32]], &Device::Cpu).unwrap();
        let closed = kl_prior(&ut, ab).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!(
            (closed - mc).abs() < 4.0 * se,
            "closed {closed} mc {mc} se {se}"
        );
        let by_hand =
            0.5 * (ab * u.iter().map(|x| x * x).sum::<f64>() + d * var - d - d * var.ln());
        assert!((closed - by_hand).abs() < 1e-5);
    }

    #[test]
    fn tensor_version_agrees_and_is_differentiable() {
        let dev = Device::Cpu;
        let w = Var::new(&[[1.0f32, 0.0], [0.5, 2.0]], &dev).unwrap();
        let ab = Var::new(&[0.2f32], &dev).unwrap();
        let kl = kl_prior_tensor(w.as_tensor(), ab.as_tensor()).unwrap();
        let fixed = kl_prior(w.as_tensor(), 0.2).unwrap();
        let (a, b) = (
            kl.to_scalar::<f32>().unwrap(),
            fixed.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        let grads = kl.backward().unwrap();
        // dKL/du = alpha_bar_0 u / B (batch mean of 2 rows).
        let gw = grads.get(w.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!((gw[1][1] - 0.2 * 2.0 / 2.0).abs() < 1e-6);
        // dKL/d ab = 0.5 (mean ||u||^2 - d + d / (1 - ab)) = 0.5 (2.625 - 2 + 2.5).
        let gab = grads.get(ab.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((gab - 0.5 * (2.625 - 2.0 + 2.5)).abs() < 1e-5, "{gab}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let dev = Device::Cpu;
        let u = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        assert!(kl_prior(&u, 1.0).is_err());
        assert!(kl_prior(&u.flatten_all().unwrap(), 0.1).is_err());
        let two = Tensor::zeros(2, DType::F32, &dev).unwrap();
        assert!(kl_prior_tensor(&u, &two).is_err());
        // alpha_bar_0 = 0 makes q the prior when u = 0.
        assert_eq!(kl_prior(&u, 0.0).unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}

//! Sampling the noised label: the marginal q(z_t | y).
//!
//! ```text
//! z_t = sqrt(alpha_bar_t) u_y + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)
//! ```
//!
//! u_y is `[B, d]`. DT uses one alpha_bar for the batch (an `f64` from
//! [`crate::CosineSchedule`]); CT draws t per example, so alpha_bar is a `[B]`
//! tensor from [`crate::LearnedSchedule`] (gradients flow through it unless
//! the caller detaches it). eps comes from the caller's [`SeededRng`].
//! FM's path z_t = t u_y + (1 - t) z_0 is a different interpolation and is
//! not covered here.

use candle_core::{Result, Tensor};

use crate::rng::SeededRng;

fn check_rows(u_y: &Tensor) -> Result<()> {
    if u_y.rank() != 2 {
        candle_core::bail!("marginal: u_y must be [B, d], got shape {:?}", u_y.dims());
    }
    Ok(())
}

/// sqrt(ab) u_y + sqrt(1 - ab) eps for a given noise tensor `eps` [B, d].
pub fn marginal_with_noise(u_y: &Tensor, alpha_bar: f64, eps: &Tensor) -> Result<Tensor> {
    check_rows(u_y)?;
    if !(0.0..=1.0).contains(&alpha_bar) {
        candle_core::bail!("marginal: alpha_bar must lie in [0, 1], got {alpha_bar}");
    }
    (u_y * alpha_bar.sqrt())? + (eps * (1.0 - alpha_bar).sqrt())?
}

/// A draw of z ~ q(z | y) = N(sqrt(ab) u_y, (1 - ab) I) for one alpha_bar.
pub fn marginal_sample(u_y: &Tensor, alpha_bar: f64, rng: &mut SeededRng) -> Result<Tensor> {
    check_rows(u_y)?;
    let eps = rng
        .normal(u_y.shape(), u_y.device())?
        .to_dtype(u_y.dtype())?;
    marginal_with_noise(u_y, alpha_bar, &eps)
}

/// A draw of z_b ~ N(sqrt(ab_b) u_b, (1 - ab_b) I) with a per-row alpha_bar `[B]`.
pub fn marginal_sample_per_row(
    u_y: &Tensor,
    alpha_bar: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    check_rows(u_y)?;
    if alpha_bar.dims() != [u_y.dim(0)?] {
        candle_core::bail!(
            "marginal: alpha_bar must be [B] with B = {}, got shape {:?}",
            u_y.dim(0)?,
            alpha_bar.dims()
        );
    }
    let ab = alpha_bar.to_dtype(u_y.dtype())?.unsqueeze(1)?; // [B, 1]
    let eps = rng
        .normal(u_y.shape(), u_y.device())?
        .to_dtype(u_y.dtype())?;
    u_y.broadcast_mul(&ab.sqrt()?)? + eps.broadcast_mul(&(1.0 - ab)?.sqrt()?)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn moments_match_the_marginal() {
        // 20,000 rows of one u: per-coordinate mean sqrt(ab) u and variance
        // 1 - ab, within 5 standard errors.
        let dev = Device::Cpu;
        let n = 20_000;
        let u = Tensor::new(&[1.5f32, -2.0], &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let u = u.broadcast_as((n, 2)).unwrap().contiguous().unwrap();
        let mut rng = SeededRng::new(2);
        let ab = 0.64;
        let per_row = Tensor::full(ab as f32, n, &dev).unwrap();
        for z in [
            marginal_sample(&u, ab, &mut rng).unwrap(),
            marginal_sample_per_row(&u, &per_row, &mut rng).unwrap(),
        ] {
            let z = z.to_dtype(DType::F64).unwrap();
            let mean = z.mean(0).unwrap().to_vec1::<f64>().unwrap();
            let var = z.var(0).unwrap().to_vec1::<f64>().unwrap();
            let se_mean = (0.36f64 / n as f64).sqrt();
            let se_var = 0.36 * (2.0 / n as f64).sqrt();
            assert!((mean[0] - 0.8 * 1.5).abs() < 5.0 * se_mean, "{mean:?}");
            assert!((mean[1] + 0.8 * 2.0).abs() < 5.0 * se_mean, "{mean:?}");
            assert!(
                var.iter().all(|v| (v - 0.36).abs() < 5.0 * se_var),
                "{var:?}"
            );
        }
    }

    #[test]
    fn per_row_alpha_bar_and_bad_input() {
        let dev = Device::Cpu;
        let u = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        // ab = 1 leaves the row clean whatever the noise.
        let ab = Tensor::new(&[1f32, 0.0], &dev).unwrap();
        let z = marginal_sample_per_row(&u, &ab, &mut SeededRng::new(0)).unwrap();
        assert_eq!(z.get(0).unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        let eps = Tensor::new(&[[1f32, -1.0], [0.5, 0.0]], &dev).unwrap();
        let fixed = marginal_with_noise(&u, 0.25, &eps)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want = [0.5 + 0.75f32.sqrt(), 1.0 - 0.75f32.sqrt()];
        assert!(
            fixed[0].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{fixed:?}"
        );
        assert!(marginal_sample(&u, 1.5, &mut SeededRng::new(0)).is_err());
        let wrong = Tensor::new(&[0.5f32], &dev).unwrap();
        assert!(marginal_sample_per_row(&u, &wrong, &mut SeededRng::new(0)).is_err());
        assert!(marginal_sample(&u.flatten_all().unwrap(), 0.5, &mut SeededRng::new(0)).is_err());
    }
}

//! Sinusoidal time embedding (Vaswani et al. 2017, as used by DDPM).
//!
//! For t of shape [B] and an even dimension D = 2K:
//!
//! ```text
//! s      = scale * t                                  (scale = 1000)
//! f_k    = exp(-ln(10000) * k / K),   k = 0..K-1
//! emb(t) = [sin(s f_0) .. sin(s f_{K-1}), cos(s f_0) .. cos(s f_{K-1})]   [B, D]
//! ```
//!
//! t in [0, 1] is scaled by 1000 first: on raw t most features would be
//! nearly constant (the highest frequency would be 1 rad per unit of t).
//!
//! Local to this crate until noprop-core provides its own
//! `noprop_core::time_embedding`; the blocks should then switch to it.

use candle_core::{bail, DType, Result, Tensor};

/// Embedding width of the paper's CT/FM blocks.
pub const TIME_EMBEDDING_DIM: usize = 64;
/// Factor applied to t in [0, 1] before embedding.
pub const TIME_SCALE: f64 = 1000.0;

/// `t [B]` (or `[B, 1]`) -> `[B, dim]` sinusoidal features of `scale * t`.
pub fn time_embedding(t: &Tensor, dim: usize, scale: f64) -> Result<Tensor> {
    if dim == 0 || dim % 2 != 0 {
        bail!("time embedding: dim must be even and positive, got {dim}");
    }
    let t = match t.dims() {
        [_] => t.clone(),
        [b, 1] => t.reshape(*b)?,
        dims => bail!("time embedding: expected t of shape [B] or [B, 1], got {dims:?}"),
    };
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = (t.to_dtype(DType::F32)?.unsqueeze(1)? * scale)?.broadcast_mul(&freqs)?;
    Tensor::cat(&[args.sin()?, args.cos()?], 1)?.to_dtype(t.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_formula_computed_in_f64() {
        let ts = [0.0f32, 0.0371, 0.5, 1.0];
        let t = Tensor::new(&ts, &Device::Cpu).unwrap();
        let emb = time_embedding(&t, 8, TIME_SCALE)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, &ti) in ts.iter().enumerate() {
            for k in 0..4 {
                let arg = 1000.0 * ti as f64 * 10000f64.powf(-(k as f64) / 4.0);
                assert!(
                    (emb[row][k] as f64 - arg.sin()).abs() < 1e-4,
                    "sin {row} {k}"
                );
                assert!(
                    (emb[row][4 + k] as f64 - arg.cos()).abs() < 1e-4,
                    "cos {row} {k}"
                );
            }
        }
        // t = 0: sines 0, cosines 1 exactly.
        assert_eq!(emb[0], vec![0., 0., 0., 0., 1., 1., 1., 1.]);
    }

    #[test]
    fn accepts_column_and_rejects_bad_shapes() {
        let col = Tensor::new(&[[0.25f32], [0.75]], &Device::Cpu).unwrap();
        assert_eq!(
            time_embedding(&col, 64, TIME_SCALE).unwrap().dims(),
            &[2, 64]
        );
        let bad = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(time_embedding(&bad, 64, TIME_SCALE)
            .unwrap_err()
            .to_string()
            .contains("[B]"));
        assert!(time_embedding(&col, 63, TIME_SCALE).is_err());
    }
}

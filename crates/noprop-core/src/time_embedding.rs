//! Sinusoidal time embedding for the CT and FM blocks.
//!
//! For t `[B]` in [0, 1], scale s (default 1000), dimension D (even, default
//! 64), half = D / 2 and frequencies f_k = P^(-k / half), k = 0..half, with
//! P = 10000 (the Transformer / DDPM convention):
//!
//! ```text
//! emb(t) = [ sin(s t f_0), ..., sin(s t f_{half-1}), cos(s t f_0), ..., cos(s t f_{half-1}) ]   [B, D]
//! ```
//!
//! The scale matters: on raw t in [0, 1] most of these features are nearly
//! constant (s t f_k << 1 for all but the first few k); on 1000 t they span
//! the usual DDPM range, which is what worked in the reference runs.

use candle_core::{Module, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Configuration and forward pass of the sinusoidal embedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinusoidalTimeEmbedding {
    /// Output dimension D (even).
    pub dim: usize,
    /// Multiplier s applied to t before the sinusoids.
    pub scale: f64,
    /// The longest period P.
    pub max_period: f64,
}

impl Default for SinusoidalTimeEmbedding {
    fn default() -> Self {
        Self {
            dim: 64,
            scale: 1000.0,
            max_period: 10_000.0,
        }
    }
}

impl SinusoidalTimeEmbedding {
    /// A D-dimensional embedding with the default scale and period.
    pub fn new(dim: usize) -> Result<Self> {
        let e = Self {
            dim,
            ..Default::default()
        };
        e.validate()?;
        Ok(e)
    }

    /// An error unless D is even and positive and scale and period are finite
    /// and positive.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || !self.dim.is_multiple_of(2) {
            candle_core::bail!(
                "time embedding: dim must be even and positive, got {}",
                self.dim
            );
        }
        if !(self.scale > 0.0
            && self.scale.is_finite()
            && self.max_period > 1.0
            && self.max_period.is_finite())
        {
            candle_core::bail!(
                "time embedding: need scale > 0 and max_period > 1, got {} and {}",
                self.scale,
                self.max_period
            );
        }
        Ok(())
    }

    /// The frequencies s f_k, k = 0..D/2.
    fn scaled_frequencies(&self) -> Vec<f64> {
        let half = self.dim / 2;
        (0..half)
            .map(|k| self.scale * (-(self.max_period.ln()) * k as f64 / half as f64).exp())
            .collect()
    }
}

impl Module for SinusoidalTimeEmbedding {
    /// t `[B]` or [B, 1] (any float dtype) -> [B, D] in t's dtype.
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        self.validate()?;
        let t = match t.dims() {
            [_] => t.clone(),
            [b, 1] => t.reshape(*b)?,
            dims => {
                candle_core::bail!("time embedding: t must be [B] or [B, 1], got shape {dims:?}")
            }
        };
        let freqs = Tensor::new(self.scaled_frequencies(), t.device())?.to_dtype(t.dtype())?;
        let args = t.unsqueeze(1)?.broadcast_mul(&freqs.unsqueeze(0)?)?; // [B, D/2]
        Tensor::cat(&[&args.sin()?, &args.cos()?], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn values_match_the_formula() {
        let e = SinusoidalTimeEmbedding::default();
        let ts = [0.0f64, 0.25, 0.9];
        let t = Tensor::new(&ts, &Device::Cpu).unwrap();
        let out = e.forward(&t).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), 64);
        for (b, &tv) in ts.iter().enumerate() {
            for k in 0..32 {
                // f_k = 10000^(-k/32), written as a power here (the code uses exp/ln).
                let arg = 1000.0 * tv * 10_000f64.powf(-(k as f64) / 32.0);
                assert!((out[b][k] - arg.sin()).abs() < 1e-9);
                assert!((out[b][32 + k] - arg.cos()).abs() < 1e-9);
            }
        }
        // t = 0: all sines 0, all cosines 1.
        assert!(out[0][..32].iter().all(|&x| x == 0.0) && out[0][32..].iter().all(|&x| x == 1.0));
        let f32_out = e.forward(&t.to_dtype(DType::F32).unwrap()).unwrap();
        assert_eq!(f32_out.dtype(), DType::F32);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(SinusoidalTimeEmbedding::new(63).is_err());
        assert!(SinusoidalTimeEmbedding::new(0).is_err());
        let e = SinusoidalTimeEmbedding::new(8).unwrap();
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(e.forward(&t).is_err());
        let column = Tensor::new(&[[0.5f32], [0.25]], &Device::Cpu).unwrap();
        let flat = Tensor::new(&[0.5f32, 0.25], &Device::Cpu).unwrap();
        assert_eq!(
            e.forward(&column).unwrap().to_vec2::<f32>().unwrap(),
            e.forward(&flat).unwrap().to_vec2::<f32>().unwrap()
        );
    }
}

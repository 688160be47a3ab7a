//! Train or eval mode, passed explicitly to every forward pass.
//!
//! In `Train(rng)` dropout draws inverted-dropout masks from the caller's
//! seeded generator (each kept activation scaled by `1 / (1 - p)`), and
//! BatchNorm normalises with batch statistics and updates its running
//! statistics. In `Eval` dropout is the identity and BatchNorm uses its
//! running statistics, so the output is a deterministic function of the
//! input.

use candle_core::{Device, Result, Shape, Tensor};
use noprop_core::SeededRng;

/// Whether a forward pass trains (with the generator dropout draws from) or
/// evaluates.
#[derive(Debug)]
pub enum Mode<'a> {
    /// Training: dropout masks are drawn from this generator, BatchNorm uses batch statistics.
    Train(&'a mut SeededRng),
    /// Evaluation: dropout is the identity, BatchNorm uses its running statistics.
    Eval,
}

impl Mode<'_> {
    /// Whether this is `Train`.
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// A shorter-lived copy of this mode, so one mode can be passed to
    /// several forward calls in turn.
    pub fn reborrow(&mut self) -> Mode<'_> {
        match self {
            Mode::Train(rng) => Mode::Train(rng),
            Mode::Eval => Mode::Eval,
        }
    }

    /// Element-wise inverted dropout with probability `p` in `Train`, the
    /// identity in `Eval` (and for `p = 0`, which draws nothing).
    pub fn dropout(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        match self.dropout_mask(p, x.shape(), x.device())? {
            Some(mask) => x.mul(&mask.to_dtype(x.dtype())?),
            None => Ok(x.clone()),
        }
    }

    /// The inverted-dropout mask [`Mode::dropout`] would multiply a tensor of
    /// `shape` by (the same draws), or `None` where it is the identity: for
    /// kernels that apply the mask themselves.
    pub fn dropout_mask<S: Into<Shape>>(
        &mut self,
        p: f32,
        shape: S,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        match self {
            Mode::Train(rng) if p > 0.0 => Ok(Some(rng.dropout_mask(p, shape, device)?)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dropout_is_identity_in_eval_and_seeded_in_train() {
        let x = Tensor::ones((50, 40), candle_core::DType::F32, &Device::Cpu).unwrap();
        let eval = Mode::Eval.dropout(&x, 0.2).unwrap();
        assert_eq!(eval.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());

        let mut rng = SeededRng::new(5);
        let mut same = rng.clone();
        let a = Mode::Train(&mut rng).dropout(&x, 0.2).unwrap();
        let b = Mode::Train(&mut same).dropout(&x, 0.2).unwrap();
        let c = Mode::Train(&mut rng).dropout(&x, 0.2).unwrap();
        let (a, b, c) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Inverted dropout on ones: every value is 0 or 1 / (1 - 0.2).
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert!(a.contains(&0.0));
    }

    #[test]
    fn zero_rate_draws_nothing() {
        let x = Tensor::ones(8, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = SeededRng::new(1);
        let before = rng.state_words();
        Mode::Train(&mut rng).dropout(&x, 0.0).unwrap();
        assert_eq!(rng.state_words(), before);
    }
}

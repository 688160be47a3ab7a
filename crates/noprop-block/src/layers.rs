//! The layers the blocks are made of, initialised as PyTorch initialises
//! them, so that training starts where the reference implementation did.
//!
//! - [`linear`]: `y = x W^T + b`, `x [B, in]` -> `[B, out]`; W and b uniform in
//!   `±1/sqrt(in)` (PyTorch's `kaiming_uniform_(a = sqrt(5))` bound).
//!   candle-nn's own `linear` draws W from a Kaiming normal with a ReLU gain,
//!   about 2.4 times wider.
//! - [`Conv3x3`]: valid (no padding) stride-1 3x3 convolution with bias,
//!   `[B, C_in, H, W]` -> `[B, C_out, H-2, W-2]`, W and b uniform in
//!   `±1/sqrt(9 C_in)`; runs on `noprop_kernels::conv2d`.
//! - [`batch_norm`]: `y = (x - mean) / sqrt(var + eps) * gamma + beta` per
//!   feature of `[B, F]`, with PyTorch's defaults eps = 1e-5 and momentum
//!   0.1 (`running = 0.9 running + 0.1 batch`, the variance unbiased);
//!   gamma = 1, beta = 0 initially.

use candle_core::{Module, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Init, Linear, VarBuilder};

/// PyTorch's BatchNorm epsilon.
pub const BATCH_NORM_EPS: f64 = 1e-5;
/// PyTorch's BatchNorm momentum (weight of the new batch statistic).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

fn torch_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A fully connected layer `in_dim -> out_dim` with bias, PyTorch init.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", torch_uniform(in_dim))?;
    let bias = vb.get_with_hints(out_dim, "bias", torch_uniform(in_dim))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Number of trainable scalars of a [`linear`] layer.
pub fn linear_parameters(layer: &Linear) -> usize {
    layer.weight().elem_count() + layer.bias().map_or(0, |b| b.elem_count())
}

/// BatchNorm over `num_features` with PyTorch's eps and momentum.
pub fn batch_norm(num_features: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let config = BatchNormConfig {
        eps: BATCH_NORM_EPS,
        remove_mean: true,
        affine: true,
        momentum: BATCH_NORM_MOMENTUM,
    };
    candle_nn::batch_norm(num_features, config, vb)
}

/// Number of trainable scalars of a BatchNorm (gamma and beta; the running
/// statistics are buffers, not parameters).
pub fn batch_norm_parameters(layer: &BatchNorm) -> usize {
    layer
        .weight_and_bias()
        .map_or(0, |(w, b)| w.elem_count() + b.elem_count())
}

/// A valid 3x3 convolution with bias.
#[derive(Debug, Clone)]
pub struct Conv3x3 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv3x3 {
    /// Creates `weight` `[out_channels, in_channels, 3, 3]` and `bias` `[out_channels]` in `vb`, both uniform in ±1/sqrt(9 in_channels) (PyTorch's default).
    pub fn new(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let init = torch_uniform(9 * in_channels);
        let weight = vb.get_with_hints((out_channels, in_channels, 3, 3), "weight", init)?;
        let bias = vb.get_with_hints(out_channels, "bias", init)?;
        Ok(Self { weight, bias })
    }

    /// The kernel, `[C_out, C_in, 3, 3]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[C_out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    /// `relu(conv(x))`, fused in one kernel (every convolution of the blocks
    /// is followed by a ReLU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        noprop_kernels::conv2d_relu(x, &self.weight, &self.bias)
    }

    /// `relu(conv(x)) ⊙ mask` in one kernel (`mask`: a dropout mask of the
    /// output's shape, or `None`).
    pub fn forward_relu_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        noprop_kernels::conv2d_relu_masked(x, &self.weight, &self.bias, mask)
    }

    /// `maxpool2x2(relu(conv(x))) ⊙ mask` in one kernel (`mask`: a dropout
    /// mask of the pooled output's shape, or `None`).
    pub fn forward_relu_pool_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        noprop_kernels::conv2d_relu_pool2x2_masked(x, &self.weight, &self.bias, mask)
    }
}

impl Module for Conv3x3 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        noprop_kernels::conv2d(x, &self.weight, &self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::ModuleT;
    use noprop_core::{ParamStore, SeededRng};

    #[test]
    fn batch_norm_matches_pytorch_update_rule() {
        let store = ParamStore::new(SeededRng::new(0));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let bn = batch_norm(2, vb).unwrap();
        // Feature 0: [1, 2, 3, 6] has mean 3, biased variance 3.5, unbiased
        // 14/3. Feature 1 is constant 5: mean 5, variance 0.
        let x = Tensor::new(&[[1f32, 5.], [2., 5.], [3., 5.], [6., 5.]], &Device::Cpu).unwrap();
        let y = bn.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap();
        for (row, xi) in [1f32, 2., 3., 6.].iter().enumerate() {
            let expected = (xi - 3.0) / (3.5f32 + 1e-5).sqrt();
            assert!(
                (y[row][0] - expected).abs() < 1e-5,
                "{} vs {expected}",
                y[row][0]
            );
            assert!(y[row][1].abs() < 1e-6);
        }
        let mean = bn.running_mean().to_vec1::<f32>().unwrap();
        let var = bn.running_var().to_vec1::<f32>().unwrap();
        assert!((mean[0] - 0.1 * 3.0).abs() < 1e-6 && (mean[1] - 0.1 * 5.0).abs() < 1e-6);
        assert!((var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
        assert!((var[1] - 0.9).abs() < 1e-6);
        // The running statistics live in the store (shared storage).
        let stored = store.get("running_mean").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(stored, mean);
        // Eval uses them: (x - 0.3) / sqrt(var + eps) for feature 0.
        let e = bn.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        let expected = (6.0 - 0.3) / (var[0] + 1e-5).sqrt();
        assert!((e[3][0] - expected).abs() < 1e-5);
    }

    #[test]
    fn pytorch_init_bounds() {
        let store = ParamStore::new(SeededRng::new(0));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let fc = linear(64, 32, vb.pp("fc")).unwrap();
        let conv = Conv3x3::new(4, 8, vb.pp("conv")).unwrap();
        let max_abs = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        // Bounds 1/sqrt(64) = 0.125 and 1/sqrt(36) = 1/6; with 2048 and 288
        // draws the largest magnitude is close to the bound.
        let w = max_abs(fc.weight());
        assert!(w <= 0.125 && w > 0.12, "{w}");
        let c = max_abs(conv.weight());
        assert!(c <= 1.0 / 6.0 && c > 0.15, "{c}");
        assert_eq!(linear_parameters(&fc), 64 * 32 + 32);
        assert_eq!(conv.num_parameters(), 8 * 4 * 9 + 8);
    }

    #[test]
    fn conv_is_valid_3x3() {
        let store = ParamStore::new(SeededRng::new(0));
        let vb = store.var_builder(DType::F32, &Device::Cpu);
        let conv = Conv3x3::new(1, 1, vb).unwrap();
        let x = Tensor::ones((1, 1, 5, 5), DType::F32, &Device::Cpu).unwrap();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), &[1, 1, 3, 3]);
        // On a constant image every output is sum(W) + b.
        let sum_w = conv.weight().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let b = conv.bias().to_vec1::<f32>().unwrap()[0];
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&o| (o - (sum_w + b)).abs() < 1e-5));
        // The fused ReLU gives max(sum(W) + b, 0), and -that on -x.
        let r = conv
            .forward_relu(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(r.iter().all(|&o| (o - (sum_w + b).max(0.0)).abs() < 1e-5));
        let r = conv.forward_relu(&x.neg().unwrap()).unwrap();
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(r.iter().all(|&o| (o - (b - sum_w).max(0.0)).abs() < 1e-5));
    }
}

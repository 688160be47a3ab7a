//! The convolutional stack shared by every block's image branch (and by the
//! latent branch when the latent is an image, d = C*H*W):
//!
//! ```text
//! x [B, C, H, H]
//!   conv3x3 C->32, ReLU, maxpool 2x2, dropout   [B, 32,  H1, H1]  H1 = (H-2)/2
//!   conv3x3 32->64, ReLU, dropout               [B, 64,  H1-2, H1-2]
//!   conv3x3 64->128, ReLU, maxpool 2x2, dropout [B, 128, S, S]    S = (H1-4)/2
//!   flatten                                     [B, 128 S^2]
//! ```
//!
//! (integer division; MNIST 28 -> S = 4, 2048 features; CIFAR 32 -> S = 5,
//! 3200 features). Convolutions are valid (no padding), stride 1.

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::BlockConfig;
use crate::layers::Conv3x3;
use crate::mode::Mode;

/// Three valid 3x3 convolutions with ReLU, pooling and dropout, flattened.
#[derive(Debug, Clone)]
pub struct ConvBranch {
    conv1: Conv3x3,
    conv2: Conv3x3,
    conv3: Conv3x3,
    in_channels: usize,
    image_size: usize,
    layer_sides: [usize; 3],
    output_dim: usize,
    dropout: f32,
}

impl ConvBranch {
    /// A stack for the images `config` describes (`config` must be valid).
    pub fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            conv1: Conv3x3::new(config.in_channels, 32, vb.pp("conv1"))?,
            conv2: Conv3x3::new(32, 64, vb.pp("conv2"))?,
            conv3: Conv3x3::new(64, 128, vb.pp("conv3"))?,
            in_channels: config.in_channels,
            image_size: config.image_size,
            layer_sides: config.conv_layer_sides(),
            output_dim: config.conv_output_dim(),
            dropout: config.dropout,
        })
    }

    /// Width of the flattened output, 128 S^2.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.conv1.num_parameters() + self.conv2.num_parameters() + self.conv3.num_parameters()
    }

    /// The random words a training-mode [`ConvBranch::forward`] draws per
    /// example: its three dropout masks, one word per element (none
    /// without dropout).
    pub fn dropout_words_per_example(&self) -> u64 {
        if self.dropout <= 0.0 {
            return 0;
        }
        let [s1, s2, s3] = self.layer_sides.map(|s| s as u64);
        32 * s1 * s1 + 64 * s2 * s2 + 128 * s3 * s3
    }

    /// `x [B, C, H, H]` -> `[B, 128 S^2]`.
    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (c, h) = (self.in_channels, self.image_size);
        match x.dims() {
            [_, xc, xh, xw] if (*xc, *xh, *xw) == (c, h, h) => {}
            dims => bail!("conv branch: expected input [B, {c}, {h}, {h}], got {dims:?}"),
        }
        // Each convolution's ReLU, pooling and dropout run inside its kernel
        // (one graph node per layer); the masks are drawn in layer order, as
        // separate dropouts would draw them.
        let (batch, dev, p) = (x.dim(0)?, x.device(), self.dropout);
        let [s1, s2, s3] = self.layer_sides;
        let mask = mode.dropout_mask(p, (batch, 32, s1, s1), dev)?;
        let x = self.conv1.forward_relu_pool_masked(x, mask.as_ref())?;
        let mask = mode.dropout_mask(p, (batch, 64, s2, s2), dev)?;
        let x = self.conv2.forward_relu_masked(&x, mask.as_ref())?;
        let mask = mode.dropout_mask(p, (batch, 128, s3, s3), dev)?;
        let x = self.conv3.forward_relu_pool_masked(&x, mask.as_ref())?;
        x.flatten_from(1)
    }
}

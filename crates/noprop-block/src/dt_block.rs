//! The NoProp-DT block (paper Fig. 6, left): predicts class logits from an
//! image x and a noisy latent z_{t-1}.
//!
//! ```text
//! image   x [B, C, H, H] -> ConvBranch -> [B, 128 S^2] -> FC 256 -> BN   f [B, 256]
//! latent  z [B, d]:
//!   d != C*H*W:  h1 = ReLU(BN(FC 256 (z)))
//!                h2 = ReLU(BN(FC 256 (h1)))
//!                l  = BN(FC 256 (h2)) + h1                            l [B, 256]
//!   d == C*H*W:  z read as [B, C, H, H] -> ConvBranch -> FC 256 -> BN   l [B, 256]
//! fusion  [f, l] [B, 512] -> FC 256 -> BN -> ReLU -> FC 128 -> BN -> ReLU
//!                -> FC m                                       logits [B, m]
//! ```
//!
//! BatchNorm uses batch statistics in `Mode::Train` (so a training batch needs
//! at least two examples) and running statistics in `Mode::Eval`. With
//! one-hot embeddings on MNIST (d = m = 10) the block has 919,946 trainable
//! parameters (BN's gamma and beta included, running statistics not).
//!
//! Parameter names under the `VarBuilder`'s prefix: `image.{conv1,conv2,
//! conv3,fc,bn}`, `latent.{fc1,bn1,fc2,bn2,fc3,bn3}` (or `latent.{conv1,
//! conv2,conv3,fc,bn}`), `fusion.{fc1,bn1,fc2,bn2,out}`.

use candle_core::{bail, Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, Linear, VarBuilder};

use crate::config::BlockConfig;
use crate::conv_branch::ConvBranch;
use crate::layers::{batch_norm, batch_norm_parameters, linear, linear_parameters};
use crate::mode::Mode;
use crate::shapes::{check_features, check_latent, FEATURE_DIM};

/// `FC -> BN`, the unit every DT branch is built from.
#[derive(Debug, Clone)]
struct FcBn {
    fc: Linear,
    bn: BatchNorm,
}

impl FcBn {
    fn new(in_dim: usize, out_dim: usize, vb: &VarBuilder, fc: &str, bn: &str) -> Result<Self> {
        Ok(Self {
            fc: linear(in_dim, out_dim, vb.pp(fc))?,
            bn: batch_norm(out_dim, vb.pp(bn))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        self.bn.forward_t(&self.fc.forward(x)?, mode.is_train())
    }

    fn num_parameters(&self) -> usize {
        linear_parameters(&self.fc) + batch_norm_parameters(&self.bn)
    }
}

/// Image-like input: convolutions, then `FC 256 -> BN`.
#[derive(Debug, Clone)]
struct ConvEncoder {
    convs: ConvBranch,
    head: FcBn,
}

impl ConvEncoder {
    fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let convs = ConvBranch::new(config, vb.clone())?;
        let head = FcBn::new(convs.output_dim(), FEATURE_DIM, &vb, "fc", "bn")?;
        Ok(Self { convs, head })
    }

    fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let h = self.convs.forward(x, mode)?;
        self.head.forward(&h, mode)
    }

    fn num_parameters(&self) -> usize {
        self.convs.num_parameters() + self.head.num_parameters()
    }
}

/// The latent branch: an MLP with a skip, or convolutions for image-sized z.
#[derive(Debug, Clone)]
enum LatentBranch {
    Mlp { l1: FcBn, l2: FcBn, l3: FcBn },
    Conv(ConvEncoder),
}

impl LatentBranch {
    fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        if config.conv_latent() {
            return Ok(Self::Conv(ConvEncoder::new(config, vb)?));
        }
        Ok(Self::Mlp {
            l1: FcBn::new(config.latent_dim, FEATURE_DIM, &vb, "fc1", "bn1")?,
            l2: FcBn::new(FEATURE_DIM, FEATURE_DIM, &vb, "fc2", "bn2")?,
            l3: FcBn::new(FEATURE_DIM, FEATURE_DIM, &vb, "fc3", "bn3")?,
        })
    }

    fn forward(&self, z: &Tensor, config: &BlockConfig, mode: &mut Mode) -> Result<Tensor> {
        match self {
            Self::Mlp { l1, l2, l3 } => {
                let h1 = l1.forward(z, mode)?.relu()?;
                let h2 = l2.forward(&h1, mode)?.relu()?;
                l3.forward(&h2, mode)? + h1
            }
            Self::Conv(encoder) => {
                let (c, h) = (config.in_channels, config.image_size);
                encoder.forward(&z.reshape((z.dim(0)?, c, h, h))?, mode)
            }
        }
    }

    fn num_parameters(&self) -> usize {
        match self {
            Self::Mlp { l1, l2, l3 } => {
                l1.num_parameters() + l2.num_parameters() + l3.num_parameters()
            }
            Self::Conv(encoder) => encoder.num_parameters(),
        }
    }
}

/// The DT block: `(x, z) -> logits`.
#[derive(Debug, Clone)]
pub struct DtBlock {
    config: BlockConfig,
    image: ConvEncoder,
    latent: LatentBranch,
    fusion1: FcBn,
    fusion2: FcBn,
    out: Linear,
}

impl DtBlock {
    /// Builds the block; parameters are created (and, with a
    /// `ParamStore` backend, drawn) in the order image, latent, fusion.
    pub fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let image = ConvEncoder::new(config, vb.pp("image"))?;
        let latent = LatentBranch::new(config, vb.pp("latent"))?;
        let vf = vb.pp("fusion");
        let fusion1 = FcBn::new(2 * FEATURE_DIM, 256, &vf, "fc1", "bn1")?;
        let fusion2 = FcBn::new(256, 128, &vf, "fc2", "bn2")?;
        let out = linear(128, config.num_classes, vf.pp("out"))?;
        Ok(Self {
            config: *config,
            image,
            latent,
            fusion1,
            fusion2,
            out,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// Number of trainable scalars (BN running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        self.image.num_parameters()
            + self.latent.num_parameters()
            + self.fusion1.num_parameters()
            + self.fusion2.num_parameters()
            + linear_parameters(&self.out)
    }

    /// The random words a training-mode [`DtBlock::forward`] of `batch`
    /// examples draws (its dropout masks): a caller that needs the numbers
    /// drawn after a block's forward pass without running it skips these
    /// ([`noprop_core::SeededRng::skip_words`]).
    pub fn dropout_words(&self, batch: usize) -> u64 {
        let latent = match &self.latent {
            LatentBranch::Conv(encoder) => encoder.convs.dropout_words_per_example(),
            LatentBranch::Mlp { .. } => 0,
        };
        batch as u64 * (self.image.convs.dropout_words_per_example() + latent)
    }

    /// `x [B, C, H, H]`, `z [B, d]` -> logits `[B, m]`.
    pub fn forward(&self, x: &Tensor, z: &Tensor, mut mode: Mode) -> Result<Tensor> {
        let features = self.image_features(x, mode.reborrow())?;
        self.forward_from_features(&features, z, mode)
    }

    /// The image branch alone: `x [B, C, H, H]` -> `[B, 256]`.
    pub fn image_features(&self, x: &Tensor, mut mode: Mode) -> Result<Tensor> {
        check_train_batch(x, &mode)?;
        self.image.forward(x, &mut mode)
    }

    /// Latent branch and fusion on precomputed image features:
    /// `features [B, 256]`, `z [B, d]` -> logits `[B, m]`. Equals
    /// [`DtBlock::forward`] given `image_features(x)` and the same mode (in
    /// `Train`, the generator's state after the image branch's draws).
    pub fn forward_from_features(
        &self,
        features: &Tensor,
        z: &Tensor,
        mut mode: Mode,
    ) -> Result<Tensor> {
        let batch = check_features(features)?;
        check_latent(z, batch, self.config.latent_dim)?;
        check_train_batch(z, &mode)?;
        let latent = self.latent.forward(z, &self.config, &mut mode)?;
        let h = Tensor::cat(&[features, &latent], 1)?;
        let h = self.fusion1.forward(&h, &mode)?.relu()?;
        let h = self.fusion2.forward(&h, &mode)?.relu()?;
        self.out.forward(&h)
    }
}

/// Batch statistics are undefined for one example (and the unbiased running
/// variance divides by B - 1).
fn check_train_batch(x: &Tensor, mode: &Mode) -> Result<()> {
    if mode.is_train() && x.dim(0)? < 2 {
        bail!(
            "DT block: training needs a batch of at least 2 for BatchNorm, got {}",
            x.dim(0)?
        );
    }
    Ok(())
}

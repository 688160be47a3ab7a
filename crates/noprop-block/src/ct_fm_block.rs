//! The NoProp-CT / NoProp-FM block (paper Fig. 6, right): predicts class
//! logits from an image x, a noisy latent z_t and the time t in [0, 1].
//!
//! ```text
//! image   x [B, C, H, H] -> ConvBranch -> [B, 128 S^2] -> FC 256 -> ReLU   f [B, 256]
//! latent  z [B, d]:
//!   d != C*H*W:  FC 256 -> ReLU                                            l [B, 256]
//!   d == C*H*W:  z read as [B, C, H, H] -> ConvBranch -> FC 256 -> ReLU    l [B, 256]
//! time    t [B] -> sinusoidal embedding of 1000 t [B, 64] -> FC 256 -> ReLU  e [B, 256]
//!         (`noprop_core::SinusoidalTimeEmbedding` with its defaults)
//! fusion  [f, l, e] [B, 768] -> FC 256 -> ReLU -> FC 128 -> ReLU -> FC m   logits [B, m]
//! ```
//!
//! No BatchNorm, so `Mode` only switches dropout. With one-hot embeddings on
//! MNIST (d = m = 10) the block has 867,722 trainable parameters.
//!
//! Parameter names under the `VarBuilder`'s prefix: `image.{conv1,conv2,
//! conv3,fc}`, `latent.fc` (or `latent.{conv1,conv2,conv3,fc}`), `time.fc`,
//! `fusion.{fc1,fc2,out}`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use noprop_core::SinusoidalTimeEmbedding;

use crate::config::BlockConfig;
use crate::conv_branch::ConvBranch;
use crate::ct_fm_ode::CtFmOde;
use crate::layers::{linear, linear_parameters};
use crate::mode::Mode;
use crate::shapes::{check_features, check_latent, check_time, FEATURE_DIM};

/// The latent branch: one layer, or convolutions for image-sized z.
#[derive(Debug, Clone)]
enum LatentBranch {
    Fc(Linear),
    Conv { convs: ConvBranch, fc: Linear },
}

impl LatentBranch {
    fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        if config.conv_latent() {
            let convs = ConvBranch::new(config, vb.clone())?;
            let fc = linear(convs.output_dim(), FEATURE_DIM, vb.pp("fc"))?;
            return Ok(Self::Conv { convs, fc });
        }
        Ok(Self::Fc(linear(
            config.latent_dim,
            FEATURE_DIM,
            vb.pp("fc"),
        )?))
    }

    fn forward(&self, z: &Tensor, config: &BlockConfig, mode: &mut Mode) -> Result<Tensor> {
        match self {
            Self::Fc(fc) => fc.forward(z)?.relu(),
            Self::Conv { convs, fc } => {
                let (c, h) = (config.in_channels, config.image_size);
                let image = z.reshape((z.dim(0)?, c, h, h))?;
                fc.forward(&convs.forward(&image, mode)?)?.relu()
            }
        }
    }

    fn num_parameters(&self) -> usize {
        match self {
            Self::Fc(fc) => linear_parameters(fc),
            Self::Conv { convs, fc } => convs.num_parameters() + linear_parameters(fc),
        }
    }
}

/// The CT/FM block: `(x, z, t) -> logits`.
#[derive(Debug, Clone)]
pub struct CtFmBlock {
    config: BlockConfig,
    image_convs: ConvBranch,
    image_fc: Linear,
    latent: LatentBranch,
    time_embedding: SinusoidalTimeEmbedding,
    time_fc: Linear,
    fusion1: Linear,
    fusion2: Linear,
    out: Linear,
}

impl CtFmBlock {
    /// Builds the block; parameters are created (and, with a
    /// `ParamStore` backend, drawn) in the order image, latent, time, fusion.
    pub fn new(config: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let vi = vb.pp("image");
        let image_convs = ConvBranch::new(config, vi.clone())?;
        let image_fc = linear(image_convs.output_dim(), FEATURE_DIM, vi.pp("fc"))?;
        let latent = LatentBranch::new(config, vb.pp("latent"))?;
        // 64 sinusoids of 1000 t, as in the reference runs.
        let time_embedding = SinusoidalTimeEmbedding::default();
        let time_fc = linear(time_embedding.dim, FEATURE_DIM, vb.pp("time").pp("fc"))?;
        let vf = vb.pp("fusion");
        let fusion1 = linear(3 * FEATURE_DIM, 256, vf.pp("fc1"))?;
        let fusion2 = linear(256, 128, vf.pp("fc2"))?;
        let out = linear(128, config.num_classes, vf.pp("out"))?;
        Ok(Self {
            config: *config,
            image_convs,
            image_fc,
            latent,
            time_embedding,
            time_fc,
            fusion1,
            fusion2,
            out,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.image_convs.num_parameters()
            + [
                &self.image_fc,
                &self.time_fc,
                &self.fusion1,
                &self.fusion2,
                &self.out,
            ]
            .into_iter()
            .map(linear_parameters)
            .sum::<usize>()
            + self.latent.num_parameters()
    }

    /// `x [B, C, H, H]`, `z [B, d]`, `t [B]` (or `[B, 1]`) -> logits `[B, m]`.
    pub fn forward(&self, x: &Tensor, z: &Tensor, t: &Tensor, mut mode: Mode) -> Result<Tensor> {
        let features = self.image_features(x, mode.reborrow())?;
        self.forward_from_features(&features, z, t, mode)
    }

    /// The image branch alone: `x [B, C, H, H]` -> `[B, 256]`. In inference,
    /// compute it once and reuse it at every ODE step.
    pub fn image_features(&self, x: &Tensor, mut mode: Mode) -> Result<Tensor> {
        let h = self.image_convs.forward(x, &mut mode)?;
        self.image_fc.forward(&h)?.relu()
    }

    /// The latent, time and fusion layers as a host ODE integrator with the
    /// first fusion layer split by input ([`CtFmOde`]), for inference;
    /// `None` where it does not apply: a convolutional latent branch
    /// (image-sized z), or weights that are not f32 on the CPU. The weights
    /// are copied, so build it once per batch, after training.
    pub fn ode(&self) -> Result<Option<CtFmOde>> {
        let weight = self.fusion1.weight();
        let LatentBranch::Fc(latent_fc) = &self.latent else {
            return Ok(None);
        };
        if !weight.device().is_cpu() || weight.dtype() != candle_core::DType::F32 {
            return Ok(None);
        }
        CtFmOde::new(
            self.config.latent_dim,
            self.config.num_classes,
            latent_fc,
            self.time_embedding,
            &self.time_fc,
            &self.fusion1,
            &self.fusion2,
            &self.out,
        )
        .map(Some)
    }

    /// Latent, time and fusion on precomputed image features:
    /// `features [B, 256]`, `z [B, d]`, `t [B]` -> logits `[B, m]`. Equals
    /// [`CtFmBlock::forward`] given `image_features(x)` and the same mode.
    pub fn forward_from_features(
        &self,
        features: &Tensor,
        z: &Tensor,
        t: &Tensor,
        mut mode: Mode,
    ) -> Result<Tensor> {
        let batch = check_features(features)?;
        check_latent(z, batch, self.config.latent_dim)?;
        check_time(t, batch)?;
        let latent = self.latent.forward(z, &self.config, &mut mode)?;
        let time = self.time_embedding.forward(&t.flatten_all()?)?;
        let time = self.time_fc.forward(&time)?.relu()?;
        let h = Tensor::cat(&[features, &latent, &time], 1)?;
        let h = self.fusion1.forward(&h)?.relu()?;
        let h = self.fusion2.forward(&h)?.relu()?;
        self.out.forward(&h)
    }
}

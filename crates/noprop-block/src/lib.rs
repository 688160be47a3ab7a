//! # noprop-block
//!
//! The denoising blocks of NoProp (Li, Teh, Pascanu 2025, Fig. 6). Each block
//! maps an image x and a noisy class embedding z (and, for CT/FM, a time t)
//! to m class logits; the variants turn the logits into embedding space with
//! [`denoised_embedding`] (DT, CT: `softmax(logits) @ W`) or [`velocity`]
//! (FM: `logits @ W`).
//!
//! - [`DtBlock`]: image convolutions -> FC 256 -> BN; a latent MLP
//!   (FC 256 -> BN -> ReLU, twice, then FC 256 -> BN, plus a skip from the
//!   first layer); fusion 512 -> 256 -> 128 -> m with BN. 919,946 parameters
//!   on MNIST with one-hot embeddings (d = m = 10).
//! - [`CtFmBlock`]: the same convolutions -> FC 256 -> ReLU; latent
//!   FC 256 -> ReLU; time: 64-dim sinusoidal embedding -> FC 256 -> ReLU;
//!   fusion 768 -> 256 -> 128 -> m. No BatchNorm. 867,722 parameters on
//!   MNIST with one-hot embeddings.
//!
//! The image convolutions ([`ConvBranch`]) are conv32-ReLU-maxpool-dropout,
//! conv64-ReLU-dropout, conv128-ReLU-maxpool-dropout, flatten. Every forward
//! pass takes a [`Mode`]: `Train(&mut rng)` draws dropout masks from a
//! seeded generator and uses BatchNorm batch statistics (updating the running
//! statistics), `Eval` is deterministic. The image branch can be run alone
//! (`image_features`) and its output reused with `forward_from_features`,
//! so CT/FM inference computes it once for all ODE steps.
//!
//! Blocks are built from a candle `VarBuilder`; with
//! `noprop_core::ParamStore` the initial values come from a seeded stream in
//! construction order, so the same seed gives bitwise-identical blocks.
//!
//! ## Choices where the paper is silent or ambiguous
//!
//! - Convolutions are 3x3 *valid* (no padding): this is what reproduces the
//!   parameter counts of v2's Table 5 (0.92M and 0.87M) exactly.
//! - Initialisation is PyTorch's default (weights and biases uniform in
//!   `±1/sqrt(fan_in)`; BN gamma 1, beta 0), as in the reference runs; BN
//!   uses PyTorch's eps 1e-5 and momentum 0.1.
//! - Dropout is element-wise (PyTorch `nn.Dropout`), after each pooling or,
//!   for the second convolution, after its ReLU.
//! - DT latent skip: `l = BN(FC(h2)) + h1` with no activation after the sum.
//! - With d = C*H*W (prototype embeddings) the latent branch is a copy of the
//!   image branch (own weights, with dropout): for DT convolutions ->
//!   FC 256 -> BN with no skip, for CT/FM convolutions -> FC 256 -> ReLU.
//!   This replaces the whole latent MLP.
//! - The time embedding encodes `1000 t` ([`time_embedding`]), since on raw
//!   t in [0, 1] most sinusoid features are nearly constant.

pub mod config;
pub mod conv_branch;
pub mod ct_fm_block;
pub mod dt_block;
pub mod layers;
pub mod mode;
pub mod output;
pub mod shapes;
pub mod time_embedding;

pub use config::BlockConfig;
pub use conv_branch::ConvBranch;
pub use ct_fm_block::CtFmBlock;
pub use dt_block::DtBlock;
pub use mode::Mode;
pub use output::{denoised_embedding, velocity};
pub use shapes::FEATURE_DIM;
pub use time_embedding::{time_embedding, TIME_EMBEDDING_DIM, TIME_SCALE};

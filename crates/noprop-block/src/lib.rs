//! # noprop-block
//!
//! The denoising blocks of NoProp (Li, Teh, Pascanu 2025, Fig. 6). Each block
//! maps an image x and a noisy class embedding z (and, for CT/FM, a time t)
//! to m class logits; the variants turn the logits into embedding space with
//! `noprop_core::softmax_mix` (DT, CT: `softmax(logits) @ W`) or
//! `noprop_core::linear_mix` (FM: `logits @ W`).
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
//! so CT/FM inference computes it once for all ODE steps. On the CPU,
//! CT/FM inference goes further ([`ct_fm_ode`], from [`CtFmBlock::ode`]):
//! the first fusion layer is split by input so that its image part is
//! computed once per image and its time part once per time for the whole
//! batch, and the ODE runs on host rows in fixed groups, one thread each,
//! with no tensor or allocation per step.
//!
//! Blocks are built from a candle `VarBuilder`; with
//! `noprop_core::ParamStore` the initial values come from a seeded stream in
//! construction order, so the same seed gives bitwise-identical blocks.
//!
//! ```
//! use candle_core::{DType, Device};
//! use noprop_block::{BlockConfig, CtFmBlock, Mode};
//! use noprop_core::{ParamStore, SeededRng};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let config = BlockConfig::for_mnist(10, 10); // one-hot: d = m = 10
//! let store = ParamStore::new(SeededRng::new(0));
//! let block = CtFmBlock::new(&config, store.var_builder(DType::F32, &dev))?;
//! assert_eq!(block.num_parameters(), 867_722);
//!
//! let mut rng = SeededRng::new(1);
//! let x = rng.normal((2, 1, 28, 28), &dev)?;
//! let z = rng.normal((2, 10), &dev)?;
//! let t = rng.uniform(0.0, 1.0, 2, &dev)?;
//! let logits = block.forward(&x, &z, &t, Mode::Train(&mut rng))?; // [2, 10]
//! // Inference: image features once, then any number of (z, t) steps.
//! let features = block.image_features(&x, Mode::Eval)?;
//! let step = block.forward_from_features(&features, &z, &t, Mode::Eval)?;
//! assert_eq!((logits.dims(), step.dims()), (&[2, 10][..], &[2, 10][..]));
//! # Ok(())
//! # }
//! ```
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
//! - The time embedding (`noprop_core::SinusoidalTimeEmbedding`) encodes
//!   `1000 t`, since on raw t in [0, 1] most sinusoid features are nearly
//!   constant.

#![warn(missing_docs)]

pub mod config;
pub mod conv_branch;
pub mod ct_fm_block;
pub mod ct_fm_ode;
pub mod dt_block;
pub mod layers;
pub mod mode;
pub mod shapes;

pub use config::BlockConfig;
pub use conv_branch::ConvBranch;
pub use ct_fm_block::CtFmBlock;
pub use ct_fm_ode::{evaluation_times, CtFmOde, LogitsField};
pub use dt_block::DtBlock;
pub use mode::Mode;
/// The DT/CT block output `softmax(logits) @ W` and the FM block output
/// `logits @ W`, under the names of what they predict.
pub use noprop_core::{linear_mix as velocity, softmax_mix as denoised_embedding};
pub use shapes::FEATURE_DIM;

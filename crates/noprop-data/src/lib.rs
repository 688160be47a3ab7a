//! # noprop-data
//!
//! Datasets for NoProp: the embedded MNIST, MNIST-family IDX files,
//! CIFAR binaries, validation splits and seeded batching. Knows nothing of
//! models or training; the trainer (`noprop-train`) is its only user in the
//! workspace.
//!
//! ## What it provides
//!
//! - [`DatasetKind`]: `mnist`, `fashion-mnist`, `kmnist`, `cifar10`,
//!   `cifar100` (`FromStr`/`Display`), with each one's classes, image shape
//!   and default normalisation.
//! - [`DatasetConfig`] and [`Dataset::load`]: a dataset on a candle
//!   [`Device`](candle_core::Device) as train / optional validation / test
//!   [`Split`]s. Images are f32 `[N, C, H, W]` normalised per channel,
//!   `x = (pixel / 255 - mean[c]) / std[c]`; labels are u32 `[N]`.
//!   MNIST with no `data_dir` is the copy embedded in the binary (feature
//!   `embedded-mnist`, which the `noprop` binary turns on), SHA-256
//!   verified, so it works on a fresh machine from any directory; without
//!   the feature, the repository's `data/mnist/`; everything else is read
//!   from `data_dir`.
//! - [`Split::batches`]: `(images [b, C, H, W], labels [b])` batches, in
//!   stored order or shuffled by [`permutation`]`(N, seed, epoch)`, which is
//!   the same for the same seed and epoch on any thread count or device.
//! - Readers for the file formats ([`idx`], [`cifar`], [`mnist`]) returning
//!   [`RawData`], and [`DataError`], which names the file and the problem for
//!   every kind of bad input; nothing here panics on bad data.
//!
//! ## Example
//!
//! ```no_run
//! use candle_core::Device;
//! use noprop_data::{Dataset, DatasetConfig, DatasetKind};
//!
//! # fn main() -> Result<(), noprop_data::DataError> {
//! let config = DatasetConfig {
//!     validation: 5_000,
//!     train_limit: Some(10_000),
//!     ..DatasetConfig::new(DatasetKind::Mnist)
//! };
//! let dataset = Dataset::load(&config, &Device::Cpu)?;
//! assert_eq!(dataset.image_shape(), (1, 28, 28));
//! for epoch in 0..2 {
//!     for batch in dataset.train().batches(128, Some((42, epoch)))? {
//!         let (images, labels) = batch?; // [128, 1, 28, 28] f32, [128] u32
//!         let _ = (images, labels);
//!     }
//! }
//! let validation = dataset.validation().expect("5,000 items held out");
//! assert_eq!(validation.len(), 5_000);
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! - `embedded-mnist` (off by default; the `noprop` binary turns it on):
//!   compile the four MNIST `.gz` files (11 MB) of the repository's
//!   `data/mnist/` into the binary. Without it, MNIST without `data_dir` is
//!   read from the repository's `data/mnist/` if that still exists. The
//!   files are not part of this crate's package (crates.io takes at most
//!   10 MB per crate), so the feature works in a build from the repository
//!   only; a crate from crates.io reads MNIST from a directory (`data_dir`)
//!   or, with `hub`, downloads it.
//! - `hub`: `hub::load` fetches MNIST or Fashion-MNIST from the Hugging Face
//!   hub through `candle-datasets` (needs a network; off by default).
//! - `cuda`, `cudnn`: forwarded to candle.

#![warn(missing_docs)]

pub mod batch;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod file;
pub mod folder;
#[cfg(feature = "hub")]
pub mod hub;
pub mod idx;
pub mod kind;
pub mod mnist;
pub mod raw;
pub mod shuffle;
pub mod split;

pub use batch::Batches;
pub use dataset::{Dataset, DatasetConfig};
pub use error::{DataError, Result};
pub use kind::DatasetKind;
pub use raw::{RawData, RawSplit};
pub use shuffle::{permutation, validation_permutation};
pub use split::Split;

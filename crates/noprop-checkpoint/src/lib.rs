//! # noprop-checkpoint
//!
//! The noprop-rs checkpoint format: a NoProp model, and optionally its
//! training state, in one [safetensors](https://github.com/huggingface/safetensors)
//! file that any safetensors reader can open. `noprop train` writes it, the
//! variant crates read and write it (`NoPropFm::from_checkpoint`,
//! `NoPropFm::save`), and every reader treats it as untrusted input.
//!
//! - Tensors: the model's variables under their [`noprop_core::ParamStore`]
//!   names (for example `block.conv1.weight`, `head.weight`), BatchNorm
//!   running statistics included; training checkpoints only: the optimizer
//!   state under `optim.*` ([`noprop_core::Variant::optimizer_state`]) and
//!   the trainer's random number generator as `trainer.rng` (u32,
//!   [`noprop_core::rng::RNG_STATE_WORDS`]).
//! - Metadata ([`CheckpointMeta`], a string map): `format` = `noprop-rs`,
//!   `format_version`, `checkpoint` (`training` or `weights`), `variant`,
//!   `config` (the run configuration as JSON), `variant_config` (the
//!   variant's own configuration as JSON, from which a library rebuilds the
//!   model), `crate_version`, `epoch`, `step`, `dataset`, `in_channels`,
//!   `image_size`, `num_classes`, `normalize_mean`, `normalize_std` (JSON
//!   arrays), and for training checkpoints `trainer_state` (JSON).
//!
//! Reading checks everything before building anything from it (the model's
//! shape against fixed bounds, the model's size against the file's
//! tensors, every float finite, the normalisation usable): a damaged or
//! hostile file is an error naming the file and the problem, never a panic
//! or an unbounded allocation. Writing is atomic ([`atomic`]): a crash
//! leaves the previous file intact. The repository's
//! `docs/checkpoint-format.md` documents the layout for other languages.
//!
//! ```no_run
//! use noprop_checkpoint::{Checkpoint, ModelCard};
//! # fn main() -> anyhow::Result<()> {
//! let card = ModelCard::read("runs/fm/last.safetensors")?; // metadata only
//! println!("trained on {} for {} epochs", card.dataset, card.epoch);
//! let file = Checkpoint::load("runs/fm/last.safetensors".as_ref(), &candle_core::Device::Cpu)?;
//! println!("{} holds {} model values", file.meta.variant, file.num_model_values());
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`anyhow::Error`] chains: print them with `{:#}`.

#![warn(missing_docs)]

pub mod atomic;
pub mod checkpoint;
pub mod meta;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod variant_file;

pub use atomic::write_atomic;
pub use checkpoint::Checkpoint;
pub use meta::{
    CheckpointKind, CheckpointMeta, FORMAT_NAME, FORMAT_VERSION, MAX_IMAGE_SIZE, MAX_IN_CHANNELS,
    MAX_NUM_CLASSES, OPTIMIZER_PREFIX, RNG_TENSOR, TRAINER_PREFIX,
};
pub use variant_file::{load_variant, run_config_json, save_variant, ModelCard};

//! Building models: fresh from a run configuration, or from a checkpoint.
//! Both go through the variant registry; a model to load a checkpoint into
//! is built the same way for every variant ([`ModelInit::ForLoading`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use noprop_core::{ModelInit, ModelSpec, Variant};

use crate::config::RunConfig;
use crate::registry::{self, Sections};
use noprop_checkpoint::Checkpoint;

/// A model restored from a checkpoint, with what it was built from.
pub struct LoadedModel {
    pub checkpoint: Checkpoint,
    pub config: RunConfig,
    pub model: Box<dyn Variant>,
}

/// Builds a fresh model for training `config`. `train` (normalised images
/// and labels) is needed by prototype embeddings only.
pub fn build_fresh(
    config: &RunConfig,
    spec: ModelSpec,
    train: Option<(&Tensor, &Tensor)>,
    device: &Device,
) -> Result<Box<dyn Variant>> {
    let entry = registry::find(&config.variant)?;
    registry::build_for_training(
        entry,
        config.variant_section()?,
        spec,
        train,
        config.seed,
        device,
    )
}

/// Builds a model of `config`'s variant with the right variables for a
/// checkpoint to be loaded into (no training images needed). With
/// `max_values` (the checkpoint's own model values), a configuration that
/// asks for a larger model is refused before it is allocated.
pub fn build_blank(
    config: &RunConfig,
    spec: ModelSpec,
    max_values: Option<usize>,
    device: &Device,
) -> Result<Box<dyn Variant>> {
    let entry = registry::find(&config.variant)?;
    let init = match max_values {
        Some(max_values) => ModelInit::ForLoadingAtMost { max_values },
        None => ModelInit::ForLoading,
    };
    entry.build(config.variant_section()?, spec, init, device)
}

/// The run configuration stored in a checkpoint, checked against the
/// checkpoint's own `variant` metadata.
pub fn checkpoint_config(checkpoint: &Checkpoint, path: &Path) -> Result<RunConfig> {
    let config = RunConfig::from_json(&checkpoint.meta.config_json, &Sections)
        .with_context(|| format!("checkpoint {}: bad `config` metadata", path.display()))?;
    if config.variant != checkpoint.meta.variant {
        bail!(
            "checkpoint {}: metadata says variant {} but its config says {}",
            path.display(),
            checkpoint.meta.variant,
            config.variant
        );
    }
    Ok(config)
}

/// Loads the checkpoint at `path` and the model it holds, on `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let checkpoint = Checkpoint::load(path, device)?;
    let config = checkpoint_config(&checkpoint, path)?;
    let max_values = Some(checkpoint.num_model_values());
    let mut model = build_blank(&config, checkpoint.meta.spec, max_values, device)
        .with_context(|| format!("checkpoint {}: cannot build its model", path.display()))?;
    checkpoint
        .restore_into(model.as_mut())
        .with_context(|| format!("checkpoint {}", path.display()))?;
    Ok(LoadedModel {
        checkpoint,
        config,
        model,
    })
}

//! Building models: fresh from a run configuration, or from a checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use noprop_core::variant::ModelSpec;
use noprop_core::Variant;

use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::variants;

/// A model restored from a checkpoint, with what it was built from.
pub struct LoadedModel {
    pub checkpoint: Checkpoint,
    pub config: RunConfig,
    pub model: Box<dyn Variant>,
}

/// Builds a fresh model for `config`. `train` (normalised images and
/// labels) is used only for prototype embeddings.
pub fn build_fresh(
    config: &RunConfig,
    spec: ModelSpec,
    train: Option<(&Tensor, &Tensor)>,
    device: &Device,
) -> Result<Box<dyn Variant>> {
    let section = config.variant_section()?;
    let needs = variants::uses_prototypes(config.variant, section)?;
    let placeholder;
    let source = match (needs, train) {
        (false, _) => None,
        (true, Some(train)) => Some(train),
        (true, None) => {
            placeholder = placeholder_prototypes(spec, device)?;
            Some((&placeholder.0, &placeholder.1))
        }
    };
    variants::build(config.variant, section, spec, source, config.seed, device)
}

/// Loads the checkpoint at `path` and the model it holds, on `device`.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let checkpoint = Checkpoint::load(path, device)?;
    let config = RunConfig::from_json(&checkpoint.meta.config_json, &variants::resolve_section)
        .with_context(|| format!("checkpoint {}: bad `config` metadata", path.display()))?;
    if config.variant.as_str() != checkpoint.meta.variant {
        bail!(
            "checkpoint {}: metadata says variant {} but its config says {}",
            path.display(),
            checkpoint.meta.variant,
            config.variant.as_str()
        );
    }
    let mut model = build_fresh(&config, checkpoint.meta.spec, None, device)
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

/// Stand-in training images for building a prototype-embedding model whose
/// embedding is about to be overwritten by a checkpoint: two blank images
/// per class (the prototype initialiser needs at least one pair per class).
pub fn placeholder_prototypes(spec: ModelSpec, device: &Device) -> Result<(Tensor, Tensor)> {
    let m = spec.num_classes;
    let images = Tensor::zeros(
        (2 * m, spec.in_channels, spec.image_size, spec.image_size),
        DType::F32,
        device,
    )?;
    let labels: Vec<u32> = (0..2 * m as u32).map(|i| i % m as u32).collect();
    let labels = Tensor::from_vec(labels, 2 * m, device)?;
    Ok((images, labels))
}

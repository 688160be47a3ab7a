//! A variant's model to and from a checkpoint file, for library users: the
//! variant crates' `from_checkpoint` and `save` are these two functions.
//!
//! Loading rebuilds the model from the file's own metadata (the variant's
//! configuration in `variant_config`, the shape in `in_channels`,
//! `image_size`, `num_classes`), creating no more values than the file holds,
//! then loads and checks its weights. Saving writes a `weights` checkpoint
//! in the format `noprop train` writes, atomically; `noprop eval`,
//! `noprop predict` and `noprop export` read it (its `config` holds the keys
//! that rebuild and evaluate it, [`run_config_json`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use noprop_core::{BuildVariant, ModelInit};

use crate::checkpoint::Checkpoint;
use crate::meta::{CheckpointKind, CheckpointMeta};

/// What a checkpoint says about its model besides the weights: the data it
/// was trained on, how inputs are normalised, how long it trained.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The training data's name (`mnist`, `cifar10`, ...): `noprop eval`
    /// evaluates on its test split.
    pub dataset: String,
    /// Per-channel mean of the `[0, 1]`-scaled pixels.
    pub normalize_mean: Vec<f32>,
    /// Per-channel standard deviation of the `[0, 1]`-scaled pixels.
    pub normalize_std: Vec<f32>,
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The class names, where the data has them (label `i` is the `i`-th).
    pub class_names: Option<Vec<String>>,
}

impl ModelCard {
    /// A card for a model trained on `dataset`, whose inputs are
    /// `x = (pixel / 255 - mean[c]) / std[c]`; no epochs recorded.
    pub fn new(dataset: &str, normalize_mean: Vec<f32>, normalize_std: Vec<f32>) -> Self {
        Self {
            dataset: dataset.to_string(),
            normalize_mean,
            normalize_std,
            epoch: 0,
            step: 0,
            class_names: None,
        }
    }

    /// The same card with the training's progress recorded.
    pub fn with_progress(mut self, epoch: usize, step: u64) -> Self {
        self.epoch = epoch;
        self.step = step;
        self
    }

    /// The same card with class names (label `i` is `names[i]`).
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        self.class_names = Some(names);
        self
    }

    /// The name of class `label`: its class name where the card has them,
    /// else the label itself.
    pub fn class_name(&self, label: usize) -> String {
        self.class_names
            .as_ref()
            .and_then(|names| names.get(label).cloned())
            .unwrap_or_else(|| label.to_string())
    }

    /// The card of a checkpoint's metadata.
    pub fn from_meta(meta: &CheckpointMeta) -> Self {
        Self {
            dataset: meta.dataset.clone(),
            normalize_mean: meta.normalize_mean.clone(),
            normalize_std: meta.normalize_std.clone(),
            epoch: meta.epoch,
            step: meta.step,
            class_names: meta.class_names.clone(),
        }
    }

    /// Reads the card of the checkpoint at `path` (its metadata only).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_meta(&Checkpoint::read_meta(path.as_ref())?))
    }

    /// Normalises 8-bit pixels `[N, C, H, W]` (u8) into the model's f32
    /// inputs on the same device: `(pixel / 255 - mean[c]) / std[c]`,
    /// computed in f32 exactly as the training data was (so a test image
    /// gets the same input bits here as in `noprop train` and
    /// `noprop eval`).
    pub fn normalize(&self, pixels: &Tensor) -> Result<Tensor> {
        let channels = self.normalize_mean.len();
        let (n, c, h, w) = pixels.dims4().context("pixels must be [N, C, H, W]")?;
        if pixels.dtype() != DType::U8 {
            bail!("pixels must be u8 (0 to 255), found {:?}", pixels.dtype());
        }
        if c != channels || self.normalize_std.len() != channels {
            bail!(
                "pixels have {c} channel(s); the normalisation has {} mean(s) and {} std(s)",
                channels,
                self.normalize_std.len()
            );
        }
        let table: Vec<f32> = (0..channels)
            .flat_map(|ch| {
                let (mean, std) = (self.normalize_mean[ch], self.normalize_std[ch]);
                (0..256).map(move |p| (p as f32 / 255.0 - mean) / std)
            })
            .collect();
        let plane = h * w;
        let values: Vec<f32> = pixels
            .flatten_all()?
            .to_vec1::<u8>()?
            .iter()
            .enumerate()
            .map(|(i, &p)| table[(i / plane) % channels * 256 + p as usize])
            .collect();
        Ok(Tensor::from_vec(values, (n, c, h, w), pixels.device())?)
    }
}

/// Loads a model of variant `M` from the checkpoint at `path`, on
/// `device`. A checkpoint of another variant, a damaged file or weights
/// that do not fit are errors naming the file.
pub fn load_variant<M: BuildVariant>(path: impl AsRef<Path>, device: &Device) -> Result<M> {
    let path = path.as_ref();
    let checkpoint = Checkpoint::load(path, device)?;
    let in_file = || format!("checkpoint {}", path.display());
    let meta = &checkpoint.meta;
    if meta.variant != M::NAME {
        bail!(
            "{} holds a `{}` model, not `{}`: load it with the `{}` variant's crate",
            in_file(),
            meta.variant,
            M::NAME,
            meta.variant
        );
    }
    let config: M::Config = serde_json::from_str(&meta.variant_config_json)
        .with_context(|| format!("{}: bad `variant_config` metadata", in_file()))?;
    let init = ModelInit::ForLoadingAtMost {
        max_values: checkpoint.num_model_values(),
    };
    let mut model = M::build(config, meta.spec, init, device)
        .with_context(|| format!("{}: cannot build its model", in_file()))?;
    checkpoint.restore_into(&mut model).with_context(in_file)?;
    Ok(model)
}

/// Saves `model` to `path` as a `weights` checkpoint with `card`,
/// atomically (the previous file, if any, stays intact on failure).
pub fn save_variant<M: BuildVariant>(
    model: &M,
    path: impl AsRef<Path>,
    card: &ModelCard,
) -> Result<()> {
    let path = path.as_ref();
    let variant_config = model.config_json()?;
    let meta = CheckpointMeta {
        kind: CheckpointKind::Weights,
        variant: M::NAME.to_string(),
        config_json: run_config_json(M::NAME, card, &variant_config),
        variant_config_json: variant_config.to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        epoch: card.epoch,
        step: card.step,
        dataset: card.dataset.clone(),
        spec: model.spec(),
        normalize_mean: card.normalize_mean.clone(),
        normalize_std: card.normalize_std.clone(),
        trainer_state_json: None,
        class_names: card.class_names.clone(),
    };
    // The same checks a reader makes: a card that does not fit the model
    // is refused here, not when the file is read back.
    CheckpointMeta::from_map(&meta.to_map())
        .with_context(|| format!("cannot save {}", path.display()))?;
    Checkpoint::capture(model, meta, None)?.save(path)
}

/// The run configuration a library-saved checkpoint records, as JSON:
/// `variant`, `data.dataset`, `data.mean`, `data.std` and the variant's
/// section (its configuration, unset options left out). A trainer fills in
/// its defaults for every other key (seed 0, its default evaluation).
pub fn run_config_json(
    variant: &str,
    card: &ModelCard,
    variant_config: &serde_json::Value,
) -> String {
    let mut section = variant_config.clone();
    if let serde_json::Value::Object(map) = &mut section {
        map.retain(|_, v| !v.is_null());
    }
    let mut config = serde_json::Map::new();
    config.insert("variant".into(), variant.into());
    config.insert(
        "data".into(),
        serde_json::json!({
            "dataset": card.dataset,
            "mean": card.normalize_mean,
            "std": card.normalize_std,
        }),
    );
    config.insert(variant.into(), section);
    serde_json::Value::Object(config).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_the_formula_per_channel() {
        let card = ModelCard::new("cifar10", vec![0.5, 0.25], vec![0.5, 0.125]);
        // Two channels of two pixels: 0, 255 and 51, 102.
        let pixels = Tensor::new(&[0u8, 255, 51, 102], &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 1, 2))
            .unwrap();
        let x = card.normalize(&pixels).unwrap().flatten_all().unwrap();
        let x = x.to_vec1::<f32>().unwrap();
        // (0 - 0.5) / 0.5, (1 - 0.5) / 0.5, (0.2 - 0.25) / 0.125, (0.4 - 0.25) / 0.125
        let expected = [-1.0, 1.0, -0.4, 1.2];
        for (a, b) in x.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        let grey = Tensor::zeros((1, 1, 2, 2), DType::U8, &Device::Cpu).unwrap();
        let e = card.normalize(&grey).unwrap_err().to_string();
        assert!(e.contains("1 channel(s)"), "{e}");
        let floats = Tensor::zeros((1, 2, 1, 2), DType::F32, &Device::Cpu).unwrap();
        let e = card.normalize(&floats).unwrap_err().to_string();
        assert!(e.contains("must be u8"), "{e}");
    }

    #[test]
    fn the_run_configuration_leaves_unset_options_out() {
        let card = ModelCard::new("mnist", vec![0.1307], vec![0.3081]);
        let json = run_config_json(
            "fm",
            &card,
            &serde_json::json!({ "lr": 0.001, "head_lr": null }),
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["variant"], "fm");
        assert_eq!(value["data"]["dataset"], "mnist");
        assert_eq!(value["fm"], serde_json::json!({ "lr": 0.001 }));
    }
}

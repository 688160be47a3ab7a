//! [`CheckpointMeta`]: the metadata of a checkpoint (a string map in the
//! safetensors header), its names and limits, and its validation.
//!
//! Every value is untrusted until checked: the model's shape is bounded
//! before anything is built from it, the normalisation must be finite with
//! positive standard deviations, and a training checkpoint must carry its
//! trainer state.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use noprop_core::variant::ModelSpec;

/// The value of the `format` metadata key.
pub const FORMAT_NAME: &str = "noprop-rs";
/// The version of the layout described above.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of optimizer state tensors.
pub const OPTIMIZER_PREFIX: &str = "optim.";
/// Prefix of the trainer's own tensors.
pub const TRAINER_PREFIX: &str = "trainer.";
/// The trainer's random number generator state.
pub const RNG_TENSOR: &str = "trainer.rng";

/// What a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Model, optimizer and trainer state: `--resume` continues from it.
    Training,
    /// The model only (`noprop export`): for inference.
    Weights,
}

impl CheckpointKind {
    /// The value of the `checkpoint` metadata key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::Weights => "weights",
        }
    }
}

/// The metadata of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// What the file holds: a training state or the weights only.
    pub kind: CheckpointKind,
    /// The variant's registered name.
    pub variant: String,
    /// The run configuration as JSON: what `noprop train` ran (its
    /// `config.toml`); a model saved by a library user holds the keys that
    /// rebuild and evaluate it (see [`crate::run_config_json`]).
    pub config_json: String,
    /// The variant's own configuration ([`noprop_core::Variant::config_json`]).
    pub variant_config_json: String,
    /// Version of the crate that wrote the file.
    pub crate_version: String,
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Dataset name (`mnist`, ...).
    pub dataset: String,
    /// Input shape and number of classes.
    pub spec: ModelSpec,
    /// Per-channel mean of the normalisation of the inputs:
    /// x = (p/255 - mean) / std.
    pub normalize_mean: Vec<f32>,
    /// Per-channel standard deviation of that normalisation.
    pub normalize_std: Vec<f32>,
    /// Training checkpoints: the trainer's state (JSON).
    pub trainer_state_json: Option<String>,
    /// The class names, where the training data has them (an image
    /// folder's directory names): label `i` is the `i`-th. Metadata key
    /// `class_names` (a JSON array), absent otherwise.
    pub class_names: Option<Vec<String>>,
}

impl CheckpointMeta {
    /// The metadata as the string map stored in the file.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        let mut put = |k: &str, v: String| {
            map.insert(k.to_string(), v);
        };
        put("format", FORMAT_NAME.into());
        put("format_version", FORMAT_VERSION.to_string());
        put("checkpoint", self.kind.as_str().into());
        put("variant", self.variant.clone());
        put("config", self.config_json.clone());
        put("variant_config", self.variant_config_json.clone());
        put("crate_version", self.crate_version.clone());
        put("epoch", self.epoch.to_string());
        put("step", self.step.to_string());
        put("dataset", self.dataset.clone());
        put("in_channels", self.spec.in_channels.to_string());
        put("image_size", self.spec.image_size.to_string());
        put("num_classes", self.spec.num_classes.to_string());
        put("normalize_mean", json_floats(&self.normalize_mean));
        put("normalize_std", json_floats(&self.normalize_std));
        if let Some(state) = &self.trainer_state_json {
            put("trainer_state", state.clone());
        }
        if let Some(names) = &self.class_names {
            put(
                "class_names",
                serde_json::to_string(names).unwrap_or_else(|_| "[]".into()),
            );
        }
        map
    }

    /// Parses and checks the string map of a file.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| -> Result<&String> {
            map.get(k)
                .with_context(|| format!("metadata key `{k}` is missing"))
        };
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("metadata `{key}` = {value:?} is not a valid number"))
        }
        let version: u32 = parse("format_version", get("format_version")?)?;
        if version != FORMAT_VERSION {
            bail!(
                "checkpoint format version {version} is not supported (this build reads version {FORMAT_VERSION})"
            );
        }
        let kind = match get("checkpoint")?.as_str() {
            "training" => CheckpointKind::Training,
            "weights" => CheckpointKind::Weights,
            other => bail!("metadata `checkpoint` = {other:?}: expected training or weights"),
        };
        let floats = |key: &str| -> Result<Vec<f32>> {
            serde_json::from_str(get(key)?)
                .with_context(|| format!("metadata `{key}` is not a JSON array of numbers"))
        };
        let meta = Self {
            kind,
            variant: get("variant")?.clone(),
            config_json: get("config")?.clone(),
            variant_config_json: get("variant_config")?.clone(),
            crate_version: get("crate_version")?.clone(),
            epoch: parse("epoch", get("epoch")?)?,
            step: parse("step", get("step")?)?,
            dataset: get("dataset")?.clone(),
            spec: ModelSpec {
                in_channels: parse("in_channels", get("in_channels")?)?,
                image_size: parse("image_size", get("image_size")?)?,
                num_classes: parse("num_classes", get("num_classes")?)?,
            },
            normalize_mean: floats("normalize_mean")?,
            normalize_std: floats("normalize_std")?,
            trainer_state_json: map.get("trainer_state").cloned(),
            class_names: map
                .get("class_names")
                .map(|text| {
                    serde_json::from_str::<Vec<String>>(text)
                        .context("metadata `class_names` is not a JSON array of strings")
                })
                .transpose()?,
        };
        check_spec(&meta.spec)?;
        check_normalisation(&meta)?;
        if let Some(names) = &meta.class_names {
            if names.len() != meta.spec.num_classes {
                bail!(
                    "metadata `class_names` has {} names; the model has {} classes",
                    names.len(),
                    meta.spec.num_classes
                );
            }
        }
        if kind == CheckpointKind::Training && meta.trainer_state_json.is_none() {
            bail!("a training checkpoint must have the `trainer_state` metadata key");
        }
        Ok(meta)
    }
}

/// The largest `in_channels` a checkpoint may claim (a hyperspectral image
/// has a few hundred channels; anything larger is a damaged file).
pub const MAX_IN_CHANNELS: usize = 1024;
/// The largest `image_size` (height = width) a checkpoint may claim.
pub const MAX_IMAGE_SIZE: usize = 4096;
/// The largest `num_classes` a checkpoint may claim: a one-hot class
/// embedding is `num_classes^2` values (10^8 here, 400 MB).
pub const MAX_NUM_CLASSES: usize = 10_000;

/// The metadata's model shape, checked before anything is built from it:
/// a damaged or hostile file must not make the loader allocate without
/// bound (the model's own size is then bounded by the file's tensors,
/// see [`Checkpoint::num_model_values`]).
fn check_spec(spec: &ModelSpec) -> Result<()> {
    if spec.in_channels == 0 || spec.image_size == 0 || spec.num_classes < 2 {
        bail!("metadata describes an impossible model: {spec:?}");
    }
    for (key, value, max) in [
        ("in_channels", spec.in_channels, MAX_IN_CHANNELS),
        ("image_size", spec.image_size, MAX_IMAGE_SIZE),
        ("num_classes", spec.num_classes, MAX_NUM_CLASSES),
    ] {
        if value > max {
            bail!("metadata `{key}` = {value} is beyond the supported maximum {max}: the file is damaged");
        }
    }
    Ok(())
}

/// One finite mean and one positive finite standard deviation per channel.
fn check_normalisation(meta: &CheckpointMeta) -> Result<()> {
    let channels = meta.spec.in_channels;
    for (key, values) in [
        ("normalize_mean", &meta.normalize_mean),
        ("normalize_std", &meta.normalize_std),
    ] {
        if values.len() != channels {
            bail!(
                "metadata `{key}` has {} values; the model has {channels} channel(s)",
                values.len()
            );
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            bail!("metadata `{key}` holds {v}: normalisation must be finite");
        }
    }
    if let Some(v) = meta.normalize_std.iter().find(|&&v| v <= 0.0) {
        bail!("metadata `normalize_std` holds {v}: a standard deviation must be positive");
    }
    Ok(())
}

fn json_floats(values: &[f32]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

//! A dataset: train, optional validation and test splits on a device.
//!
//! Loading goes: read the raw `u8` data ([`crate::raw`]), validate it, hold
//! out the validation items, apply the limits, normalise
//! `x = (pixel / 255 - mean[c]) / std[c]` per channel, and upload.
//!
//! Split order and limits:
//! - validation: the first `validation` indices of
//!   [`crate::validation_permutation`]`(N_train, split_seed)`, kept in file
//!   order; the train split is the remaining items, in file order. The
//!   hold-out depends only on `split_seed` and `validation`, never on the
//!   limits, so runs with different `train_limit` validate on the same items
//!   and never train on them;
//! - `train_limit`: the first `train_limit` items of that train split (after
//!   the hold-out), so a small run sees a fixed, deterministic subset;
//! - `test_limit`: the first `test_limit` test items.
//!
//! Limits larger than the split keep the whole split; a limit of 0 is an error.

use std::path::PathBuf;

use candle_core::{Device, Tensor};

use crate::error::{DataError, Result};
use crate::folder::{channel_statistics, FolderOptions};
use crate::kind::DatasetKind;
use crate::raw::{RawData, RawSplit};
use crate::shuffle::validation_permutation;
use crate::split::Split;

/// What to load and how to split it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetConfig {
    /// Which dataset.
    pub kind: DatasetKind,
    /// Where its files are; `None` for MNIST means the embedded copy. The
    /// other datasets need a directory.
    pub data_dir: Option<PathBuf>,
    /// Keep only the first `n` train items (after the validation hold-out).
    pub train_limit: Option<usize>,
    /// Keep only the first `n` test items.
    pub test_limit: Option<usize>,
    /// Number of train items held out as the validation split (0: none).
    pub validation: usize,
    /// Per-channel `(mean, std)` of the `[0, 1]`-scaled pixels; one value
    /// applies to every channel. `None`: [`DatasetKind::default_normalization`],
    /// or for an image folder the statistics of its training split (after
    /// the validation hold-out).
    pub normalization: Option<(Vec<f32>, Vec<f32>)>,
    /// Seed of the validation hold-out permutation (and of an image
    /// folder's test hold-out).
    pub split_seed: u64,
    /// How to read an image folder ([`DatasetKind::Folder`] only; its
    /// `split_seed` is replaced by the one above).
    pub folder: FolderOptions,
}

impl DatasetConfig {
    /// The default configuration for `kind`.
    pub fn new(kind: DatasetKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }
}

/// Train, optional validation and test splits of one dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    kind: DatasetKind,
    image_shape: (usize, usize, usize),
    class_names: Option<Vec<String>>,
    train: Split,
    validation: Option<Split>,
    test: Split,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Dataset {
    /// Loads the dataset `config` describes onto `device`.
    pub fn load(config: &DatasetConfig, device: &Device) -> Result<Self> {
        // Check the configuration before spending time on decompression.
        check_config(config)?;
        let raw = match (&config.data_dir, config.kind) {
            (None, DatasetKind::Mnist) => crate::mnist::load_default_mnist()?,
            (None, kind) => return Err(DataError::DataDirRequired(kind)),
            (Some(dir), DatasetKind::Folder) => {
                let options = FolderOptions {
                    split_seed: config.split_seed,
                    ..config.folder.clone()
                };
                let folder = crate::folder::load_folder(dir, &options)?;
                return Self::from_raw_described(
                    folder.raw,
                    folder.image_shape,
                    Some(folder.class_names),
                    config,
                    device,
                );
            }
            (Some(dir), kind) if kind.is_idx() => crate::mnist::load_idx_dir(dir)?,
            (Some(dir), DatasetKind::Cifar10) => crate::cifar::load_cifar10_dir(dir)?,
            (Some(dir), _) => crate::cifar::load_cifar100_dir(dir)?,
        };
        Self::from_raw(raw, config, device)
    }

    /// Builds the dataset from raw bytes laid out as `config.kind` says
    /// (`[N, C, H, W]` pixels, labels below its number of classes);
    /// `config.data_dir` is ignored. An image folder has no fixed layout:
    /// see [`Dataset::from_raw_described`].
    pub fn from_raw(raw: RawData, config: &DatasetConfig, device: &Device) -> Result<Self> {
        let shape = config.kind.image_shape().ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "{} has no fixed image shape: build it with Dataset::from_raw_described",
                config.kind
            ))
        })?;
        Self::from_raw_described(raw, shape, None, config, device)
    }

    /// Builds the dataset from raw bytes of images of `image_shape`, with
    /// `class_names` (labels below their number) or, without them, the
    /// classes of `config.kind`.
    pub fn from_raw_described(
        raw: RawData,
        image_shape: (usize, usize, usize),
        class_names: Option<Vec<String>>,
        config: &DatasetConfig,
        device: &Device,
    ) -> Result<Self> {
        check_config(config)?;
        let kind = config.kind;
        let num_classes = match (&class_names, kind.num_classes()) {
            (Some(names), _) => names.len(),
            (None, Some(n)) => n,
            (None, None) => {
                return Err(DataError::InvalidArgument(format!(
                    "{kind} needs its class names"
                )))
            }
        };
        check_raw(kind, image_shape, num_classes, "train", &raw.train)?;
        check_raw(kind, image_shape, num_classes, "test", &raw.test)?;
        let n_train = raw.train.len();
        if config.validation >= n_train {
            return Err(DataError::InvalidConfig(format!(
                "validation hold-out of {} items leaves no training items (the train set has {n_train})",
                config.validation
            )));
        }
        let (train_indices, held_out) = if config.validation == 0 {
            ((0..n_train).collect::<Vec<_>>(), Vec::new())
        } else {
            let order = validation_permutation(n_train, config.split_seed);
            let mut held_out = order[..config.validation].to_vec();
            let mut kept = order[config.validation..].to_vec();
            held_out.sort_unstable();
            kept.sort_unstable();
            (kept, held_out)
        };
        let (mean, std) = normalization(config, image_shape.0, || {
            // Statistics of the training items only (never the validation
            // or test ones).
            let image_len = image_shape.0 * image_shape.1 * image_shape.2;
            let kept = RawSplit {
                pixels: train_indices
                    .iter()
                    .flat_map(|&i| {
                        raw.train.pixels[i * image_len..(i + 1) * image_len]
                            .iter()
                            .copied()
                    })
                    .collect(),
                labels: train_indices.iter().map(|&i| raw.train.labels[i]).collect(),
            };
            channel_statistics(&kept, image_shape.0)
        })?;
        let normalize = Normalizer::new(image_shape, &mean, &std);
        let validation = if held_out.is_empty() {
            None
        } else {
            Some(normalize.split(&raw.train, &held_out, device)?)
        };
        let train_len = config
            .train_limit
            .map_or(train_indices.len(), |limit| limit.min(train_indices.len()));
        let train = normalize.split(&raw.train, &train_indices[..train_len], device)?;
        let test_len = config
            .test_limit
            .map_or(raw.test.len(), |limit| limit.min(raw.test.len()));
        let test_indices: Vec<usize> = (0..test_len).collect();
        let test = normalize.split(&raw.test, &test_indices, device)?;
        Ok(Self {
            kind,
            image_shape,
            class_names,
            train,
            validation,
            test,
            mean,
            std,
        })
    }

    /// Which dataset this is.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        match &self.class_names {
            Some(names) => names.len(),
            None => self.kind.num_classes().unwrap_or(0),
        }
    }

    /// The class names, where the data has them (an image folder's
    /// directory names); label `i` is the `i`-th.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// `(C, H, W)` of one image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        self.image_shape
    }

    /// The training split (without the validation hold-out).
    pub fn train(&self) -> &Split {
        &self.train
    }

    /// The validation hold-out, if one was asked for.
    pub fn validation(&self) -> Option<&Split> {
        self.validation.as_ref()
    }

    /// The test split.
    pub fn test(&self) -> &Split {
        &self.test
    }

    /// Per-channel `(mean, std)` used to normalise, one entry per channel
    /// (to undo it: `pixel / 255 = x * std[c] + mean[c]`).
    pub fn normalization(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.std)
    }

    /// The device the splits live on.
    pub fn device(&self) -> &Device {
        self.train.device()
    }
}

/// Validates `config`'s limits.
fn check_config(config: &DatasetConfig) -> Result<()> {
    let invalid = |message: String| Err(DataError::InvalidConfig(message));
    if config.train_limit == Some(0) {
        return invalid("train_limit must be at least 1".to_string());
    }
    if config.test_limit == Some(0) {
        return invalid("test_limit must be at least 1".to_string());
    }
    Ok(())
}

/// `config`'s normalisation (or the dataset's default, or `statistics()`
/// when it has none) expanded to one entry per channel, and checked.
fn normalization(
    config: &DatasetConfig,
    channels: usize,
    statistics: impl FnOnce() -> (Vec<f32>, Vec<f32>),
) -> Result<(Vec<f32>, Vec<f32>)> {
    let invalid = |message: String| Err(DataError::InvalidConfig(message));
    let (mean, std) = match (&config.normalization, config.kind.default_normalization()) {
        (Some(given), _) => given.clone(),
        (None, Some(default)) => default,
        (None, None) => statistics(),
    };
    let expand = |values: Vec<f32>, what: &str| -> Result<Vec<f32>> {
        match values.len() {
            1 => Ok(vec![values[0]; channels]),
            n if n == channels => Ok(values),
            n => Err(DataError::InvalidConfig(format!(
                "normalisation {what} has {n} values; {} has {channels} channel(s) (give 1 or {channels})",
                config.kind
            ))),
        }
    };
    let mean = expand(mean, "mean")?;
    let std = expand(std, "std")?;
    if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
        return invalid(format!("normalisation mean {m} is not finite"));
    }
    if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return invalid(format!("normalisation std {s} must be finite and positive"));
    }
    Ok((mean, std))
}

/// Checks a raw split's sizes and labels against its shape and classes.
fn check_raw(
    kind: DatasetKind,
    (c, h, w): (usize, usize, usize),
    num_classes: usize,
    name: &str,
    split: &RawSplit,
) -> Result<()> {
    let image_len = c * h * w;
    let invalid = |message: String| Err(DataError::InvalidArgument(message));
    if split.is_empty() {
        return invalid(format!("the {kind} {name} split holds no items"));
    }
    if split.pixels.len() != split.len() * image_len {
        return invalid(format!(
            "the {kind} {name} split has {} labels but {} pixel bytes, expected {} ({c}x{h}x{w} per image)",
            split.len(),
            split.pixels.len(),
            split.len() * image_len
        ));
    }
    if let Some(index) = split
        .labels
        .iter()
        .position(|&l| usize::from(l) >= num_classes)
    {
        return invalid(format!(
            "the {kind} {name} split has label {} at item {index}, but {kind} has {num_classes} classes",
            split.labels[index],
        ));
    }
    Ok(())
}

/// Maps pixels to normalised f32 with one 256-entry table per channel.
struct Normalizer {
    /// `table[c * 256 + p] = (p / 255 - mean[c]) / std[c]`.
    table: Vec<f32>,
    channel_len: usize,
    image_len: usize,
    shape: (usize, usize, usize),
}

impl Normalizer {
    fn new(shape: (usize, usize, usize), mean: &[f32], std: &[f32]) -> Self {
        let (c, h, w) = shape;
        let table = (0..c)
            .flat_map(|ch| (0..256).map(move |p| (p as f32 / 255.0 - mean[ch]) / std[ch]))
            .collect();
        Self {
            table,
            channel_len: h * w,
            image_len: c * h * w,
            shape,
        }
    }

    /// The items `indices` of `raw`, normalised, as a [`Split`] on `device`.
    fn split(&self, raw: &RawSplit, indices: &[usize], device: &Device) -> Result<Split> {
        let mut images = Vec::with_capacity(indices.len() * self.image_len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let image = &raw.pixels[i * self.image_len..(i + 1) * self.image_len];
            for (ch, channel) in image.chunks_exact(self.channel_len).enumerate() {
                let table = &self.table[ch * 256..(ch + 1) * 256];
                images.extend(channel.iter().map(|&p| table[usize::from(p)]));
            }
            labels.push(u32::from(raw.labels[i]));
        }
        let (c, h, w) = self.shape;
        let n = indices.len();
        Split::new(
            Tensor::from_vec(images, (n, c, h, w), device)?,
            Tensor::from_vec(labels, n, device)?,
        )
    }
}

//! Datasets from the Hugging Face hub, through `candle-datasets` (feature
//! `hub`, needs a network; files are cached by `hf-hub` under
//! `~/.cache/huggingface`).
//!
//! `candle-datasets` returns images as f32 `[N, 784]` in `[0, 1]` and u8
//! labels; they are turned back into exact `u8` pixels (`round(x * 255)`) and
//! go through [`Dataset::from_raw`], so splitting, limits and normalisation
//! are the same as for the embedded or directory data.

use candle_core::{DType, Device, Tensor};

use crate::dataset::{Dataset, DatasetConfig};
use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::raw::{RawData, RawSplit};

/// Loads `config.kind` from the hub onto `device` (`config.data_dir` is
/// ignored). MNIST and Fashion-MNIST are available.
pub fn load(config: &DatasetConfig, device: &Device) -> Result<Dataset> {
    let hub_error =
        |e: candle_core::Error| DataError::Hub(format!("downloading {} failed: {e}", config.kind));
    let dataset = match config.kind {
        DatasetKind::Mnist => candle_datasets::vision::mnist::load().map_err(hub_error)?,
        DatasetKind::FashionMnist => {
            candle_datasets::vision::fashion_mnist::load().map_err(hub_error)?
        }
        kind => {
            return Err(DataError::Hub(format!(
                "{kind} is not available from the hub; give --data-dir"
            )))
        }
    };
    let raw = RawData {
        train: raw_split(&dataset.train_images, &dataset.train_labels)?,
        test: raw_split(&dataset.test_images, &dataset.test_labels)?,
    };
    Dataset::from_raw(raw, config, device)
}

/// `[N, 784]` f32 images in `[0, 1]` and `[N]` labels as bytes.
fn raw_split(images: &Tensor, labels: &Tensor) -> Result<RawSplit> {
    let pixels = (images.flatten_all()?.to_dtype(DType::F32)? * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?
        .to_vec1::<u8>()?;
    let labels = labels.to_dtype(DType::U8)?.to_vec1::<u8>()?;
    Ok(RawSplit { pixels, labels })
}

//! One split of a dataset (train, validation or test) as candle tensors.
//!
//! - `images`: f32 `[N, C, H, W]`, normalised per channel,
//!   `x = (pixel / 255 - mean[c]) / std[c]`;
//! - `labels`: u32 `[N]`, each below the dataset's number of classes.
//!
//! Both live on the dataset's device. A [`Split`] is cheap to clone (tensors
//! are reference-counted) and [`Split::subset`] is a view, not a copy.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use crate::batch::Batches;
use crate::error::{DataError, Result};

/// Images and labels of one split.
#[derive(Debug, Clone)]
pub struct Split {
    images: Tensor,
    labels: Tensor,
}

impl Split {
    /// A split from f32 images `[N, C, H, W]` and u32 labels `[N]` on the
    /// same device.
    pub fn new(images: Tensor, labels: Tensor) -> Result<Self> {
        let invalid = |message: String| Err(DataError::InvalidArgument(message));
        if images.rank() != 4 || images.dtype() != DType::F32 {
            return invalid(format!(
                "split images must be f32 [N, C, H, W], got {:?} {:?}",
                images.dtype(),
                images.dims()
            ));
        }
        if labels.rank() != 1 || labels.dtype() != DType::U32 {
            return invalid(format!(
                "split labels must be u32 [N], got {:?} {:?}",
                labels.dtype(),
                labels.dims()
            ));
        }
        if images.dim(0)? != labels.dim(0)? {
            return invalid(format!(
                "split has {} images but {} labels",
                images.dim(0)?,
                labels.dim(0)?
            ));
        }
        if !images.device().same_device(labels.device()) {
            return invalid("split images and labels are on different devices".to_string());
        }
        Ok(Self { images, labels })
    }

    /// Number of items `N`.
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    /// Whether the split holds no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The normalised images, f32 `[N, C, H, W]`.
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// The labels, u32 `[N]`.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// `(C, H, W)` of one image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let dims = self.images.dims();
        (dims[1], dims[2], dims[3])
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        self.images.device()
    }

    /// Items `range` of this split, as a view (no copy).
    pub fn subset(&self, range: Range<usize>) -> Result<Split> {
        if range.start > range.end || range.end > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "subset {range:?} is not within a split of {} items",
                self.len()
            )));
        }
        Ok(Split {
            images: self.images.narrow(0, range.start, range.len())?,
            labels: self.labels.narrow(0, range.start, range.len())?,
        })
    }

    /// A copy of this split on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Split> {
        Ok(Split {
            images: self.images.to_device(device)?,
            labels: self.labels.to_device(device)?,
        })
    }

    /// Batches of `batch_size` items `(images [b, C, H, W], labels [b])`.
    ///
    /// With `shuffle: Some((seed, epoch))` the items are visited in the order
    /// [`crate::permutation`]`(len, seed, epoch)`, gathered per batch with
    /// `index_select` (the split is never copied whole); with `None`, in
    /// stored order as views. The last batch may be smaller than
    /// `batch_size`; see [`Batches::drop_last`].
    pub fn batches(&self, batch_size: usize, shuffle: Option<(u64, u64)>) -> Result<Batches> {
        Batches::new(self, batch_size, shuffle)
    }
}

//! The batch iterator over a [`Split`].
//!
//! Each item is `(images [b, C, H, W], labels [b])` with `b = batch_size`
//! except possibly the last. Shuffled iteration puts the epoch's permutation
//! on the device once, as a u32 `[N]` tensor, and gathers each batch with
//! `index_select` on a slice of it: per epoch only `N` indices are copied,
//! never the images.

use candle_core::Tensor;

use crate::error::{DataError, Result};
use crate::shuffle::permutation;
use crate::split::Split;

/// Iterator over the batches of a split; see [`Split::batches`].
#[derive(Debug, Clone)]
pub struct Batches {
    images: Tensor,
    labels: Tensor,
    /// The epoch's visiting order, u32 `[N]` on the split's device; `None`
    /// visits items in stored order.
    order: Option<Tensor>,
    batch_size: usize,
    /// Index (into the order) of the next batch's first item.
    next: usize,
    /// One past the last item visited.
    end: usize,
}

impl Batches {
    pub(crate) fn new(
        split: &Split,
        batch_size: usize,
        shuffle: Option<(u64, u64)>,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument(
                "batch size must be at least 1".to_string(),
            ));
        }
        let len = split.len();
        let order = match shuffle {
            None => None,
            Some((seed, epoch)) => {
                let order = permutation(len, seed, epoch)
                    .into_iter()
                    .map(u32::try_from)
                    .collect::<std::result::Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        DataError::InvalidArgument(format!(
                            "cannot shuffle {len} items: more than u32::MAX"
                        ))
                    })?;
                Some(Tensor::from_vec(order, len, split.device())?)
            }
        };
        Ok(Self {
            images: split.images().clone(),
            labels: split.labels().clone(),
            order,
            batch_size,
            next: 0,
            end: len,
        })
    }

    /// Whether to skip a last batch smaller than `batch_size` (default: keep it).
    pub fn drop_last(mut self, drop: bool) -> Self {
        let len = self.labels.dims()[0];
        self.end = if drop {
            len - len % self.batch_size
        } else {
            len
        };
        self
    }

    fn batch(&self, start: usize, size: usize) -> Result<(Tensor, Tensor)> {
        match &self.order {
            None => Ok((
                self.images.narrow(0, start, size)?,
                self.labels.narrow(0, start, size)?,
            )),
            Some(order) => {
                let indices = order.narrow(0, start, size)?;
                Ok((
                    self.images.index_select(&indices, 0)?,
                    self.labels.index_select(&indices, 0)?,
                ))
            }
        }
    }
}

impl Iterator for Batches {
    type Item = Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        let size = self.batch_size.min(self.end - start);
        self.next += size;
        Some(self.batch(start, size))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.end.saturating_sub(self.next).div_ceil(self.batch_size);
        (remaining, Some(remaining))
    }
}

impl ExactSizeIterator for Batches {}

//! Decoded but not yet normalised data: `u8` pixels and labels on the host.
//!
//! Every reader (embedded MNIST, IDX directories, CIFAR binaries, the hub)
//! produces a [`RawData`]; [`crate::Dataset::from_raw`] then validates it,
//! splits off the validation set, normalises and moves it to a device, so
//! that logic exists once.

/// One split as bytes: `pixels` is `[N, C, H, W]` row-major, `labels` is `[N]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSplit {
    /// Pixels `[N, C, H, W]`, row-major.
    pub pixels: Vec<u8>,
    /// Labels `[N]`.
    pub labels: Vec<u8>,
}

impl RawSplit {
    /// Number of items `N` (the number of labels).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends `other`'s items after this split's.
    pub fn extend(&mut self, other: RawSplit) {
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend_from_slice(&other.labels);
    }
}

/// A dataset's train and test splits as bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawData {
    /// The training split.
    pub train: RawSplit,
    /// The test split.
    pub test: RawSplit,
}

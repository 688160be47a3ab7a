//! The datasets noprop-rs knows, their shapes, classes and default
//! normalisation.
//!
//! Default normalisation constants are the per-channel mean and standard
//! deviation of each training set's pixels scaled to `[0, 1]`, as commonly
//! published (MNIST 0.1307 / 0.3081; CIFAR-10 standard deviations are the
//! true per-pixel ones, 0.2470 / 0.2435 / 0.2616, not the often-copied
//! 0.2023 / 0.1994 / 0.2010).

use std::fmt;
use std::str::FromStr;

use crate::error::DataError;

/// A dataset noprop-rs can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatasetKind {
    /// Handwritten digits, 28x28 grey, 10 classes; embedded in the binary.
    #[default]
    Mnist,
    /// Zalando clothing images, 28x28 grey, 10 classes (IDX files).
    FashionMnist,
    /// Kuzushiji (cursive Japanese) characters, 28x28 grey, 10 classes (IDX files).
    Kmnist,
    /// Natural images, 32x32 colour, 10 classes (CIFAR binary version).
    Cifar10,
    /// Natural images, 32x32 colour, 100 fine classes (CIFAR binary version).
    Cifar100,
    /// A folder of images, one directory per class ([`crate::folder`]): its
    /// shape and classes are the data's own.
    Folder,
}

impl DatasetKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }

    /// Number of classes (CIFAR-100: the fine labels); `None` for an image
    /// folder, whose classes are known once it is read
    /// ([`crate::Dataset::num_classes`]).
    pub fn num_classes(self) -> Option<usize> {
        match self {
            DatasetKind::Folder => None,
            DatasetKind::Cifar100 => Some(100),
            _ => Some(10),
        }
    }

    /// `(channels, height, width)` of one image; `None` for an image folder
    /// ([`crate::Dataset::image_shape`]).
    pub fn image_shape(self) -> Option<(usize, usize, usize)> {
        match self {
            DatasetKind::Folder => None,
            kind if kind.is_idx() => Some((1, 28, 28)),
            _ => Some((3, 32, 32)),
        }
    }

    /// Whether the dataset comes as MNIST-style IDX files.
    pub fn is_idx(self) -> bool {
        matches!(
            self,
            DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Kmnist
        )
    }

    /// Default per-channel `(mean, std)` of the `[0, 1]`-scaled pixels;
    /// `None` for an image folder, whose statistics are computed from its
    /// training split ([`crate::folder::channel_statistics`]).
    pub fn default_normalization(self) -> Option<(Vec<f32>, Vec<f32>)> {
        Some(match self {
            DatasetKind::Mnist => (vec![0.1307], vec![0.3081]),
            DatasetKind::FashionMnist => (vec![0.2860], vec![0.3530]),
            DatasetKind::Kmnist => (vec![0.1918], vec![0.3483]),
            DatasetKind::Cifar10 => (vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 => (vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762]),
            DatasetKind::Folder => return None,
        })
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// Parses a name as printed by `Display`, ignoring ASCII case; `fashion_mnist`
    /// and `cifar-10`-style spellings are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalised: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        match normalised.as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "kmnist" => Ok(DatasetKind::Kmnist),
            "cifar10" => Ok(DatasetKind::Cifar10),
            "cifar100" => Ok(DatasetKind::Cifar100),
            "folder" | "imagefolder" => Ok(DatasetKind::Folder),
            _ => Err(DataError::UnknownDataset(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
        }
        assert_eq!(
            "Fashion_MNIST".parse::<DatasetKind>().unwrap(),
            DatasetKind::FashionMnist
        );
        assert_eq!(
            "cifar-100".parse::<DatasetKind>().unwrap(),
            DatasetKind::Cifar100
        );
        let err = "imagenet".parse::<DatasetKind>().unwrap_err();
        assert!(err.to_string().contains("imagenet"), "{err}");
    }

    #[test]
    fn normalization_has_one_entry_per_channel() {
        for kind in DatasetKind::ALL {
            let Some((mean, std)) = kind.default_normalization() else {
                assert_eq!(kind, DatasetKind::Folder);
                assert_eq!(kind.image_shape(), None);
                continue;
            };
            let (channels, _, _) = kind.image_shape().unwrap();
            assert_eq!(mean.len(), channels, "{kind}");
            assert_eq!(std.len(), channels, "{kind}");
        }
    }
}

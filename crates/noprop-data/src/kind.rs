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
}

impl DatasetKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }

    /// Number of classes (CIFAR-100: the fine labels).
    pub fn num_classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            _ => 10,
        }
    }

    /// `(channels, height, width)` of one image.
    pub fn image_shape(self) -> (usize, usize, usize) {
        if self.is_idx() {
            (1, 28, 28)
        } else {
            (3, 32, 32)
        }
    }

    /// Whether the dataset comes as MNIST-style IDX files.
    pub fn is_idx(self) -> bool {
        matches!(
            self,
            DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Kmnist
        )
    }

    /// Default per-channel `(mean, std)` of the `[0, 1]`-scaled pixels.
    pub fn default_normalization(self) -> (Vec<f32>, Vec<f32>) {
        match self {
            DatasetKind::Mnist => (vec![0.1307], vec![0.3081]),
            DatasetKind::FashionMnist => (vec![0.2860], vec![0.3530]),
            DatasetKind::Kmnist => (vec![0.1918], vec![0.3483]),
            DatasetKind::Cifar10 => (vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 => (vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762]),
        }
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
            let (mean, std) = kind.default_normalization();
            let (channels, _, _) = kind.image_shape();
            assert_eq!(mean.len(), channels, "{kind}");
            assert_eq!(std.len(), channels, "{kind}");
        }
    }
}

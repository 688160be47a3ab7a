//! The real MNIST: embedded copy and the repository's directory.

use candle_core::{DType, Device};
#[cfg(feature = "embedded-mnist")]
use noprop_data::mnist;
use noprop_data::{Dataset, DatasetConfig, DatasetKind};

#[test]
fn embedded_mnist_loads_with_known_sizes_labels_and_statistics() {
    // Dataset::load verifies the SHA-256 of every embedded file first.
    let dataset = Dataset::load(&DatasetConfig::new(DatasetKind::Mnist), &Device::Cpu).unwrap();
    assert_eq!(dataset.num_classes(), 10);
    assert_eq!(dataset.image_shape(), (1, 28, 28));
    assert!(dataset.validation().is_none());
    let (train, test) = (dataset.train(), dataset.test());
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.images().dims(), &[60_000, 1, 28, 28]);
    assert_eq!(train.images().dtype(), DType::F32);
    assert_eq!(train.labels().dtype(), DType::U32);
    assert_eq!(test.images().dims(), &[10_000, 1, 28, 28]);
    // First labels as published with MNIST.
    let first = |split: &noprop_data::Split| split.labels().narrow(0, 0, 5).unwrap();
    assert_eq!(first(train).to_vec1::<u32>().unwrap(), [5, 0, 4, 1, 9]);
    assert_eq!(first(test).to_vec1::<u32>().unwrap(), [7, 2, 1, 0, 4]);

    // 0.1307 / 0.3081 are MNIST's train pixel mean / std (on [0, 1]), so the
    // normalised train split has mean ~0 and std ~1. Sums in f64 on the host.
    let values = train
        .images()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 1e-3, "train mean {mean}");
    assert!(
        (variance.sqrt() - 1.0).abs() < 1e-3,
        "train std {}",
        variance.sqrt()
    );
}

#[cfg(feature = "embedded-mnist")]
#[test]
fn repository_directory_matches_the_embedded_copy() {
    // Reading data/mnist as a --data-dir also verifies it against its
    // SHA256SUMS; the bytes must equal the embedded ones.
    let from_dir = mnist::load_idx_dir(&mnist::repository_mnist_dir()).unwrap();
    let embedded = mnist::embedded::load().unwrap();
    assert!(from_dir == embedded, "directory and embedded MNIST differ");
    assert_eq!(embedded.train.len(), 60_000);
    assert_eq!(embedded.test.pixels.len(), 10_000 * 784);
}

#[cfg(feature = "embedded-mnist")]
#[test]
fn embedded_checksums_reject_altered_bytes() {
    for (name, bytes) in mnist::embedded::FILES.iter() {
        assert!(mnist::embedded::verified_bytes(name).is_ok(), "{name}");
        let mut altered = bytes.to_vec();
        let middle = altered.len() / 2;
        altered[middle] ^= 1;
        let expected = noprop_data::file::sha256_hex(bytes);
        let path = mnist::embedded::display_path(name);
        let err = noprop_data::file::verify_sha256(&path, &altered, &expected).unwrap_err();
        assert!(
            matches!(err, noprop_data::DataError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

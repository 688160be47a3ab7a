//! Every kind of bad input gives an error naming the file and the problem.

use std::path::Path;

use candle_core::Device;
use noprop_data::idx::{encode_images, encode_labels};
use noprop_data::{DataError, Dataset, DatasetConfig, DatasetKind};

use crate::fixtures::{gzip, idx_images, idx_labels, write_idx_dir};

/// Loads the MNIST-family dataset in `dir`, expecting an error.
fn load_error(dir: &Path) -> DataError {
    let config = DatasetConfig {
        data_dir: Some(dir.to_path_buf()),
        ..DatasetConfig::new(DatasetKind::FashionMnist)
    };
    Dataset::load(&config, &Device::Cpu).expect_err("bad input must not load")
}

/// A tempdir holding a valid raw (uncompressed) dataset of 5 + 3 items.
fn valid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dir(dir.path(), 5, 3, false);
    dir
}

fn assert_names(err: &DataError, file: &str) {
    assert!(
        err.to_string().contains(file),
        "error does not name {file}: {err}"
    );
}

#[test]
fn valid_fixture_loads() {
    // The baseline the other cases corrupt: it must load.
    let dir = valid_dir();
    let config = DatasetConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..DatasetConfig::new(DatasetKind::Kmnist)
    };
    let dataset = Dataset::load(&config, &Device::Cpu).unwrap();
    assert_eq!((dataset.train().len(), dataset.test().len()), (5, 3));
}

#[test]
fn missing_file() {
    let dir = valid_dir();
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert_names(&err, "t10k-labels-idx1-ubyte.gz");
    assert_names(&err, "t10k-labels-idx1-ubyte");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_error(empty.path()),
        DataError::MissingFile { .. }
    ));
}

#[test]
fn truncated_gzip() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dir(dir.path(), 5, 3, true);
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert_names(&err, "train-images-idx3-ubyte.gz");
    // The decoder's explanation is said once: in the message, with no
    // `source()` that an error chain would print again.
    let text = err.to_string();
    assert!(text.contains("deflate"), "{text}");
    assert!(std::error::Error::source(&err).is_none(), "{text}");
}

#[test]
fn corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dir(dir.path(), 5, 3, true);
    let path = dir.path().join("train-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    // The gzip trailer is CRC-32 then length; a flipped CRC bit must be caught.
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert_names(&err, "train-labels-idx1-ubyte.gz");

    // A .gz name on bytes that are not gzip at all.
    std::fs::write(&path, idx_labels(0..5)).unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert_names(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn wrong_magic() {
    let dir = valid_dir();
    // A labels file where the images file should be.
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), idx_labels(0..5)).unwrap();
    let err = load_error(dir.path());
    match &err {
        DataError::BadMagic {
            found, expected, ..
        } => assert_eq!((*found, *expected), (0x801, 0x803)),
        other => panic!("expected BadMagic, got {other}"),
    }
    assert_names(&err, "train-images-idx3-ubyte");
}

#[test]
fn mismatched_counts() {
    let dir = valid_dir();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx_labels(100..102),
    )
    .unwrap();
    let err = load_error(dir.path());
    match &err {
        DataError::CountMismatch { images, labels, .. } => assert_eq!((*images, *labels), (3, 2)),
        other => panic!("expected CountMismatch, got {other}"),
    }
    assert_names(&err, "t10k-images-idx3-ubyte");
    assert_names(&err, "t10k-labels-idx1-ubyte");
}

#[test]
fn label_out_of_range() {
    let dir = valid_dir();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        encode_labels(&[0, 1, 2, 10, 4]),
    )
    .unwrap();
    let err = load_error(dir.path());
    match &err {
        DataError::LabelOutOfRange { index, label, .. } => assert_eq!((*index, *label), (3, 10)),
        other => panic!("expected LabelOutOfRange, got {other}"),
    }
    assert_names(&err, "train-labels-idx1-ubyte");
}

#[test]
fn wrong_image_size() {
    let dir = valid_dir();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        encode_images(5, 27, 28, &vec![0; 5 * 27 * 28]),
    )
    .unwrap();
    let err = load_error(dir.path());
    match &err {
        DataError::BadImageSize { rows, cols, .. } => assert_eq!((*rows, *cols), (27, 28)),
        other => panic!("expected BadImageSize, got {other}"),
    }
    assert_names(&err, "train-images-idx3-ubyte");
}

#[test]
fn wrong_file_length() {
    let dir = valid_dir();
    let path = dir.path().join("train-images-idx3-ubyte");
    // The header says 5 images; drop the last byte, then add an extra one.
    let full = idx_images(0..5);
    for bytes in [
        &full[..full.len() - 1],
        &[full.as_slice(), &[0]].concat()[..],
    ] {
        std::fs::write(&path, bytes).unwrap();
        let err = load_error(dir.path());
        match &err {
            DataError::BadLength {
                actual, expected, ..
            } => {
                assert_eq!(*expected, 16 + 5 * 784);
                assert_eq!(*actual, bytes.len());
            }
            other => panic!("expected BadLength, got {other}"),
        }
        assert_names(&err, "train-images-idx3-ubyte");
    }
}

#[test]
fn short_header_and_empty_files() {
    let dir = valid_dir();
    let path = dir.path().join("t10k-images-idx3-ubyte");
    for bytes in [
        vec![],
        vec![0, 0, 8],
        // Magic and count, but no rows/cols.
        vec![0, 0, 8, 3, 0, 0, 0, 1],
        // Zero images.
        encode_images(0, 28, 28, &[]),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = load_error(dir.path());
        assert!(
            matches!(err, DataError::BadFormat { .. }),
            "{bytes:?}: {err}"
        );
        assert_names(&err, "t10k-images-idx3-ubyte");
    }
}

#[test]
fn checksum_mismatch() {
    let dir = valid_dir();
    let labels = idx_labels(0..5);
    let right = noprop_data::file::sha256_hex(&labels);
    let wrong = "0".repeat(64);
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{right}  train-labels-idx1-ubyte\n{wrong}  t10k-labels-idx1-ubyte\n"),
    )
    .unwrap();
    let err = load_error(dir.path());
    match &err {
        DataError::ChecksumMismatch { expected, .. } => assert_eq!(expected, &wrong),
        other => panic!("expected ChecksumMismatch, got {other}"),
    }
    assert_names(&err, "t10k-labels-idx1-ubyte");

    // A checksum list that is not one.
    std::fs::write(dir.path().join("SHA256SUMS"), "not a checksum line\n").unwrap();
    let err = load_error(dir.path());
    assert!(matches!(err, DataError::BadFormat { .. }), "{err}");
    assert_names(&err, "SHA256SUMS");
}

#[test]
fn gzip_and_raw_files_give_the_same_data() {
    let raw = valid_dir();
    let compressed = tempfile::tempdir().unwrap();
    write_idx_dir(compressed.path(), 5, 3, true);
    let a = noprop_data::mnist::load_idx_dir(raw.path()).unwrap();
    let b = noprop_data::mnist::load_idx_dir(compressed.path()).unwrap();
    assert_eq!(a, b);
    // A gzip file under a raw name is still recognised by its content.
    std::fs::write(
        raw.path().join("train-images-idx3-ubyte"),
        gzip(&idx_images(0..5)),
    )
    .unwrap();
    assert_eq!(noprop_data::mnist::load_idx_dir(raw.path()).unwrap(), b);
}

#[test]
fn bad_configuration() {
    let dir = valid_dir();
    let base = DatasetConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let bad = [
        DatasetConfig {
            validation: 5,
            ..base.clone()
        },
        DatasetConfig {
            train_limit: Some(0),
            ..base.clone()
        },
        DatasetConfig {
            test_limit: Some(0),
            ..base.clone()
        },
        DatasetConfig {
            normalization: Some((vec![0.1, 0.2], vec![0.3, 0.3])),
            ..base.clone()
        },
        DatasetConfig {
            normalization: Some((vec![0.1], vec![0.0])),
            ..base.clone()
        },
        DatasetConfig {
            normalization: Some((vec![f32::NAN], vec![1.0])),
            ..base.clone()
        },
    ];
    for config in bad {
        let err = Dataset::load(&config, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidConfig(_)),
            "{config:?}: {err}"
        );
    }
    for kind in [DatasetKind::FashionMnist, DatasetKind::Cifar10] {
        let err = Dataset::load(&DatasetConfig::new(kind), &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, DataError::DataDirRequired(k) if k == kind),
            "{err}"
        );
    }
}

//! CIFAR-10 and CIFAR-100 binaries, on small generated files.

use candle_core::Device;
use noprop_data::{DataError, Dataset, DatasetConfig, DatasetKind};

use crate::fixtures::cifar_record;

/// Writes CIFAR-10 batches into `dir/cifar-10-batches-bin/`: train batch `b`
/// holds items `2b, 2b + 1` (label = item % 10, planes base = item), the
/// test batch items 20, 21, 22.
fn write_cifar10(dir: &std::path::Path) -> std::path::PathBuf {
    let folder = dir.join("cifar-10-batches-bin");
    std::fs::create_dir(&folder).unwrap();
    for batch in 0..5 {
        let bytes: Vec<u8> = (2 * batch..2 * batch + 2)
            .flat_map(|id| cifar_record(&[(id % 10) as u8], id as u8))
            .collect();
        std::fs::write(folder.join(format!("data_batch_{}.bin", batch + 1)), bytes).unwrap();
    }
    let test: Vec<u8> = (20..23)
        .flat_map(|id| cifar_record(&[(id % 10) as u8], id as u8))
        .collect();
    std::fs::write(folder.join("test_batch.bin"), test).unwrap();
    folder
}

/// Normalisation (0, 1) on every channel, so images are pixel / 255.
fn identity_config(kind: DatasetKind, dir: &std::path::Path) -> DatasetConfig {
    DatasetConfig {
        data_dir: Some(dir.to_path_buf()),
        normalization: Some((vec![0.0], vec![1.0])),
        ..DatasetConfig::new(kind)
    }
}

#[test]
fn cifar10_loads_from_the_archive_folder_or_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_cifar10(dir.path());
    for data_dir in [dir.path(), folder.as_path()] {
        let config = identity_config(DatasetKind::Cifar10, data_dir);
        let dataset = Dataset::load(&config, &Device::Cpu).unwrap();
        assert_eq!(dataset.image_shape(), (3, 32, 32));
        assert_eq!(dataset.num_classes(), 10);
        let train = dataset.train();
        assert_eq!(train.images().dims(), &[10, 3, 32, 32]);
        assert_eq!(
            train.labels().to_vec1::<u32>().unwrap(),
            (0..10u32).collect::<Vec<_>>()
        );
        assert_eq!(dataset.test().labels().to_vec1::<u32>().unwrap(), [0, 1, 2]);
        // Item 7, channel c: every pixel is (7 + 50c) / 255 (planes are CHW).
        let item = train.images().get(7).unwrap().to_vec3::<f32>().unwrap();
        for (c, plane) in item.iter().enumerate() {
            let expected = (7 + 50 * c) as f32 / 255.0;
            assert!(plane.iter().flatten().all(|&v| (v - expected).abs() < 1e-6));
        }
    }
}

#[test]
fn cifar10_default_normalisation_is_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    let config = DatasetConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..DatasetConfig::new(DatasetKind::Cifar10)
    };
    let dataset = Dataset::load(&config, &Device::Cpu).unwrap();
    let (mean, std) = DatasetKind::Cifar10.default_normalization().unwrap();
    assert_eq!(dataset.normalization(), (mean.as_slice(), std.as_slice()));
    // Closed form x = (p / 255 - mean[c]) / std[c] for test item 21's first pixel.
    let item = dataset
        .test()
        .images()
        .get(1)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    for c in 0..3 {
        let pixel = (21 + 50 * c) as f32;
        let expected = (pixel / 255.0 - mean[c]) / std[c];
        assert!((item[c][0][0] - expected).abs() < 1e-5, "channel {c}");
    }
}

#[test]
fn cifar100_uses_fine_labels() {
    let dir = tempfile::tempdir().unwrap();
    // (coarse, fine) pairs.
    let train: Vec<u8> = [(0u8, 0u8), (19, 99), (4, 50), (7, 7)]
        .iter()
        .enumerate()
        .flat_map(|(id, &(coarse, fine))| cifar_record(&[coarse, fine], id as u8))
        .collect();
    std::fs::write(dir.path().join("train.bin"), train).unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar_record(&[3, 42], 9)).unwrap();
    let dataset = Dataset::load(
        &identity_config(DatasetKind::Cifar100, dir.path()),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(dataset.num_classes(), 100);
    assert_eq!(
        dataset.train().labels().to_vec1::<u32>().unwrap(),
        [0, 99, 50, 7]
    );
    assert_eq!(dataset.test().labels().to_vec1::<u32>().unwrap(), [42]);
    assert_eq!(dataset.train().images().dims(), &[4, 3, 32, 32]);
}

#[test]
fn bad_cifar_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_cifar10(dir.path());
    let load = || {
        Dataset::load(
            &identity_config(DatasetKind::Cifar10, dir.path()),
            &Device::Cpu,
        )
    };

    // Not a whole number of records.
    let path = folder.join("data_batch_3.bin");
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let err = load().unwrap_err();
    assert!(matches!(err, DataError::BadFormat { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");

    // Empty.
    std::fs::write(&path, []).unwrap();
    assert!(matches!(load().unwrap_err(), DataError::BadFormat { .. }));

    // Label 10 in CIFAR-10.
    std::fs::write(&path, cifar_record(&[10], 0)).unwrap();
    let err = load().unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { label: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");

    // Missing batch.
    std::fs::write(&path, good).unwrap();
    std::fs::remove_file(folder.join("data_batch_5.bin")).unwrap();
    let err = load().unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("data_batch_5.bin"), "{err}");

    // CIFAR-100: fine label 100 and coarse label 20 are out of range.
    let dir100 = tempfile::tempdir().unwrap();
    std::fs::write(dir100.path().join("test.bin"), cifar_record(&[0, 0], 0)).unwrap();
    for (labels, bad) in [([0u8, 100u8], 100u32), ([20, 0], 20)] {
        std::fs::write(dir100.path().join("train.bin"), cifar_record(&labels, 0)).unwrap();
        let config = identity_config(DatasetKind::Cifar100, dir100.path());
        let err = Dataset::load(&config, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, DataError::LabelOutOfRange { label, .. } if label == bad),
            "{err}"
        );
        assert!(err.to_string().contains("train.bin"), "{err}");
    }
}

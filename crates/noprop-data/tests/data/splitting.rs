//! Validation hold-out, limits and normalisation on small generated data.

use candle_core::Device;
use noprop_data::{validation_permutation, Dataset, DatasetConfig, DatasetKind, Split};

use crate::fixtures::write_idx_dir;

/// Item ids of a split loaded with normalisation (0, 1): pixel 0 is the id.
pub fn ids(split: &Split) -> Vec<usize> {
    let first_pixels = split
        .images()
        .flatten_from(1)
        .unwrap()
        .narrow(1, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    first_pixels
        .iter()
        .map(|&x| (x * 255.0).round() as usize)
        .collect()
}

/// An MNIST-family dataset of 50 train items (ids 0..50) and 20 test items
/// (ids 100..120), loaded with identity normalisation.
pub fn load_small(dir: &std::path::Path, adjust: impl FnOnce(&mut DatasetConfig)) -> Dataset {
    let mut config = DatasetConfig {
        data_dir: Some(dir.to_path_buf()),
        normalization: Some((vec![0.0], vec![1.0])),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    adjust(&mut config);
    Dataset::load(&config, &Device::Cpu).unwrap()
}

pub fn small_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dir(dir.path(), 50, 20, true);
    dir
}

#[test]
fn validation_is_a_seeded_hold_out_disjoint_from_train() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |c| {
        c.validation = 10;
        c.split_seed = 3;
    });
    let validation = ids(dataset.validation().unwrap());
    let train = ids(dataset.train());
    // The hold-out is the first 10 of the seeded permutation, in file order.
    let mut expected: Vec<usize> = validation_permutation(50, 3)[..10].to_vec();
    expected.sort_unstable();
    assert_eq!(validation, expected);
    assert_eq!(train.len(), 40);
    assert!(
        train.windows(2).all(|w| w[0] < w[1]),
        "train keeps file order"
    );
    let mut all = [validation.clone(), train.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    // Labels travel with their images (label = id % 10).
    let labels = dataset
        .validation()
        .unwrap()
        .labels()
        .to_vec1::<u32>()
        .unwrap();
    let expected_labels: Vec<u32> = validation.iter().map(|&id| (id % 10) as u32).collect();
    assert_eq!(labels, expected_labels);

    // Same seed, same hold-out; another seed, another one.
    let again = load_small(dir.path(), |c| {
        c.validation = 10;
        c.split_seed = 3;
    });
    assert_eq!(ids(again.validation().unwrap()), validation);
    let other = load_small(dir.path(), |c| {
        c.validation = 10;
        c.split_seed = 4;
    });
    assert_ne!(ids(other.validation().unwrap()), validation);
}

#[test]
fn train_limit_applies_after_the_hold_out() {
    let dir = small_dir();
    let full = load_small(dir.path(), |c| c.validation = 10);
    let limited = load_small(dir.path(), |c| {
        c.validation = 10;
        c.train_limit = Some(5);
        c.test_limit = Some(7);
    });
    assert_eq!(
        ids(limited.validation().unwrap()),
        ids(full.validation().unwrap())
    );
    assert_eq!(ids(limited.train()), ids(full.train())[..5]);
    assert_eq!(ids(limited.test()), (100..107).collect::<Vec<_>>());
    // Limits beyond the split's size keep the whole split.
    let generous = load_small(dir.path(), |c| {
        c.train_limit = Some(1000);
        c.test_limit = Some(1000);
    });
    assert_eq!(ids(generous.train()), (0..50).collect::<Vec<_>>());
    assert_eq!(generous.test().len(), 20);
}

#[test]
fn mnist_normalisation_matches_the_closed_form() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |c| c.normalization = None);
    assert_eq!(
        dataset.normalization(),
        (&[0.1307f32][..], &[0.3081f32][..])
    );
    // Item 9, pixel 0 holds 9: x = (9 / 255 - 0.1307) / 0.3081.
    let x = dataset
        .train()
        .images()
        .get(9)
        .unwrap()
        .flatten_all()
        .unwrap();
    let x0 = x.get(0).unwrap().to_scalar::<f32>().unwrap();
    assert!((x0 - (9.0 / 255.0 - 0.1307) / 0.3081).abs() < 1e-6, "{x0}");
}

#[test]
fn subset_is_a_range_of_items() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |_| {});
    let subset = dataset.train().subset(10..15).unwrap();
    assert_eq!(ids(&subset), (10..15).collect::<Vec<_>>());
    assert_eq!(subset.labels().to_vec1::<u32>().unwrap(), [0, 1, 2, 3, 4]);
    assert!(dataset.train().subset(40..51).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = dataset.train().subset(5..4);
    assert!(reversed.is_err());
    assert!(dataset.train().subset(7..7).unwrap().is_empty());
}

//! Batches: sizes, seeded order, drop-last, labels travelling with images.

use noprop_data::{permutation, DataError};

use crate::splitting::{ids, load_small, small_dir};

/// Item ids and labels of every batch, in order.
fn collect(batches: noprop_data::Batches) -> (Vec<usize>, Vec<u32>, Vec<usize>) {
    let (mut all_ids, mut all_labels, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for batch in batches {
        let (images, labels) = batch.unwrap();
        assert_eq!(images.dims()[1..], [1, 28, 28]);
        assert_eq!(images.dims()[0], labels.dims()[0]);
        sizes.push(labels.dims()[0]);
        let split = noprop_data::Split::new(images, labels.clone()).unwrap();
        all_ids.extend(ids(&split));
        all_labels.extend(labels.to_vec1::<u32>().unwrap());
    }
    (all_ids, all_labels, sizes)
}

#[test]
fn shuffled_batches_follow_the_seeded_permutation() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |_| {});
    let train = dataset.train();
    let batches = train.batches(8, Some((9, 2))).unwrap();
    assert_eq!(batches.len(), 7);
    let (order, labels, sizes) = collect(batches);
    assert_eq!(sizes, [8, 8, 8, 8, 8, 8, 2], "last partial batch included");
    // Train ids are 0..50 in order, so the visiting order is the permutation.
    assert_eq!(order, permutation(50, 9, 2));
    let expected_labels: Vec<u32> = order.iter().map(|&id| (id % 10) as u32).collect();
    assert_eq!(labels, expected_labels);

    // Same seed and epoch, same order; next epoch, another order.
    assert_eq!(collect(train.batches(8, Some((9, 2))).unwrap()).0, order);
    let next_epoch = collect(train.batches(8, Some((9, 3))).unwrap()).0;
    assert_ne!(next_epoch, order);
    // The batch size does not change the order.
    assert_eq!(collect(train.batches(50, Some((9, 2))).unwrap()).0, order);
}

#[test]
fn unshuffled_batches_and_drop_last() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |_| {});
    let train = dataset.train();
    let (order, _, sizes) = collect(train.batches(16, None).unwrap());
    assert_eq!(order, (0..50).collect::<Vec<_>>());
    assert_eq!(sizes, [16, 16, 16, 2]);

    let dropped = train.batches(16, Some((1, 0))).unwrap().drop_last(true);
    assert_eq!(dropped.len(), 3);
    let (order, _, sizes) = collect(dropped);
    assert_eq!(sizes, [16, 16, 16]);
    assert_eq!(order, permutation(50, 1, 0)[..48]);
    // An exact multiple loses nothing.
    assert_eq!(train.batches(10, None).unwrap().drop_last(true).len(), 5);
}

#[test]
fn zero_batch_size_is_an_error() {
    let dir = small_dir();
    let dataset = load_small(dir.path(), |_| {});
    let err = dataset.test().batches(0, None).unwrap_err();
    assert!(matches!(err, DataError::InvalidArgument(_)), "{err}");
}

//! Small MNIST-family and CIFAR files written into temporary directories.

use std::io::Write;
use std::path::Path;

use noprop_data::idx::{encode_images, encode_labels};

/// Pixels of a 28x28 image whose first pixel is its index `id` (< 256), so
/// tests can recover which item ended up where.
pub fn mnist_image(id: usize) -> Vec<u8> {
    (0..784)
        .map(|k| {
            if k == 0 {
                id as u8
            } else {
                ((id * 7 + k) % 256) as u8
            }
        })
        .collect()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// IDX images file bytes for items `ids`.
pub fn idx_images(ids: std::ops::Range<usize>) -> Vec<u8> {
    let pixels: Vec<u8> = ids.clone().flat_map(mnist_image).collect();
    encode_images(ids.len(), 28, 28, &pixels)
}

/// IDX labels file bytes, label `id % 10` for each item.
pub fn idx_labels(ids: std::ops::Range<usize>) -> Vec<u8> {
    let labels: Vec<u8> = ids.map(|id| (id % 10) as u8).collect();
    encode_labels(&labels)
}

/// Writes the four MNIST-family files (train ids `0..n_train`, test ids
/// `100..100 + n_test`), gzip-compressed with `.gz` names when `gz`.
pub fn write_idx_dir(dir: &Path, n_train: usize, n_test: usize, gz: bool) {
    let files = [
        ("train-images-idx3-ubyte", idx_images(0..n_train)),
        ("train-labels-idx1-ubyte", idx_labels(0..n_train)),
        ("t10k-images-idx3-ubyte", idx_images(100..100 + n_test)),
        ("t10k-labels-idx1-ubyte", idx_labels(100..100 + n_test)),
    ];
    for (name, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// One CIFAR record: the label byte(s) then channel planes filled with
/// `base + c * 50` for channel `c`.
pub fn cifar_record(labels: &[u8], base: u8) -> Vec<u8> {
    let mut record = labels.to_vec();
    for c in 0..3u8 {
        record.extend(std::iter::repeat_n(base + c * 50, 1024));
    }
    record
}

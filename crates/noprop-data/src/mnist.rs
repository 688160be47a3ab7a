//! The MNIST family (MNIST, Fashion-MNIST, KMNIST): four IDX files per
//! dataset, read from a directory or, for MNIST, from the copy embedded in
//! the binary.
//!
//! Directory file names are the usual ones, each accepted gzip-compressed
//! (`.gz`) or raw, and with `.idx3-ubyte` for `-idx3-ubyte` as some mirrors
//! spell them: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`. When the directory has
//! a `SHA256SUMS` listing a file, the file is verified against it.
//!
//! The embedded MNIST (feature `embedded-mnist`; the `noprop` binary turns it on) is the four
//! `.gz` files of the repository's `data/mnist/`, compiled into the binary
//! with `include_bytes!` so that training works on a fresh machine from any
//! working directory. Their SHA-256 sums (`data/mnist/SHA256SUMS`, compiled in
//! too) are checked before every use. Without the feature, the repository's
//! `data/mnist/` directory is read at run time instead, if it still exists.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::{self, IdxImages, IdxLabels};
use crate::raw::{RawData, RawSplit};

/// The four IDX files of an MNIST-family dataset, by base name (no `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Base name of the training labels file.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Base name of the test images file.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Base name of the test labels file.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// MNIST-family images are 28x28.
const SIDE: usize = 28;
/// MNIST-family datasets have 10 classes.
const NUM_CLASSES: usize = 10;

/// File names accepted for the IDX file `base`, in the order tried.
fn candidate_names(base: &str) -> Vec<String> {
    let dotted = base.replacen("-idx", ".idx", 1);
    vec![
        format!("{base}.gz"),
        base.to_string(),
        format!("{dotted}.gz"),
        dotted,
    ]
}

fn find_idx(dir: &Path, base: &str) -> Result<PathBuf> {
    let names = candidate_names(base);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::file::find_file(dir, &names)
}

/// Loads an MNIST-family dataset from the four IDX files in `dir`.
pub fn load_idx_dir(dir: &Path) -> Result<RawData> {
    let train = load_idx_pair(&find_idx(dir, TRAIN_IMAGES)?, &find_idx(dir, TRAIN_LABELS)?)?;
    let test = load_idx_pair(&find_idx(dir, TEST_IMAGES)?, &find_idx(dir, TEST_LABELS)?)?;
    Ok(RawData { train, test })
}

/// Reads one images/labels file pair, checking 28x28 images, labels below
/// 10 and matching counts.
pub fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<RawSplit> {
    let images = idx::read_images(images_path)?;
    let labels = idx::read_labels(labels_path, NUM_CLASSES)?;
    pair(images_path, images, labels_path, labels)
}

fn pair(
    images_path: &Path,
    images: IdxImages,
    labels_path: &Path,
    labels: IdxLabels,
) -> Result<RawSplit> {
    if (images.rows, images.cols) != (SIDE, SIDE) {
        return Err(DataError::BadImageSize {
            path: images_path.to_path_buf(),
            rows: images.rows,
            cols: images.cols,
            expected_rows: SIDE,
            expected_cols: SIDE,
        });
    }
    if images.count != labels.labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: images.count,
            labels: labels.labels.len(),
        });
    }
    Ok(RawSplit {
        pixels: images.pixels,
        labels: labels.labels,
    })
}

/// The repository's `data/mnist/` directory, as seen when this crate was
/// compiled; it exists at run time only in a checkout.
pub fn repository_mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

/// The default MNIST: the embedded copy (feature `embedded-mnist`), else
/// the repository's `data/mnist/` directory.
pub fn load_default_mnist() -> Result<RawData> {
    #[cfg(feature = "embedded-mnist")]
    {
        embedded::load()
    }
    #[cfg(not(feature = "embedded-mnist"))]
    {
        let dir = repository_mnist_dir();
        if dir.is_dir() {
            load_idx_dir(&dir)
        } else {
            Err(DataError::DataDirRequired(crate::DatasetKind::Mnist))
        }
    }
}

/// The MNIST files compiled into the binary.
#[cfg(feature = "embedded-mnist")]
pub mod embedded {
    use super::*;
    use crate::file::{decompress_if_gzip, parse_sha256sums, verify_sha256};

    macro_rules! mnist_file {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../data/mnist/",
                    $name
                )) as &[u8],
            )
        };
    }

    /// `(file name, gzip bytes)` of the four embedded files.
    pub static FILES: [(&str, &[u8]); 4] = [
        mnist_file!("train-images-idx3-ubyte.gz"),
        mnist_file!("train-labels-idx1-ubyte.gz"),
        mnist_file!("t10k-images-idx3-ubyte.gz"),
        mnist_file!("t10k-labels-idx1-ubyte.gz"),
    ];

    /// The repository's `data/mnist/SHA256SUMS`.
    pub const SHA256SUMS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/mnist/SHA256SUMS"
    ));

    /// The name errors give an embedded file.
    pub fn display_path(name: &str) -> PathBuf {
        PathBuf::from(format!("embedded:data/mnist/{name}"))
    }

    /// The bytes of the embedded file `name`, verified against `SHA256SUMS`.
    pub fn verified_bytes(name: &str) -> Result<&'static [u8]> {
        let path = display_path(name);
        let (_, bytes) = FILES
            .iter()
            .find(|(file, _)| *file == name)
            .ok_or_else(|| DataError::MissingFile {
                candidates: vec![path.clone()],
            })?;
        let sums_path = display_path("SHA256SUMS");
        let expected = parse_sha256sums(&sums_path, SHA256SUMS)?
            .into_iter()
            .find(|(listed, _)| listed == name)
            .map(|(_, hex)| hex)
            .ok_or_else(|| DataError::BadFormat {
                path: sums_path,
                message: format!("no checksum listed for {name}"),
            })?;
        verify_sha256(&path, bytes, &expected)?;
        Ok(bytes)
    }

    fn split(images: &str, labels: &str) -> Result<RawSplit> {
        let images_path = display_path(images);
        let labels_path = display_path(labels);
        let image_bytes = decompress_if_gzip(&images_path, verified_bytes(images)?.to_vec())?;
        let label_bytes = decompress_if_gzip(&labels_path, verified_bytes(labels)?.to_vec())?;
        let parsed_images = idx::parse_images(&images_path, image_bytes)?;
        let parsed_labels = idx::parse_labels(&labels_path, label_bytes, NUM_CLASSES)?;
        pair(&images_path, parsed_images, &labels_path, parsed_labels)
    }

    /// The embedded MNIST, checksums verified.
    pub fn load() -> Result<RawData> {
        Ok(RawData {
            train: split(FILES[0].0, FILES[1].0)?,
            test: split(FILES[2].0, FILES[3].0)?,
        })
    }
}

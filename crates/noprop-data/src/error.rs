//! The data crate's error type.
//!
//! Every error about a file names that file (for the embedded MNIST, a path
//! of the form `embedded:data/mnist/<file>`), so a user can tell which input
//! is bad and why. Nothing in this crate panics on bad input.

use std::path::PathBuf;

/// Why loading or batching a dataset failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// None of the accepted file names exists.
    #[error("missing file: none of {} exists", display_paths(.candidates))]
    MissingFile {
        /// The paths tried, in order.
        candidates: Vec<PathBuf>,
    },

    /// The file exists but could not be read. (The I/O error is part of the
    /// message and not also a `source()`, so that error chains, as anyhow's
    /// `{:#}` prints them, do not say it twice.)
    #[error("{}: cannot read file: {cause}", .path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// The gzip stream is truncated or corrupt (the decoder's error is in
    /// the message, as for `Io`).
    #[error("{}: truncated or corrupt gzip stream: {cause}", .path.display())]
    Gzip {
        /// The gzip file.
        path: PathBuf,
        /// The decoder's error.
        cause: std::io::Error,
    },

    /// An IDX file starts with the wrong magic number.
    #[error("{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})", .path.display())]
    BadMagic {
        /// The IDX file.
        path: PathBuf,
        /// The magic number the file starts with.
        found: u32,
        /// The magic number expected.
        expected: u32,
        /// What kind of IDX file was expected (for example `IDX images, 3 dimensions`).
        what: &'static str,
    },

    /// The file is not as long as its header (or record size) says.
    #[error("{}: file is {actual} bytes long, expected {expected}", .path.display())]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        actual: usize,
        /// The length in bytes its header (or record size) implies.
        expected: usize,
    },

    /// Images of the wrong height/width for the dataset.
    #[error("{}: images are {rows}x{cols}, expected {expected_rows}x{expected_cols}", .path.display())]
    BadImageSize {
        /// The images file.
        path: PathBuf,
        /// Image height found.
        rows: usize,
        /// Image width found.
        cols: usize,
        /// Image height the dataset expects.
        expected_rows: usize,
        /// Image width the dataset expects.
        expected_cols: usize,
    },

    /// An images file and its labels file disagree on the item count.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of images in the images file.
        images: usize,
        /// Number of labels in the labels file.
        labels: usize,
    },

    /// A label is not below the dataset's number of classes.
    #[error(
        "{}: label {label} of item {index} is out of range (the dataset has {num_classes} classes)",
        .path.display()
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// Index of the offending item.
        index: usize,
        /// The offending label.
        label: u32,
        /// Number of classes in the dataset.
        num_classes: usize,
    },

    /// The file's SHA-256 is not the one its checksum list gives.
    #[error("{}: SHA-256 is {actual}, expected {expected}", .path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The expected SHA-256, lowercase hex.
        expected: String,
        /// The SHA-256 of its contents, lowercase hex.
        actual: String,
    },

    /// Any other malformed content (short header, zero items, bad checksum list).
    #[error("{}: {message}", .path.display())]
    BadFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A dataset name that [`crate::DatasetKind`] does not know.
    #[error(
        "unknown dataset {0:?}; expected one of mnist, fashion-mnist, kmnist, cifar10, cifar100, folder"
    )]
    UnknownDataset(String),

    /// The dataset is not embedded, so it must be read from a directory.
    #[error("dataset {0} needs a data directory (--data-dir)")]
    DataDirRequired(crate::DatasetKind),

    /// A [`crate::DatasetConfig`] that cannot be satisfied.
    #[error("invalid dataset configuration: {0}")]
    InvalidConfig(String),

    /// A bad argument to a split or batch method.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Fetching a dataset from the Hugging Face hub failed (feature `hub`).
    #[error("Hugging Face hub: {0}")]
    Hub(String),

    /// A tensor operation failed (for example, out of device memory).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, DataError>;

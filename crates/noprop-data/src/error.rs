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
    MissingFile { candidates: Vec<PathBuf> },

    /// The file exists but could not be read. (The I/O error is part of the
    /// message and not also a `source()`, so that error chains, as anyhow's
    /// `{:#}` prints them, do not say it twice.)
    #[error("{}: cannot read file: {cause}", .path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The gzip stream is truncated or corrupt (the decoder's error is in
    /// the message, as for `Io`).
    #[error("{}: truncated or corrupt gzip stream: {cause}", .path.display())]
    Gzip {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// An IDX file starts with the wrong magic number.
    #[error("{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})", .path.display())]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },

    /// The file is not as long as its header (or record size) says.
    #[error("{}: file is {actual} bytes long, expected {expected}", .path.display())]
    BadLength {
        path: PathBuf,
        actual: usize,
        expected: usize,
    },

    /// Images of the wrong height/width for the dataset.
    #[error("{}: images are {rows}x{cols}, expected {expected_rows}x{expected_cols}", .path.display())]
    BadImageSize {
        path: PathBuf,
        rows: usize,
        cols: usize,
        expected_rows: usize,
        expected_cols: usize,
    },

    /// An images file and its labels file disagree on the item count.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },

    /// A label is not below the dataset's number of classes.
    #[error(
        "{}: label {label} of item {index} is out of range (the dataset has {num_classes} classes)",
        .path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u32,
        num_classes: usize,
    },

    /// The file's SHA-256 is not the one its checksum list gives.
    #[error("{}: SHA-256 is {actual}, expected {expected}", .path.display())]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// Any other malformed content (short header, zero items, bad checksum list).
    #[error("{}: {message}", .path.display())]
    BadFormat { path: PathBuf, message: String },

    /// A dataset name that [`crate::DatasetKind`] does not know.
    #[error(
        "unknown dataset {0:?}; expected one of mnist, fashion-mnist, kmnist, cifar10, cifar100"
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

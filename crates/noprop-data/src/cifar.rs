//! The CIFAR-10 and CIFAR-100 binary formats.
//!
//! A file is a sequence of fixed-size records, no header. Each record is the
//! label byte(s) then a 32x32 colour image as 3072 bytes: the 1024 red
//! values, then green, then blue, each row-major. So the image bytes are
//! already `[3, 32, 32]` (CHW).
//!
//! - CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin`
//!   (train, 10,000 records each) and `test_batch.bin`; records are
//!   `<label 0..10> <3072 bytes>`.
//! - CIFAR-100 (`cifar-100-binary/`): `train.bin` (50,000) and `test.bin`
//!   (10,000); records are `<coarse label 0..20> <fine label 0..100> <3072 bytes>`.
//!   The fine label is used.
//!
//! `--data-dir` may point at the folder holding the `.bin` files or at its
//! parent (where the archive was extracted). Files may be gzip-compressed
//! (detected by content, see [`crate::file`]).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::file::{find_file, read_verified};
use crate::idx::check_label_range;
use crate::raw::{RawData, RawSplit};

/// Bytes of one 32x32 RGB image.
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;

/// The CIFAR-10 training batch file names, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The CIFAR-10 test batch file name.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// The CIFAR-100 file names (train, test).
pub const CIFAR100_FILES: [&str; 2] = ["train.bin", "test.bin"];

/// Reads one CIFAR-10 batch file.
pub fn read_cifar10_file(path: &Path) -> Result<RawSplit> {
    parse_cifar10(path, &read_verified(path)?)
}

/// Reads one CIFAR-100 file (fine labels).
pub fn read_cifar100_file(path: &Path) -> Result<RawSplit> {
    parse_cifar100(path, &read_verified(path)?)
}

/// Parses the (decompressed) bytes of a CIFAR-10 batch file.
pub fn parse_cifar10(path: &Path, bytes: &[u8]) -> Result<RawSplit> {
    let (_, fine, pixels) = split_records(path, bytes, 1)?;
    check_label_range(path, &fine, 10)?;
    Ok(RawSplit {
        pixels,
        labels: fine,
    })
}

/// Parses the (decompressed) bytes of a CIFAR-100 file, keeping the fine labels.
pub fn parse_cifar100(path: &Path, bytes: &[u8]) -> Result<RawSplit> {
    let (coarse, fine, pixels) = split_records(path, bytes, 2)?;
    check_label_range(path, &coarse, 20)?;
    check_label_range(path, &fine, 100)?;
    Ok(RawSplit {
        pixels,
        labels: fine,
    })
}

/// Splits records of `label_bytes` label bytes + one image into (coarse
/// labels, fine labels, pixels); with one label byte the coarse list is empty.
fn split_records(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let record = label_bytes + CIFAR_IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(DataError::BadFormat {
            path: path.to_path_buf(),
            message: "file is empty: it holds no records".to_string(),
        });
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::BadFormat {
            path: path.to_path_buf(),
            message: format!(
                "file is {} bytes long, not a whole number of {record}-byte records \
                 ({label_bytes} label byte(s) + a 3x32x32 image)",
                bytes.len()
            ),
        });
    }
    let count = bytes.len() / record;
    let mut coarse = Vec::with_capacity(if label_bytes == 2 { count } else { 0 });
    let mut fine = Vec::with_capacity(count);
    let mut pixels = Vec::with_capacity(count * CIFAR_IMAGE_BYTES);
    for chunk in bytes.chunks_exact(record) {
        if label_bytes == 2 {
            coarse.push(chunk[0]);
        }
        fine.push(chunk[label_bytes - 1]);
        pixels.extend_from_slice(&chunk[label_bytes..]);
    }
    Ok((coarse, fine, pixels))
}

/// `dir` itself, or `dir/<sub>` when the files sit in the archive's folder.
fn resolve_dir(dir: &Path, sub: &str, probe: &str) -> PathBuf {
    let nested = dir.join(sub);
    if !dir.join(probe).is_file() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Loads CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`).
pub fn load_cifar10_dir(dir: &Path) -> Result<RawData> {
    let dir = resolve_dir(dir, "cifar-10-batches-bin", CIFAR10_TRAIN_FILES[0]);
    let mut train = RawSplit::default();
    for name in CIFAR10_TRAIN_FILES {
        train.extend(read_cifar10_file(&find_file(&dir, &[name])?)?);
    }
    let test = read_cifar10_file(&find_file(&dir, &[CIFAR10_TEST_FILE])?)?;
    Ok(RawData { train, test })
}

/// Loads CIFAR-100 from `dir` (or `dir/cifar-100-binary`).
pub fn load_cifar100_dir(dir: &Path) -> Result<RawData> {
    let dir = resolve_dir(dir, "cifar-100-binary", CIFAR100_FILES[0]);
    let train = read_cifar100_file(&find_file(&dir, &[CIFAR100_FILES[0]])?)?;
    let test = read_cifar100_file(&find_file(&dir, &[CIFAR100_FILES[1]])?)?;
    Ok(RawData { train, test })
}

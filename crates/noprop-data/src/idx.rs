//! The IDX file format of MNIST, Fashion-MNIST and KMNIST.
//!
//! An IDX file is a big-endian header followed by the items, row-major:
//!
//! | bytes         | content                                             |
//! |---------------|-----------------------------------------------------|
//! | 0..4          | magic `00 00 08 D`: unsigned bytes, `D` dimensions  |
//! | 4..4+4D       | the `D` dimension sizes, `u32` big-endian           |
//! | 4+4D..        | `dim_0 * ... * dim_{D-1}` unsigned bytes            |
//!
//! Images are `0x00000803` (`[N, rows, cols]`), labels `0x00000801` (`[N]`).
//! The reader checks the magic, that no dimension is zero, that the file is
//! exactly as long as the header says, and (for labels) that every label is
//! below the number of classes. Files may be gzip-compressed.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::file::read_verified;

/// Magic number of an IDX file of unsigned-byte images `[N, rows, cols]`.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels `[N]`.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Grey-level images read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images `N`.
    pub count: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `N * rows * cols` grey levels, image-major then row-major.
    pub pixels: Vec<u8>,
}

/// Class labels read from an IDX file, each below the number of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxLabels {
    /// One label per item, in file order.
    pub labels: Vec<u8>,
}

/// Reads an images file (gzip or raw), verified against a `SHA256SUMS`
/// next to it when one lists it.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(path, read_verified(path)?)
}

/// Reads a labels file (gzip or raw), verified against a `SHA256SUMS`
/// next to it when one lists it; every label must be below `num_classes`.
pub fn read_labels(path: &Path, num_classes: usize) -> Result<IdxLabels> {
    parse_labels(path, read_verified(path)?, num_classes)
}

/// Parses the (decompressed) bytes of an images file; `path` names it in errors.
pub fn parse_images(path: &Path, bytes: Vec<u8>) -> Result<IdxImages> {
    let (dims, pixels) = split_header(path, bytes, IMAGES_MAGIC, "IDX images, 3 dimensions")?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Parses the (decompressed) bytes of a labels file; `path` names it in errors.
pub fn parse_labels(path: &Path, bytes: Vec<u8>, num_classes: usize) -> Result<IdxLabels> {
    let (_, labels) = split_header(path, bytes, LABELS_MAGIC, "IDX labels, 1 dimension")?;
    check_label_range(path, &labels, num_classes)?;
    Ok(IdxLabels { labels })
}

/// Every label below `num_classes`, or an error naming the first that is not.
pub(crate) fn check_label_range(path: &Path, labels: &[u8], num_classes: usize) -> Result<()> {
    match labels
        .iter()
        .position(|&label| usize::from(label) >= num_classes)
    {
        None => Ok(()),
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: u32::from(labels[index]),
            num_classes,
        }),
    }
}

/// Validates the header against `magic` and the file length, and returns
/// the dimensions and the data with the header removed.
fn split_header(
    path: &Path,
    mut bytes: Vec<u8>,
    magic: u32,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad_format = |message: String| DataError::BadFormat {
        path: path.to_path_buf(),
        message,
    };
    let read_u32 = |offset: usize| -> Option<u32> {
        let word = bytes.get(offset..offset + 4)?;
        Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
    };
    let found = read_u32(0).ok_or_else(|| {
        bad_format(format!(
            "file is {} bytes long, too short for an IDX header",
            bytes.len()
        ))
    })?;
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            what,
        });
    }
    // The low byte of the magic is the number of dimensions.
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let dims = (0..ndims)
        .map(|i| read_u32(4 + 4 * i).map(|d| d as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            bad_format(format!(
                "file is {} bytes long, too short for a {header_len}-byte IDX header",
                bytes.len()
            ))
        })?;
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(bad_format(format!(
            "dimension {axis} of {dims:?} is zero: the file holds no items"
        )));
    }
    let data_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(header_len))
        .ok_or_else(|| bad_format(format!("dimensions {dims:?} overflow the address space")))?;
    if bytes.len() != data_len {
        return Err(DataError::BadLength {
            path: path.to_path_buf(),
            actual: bytes.len(),
            expected: data_len,
        });
    }
    bytes.drain(..header_len);
    Ok((dims, bytes))
}

/// The bytes of an IDX file holding `images` (`[count, rows, cols]`); used
/// by tests to write small files, and by anyone converting data to IDX.
pub fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + pixels.len());
    bytes.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for dim in [count, rows, cols] {
        bytes.extend_from_slice(&(dim as u32).to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

/// The bytes of an IDX file holding `labels`.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + labels.len());
    bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

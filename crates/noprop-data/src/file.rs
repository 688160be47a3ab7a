//! Reading input files: locating them, gzip detection and checksums.
//!
//! A file is treated as gzip when its bytes start with the gzip magic
//! `1f 8b` or its name ends in `.gz` (then it must be gzip). Anything else is
//! read as raw bytes. IDX files start with `00 00`, so the two never collide.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most bytes a gzip file may decompress to (EMNIST ByClass, the
/// largest file of the supported datasets, is 547 MB): a small hostile file
/// that inflates without bound is an error, not an exhausted memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 2 << 30;

/// The first of `names` that exists in `dir`, or [`DataError::MissingFile`]
/// listing every candidate.
pub fn find_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = names.iter().map(|name| dir.join(name)).collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(DataError::MissingFile { candidates })
}

/// The bytes of `path`, decompressed when it is gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    decompress_if_gzip(path, read_bytes(path)?)
}

/// The stored bytes of `path`; a missing file is [`DataError::MissingFile`].
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                candidates: vec![path.to_path_buf()],
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                cause: source,
            }
        }
    })
}

/// `bytes` decompressed when they are gzip (see the module doc), else as is.
/// `path` only names the input in errors.
pub fn decompress_if_gzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    decompress_within(path, bytes, MAX_DECOMPRESSED_BYTES)
}

fn decompress_within(path: &Path, bytes: Vec<u8>, max_bytes: usize) -> Result<Vec<u8>> {
    let named_gz = path.extension().is_some_and(|ext| ext == "gz");
    let looks_gz = bytes.starts_with(&GZIP_MAGIC);
    if !looks_gz && !named_gz {
        return Ok(bytes);
    }
    if !looks_gz {
        return Err(DataError::Gzip {
            path: path.to_path_buf(),
            cause: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is named .gz but does not start with the gzip magic 1f 8b",
            ),
        });
    }
    // A typical IDX file compresses about 5x; the guess only sizes the buffer.
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(5).min(max_bytes));
    flate2::read::GzDecoder::new(bytes.as_slice())
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|cause| DataError::Gzip {
            path: path.to_path_buf(),
            cause,
        })?;
    if out.len() > max_bytes {
        return Err(DataError::Gzip {
            path: path.to_path_buf(),
            cause: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "it decompresses to more than {max_bytes} bytes, beyond any dataset file this reader takes"
                ),
            ),
        });
    }
    Ok(out)
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a `sha256sum` listing (`<64 hex digits>  <file name>` per line,
/// an optional `*` before the name for binary mode) into (name, hex) pairs.
/// `path` only names the listing in errors.
pub fn parse_sha256sums(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad_line = || DataError::BadFormat {
            path: path.to_path_buf(),
            message: format!("line {} is not `<sha256>  <file name>`", line_index + 1),
        };
        let (hex, name) = line.split_once(char::is_whitespace).ok_or_else(bad_line)?;
        let name = name.trim_start().trim_start_matches('*');
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(bad_line());
        }
        entries.push((name.to_string(), hex.to_ascii_lowercase()));
    }
    Ok(entries)
}

/// Checks `bytes` against the expected lowercase hex SHA-256.
pub fn verify_sha256(path: &Path, bytes: &[u8], expected_hex: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual == expected_hex {
        Ok(())
    } else {
        Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected_hex.to_string(),
            actual,
        })
    }
}

/// Reads `path` (decompressing gzip), first verifying its stored bytes
/// against `SHA256SUMS` in the same directory when that listing exists and
/// names the file. Files not listed are read unverified.
pub fn read_verified(path: &Path) -> Result<Vec<u8>> {
    let sums_path = path.with_file_name("SHA256SUMS");
    let expected = match std::fs::read_to_string(&sums_path) {
        Ok(text) => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            parse_sha256sums(&sums_path, &text)?
                .into_iter()
                .find(|(listed, _)| listed == name)
                .map(|(_, hex)| hex)
        }
        Err(_) => None,
    };
    let Some(expected) = expected else {
        return read_maybe_gzip(path);
    };
    let bytes = read_bytes(path)?;
    verify_sha256(path, &bytes, &expected)?;
    decompress_if_gzip(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_output_is_bounded() {
        let path = Path::new("bomb.gz");
        // 1 MB of zeros compresses to about a kilobyte.
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096);
        let exact = decompress_within(path, bomb.clone(), 1 << 20).unwrap();
        assert_eq!(exact.len(), 1 << 20);
        let e = decompress_within(path, bomb, (1 << 20) - 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.gz") && e.contains("more than 1048575 bytes"),
            "{e}"
        );
        // Not gzip at all: passed through.
        let raw = decompress_if_gzip(Path::new("raw"), vec![0, 0, 8, 3]).unwrap();
        assert_eq!(raw, vec![0, 0, 8, 3]);
    }
}

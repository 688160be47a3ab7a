//! Generated-input property tests of the file parsers: valid IDX, CIFAR
//! and gzip files, mutated at random (bytes flipped, header words replaced
//! with extreme values, truncated, extended), must parse or fail with an
//! error naming the file; never panic, and never return data that
//! disagrees with the header.
//!
//! Each parser gets a fixed number of cases from a fixed seed, so the test
//! is deterministic and takes about a second; `NOPROP_FUZZ_CASES=N` runs
//! more, and `NOPROP_FUZZ_SECONDS=S` runs each parser for S seconds instead
//! (it prints how many cases ran; the long runs happen outside CI). Inputs
//! that once failed belong in `REGRESSIONS` below.

use std::io::Write;
use std::path::Path;

use noprop_data::cifar::{parse_cifar10, parse_cifar100};
use noprop_data::file::decompress_if_gzip;
use noprop_data::idx::{parse_images, parse_labels, IdxImages, IMAGES_MAGIC, LABELS_MAGIC};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CIFAR_IMAGE: usize = 3 * 32 * 32;

fn cases() -> usize {
    std::env::var("NOPROP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [count, rows, cols] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend((0..count * rows * cols).map(|i| (i * 7) as u8));
    bytes
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut bytes = LABELS_MAGIC.to_be_bytes().to_vec();
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend((0..count).map(|i| (i % 10) as u8));
    bytes
}

fn cifar(records: usize, label_bytes: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for r in 0..records {
        for _ in 0..label_bytes {
            bytes.push((r % 10) as u8);
        }
        bytes.extend((0..CIFAR_IMAGE).map(|i| (i + r) as u8));
    }
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// One random change: a flipped byte, an extreme big-endian word at a
/// header position, a truncation, or appended bytes.
fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    match rng.random_range(0..4) {
        0 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let extremes = [0u32, 1, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff];
            let word = extremes[rng.random_range(0..extremes.len())].to_be_bytes();
            let at = 4 * rng.random_range(0..4usize);
            if bytes.len() < at + 4 {
                bytes.resize(at + 4, 0);
            }
            bytes[at..at + 4].copy_from_slice(&word);
        }
        2 => {
            let keep = rng.random_range(0..=bytes.len());
            bytes.truncate(keep);
        }
        _ => {
            let extra = rng.random_range(1..64);
            bytes.extend((0..extra).map(|_| rng.random::<u8>()));
        }
    }
}

/// Runs `check` on `cases()` mutants of `valid` (1 to 3 changes each);
/// `check` says whether the parser accepted the mutant. Both outcomes must
/// occur, or the mutations miss the parser's checks (or its happy path).
fn fuzz(seed: u64, valid: &[u8], mut check: impl FnMut(&[u8]) -> bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut accepted = 0;
    let seconds: Option<f64> = std::env::var("NOPROP_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let start = std::time::Instant::now();
    let mut n = 0;
    while match seconds {
        Some(s) => start.elapsed().as_secs_f64() < s,
        None => n < cases(),
    } {
        n += 1;
        let mut bytes = valid.to_vec();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut bytes, &mut rng);
        }
        accepted += usize::from(check(&bytes));
    }
    if seconds.is_some() {
        eprintln!(
            "seed {seed}: {n} mutants in {:.0} s, {accepted} accepted",
            start.elapsed().as_secs_f64()
        );
    }
    assert!(
        accepted > 0 && accepted < n,
        "{accepted} of {n} mutants accepted"
    );
}

/// Asserts that the error names `path`; false (the input was refused).
fn names_the_file(e: &noprop_data::DataError, path: &Path) -> bool {
    let message = e.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name {}: {message}",
        path.display()
    );
    false
}

/// Whether the IDX images were accepted; if so their pixels must match
/// their header, if not the error must name the file.
fn images_accepted(path: &Path, result: noprop_data::Result<IdxImages>) -> bool {
    match result {
        Ok(images) => {
            assert_eq!(
                images.pixels.len(),
                images.count * images.rows * images.cols
            );
            true
        }
        Err(e) => names_the_file(&e, path),
    }
}

/// Inputs that must be refused cleanly by every parser (hand-made edge
/// cases; add here any input that ever fails a parser).
const REGRESSIONS: &[&[u8]] = &[
    &[0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x1f, 0x8b],
];

#[test]
fn idx_images_parse_or_fail_cleanly() {
    let path = Path::new("fuzz-images.idx");
    fuzz(1, &idx_images(3, 4, 5), |bytes| {
        images_accepted(path, parse_images(path, bytes.to_vec()))
    });
}

#[test]
fn idx_labels_parse_or_fail_cleanly() {
    let path = Path::new("fuzz-labels.idx");
    fuzz(2, &idx_labels(12), |bytes| {
        match parse_labels(path, bytes.to_vec(), 10) {
            Ok(labels) => {
                assert!(labels.labels.iter().all(|&l| l < 10));
                true
            }
            Err(e) => names_the_file(&e, path),
        }
    });
}

#[test]
fn cifar_parses_or_fails_cleanly() {
    let path = Path::new("fuzz-cifar.bin");
    fuzz(3, &cifar(2, 1), |bytes| match parse_cifar10(path, bytes) {
        Ok(split) => {
            assert_eq!(split.pixels.len(), split.labels.len() * CIFAR_IMAGE);
            assert!(split.labels.iter().all(|&l| l < 10));
            true
        }
        Err(e) => names_the_file(&e, path),
    });
    fuzz(4, &cifar(2, 2), |bytes| match parse_cifar100(path, bytes) {
        Ok(split) => {
            assert_eq!(split.pixels.len(), split.labels.len() * CIFAR_IMAGE);
            true
        }
        Err(e) => names_the_file(&e, path),
    });
}

#[test]
fn gzip_framed_files_decompress_or_fail_cleanly() {
    let path = Path::new("fuzz-images.idx.gz");
    fuzz(
        5,
        &gzip(&idx_images(3, 4, 5)),
        |bytes| match decompress_if_gzip(path, bytes.to_vec()) {
            Ok(inner) => images_accepted(path, parse_images(path, inner)),
            Err(e) => names_the_file(&e, path),
        },
    );
}

#[test]
fn regressions_fail_cleanly() {
    let path = Path::new("regression.gz");
    for bytes in REGRESSIONS {
        for result in [
            parse_images(path, bytes.to_vec()).map(drop),
            parse_labels(path, bytes.to_vec(), 10).map(drop),
            parse_cifar10(path, bytes).map(drop),
            parse_cifar100(path, bytes).map(drop),
            decompress_if_gzip(path, bytes.to_vec()).map(drop),
        ] {
            if let Err(e) = result {
                names_the_file(&e, path);
            }
        }
    }
}

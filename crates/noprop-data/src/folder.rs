//! Image folders: the layout of torchvision's `ImageFolder`, one directory
//! per class, read into a [`RawData`] with the class names.
//!
//! Two layouts are accepted:
//! - `DIR/train/<class>/*` and `DIR/test/<class>/*`: the given split;
//! - `DIR/<class>/*` (no `train` directory): one tree, from which
//!   [`FolderOptions::test_fraction`] of each class (rounded up, at least one
//!   image of every class with two or more) is held out as the test split,
//!   chosen by a permutation seeded with [`FolderOptions::split_seed`].
//!
//! Classes are the subdirectories, sorted by name (label `i` is the `i`-th
//! name); hidden entries (a leading `.`) are skipped, and in a class
//! directory only `.png`, `.jpg` and `.jpeg` files (any case) are images:
//! anything else is ignored. Images are listed sorted by file name, so the
//! same folder always gives the same data. The test split's classes must be
//! among the training split's.
//!
//! Every image's header is read first (its size and colour), then each
//! image is decoded once, converted to `channels` (grey: luma;
//! colour: RGB) and resized to `image_size` x `image_size` (bilinear, the
//! aspect ratio is not kept: the models take square images) when a size is
//! given; without one, every image must already have the same square size.
//! Without `channels`, the data is colour when any training image is. An
//! image that cannot be read stops the load with an error naming it (a
//! dataset never shrinks silently), as does an empty class, a class name
//! that is not valid UTF-8, more than 256 classes (labels are bytes), or an
//! image larger than [`MAX_IMAGE_SIDE`] per side (checked from its header
//! before its pixels are allocated).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::DynamicImage;

use crate::error::{DataError, Result};
use crate::raw::{RawData, RawSplit};
use crate::shuffle::validation_permutation;

/// The widest and tallest image decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one decoded image may take.
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;
/// Labels are stored as bytes.
pub const MAX_CLASSES: usize = 256;

/// How to read an image folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    /// Resize every image to this side; `None`: keep their (common) size.
    pub image_size: Option<usize>,
    /// 1 (grey) or 3 (RGB); `None`: RGB if any training image has colour.
    pub channels: Option<usize>,
    /// One-tree layout: the fraction of each class held out for testing.
    pub test_fraction: f64,
    /// One-tree layout: the seed of the hold-out.
    pub split_seed: u64,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self {
            image_size: None,
            channels: None,
            test_fraction: 0.2,
            split_seed: 0,
        }
    }
}

/// An image folder, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderData {
    /// The pixels `[N, C, S, S]` and labels of both splits.
    pub raw: RawData,
    /// `(C, S, S)` of one image.
    pub image_shape: (usize, usize, usize),
    /// The class names; label `i` is `class_names[i]`.
    pub class_names: Vec<String>,
}

/// The image files of one class directory, sorted by name.
fn class_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    images.sort();
    Ok(images)
}

/// The non-hidden entries of `dir`.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |cause: std::io::Error| DataError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    Ok(entries)
}

/// `(class name, its images)` of a tree, sorted by class name.
fn tree(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for path in list(dir)?.into_iter().filter(|p| p.is_dir()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad(&path, "a class directory's name must be valid UTF-8".into()))?
            .to_string();
        let images = class_images(&path)?;
        if images.is_empty() {
            return Err(bad(
                &path,
                "class directory holds no .png, .jpg or .jpeg image".into(),
            ));
        }
        classes.push((name, images));
    }
    classes.sort();
    if classes.is_empty() {
        return Err(bad(
            dir,
            "no class directories (expected DIR/<class>/*.png, or DIR/train/<class>/ and DIR/test/<class>/)".into(),
        ));
    }
    Ok(classes)
}

fn bad(path: &Path, message: String) -> DataError {
    DataError::BadFormat {
        path: path.to_path_buf(),
        message,
    }
}

/// A reader of one image, with the size limits that keep a hostile header
/// from allocating without bound.
fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let io = |cause: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    Ok(reader)
}

fn unreadable(path: &Path, e: image::ImageError) -> DataError {
    match e {
        image::ImageError::Limits(_) => bad(
            path,
            format!(
                "the image is too large to decode ({e}); at most {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} pixels and {} MiB",
                MAX_IMAGE_BYTES >> 20
            ),
        ),
        e => bad(path, format!("not a readable image (PNG or JPEG expected): {e}")),
    }
}

/// An image's `(width, height)` and whether it has colour, from its header
/// alone (no pixels decoded).
fn header(path: &Path) -> Result<((u32, u32), bool)> {
    use image::ImageDecoder;
    let decoder = reader(path)?
        .into_decoder()
        .map_err(|e| unreadable(path, e))?;
    Ok((decoder.dimensions(), decoder.color_type().has_color()))
}

/// Decodes one image (PNG or JPEG), its header's size checked against
/// [`MAX_IMAGE_SIDE`] and [`MAX_IMAGE_BYTES`] before its pixels are
/// allocated; errors name the file.
pub fn decode_image(path: &Path) -> Result<DynamicImage> {
    reader(path)?.decode().map_err(|e| unreadable(path, e))
}

/// Image files with their labels, in the order they are stored.
type Listed = Vec<(PathBuf, u8)>;

/// Lists both splits and the class names.
fn layout(dir: &Path, options: &FolderOptions) -> Result<(Listed, Listed, Vec<String>)> {
    if !dir.is_dir() {
        return Err(bad(dir, "no such directory".into()));
    }
    let train_dir = dir.join("train");
    if train_dir.is_dir() {
        let train = tree(&train_dir)?;
        let test_dir = dir.join("test");
        if !test_dir.is_dir() {
            return Err(bad(
                dir,
                "has a train/ directory but no test/ directory beside it".into(),
            ));
        }
        let test = tree(&test_dir)?;
        let names: Vec<String> = train.iter().map(|(n, _)| n.clone()).collect();
        check_class_count(&train_dir, names.len())?;
        let label_of = |name: &str| names.iter().position(|n| n == name);
        let mut test_listed = Vec::new();
        for (name, images) in test {
            let label = label_of(&name).ok_or_else(|| {
                bad(
                    &test_dir.join(&name),
                    format!(
                        "test class {name:?} has no training directory in {}",
                        train_dir.display()
                    ),
                )
            })?;
            test_listed.extend(images.into_iter().map(|p| (p, label as u8)));
        }
        let train_listed = train
            .into_iter()
            .enumerate()
            .flat_map(|(label, (_, images))| images.into_iter().map(move |p| (p, label as u8)))
            .collect();
        return Ok((train_listed, test_listed, names));
    }
    if !(options.test_fraction > 0.0 && options.test_fraction < 1.0) {
        return Err(DataError::InvalidConfig(format!(
            "test_fraction {} must be between 0 and 1 (exclusive) to hold out a test split from {}",
            options.test_fraction,
            dir.display()
        )));
    }
    let classes = tree(dir)?;
    check_class_count(dir, classes.len())?;
    let names = classes.iter().map(|(n, _)| n.clone()).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (label, (_, images)) in classes.into_iter().enumerate() {
        let n = images.len();
        let held_out = if n < 2 {
            0
        } else {
            ((n as f64 * options.test_fraction).ceil() as usize).clamp(1, n - 1)
        };
        // Each class its own stream of the split seed, so adding images to
        // one class does not reshuffle the others.
        let order = validation_permutation(n, options.split_seed.wrapping_add(label as u64));
        let mut is_test = vec![false; n];
        for &i in &order[..held_out] {
            is_test[i] = true;
        }
        for (image, test_image) in images.into_iter().zip(is_test) {
            if test_image {
                test.push((image, label as u8));
            } else {
                train.push((image, label as u8));
            }
        }
    }
    Ok((train, test, names))
}

fn check_class_count(dir: &Path, n: usize) -> Result<()> {
    if n < 2 {
        return Err(bad(
            dir,
            format!("{n} class directory: at least 2 classes are needed"),
        ));
    }
    if n > MAX_CLASSES {
        return Err(bad(
            dir,
            format!("{n} class directories: at most {MAX_CLASSES} classes are supported"),
        ));
    }
    Ok(())
}

/// Reads the image folder at `dir`.
pub fn load_folder(dir: &Path, options: &FolderOptions) -> Result<FolderData> {
    if let Some(c) = options.channels {
        if c != 1 && c != 3 {
            return Err(DataError::InvalidConfig(format!(
                "channels = {c}: images are read as grey (1) or RGB (3)"
            )));
        }
    }
    if let Some(s) = options.image_size {
        if s == 0 || s > MAX_IMAGE_SIDE as usize {
            return Err(DataError::InvalidConfig(format!(
                "image_size = {s}: must be between 1 and {MAX_IMAGE_SIDE}"
            )));
        }
    }
    let (train, test, class_names) = layout(dir, options)?;
    // Headers first (sizes, colour), so that an image is decoded only when
    // its bytes are needed and memory holds one decoded image at a time.
    let headers = |listed: &Listed| -> Result<Vec<((u32, u32), bool)>> {
        listed.iter().map(|(p, _)| header(p)).collect()
    };
    let train_headers = headers(&train)?;
    let test_headers = headers(&test)?;
    let channels = options.channels.unwrap_or_else(|| {
        if train_headers.iter().any(|(_, colour)| *colour) {
            3
        } else {
            1
        }
    });
    let side = match options.image_size {
        Some(s) => s,
        None => common_side(&train, &train_headers, &test, &test_headers)?,
    };
    let split = |listed: &Listed| -> Result<RawSplit> {
        let mut pixels = Vec::with_capacity(listed.len() * channels * side * side);
        for (path, _) in listed {
            pixels.extend(to_chw(decode_image(path)?, channels, side as u32));
        }
        Ok(RawSplit {
            pixels,
            labels: listed.iter().map(|(_, l)| *l).collect(),
        })
    };
    Ok(FolderData {
        raw: RawData {
            train: split(&train)?,
            test: split(&test)?,
        },
        image_shape: (channels, side, side),
        class_names,
    })
}

/// The one square size of every image, or an error naming two that differ.
fn common_side(
    train: &Listed,
    train_headers: &[((u32, u32), bool)],
    test: &Listed,
    test_headers: &[((u32, u32), bool)],
) -> Result<usize> {
    let mut all = train
        .iter()
        .zip(train_headers)
        .chain(test.iter().zip(test_headers))
        .map(|((path, _), (size, _))| (path, *size));
    let (first_path, size) = all.next().expect("a tree holds at least one image");
    if size.0 != size.1 {
        return Err(bad(
            first_path,
            format!(
                "is {}x{} pixels: the models take square images, so set the image size (data.image_size) to resize them",
                size.0, size.1
            ),
        ));
    }
    for (path, (width, height)) in all {
        if (width, height) != size {
            return Err(bad(
                path,
                format!(
                    "is {width}x{height} pixels but {} is {}x{}: set the image size (data.image_size) to resize them all",
                    first_path.display(),
                    size.0,
                    size.1
                ),
            ));
        }
    }
    Ok(size.0 as usize)
}

/// `image` as `[C, S, S]` bytes (`channels` 1: luma, else RGB), resized to
/// `side` x `side` (bilinear) if it is not that size already.
pub fn to_chw(image: DynamicImage, channels: usize, side: u32) -> Vec<u8> {
    let resize = |w: u32, h: u32| w != side || h != side;
    let interleaved = if channels == 1 {
        let grey = image.to_luma8();
        if resize(grey.width(), grey.height()) {
            image::imageops::resize(&grey, side, side, FilterType::Triangle).into_raw()
        } else {
            grey.into_raw()
        }
    } else {
        let rgb = image.to_rgb8();
        if resize(rgb.width(), rgb.height()) {
            image::imageops::resize(&rgb, side, side, FilterType::Triangle).into_raw()
        } else {
            rgb.into_raw()
        }
    };
    let plane = (side * side) as usize;
    let mut chw = vec![0u8; interleaved.len()];
    for (i, &p) in interleaved.iter().enumerate() {
        chw[(i % channels) * plane + i / channels] = p;
    }
    chw
}

/// Per-channel `(mean, std)` of `pixels / 255` over a split `[N, C, H, W]`
/// (population standard deviation, accumulated in f64): the normalisation
/// of a dataset without published statistics.
pub fn channel_statistics(split: &RawSplit, channels: usize) -> (Vec<f32>, Vec<f32>) {
    let n = split.len();
    let plane = if n == 0 || channels == 0 {
        0
    } else {
        split.pixels.len() / (n * channels)
    };
    let mut sums = vec![(0f64, 0f64, 0u64); channels];
    for (i, &p) in split.pixels.iter().enumerate() {
        let c = (i / plane.max(1)) % channels;
        let x = f64::from(p) / 255.0;
        sums[c].0 += x;
        sums[c].1 += x * x;
        sums[c].2 += 1;
    }
    let mut mean = Vec::with_capacity(channels);
    let mut std = Vec::with_capacity(channels);
    for (sum, sum_sq, count) in sums {
        let count = count.max(1) as f64;
        let m = sum / count;
        let var = (sum_sq / count - m * m).max(0.0);
        mean.push(m as f32);
        // A constant channel has no spread: 1 keeps the inputs finite.
        std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
    }
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w` x `h` image whose pixels are `value` (grey) or `value` in red
    /// only (colour).
    fn write(path: &Path, w: u32, h: u32, value: u8, colour: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if colour {
            image::RgbImage::from_pixel(w, h, image::Rgb([value, 0, 0]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_pixel(w, h, image::Luma([value]))
                .save(path)
                .unwrap();
        }
    }

    #[test]
    fn train_and_test_trees_give_labels_by_sorted_class_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (split, n) in [("train", 3), ("test", 1)] {
            for (class, value) in [("dog", 200u8), ("cat", 100)] {
                for i in 0..n {
                    write(
                        &root.join(format!("{split}/{class}/{i}.png")),
                        4,
                        4,
                        value,
                        false,
                    );
                }
            }
        }
        std::fs::write(root.join("train/cat/notes.txt"), "ignored").unwrap();
        let data = load_folder(root, &FolderOptions::default()).unwrap();
        assert_eq!(data.class_names, ["cat", "dog"]);
        assert_eq!(data.image_shape, (1, 4, 4));
        assert_eq!(data.raw.train.labels, [0, 0, 0, 1, 1, 1]);
        assert_eq!(data.raw.test.labels, [0, 1]);
        assert_eq!(data.raw.train.pixels.len(), 6 * 16);
        assert!(data.raw.train.pixels[..48].iter().all(|&p| p == 100));
        assert!(data.raw.test.pixels[16..].iter().all(|&p| p == 200));
    }

    #[test]
    fn one_tree_holds_out_a_seeded_fraction_of_each_class() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            for i in 0..10 {
                write(
                    &dir.path().join(format!("{class}/{i:02}.png")),
                    2,
                    2,
                    i * 20,
                    false,
                );
            }
        }
        let options = FolderOptions {
            test_fraction: 0.25,
            ..FolderOptions::default()
        };
        let data = load_folder(dir.path(), &options).unwrap();
        // ceil(10 x 0.25) = 3 per class.
        assert_eq!(data.raw.test.labels, [0, 0, 0, 1, 1, 1]);
        assert_eq!(data.raw.train.len(), 14);
        assert_eq!(load_folder(dir.path(), &options).unwrap(), data);
        let reseeded = FolderOptions {
            split_seed: 1,
            ..options
        };
        assert_ne!(
            load_folder(dir.path(), &reseeded).unwrap().raw.test,
            data.raw.test
        );
    }

    #[test]
    fn colour_resizing_and_channel_order() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train/x/0.png"), 8, 8, 255, true);
        write(&dir.path().join("train/y/0.png"), 6, 6, 10, false);
        write(&dir.path().join("test/x/0.png"), 5, 7, 255, true);
        write(&dir.path().join("test/y/0.JPG"), 9, 9, 10, false);
        let options = FolderOptions {
            image_size: Some(4),
            ..FolderOptions::default()
        };
        let data = load_folder(dir.path(), &options).unwrap();
        assert_eq!(data.raw.test.labels, [0, 1]);
        // Colour because one training image is: planes R, G, B.
        assert_eq!(data.image_shape, (3, 4, 4));
        let first = &data.raw.train.pixels[..48];
        assert!(first[..16].iter().all(|&p| p == 255), "{first:?}");
        assert!(first[16..].iter().all(|&p| p == 0), "{first:?}");
        // A grey image in a colour dataset: three equal planes.
        let second = &data.raw.train.pixels[48..96];
        assert!(second.iter().all(|&p| p == 10), "{second:?}");
        let grey = FolderOptions {
            channels: Some(1),
            ..options
        };
        assert_eq!(
            load_folder(dir.path(), &grey).unwrap().image_shape,
            (1, 4, 4)
        );
    }

    #[test]
    fn bad_folders_are_errors_naming_the_path() {
        let err = |root: &Path, options: &FolderOptions| {
            load_folder(root, options).unwrap_err().to_string()
        };
        let options = FolderOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(err(&root.join("nope"), &options).contains("no such directory"));
        assert!(err(root, &options).contains("no class directories"));

        write(&root.join("a/0.png"), 4, 4, 1, false);
        std::fs::create_dir_all(root.join("b")).unwrap();
        let e = err(root, &options);
        assert!(e.contains("holds no .png") && e.contains("/b"), "{e}");

        write(&root.join("b/0.png"), 4, 4, 1, false);
        write(&root.join("b/1.png"), 5, 5, 1, false);
        let e = err(root, &options);
        assert!(
            e.contains("1.png") && e.contains("5x5") && e.contains("data.image_size"),
            "{e}"
        );

        std::fs::write(root.join("b/1.png"), "not a png").unwrap();
        let e = err(root, &options);
        assert!(
            e.contains("b/1.png") && e.contains("not a readable image"),
            "{e}"
        );

        let only_train = tempfile::tempdir().unwrap();
        write(&only_train.path().join("train/a/0.png"), 4, 4, 1, false);
        write(&only_train.path().join("train/b/0.png"), 4, 4, 1, false);
        assert!(err(only_train.path(), &options).contains("no test/ directory"));
        write(&only_train.path().join("test/c/0.png"), 4, 4, 1, false);
        let e = err(only_train.path(), &options);
        assert!(e.contains("\"c\" has no training directory"), "{e}");

        let wide = tempfile::tempdir().unwrap();
        write(&wide.path().join("a/0.png"), 6, 4, 1, false);
        write(&wide.path().join("b/0.png"), 6, 4, 1, false);
        let e = err(wide.path(), &options);
        assert!(e.contains("6x4") && e.contains("square"), "{e}");
        let bad_channels = FolderOptions {
            channels: Some(2),
            ..FolderOptions::default()
        };
        assert!(err(wide.path(), &bad_channels).contains("channels = 2"));
    }

    /// Against values computed by hand: channel 0 holds 0 and 255 (mean
    /// 0.5, std 0.5), channel 1 is constant 51 (mean 0.2, no spread: std 1).
    #[test]
    fn channel_statistics_match_a_hand_computation() {
        let split = RawSplit {
            pixels: vec![0, 255, 51, 51],
            labels: vec![0],
        };
        let (mean, std) = channel_statistics(&split, 2);
        assert!((mean[0] - 0.5).abs() < 1e-6 && (std[0] - 0.5).abs() < 1e-6);
        assert!(
            (mean[1] - 0.2).abs() < 1e-6 && std[1] == 1.0,
            "{mean:?} {std:?}"
        );
    }
}

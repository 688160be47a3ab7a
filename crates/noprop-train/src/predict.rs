//! `noprop predict`: classify image files with a checkpoint.
//!
//! Each image (PNG or JPEG) is
//! converted to the model's channels (grey: luma; colour: RGB), resized to
//! the model's `image_size` x `image_size` (bilinear), scaled to [0, 1] and
//! normalised per channel like the training data,
//! x = (pixel / 255 - mean`[c]`) / std`[c]`, with the mean and std stored in the
//! checkpoint. MNIST digits are white on black: a black-on-white drawing
//! must be inverted first.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use noprop_checkpoint::ModelCard;
use noprop_core::variant::ModelSpec;
use noprop_core::SeededRng;
use serde_json::json;

use crate::cli::PredictArgs;
use crate::eval::inference_settings;
use crate::model::load_model;
use crate::train::EVAL_STREAM;

/// The widest and tallest image `predict` decodes.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one decoded image may take.
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// Reads `path` as one normalised image `[C, S, S]` for a model of `spec`.
pub fn load_image(
    path: &Path,
    spec: ModelSpec,
    card: &ModelCard,
    device: &Device,
) -> Result<Tensor> {
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    // The header's size is checked before any pixel buffer is allocated.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => anyhow::anyhow!(
            "{}: the image is too large to decode ({e}); predict takes at most {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} pixels and {} MiB",
            path.display(),
            MAX_IMAGE_BYTES >> 20
        ),
        e => anyhow::Error::new(e)
            .context(format!("{} is not a readable image (PNG or JPEG expected)", path.display())),
    })?;
    let size = spec.image_size as u32;
    let channels = spec.in_channels;
    let pixels: Vec<u8> = match channels {
        1 => {
            image::imageops::resize(&image.to_luma8(), size, size, FilterType::Triangle).into_raw()
        }
        3 => image::imageops::resize(&image.to_rgb8(), size, size, FilterType::Triangle).into_raw(),
        c => bail!("models with {c} input channels are not supported by predict"),
    };
    let s = spec.image_size;
    // Interleaved HWC bytes to CHW, normalised as the training data was.
    let mut chw = vec![0u8; channels * s * s];
    for (i, &p) in pixels.iter().enumerate() {
        let (pixel, c) = (i / channels, i % channels);
        chw[c * s * s + pixel] = p;
    }
    let pixels = Tensor::from_vec(chw, (1, channels, s, s), device)?;
    Ok(card.normalize(&pixels)?.squeeze(0)?)
}

/// Runs `noprop predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    let device = args.inference.device.open()?;
    let loaded = load_model(&args.checkpoint, &device)?;
    let meta = &loaded.checkpoint.meta;
    let card = ModelCard::from_meta(meta);
    let images = args
        .images
        .iter()
        .map(|p| load_image(p, meta.spec, &card, &device))
        .collect::<Result<Vec<_>>>()?;
    let batch = Tensor::stack(&images, 0)?;
    let settings = inference_settings(&args.inference, &loaded.config);
    let seed = args.inference.seed.unwrap_or(loaded.config.seed);
    let mut rng = SeededRng::new(seed).fork(EVAL_STREAM);
    // With several runs: their ensemble (averaged probabilities).
    let probabilities =
        noprop_core::inference::predict_proba(loaded.model.as_ref(), &batch, &settings, &mut rng)?
            .to_vec2::<f32>()?;
    let mut results = Vec::new();
    for (path, probs) in args.images.iter().zip(&probabilities) {
        let (class, p) =
            probs
                .iter()
                .copied()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, p)| {
                    if p > best.1 {
                        (i, p)
                    } else {
                        best
                    }
                });
        let name = card.class_names.as_ref().map(|_| card.class_name(class));
        if args.json {
            let mut result = json!({
                "file": path.display().to_string(),
                "class": class,
                "probability": p,
                "probabilities": probs,
            });
            if let Some(name) = &name {
                result["class_name"] = json!(name);
            }
            results.push(result);
        } else {
            let list: Vec<String> = probs
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}: {p:.3}", card.class_name(i)))
                .collect();
            match &name {
                Some(name) => println!("{}: {name} (class {class}, p = {p:.3})", path.display()),
                None => println!("{}: class {class} (p = {p:.3})", path.display()),
            }
            println!("  probabilities {}", list.join(", "));
        }
    }
    if args.json {
        println!(
            "{}",
            json!({
                "checkpoint": args.checkpoint.display().to_string(),
                // How to redraw the same noise: SeededRng::new(seed).fork(rng_stream).
                "seed": seed,
                "rng_stream": EVAL_STREAM,
                "predictions": results,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_resized_converted_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        // A 56x56 colour image, left half white, right half black: after
        // conversion to grey and resizing to 28x28 the left columns are 1.0
        // and the right ones 0.0 before normalisation.
        let img = image::RgbImage::from_fn(56, 56, |x, _| {
            if x < 28 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let path = dir.path().join("half.png");
        img.save(&path).unwrap();
        let spec = ModelSpec::mnist();
        let grey = ModelCard::new("mnist", vec![0.5], vec![0.25]);
        let t = load_image(&path, spec, &grey, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 28, 28]);
        let rows = t.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        assert!(
            (rows[10][0] - (1.0 - 0.5) / 0.25).abs() < 1e-6,
            "{}",
            rows[10][0]
        );
        assert!(
            (rows[10][27] - (0.0 - 0.5) / 0.25).abs() < 1e-6,
            "{}",
            rows[10][27]
        );

        let colour = ModelSpec {
            in_channels: 3,
            image_size: 32,
            num_classes: 10,
        };
        let rgb = ModelCard::new("cifar10", vec![0.0; 3], vec![1.0; 3]);
        let t = load_image(&path, colour, &rgb, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 32, 32]);

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        let err = format!(
            "{:#}",
            load_image(&text, spec, &grey, &Device::Cpu).unwrap_err()
        );
        assert!(err.contains("notes.png"), "{err}");
        let missing = dir.path().join("missing.png");
        let err = format!(
            "{:#}",
            load_image(&missing, spec, &grey, &Device::Cpu).unwrap_err()
        );
        assert!(err.contains("missing.png"), "{err}");
    }
}

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

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use noprop_checkpoint::ModelCard;
use noprop_core::variant::ModelSpec;
use noprop_core::SeededRng;
use serde_json::json;

use crate::cli::PredictArgs;
use crate::eval::inference_settings;
use crate::model::load_model;
use crate::train::EVAL_STREAM;

/// Reads `path` as one normalised image `[C, S, S]` for a model of `spec`
/// (decoded with the image folders' decoder and its size limits).
pub fn load_image(
    path: &Path,
    spec: ModelSpec,
    card: &ModelCard,
    device: &Device,
) -> Result<Tensor> {
    let channels = spec.in_channels;
    if channels != 1 && channels != 3 {
        bail!("models with {channels} input channels are not supported by predict");
    }
    let image = noprop_data::folder::decode_image(path)?;
    let s = spec.image_size;
    let chw = noprop_data::folder::to_chw(image, channels, s as u32);
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

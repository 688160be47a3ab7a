//! Loads a checkpoint with a variant crate alone, classifies PNG images, and
//! saves the model again.
//!
//! ```text
//! noprop-standalone-check predict VARIANT CHECKPOINT STEPS SEED STREAM IMAGE...
//! noprop-standalone-check resave VARIANT CHECKPOINT OUT
//! ```
//!
//! `predict` prints `IMAGE CLASS P0,P1,...` per image (its probabilities), drawing the inference noise
//! from `SeededRng::new(SEED).fork(STREAM)` with STEPS ODE steps (what
//! `noprop predict --json` reports it used), so the two can be compared.

use std::error::Error;
use std::path::Path;

use image::imageops::FilterType;
use noprop_fm::{
    predict_proba, Device, InferenceOptions, InferenceSettings, ModelCard, SeededRng, Tensor,
    Variant,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn load(variant: &str, path: &str, device: &Device) -> Result<Box<dyn Variant>> {
    Ok(match variant {
        "dt" => Box::new(noprop_dt::NoPropDt::from_checkpoint(path, device)?),
        "ct" => Box::new(noprop_ct::NoPropCt::from_checkpoint(path, device)?),
        "fm" => Box::new(noprop_fm::NoPropFm::from_checkpoint(path, device)?),
        "backprop" => Box::new(noprop_backprop::NoPropBackprop::from_checkpoint(
            path, device,
        )?),
        other => return Err(format!("unknown variant {other}").into()),
    })
}

/// One grey image resized to `size` x `size` as `noprop predict` does it.
fn grey_pixels(path: &str, size: u32) -> Result<Vec<u8>> {
    let image = image::ImageReader::open(path)?
        .with_guessed_format()?
        .decode()?;
    Ok(image::imageops::resize(&image.to_luma8(), size, size, FilterType::Triangle).into_raw())
}

fn predict(args: &[String]) -> Result<()> {
    let [variant, checkpoint, steps, seed, stream, images @ ..] = args else {
        return Err("predict VARIANT CHECKPOINT STEPS SEED STREAM IMAGE...".into());
    };
    let device = Device::Cpu;
    let model = load(variant, checkpoint, &device)?;
    let card = ModelCard::read(checkpoint)?;
    let spec = model.spec();
    let size = spec.image_size;
    let mut pixels = Vec::new();
    for image in images {
        pixels.extend(grey_pixels(image, size as u32)?);
    }
    let pixels = Tensor::from_vec(pixels, (images.len(), 1, size, size), &device)?;
    let inputs = card.normalize(&pixels)?;
    let options = InferenceOptions {
        steps: Some(steps.parse()?),
        ..Default::default()
    };
    let mut rng = SeededRng::new(seed.parse()?).fork(stream.parse()?);
    let probs = predict_proba(
        model.as_ref(),
        &inputs,
        &InferenceSettings::new(options),
        &mut rng,
    )?;
    let classes = probs.argmax(1)?.to_vec1::<u32>()?;
    for ((image, class), probs) in images.iter().zip(classes).zip(probs.to_vec2::<f32>()?) {
        // Display of an f32 is its shortest exact decimal: it parses back
        // to the same bits.
        let probs: Vec<String> = probs.iter().map(f32::to_string).collect();
        println!("{image} {class} {}", probs.join(","));
    }
    Ok(())
}

fn resave(args: &[String]) -> Result<()> {
    let [variant, checkpoint, out] = args else {
        return Err("resave VARIANT CHECKPOINT OUT".into());
    };
    let device = Device::Cpu;
    let card = ModelCard::read(checkpoint)?;
    let out = Path::new(out);
    match variant.as_str() {
        "dt" => noprop_dt::NoPropDt::from_checkpoint(checkpoint, &device)?.save(out, &card)?,
        "ct" => noprop_ct::NoPropCt::from_checkpoint(checkpoint, &device)?.save(out, &card)?,
        "fm" => noprop_fm::NoPropFm::from_checkpoint(checkpoint, &device)?.save(out, &card)?,
        "backprop" => noprop_backprop::NoPropBackprop::from_checkpoint(checkpoint, &device)?
            .save(out, &card)?,
        other => return Err(format!("unknown variant {other}").into()),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("predict") => predict(&args[1..]),
        Some("resave") => resave(&args[1..]),
        _ => Err("usage: predict VARIANT CHECKPOINT STEPS SEED STREAM IMAGE... | resave VARIANT CHECKPOINT OUT".into()),
    };
    // The message only (an anyhow error's Debug form would add a backtrace
    // under RUST_BACKTRACE=1).
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

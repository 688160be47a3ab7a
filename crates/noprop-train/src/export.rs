//! `noprop export`: the weights of a checkpoint, without training state
//! (no optimizer moments, no generator, no data position), for inference.
//! The file keeps the metadata needed to rebuild and use the model (variant,
//! configuration, input shape, normalisation), so `noprop eval` and
//! `noprop predict` accept it, and loads in Python with
//! `safetensors.numpy.load_file` (see `docs/checkpoint-format.md`).

use anyhow::{Context, Result};
use candle_core::Device;
use serde_json::json;

use crate::cli::ExportArgs;
use crate::model::load_model;

/// Runs `noprop export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    // Building the model and loading the checkpoint into it proves the file
    // is consistent before anything is written.
    // The output may not be the input (a training checkpoint would be
    // replaced by its weights), nor a link (it would be replaced, not
    // written through): refused before anything is read.
    if let Ok(meta) = std::fs::symlink_metadata(&args.out) {
        if meta.file_type().is_symlink() {
            anyhow::bail!(
                "--out {}: is a symbolic link; give the path of the file itself",
                args.out.display()
            );
        }
        let same =
            std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(&args.checkpoint).ok();
        if same {
            anyhow::bail!(
                "--out {} is the checkpoint being exported; choose another file",
                args.out.display()
            );
        }
    }
    let loaded = load_model(&args.checkpoint, &Device::Cpu)?;
    let weights = loaded.checkpoint.weights_only();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            anyhow::bail!(
                "--out {}: directory {} does not exist",
                args.out.display(),
                parent.display()
            );
        }
    }
    weights
        .save(&args.out)
        .with_context(|| format!("cannot export to {}", args.out.display()))?;
    let tensors = weights.tensors.len();
    let parameters = loaded.model.params().count_trainable("");
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    if args.json {
        println!(
            "{}",
            json!({
                "checkpoint": args.checkpoint.display().to_string(),
                "out": args.out.display().to_string(),
                "variant": weights.meta.variant,
                "tensors": tensors,
                "parameters": parameters,
                "bytes": bytes,
            })
        );
    } else {
        println!(
            "exported {} weights ({tensors} tensors, {parameters} parameters, {bytes} bytes) to {}",
            crate::registry::label(&weights.meta.variant),
            args.out.display()
        );
    }
    Ok(())
}

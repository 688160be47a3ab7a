//! `cargo xtask standalone`: the variant crates used alone, as a user's
//! project would, agree with the `noprop` binary.
//!
//! `tests/standalone` is a Cargo project outside the workspace whose only
//! noprop dependencies are the variant crates (each used by itself: no
//! noprop-core, no candle, no trainer). For every registered variant this
//! task trains a tiny run with `noprop train`, then checks that
//!
//! 1. the standalone program, loading `last.safetensors` with the variant
//!    crate's `from_checkpoint`, gives the same probabilities, bit for bit,
//!    as `noprop predict` on the same PNG images with the same inference
//!    noise (the seed and stream `noprop predict --json` reports);
//! 2. the checkpoint it saves with the variant crate's `save` is read by
//!    `noprop predict` (the same probabilities, bit for bit) and by
//!    `noprop eval` (the same accuracy as on the original).
//!
//! The standalone build shares the workspace's target directory and lock
//! file, so it reuses the compiled dependencies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::process::{self, cargo_program};
use crate::train_all::registered;
use crate::{absolute, workspace_root};

/// Arguments of `cargo xtask standalone`.
#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Scratch directory of the runs and saved checkpoints.
    #[arg(long, default_value = "target/xtask-standalone", value_name = "DIR")]
    pub out: PathBuf,
    /// Use this `noprop` binary instead of building one (debug profile).
    #[arg(long, value_name = "BIN")]
    pub noprop: Option<PathBuf>,
    /// ODE steps of both inferences (a tiny model needs no more).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
}

/// The project's directory and its test images.
fn project() -> PathBuf {
    workspace_root().join("tests/standalone")
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |d| absolute(Path::new(&d), root))
}

/// Builds `noprop` (debug) unless given, and the standalone program.
fn build(args: &StandaloneArgs, root: &Path) -> Result<(PathBuf, PathBuf)> {
    let target = target_dir(root);
    let noprop = match &args.noprop {
        Some(bin) => absolute(bin, &std::env::current_dir()?),
        None => {
            process::run(Command::new(cargo_program()).current_dir(root).args([
                "build",
                "-p",
                "noprop-train",
                "--bin",
                "noprop",
            ]))?;
            target.join("debug/noprop")
        }
    };
    // The workspace's lock file: the same dependency versions, so the
    // shared target directory's builds are reused.
    std::fs::copy(root.join("Cargo.lock"), project().join("Cargo.lock"))
        .context("cannot copy Cargo.lock into tests/standalone")?;
    process::run(
        Command::new(cargo_program())
            .current_dir(project())
            .arg("build")
            .arg("--target-dir")
            .arg(&target),
    )?;
    Ok((noprop, target.join("debug/noprop-standalone-check")))
}

/// The test images, sorted.
fn images() -> Result<Vec<String>> {
    let dir = project().join("images");
    let mut images: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| p.display().to_string())
        .collect();
    images.sort();
    if images.is_empty() {
        bail!("no PNG images in {}", dir.display());
    }
    Ok(images)
}

/// `noprop predict --json`: each image's probabilities (as f32 bits), and
/// the seed and stream of its inference noise.
fn noprop_predict(
    noprop: &Path,
    checkpoint: &Path,
    steps: usize,
    images: &[String],
) -> Result<(BTreeMap<String, Vec<u32>>, u64, u64)> {
    let mut command = Command::new(noprop);
    command
        .arg("predict")
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(["--steps", &steps.to_string(), "--json"])
        .args(images);
    let out: Value = serde_json::from_str(&process::output(&mut command)?)
        .context("`noprop predict --json` did not print JSON")?;
    let number = |key: &str| {
        out[key]
            .as_u64()
            .with_context(|| format!("`noprop predict --json` has no `{key}`"))
    };
    let mut predictions = BTreeMap::new();
    for p in out["predictions"].as_array().context("no predictions")? {
        let file = p["file"].as_str().context("a prediction without a file")?;
        let probs = p["probabilities"]
            .as_array()
            .context("a prediction without probabilities")?
            .iter()
            .map(|v| v.as_f64().map(|x| (x as f32).to_bits()))
            .collect::<Option<Vec<u32>>>()
            .context("a probability is not a number")?;
        predictions.insert(file.to_string(), probs);
    }
    Ok((predictions, number("seed")?, number("rng_stream")?))
}

/// The standalone program's `IMAGE CLASS P0,P1,...` lines.
fn standalone_predict(
    standalone: &Path,
    variant: &str,
    checkpoint: &Path,
    (steps, seed, stream): (usize, u64, u64),
    images: &[String],
) -> Result<BTreeMap<String, Vec<u32>>> {
    let mut command = Command::new(standalone);
    command
        .arg("predict")
        .arg(variant)
        .arg(checkpoint)
        .args([steps.to_string(), seed.to_string(), stream.to_string()])
        .args(images);
    process::output(&mut command)?
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let (Some(file), Some(_class), Some(probs)) =
                (fields.next(), fields.next(), fields.next())
            else {
                bail!("the standalone program printed {line:?}");
            };
            let probs = probs
                .split(',')
                .map(|p| p.parse::<f32>().map(f32::to_bits))
                .collect::<std::result::Result<Vec<u32>, _>>()
                .with_context(|| format!("the standalone program printed {line:?}"))?;
            Ok((file.to_string(), probs))
        })
        .collect()
}

/// `noprop eval --json`'s mean single-run accuracy.
fn noprop_eval(noprop: &Path, checkpoint: &Path, steps: usize) -> Result<f64> {
    let mut command = Command::new(noprop);
    command
        .arg("eval")
        .arg("--checkpoint")
        .arg(checkpoint)
        .args([
            "--test-limit",
            "200",
            "--steps",
            &steps.to_string(),
            "--json",
        ]);
    let out: Value = serde_json::from_str(&process::output(&mut command)?)
        .context("`noprop eval --json` did not print JSON")?;
    out["accuracy"]
        .as_f64()
        .context("`noprop eval --json` has no accuracy")
}

/// Runs `cargo xtask standalone`.
pub fn run(args: &StandaloneArgs) -> Result<()> {
    let root = workspace_root();
    let (noprop, standalone) = build(args, &root)?;
    let out = absolute(&args.out, &root);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let images = images()?;
    for variant in registered(&noprop)? {
        let name = &variant.name;
        let run_dir = out.join(name);
        let mut train = Command::new(&noprop);
        train
            .args(["train", "--variant", name])
            .args([
                "--train-limit",
                "256",
                "--test-limit",
                "64",
                "--batch-size",
                "64",
            ])
            .args(["--epochs", "1", "--no-progress", "--force", "--out"])
            .arg(&run_dir);
        if variant.integrates_ode {
            train.args(["--set", "eval.steps=5"]);
        }
        process::run(&mut train)?;
        let checkpoint = run_dir.join("last.safetensors");

        let (expected, seed, stream) = noprop_predict(&noprop, &checkpoint, args.steps, &images)?;
        let got = standalone_predict(
            &standalone,
            name,
            &checkpoint,
            (args.steps, seed, stream),
            &images,
        )?;
        if got != expected {
            bail!(
                "{name}: the standalone program's probabilities differ from `noprop predict`'s:\n  standalone {got:?}\n  noprop     {expected:?}"
            );
        }

        let saved = out.join(format!("{name}-saved.safetensors"));
        let mut resave = Command::new(&standalone);
        resave.arg("resave").arg(name).arg(&checkpoint).arg(&saved);
        process::run(&mut resave)?;
        let (resaved, _, _) = noprop_predict(&noprop, &saved, args.steps, &images)?;
        if resaved != expected {
            bail!("{name}: `noprop predict` gives other probabilities on the checkpoint the variant crate saved than on the original");
        }
        let original = noprop_eval(&noprop, &checkpoint, args.steps)?;
        let reloaded = noprop_eval(&noprop, &saved, args.steps)?;
        if original != reloaded {
            bail!("{name}: `noprop eval` gives {original} on the trained checkpoint but {reloaded} on the one the variant crate saved");
        }
        eprintln!(
            "xtask: standalone {name}: {} images predicted bit for bit as `noprop predict`; the checkpoint it saved predicts the same bits and evaluates to {:.2}% like the original",
            images.len(),
            100.0 * original
        );
    }
    Ok(())
}

//! Accuracy of a model on a split, and the `noprop eval` command.
//!
//! Accuracy = (number of images whose predicted class, the argmax of
//! [`Variant::predict_proba`], equals the label) / (number of images),
//! computed in batches of `batch_size` to bound memory.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use noprop_core::variant::ModelSpec;
use noprop_core::{InferenceOptions, SeededRng, Variant};
use noprop_data::{Dataset, Split};
use serde_json::json;

use crate::cli::{EvalArgs, InferenceArgs};
use crate::config::RunConfig;
use crate::model::load_model;
use crate::progress::Progress;
use crate::train::EVAL_STREAM;

/// Correct predictions out of a number of images, and the time it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub correct: u64,
    pub total: u64,
    pub seconds: f64,
}

impl Accuracy {
    /// The fraction correct, in [0, 1].
    pub fn fraction(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// Number of rows of `images` whose predicted class equals `labels`.
pub fn count_correct(
    model: &dyn Variant,
    images: &Tensor,
    labels: &Tensor,
    options: &InferenceOptions,
    rng: &mut SeededRng,
) -> Result<u64> {
    let predicted = model.predict(images, options, rng)?;
    let hits = predicted
        .to_dtype(DType::U32)?
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    Ok(u64::from(hits))
}

/// The accuracy of `model` on `split`.
pub fn evaluate(
    model: &dyn Variant,
    split: &Split,
    options: &InferenceOptions,
    batch_size: usize,
    rng: &mut SeededRng,
    progress: Option<&Progress>,
) -> Result<Accuracy> {
    let start = Instant::now();
    let mut correct = 0;
    for batch in split.batches(batch_size, None)? {
        let (images, labels) = batch?;
        correct += count_correct(model, &images, &labels, options, rng)?;
        if let Some(p) = progress {
            p.eval_images(labels.dim(0)?);
        }
    }
    Ok(Accuracy {
        correct,
        total: split.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The inference options of `args` on top of the run's `[eval]` settings.
pub fn inference_options(args: &InferenceArgs, config: &RunConfig) -> InferenceOptions {
    let mut options = config.eval.inference_options();
    if let Some(steps) = args.steps {
        options.steps = Some(steps);
    }
    if let Some(solver) = args.solver {
        options.solver = Some(solver.into());
    }
    if args.deterministic {
        options.deterministic = Some(true);
    }
    if let Some(runs) = args.runs {
        options.runs = Some(runs);
    }
    options
}

/// Runs `noprop eval`: the accuracy of a checkpoint on its dataset's test
/// split.
pub fn run(args: &EvalArgs) -> Result<()> {
    let device = args.inference.device.open()?;
    let loaded = load_model(&args.checkpoint, &device)?;
    let config = &loaded.config;
    let mut data = config.data.clone();
    if let Some(dir) = &args.data_dir {
        if !dir.is_dir() {
            bail!("--data-dir {}: no such directory", dir.display());
        }
        data.dir = Some(dir.clone());
    }
    // Only the test split is used: the whole of it unless --test-limit.
    data.test_limit = args.test_limit;
    data.train_limit = Some(1);
    data.validation = 0;
    let dataset_config = data.dataset_config()?;
    let dataset = Dataset::load(&dataset_config, &device)
        .with_context(|| format!("cannot load the {} dataset", dataset_config.kind))?;
    let (c, h, _) = dataset.image_shape();
    let data_spec = ModelSpec {
        in_channels: c,
        image_size: h,
        num_classes: dataset.num_classes(),
    };
    if data_spec != loaded.checkpoint.meta.spec {
        bail!(
            "checkpoint {} expects {:?} but the {} data is {:?}",
            args.checkpoint.display(),
            loaded.checkpoint.meta.spec,
            dataset.kind(),
            data_spec
        );
    }
    let options = inference_options(&args.inference, config);
    let seed = args.inference.seed.unwrap_or(config.seed);
    let mut rng = SeededRng::new(seed).fork(EVAL_STREAM);
    let progress = Progress::eval_only(!args.json);
    progress.start_eval("test", dataset.test().len());
    let acc = evaluate(
        loaded.model.as_ref(),
        dataset.test(),
        &options,
        args.batch_size,
        &mut rng,
        Some(&progress),
    )?;
    progress.finish();
    let ms_per_image = 1000.0 * acc.seconds / acc.total.max(1) as f64;
    let solver = options.solver.map(|s| format!("{s:?}").to_lowercase());
    if args.json {
        let value = json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "variant": config.variant.as_str(),
            "dataset": dataset.kind().name(),
            "split": "test",
            "accuracy": acc.fraction(),
            "correct": acc.correct,
            "images": acc.total,
            "seconds": acc.seconds,
            "ms_per_image": ms_per_image,
            "images_per_second": acc.total as f64 / acc.seconds.max(1e-9),
            "seed": seed,
            // Unset options above mean these, the model's own defaults.
            "variant_config": loaded.model.config_json(),
            "options": {
                "steps": options.steps,
                "solver": solver,
                "deterministic": options.deterministic,
                "runs": options.runs,
            },
        });
        println!("{value}");
    } else {
        let setting = |name: &str, v: Option<String>| {
            format!("{name} {}", v.unwrap_or_else(|| "default".into()))
        };
        println!(
            "{}: test accuracy {:.2}% ({}/{}) on {}; {:.2} s ({:.3} ms/image); {}, {}, {}, {}",
            args.checkpoint.display(),
            100.0 * acc.fraction(),
            acc.correct,
            acc.total,
            dataset.kind(),
            acc.seconds,
            ms_per_image,
            setting("steps", options.steps.map(|s| s.to_string())),
            setting("solver", solver),
            setting(
                "deterministic",
                options.deterministic.map(|d| d.to_string())
            ),
            setting("runs", options.runs.map(|r| r.to_string())),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, blobs, LinearSoftmax};
    use candle_core::Device;

    #[test]
    fn accuracy_counts_matching_argmax_in_batches() {
        let model = LinearSoftmax::new(blob_spec(), 0, &Device::Cpu).unwrap();
        let split = blobs(50, 1);
        let options = InferenceOptions::default();
        let mut rng = SeededRng::new(0);
        // Independent count: argmax of the probabilities on the whole split at once.
        let probs = model
            .predict_proba(split.images(), &options, &mut rng)
            .unwrap();
        let rows = probs.to_vec2::<f32>().unwrap();
        let labels = split.labels().to_vec1::<u32>().unwrap();
        let expected = rows
            .iter()
            .zip(&labels)
            .filter(|(row, &y)| {
                let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                best as u32 == y
            })
            .count() as u64;
        let acc = evaluate(&model, &split, &options, 7, &mut rng, None).unwrap();
        assert_eq!(acc.total, 50);
        assert_eq!(acc.correct, expected);
    }
}

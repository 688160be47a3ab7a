//! Accuracy of a model on a split, and the `noprop eval` command.
//!
//! With several stochastic runs, two numbers that must not be confused
//! (see [`noprop_core::inference`]): the mean (and standard deviation) of
//! the single runs' accuracies, the paper's protocol and the headline, and
//! the accuracy of their ensemble (averaged probabilities).

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use noprop_core::{inference, InferenceSettings, ModelSpec, RunAccuracy, SeededRng, Variant};
use noprop_data::{Dataset, Split};
use serde::{Deserialize, Serialize};

use crate::cli::{EvalArgs, InferenceArgs};
use crate::config::RunConfig;
use crate::model::load_model;
use crate::progress::Progress;
use crate::registry;
use crate::train::EVAL_STREAM;

/// An evaluation: the counts of every run and the time it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub accuracy: RunAccuracy,
    pub seconds: f64,
}

impl Evaluation {
    /// The headline: the mean of the single runs' accuracies, in [0, 1].
    pub fn fraction(&self) -> f64 {
        self.accuracy.mean()
    }
}

/// The accuracy of `model` on `split`.
pub fn evaluate(
    model: &dyn Variant,
    split: &Split,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
    progress: Option<&Progress>,
) -> Result<Evaluation> {
    evaluate_unless_stopped(model, split, settings, rng, progress, &|| false)?
        .context("the evaluation was stopped")
}

/// [`evaluate`], asking `stop` after every batch: `None` when it said yes
/// (the trainer stops an end-of-epoch evaluation on Ctrl-C within a batch).
pub fn evaluate_unless_stopped(
    model: &dyn Variant,
    split: &Split,
    settings: &InferenceSettings,
    rng: &mut SeededRng,
    progress: Option<&Progress>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Evaluation>> {
    let start = Instant::now();
    let accuracy = inference::evaluate_with_progress(
        model,
        split.images(),
        split.labels(),
        settings,
        rng,
        &mut |n| {
            if let Some(p) = progress {
                p.eval_images(n);
            }
            if stop() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    Ok(accuracy.map(|accuracy| Evaluation {
        accuracy,
        seconds: start.elapsed().as_secs_f64(),
    }))
}

/// The inference settings of `args` on top of the run's `[eval]` settings.
pub fn inference_settings(args: &InferenceArgs, config: &RunConfig) -> InferenceSettings {
    let mut settings = config.eval.settings();
    if let Some(steps) = args.steps {
        settings.options.steps = Some(steps);
    }
    if let Some(solver) = args.solver {
        settings.options.solver = Some(solver);
    }
    if args.deterministic {
        settings.options.deterministic = Some(true);
    }
    if let Some(runs) = args.runs {
        settings.runs = runs;
    }
    if let Some(batch_size) = args.batch_size {
        settings.batch_size = batch_size;
    }
    settings
}

/// The inference settings actually used: each option resolved to the
/// model's own default where unset (from its configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsedSettings {
    /// ODE steps (variants that integrate an ODE), else None.
    pub steps: Option<usize>,
    /// ODE integrator, likewise.
    pub solver: Option<String>,
    /// Whether no noise was injected (variants that do not integrate an
    /// ODE), else None.
    pub deterministic: Option<bool>,
    pub runs: usize,
    pub batch_size: usize,
}

impl UsedSettings {
    /// `settings` over the defaults in `variant_config` (the model's JSON).
    pub fn new(
        variant: &str,
        settings: &InferenceSettings,
        variant_config: &serde_json::Value,
    ) -> Self {
        let ode = registry::find(variant).is_ok_and(|v| v.integrates_ode());
        let options = &settings.options;
        let default_usize = |key: &str| {
            variant_config
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as usize)
        };
        let default_str = |key: &str| {
            variant_config
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(String::from)
        };
        Self {
            steps: ode
                .then(|| options.steps.or_else(|| default_usize("inference_steps")))
                .flatten(),
            solver: ode
                .then(|| {
                    options
                        .solver
                        .map(|s| s.as_str().to_string())
                        .or_else(|| default_str("solver"))
                })
                .flatten(),
            deterministic: (!ode)
                .then(|| {
                    options.deterministic.or_else(|| {
                        variant_config
                            .get("deterministic")
                            .and_then(serde_json::Value::as_bool)
                    })
                })
                .flatten(),
            runs: settings.runs,
            batch_size: settings.batch_size,
        }
    }

    /// "100 euler steps, 5 runs, batches of 500".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(steps) = self.steps {
            parts.push(format!(
                "{steps} {} steps",
                self.solver.as_deref().unwrap_or("ODE")
            ));
        }
        if let Some(d) = self.deterministic {
            parts.push(if d { "deterministic" } else { "stochastic" }.to_string());
        }
        parts.push(format!(
            "{} run{}",
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        ));
        parts.push(format!("batches of {}", self.batch_size));
        parts.join(", ")
    }
}

/// What `noprop eval --json` prints (saved as `eval.json` in a run
/// directory by `cargo xtask train-all`). Accuracies are fractions in
/// [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint evaluated, as given on the command line.
    pub checkpoint: String,
    pub variant: String,
    pub dataset: String,
    /// Always "test".
    pub split: String,
    /// The mean of the single runs' accuracies (one run: its accuracy).
    pub accuracy: f64,
    /// Their sample standard deviation (0 for one run).
    pub accuracy_std: f64,
    /// Each run's accuracy.
    pub run_accuracies: Vec<f64>,
    /// The averaged probabilities of the runs, scored once (one run: that
    /// run's accuracy).
    pub ensemble_accuracy: f64,
    pub correct_per_run: Vec<u64>,
    /// Each class's accuracy over the single runs (null: no test image of
    /// that class). Absent from files of older versions.
    #[serde(default)]
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[label][predicted]`, counts of the single runs' predictions
    /// summed over the runs.
    #[serde(default)]
    pub confusion: Vec<Vec<u64>>,
    /// Images scored.
    pub images: u64,
    /// Wall-clock seconds of the whole evaluation (every run).
    pub seconds: f64,
    pub ms_per_image: f64,
    pub images_per_second: f64,
    pub seed: u64,
    pub settings: UsedSettings,
    /// The model's own configuration ([`Variant::config_json`]).
    pub variant_config: serde_json::Value,
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
    let settings = inference_settings(&args.inference, config);
    let seed = args.inference.seed.unwrap_or(config.seed);
    let mut rng = SeededRng::new(seed).fork(EVAL_STREAM);
    let progress = Progress::eval_only(!args.json);
    progress.start_eval("test", dataset.test().len());
    let evaluation = evaluate(
        loaded.model.as_ref(),
        dataset.test(),
        &settings,
        &mut rng,
        Some(&progress),
    )?;
    progress.finish();
    let acc = &evaluation.accuracy;
    let images = acc.total;
    let ms_per_image = 1000.0 * evaluation.seconds / images.max(1) as f64;
    let variant_config = loaded.model.config_json()?;
    let used = UsedSettings::new(&config.variant, &settings, &variant_config);
    if args.json {
        let report = EvalReport {
            checkpoint: args.checkpoint.display().to_string(),
            variant: config.variant.clone(),
            dataset: dataset.kind().name().to_string(),
            split: "test".to_string(),
            accuracy: acc.mean(),
            accuracy_std: acc.std(),
            run_accuracies: acc.per_run(),
            ensemble_accuracy: acc.ensemble(),
            correct_per_run: acc.correct_per_run.clone(),
            per_class_accuracy: acc.per_class(),
            confusion: acc.confusion.clone(),
            images,
            seconds: evaluation.seconds,
            ms_per_image,
            images_per_second: images as f64 / evaluation.seconds.max(1e-9),
            seed,
            settings: used,
            variant_config,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let runs = acc.per_run();
        let headline = if runs.len() == 1 {
            format!(
                "test accuracy {:.2}% ({}/{})",
                100.0 * acc.mean(),
                acc.correct_per_run[0],
                images
            )
        } else {
            let each: Vec<String> = runs.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
            format!(
                "test accuracy {:.2}% +- {:.2} (mean +- sd of {} single runs: {}); ensemble of the runs {:.2}%",
                100.0 * acc.mean(),
                100.0 * acc.std(),
                runs.len(),
                each.join(", "),
                100.0 * acc.ensemble()
            )
        };
        println!(
            "{}: {headline} on {} {} images; {:.2} s ({:.3} ms/image); {}",
            args.checkpoint.display(),
            images,
            dataset.kind(),
            evaluation.seconds,
            ms_per_image,
            used.describe(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, blobs, LinearSoftmax};
    use candle_core::Device;
    use noprop_core::InferenceOptions;

    #[test]
    fn accuracy_counts_matching_argmax_in_batches() {
        let model = LinearSoftmax::new(blob_spec(), 0, &Device::Cpu).unwrap();
        let split = blobs(50, 1);
        let settings = InferenceSettings::new(InferenceOptions::default()).with_batch_size(7);
        let mut rng = SeededRng::new(0);
        // Independent count: argmax of the probabilities on the whole split at once.
        let probs = &model
            .predict_runs(split.images(), &settings.options, 1, &mut rng)
            .unwrap()[0];
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
        let acc = evaluate(&model, &split, &settings, &mut rng, None).unwrap();
        assert_eq!(acc.accuracy.total, 50);
        assert_eq!(acc.accuracy.correct_per_run, vec![expected]);
    }
}

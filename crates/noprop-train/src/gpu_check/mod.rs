//! `noprop gpu-check`: does training on a device agree with the CPU, and
//! how fast is it? The trainer's half of the GPU check
//! (`scripts/cuda/gpu-check.sh` runs it on a GPU machine; see
//! `docs/cuda.md`).
//!
//! For each variant, built through [`crate::registry`]:
//!
//! 1. **Agreement.** The model is built from the seed on the CPU and again
//!    on the device; the CPU variables are copied into the device model
//!    ([`copy_weights`]), so both start bit-identical (checked). Each
//!    takes one training step on the same batch with the same
//!    [`SeededRng`] state, hence the same noise. The verdict is on the loss
//!    and the optimizer state (Adam's moments after one step: `exp_avg` is
//!    0.1 x the gradient), per tensor `max |dev - cpu| / scale` below
//!    [`TOLERANCE`], where `scale` is the larger of the tensor's own
//!    `max |cpu|` and [`GROUP_FLOOR`] times the largest `max |cpu|` of its
//!    group (same model part, same kind of state; see [`state_group`]).
//!    The floor matters for gradients that are zero up to rounding (a bias
//!    followed by BatchNorm): their relative difference is pure noise.
//!    The variables after the step (parameters, BatchNorm statistics) are
//!    compared and reported but do not decide: Adam's first update is
//!    about `lr * sign(gradient)`, so an element whose gradient is rounding
//!    noise moves by +-lr at random on each device. CPU against CPU agrees
//!    bitwise.
//! 2. **Throughput.** One warm-up step, then `--steps` timed steps on the
//!    device, the device synchronised before each reading of the clock;
//!    images per second.
//! 3. **Latency.** Inference on a batch of 1 and a batch of `--batch-size`
//!    (CT and FM with `--inference-steps` ODE steps, one run): one warm-up
//!    call, then the median of `--latency-runs` synchronised timings.
//!
//! Every variable of the device model must be on the device (no silent CPU
//! fallback). A table goes to stdout, progress to stderr, every number to
//! `--json` (written atomically). Exit status 0 when every variant agrees
//! and finished, 1 otherwise; an error inside one variant (an operation
//! missing on the device, say) is recorded for it and the others still
//! run.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | this orchestration ([`run`]) and the report types |
//! | [`compare`] | the one-step comparison and its verdict |
//! | [`timing`] | throughput and latency on the device |
//! | [`output`] | the table, the progress summaries and the `--json` file |

pub mod compare;
pub mod output;
pub mod timing;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use noprop_core::{InferenceOptions, ModelSpec, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use serde::Serialize;

use crate::cli::GpuCheckArgs;
use crate::registry::{self, VariantEntry};
use crate::train::TRAIN_STREAM;

pub use compare::{
    check_agreement, compare_tensors, copy_weights, state_group, Agreement, TensorDiff,
    GROUP_FLOOR, TOLERANCE,
};
pub use timing::{measure_latency, measure_throughput, Latency, Throughput};

/// Everything measured for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub variant: &'static str,
    /// Agreed and finished without error.
    pub ok: bool,
    pub parameters: Option<usize>,
    pub agreement: Option<Agreement>,
    pub training: Option<Throughput>,
    pub inference: Option<Latency>,
    /// The error that stopped this variant's check, if any.
    pub error: Option<String>,
    /// The variant's own configuration (its defaults).
    pub variant_config: Option<serde_json::Value>,
}

/// The whole `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub passed: bool,
    pub device: String,
    pub noprop_version: &'static str,
    /// `embedded MNIST` or the `--data` directory.
    pub data: String,
    pub seed: u64,
    pub batch_size: usize,
    pub steps: usize,
    pub inference_steps: usize,
    pub latency_runs: usize,
    pub tolerance: f64,
    pub variants: Vec<VariantReport>,
}

/// Runs `noprop gpu-check`.
pub fn run(args: &GpuCheckArgs) -> Result<ExitCode> {
    let device = args.device.open()?;
    // Refuse an unwritable --json before the work, not after it.
    if let Some(dir) = args.json.as_deref().and_then(Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            bail!("--json: directory {} does not exist", dir.display());
        }
    }
    let mut kinds: Vec<&'static dyn VariantEntry> = Vec::new();
    let wanted = if args.variants.is_empty() {
        registry::names().iter().map(|s| s.to_string()).collect()
    } else {
        args.variants.clone()
    };
    for name in &wanted {
        let entry = registry::find(name)?;
        if !kinds.iter().any(|k| k.name() == entry.name()) {
            kinds.push(entry);
        }
    }
    let (dataset, data_label) = load_data(args)?;
    let (c, h, _) = dataset.image_shape();
    let spec = ModelSpec {
        in_channels: c,
        image_size: h,
        num_classes: dataset.num_classes(),
    };
    let cpu_batches = training_batches(&dataset, args.batch_size, args.steps + 1, args.seed)?;
    let device_batches = cpu_batches
        .iter()
        .map(|(x, y)| Ok((x.to_device(&device)?, y.to_device(&device)?)))
        .collect::<Result<Vec<_>>>()
        .context("cannot copy the training batches to the device")?;
    eprintln!(
        "gpu-check: {} against cpu, {}, batch {}, {} steps, seed {}",
        args.device, data_label, args.batch_size, args.steps, args.seed
    );

    let mut reports = Vec::new();
    for kind in kinds {
        let mut report = VariantReport {
            variant: kind.name(),
            ok: false,
            parameters: None,
            agreement: None,
            training: None,
            inference: None,
            error: None,
            variant_config: None,
        };
        let result = check_variant(
            kind,
            spec,
            &cpu_batches,
            &device_batches,
            &device,
            args,
            &mut report,
        );
        match result {
            Ok(()) => report.ok = report.agreement.as_ref().is_some_and(|a| a.ok),
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("gpu-check: {}: error: {message}", kind.name());
                report.error = Some(message);
            }
        }
        reports.push(report);
    }

    let report = Report {
        passed: reports.iter().all(|r| r.ok),
        device: args.device.to_string(),
        noprop_version: env!("CARGO_PKG_VERSION"),
        data: data_label,
        seed: args.seed,
        batch_size: args.batch_size,
        steps: args.steps,
        inference_steps: args.inference_steps,
        latency_runs: args.latency_runs,
        tolerance: TOLERANCE,
        variants: reports,
    };
    print!("{}", output::table(&report));
    if let Some(path) = &args.json {
        output::write_json(&report, path)?;
        eprintln!("gpu-check: report written to {}", path.display());
    }
    if report.passed {
        eprintln!("gpu-check: passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "gpu-check: FAILED: {}",
            output::failures(&report).join("; ")
        );
        Ok(ExitCode::FAILURE)
    }
}

/// The training images: the `--data` directory or the embedded MNIST,
/// on the CPU, only as many as the check uses.
fn load_data(args: &GpuCheckArgs) -> Result<(Dataset, String)> {
    let wanted = args.batch_size.saturating_mul(args.steps + 1);
    let config = DatasetConfig {
        data_dir: args.data.clone(),
        train_limit: Some(wanted),
        test_limit: Some(1),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let label = match &args.data {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--data {}: no such directory", dir.display());
            }
            dir.display().to_string()
        }
        None => "embedded MNIST".to_string(),
    };
    let dataset = Dataset::load(&config, &Device::Cpu).with_context(|| match &args.data {
        Some(dir) => format!(
            "--data {}: cannot load MNIST IDX files from it",
            dir.display()
        ),
        None => "cannot load the embedded MNIST".to_string(),
    })?;
    if dataset.train().len() < args.batch_size {
        bail!(
            "--batch-size {} is larger than the {} training images of {label}",
            args.batch_size,
            dataset.train().len()
        );
    }
    Ok((dataset, label))
}

/// `count` full batches (shuffled with `seed`), cycling when the data holds
/// fewer.
fn training_batches(
    dataset: &Dataset,
    batch_size: usize,
    count: usize,
    seed: u64,
) -> Result<Vec<(Tensor, Tensor)>> {
    let batches = dataset
        .train()
        .batches(batch_size, Some((seed, 0)))?
        .drop_last(true)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if batches.is_empty() {
        bail!("no full batch of {batch_size} training images");
    }
    Ok((0..count)
        .map(|i| batches[i % batches.len()].clone())
        .collect())
}

/// The three measurements for `kind`, filled into `report` as they finish.
fn check_variant(
    kind: &dyn VariantEntry,
    spec: ModelSpec,
    cpu_batches: &[(Tensor, Tensor)],
    device_batches: &[(Tensor, Tensor)],
    device: &Device,
    args: &GpuCheckArgs,
    report: &mut VariantReport,
) -> Result<()> {
    let name = kind.name();
    let section = kind.resolve(None)?;
    let build = |batch: &(Tensor, Tensor), device: &Device| {
        registry::build_for_training(
            kind,
            &section,
            spec,
            Some((&batch.0, &batch.1)),
            args.seed,
            device,
        )
    };
    let mut cpu_model = build(&cpu_batches[0], &Device::Cpu)?;
    let mut device_model = build(&device_batches[0], device)?;
    copy_weights(cpu_model.as_ref(), device_model.as_mut())?;
    check_on_device(device_model.as_ref(), device)?;
    report.parameters = Some(device_model.params().count_trainable(""));
    report.variant_config = Some(device_model.config_json()?);

    eprintln!("gpu-check: {name}: one step on cpu and on {}", args.device);
    let mut rng = SeededRng::new(args.seed).fork(TRAIN_STREAM);
    let agreement = check_agreement(
        cpu_model.as_mut(),
        device_model.as_mut(),
        &cpu_batches[0],
        &device_batches[0],
        &mut rng,
    )?;
    drop(cpu_model);
    eprintln!("gpu-check: {name}: {}", output::agreement_line(&agreement));
    report.agreement = Some(agreement);

    eprintln!("gpu-check: {name}: {} training steps", args.steps);
    let training = measure_throughput(device_model.as_mut(), device_batches, &mut rng, device)?;
    check_on_device(device_model.as_ref(), device)?;
    report.training = Some(training);

    eprintln!("gpu-check: {name}: inference latency");
    let ode_steps = kind.integrates_ode().then_some(args.inference_steps);
    let options = InferenceOptions {
        steps: ode_steps,
        ..InferenceOptions::default()
    };
    let images = &device_batches[0].0;
    let mut latency = measure_latency(
        device_model.as_ref(),
        images,
        &options,
        args.latency_runs,
        args.seed,
        device,
    )?;
    latency.ode_steps = ode_steps;
    report.inference = Some(latency);
    Ok(())
}

/// Fails unless every variable of `model` lives on `device`.
fn check_on_device(model: &dyn Variant, device: &Device) -> Result<()> {
    for (name, var) in model.params().all_vars() {
        if !var.device().same_device(device) {
            bail!(
                "variable `{name}` is on {:?}, not on the checked device {:?}",
                var.device().location(),
                device.location()
            );
        }
    }
    Ok(())
}

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

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use noprop_core::{InferenceOptions, ModelSpec, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use serde::Serialize;

use crate::atomic::write_atomic;
use crate::cli::GpuCheckArgs;
use crate::registry::{self, VariantEntry};
use crate::train::{EVAL_STREAM, TRAIN_STREAM};

/// Largest relative difference allowed between a device and a CPU tensor.
pub const TOLERANCE: f64 = 1e-3;
/// Floor of the denominator of the relative differences.
const SCALE_FLOOR: f64 = 1e-6;
/// Fraction of its group's largest `max |cpu|` below which a state
/// tensor's own scale is not used (see the module doc). An f32 reduction
/// is accurate to ~1e-6 of the values summed, so a tensor at 1e-2 of its
/// group's scale keeps rounding differences near 1e-4 of the floor, well
/// under [`TOLERANCE`]; a real error (a missing term, a wrong factor) is
/// of the order of the group's gradients and still fails.
pub const GROUP_FLOOR: f64 = 1e-2;

/// How one tensor differs between the device and the CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDiff {
    pub name: String,
    /// `max |dev - cpu|`.
    pub max_abs_diff: f64,
    /// `max |dev - cpu| / max(scale, 1e-6)`, `scale` = `max |cpu|` (for
    /// optimizer state, floored at [`GROUP_FLOOR`] times its group's);
    /// infinite for a NaN or a shape mismatch.
    pub rel_diff: f64,
    /// Scalars in the tensor.
    pub elements: usize,
    /// Scalars whose own `|dev - cpu|`, relative to the same scale, reaches
    /// the tolerance (a few: isolated elements; many: a systematic difference).
    pub elements_over: usize,
}

/// The outcome of the one-step comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// The copy was exact, and the loss and every optimizer state tensor
    /// (the gradients) are within [`TOLERANCE`].
    pub ok: bool,
    /// Zero difference everywhere (expected CPU against CPU).
    pub exact: bool,
    pub tolerance: f64,
    /// The device model held exactly the CPU weights before the step.
    pub copy_exact: bool,
    pub loss_cpu: f64,
    pub loss_device: f64,
    pub loss_rel_diff: f64,
    /// Variables compared after the step (parameters and BatchNorm
    /// running statistics).
    pub tensors: usize,
    /// The variable that differs most (relative), if any.
    pub worst: Option<TensorDiff>,
    /// Every variable at or over the tolerance, worst first: reported, not
    /// part of the verdict (see the module doc).
    pub variables_over: Vec<TensorDiff>,
    /// Optimizer state tensors compared after the step (Adam's moments:
    /// after one step `exp_avg` is 0.1 x the gradient, weight decay
    /// included, so this compares the gradients).
    pub optimizer_tensors: usize,
    /// The optimizer state tensor that differs most (relative to its
    /// floored scale), if any.
    pub optimizer_worst: Option<TensorDiff>,
    /// Every optimizer state tensor at or over the tolerance, worst first:
    /// these fail the check.
    pub optimizer_failing: Vec<TensorDiff>,
}

/// Training speed on the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    pub batch_size: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The loss of every timed step.
    pub losses: Vec<f64>,
}

/// Inference latency on the device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// ODE steps (CT, FM); `None` for DT (always its T blocks).
    pub ode_steps: Option<usize>,
    /// Timed calls per batch size (after one warm-up call each).
    pub runs: usize,
    pub batch_size: usize,
    /// Median milliseconds per call, batch of 1.
    pub ms_batch_1: f64,
    /// Median milliseconds per call, batch of `batch_size`.
    pub ms_batch: f64,
    /// Every timing (ms), batch of 1 then batch of `batch_size`.
    pub all_ms_batch_1: Vec<f64>,
    pub all_ms_batch: Vec<f64>,
}

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
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("--json {}: cannot write the report", path.display()))?;
        eprintln!("gpu-check: report written to {}", path.display());
    }
    if report.passed {
        eprintln!("gpu-check: passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("gpu-check: FAILED: {}", failures(&report).join("; "));
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
    let verdict = if agreement.ok { "ok" } else { "FAILED" };
    let worst = |w: Option<&TensorDiff>| {
        w.map_or("-".into(), |w| {
            format!(
                "{} ({:.3e}, {} of {} elements over)",
                w.name, w.rel_diff, w.elements_over, w.elements
            )
        })
    };
    eprintln!(
        "gpu-check: {name}: agreement {verdict}: loss {} vs {}; worst variable {}; worst optimizer state {}",
        agreement.loss_cpu,
        agreement.loss_device,
        worst(agreement.worst.as_ref()),
        worst(agreement.optimizer_worst.as_ref()),
    );
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

/// Makes `to` hold exactly the variables of `from` (parameters and
/// BatchNorm statistics), moved to `to`'s device by [`ParamStore::load`],
/// which also refuses missing, extra or misshapen tensors.
///
/// [`ParamStore::load`]: noprop_core::ParamStore::load
pub fn copy_weights(from: &dyn Variant, to: &mut dyn Variant) -> Result<()> {
    let tensors: HashMap<String, Tensor> = from.params().named_tensors().into_iter().collect();
    to.params()
        .load(&tensors)
        .context("cannot copy the CPU weights into the device model")
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

/// One training step of each model on the same batch with the same
/// generator state (`rng`, which the device step advances), then the
/// comparison of their losses, variables and optimizer states.
pub fn check_agreement(
    cpu: &mut dyn Variant,
    device: &mut dyn Variant,
    cpu_batch: &(Tensor, Tensor),
    device_batch: &(Tensor, Tensor),
    rng: &mut SeededRng,
) -> Result<Agreement> {
    let copy_exact = compare_tensors(
        cpu.params().named_tensors(),
        device.params().named_tensors(),
        false,
    )?
    .iter()
    .all(|d| d.max_abs_diff == 0.0);
    cpu.begin_epoch(0)?;
    device.begin_epoch(0)?;
    let cpu_step = cpu
        .train_step(&cpu_batch.0, &cpu_batch.1, &mut rng.clone())
        .context("the CPU training step failed")?;
    let device_step = device
        .train_step(&device_batch.0, &device_batch.1, rng)
        .context("the device training step failed")?;
    let variables = compare_tensors(
        cpu.params().named_tensors(),
        device.params().named_tensors(),
        false,
    )?;
    let optimizer = compare_tensors(cpu.optimizer_state()?, device.optimizer_state()?, true)
        .context("optimizer state")?;
    let loss_rel_diff = relative(
        (device_step.loss - cpu_step.loss).abs(),
        cpu_step.loss.abs(),
    );
    let failing = |diffs: &[TensorDiff]| -> Vec<TensorDiff> {
        diffs
            .iter()
            .filter(|d| d.rel_diff >= TOLERANCE)
            .cloned()
            .collect()
    };
    let (variables_over, failing_optimizer) = (failing(&variables), failing(&optimizer));
    let ok = copy_exact
        && failing_optimizer.is_empty()
        && loss_rel_diff < TOLERANCE
        && cpu_step.loss.is_finite()
        && device_step.loss.is_finite();
    let exact = copy_exact
        && loss_rel_diff == 0.0
        && variables
            .iter()
            .chain(&optimizer)
            .all(|d| d.max_abs_diff == 0.0);
    Ok(Agreement {
        ok,
        exact,
        tolerance: TOLERANCE,
        copy_exact,
        loss_cpu: cpu_step.loss,
        loss_device: device_step.loss,
        loss_rel_diff,
        tensors: variables.len(),
        worst: variables.first().cloned(),
        variables_over,
        optimizer_tensors: optimizer.len(),
        optimizer_worst: optimizer.first().cloned(),
        optimizer_failing: failing_optimizer,
    })
}

/// `abs_diff / max(scale, 1e-6)`, infinite for NaN.
fn relative(abs_diff: f64, scale: f64) -> f64 {
    let rel = abs_diff / scale.max(SCALE_FLOOR);
    if rel.is_nan() {
        f64::INFINITY
    } else {
        rel
    }
}

/// The group of an optimizer state tensor for [`GROUP_FLOOR`]: its first
/// three name components (`optim.block.3`: one DT block; `optim.head.weight`)
/// and its last (`exp_avg`, `exp_avg_sq`, `step`: one kind of state).
pub fn state_group(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let head = parts[..parts.len().min(3)].join(".");
    format!("{head}|{}", parts.last().copied().unwrap_or(""))
}

/// Each `device` tensor against the same-named `cpu` one (both lists must
/// hold the same names), worst relative difference first. With
/// `group_floor`, a tensor's scale is at least [`GROUP_FLOOR`] times the
/// largest scale in its [`state_group`].
pub fn compare_tensors(
    cpu: Vec<(String, Tensor)>,
    device: Vec<(String, Tensor)>,
    group_floor: bool,
) -> Result<Vec<TensorDiff>> {
    let mut device: HashMap<String, Tensor> = device.into_iter().collect();
    if cpu.len() != device.len() {
        bail!(
            "the CPU model has {} tensors, the device model {}",
            cpu.len(),
            device.len()
        );
    }
    let pairs = cpu
        .into_iter()
        .map(|(name, c)| {
            let d = device
                .remove(&name)
                .with_context(|| format!("the device model has no tensor `{name}`"))?;
            let (c_dims, d_dims) = (c.dims().to_vec(), d.dims().to_vec());
            let (c, d) = (host_values(&c)?, host_values(&d)?);
            let scale = c.iter().fold(0f64, |m, x| m.max(x.abs()));
            Ok((name, scale, (c, c_dims), (d, d_dims)))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut group_scale: HashMap<String, f64> = HashMap::new();
    if group_floor {
        for (name, scale, _, _) in &pairs {
            let entry = group_scale.entry(state_group(name)).or_insert(0.0);
            *entry = entry.max(*scale);
        }
    }
    let mut diffs: Vec<TensorDiff> = pairs
        .into_iter()
        .map(|(name, scale, (c, c_dims), (d, d_dims))| {
            let floor = group_scale
                .get(&state_group(&name))
                .map_or(0.0, |g| GROUP_FLOOR * g);
            tensor_diff(name, scale.max(floor), (&c, &c_dims), (&d, &d_dims))
        })
        .collect();
    diffs.sort_by(|a, b| b.rel_diff.total_cmp(&a.rel_diff));
    Ok(diffs)
}

/// How `d` differs from `c` relative to `scale` (see [`TensorDiff`]).
fn tensor_diff(
    name: String,
    scale: f64,
    (c, c_dims): (&[f64], &[usize]),
    (d, d_dims): (&[f64], &[usize]),
) -> TensorDiff {
    let elements = c.len();
    if c_dims != d_dims {
        return TensorDiff {
            name,
            max_abs_diff: f64::INFINITY,
            rel_diff: f64::INFINITY,
            elements,
            elements_over: elements,
        };
    }
    // NaN anywhere makes the difference NaN, hence infinite below.
    let errors: Vec<f64> = c.iter().zip(d).map(|(x, y)| (y - x).abs()).collect();
    let max_abs_diff = errors.iter().fold(0f64, |m, &e| {
        if e.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(e)
        }
    });
    TensorDiff {
        name,
        max_abs_diff,
        rel_diff: relative(max_abs_diff, scale),
        elements,
        elements_over: errors
            .iter()
            .filter(|&&e| relative(e, scale) >= TOLERANCE)
            .count(),
    }
}

fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// One warm-up step on the first batch, then one timed step on each of the
/// others.
pub fn measure_throughput(
    model: &mut dyn Variant,
    batches: &[(Tensor, Tensor)],
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Throughput> {
    let ((warm_images, warm_labels), timed) =
        batches.split_first().context("no training batch to time")?;
    model.train_step(warm_images, warm_labels, rng)?;
    device.synchronize()?;
    let mut losses = Vec::with_capacity(timed.len());
    let mut images = 0;
    let started = Instant::now();
    for (x, y) in timed {
        losses.push(model.train_step(x, y, rng)?.loss);
        images += x.dim(0)?;
    }
    device.synchronize()?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(loss) = losses.iter().find(|l| !l.is_finite()) {
        bail!("the training loss became {loss} on the device");
    }
    Ok(Throughput {
        steps: timed.len(),
        batch_size: warm_images.dim(0)?,
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
        losses,
    })
}

/// Median inference time on the first image and on all of `images`.
pub fn measure_latency(
    model: &dyn Variant,
    images: &Tensor,
    options: &InferenceOptions,
    runs: usize,
    seed: u64,
    device: &Device,
) -> Result<Latency> {
    let mut rng = SeededRng::new(seed).fork(EVAL_STREAM);
    let mut time = |x: &Tensor| -> Result<Vec<f64>> {
        model.predict_runs(x, options, 1, &mut rng)?;
        device.synchronize()?;
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                model.predict_runs(x, options, 1, &mut rng)?;
                device.synchronize()?;
                Ok(1000.0 * started.elapsed().as_secs_f64())
            })
            .collect()
    };
    let all_ms_batch_1 = time(&images.narrow(0, 0, 1)?)?;
    let all_ms_batch = time(images)?;
    Ok(Latency {
        ode_steps: options.steps,
        runs,
        batch_size: images.dim(0)?,
        ms_batch_1: median(&all_ms_batch_1),
        ms_batch: median(&all_ms_batch),
        all_ms_batch_1,
        all_ms_batch,
    })
}

/// The median (the mean of the middle two for an even count; NaN if empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// What failed, one entry per failing variant.
fn failures(report: &Report) -> Vec<String> {
    report
        .variants
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            let why = match (&r.error, &r.agreement) {
                (Some(e), _) => e.clone(),
                (None, Some(a)) if !a.copy_exact => {
                    "the device model did not hold the CPU weights after the copy".into()
                }
                (None, Some(a)) => match a.optimizer_failing.first() {
                    Some(w) => format!(
                        "`{}` differs by {:.3e} relative (tolerance {:e}; {} of {} elements over; {} tensors over)",
                        w.name,
                        w.rel_diff,
                        a.tolerance,
                        w.elements_over,
                        w.elements,
                        a.optimizer_failing.len()
                    ),
                    None => format!(
                        "the loss differs: cpu {}, device {} ({:.3e} relative)",
                        a.loss_cpu, a.loss_device, a.loss_rel_diff
                    ),
                },
                (None, None) => "not checked".into(),
            };
            format!("{}: {why}", r.variant)
        })
        .collect()
}

/// The human-readable summary.
fn table(report: &Report) -> String {
    let mut out = format!(
        "noprop gpu-check: {} vs cpu, {}, batch {}, {} timed steps, {} ODE steps (CT, FM), seed {}\n",
        report.device,
        report.data,
        report.batch_size,
        report.steps,
        report.inference_steps,
        report.seed
    );
    let header = vec![
        "variant".to_string(),
        "agreement".into(),
        "loss cpu".into(),
        match report.device.as_str() {
            "cpu" => "loss cpu (copy)".to_string(),
            device => format!("loss {device}"),
        },
        "worst variable (rel. diff)".into(),
        "worst optimizer state".into(),
        "images/s".into(),
        "ms/batch of 1".into(),
        format!("ms/batch of {}", report.batch_size),
    ];
    let mut rows = vec![header];
    for r in &report.variants {
        let a = r.agreement.as_ref();
        let verdict = match (&r.error, a) {
            (Some(_), _) => "ERROR",
            (None, Some(a)) if a.exact => "exact",
            (None, Some(a)) if a.ok => "ok",
            _ => "FAILED",
        };
        let worst = |w: Option<&TensorDiff>| {
            w.map_or("-".into(), |w| format!("{} ({:.2e})", w.name, w.rel_diff))
        };
        let num = |x: Option<f64>, digits: usize| x.map_or("-".into(), |v| format!("{v:.digits$}"));
        rows.push(vec![
            r.variant.to_string(),
            verdict.to_string(),
            num(a.map(|a| a.loss_cpu), 6),
            num(a.map(|a| a.loss_device), 6),
            worst(a.and_then(|a| a.worst.as_ref())),
            worst(a.and_then(|a| a.optimizer_worst.as_ref())),
            num(r.training.as_ref().map(|t| t.images_per_second), 1),
            num(r.inference.as_ref().map(|l| l.ms_batch_1), 3),
            num(r.inference.as_ref().map(|l| l.ms_batch), 3),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i < 2 || i == 4 || i == 5 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    for r in &report.variants {
        if let Some(e) = &r.error {
            out += &format!("{}: error: {e}\n", r.variant);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, blobs, LinearSoftmax};

    fn batch() -> (Tensor, Tensor) {
        let split = blobs(24, 1);
        (split.images().clone(), split.labels().clone())
    }

    #[test]
    fn cpu_against_cpu_agrees_exactly() {
        let spec = blob_spec();
        let cpu = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        // Another seed: only the copy makes the weights equal.
        let mut other = LinearSoftmax::new(spec, 2, &Device::Cpu).unwrap();
        copy_weights(&cpu, &mut other).unwrap();
        let mut cpu = cpu;
        let b = batch();
        let a = check_agreement(&mut cpu, &mut other, &b, &b, &mut SeededRng::new(0)).unwrap();
        assert!(a.ok && a.exact && a.copy_exact, "{a:?}");
        assert_eq!((a.tensors, a.optimizer_tensors), (2, 3));
        assert_eq!(a.loss_cpu, a.loss_device);
        assert!(a.variables_over.is_empty() && a.optimizer_failing.is_empty());
    }

    #[test]
    fn a_different_update_is_reported_but_only_different_gradients_fail() {
        let spec = blob_spec();
        let mut cpu = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        let mut other = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        copy_weights(&cpu, &mut other).unwrap();
        other.lr *= 1.5;
        let b = batch();
        let a = check_agreement(&mut cpu, &mut other, &b, &b, &mut SeededRng::new(0)).unwrap();
        // Same weights and batch: same loss and gradients; only the update
        // (the variables) differs, which is reported but does not decide.
        assert!(a.ok && !a.exact && a.copy_exact, "{a:?}");
        assert_eq!(a.loss_rel_diff, 0.0);
        let worst = a.worst.clone().unwrap();
        assert!(worst.rel_diff >= TOLERANCE, "{worst:?}");
        assert_eq!(a.variables_over[0], worst);
        assert!(worst.elements_over >= 1 && worst.elements_over <= worst.elements);
        assert!(a.optimizer_failing.is_empty(), "{a:?}");

        // Another batch for the second model: the gradients differ and fail,
        // naming the tensor.
        let mut cpu = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        let mut other = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        copy_weights(&cpu, &mut other).unwrap();
        let shifted = ((&b.0 * 1.5).unwrap(), b.1.clone());
        let a =
            check_agreement(&mut cpu, &mut other, &b, &shifted, &mut SeededRng::new(0)).unwrap();
        assert!(!a.ok && a.copy_exact, "{a:?}");
        let failing = &a.optimizer_failing[0];
        assert!(failing.name.starts_with("optim.velocity."), "{failing:?}");
        assert!(failing.rel_diff >= TOLERANCE, "{failing:?}");
    }

    #[test]
    fn rounding_noise_in_a_near_zero_gradient_is_judged_against_its_group() {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::new(v, &dev).unwrap();
        // A block's big gradient and a near-zero one (a bias before
        // BatchNorm) whose noise differs completely between devices.
        let cpu = vec![
            (
                "optim.block.3.fc.weight.exp_avg".to_string(),
                t(&[0.5, -0.2]),
            ),
            (
                "optim.block.3.bn.bias.exp_avg".to_string(),
                t(&[1e-8, -2e-8]),
            ),
        ];
        let device = vec![
            (
                "optim.block.3.fc.weight.exp_avg".to_string(),
                t(&[0.5, -0.2]),
            ),
            (
                "optim.block.3.bn.bias.exp_avg".to_string(),
                t(&[-1e-8, 3e-8]),
            ),
        ];
        let plain = compare_tensors(cpu.clone(), device.clone(), false).unwrap();
        assert!(plain[0].rel_diff >= TOLERANCE, "{plain:?}");
        let floored = compare_tensors(cpu, device, true).unwrap();
        assert!(floored[0].rel_diff < TOLERANCE / 10.0, "{floored:?}");
        // Groups: the model part and the kind of state.
        assert_eq!(
            state_group("optim.block.3.fc.weight.exp_avg"),
            "optim.block.3|exp_avg"
        );
        assert_eq!(state_group("optim.head.bias.step"), "optim.head.bias|step");
        assert_eq!(state_group("optim.steps"), "optim.steps|steps");
    }

    #[test]
    fn a_model_that_was_not_copied_is_reported() {
        let spec = blob_spec();
        let mut cpu = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        let mut other = LinearSoftmax::new(spec, 2, &Device::Cpu).unwrap();
        let b = batch();
        let a = check_agreement(&mut cpu, &mut other, &b, &b, &mut SeededRng::new(0)).unwrap();
        assert!(!a.ok && !a.copy_exact, "{a:?}");
    }

    #[test]
    fn relative_differences_and_medians() {
        assert_eq!(relative(2e-3, 4.0), 5e-4);
        // A tensor of zeros is measured against 1e-6, not divided by zero.
        assert_eq!(relative(1e-9, 0.0), 1e-9 / 1e-6);
        assert_eq!(relative(f64::NAN, 1.0), f64::INFINITY);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn throughput_and_latency_time_the_device() {
        let spec = blob_spec();
        let mut model = LinearSoftmax::new(spec, 1, &Device::Cpu).unwrap();
        let b = batch();
        let batches = vec![b.clone(), b.clone(), b.clone()];
        let mut rng = SeededRng::new(0);
        let t = measure_throughput(&mut model, &batches, &mut rng, &Device::Cpu).unwrap();
        assert_eq!((t.steps, t.batch_size, t.losses.len()), (2, 24, 2));
        assert!(t.images_per_second > 0.0 && t.seconds > 0.0, "{t:?}");
        let options = InferenceOptions::default();
        let l = measure_latency(&model, &b.0, &options, 3, 0, &Device::Cpu).unwrap();
        assert_eq!((l.runs, l.batch_size), (3, 24));
        assert_eq!((l.all_ms_batch_1.len(), l.all_ms_batch.len()), (3, 3));
        assert_eq!(l.ms_batch, median(&l.all_ms_batch));
    }
}

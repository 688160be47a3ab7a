//! Does one training step on the device agree with the same step on the
//! CPU? The relative differences of the loss, the variables and the
//! optimizer state, the groups and floors that keep rounding noise in
//! near-zero gradients from deciding, and the verdict ([`Agreement`]).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use noprop_core::{SeededRng, Variant};
use serde::Serialize;

/// Largest relative difference allowed between a device and a CPU tensor.
pub const TOLERANCE: f64 = 1e-3;
/// Floor of the denominator of the relative differences.
const SCALE_FLOOR: f64 = 1e-6;
/// Fraction of its group's largest `max |cpu|` below which a state
/// tensor's own scale is not used (see [`super`], step 1). An f32 reduction
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
    /// part of the verdict (see [`super`], step 1).
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
    fn relative_differences() {
        assert_eq!(relative(2e-3, 4.0), 5e-4);
        // A tensor of zeros is measured against 1e-6, not divided by zero.
        assert_eq!(relative(1e-9, 0.0), 1e-9 / 1e-6);
        assert_eq!(relative(f64::NAN, 1.0), f64::INFINITY);
    }
}

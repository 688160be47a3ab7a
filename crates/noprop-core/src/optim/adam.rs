//! Adam and AdamW with exportable state, matching PyTorch's update rules.
//!
//! For a parameter p with gradient g at its k-th update (k counts the steps
//! in which p had a gradient), learning rate lr and weight decay wd of its
//! group, exactly as `torch.optim.Adam` / `torch.optim.AdamW` (amsgrad off,
//! maximize off):
//!
//! ```text
//! Adam  (L2):        g = g + wd p
//! AdamW (decoupled): p = p (1 - lr wd)
//! m = beta1 m + (1 - beta1) g
//! v = beta2 v + (1 - beta2) g^2
//! p = p - (lr / (1 - beta1^k)) m / ( sqrt(v) / sqrt(1 - beta2^k) + eps )
//! ```
//!
//! The moments start at zero, created at a parameter's first update (as
//! PyTorch's lazily created state). Parameters without a gradient in a
//! `GradStore` are skipped: neither they, their moments nor their step count
//! change (PyTorch skips `p.grad is None`).
//!
//! State is exported per parameter name as `"{name}.step"` (`[1]` u32),
//! `"{name}.exp_avg"` and `"{name}.exp_avg_sq"` (the parameter's shape and
//! dtype), only for parameters that have been updated; loading it back makes
//! the next updates bitwise identical to those of an optimizer that was never
//! stopped. Several optimizers of one model must have disjoint parameter
//! names (or the caller prefixes their state names).

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Hyperparameters shared by every group, and the defaults of a group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Default learning rate of a group.
    pub lr: f64,
    /// Exponential decay rate of the first-moment estimate (PyTorch `betas[0]`).
    pub beta1: f64,
    /// Exponential decay rate of the second-moment estimate (PyTorch `betas[1]`).
    pub beta2: f64,
    /// Term added to the denominator for numerical stability.
    pub eps: f64,
    /// Default weight decay of a group.
    pub weight_decay: f64,
    /// true: AdamW (decoupled decay); false: Adam (L2 decay added to the gradient).
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    /// PyTorch's Adam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }
}

impl AdamConfig {
    /// Adam with L2 weight decay (`torch.optim.Adam(lr=lr, weight_decay=wd)`).
    pub fn adam(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            weight_decay,
            ..Default::default()
        }
    }

    /// AdamW (`torch.optim.AdamW(lr=lr, weight_decay=wd)`).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            weight_decay,
            decoupled_weight_decay: true,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = self.lr >= 0.0
            && self.lr.is_finite()
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps >= 0.0
            && self.weight_decay >= 0.0
            && self.weight_decay.is_finite();
        if !ok {
            candle_core::bail!("adam: invalid hyperparameters {self:?} (need lr >= 0, betas in [0, 1), eps >= 0, weight_decay >= 0)");
        }
        Ok(())
    }
}

/// Parameters sharing a learning rate and weight decay. `None` takes the
/// [`AdamConfig`] value.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The group's variables with their names.
    pub params: Vec<(String, Var)>,
    /// The group's learning rate (`None`: [`AdamConfig::lr`]).
    pub lr: Option<f64>,
    /// The group's weight decay (`None`: [`AdamConfig::weight_decay`]).
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group with the configuration's learning rate and weight decay.
    pub fn new(params: Vec<(String, Var)>) -> Self {
        Self {
            params,
            lr: None,
            weight_decay: None,
        }
    }

    /// Sets the group's own learning rate.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }

    /// Sets the group's own weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

#[derive(Debug, Clone)]
struct Moments {
    step: u32,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

#[derive(Debug)]
struct Group {
    params: Vec<(String, Var)>,
    lr: f64,
    weight_decay: f64,
}

/// Adam / AdamW over named parameters in groups (see the module doc).
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    groups: Vec<Group>,
    /// Multiplies every group's learning rate (a warm-up or decay schedule
    /// on top of per-group rates); 1 by default.
    lr_scale: f64,
    /// A second multiplier, set by the caller that drives training (the
    /// trainer's run-long schedule), so that it composes with a variant's
    /// own `lr_scale` (CT's warm-up); 1 by default.
    schedule_factor: f64,
    state: BTreeMap<String, Moments>,
}

const STATE_SUFFIXES: [&str; 3] = [".step", ".exp_avg", ".exp_avg_sq"];

impl Adam {
    /// An optimizer over `groups`. Errors on invalid hyperparameters or a
    /// parameter name listed twice.
    pub fn new(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = HashSet::new();
        let mut built = Vec::with_capacity(groups.len());
        for g in groups {
            let lr = g.lr.unwrap_or(config.lr);
            let weight_decay = g.weight_decay.unwrap_or(config.weight_decay);
            AdamConfig {
                lr,
                weight_decay,
                ..config
            }
            .validate()?;
            for (name, _) in &g.params {
                if !seen.insert(name.clone()) {
                    candle_core::bail!("adam: parameter `{name}` is listed twice");
                }
            }
            built.push(Group {
                params: g.params,
                lr,
                weight_decay,
            });
        }
        Ok(Self {
            config,
            groups: built,
            lr_scale: 1.0,
            schedule_factor: 1.0,
            state: BTreeMap::new(),
        })
    }

    /// One group holding `params`, with the configuration's lr and decay.
    pub fn with_params(params: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        Self::new(vec![ParamGroup::new(params)], config)
    }

    /// The hyperparameters the optimiser was built with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// Every parameter name, group by group.
    pub fn param_names(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    /// Every parameter with its variable, group by group (the order of
    /// [`Adam::param_names`]).
    pub fn named_params(&self) -> Vec<(String, Var)> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }

    /// Sets the learning rate of every group (e.g. from a warm-up schedule).
    pub fn set_lr(&mut self, lr: f64) {
        for g in &mut self.groups {
            g.lr = lr;
        }
    }

    /// Sets one group's learning rate.
    pub fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let n = self.groups.len();
        match self.groups.get_mut(group) {
            Some(g) => {
                g.lr = lr;
                Ok(())
            }
            None => candle_core::bail!("adam: no group {group} (have {n})"),
        }
    }

    /// Scales every group's learning rate by `scale` from the next step on
    /// (a warm-up: each group keeps its own rate, and the schedule needs no
    /// knowledge of the groups).
    pub fn set_lr_scale(&mut self, scale: f64) -> Result<()> {
        if !(scale.is_finite() && scale >= 0.0) {
            candle_core::bail!("adam: lr scale must be finite and >= 0, got {scale}");
        }
        self.lr_scale = scale;
        Ok(())
    }

    /// Multiplies every group's learning rate by `factor` from the next
    /// step on, on top of [`Adam::set_lr_scale`]: the run-long schedule of
    /// whoever drives training ([`crate::LrSchedule`]).
    pub fn set_schedule_factor(&mut self, factor: f64) -> Result<()> {
        if !(factor.is_finite() && factor >= 0.0) {
            candle_core::bail!("adam: schedule factor must be finite and >= 0, got {factor}");
        }
        self.schedule_factor = factor;
        Ok(())
    }

    /// A group's base rate times both multipliers. With both at 1 this is
    /// the base rate bitwise (x * 1.0 == x).
    fn effective_lr(&self, group_lr: f64) -> f64 {
        group_lr * self.lr_scale * self.schedule_factor
    }

    /// The learning rate of group 0 in use (scale and schedule included; 0
    /// when there are no groups).
    pub fn lr(&self) -> f64 {
        self.groups.first().map_or(0.0, |g| self.effective_lr(g.lr))
    }

    /// A group's (learning rate in use, scale included; weight decay).
    pub fn group_hyperparameters(&self, group: usize) -> Option<(f64, f64)> {
        self.groups
            .get(group)
            .map(|g| (self.effective_lr(g.lr), g.weight_decay))
    }

    /// The number of updates parameter `name` has received.
    pub fn step_count(&self, name: &str) -> u32 {
        self.state.get(name).map_or(0, |m| m.step)
    }

    /// Computes gradients of `loss` and applies one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            decoupled_weight_decay,
            ..
        } = self.config;
        for group in &self.groups {
            let (lr, wd) = (self.effective_lr(group.lr), group.weight_decay);
            for (name, var) in &group.params {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let param = var.as_tensor().detach();
                let grad = grad.to_dtype(param.dtype())?;
                let moments = self.state.get(name);
                let step = moments.map_or(0, |m| m.step) + 1;
                let coeffs = StepCoefficients {
                    lr,
                    weight_decay: wd,
                    decoupled_weight_decay,
                    beta1,
                    beta2,
                    eps,
                    step,
                };
                let (new_param, exp_avg, exp_avg_sq) =
                    match fused_cpu_update(&param, &grad, moments, &coeffs)? {
                        Some(updated) => updated,
                        None => tensor_update(&param, &grad, moments, &coeffs)?,
                    };
                var.set(&new_param)?;
                self.state.insert(
                    name.clone(),
                    Moments {
                        step,
                        exp_avg,
                        exp_avg_sq,
                    },
                );
            }
        }
        Ok(())
    }

    fn find_var(&self, name: &str) -> Option<&Var> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The state as named tensors, sorted by name (see the module doc).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.state.len());
        for (name, m) in &self.state {
            let device = m.exp_avg.device();
            out.push((format!("{name}.exp_avg"), m.exp_avg.clone()));
            out.push((format!("{name}.exp_avg_sq"), m.exp_avg_sq.clone()));
            out.push((format!("{name}.step"), Tensor::new(&[m.step], device)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`Adam::state`] with every name behind `prefix` (a checkpoint's
    /// `optim.`), for a model with one optimizer.
    pub fn prefixed_state(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .state()?
            .into_iter()
            .map(|(name, t)| (format!("{prefix}{name}"), t))
            .collect())
    }

    /// Restores [`Adam::prefixed_state`]: every name must start with
    /// `prefix` (the error names `who`, the model), then as
    /// [`Adam::load_state`].
    pub fn load_prefixed_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
        who: &str,
    ) -> Result<()> {
        let mut inner = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            let Some(rest) = name.strip_prefix(prefix) else {
                candle_core::bail!("{who}: optimizer state `{name}` lacks the `{prefix}` prefix");
            };
            inner.insert(rest.to_string(), t.clone());
        }
        self.load_state(&inner)
    }

    /// Replaces the state with what [`Adam::state`] returned. Every name must
    /// belong to one of this optimizer's parameters; a parameter has either
    /// all three entries (with its shape) or none (never updated).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for key in tensors.keys() {
            let param = STATE_SUFFIXES
                .iter()
                .find_map(|s| key.strip_suffix(s))
                .filter(|p| self.find_var(p).is_some());
            if param.is_none() {
                candle_core::bail!("adam: unexpected optimizer state `{key}`");
            }
        }
        let mut state = BTreeMap::new();
        for name in self.param_names() {
            let var = self.find_var(&name).expect("listed parameter");
            let get = |suffix: &str| tensors.get(&format!("{name}{suffix}"));
            match (get(".step"), get(".exp_avg"), get(".exp_avg_sq")) {
                (None, None, None) => {}
                (Some(step), Some(exp_avg), Some(exp_avg_sq)) => {
                    let step = step.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                    if step.len() != 1 || step[0] == 0 {
                        candle_core::bail!("adam: `{name}.step` must be one positive count");
                    }
                    for (what, t) in [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)] {
                        if t.dims() != var.dims() {
                            candle_core::bail!(
                                "adam: `{name}.{what}` has shape {:?}, the parameter {:?}",
                                t.dims(),
                                var.dims()
                            );
                        }
                    }
                    let to_param = |t: &Tensor| t.to_dtype(var.dtype())?.to_device(var.device());
                    state.insert(
                        name.clone(),
                        Moments {
                            step: step[0],
                            exp_avg: to_param(exp_avg)?,
                            exp_avg_sq: to_param(exp_avg_sq)?,
                        },
                    );
                }
                _ => candle_core::bail!(
                    "adam: incomplete state for `{name}` (need .step, .exp_avg and .exp_avg_sq)"
                ),
            }
        }
        self.state = state;
        Ok(())
    }
}

/// Everything one parameter's update needs besides its tensors.
struct StepCoefficients {
    lr: f64,
    weight_decay: f64,
    decoupled_weight_decay: bool,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// The update's number, from 1.
    step: u32,
}

impl StepCoefficients {
    fn bias_correction1(&self) -> f64 {
        1.0 - self.beta1.powi(self.step as i32)
    }

    fn bias_correction2_sqrt(&self) -> f64 {
        (1.0 - self.beta2.powi(self.step as i32)).sqrt()
    }
}

/// The update with candle tensor ops, on any device and dtype: the new
/// parameter and moments.
fn tensor_update(
    param: &Tensor,
    grad: &Tensor,
    moments: Option<&Moments>,
    k: &StepCoefficients,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (lr, wd) = (k.lr, k.weight_decay);
    let mut grad = grad.clone();
    let mut p = param.clone();
    if wd != 0.0 {
        if k.decoupled_weight_decay {
            p = (p * (1.0 - lr * wd))?;
        } else {
            grad = (grad + (param * wd)?)?;
        }
    }
    let (exp_avg, exp_avg_sq) = match moments {
        Some(m) => (m.exp_avg.clone(), m.exp_avg_sq.clone()),
        None => (param.zeros_like()?, param.zeros_like()?),
    };
    let exp_avg = ((exp_avg * k.beta1)? + (&grad * (1.0 - k.beta1))?)?;
    let exp_avg_sq = ((exp_avg_sq * k.beta2)? + (grad.sqr()? * (1.0 - k.beta2))?)?;
    let step_size = lr / k.bias_correction1();
    let denom = ((exp_avg_sq.sqrt()? / k.bias_correction2_sqrt())? + k.eps)?;
    let update = ((&exp_avg / denom)? * step_size)?;
    Ok(((p - update)?, exp_avg, exp_avg_sq))
}

/// The contiguous f32 elements of a CPU storage, or `None`.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(data)) => {
            let (start, end) = layout.contiguous_offsets()?;
            Some(&data[start..end])
        }
        _ => None,
    }
}

/// [`tensor_update`] in one pass over the elements, for contiguous f32 CPU
/// tensors (`None` otherwise). It performs the same f32 operations in the
/// same order as the tensor ops (candle computes `t * c` as the affine map
/// `t * (c as f32) + 0`, kept here because `+ 0` turns -0 into +0), so both
/// give bitwise-identical results (a test checks it); it reads the operands
/// in place and writes only the three results, skipping the ten
/// intermediate tensors.
fn fused_cpu_update(
    param: &Tensor,
    grad: &Tensor,
    moments: Option<&Moments>,
    k: &StepCoefficients,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let (p_storage, p_layout) = param.storage_and_layout();
    let (g_storage, g_layout) = grad.storage_and_layout();
    let (Some(p), Some(g)) = (cpu_f32(&p_storage, p_layout), cpu_f32(&g_storage, g_layout)) else {
        return Ok(None);
    };
    let n = p.len();
    let moment_guards = moments.map(|m| {
        (
            m.exp_avg.storage_and_layout(),
            m.exp_avg_sq.storage_and_layout(),
        )
    });
    let zeros;
    let (m, v) = match &moment_guards {
        Some(((m_storage, m_layout), (v_storage, v_layout))) => {
            match (cpu_f32(m_storage, m_layout), cpu_f32(v_storage, v_layout)) {
                (Some(m), Some(v)) => (m, v),
                _ => return Ok(None),
            }
        }
        // The first update starts from zero moments.
        None => {
            zeros = vec![0.0f32; n];
            (&zeros[..], &zeros[..])
        }
    };
    if g.len() != n || m.len() != n || v.len() != n {
        return Ok(None);
    }
    let (lr, wd) = (k.lr, k.weight_decay);
    let decoupled_decay = (wd != 0.0 && k.decoupled_weight_decay).then_some((1.0 - lr * wd) as f32);
    let l2_decay = (wd != 0.0 && !k.decoupled_weight_decay).then_some(wd as f32);
    let (beta1, one_minus_beta1) = (k.beta1 as f32, (1.0 - k.beta1) as f32);
    let (beta2, one_minus_beta2) = (k.beta2 as f32, (1.0 - k.beta2) as f32);
    let inv_bias_correction2_sqrt = (1.0 / k.bias_correction2_sqrt()) as f32;
    let eps = k.eps as f32;
    let step_size = (lr / k.bias_correction1()) as f32;
    let (mut new_p, mut new_m, mut new_v) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let outputs = new_p.iter_mut().zip(new_m.iter_mut()).zip(new_v.iter_mut());
    let inputs = p.iter().zip(g).zip(m).zip(v);
    for (((np, nm), nv), (((&p, &g), &m), &v)) in outputs.zip(inputs) {
        let g = match l2_decay {
            Some(wd) => g + (p * wd + 0.0),
            None => g,
        };
        let p = match decoupled_decay {
            Some(decay) => p * decay + 0.0,
            None => p,
        };
        *nm = (m * beta1 + 0.0) + (g * one_minus_beta1 + 0.0);
        *nv = (v * beta2 + 0.0) + ((g * g) * one_minus_beta2 + 0.0);
        let denom = (nv.sqrt() * inv_bias_correction2_sqrt + 0.0) * 1.0 + eps;
        *np = p - ((*nm / denom) * step_size + 0.0);
    }
    let (p, m, v) = (new_p, new_m, new_v);
    let (shape, dev) = (param.shape(), param.device());
    Ok(Some((
        Tensor::from_vec(p, shape, dev)?,
        Tensor::from_vec(m, shape, dev)?,
        Tensor::from_vec(v, shape, dev)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_cpu_update_is_bitwise_the_tensor_ops() {
        // Values spanning many magnitudes, zeros of both signs, in both
        // decay modes and without decay, over several steps (bias
        // corrections change) from zero and from carried moments.
        let mut rng = crate::SeededRng::new(11);
        let n = 1037;
        let draw = |rng: &mut crate::SeededRng, scale: f32| -> Vec<f32> {
            let v = rng
                .normal(n, &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            v.iter()
                .enumerate()
                .map(|(i, x)| match i % 50 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => x * 1e-6,
                    _ => x * scale * (1.0 + (i % 7) as f32),
                })
                .collect()
        };
        for (wd, decoupled) in [(0.0, false), (1e-2, false), (1e-2, true)] {
            let mut p = Tensor::new(draw(&mut rng, 0.1), &Device::Cpu).unwrap();
            let mut moments: Option<Moments> = None;
            for step in 1..=4u32 {
                let g = Tensor::new(draw(&mut rng, 1e-3), &Device::Cpu).unwrap();
                let k = StepCoefficients {
                    lr: 3e-3,
                    weight_decay: wd,
                    decoupled_weight_decay: decoupled,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    step,
                };
                let fused = fused_cpu_update(&p, &g, moments.as_ref(), &k)
                    .unwrap()
                    .expect("contiguous f32 CPU tensors take the fused path");
                let reference = tensor_update(&p, &g, moments.as_ref(), &k).unwrap();
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(&fused.0),
                    bits(&reference.0),
                    "param, wd {wd} step {step}"
                );
                assert_eq!(bits(&fused.1), bits(&reference.1), "exp_avg, step {step}");
                assert_eq!(
                    bits(&fused.2),
                    bits(&reference.2),
                    "exp_avg_sq, step {step}"
                );
                p = fused.0;
                moments = Some(Moments {
                    step,
                    exp_avg: fused.1,
                    exp_avg_sq: fused.2,
                });
            }
        }
        // Anything else (here f64) takes the tensor path.
        let p = Tensor::new(&[1f64, 2.0], &Device::Cpu).unwrap();
        let k = StepCoefficients {
            lr: 1e-3,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 1,
        };
        assert!(fused_cpu_update(&p, &p, None, &k).unwrap().is_none());
    }

    /// Parameters a [3] (group 0: lr 0.01, wd 0.1), b [1, 2] and c [1]
    /// (group 1: lr 0.05, wd 0), in `dtype`.
    fn setup(dtype: DType, config: AdamConfig) -> (Vec<Var>, Adam) {
        let dev = Device::Cpu;
        let var = |v: &[f64], shape: &[usize]| {
            Var::from_tensor(
                &Tensor::new(v, &dev)
                    .unwrap()
                    .reshape(shape)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        let a = var(&[0.5, -1.0, 2.0], &[3]);
        let b = var(&[1.5, -0.25], &[1, 2]);
        let c = var(&[3.0], &[1]);
        let groups = vec![
            ParamGroup::new(vec![("a".into(), a.clone())])
                .with_lr(0.01)
                .with_weight_decay(0.1),
            ParamGroup::new(vec![("b".into(), b.clone()), ("c".into(), c.clone())])
                .with_lr(0.05)
                .with_weight_decay(0.0),
        ];
        (vec![a, b, c], Adam::new(groups, config).unwrap())
    }

    /// Step k (1-based) minimises sum([1,2,3] a^2) + sum(sin b), plus c^2 on
    /// even steps only (so c has no gradient on odd steps).
    fn loss(vars: &[Var], k: usize) -> Tensor {
        let dev = vars[0].device();
        let wa = Tensor::new(&[1.0f64, 2.0, 3.0], dev)
            .unwrap()
            .to_dtype(vars[0].dtype())
            .unwrap();
        let mut l = (vars[0].as_tensor().sqr().unwrap() * wa)
            .unwrap()
            .sum_all()
            .unwrap();
        l = (l + vars[1].as_tensor().sin().unwrap().sum_all().unwrap()).unwrap();
        if k.is_multiple_of(2) {
            l = (l + vars[2].as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
        }
        l
    }

    fn values(v: &Var) -> Vec<f64> {
        v.as_tensor()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    #[test]
    fn adam_and_adamw_match_pytorch_reference_values() {
        // Reference values: five steps of the algorithm boxes of the
        // torch.optim.Adam / AdamW documentation, run in pure Python floats
        // (src/optim/adam_reference.py, written from the docs, not from this code).
        let cases = [
            (
                AdamConfig::adam(1.0, 0.0),
                [0.45009829521495615, -0.9500461601591704, 1.950022362227931],
                [0.41099827496871266, -1.64190455382191, 4.94083354569084],
                [
                    0.005074466705159509,
                    0.08057501670981099,
                    0.7279581308552908,
                ],
            ),
            (
                AdamConfig::adamw(1.0, 0.0),
                [0.44770854258970816, -0.9451608874937457, 1.9401468333246383],
                [0.39054280730974844, -1.598281806885405, 4.849048025006494],
                [
                    0.004584343521816447,
                    0.07638634993699664,
                    0.7014740622922568,
                ],
            ),
        ];
        let b_want = [1.2542618237449281, -0.4995966063961104];
        let c_want = 2.90002366873863;
        for (config, a_want, m_want, v_want) in cases {
            let (vars, mut opt) = setup(DType::F64, config);
            for k in 1..=5 {
                opt.backward_step(&loss(&vars, k)).unwrap();
                if k == 1 {
                    assert_eq!(values(&vars[2]), vec![3.0], "c had no gradient: untouched");
                }
            }
            let close = |got: &[f64], want: &[f64]| {
                got.iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() <= 1e-12 * w.abs().max(1.0))
            };
            assert!(close(&values(&vars[0]), &a_want), "{:?}", values(&vars[0]));
            assert!(close(&values(&vars[1]), &b_want), "{:?}", values(&vars[1]));
            assert!(
                close(&values(&vars[2]), &[c_want]),
                "{:?}",
                values(&vars[2])
            );
            assert_eq!((opt.step_count("a"), opt.step_count("c")), (5, 2));
            let state: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
            let host = |n: &str| state[n].to_vec1::<f64>().unwrap();
            assert!(close(&host("a.exp_avg"), &m_want));
            assert!(close(&host("a.exp_avg_sq"), &v_want));
            assert_eq!(state["c.step"].to_vec1::<u32>().unwrap(), vec![2]);
        }
    }

    #[test]
    fn resuming_from_exported_state_is_bitwise_identical() {
        let config = AdamConfig::adamw(1.0, 0.0);
        let (straight, mut opt) = setup(DType::F32, config);
        for k in 1..=5 {
            opt.backward_step(&loss(&straight, k)).unwrap();
        }
        // Three steps, export parameters and state, rebuild, two more steps.
        let (first, mut opt1) = setup(DType::F32, config);
        for k in 1..=3 {
            opt1.backward_step(&loss(&first, k)).unwrap();
        }
        let state: HashMap<String, Tensor> = opt1.state().unwrap().into_iter().collect();
        let (resumed, mut opt2) = setup(DType::F32, config);
        for (dst, src) in resumed.iter().zip(&first) {
            dst.set(&src.as_tensor().copy().unwrap()).unwrap();
        }
        opt2.load_state(&state).unwrap();
        for k in 4..=5 {
            opt2.backward_step(&loss(&resumed, k)).unwrap();
        }
        for (a, b) in straight.iter().zip(&resumed) {
            assert_eq!(values(a), values(b));
        }
        // Without the state the continuation differs (the test can fail).
        let (fresh, mut opt3) = setup(DType::F32, config);
        for (dst, src) in fresh.iter().zip(&first) {
            dst.set(&src.as_tensor().copy().unwrap()).unwrap();
        }
        for k in 4..=5 {
            opt3.backward_step(&loss(&fresh, k)).unwrap();
        }
        assert_ne!(values(&straight[0]), values(&fresh[0]));
    }

    #[test]
    fn lr_control_and_bad_state() {
        let (vars, mut opt) = setup(DType::F32, AdamConfig::adam(1e-3, 0.0));
        assert_eq!(opt.group_hyperparameters(0), Some((0.01, 0.1)));
        opt.set_lr(0.0);
        opt.backward_step(&loss(&vars, 2)).unwrap();
        assert_eq!(
            values(&vars[1]),
            vec![1.5, -0.25],
            "lr 0 leaves b unchanged"
        );
        opt.set_group_lr(1, 0.5).unwrap();
        assert_eq!(opt.group_hyperparameters(1), Some((0.5, 0.0)));
        assert!(opt.set_group_lr(2, 0.1).is_err());
        // The scale multiplies every group's own rate.
        opt.set_lr_scale(0.5).unwrap();
        assert_eq!(opt.group_hyperparameters(1), Some((0.25, 0.0)));
        assert!(opt.set_lr_scale(f64::NAN).is_err());
        // The schedule factor multiplies on top of the scale.
        opt.set_schedule_factor(0.5).unwrap();
        assert_eq!(opt.group_hyperparameters(1), Some((0.125, 0.0)));
        assert!(opt.set_schedule_factor(-1.0).is_err());
        assert!(opt.set_schedule_factor(f64::INFINITY).is_err());
        opt.set_schedule_factor(1.0).unwrap();
        opt.set_lr_scale(1.0).unwrap();

        let good: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
        let mut unknown = good.clone();
        unknown.insert("z.exp_avg".into(), good["a.exp_avg"].clone());
        assert!(opt
            .load_state(&unknown)
            .unwrap_err()
            .to_string()
            .contains("z.exp_avg"));
        let mut partial = good.clone();
        partial.remove("b.exp_avg_sq");
        assert!(opt.load_state(&partial).is_err());
        let mut wrong_shape = good.clone();
        wrong_shape.insert("b.exp_avg".into(), good["a.exp_avg"].clone());
        assert!(opt.load_state(&wrong_shape).is_err());
        opt.load_state(&good).unwrap();

        let dup = vec![ParamGroup::new(vec![
            ("a".into(), vars[0].clone()),
            ("a".into(), vars[1].clone()),
        ])];
        assert!(Adam::new(dup, AdamConfig::default()).is_err());
        let bad_beta = AdamConfig {
            beta1: 1.0,
            ..AdamConfig::default()
        };
        assert!(Adam::with_params(vec![], bad_beta).is_err());
    }
}

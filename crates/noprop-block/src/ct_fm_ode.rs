//! CT/FM inference on the CPU: the ODE integrated over rows of plain f32
//! buffers, with the block's first fusion layer split by input.
//!
//! The first fusion layer is linear in its input `[f, l, e]` (image
//! features, latent features, time features), so its pre-activation splits
//! into three column blocks of its weight `W1 = [W1_f | W1_l | W1_e]`:
//!
//! ```text
//! W1 [f, l, e] + b1 = (W1_f f + b1)  +  W1_e e(t)  +  W1_l l(z)
//!                      per image        per time     per image and step
//! ```
//!
//! During an ODE integration the image features f of a row never change
//! and the time features e(t) are the same for every row, so:
//!
//! - the **image part** `W1_f f + b1` is computed once per row, before the
//!   first step;
//! - the **time part** `W1_e relu(time_fc(emb(t)))` once per field
//!   evaluation time for the whole batch ([`CtFmOde::time_parts`]);
//! - only the **latent part** `W1_l relu(latent_fc(z))` and the layers after
//!   it are computed per row and per step.
//!
//! That is about 100k multiply-adds per row and step on MNIST with one-hot
//! embeddings, against 250k for the block's whole latent, time and fusion
//! layers. The same values up to floating-point rounding (the sums are
//! grouped differently; a test checks against
//! [`crate::CtFmBlock::forward_from_features`]).
//!
//! **Rows are integrated in fixed groups** of [`ROWS_PER_TASK`], one rayon
//! task each, from the first step to the last: a group's activations stay
//! in cache, its buffers are allocated once for the whole integration (no
//! allocation per step), and no task waits for another between steps. The
//! grouping depends on the batch only, so results do not depend on the
//! thread count.
//!
//! The variant supplies what it does with the block's logits at each field
//! evaluation ([`LogitsField`]: FM's velocity `logits W`, CT's
//! probability-flow drift). The integrators are [`OdeSolver`]'s, step for
//! step with the same f32 operations in the same order, so a field that
//! returns the same values gives the same trajectory.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::Linear;
use noprop_core::{OdeSolver, SinusoidalTimeEmbedding};
/// The row-major product the integrator is built on, for the variants'
/// fields (`dst (+)= lhs [rows, k] · rhs [k, n]`, single-threaded).
pub use noprop_kernels::dense::matmul_rows;
use noprop_kernels::dense::transpose;
use rayon::prelude::*;

use crate::shapes::FEATURE_DIM;

/// Rows integrated together by one task. Large enough that the per-row
/// products amortise reading the weights (about 400 KB, in L2), small
/// enough that a batch of 500 gives both cores several tasks; each task's
/// buffers (about 2.5 KB a row) stay in L2.
pub const ROWS_PER_TASK: usize = 32;

/// Width of the second fusion layer's output.
const FUSION2_DIM: usize = 128;

/// What the variant's ODE does with the block's logits at one field
/// evaluation: `dz/dt [rows, d]` from `logits [rows, m]` and `z [rows, d]`
/// (row-major), at the `eval`-th evaluation time of
/// [`evaluation_times`].
pub trait LogitsField: Sync {
    /// Writes `dz/dt` for evaluation `eval` into `out` `[rows, d]`, from `logits` `[rows, m]` and `z` `[rows, d]`.
    fn field(&self, eval: usize, logits: &[f32], z: &[f32], out: &mut [f32]);
}

/// The times, in order, at which `solver` evaluates the field when it
/// integrates over [0, 1] in `steps` steps: step i at `t = i h`
/// (`h = 1 / steps`), then Heun's `t + h`, RK4's `t + h/2` (twice) and
/// `t + h`. The same f64 arithmetic as [`OdeSolver::integrate`].
pub fn evaluation_times(solver: OdeSolver, steps: usize) -> Vec<f64> {
    let h = 1.0 / steps as f64;
    (0..steps)
        .flat_map(|i| {
            let t = 0.0 + i as f64 * h;
            match solver {
                OdeSolver::Euler => vec![t],
                OdeSolver::Heun => vec![t, t + h],
                OdeSolver::Rk4 => vec![t, t + h / 2.0, t + h / 2.0, t + h],
            }
        })
        .collect()
}

/// The latent, time and fusion layers of a [`crate::CtFmBlock`] with an FC
/// latent branch, as host copies of their weights laid out for
/// [`matmul_rows`] (`[in, out]`), plus the time path as tensors.
#[derive(Debug, Clone)]
pub struct CtFmOde {
    latent_dim: usize,
    classes: usize,
    latent_w: Vec<f32>,
    latent_b: Vec<f32>,
    image_w: Vec<f32>,
    latent_fusion_w: Vec<f32>,
    fusion1_b: Vec<f32>,
    fusion2_w: Vec<f32>,
    fusion2_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    time_embedding: SinusoidalTimeEmbedding,
    time_fc: Linear,
    /// The time columns of the first fusion layer's weight, `[256, 256]`.
    time_fusion_w: Tensor,
    device: Device,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.detach().flatten_all()?.to_vec1::<f32>()
}

/// A linear layer's weight `[out, in]` as `[in, out]` and its bias.
fn host_linear(layer: &Linear) -> Result<(Vec<f32>, Vec<f32>)> {
    let (out, inp) = layer.weight().dims2()?;
    let w = transpose(&host(layer.weight())?, out, inp);
    let b = match layer.bias() {
        Some(b) => host(b)?,
        None => vec![0.0; out],
    };
    Ok((w, b))
}

/// `rows [r, n] += bias [n]` per row, then ReLU if asked.
fn add_bias(rows: &mut [f32], bias: &[f32], relu: bool) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            let s = *v + b;
            *v = if relu { s.max(0.0) } else { s };
        }
    }
}

/// One task's buffers, allocated once per integration.
struct Buffers {
    image: Vec<f32>,
    h1: Vec<f32>,
    a1: Vec<f32>,
    a2: Vec<f32>,
    logits: Vec<f32>,
    k: [Vec<f32>; 4],
    z_stage: Vec<f32>,
}

impl Buffers {
    fn new(rows: usize, d: usize, m: usize) -> Self {
        let latent = || vec![0.0; rows * d];
        Self {
            image: vec![0.0; rows * FEATURE_DIM],
            h1: vec![0.0; rows * FEATURE_DIM],
            a1: vec![0.0; rows * FEATURE_DIM],
            a2: vec![0.0; rows * FUSION2_DIM],
            logits: vec![0.0; rows * m],
            k: [latent(), latent(), latent(), latent()],
            z_stage: latent(),
        }
    }
}

/// `dst = z + k * scale` element-wise, as `z + (k * scale)` on tensors.
fn axpy_into(dst: &mut [f32], z: &[f32], k: &[f32], scale: f32) {
    for ((d, z), k) in dst.iter_mut().zip(z).zip(k) {
        *d = *z + *k * scale;
    }
}

impl CtFmOde {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        latent_dim: usize,
        classes: usize,
        latent_fc: &Linear,
        time_embedding: SinusoidalTimeEmbedding,
        time_fc: &Linear,
        fusion1: &Linear,
        fusion2: &Linear,
        out: &Linear,
    ) -> Result<Self> {
        let (latent_w, latent_b) = host_linear(latent_fc)?;
        let w1 = fusion1.weight().detach();
        let f = FEATURE_DIM;
        let column_block = |i: usize| -> Result<Tensor> { w1.narrow(1, i * f, f)?.contiguous() };
        let image_w = transpose(&host(&column_block(0)?)?, f, f);
        let latent_fusion_w = transpose(&host(&column_block(1)?)?, f, f);
        let time_fusion_w = column_block(2)?;
        let fusion1_b = match fusion1.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; f],
        };
        let (fusion2_w, fusion2_b) = host_linear(fusion2)?;
        let (out_w, out_b) = host_linear(out)?;
        let detached = |l: &Linear| Linear::new(l.weight().detach(), l.bias().map(Tensor::detach));
        Ok(Self {
            latent_dim,
            classes,
            latent_w,
            latent_b,
            image_w,
            latent_fusion_w,
            fusion1_b,
            fusion2_w,
            fusion2_b,
            out_w,
            out_b,
            time_embedding,
            time_fc: detached(time_fc),
            device: w1.device().clone(),
            time_fusion_w,
        })
    }

    /// d, the latent width.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// m, the number of logits.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The time part `W1_e relu(time_fc(emb(t)))` at each time, `[N, 256]`
    /// row-major: computed once per evaluation time for the whole batch.
    /// The times are f32, as the block receives them.
    pub fn time_parts(&self, times: &[f32]) -> Result<Vec<f32>> {
        let t = Tensor::from_slice(times, times.len(), &self.device)?;
        let e = self.time_embedding.forward(&t)?;
        let e = self.time_fc.forward(&e)?.relu()?;
        host(&e.matmul(&self.time_fusion_w.t()?)?)
    }

    /// The image part `W1_f f + b1` of `features [rows, 256]` (row-major),
    /// into `out [rows, 256]`.
    fn image_part(&self, features: &[f32], out: &mut [f32]) {
        let rows = features.len() / FEATURE_DIM;
        matmul_rows(
            out,
            features,
            &self.image_w,
            rows,
            FEATURE_DIM,
            FEATURE_DIM,
            false,
        );
        add_bias(out, &self.fusion1_b, false);
    }

    /// The block's logits for `z [rows, d]` at evaluation `eval`, from the
    /// rows' image part (in `buf.image`) and the time part, into
    /// `buf.logits`.
    fn logits(&self, z: &[f32], time_part: &[f32], buf: &mut Buffers) {
        let (d, m, f) = (self.latent_dim, self.classes, FEATURE_DIM);
        let rows = z.len() / d;
        // Latent branch: relu(z W_lat + b_lat).
        matmul_rows(&mut buf.h1, z, &self.latent_w, rows, d, f, false);
        add_bias(&mut buf.h1, &self.latent_b, true);
        // First fusion layer: image part + time part + latent part, ReLU.
        for (a, image) in buf.a1.chunks_exact_mut(f).zip(buf.image.chunks_exact(f)) {
            for ((a, i), e) in a.iter_mut().zip(image).zip(time_part) {
                *a = *i + *e;
            }
        }
        matmul_rows(
            &mut buf.a1,
            &buf.h1,
            &self.latent_fusion_w,
            rows,
            f,
            f,
            true,
        );
        for v in &mut buf.a1 {
            *v = v.max(0.0);
        }
        matmul_rows(
            &mut buf.a2,
            &buf.a1,
            &self.fusion2_w,
            rows,
            f,
            FUSION2_DIM,
            false,
        );
        add_bias(&mut buf.a2, &self.fusion2_b, true);
        matmul_rows(
            &mut buf.logits,
            &buf.a2,
            &self.out_w,
            rows,
            FUSION2_DIM,
            m,
            false,
        );
        add_bias(&mut buf.logits, &self.out_b, false);
    }

    /// The block's logits `[rows, m]` for `features [rows, 256]`, `z [rows,
    /// d]` and one time part (from [`CtFmOde::time_parts`]): equals
    /// [`crate::CtFmBlock::forward_from_features`] in `Mode::Eval` at that
    /// time, up to rounding.
    pub fn logits_at(&self, features: &[f32], z: &[f32], time_part: &[f32]) -> Vec<f32> {
        let rows = z.len() / self.latent_dim;
        let mut buf = Buffers::new(rows, self.latent_dim, self.classes);
        self.image_part(features, &mut buf.image);
        self.logits(z, time_part, &mut buf);
        buf.logits
    }

    /// z_1 from `z0 [B, d]` by integrating `dz/dt = field(logits(x, z, t),
    /// z, t)` over [0, 1] in `steps` steps of `solver`, on the batch's image
    /// `features [B, 256]`. `time_parts` holds [`CtFmOde::time_parts`] at
    /// every [`evaluation_times`]`(solver, steps)`, in order.
    pub fn integrate(
        &self,
        features: &Tensor,
        z0: &Tensor,
        solver: OdeSolver,
        steps: usize,
        time_parts: &[f32],
        field: &impl LogitsField,
    ) -> Result<Tensor> {
        let d = self.latent_dim;
        let (batch, fd) = features.dims2()?;
        if fd != FEATURE_DIM || z0.dims() != [batch, d] {
            candle_core::bail!(
                "ct/fm ode: expected features [B, {FEATURE_DIM}] and z0 [B, {d}], got {:?} and {:?}",
                features.dims(),
                z0.dims()
            );
        }
        let evaluations = steps * solver.evaluations_per_step();
        if steps == 0 || time_parts.len() != evaluations * FEATURE_DIM {
            candle_core::bail!(
                "ct/fm ode: need steps >= 1 and one time part per field evaluation \
                 ({evaluations} x {FEATURE_DIM}), got {steps} steps and {} values",
                time_parts.len()
            );
        }
        let features = host(&features.to_dtype(DType::F32)?)?;
        let mut z = host(&z0.to_dtype(DType::F32)?)?;
        z.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(features.par_chunks(ROWS_PER_TASK * FEATURE_DIM))
            .for_each(|(z, features)| {
                self.integrate_rows(z, features, solver, steps, time_parts, field)
            });
        Tensor::from_vec(z, (batch, d), &self.device)
    }

    /// One task: a group of rows from the first step to the last.
    fn integrate_rows(
        &self,
        z: &mut [f32],
        features: &[f32],
        solver: OdeSolver,
        steps: usize,
        time_parts: &[f32],
        field: &impl LogitsField,
    ) {
        let (d, f) = (self.latent_dim, FEATURE_DIM);
        let mut buf = Buffers::new(z.len() / d, d, self.classes);
        self.image_part(features, &mut buf.image);
        let h = 1.0 / steps as f64;
        let per_step = solver.evaluations_per_step();
        for i in 0..steps {
            let e0 = i * per_step;
            let part = |e: usize| &time_parts[e * f..(e + 1) * f];
            match solver {
                OdeSolver::Euler => {
                    self.field_into(z, part(e0), e0, field, &mut buf, 0);
                    let k = &buf.k[0];
                    let hf = h as f32;
                    for (z, k) in z.iter_mut().zip(k) {
                        *z += *k * hf;
                    }
                }
                OdeSolver::Heun => {
                    self.field_into(z, part(e0), e0, field, &mut buf, 0);
                    let mut stage = std::mem::take(&mut buf.z_stage);
                    axpy_into(&mut stage, z, &buf.k[0], h as f32);
                    self.field_into(&stage, part(e0 + 1), e0 + 1, field, &mut buf, 1);
                    buf.z_stage = stage;
                    let half = (h / 2.0) as f32;
                    for ((z, k1), k2) in z.iter_mut().zip(&buf.k[0]).zip(&buf.k[1]) {
                        *z += (*k1 + *k2) * half;
                    }
                }
                OdeSolver::Rk4 => {
                    let mut stage = std::mem::take(&mut buf.z_stage);
                    self.field_into(z, part(e0), e0, field, &mut buf, 0);
                    axpy_into(&mut stage, z, &buf.k[0], (h / 2.0) as f32);
                    self.field_into(&stage, part(e0 + 1), e0 + 1, field, &mut buf, 1);
                    axpy_into(&mut stage, z, &buf.k[1], (h / 2.0) as f32);
                    self.field_into(&stage, part(e0 + 2), e0 + 2, field, &mut buf, 2);
                    axpy_into(&mut stage, z, &buf.k[2], h as f32);
                    self.field_into(&stage, part(e0 + 3), e0 + 3, field, &mut buf, 3);
                    buf.z_stage = stage;
                    let sixth = (h / 6.0) as f32;
                    let [k1, k2, k3, k4] = &buf.k;
                    for (((z, k1), (k2, k3)), k4) in
                        z.iter_mut().zip(k1).zip(k2.iter().zip(k3)).zip(k4)
                    {
                        let sum = *k1 + *k2 * 2.0 + *k3 * 2.0 + *k4;
                        *z += sum * sixth;
                    }
                }
            }
        }
    }

    /// `buf.k[j] = field(logits(z, eval), z)`.
    fn field_into(
        &self,
        z: &[f32],
        time_part: &[f32],
        eval: usize,
        field: &impl LogitsField,
        buf: &mut Buffers,
        j: usize,
    ) {
        self.logits(z, time_part, buf);
        let mut k = std::mem::take(&mut buf.k[j]);
        field.field(eval, &buf.logits, z, &mut k);
        buf.k[j] = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockConfig, CtFmBlock, Mode};
    use noprop_core::{ParamStore, SeededRng};

    /// A block with d = 10 latents (m = 10 logits) on 14x14 images, its
    /// integrator, image features and latents for `batch` rows.
    fn setup(batch: usize) -> (CtFmBlock, CtFmOde, Tensor, Tensor) {
        let dev = Device::Cpu;
        let store = ParamStore::new(SeededRng::new(3));
        let config = BlockConfig::new(1, 14, 10, 10);
        let block = CtFmBlock::new(&config, store.var_builder(DType::F32, &dev)).unwrap();
        let ode = block
            .ode()
            .unwrap()
            .expect("an FC latent branch on the CPU");
        let mut rng = SeededRng::new(4);
        let x = rng.normal((batch, 1, 14, 14), &dev).unwrap();
        let features = block.image_features(&x, Mode::Eval).unwrap();
        let z = (rng.normal((batch, 10), &dev).unwrap() * 2.0).unwrap();
        (block, ode, features, z)
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
            / scale
    }

    /// The split first layer (image part once, time part once per time,
    /// latent part per step) gives the unsplit block's logits.
    #[test]
    fn split_first_layer_matches_the_block() {
        let (block, ode, features, z) = setup(5);
        let host_f = host(&features).unwrap();
        let host_z = host(&z).unwrap();
        let times = [0.0f32, 0.37, 0.999];
        let parts = ode.time_parts(&times).unwrap();
        for (i, &t) in times.iter().enumerate() {
            let tt = Tensor::full(t, 5, &Device::Cpu).unwrap();
            let want = block
                .forward_from_features(&features, &z, &tt, Mode::Eval)
                .unwrap();
            let got = ode.logits_at(&host_f, &host_z, &parts[i * FEATURE_DIM..][..FEATURE_DIM]);
            let err = max_rel_diff(&got, &host(&want).unwrap());
            assert!(err < 1e-5, "t = {t}: relative error {err}");
        }
    }

    /// FM's field, `logits W` with a dense W, as a test field.
    struct Mix(Vec<f32>);

    impl LogitsField for Mix {
        fn field(&self, _eval: usize, logits: &[f32], _z: &[f32], out: &mut [f32]) {
            matmul_rows(out, logits, &self.0, logits.len() / 10, 10, 10, false);
        }
    }

    /// Each integrator on host rows equals `OdeSolver::integrate` on the
    /// block's tensors, for a batch that is not a multiple of the task size
    /// (several tasks and a partial one); the result does not depend on
    /// the thread count (bitwise).
    #[test]
    fn integration_matches_the_tensor_solver() {
        let batch = 2 * ROWS_PER_TASK + 5;
        let (block, ode, features, z0) = setup(batch);
        let w = SeededRng::new(9).normal((10, 10), &Device::Cpu).unwrap();
        let field = Mix(host(&w).unwrap());
        for solver in [OdeSolver::Euler, OdeSolver::Heun, OdeSolver::Rk4] {
            let steps = 4;
            let times: Vec<f32> = evaluation_times(solver, steps)
                .iter()
                .map(|&t| t as f32)
                .collect();
            assert_eq!(times.len(), steps * solver.evaluations_per_step());
            let parts = ode.time_parts(&times).unwrap();
            let got = ode
                .integrate(&features, &z0, solver, steps, &parts, &field)
                .unwrap();
            let want = solver
                .integrate(&z0, 0.0, 1.0, steps, |z, t| {
                    let tt = Tensor::full(t as f32, batch, &Device::Cpu)?;
                    block
                        .forward_from_features(&features, z, &tt, Mode::Eval)?
                        .matmul(&w)
                })
                .unwrap();
            let err = max_rel_diff(&host(&got).unwrap(), &host(&want).unwrap());
            assert!(err < 1e-5, "{solver}: relative error {err}");
            let one_thread = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| {
                    ode.integrate(&features, &z0, solver, steps, &parts, &field)
                        .unwrap()
                });
            assert_eq!(host(&one_thread).unwrap(), host(&got).unwrap(), "{solver}");
        }
    }

    /// The fused Euler update is the plain one: one step from z with a
    /// field k gives z + k h exactly.
    #[test]
    fn fused_euler_step_is_the_plain_one() {
        let (block, ode, features, z0) = setup(3);
        let field = Mix(host(&Tensor::eye(10, DType::F32, &Device::Cpu).unwrap()).unwrap());
        let parts = ode.time_parts(&[0.0]).unwrap();
        let got = ode
            .integrate(&features, &z0, OdeSolver::Euler, 1, &parts, &field)
            .unwrap();
        let k = ode.logits_at(&host(&features).unwrap(), &host(&z0).unwrap(), &parts);
        let plain: Vec<f32> = host(&z0)
            .unwrap()
            .iter()
            .zip(&k)
            .map(|(z, k)| z + k * 1.0)
            .collect();
        assert_eq!(host(&got).unwrap(), plain);
        let _ = block;
    }

    #[test]
    fn evaluation_times_follow_the_solver() {
        assert_eq!(
            evaluation_times(OdeSolver::Euler, 4),
            [0.0, 0.25, 0.5, 0.75]
        );
        assert_eq!(evaluation_times(OdeSolver::Heun, 2), [0.0, 0.5, 0.5, 1.0]);
        assert_eq!(evaluation_times(OdeSolver::Rk4, 1), [0.0, 0.5, 0.5, 1.0]);
    }

    /// An image-sized latent has a convolutional branch: no host integrator.
    #[test]
    fn conv_latent_has_no_host_integrator() {
        let store = ParamStore::new(SeededRng::new(3));
        let config = BlockConfig::new(1, 14, 196, 10);
        let block = CtFmBlock::new(&config, store.var_builder(DType::F32, &Device::Cpu)).unwrap();
        assert!(block.ode().unwrap().is_none());
    }
}

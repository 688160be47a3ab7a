//! The NoProp-FM model: one CT/FM block trained by flow matching.
//!
//! Training (Eq. 11, 13): z_0 ~ N(0, I), z_1 = u_y, t ~ U[0, 1],
//! z_t = t z_1 + (1 - t) z_0 (+ sigma eps), v_hat = logits(x, z_t, t) @ W,
//! loss = mean_B ||v_hat - (z_1 - z_0)||^2 (+ CE(head(z_t + (1 - t) v_hat), y)
//! when W is learned). Inference: integrate dz/dt = v_hat from z_0 ~ N(0, I)
//! over [0, 1] and read out the class whose embedding is nearest to z_1; on
//! the CPU on host rows with the block's first fusion layer split
//! (`noprop_block::ct_fm_ode`), elsewhere with the block's tensor forward
//! pass at every step.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Linear, Module};
use noprop_block::ct_fm_ode::matmul_rows;
use noprop_block::{evaluation_times, layers, BlockConfig, CtFmBlock, LogitsField, Mode};
use noprop_core::{
    linear_mix, Adam, AdamConfig, ClassEmbedding, InferenceOptions, ModelInit, ModelSpec,
    OdeSolver, ParamStore, ProcessGroup, SeededRng,
};

use crate::config::FmConfig;
use crate::names::{BLOCK_PREFIX, HEAD_PREFIX};

/// Stream of the class-embedding initialisation (forked from the seed).
const EMBEDDING_STREAM: u64 = 1;

/// NoProp-FM with its optimizer.
pub struct NoPropFm {
    pub(crate) config: FmConfig,
    pub(crate) spec: ModelSpec,
    pub(crate) store: ParamStore,
    pub(crate) block: CtFmBlock,
    pub(crate) embedding: ClassEmbedding,
    /// d -> m, for the anchor loss; present only when W is learned.
    pub(crate) head: Option<Linear>,
    pub(crate) optimizer: Adam,
    pub(crate) device: Device,
    /// The processes of a data-parallel run (`Variant::join_group`).
    pub(crate) group: Option<ProcessGroup>,
}

impl NoPropFm {
    /// A fresh model for training. Every initial value comes from
    /// `SeededRng::new(seed)` and its forks. `prototype_source` (normalised
    /// training images `[N, C, H, W]`, labels `[N]`) is required by
    /// prototype embeddings. To load a checkpoint, build with
    /// [`ModelInit::ForLoading`] through [`noprop_core::BuildVariant`].
    pub fn new(
        config: FmConfig,
        spec: ModelSpec,
        prototype_source: Option<(&Tensor, &Tensor)>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::with_init(
            config,
            spec,
            ModelInit::Train {
                seed,
                prototypes: prototype_source,
            },
            device,
        )
    }

    /// Builds the model as `init` says (see [`ModelInit`]).
    pub fn with_init(
        config: FmConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (seed, _) = init.parts();
        let root = SeededRng::new(seed);
        let store = init.param_store(root.fork(0));
        let vb = store.var_builder(DType::F32, device);
        let m = spec.num_classes;
        let d = config.embedding.dim(m, spec.image_dim());
        let block_config =
            BlockConfig::new(spec.in_channels, spec.image_size, d, m).with_dropout(config.dropout);
        let block = CtFmBlock::new(&block_config, vb.pp(BLOCK_PREFIX))?;
        let embedding = ClassEmbedding::for_init(
            config.embedding,
            m,
            spec.image_dim(),
            &store,
            init,
            &mut root.fork(EMBEDDING_STREAM),
            device,
        )?;
        let head = if embedding.is_learned() {
            Some(layers::linear(d, m, vb.pp(HEAD_PREFIX))?)
        } else {
            None
        };
        let optimizer = Adam::with_params(
            store.trainable(""),
            AdamConfig::adam(config.lr, config.weight_decay),
        )?;
        Ok(Self {
            config,
            spec,
            store,
            block,
            embedding,
            head,
            optimizer,
            device: device.clone(),
            group: None,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &FmConfig {
        &self.config
    }

    /// The block that predicts the vector field.
    pub fn block(&self) -> &CtFmBlock {
        &self.block
    }

    /// The class embedding W `[m, d]`.
    pub fn embedding(&self) -> &ClassEmbedding {
        &self.embedding
    }

    /// Trainable scalars (block, head and learned W).
    pub fn num_parameters(&self) -> usize {
        self.store.count_trainable("")
    }

    /// The losses of one batch: (total, flow-matching, anchor CE).
    pub(crate) fn losses(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let batch = self.spec.check_batch(images, labels, "fm")?;
        let d = self.embedding.dim();
        let u_y = self.embedding.rows(labels)?; // z_1 [B, d]
        let z0 = rng.normal((batch, d), &self.device)?;
        let t = rng.uniform(0.0, 1.0, batch, &self.device)?; // [B]
        let t_col = t.unsqueeze(1)?;
        let mut z_t = (u_y.broadcast_mul(&t_col)? + z0.broadcast_mul(&(1.0 - &t_col)?)?)?;
        if self.config.sigma > 0.0 {
            let eps = rng.normal((batch, d), &self.device)?;
            z_t = (z_t + (eps * self.config.sigma)?)?;
        }
        let logits = self.block.forward(images, &z_t, &t, Mode::Train(rng))?;
        let w = self.embedding.matrix();
        let v_hat = linear_mix(&logits, &w)?;
        let target = (&u_y - &z0)?;
        let flow = (v_hat.clone() - target)?.sqr()?.sum(1)?.mean(0)?;
        match &self.head {
            Some(head) if self.config.anchor_weight > 0.0 => {
                // Eq. 13: the one-step estimate of z_1 must classify as y.
                let z1_hat = (z_t + v_hat.broadcast_mul(&(1.0 - &t_col)?)?)?;
                let ce = candle_nn::loss::cross_entropy(&head.forward(&z1_hat)?, labels)?;
                let total = (&flow + (&ce * self.config.anchor_weight)?)?;
                Ok((total, flow, Some(ce)))
            }
            _ => Ok((flow.clone(), flow, None)),
        }
    }

    /// Each run's class probabilities [B, m] on one batch of images: per
    /// run, z_0 ~ N(0, I) [B, d] is integrated to z_1 with the image
    /// features computed once for all runs, and read out as the softmax
    /// over classes of minus the squared distance to each embedding (its
    /// argmax is the nearest embedding).
    pub(crate) fn predict_runs_batch(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        let batch = self.spec.check_images(images, "fm")?;
        let steps = options.steps.unwrap_or(self.config.inference_steps);
        let solver = options.solver.unwrap_or(self.config.solver);
        noprop_core::ode::check_ode_steps(steps, "fm")?;
        // Detached: inference must not record a backprop graph, which would
        // keep every step's activations alive (the weights are variables).
        let features = self.block.image_features(images, Mode::Eval)?.detach();
        let w = self.embedding.matrix().detach();
        let d = self.embedding.dim();
        // On the CPU the ODE runs on host rows with the first fusion layer
        // split (noprop_block::ct_fm_ode): the time part once per step for
        // the whole batch, the image part once per image. Elsewhere, and for
        // a convolutional latent branch, the block's own forward pass.
        let ode = match self.block.ode()? {
            Some(ode) => {
                let times: Vec<f32> = evaluation_times(solver, steps)
                    .iter()
                    .map(|&t| t as f32)
                    .collect();
                let time_parts = ode.time_parts(&times)?;
                let field = Velocity::new(&w)?;
                Some((ode, time_parts, field))
            }
            None => None,
        };
        (0..runs)
            .map(|_| {
                let z0 = rng.normal((batch, d), &self.device)?;
                let z1 = match &ode {
                    Some((ode, time_parts, field)) => {
                        ode.integrate(&features, &z0, solver, steps, time_parts, field)?
                    }
                    None => self.integrate(&features, &w, &z0, steps, solver)?,
                };
                candle_nn::ops::softmax_last_dim(&self.embedding.neg_sq_distances(&z1)?)
            })
            .collect()
    }

    /// z_1 from `z0` [B, d] by integrating dz/dt = v_hat(x, z, t) over
    /// [0, 1] on the batch's image `features`.
    fn integrate(
        &self,
        features: &Tensor,
        w: &Tensor,
        z0: &Tensor,
        steps: usize,
        solver: OdeSolver,
    ) -> Result<Tensor> {
        let batch = z0.dim(0)?;
        solver.integrate(z0, 0.0, 1.0, steps, |z, t| {
            let t = Tensor::full(t as f32, batch, &self.device)?;
            let logits = self
                .block
                .forward_from_features(features, z, &t, Mode::Eval)?;
            Ok(linear_mix(&logits, w)?.detach())
        })
    }
}

/// FM's field on host rows: the velocity `v_hat = logits W`, with W `[m, d]`.
struct Velocity {
    w: Vec<f32>,
    m: usize,
    d: usize,
}

impl Velocity {
    fn new(w: &Tensor) -> Result<Self> {
        let (m, d) = w.dims2()?;
        let w = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { w, m, d })
    }
}

impl LogitsField for Velocity {
    fn field(&self, _eval: usize, logits: &[f32], _z: &[f32], out: &mut [f32]) {
        let rows = logits.len() / self.m;
        matmul_rows(out, logits, &self.w, rows, self.m, self.d, false);
    }
}

#[cfg(test)]
mod tests {
    //! The FM losses and inference against values recomputed by hand on a
    //! tiny model (1x14x14 images, m = 3). The hand computation shares only
    //! the block's forward pass and the generator with the code: z_t, the
    //! target, v_hat = logits W, the anchor's one-step estimate, its
    //! cross-entropy, the Euler steps and the nearest-embedding read-out are
    //! computed in f64 on the host from the same seeded draws (order: z_0,
    //! t, the sigma noise if sigma > 0, the block's dropout masks).

    use super::*;
    use crate::names::HEAD_PREFIX;
    use noprop_core::EmbeddingKind;

    const B: usize = 4;
    const M: usize = 3;
    const LABELS: [u32; B] = [1, 0, 2, 1];

    fn host(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn host2(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        host(t)[0]
    }

    fn to_tensor(rows: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    /// rows [B, m] times W [m, d].
    fn times_w(rows: &[Vec<f64>], w: &[Vec<f64>]) -> Vec<Vec<f64>> {
        rows.iter()
            .map(|r| {
                (0..w[0].len())
                    .map(|j| (0..w.len()).map(|c| r[c] * w[c][j]).sum())
                    .collect()
            })
            .collect()
    }

    fn assert_close(got: f64, want: f64, what: &str) {
        let tol = 1e-5 * want.abs().max(1e-2);
        assert!(
            (got - want).abs() <= tol,
            "{what}: code {got}, by hand {want} (tolerance {tol})"
        );
    }

    fn spec() -> ModelSpec {
        ModelSpec {
            in_channels: 1,
            image_size: 14,
            num_classes: M,
        }
    }

    /// A tiny model; a learned W is replaced by rows of unequal norms.
    fn setup(config: FmConfig) -> (NoPropFm, Tensor, Tensor) {
        let dev = Device::Cpu;
        let model = NoPropFm::new(config, spec(), None, 0, &dev).unwrap();
        if let Some(var) = model.embedding.var() {
            let d = model.embedding.dim();
            let w = (SeededRng::new(5).normal((M, d), &dev).unwrap() * 1.5).unwrap();
            var.set(&w).unwrap();
        }
        let x = SeededRng::new(6).normal((B, 1, 14, 14), &dev).unwrap();
        let y = Tensor::new(&LABELS, &dev).unwrap();
        (model, x, y)
    }

    /// The losses by hand: z_1 = u_y, z_0 ~ N(0, I), t ~ U[0, 1],
    /// z_t = t z_1 + (1 - t) z_0 (+ sigma eps), v_hat = block(x, z_t, t) W,
    /// flow = mean_b ||v_hat - (z_1 - z_0)||^2 and, with a learned W and a
    /// positive anchor weight, ce = mean_b CE(head(z_t + (1 - t) v_hat), y),
    /// total = flow + anchor_weight ce; else no CE and total = flow.
    /// Returns (total, flow, ce).
    fn losses_by_hand(model: &NoPropFm, x: &Tensor, seed: u64) -> (f64, f64, Option<f64>) {
        let dev = &model.device;
        let w = host2(&model.embedding.matrix());
        let d = w[0].len();
        let u: Vec<Vec<f64>> = LABELS.iter().map(|&c| w[c as usize].clone()).collect();
        let mut rng = SeededRng::new(seed);
        let z0 = host2(&rng.normal((B, d), dev).unwrap());
        let t = host(&rng.uniform(0.0, 1.0, B, dev).unwrap());
        let noise = (model.config.sigma > 0.0).then(|| host2(&rng.normal((B, d), dev).unwrap()));
        let z_t: Vec<Vec<f64>> = (0..B)
            .map(|b| {
                (0..d)
                    .map(|j| {
                        let sigma_eps =
                            noise.as_ref().map_or(0.0, |n| model.config.sigma * n[b][j]);
                        t[b] * u[b][j] + (1.0 - t[b]) * z0[b][j] + sigma_eps
                    })
                    .collect()
            })
            .collect();
        let t_tensor = Tensor::from_vec(t.iter().map(|&v| v as f32).collect(), B, dev).unwrap();
        let logits = host2(
            &model
                .block
                .forward(x, &to_tensor(&z_t), &t_tensor, Mode::Train(&mut rng))
                .unwrap(),
        );
        let v_hat = times_w(&logits, &w);
        let flow = (0..B)
            .map(|b| {
                (0..d)
                    .map(|j| (v_hat[b][j] - (u[b][j] - z0[b][j])).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / B as f64;
        let ce = match &model.head {
            Some(head) if model.config.anchor_weight > 0.0 => {
                let (hw, hb) = (host2(head.weight()), host(head.bias().unwrap()));
                let ce = (0..B)
                    .map(|b| {
                        let z1_hat: Vec<f64> = (0..d)
                            .map(|j| z_t[b][j] + (1.0 - t[b]) * v_hat[b][j])
                            .collect();
                        let out: Vec<f64> = (0..M)
                            .map(|c| hb[c] + (0..d).map(|j| hw[c][j] * z1_hat[j]).sum::<f64>())
                            .collect();
                        let max = out.iter().cloned().fold(f64::MIN, f64::max);
                        let lse = max + out.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                        lse - out[LABELS[b] as usize]
                    })
                    .sum::<f64>()
                    / B as f64;
                Some(ce)
            }
            _ => None,
        };
        let total = flow + ce.map_or(0.0, |ce| model.config.anchor_weight * ce);
        (total, flow, ce)
    }

    /// Learned W (with and without sigma): the anchor CE is present and
    /// weighted; the flow term regresses z_1 - z_0.
    #[test]
    fn learned_w_losses_match_eq11_and_eq13_by_hand() {
        for sigma in [0.0, 0.1] {
            let config = FmConfig {
                embedding: EmbeddingKind::Learned { dim: 5 },
                anchor_weight: 0.5,
                sigma,
                ..FmConfig::default()
            };
            let (model, x, y) = setup(config);
            assert!(model.head.is_some());
            let (total, flow, ce) = model.losses(&x, &y, &mut SeededRng::new(8)).unwrap();
            let (h_total, h_flow, h_ce) = losses_by_hand(&model, &x, 8);
            let what = format!("sigma {sigma}");
            assert_close(scalar(&flow), h_flow, &format!("{what}: flow"));
            let ce = ce.expect("a learned W has the anchor term");
            assert_close(scalar(&ce), h_ce.unwrap(), &format!("{what}: anchor ce"));
            assert_close(scalar(&total), h_total, &format!("{what}: total"));
        }
        // Anchor weight 0: no CE term, the total is the flow term.
        let config = FmConfig {
            embedding: EmbeddingKind::Learned { dim: 5 },
            anchor_weight: 0.0,
            ..FmConfig::default()
        };
        let (model, x, y) = setup(config);
        let (total, flow, ce) = model.losses(&x, &y, &mut SeededRng::new(8)).unwrap();
        assert!(ce.is_none());
        assert_eq!(scalar(&total), scalar(&flow));
        assert_close(
            scalar(&flow),
            losses_by_hand(&model, &x, 8).1,
            "no anchor: flow",
        );
    }

    /// One-hot W: no head variables at all, no CE, loss = the flow term.
    #[test]
    fn one_hot_w_has_no_head_and_the_loss_is_the_flow_term() {
        let (model, x, y) = setup(FmConfig::default());
        assert!(model.head.is_none());
        let head_vars = model.store.names();
        assert!(
            !head_vars
                .iter()
                .any(|n| n.starts_with(&format!("{HEAD_PREFIX}."))),
            "{head_vars:?}"
        );
        let (total, flow, ce) = model.losses(&x, &y, &mut SeededRng::new(9)).unwrap();
        assert!(ce.is_none());
        let (h_total, h_flow, h_ce) = losses_by_hand(&model, &x, 9);
        assert!(h_ce.is_none());
        assert_close(scalar(&flow), h_flow, "one-hot flow");
        assert_close(scalar(&total), h_total, "one-hot total");
        assert_eq!(scalar(&total), scalar(&flow));
    }

    /// v_hat(z, t) = block(x, z, t) W in evaluation mode, by hand on the host.
    fn v_by_hand(model: &NoPropFm, x: &Tensor, z: &[Vec<f64>], t: f64) -> Vec<Vec<f64>> {
        let w = host2(&model.embedding.matrix());
        let t = Tensor::full(t as f32, B, &model.device).unwrap();
        let logits = model
            .block
            .forward(x, &to_tensor(z), &t, Mode::Eval)
            .unwrap();
        times_w(&host2(&logits), &w)
    }

    fn euler_step(z: &[Vec<f64>], v: &[Vec<f64>], h: f64) -> Vec<Vec<f64>> {
        z.iter()
            .zip(v)
            .map(|(zr, vr)| zr.iter().zip(vr).map(|(a, b)| a + h * b).collect())
            .collect()
    }

    fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// Euler integration of dz/dt = v_hat: one step is z_0 + v_hat(z_0, 0);
    /// two steps are z_1/2 = z_0 + v_hat(z_0, 0) / 2, then
    /// z_1 = z_1/2 + v_hat(z_1/2, 1/2) / 2.
    #[test]
    fn euler_integration_by_hand() {
        for embedding in [EmbeddingKind::OneHot, EmbeddingKind::Learned { dim: 5 }] {
            let config = FmConfig {
                embedding,
                ..FmConfig::default()
            };
            let (model, x, _) = setup(config);
            let d = model.embedding.dim();
            let z0_t = SeededRng::new(10).normal((B, d), &model.device).unwrap();
            let z0 = host2(&z0_t);
            let features = model.block.image_features(&x, Mode::Eval).unwrap();
            let w = model.embedding.matrix();
            let integrate = |steps| {
                host2(
                    &model
                        .integrate(&features, &w, &z0_t, steps, OdeSolver::Euler)
                        .unwrap(),
                )
            };
            let one = euler_step(&z0, &v_by_hand(&model, &x, &z0, 0.0), 1.0);
            let diff = max_diff(&integrate(1), &one);
            assert!(diff < 1e-4, "{embedding}: one Euler step off by {diff}");
            let half = euler_step(&z0, &v_by_hand(&model, &x, &z0, 0.0), 0.5);
            let two = euler_step(&half, &v_by_hand(&model, &x, &half, 0.5), 0.5);
            let diff = max_diff(&integrate(2), &two);
            assert!(diff < 1e-4, "{embedding}: two Euler steps off by {diff}");
            // The two-step path really differs from one step (else this
            // test could not tell the time argument apart).
            assert!(max_diff(&one, &two) > 1e-3);
        }
    }

    /// The read-out: each run's probabilities are softmax_c(-||z_1 - w_c||^2)
    /// of the Euler z_1 from that run's z_0, so their argmax is the nearest
    /// embedding (by hand, from the distances).
    #[test]
    fn predictions_are_the_nearest_embedding() {
        let config = FmConfig {
            embedding: EmbeddingKind::Learned { dim: 5 },
            ..FmConfig::default()
        };
        let (model, x, _) = setup(config);
        let w = host2(&model.embedding.matrix());
        let options = InferenceOptions {
            steps: Some(1),
            solver: Some(OdeSolver::Euler),
            ..Default::default()
        };
        let runs = model
            .predict_runs_batch(&x, &options, 2, &mut SeededRng::new(12))
            .unwrap();
        assert_eq!(runs.len(), 2);
        let mut rng = SeededRng::new(12);
        for (r, probs) in runs.iter().enumerate() {
            let z0 = host2(&rng.normal((B, 5), &model.device).unwrap());
            let z1 = euler_step(&z0, &v_by_hand(&model, &x, &z0, 0.0), 1.0);
            let probs = host2(probs);
            for b in 0..B {
                let dist: Vec<f64> = (0..M)
                    .map(|c| (0..5).map(|j| (z1[b][j] - w[c][j]).powi(2)).sum())
                    .collect();
                let nearest = (0..M).min_by(|&a, &c| dist[a].total_cmp(&dist[c])).unwrap();
                let argmax = (0..M)
                    .max_by(|&a, &c| probs[b][a].total_cmp(&probs[b][c]))
                    .unwrap();
                assert_eq!(
                    argmax, nearest,
                    "run {r}, image {b}: {dist:?} {:?}",
                    probs[b]
                );
                let min = dist[nearest];
                let e: Vec<f64> = dist.iter().map(|dc| (min - dc).exp()).collect();
                let s: f64 = e.iter().sum();
                for c in 0..M {
                    assert!(
                        (probs[b][c] - e[c] / s).abs() < 1e-4,
                        "run {r}, image {b}, class {c}: {} vs {}",
                        probs[b][c],
                        e[c] / s
                    );
                }
            }
        }
    }

    /// Prototype embeddings need the training images to train, not to load.
    #[test]
    fn prototypes_need_images_for_training_only() {
        let config = FmConfig {
            embedding: EmbeddingKind::Prototype,
            ..FmConfig::default()
        };
        let err = NoPropFm::new(config.clone(), spec(), None, 0, &Device::Cpu)
            .err()
            .expect("prototypes without images must be refused")
            .to_string();
        assert!(err.contains("prototype"), "{err}");
        let blank =
            NoPropFm::with_init(config, spec(), ModelInit::ForLoading, &Device::Cpu).unwrap();
        assert_eq!(blank.embedding.dim(), 14 * 14);
        assert!(blank.head.is_some());
    }

    /// Data parallel over 2 and 3 processes (threads), one-hot and learned
    /// W with the anchor term, 7 rows (uneven shards): the summed gradients
    /// are one process's to 1e-5 of each gradient's largest entry, and the
    /// ranks train identically (noprop_core::testing).
    #[test]
    fn data_parallel_gradients_match_one_process() {
        let dev = Device::Cpu;
        let x = SeededRng::new(6).normal((7, 1, 14, 14), &dev).unwrap();
        let y = Tensor::new(&[1u32, 0, 2, 1, 2, 0, 1], &dev).unwrap();
        let learned = FmConfig {
            embedding: EmbeddingKind::Learned { dim: 5 },
            anchor_weight: 0.5,
            sigma: 0.1,
            ..FmConfig::default()
        };
        for config in [FmConfig::default(), learned] {
            for ranks in [2, 3] {
                noprop_core::testing::data_parallel_matches_one_process(
                    || NoPropFm::new(config.clone(), spec(), None, 0, &dev).unwrap(),
                    |m: &NoPropFm, x, y, rng| m.losses(x, y, rng).unwrap().0,
                    &x,
                    &y,
                    ranks,
                    2,
                    1e-5,
                );
            }
        }
    }
}

//! Block-parallel training step (`DtConfig::parallel_blocks`): the blocks
//! of a minibatch train at the same time, one per worker thread.
//!
//! # Why this is the same algorithm
//!
//! With a fixed W (one-hot), block t's loss (Eq. 8) splits into terms that
//! share no parameter:
//!
//! ```text
//! L_t = weight_t ||softmax(block_t(x, z_{t-1})) W - u_y||^2   depends on theta_t only
//!     + CE(head(z_T), y)                                      depends on the head only
//!     + KL(q(z_0 | y) || N(0, I))                             a constant
//! ```
//!
//! so the gradient of L_t with respect to theta_t is that of its denoising
//! term, and the head's is that of the CE. Each block's AdamW step needs
//! nothing from another block and can run concurrently; the head's AdamW
//! steps once per block loss, in block order, exactly as in the sequential
//! step (each CE is computed with the head as the previous block's CE step
//! left it).
//!
//! # Random numbers
//!
//! Concurrent blocks cannot share one generator stream in a fixed order, so
//! each stepped block t draws from its own stream: one `u64` is drawn from
//! the caller's generator per step, and block t uses
//! `SeededRng::new(that).fork(t)` for, in order, its z_{t-1} noise, its
//! dropout masks and its z_T noise (the sequential step's per-block order).
//! The results therefore differ from the sequential step's (other random
//! numbers, the same distribution), but they do not depend on the number of
//! workers: with any thread count, the same seed gives bitwise-identical
//! training.
//!
//! # Threads
//!
//! `workers = min(rayon::current_num_threads(), blocks stepped)`; the
//! stepped blocks are cut into `workers` contiguous runs, each trained on
//! its own thread inside a one-thread rayon pool, so a block's kernels run
//! single-threaded and the workers never oversubscribe the cores.

use candle_core::{Module, Result, Tensor};
use noprop_block::DtBlock;
use noprop_core::{kl_prior, Adam, CosineSchedule, SeededRng};

use crate::loss::{denoise_term, noised};
use crate::model::NoPropDt;

/// One block's share of a parallel step.
struct BlockJob<'a> {
    t: usize,
    block: &'a DtBlock,
    optimizer: &'a mut Adam,
}

/// What a block's job hands back for the head phase.
struct BlockOutcome {
    /// The block (1-based).
    t: usize,
    /// The weighted denoising loss (scalar, detached).
    denoise: Tensor,
    /// z_T ~ q(z_T | y) drawn from the block's stream, for its CE term.
    z_clean: Tensor,
}

/// The inputs every block's job reads.
struct Shared<'a> {
    images: &'a Tensor,
    u_y: &'a Tensor,
    w: &'a Tensor,
    schedule: &'a CosineSchedule,
    eta: f64,
    step_seed: u64,
}

/// Block t's denoising loss, its backward and its optimizer step.
fn train_block(job: BlockJob<'_>, shared: &Shared<'_>) -> Result<BlockOutcome> {
    let BlockJob {
        t,
        block,
        optimizer,
    } = job;
    let mut rng = SeededRng::new(shared.step_seed).fork(t as u64);
    let denoise = denoise_term(
        block,
        shared.schedule,
        shared.eta,
        t,
        shared.images,
        shared.u_y,
        shared.w,
        &mut rng,
    )?;
    optimizer.step(&denoise.backward()?)?;
    let z_clean = noised(shared.u_y, shared.schedule.alpha_bar_clean_end(), &mut rng)?;
    Ok(BlockOutcome {
        t,
        denoise: denoise.detach(),
        z_clean,
    })
}

/// Runs the jobs on `workers` threads (contiguous runs of jobs, each thread
/// in its own one-thread rayon pool); outcomes in job order.
fn run_jobs(
    jobs: Vec<BlockJob<'_>>,
    shared: &Shared<'_>,
    workers: usize,
) -> Result<Vec<BlockOutcome>> {
    if workers <= 1 {
        return jobs.into_iter().map(|j| train_block(j, shared)).collect();
    }
    let per_worker = jobs.len().div_ceil(workers);
    let mut runs: Vec<Vec<BlockJob<'_>>> = Vec::new();
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        runs.push(jobs.by_ref().take(per_worker).collect());
    }
    let results: Vec<Result<Vec<BlockOutcome>>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| {
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .map_err(|e| candle_core::Error::Msg(format!("dt: worker pool: {e}")))?;
                    pool.install(|| run.into_iter().map(|j| train_block(j, shared)).collect())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg(
                        "dt: a block worker thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut outcomes = Vec::new();
    for r in results {
        outcomes.extend(r?);
    }
    Ok(outcomes)
}

impl NoPropDt {
    /// The parallel step (see the module doc): the stepped blocks train
    /// concurrently, then the head takes one AdamW step per block loss, in
    /// block order. Returns per-block `[denoise, ce, kl]` scalar tensors.
    pub(crate) fn step_blocks_parallel(
        &mut self,
        stepped: &[usize],
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        // `DtConfig::validate` (run by `NoPropDt::new`) guarantees a fixed W.
        let step_seed = rng.next_u64();
        let w = self.embedding.matrix();
        let u_y = self.embedding.rows(labels)?;
        let shared = Shared {
            images,
            u_y: &u_y,
            w: &w,
            schedule: &self.schedule,
            eta: self.config.eta,
            step_seed,
        };
        // Split over processes: this one trains its own blocks only.
        let share = self.share.as_ref();
        let jobs: Vec<BlockJob<'_>> = self
            .blocks
            .iter()
            .zip(self.block_optimizers.iter_mut())
            .enumerate()
            .map(|(i, (block, optimizer))| (i + 1, block, optimizer))
            .filter(|(t, _, _)| stepped.contains(t) && share.is_none_or(|s| s.owns(*t)))
            .map(|(t, block, optimizer)| BlockJob {
                t,
                block,
                optimizer,
            })
            .collect();
        let workers = rayon::current_num_threads().clamp(1, jobs.len().max(1));
        let outcomes = run_jobs(jobs, &shared, workers)?;

        // Blocks trained by other processes (`distributed.rs`): their z_T
        // from their streams, a zero denoising term here.
        let mut outcomes = outcomes.into_iter().peekable();
        let mut in_order = Vec::with_capacity(stepped.len());
        for &t in stepped {
            match outcomes.next_if(|o| o.t == t) {
                Some(outcome) => in_order.push(outcome),
                None => in_order.push(BlockOutcome {
                    t,
                    denoise: Tensor::zeros((), u_y.dtype(), u_y.device())?,
                    z_clean: self.replay_clean_latent(t, &u_y, step_seed)?,
                }),
            }
        }

        let kl = kl_prior(&u_y, self.schedule.alpha_bar_noise_end())?;
        let mut terms = Vec::with_capacity(3 * in_order.len());
        for outcome in in_order {
            let ce = candle_nn::loss::cross_entropy(&self.head.forward(&outcome.z_clean)?, labels)?;
            self.head_optimizer(outcome.t).step(&ce.backward()?)?;
            terms.extend([outcome.denoise, ce.detach(), kl.detach()]);
        }
        Ok(terms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{DType, Device};
    use noprop_core::variant::ModelSpec;

    use super::*;
    use crate::DtConfig;

    fn config(parallel_blocks: bool) -> DtConfig {
        DtConfig {
            num_blocks: 3,
            parallel_blocks,
            ..DtConfig::default()
        }
    }

    /// Random images and labels (the equalities below hold for any data).
    fn batch(seed: u64) -> (Tensor, Tensor) {
        let mut rng = SeededRng::new(seed);
        let x = rng.normal((6, 1, 28, 28), &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 3, 3, 9, 1, 7], &Device::Cpu).unwrap();
        (x, y)
    }

    /// Every variable and optimizer tensor, as bits.
    fn snapshot(dt: &NoPropDt) -> BTreeMap<String, Vec<u32>> {
        let bits = |t: &Tensor| -> Vec<u32> {
            let t = t.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
            t.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let mut out: BTreeMap<String, Vec<u32>> = dt
            .store
            .named_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect();
        for (n, t) in dt.optimizer_tensors().unwrap() {
            out.insert(n, bits(&t));
        }
        out
    }

    fn model(parallel_blocks: bool) -> NoPropDt {
        NoPropDt::new(
            config(parallel_blocks),
            ModelSpec::mnist(),
            None,
            5,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// The parallel step is the sequential step's algorithm: a sequential
    /// model whose block t draws from the same per-block stream, and whose
    /// optimizers step on each block's *whole* loss (denoise + CE + KL),
    /// ends bitwise where the parallel one does, with the same loss terms.
    #[test]
    fn parallel_step_is_the_sequential_step_with_per_block_streams() {
        let mut parallel = model(true);
        let mut sequential = model(false);
        for step in 0..2 {
            let (x, y) = batch(step);
            let mut rng = SeededRng::new(40 + step);
            let report = parallel.step(&x, &y, &mut rng).unwrap();

            let step_seed = SeededRng::new(40 + step).next_u64();
            let mut terms = Vec::new();
            for t in 1..=3 {
                let mut block_rng = SeededRng::new(step_seed).fork(t as u64);
                let loss = sequential.block_loss(t, &x, &y, &mut block_rng).unwrap();
                let grads = loss.total.backward().unwrap();
                sequential.block_optimizers[t - 1].step(&grads).unwrap();
                sequential.head_optimizer(t).step(&grads).unwrap();
                for term in [&loss.denoise, &loss.ce, &loss.kl] {
                    terms.push(
                        term.to_dtype(DType::F64)
                            .unwrap()
                            .to_scalar::<f64>()
                            .unwrap(),
                    );
                }
            }
            assert_eq!(snapshot(&parallel), snapshot(&sequential), "step {step}");
            let sum = |k: usize| terms.iter().skip(k).step_by(3).sum::<f64>();
            let expected = [("denoise", sum(0)), ("ce", sum(1)), ("kl", sum(2))];
            for ((name, value), (e_name, e_value)) in report.terms.iter().zip(expected) {
                assert_eq!((name.as_str(), *value), (e_name, e_value));
            }
        }
    }

    /// The thread count changes nothing: 1, 2 and 3 workers give
    /// bitwise-identical models (and the parallel step does train).
    #[test]
    fn parallel_step_does_not_depend_on_the_thread_count() {
        let initial = snapshot(&model(true));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut dt = model(true);
                let mut rng = SeededRng::new(9);
                for step in 0..2 {
                    let (x, y) = batch(step);
                    dt.step(&x, &y, &mut rng).unwrap();
                }
                snapshot(&dt)
            })
        };
        let one = run(1);
        assert_ne!(
            one["block.2.image.conv1.weight"],
            initial["block.2.image.conv1.weight"]
        );
        assert_ne!(one["head.weight"], initial["head.weight"]);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}

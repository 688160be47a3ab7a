//! NoProp-DT over several processes: the blocks split between them.
//!
//! With a fixed W the blocks never interact (`parallel.rs`): block t's
//! update needs the minibatch and its own random stream
//! (`SeededRng::new(step_seed).fork(t)`), nothing of another block. So each
//! of N processes trains a contiguous share of the T blocks
//! ([`noprop_core::RowShard::of`] over the blocks: T = 10 over 2 processes is
//! blocks 1-5 and 6-10) on the same seeded minibatch stream, and the
//! result is bitwise the one process's parallel step.
//!
//! The head is trained by every process, identically: its AdamW steps once
//! per stepped block, in block order, on that block's z_T, which comes from
//! the block's stream *after* its z_{t-1} noise and dropout masks. A
//! process that does not own block t draws the z_{t-1} noise, skips the
//! masks' words ([`noprop_block::DtBlock::dropout_words`]) and draws z_T:
//! the same numbers, without running the block.
//!
//! What crosses between processes: one number per step (the owned blocks'
//! denoising losses, summed for the log) and, in [`NoPropDt::sync_group`]
//! (before each evaluation and checkpoint), each process's blocks:
//! parameters, BatchNorm statistics and optimizer state.
//!
//! A learned W (or a learned head shared through W) would couple the
//! blocks at every step (its gradient is a sum over blocks taken one block
//! at a time, in order); it is refused here: a distributed learned W needs
//! a different update (one summed W step per minibatch), not built.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use noprop_core::{Parallelism, ProcessGroup, RowShard, SeededRng};

use crate::loss::noised;
use crate::model::NoPropDt;
use crate::names::{is_block_var, OPTIM_PREFIX};

/// This process's place in a block-split run.
#[derive(Debug, Clone)]
pub(crate) struct BlockShare {
    pub(crate) group: ProcessGroup,
    /// Blocks (1-based) each rank trains, rank by rank.
    pub(crate) owners: Vec<Vec<usize>>,
}

impl BlockShare {
    pub(crate) fn owns(&self, t: usize) -> bool {
        self.owners[self.group.rank()].contains(&t)
    }
}

impl NoPropDt {
    /// Joins `group` (see the module doc): the blocks are split between the
    /// processes. Needs the parallel step (`parallel_blocks`, which implies
    /// a fixed W) and at least one block per process.
    pub(crate) fn join_blocks(&mut self, group: ProcessGroup) -> Result<Parallelism> {
        let (size, t) = (group.size(), self.config.num_blocks);
        if !self.config.parallel_blocks {
            candle_core::bail!(
                "dt: training across processes needs dt.parallel_blocks = true (per-block random \
                 streams, a fixed W)"
            );
        }
        if size > t {
            candle_core::bail!(
                "dt: {size} processes for {t} blocks: at most one process per block"
            );
        }
        let owners = (0..size)
            .map(|r| {
                let share = RowShard::of(t, r, size);
                (share.start + 1..=share.start + share.len).collect()
            })
            .collect();
        self.share = (size > 1).then_some(BlockShare { group, owners });
        Ok(Parallelism::Model)
    }

    /// Block t's z_T ~ q(z_T | y) of this step, as block t's job draws it,
    /// without running the block: its z_{t-1} noise is drawn, its dropout
    /// masks skipped.
    pub(crate) fn replay_clean_latent(
        &self,
        t: usize,
        u_y: &Tensor,
        step_seed: u64,
    ) -> Result<Tensor> {
        let mut rng = SeededRng::new(step_seed).fork(t as u64);
        noised(u_y, self.schedule.alpha_bar(t - 1)?, &mut rng)?;
        rng.skip_words(self.blocks[t - 1].dropout_words(u_y.dim(0)?));
        noised(u_y, self.schedule.alpha_bar_clean_end(), &mut rng)
    }

    /// The sum over processes of this step's owned denoising losses.
    pub(crate) fn sum_denoise(&self, denoise: f64) -> Result<f64> {
        match &self.share {
            Some(share) => {
                let mut v = [denoise];
                share.group.sum_f64(&mut v)?;
                Ok(v[0])
            }
            None => Ok(denoise),
        }
    }

    /// Every process sends its blocks (variables and optimizer state) and
    /// takes the others': afterwards every process holds the whole model.
    pub(crate) fn sync_blocks(&mut self) -> Result<()> {
        let Some(share) = self.share.clone() else {
            return Ok(());
        };
        let mine = &share.owners[share.group.rank()];
        let mut tensors: Vec<(String, Tensor)> = self
            .store
            .named_tensors()
            .into_iter()
            .filter(|(name, _)| mine.iter().any(|&t| is_block_var(name, t)))
            .collect();
        for &t in mine {
            for (name, tensor) in self.block_optimizers[t - 1].state()? {
                tensors.push((format!("{OPTIM_PREFIX}{name}"), tensor));
            }
        }
        let all = share.group.share_tensors(&tensors, &self.device)?;
        for (rank, received) in all.iter().enumerate() {
            if rank == share.group.rank() {
                continue;
            }
            let blocks = &share.owners[rank];
            self.load_blocks(received, blocks)?;
            for &t in blocks {
                let state: HashMap<String, Tensor> = received
                    .iter()
                    .filter_map(|(name, tensor)| {
                        let name = name.strip_prefix(OPTIM_PREFIX)?;
                        is_block_var(name, t).then(|| (name.to_string(), tensor.clone()))
                    })
                    .collect();
                self.block_optimizers[t - 1].load_state(&state)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{DType, Device};
    use noprop_core::distributed::threads;
    use noprop_core::variant::ModelSpec;
    use noprop_core::Variant;

    use super::*;
    use crate::DtConfig;

    fn config() -> DtConfig {
        DtConfig {
            num_blocks: 3,
            parallel_blocks: true,
            ..DtConfig::default()
        }
    }

    fn model() -> NoPropDt {
        NoPropDt::new(config(), ModelSpec::mnist(), None, 5, &Device::Cpu).unwrap()
    }

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

    /// Two and three processes (threads here) training their blocks end,
    /// after the sync, bitwise where one process does, with the same
    /// reported losses.
    #[test]
    fn split_blocks_train_bitwise_like_one_process() {
        let steps = 3;
        let mut one = model();
        let mut rng = SeededRng::new(21);
        let mut reports = Vec::new();
        for step in 0..steps {
            let (x, y) = batch(step);
            reports.push(one.step(&x, &y, &mut rng).unwrap());
        }
        let expected = snapshot(&one);
        for size in [2, 3] {
            let results: Vec<_> = std::thread::scope(|s| {
                threads::groups(size)
                    .into_iter()
                    .map(|group| {
                        s.spawn(move || {
                            let mut dt = model();
                            assert_eq!(dt.join_group(group).unwrap(), Parallelism::Model);
                            let mut rng = SeededRng::new(21);
                            let mut reports = Vec::new();
                            for step in 0..steps {
                                let (x, y) = batch(step);
                                reports.push(dt.step(&x, &y, &mut rng).unwrap());
                            }
                            dt.sync_group().unwrap();
                            (snapshot(&dt), reports)
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect()
            });
            for (rank, (snap, got)) in results.into_iter().enumerate() {
                assert!(
                    snap == expected,
                    "{size} processes, rank {rank}: the model differs"
                );
                assert_eq!(
                    got, reports,
                    "{size} processes, rank {rank}: the losses differ"
                );
            }
        }
    }

    #[test]
    fn bad_groups_are_refused() {
        let mut sequential = NoPropDt::new(
            DtConfig {
                parallel_blocks: false,
                ..config()
            },
            ModelSpec::mnist(),
            None,
            5,
            &Device::Cpu,
        )
        .unwrap();
        let group = threads::groups(2).remove(0);
        let err = sequential.join_group(group).unwrap_err().to_string();
        assert!(err.contains("dt.parallel_blocks"), "{err}");
        let err = model()
            .join_group(threads::groups(4).remove(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("4 processes for 3 blocks"), "{err}");
    }
}

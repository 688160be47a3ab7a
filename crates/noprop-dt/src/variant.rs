//! [`NoPropDt`] as a [`noprop_core::Variant`], the surface a trainer drives,
//! and as a [`noprop_core::BuildVariant`], how it is built from its
//! configuration.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use noprop_core::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, Parallelism, ParamStore, ProcessGroup,
    ScheduleTable, SeededRng, StepReport, Variant,
};

use crate::config::DtConfig;
use crate::model::NoPropDt;

impl Variant for NoPropDt {
    fn name(&self) -> &'static str {
        <Self as BuildVariant>::NAME
    }

    fn spec(&self) -> ModelSpec {
        self.spec
    }

    /// Records the epoch: the sweep order trains block
    /// `trained[(epoch / sweep_epochs_per_block) mod n]` in it.
    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        self.set_epoch(epoch);
        Ok(())
    }

    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.step(images, labels, rng)
    }

    /// Posterior-mixing inference (`deterministic` applies); `steps` and
    /// `solver` are ignored (DT always takes its T steps).
    fn predict_runs(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        self.predict_runs_batch(images, options, runs, rng)
    }

    /// Every block's optimizer and the head/W optimizer(s) alike.
    fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        for optimizer in self
            .block_optimizers
            .iter_mut()
            .chain(self.head_optimizers.iter_mut())
        {
            optimizer.set_schedule_factor(factor)?;
        }
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Every AdamW's moments and step counts, named
    /// `optim.{parameter}.{step,exp_avg,exp_avg_sq}`.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        self.optimizer_tensors()
    }

    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.load_optimizer_tensors(state)
    }

    /// Model parallel: the blocks are split between the processes
    /// (`distributed.rs`; needs `parallel_blocks`, a fixed W).
    fn join_group(&mut self, group: ProcessGroup) -> Result<Parallelism> {
        self.join_blocks(group)
    }

    /// Every process sends its blocks and takes the others'.
    fn sync_group(&mut self) -> Result<()> {
        self.sync_blocks()
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        noprop_core::variant::config_to_json("dt", &self.config)
    }

    /// The cosine schedule at t = 0..=T: alpha_bar, SNR, the SNR delta of
    /// block t, its loss weight (T/2) eta delta, and the Eq. 3 coefficients
    /// (`grid` does not apply: the schedule is discrete).
    fn schedule_table(&self, _grid: usize) -> Result<Option<ScheduleTable>> {
        Ok(Some(cosine_schedule_table(&self.config)?))
    }
}

impl BuildVariant for NoPropDt {
    type Config = DtConfig;
    const NAME: &'static str = "dt";

    fn build(
        config: DtConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        NoPropDt::with_init(config, spec, init, device)
    }
}

/// DT's cosine schedule as a table (see [`Variant::schedule_table`]).
pub fn cosine_schedule_table(config: &DtConfig) -> Result<ScheduleTable> {
    let schedule = noprop_core::CosineSchedule::from_config(&config.schedule_config())?;
    let t_max = config.num_blocks as f64;
    let rows = schedule
        .table()
        .iter()
        .map(|r| {
            let weight = r.snr_delta.map(|d| t_max / 2.0 * config.eta * d);
            vec![
                Some(r.t as f64),
                Some(r.alpha_bar),
                Some(r.snr),
                r.snr_delta,
                weight,
                r.a,
                r.b,
                r.c,
            ]
        })
        .collect();
    Ok(ScheduleTable {
        label: format!(
            "DT cosine schedule (T = {}, alpha_bar_max = {}, eta = {})",
            config.num_blocks, config.alpha_bar_max, config.eta
        ),
        columns: [
            "t",
            "alpha_bar",
            "snr",
            "snr_delta",
            "loss_weight",
            "a_t",
            "b_t",
            "c_t",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_table_matches_the_core_schedule() {
        let config = DtConfig {
            num_blocks: 4,
            eta: 0.5,
            ..DtConfig::default()
        };
        let table = cosine_schedule_table(&config).unwrap();
        assert_eq!(table.rows.len(), 5);
        // Independently: alpha_bar_T is the clean-end clip, SNR = ab / (1 - ab),
        // the loss weight is (T/2) eta (SNR(t) - SNR(t-1)), undefined at t = 0.
        assert!((table.rows[4][1].unwrap() - 0.9999).abs() < 1e-12);
        for t in 1..=4 {
            let (prev, row) = (&table.rows[t - 1], &table.rows[t]);
            let ab = row[1].unwrap();
            assert!((row[2].unwrap() - ab / (1.0 - ab)).abs() < 1e-9 * row[2].unwrap());
            let delta = row[2].unwrap() - prev[2].unwrap();
            assert!(delta > 0.0);
            assert!((row[3].unwrap() - delta).abs() < 1e-9 * delta);
            assert!((row[4].unwrap() - 2.0 * 0.5 * delta).abs() < 1e-9 * row[4].unwrap());
        }
        assert_eq!(table.rows[0][3], None);
        assert_eq!(table.rows[0][5], None);
    }
}

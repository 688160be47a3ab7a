//! [`NoPropCt`] as a [`noprop_core::Variant`], the surface a trainer drives,
//! and as a [`noprop_core::BuildVariant`], how it is built from its
//! configuration.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use noprop_core::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, Parallelism, ParamStore, ProcessGroup,
    ScheduleTable, SeededRng, StepReport, Variant,
};

use crate::config::CtConfig;
use crate::model::NoPropCt;
use crate::names::OPTIM_PREFIX;

impl Variant for NoPropCt {
    fn name(&self) -> &'static str {
        <Self as BuildVariant>::NAME
    }

    fn spec(&self) -> ModelSpec {
        self.spec
    }

    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.step(images, labels, rng)
    }

    /// Data parallel: each process takes its rows of every minibatch and
    /// the gradients (block, head, W and the schedule) are summed before
    /// each step (no BatchNorm in the block, so the sum is the whole
    /// batch's gradient).
    fn join_group(&mut self, group: ProcessGroup) -> Result<Parallelism> {
        self.group = (group.size() > 1).then_some(group);
        Ok(Parallelism::Data)
    }

    /// The probability-flow ODE from z_0 ~ N(0, I), then softmax(head(z_1));
    /// `deterministic` does not apply (the only randomness is z_0).
    fn predict_runs(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>> {
        self.predict_runs_batch(images, options, runs, rng)
    }

    fn set_lr_factor(&mut self, factor: f64) -> Result<()> {
        self.optimizer.set_schedule_factor(factor)
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Adam's moments and step counts, named
    /// `optim.{variable}.{step,exp_avg,exp_avg_sq}`.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        self.optimizer.prefixed_state(OPTIM_PREFIX)
    }

    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.optimizer
            .load_prefixed_state(OPTIM_PREFIX, state, "ct")
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        noprop_core::variant::config_to_json("ct", &self.config)
    }

    /// The learned schedule's current values on `grid` (at least 2) evenly
    /// spaced t in [0, 1]: gamma, alpha_bar, SNR and SNR'.
    fn schedule_table(&self, grid: usize) -> Result<Option<ScheduleTable>> {
        let n = grid.max(2);
        let t: Vec<f32> = (0..n).map(|i| i as f32 / (n - 1) as f32).collect();
        let values = self
            .schedule()
            .evaluate(&Tensor::from_vec(t.clone(), n, &self.device)?)?;
        let column = |x: &Tensor| -> Result<Vec<f32>> { x.to_dtype(DType::F32)?.to_vec1::<f32>() };
        let (gamma, alpha_bar, snr, snr_prime) = (
            column(&values.gamma)?,
            column(&values.alpha_bar)?,
            column(&values.snr)?,
            column(&values.snr_prime)?,
        );
        let rows = (0..n)
            .map(|i| {
                [t[i], gamma[i], alpha_bar[i], snr[i], snr_prime[i]]
                    .iter()
                    .map(|&x| Some(f64::from(x)))
                    .collect()
            })
            .collect();
        Ok(Some(ScheduleTable {
            label: format!("CT learned schedule on {n} points of t in [0, 1]"),
            columns: ["t", "gamma", "alpha_bar", "snr", "snr_prime"]
                .map(String::from)
                .to_vec(),
            rows,
        }))
    }
}

impl BuildVariant for NoPropCt {
    type Config = CtConfig;
    const NAME: &'static str = "ct";

    fn build(
        config: CtConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        NoPropCt::with_init(config, spec, init, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noprop_core::LearnedScheduleConfig;

    #[test]
    fn the_schedule_table_starts_at_the_configured_endpoints() {
        // Small schedule network and MNIST shapes; the initial endpoints are
        // gamma = -+ln 99, i.e. alpha_bar(0) = 0.01 and alpha_bar(1) = 0.99.
        let config = CtConfig {
            schedule: LearnedScheduleConfig {
                hidden: 8,
                ..Default::default()
            },
            ..Default::default()
        };
        let model = NoPropCt::new(config, ModelSpec::mnist(), None, 0, &Device::Cpu).unwrap();
        let table = model.schedule_table(5).unwrap().unwrap();
        assert_eq!(table.columns[2], "alpha_bar");
        assert_eq!(table.rows.len(), 5);
        let ab: Vec<f64> = table.rows.iter().map(|r| r[2].unwrap()).collect();
        assert!(
            (ab[0] - 0.01).abs() < 1e-5 && (ab[4] - 0.99).abs() < 1e-5,
            "{ab:?}"
        );
        assert!(ab.windows(2).all(|w| w[1] > w[0]), "{ab:?}");
        // SNR = alpha_bar / (1 - alpha_bar) in every row.
        for row in &table.rows {
            let (a, snr) = (row[2].unwrap(), row[3].unwrap());
            assert!((snr - a / (1.0 - a)).abs() < 1e-3 * snr.max(1.0), "{row:?}");
        }
    }
}

//! [`NoPropFm`] as a [`noprop_core::Variant`], the surface a trainer drives,
//! and as a [`noprop_core::BuildVariant`], how it is built from its
//! configuration.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use noprop_core::distributed::sum_data_parallel_step;
use noprop_core::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, Parallelism, ParamStore, ProcessGroup,
    SeededRng, StepReport, Variant,
};

use crate::config::FmConfig;
use crate::model::NoPropFm;
use crate::names::OPTIM_PREFIX;

impl Variant for NoPropFm {
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
        let (total, flow, anchor) = self.losses(images, labels, rng)?;
        let mut grads = total.backward()?;
        // One host read-out: total, flow and (with a head) the anchor CE.
        let mut parts = vec![total.reshape(1)?, flow.reshape(1)?];
        parts.extend(
            anchor
                .iter()
                .map(|ce| ce.reshape(1))
                .collect::<Result<Vec<_>>>()?,
        );
        let mut values = Tensor::cat(&parts, 0)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        sum_data_parallel_step(
            self.group.as_ref(),
            rng.row_shard(),
            &mut grads,
            &self.optimizer.named_params(),
            &mut values,
        )?;
        self.optimizer.step(&grads)?;
        let mut terms = vec![("flow".to_string(), values[1])];
        if let Some(&ce) = values.get(2) {
            terms.push(("anchor_ce".to_string(), ce));
        }
        Ok(StepReport {
            loss: values[0],
            terms,
        })
    }

    /// Data parallel: each process takes its rows of every minibatch and
    /// the gradients are summed before each step (no BatchNorm in the
    /// block, so the sum is the whole batch's gradient).
    fn join_group(&mut self, group: ProcessGroup) -> Result<Parallelism> {
        self.group = (group.size() > 1).then_some(group);
        Ok(Parallelism::Data)
    }

    /// Euler (or the configured solver) from z_0 ~ N(0, I); the softmax of
    /// minus the squared distances of z_1 to the embeddings. `deterministic`
    /// does not apply (the only randomness is z_0).
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
            .load_prefixed_state(OPTIM_PREFIX, state, "fm")
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        noprop_core::variant::config_to_json("fm", &self.config)
    }
}

impl BuildVariant for NoPropFm {
    type Config = FmConfig;
    const NAME: &'static str = "fm";

    fn build(
        config: FmConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        NoPropFm::with_init(config, spec, init, device)
    }
}

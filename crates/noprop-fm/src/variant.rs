//! [`NoPropFm`] as a [`noprop_core::Variant`], the surface a trainer drives,
//! and as a [`noprop_core::BuildVariant`], how it is built from its
//! configuration.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use noprop_core::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, ParamStore, SeededRng, StepReport,
    Variant,
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
        self.optimizer.backward_step(&total)?;
        let mut terms = vec![("flow".to_string(), flow.to_scalar::<f32>()? as f64)];
        if let Some(ce) = anchor {
            terms.push(("anchor_ce".to_string(), ce.to_scalar::<f32>()? as f64));
        }
        Ok(StepReport {
            loss: total.to_scalar::<f32>()? as f64,
            terms,
        })
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

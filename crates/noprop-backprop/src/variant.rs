//! [`NoPropBackprop`] as a [`noprop_core::Variant`], the surface a trainer
//! drives, and as a [`noprop_core::BuildVariant`], how it is built from its
//! configuration.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use noprop_core::{
    BuildVariant, InferenceOptions, ModelInit, ModelSpec, ParamStore, SeededRng, StepReport,
    Variant,
};

use crate::config::BackpropConfig;
use crate::model::NoPropBackprop;
use crate::names::OPTIM_PREFIX;

impl Variant for NoPropBackprop {
    fn name(&self) -> &'static str {
        <Self as BuildVariant>::NAME
    }

    fn spec(&self) -> ModelSpec {
        self.spec
    }

    /// One end-to-end step: CE(head(z_T), y), one backward through every
    /// block, one AdamW step. Terms: `ce` (equal to the loss).
    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.step(images, labels, rng)
    }

    /// The chain in evaluation mode from z_0 ~ N(0, I), or from z_0 = 0
    /// when `deterministic`; `steps` and `solver` are ignored (always T
    /// steps).
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
            .load_prefixed_state(OPTIM_PREFIX, state, "backprop")
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        noprop_core::variant::config_to_json("backprop", &self.config)
    }
}

impl BuildVariant for NoPropBackprop {
    type Config = BackpropConfig;
    const NAME: &'static str = "backprop";

    fn build(
        config: BackpropConfig,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self> {
        NoPropBackprop::with_init(config, spec, init, device)
    }
}

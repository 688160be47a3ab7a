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

    fn params(&self) -> &ParamStore {
        &self.store
    }

    /// AdamW's moments and step counts, named
    /// `optim.{parameter}.{step,exp_avg,exp_avg_sq}`.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .optimizer
            .state()?
            .into_iter()
            .map(|(n, t)| (format!("{OPTIM_PREFIX}{n}"), t))
            .collect())
    }

    /// Restores [`Variant::optimizer_state`]; every name must carry the
    /// `optim.` prefix and belong to a parameter of this model.
    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut inner = HashMap::new();
        for (name, t) in state {
            let Some(stripped) = name.strip_prefix(OPTIM_PREFIX) else {
                candle_core::bail!(
                    "backprop: optimizer state `{name}` lacks the `{OPTIM_PREFIX}` prefix"
                );
            };
            inner.insert(stripped.to_string(), t.clone());
        }
        self.optimizer.load_state(&inner)
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.config)
            .map_err(|e| candle_core::Error::Msg(format!("backprop: config to JSON: {e}")))
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

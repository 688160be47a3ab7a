//! [`Variant`] for [`NoPropCt`]: what the trainer drives.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use noprop_core::{InferenceOptions, ParamStore, SeededRng, StepReport, Variant, VariantKind};

use crate::model::NoPropCt;
use crate::names::OPTIM_PREFIX;

impl Variant for NoPropCt {
    fn kind(&self) -> VariantKind {
        VariantKind::Ct
    }

    fn num_classes(&self) -> usize {
        self.spec.num_classes
    }

    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport> {
        self.step(images, labels, rng)
    }

    fn predict_proba(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        NoPropCt::predict_proba(self, images, options, rng)
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .optimizer
            .state()?
            .into_iter()
            .map(|(name, t)| (format!("{OPTIM_PREFIX}{name}"), t))
            .collect())
    }

    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut stripped = HashMap::with_capacity(state.len());
        for (name, t) in state {
            match name.strip_prefix(OPTIM_PREFIX) {
                Some(rest) => stripped.insert(rest.to_string(), t.clone()),
                None => candle_core::bail!(
                    "ct: optimizer state `{name}` lacks the `{OPTIM_PREFIX}` prefix"
                ),
            };
        }
        self.optimizer.load_state(&stripped)
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(self.config).unwrap_or(serde_json::Value::Null)
    }
}

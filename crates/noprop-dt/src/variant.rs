//! [`NoPropDt`] as a [`noprop_core::Variant`], the surface the trainer drives.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use noprop_core::{InferenceOptions, ParamStore, SeededRng, StepReport, Variant, VariantKind};

use crate::model::NoPropDt;

impl Variant for NoPropDt {
    fn kind(&self) -> VariantKind {
        VariantKind::Dt
    }

    fn num_classes(&self) -> usize {
        self.spec.num_classes
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

    /// Posterior-mixing inference; `steps` and `solver` are ignored (DT
    /// always takes its T steps).
    fn predict_proba(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        rng: &mut SeededRng,
    ) -> Result<Tensor> {
        self.predict_proba_opts(images, options, rng)
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

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null)
    }
}

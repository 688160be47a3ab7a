//! The surface every NoProp variant implements, so that a trainer can drive
//! any of them without knowing which one it holds.
//!
//! - [`Variant`]: a model with its optimizers: one training step, one batch
//!   of inference (each run's class probabilities), its variables and
//!   optimizer state for checkpoints, its noise schedule as a table.
//! - [`BuildVariant`]: how a variant is built from its configuration
//!   ([`VariantConfig`]), fresh for training or blank for loading a
//!   checkpoint into ([`ModelInit`]).
//!
//! This crate names no variant: each variant crate states its own
//! [`BuildVariant::NAME`], and the trainer keeps the list.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::distributed::ProcessGroup;
use crate::embedding::EmbeddingKind;
use crate::ode::OdeSolver;
use crate::params::ParamStore;
use crate::rng::SeededRng;

/// The shape of the problem a model is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Image channels (1 for MNIST, 3 for CIFAR).
    pub in_channels: usize,
    /// Image height = width (28 for MNIST, 32 for CIFAR).
    pub image_size: usize,
    /// Number of classes m.
    pub num_classes: usize,
}

impl ModelSpec {
    /// MNIST-family: 1x28x28, 10 classes.
    pub fn mnist() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            num_classes: 10,
        }
    }

    /// Number of scalars in one image (C*H*W), the prototype embedding size.
    pub fn image_dim(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// Checks that `images` is `[B, C, H, W]` for this spec with B >= 1;
    /// returns B. `who` names the caller in the error.
    pub fn check_images(&self, images: &Tensor, who: &str) -> Result<usize> {
        let want = [self.in_channels, self.image_size, self.image_size];
        if images.rank() != 4 || images.dims()[1..] != want {
            candle_core::bail!(
                "{who}: images must be [B, {}, {}, {}], got {:?}",
                want[0],
                want[1],
                want[2],
                images.dims()
            );
        }
        let b = images.dim(0)?;
        if b == 0 {
            candle_core::bail!("{who}: empty batch of images");
        }
        Ok(b)
    }

    /// Checks `images` as [`ModelSpec::check_images`] and that `labels` is
    /// `[B]` of an integer dtype; returns B.
    pub fn check_batch(&self, images: &Tensor, labels: &Tensor, who: &str) -> Result<usize> {
        let b = self.check_images(images, who)?;
        if labels.dims() != [b] {
            candle_core::bail!(
                "{who}: labels must be [B] = [{b}] (one per image), got {:?}",
                labels.dims()
            );
        }
        if !matches!(
            labels.dtype(),
            candle_core::DType::U32 | candle_core::DType::I64 | candle_core::DType::U8
        ) {
            candle_core::bail!(
                "{who}: labels must be integers (u32), got {:?}",
                labels.dtype()
            );
        }
        Ok(b)
    }
}

/// What one training step did, as plain numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// The total loss that was minimised (for DT, summed over the blocks
    /// stepped, each of which was minimised separately).
    pub loss: f64,
    /// Named components of the loss (for example "denoise", "ce", "kl").
    pub terms: Vec<(String, f64)>,
}

/// How a variant runs one inference. `None` means the variant's configured
/// default; a setting that does not apply to a variant is ignored by it.
/// How many runs and how many images per batch are the caller's
/// ([`crate::inference::InferenceSettings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InferenceOptions {
    /// ODE steps (CT, FM).
    pub steps: Option<usize>,
    /// ODE integrator (CT, FM).
    pub solver: Option<OdeSolver>,
    /// DT: no noise injected during posterior mixing.
    pub deterministic: Option<bool>,
}

/// A table of numbers with named columns (a noise schedule); `None` where
/// a quantity is undefined (the DT step coefficients at t = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleTable {
    /// What the table shows, e.g. "DT cosine schedule (T = 10)".
    pub label: String,
    /// Column names; the first is the time (`t`).
    pub columns: Vec<String>,
    /// One row per time point, one value per column.
    pub rows: Vec<Vec<Option<f64>>>,
}

impl ScheduleTable {
    /// The values of column `name`, if there is one.
    pub fn column(&self, name: &str) -> Option<Vec<Option<f64>>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(
            self.rows
                .iter()
                .map(|r| r.get(i).copied().flatten())
                .collect(),
        )
    }
}

/// How a variant spreads one training run over the processes of a
/// [`ProcessGroup`] ([`Variant::join_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// Each process takes its rows of every minibatch (the trainer cuts
    /// them and sets the step generator's [`crate::RowShard`]); the variant
    /// sums its gradients over the processes before each optimizer step, so
    /// every process holds the same model throughout.
    Data,
    /// Every process takes the whole minibatch and trains its share of the
    /// model; the shares meet in [`Variant::sync_group`], which the trainer
    /// calls before every evaluation and checkpoint.
    Model,
}

/// A NoProp model with its optimizers: the unit a trainer drives.
pub trait Variant {
    /// The variant's name ([`BuildVariant::NAME`]): the key of its
    /// configuration section and of checkpoint metadata.
    fn name(&self) -> &'static str;

    /// The shape of the problem the model was built for.
    fn spec(&self) -> ModelSpec;

    /// Called before each epoch (0-based), for variants whose training order
    /// depends on the epoch (the DT block sweep).
    fn begin_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// One optimisation step on a batch. `images` is `[B, C, H, W]` f32,
    /// `labels` `[B]` u32. Updates only what the variant owns; every random
    /// number comes from `rng`.
    fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut SeededRng,
    ) -> Result<StepReport>;

    /// Class probabilities of `runs` independent inference runs on one
    /// batch of images `[B, C, H, W]`: `runs` tensors `[B, m]` (rows sum to
    /// 1), in evaluation mode, every random number from `rng`, run after
    /// run. Work shared by the runs (the image features) is done once.
    /// Callers bound B; [`crate::inference`] batches, averages and scores.
    fn predict_runs(
        &self,
        images: &Tensor,
        options: &InferenceOptions,
        runs: usize,
        rng: &mut SeededRng,
    ) -> Result<Vec<Tensor>>;

    /// Makes this model one of `group.size()` processes training together
    /// (every process builds the same model from the same seed, or restores
    /// the same checkpoint, then joins), and says how the work is split.
    /// The default: the variant does not train across processes.
    fn join_group(&mut self, group: ProcessGroup) -> Result<Parallelism> {
        candle_core::bail!(
            "{} does not train across processes ({} processes were started)",
            self.name(),
            group.size()
        )
    }

    /// Makes every process's variables and optimizer state those of the
    /// whole model (model parallelism: each process sends the share it
    /// trains). Every process calls it at the same point. The default: the
    /// processes already agree.
    fn sync_group(&mut self) -> Result<()> {
        Ok(())
    }

    /// Multiplies every learning rate of the variant's optimizers by
    /// `factor` (>= 0) from the next step on: the trainer's run-long
    /// schedule ([`crate::LrSchedule`]). 1 restores the configured rates;
    /// a variant's own adjustments (a warm-up) apply on top.
    fn set_lr_factor(&mut self, factor: f64) -> Result<()>;

    /// The model's variables (parameters and buffers), sorted by name.
    fn params(&self) -> &ParamStore;

    /// Optimizer state as named tensors (moments, step counts), for exact
    /// resumption.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores what [`Variant::optimizer_state`] returned.
    fn load_optimizer_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// The variant's configuration as JSON (for checkpoint metadata).
    fn config_json(&self) -> Result<serde_json::Value>;

    /// The model's noise schedule on `grid` points (for variants with a
    /// learned schedule) or at its steps (a fixed discrete one); `None` for
    /// a variant without one.
    fn schedule_table(&self, _grid: usize) -> Result<Option<ScheduleTable>> {
        Ok(None)
    }
}

/// `config` as JSON for [`Variant::config_json`]; the error names `who`.
pub fn config_to_json<C: Serialize>(who: &str, config: &C) -> Result<serde_json::Value> {
    serde_json::to_value(config)
        .map_err(|e| candle_core::Error::Msg(format!("{who}: configuration to JSON: {e}")))
}

/// A variant's configuration: serialisable with every default filled in,
/// checked as a whole.
pub trait VariantConfig:
    Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Checks every field, naming the first bad one.
    fn validate(&self) -> Result<()>;

    /// The class embedding it asks for.
    fn embedding(&self) -> EmbeddingKind;
}

/// How a model's initial values are made.
#[derive(Debug, Clone, Copy)]
pub enum ModelInit<'a> {
    /// For training: every value drawn from `SeededRng::new(seed)` and its
    /// forks; `prototypes` (normalised training images `[N, C, H, W]`,
    /// labels `[N]`) is required by prototype embeddings and ignored
    /// otherwise.
    Train {
        /// Seed of the model's [`SeededRng`].
        seed: u64,
        /// Normalised training images `[N, C, H, W]` and their labels `[N]`, for prototype embeddings.
        prototypes: Option<(&'a Tensor, &'a Tensor)>,
    },
    /// Right names and shapes for a checkpoint to be loaded into: no images
    /// are needed, the values are overwritten.
    ForLoading,
    /// As [`ModelInit::ForLoading`], creating at most `max_values` values
    /// in all (the element count of the tensors to be loaded): a
    /// configuration read from a damaged file that asks for more is an
    /// error before anything is allocated.
    ForLoadingAtMost {
        /// Most values (tensor elements) the model may create.
        max_values: usize,
    },
}

impl<'a> ModelInit<'a> {
    /// The training seed (0 for [`ModelInit::ForLoading`]: the values are
    /// overwritten) and the prototype source.
    pub fn parts(self) -> (u64, Option<(&'a Tensor, &'a Tensor)>) {
        match self {
            ModelInit::Train { seed, prototypes } => (seed, prototypes),
            ModelInit::ForLoading | ModelInit::ForLoadingAtMost { .. } => (0, None),
        }
    }

    /// The model's parameter store, drawing its initial values from `rng`,
    /// with the bound of [`ModelInit::ForLoadingAtMost`].
    pub fn param_store(&self, rng: SeededRng) -> ParamStore {
        let store = ParamStore::new(rng);
        match *self {
            ModelInit::ForLoadingAtMost { max_values } => store.with_max_values(max_values),
            _ => store,
        }
    }
}

/// A variant that can be built from its configuration alone.
pub trait BuildVariant: Variant + Sized + 'static {
    /// The variant's configuration.
    type Config: VariantConfig;

    /// Its name: the key of its configuration section (`[fm]`), of
    /// `--variant` and of checkpoint metadata.
    const NAME: &'static str;

    /// Builds the model (validating `config`) on `device`.
    fn build(
        config: Self::Config,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Self>;
}

//! The configuration of a NoProp-DT model: the schedule, the loss weight eta,
//! the class embedding, the optimizers, the training order and the
//! inference defaults. `Default` is the paper's MNIST setting (spec,
//! "NoProp-DT").

use candle_core::Result;
use noprop_core::{CosineSchedule, CosineScheduleConfig, EmbeddingKind, VariantConfig};
use serde::{Deserialize, Serialize};

/// In which order the blocks are trained (each block's loss is always
/// minimised on its own; the order only decides which blocks step on a
/// minibatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingOrder {
    /// Every (trained) block takes one step on every minibatch, blocks
    /// 1..=T in turn, each on its own fresh noise. A faithful PyTorch
    /// reference trained this way (docs/results).
    #[default]
    AllBlocks,
    /// Block by block: block 1 over the data for `sweep_epochs_per_block`
    /// epochs, then block 2, ...; epoch e (0-based) trains the
    /// `(e / sweep_epochs_per_block) mod n`-th trained block, so more epochs
    /// than `T * sweep_epochs_per_block` start the sweep again. With
    /// `sweep_epochs_per_block = 1` and `10 * E` epochs this is the paper's
    /// Algorithm 1 over E of its epochs (each: every block in turn over all
    /// minibatches).
    Sweep,
    /// One block per minibatch, drawn uniformly from the trained blocks with
    /// the step's generator (the paper notes that sampling t works).
    Random,
}

impl std::fmt::Display for TrainingOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AllBlocks => "all-blocks",
            Self::Sweep => "sweep",
            Self::Random => "random",
        })
    }
}

impl std::str::FromStr for TrainingOrder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all-blocks" | "all_blocks" | "all" => Ok(Self::AllBlocks),
            "sweep" => Ok(Self::Sweep),
            "random" => Ok(Self::Random),
            _ => Err(format!(
                "unknown DT training order `{s}` (expected all-blocks, sweep or random)"
            )),
        }
    }
}

/// How the head and a learned W, which every block's loss updates, keep
/// their AdamW state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharedOptimizer {
    /// One AdamW, stepped by every block's loss in turn: its moments mix
    /// the blocks' gradients, whose loss weights differ by orders of
    /// magnitude (with alpha_bar_T = 0.9999 block T's is about 5,000,
    /// the others' at most 13), so block T's gradients dominate the second
    /// moment of W.
    #[default]
    Shared,
    /// One AdamW state per block for the same head and W variables: block
    /// t's loss steps state t, so each block's update is normalised by its
    /// own gradient statistics (the variables themselves are shared). After
    /// one epoch with dim20 embeddings it did not differ measurably from
    /// `Shared` (docs/results/dt-shared-optimizer/).
    PerBlock,
}

/// NoProp-DT settings (serde: every field optional, unknown fields refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DtConfig {
    /// Number of blocks (denoising steps) T.
    pub num_blocks: usize,
    /// eta, the weight of the denoising terms (Eq. 8).
    pub eta: f64,
    /// Clean-end clip alpha_bar_T of the cosine schedule: SNR(T) =
    /// alpha_bar_max / (1 - alpha_bar_max). It sets the last block's loss
    /// weight (about 5,000 at 0.9999 against at most 13 for the others).
    pub alpha_bar_max: f64,
    /// Noise-end clip: alpha_bar_t is at least this (0 = unclipped).
    pub alpha_bar_min: f64,
    /// Class embedding W: one-hot (fixed), dimN (learned) or prototype.
    pub embedding: EmbeddingKind,
    /// Dropout of the blocks' convolutional branches.
    pub dropout: f32,
    /// AdamW learning rate of every optimizer (blocks, head and W).
    pub lr: f64,
    /// AdamW learning rate of the head/W optimizer; `None` uses `lr`. The
    /// paper gives one rate; early in training the head (which must undo
    /// its random initialisation one lr-sized Adam step at a time) lags the
    /// blocks, and a larger rate here shortens that phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_lr: Option<f64>,
    /// How the head and a learned W keep their optimizer state.
    pub shared_optimizer: SharedOptimizer,
    /// AdamW (decoupled) weight decay of every optimizer.
    pub weight_decay: f64,
    /// Which blocks step on a minibatch.
    pub order: TrainingOrder,
    /// Sweep order: epochs spent on one block before moving to the next.
    pub sweep_epochs_per_block: usize,
    /// Train only these blocks (1-based, each at most once); `None` trains
    /// all. The others are left bitwise untouched (parameters, BatchNorm
    /// statistics and optimizer state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_blocks: Option<Vec<usize>>,
    /// Train the blocks of a minibatch concurrently, one per worker thread
    /// (rayon's thread count), instead of one after another. The same
    /// losses and updates; each block draws from its own random stream, so
    /// results differ from the sequential step's but not with the thread
    /// count. Needs the one-hot embedding, the all-blocks order and the CPU.
    pub parallel_blocks: bool,
    /// Inference default: no noise injected by the posterior steps.
    pub deterministic: bool,
}

impl Default for DtConfig {
    fn default() -> Self {
        Self {
            num_blocks: 10,
            eta: 0.1,
            alpha_bar_max: 0.9999,
            alpha_bar_min: 0.0,
            embedding: EmbeddingKind::OneHot,
            dropout: noprop_block::config::DEFAULT_DROPOUT,
            lr: 1e-3,
            head_lr: None,
            shared_optimizer: SharedOptimizer::Shared,
            weight_decay: 1e-3,
            order: TrainingOrder::AllBlocks,
            sweep_epochs_per_block: 1,
            train_blocks: None,
            parallel_blocks: false,
            deterministic: false,
        }
    }
}

impl DtConfig {
    /// The cosine schedule configuration these settings describe.
    pub fn schedule_config(&self) -> CosineScheduleConfig {
        CosineScheduleConfig {
            num_steps: self.num_blocks,
            alpha_bar_max: self.alpha_bar_max,
            alpha_bar_min: self.alpha_bar_min,
            ..CosineScheduleConfig::default()
        }
    }

    /// How many head/W optimizer states the model keeps.
    pub fn head_optimizer_count(&self) -> usize {
        match self.shared_optimizer {
            SharedOptimizer::Shared => 1,
            SharedOptimizer::PerBlock => self.num_blocks,
        }
    }

    /// The blocks that train (1-based, ascending), all of 1..=T by default.
    pub fn trained_blocks(&self) -> Vec<usize> {
        match &self.train_blocks {
            Some(blocks) => {
                let mut sorted = blocks.clone();
                sorted.sort_unstable();
                sorted
            }
            None => (1..=self.num_blocks).collect(),
        }
    }

    /// Checks every setting; the error names the field and the problem.
    pub fn validate(&self) -> Result<()> {
        if self.num_blocks == 0 {
            candle_core::bail!("dt config: num_blocks (T) must be at least 1");
        }
        if !(self.eta > 0.0 && self.eta.is_finite()) {
            candle_core::bail!(
                "dt config: eta must be positive and finite, got {}",
                self.eta
            );
        }
        CosineSchedule::from_config(&self.schedule_config())
            .map_err(|e| candle_core::Error::Msg(format!("dt config: {e}")))?;
        if let EmbeddingKind::Learned { dim: 0 } = self.embedding {
            candle_core::bail!("dt config: a learned embedding needs dim >= 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            candle_core::bail!(
                "dt config: dropout must lie in [0, 1), got {}",
                self.dropout
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            candle_core::bail!("dt config: lr must be positive and finite, got {}", self.lr);
        }
        if let Some(head_lr) = self.head_lr {
            if !(head_lr > 0.0 && head_lr.is_finite()) {
                candle_core::bail!("dt config: head_lr must be positive and finite, got {head_lr}");
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            candle_core::bail!(
                "dt config: weight_decay must be non-negative and finite, got {}",
                self.weight_decay
            );
        }
        if self.sweep_epochs_per_block == 0 {
            candle_core::bail!("dt config: sweep_epochs_per_block must be at least 1");
        }
        if let Some(blocks) = &self.train_blocks {
            if blocks.is_empty() {
                candle_core::bail!(
                    "dt config: train_blocks is empty (omit it to train every block)"
                );
            }
            let mut seen = vec![false; self.num_blocks + 1];
            for &t in blocks {
                if t == 0 || t > self.num_blocks {
                    candle_core::bail!(
                        "dt config: train_blocks lists block {t}, blocks are numbered 1..={}",
                        self.num_blocks
                    );
                }
                if std::mem::replace(&mut seen[t], true) {
                    candle_core::bail!("dt config: train_blocks lists block {t} twice");
                }
            }
        }
        if self.parallel_blocks {
            if self.embedding != EmbeddingKind::OneHot {
                candle_core::bail!(
                    "dt config: parallel_blocks needs the one-hot embedding (a learned W couples the blocks), got {}",
                    self.embedding
                );
            }
            if self.order != TrainingOrder::AllBlocks {
                candle_core::bail!(
                    "dt config: parallel_blocks trains every block of a minibatch at once; it needs order = all-blocks"
                );
            }
        }
        Ok(())
    }
}

impl VariantConfig for DtConfig {
    fn validate(&self) -> Result<()> {
        DtConfig::validate(self)
    }

    fn embedding(&self) -> EmbeddingKind {
        self.embedding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_valid() {
        let c = DtConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (c.num_blocks, c.eta, c.lr, c.weight_decay),
            (10, 0.1, 1e-3, 1e-3)
        );
        assert_eq!(c.alpha_bar_max, 0.9999);
        assert_eq!(c.trained_blocks(), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn validation_names_the_problem() {
        let err = |c: DtConfig| c.validate().unwrap_err().to_string();
        let base = DtConfig::default;
        let cases: Vec<(DtConfig, &str)> = vec![
            (
                DtConfig {
                    num_blocks: 0,
                    ..base()
                },
                "num_blocks",
            ),
            (
                DtConfig {
                    eta: -0.1,
                    ..base()
                },
                "eta",
            ),
            (DtConfig { eta: 0.0, ..base() }, "eta"),
            (
                DtConfig {
                    alpha_bar_max: 1.0,
                    ..base()
                },
                "alpha_bar_max",
            ),
            (
                DtConfig {
                    alpha_bar_min: 0.99999,
                    ..base()
                },
                "alpha_bar_min",
            ),
            (
                DtConfig {
                    embedding: EmbeddingKind::Learned { dim: 0 },
                    ..base()
                },
                "dim",
            ),
            (
                DtConfig {
                    dropout: 1.0,
                    ..base()
                },
                "dropout",
            ),
            (DtConfig { lr: 0.0, ..base() }, "lr"),
            (
                DtConfig {
                    parallel_blocks: true,
                    embedding: EmbeddingKind::Learned { dim: 20 },
                    ..base()
                },
                "parallel_blocks needs the one-hot embedding",
            ),
            (
                DtConfig {
                    parallel_blocks: true,
                    order: TrainingOrder::Sweep,
                    ..base()
                },
                "parallel_blocks trains every block",
            ),
            (
                DtConfig {
                    head_lr: Some(f64::NAN),
                    ..base()
                },
                "head_lr",
            ),
            (
                DtConfig {
                    weight_decay: -1.0,
                    ..base()
                },
                "weight_decay",
            ),
            (
                DtConfig {
                    sweep_epochs_per_block: 0,
                    ..base()
                },
                "sweep_epochs_per_block",
            ),
            (
                DtConfig {
                    train_blocks: Some(vec![]),
                    ..base()
                },
                "empty",
            ),
            (
                DtConfig {
                    train_blocks: Some(vec![0]),
                    ..base()
                },
                "block 0",
            ),
            (
                DtConfig {
                    train_blocks: Some(vec![11]),
                    ..base()
                },
                "block 11",
            ),
            (
                DtConfig {
                    train_blocks: Some(vec![2, 2]),
                    ..base()
                },
                "twice",
            ),
        ];
        for (config, expected) in cases {
            let e = err(config);
            assert!(e.contains(expected), "expected `{expected}` in `{e}`");
        }
    }

    #[test]
    fn serde_round_trip_defaults_and_unknown_fields() {
        let c = DtConfig {
            embedding: EmbeddingKind::Learned { dim: 20 },
            order: TrainingOrder::Sweep,
            train_blocks: Some(vec![3, 1]),
            ..DtConfig::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("\"dim20\"") && json.contains("\"sweep\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DtConfig>(&json).unwrap(), c);
        assert_eq!(c.trained_blocks(), vec![1, 3]);
        let partial: DtConfig = serde_json::from_str(r#"{"order": "random"}"#).unwrap();
        assert_eq!(partial.order, TrainingOrder::Random);
        assert_eq!(partial.num_blocks, 10);
        let unknown = serde_json::from_str::<DtConfig>(r#"{"etaa": 1.0}"#).unwrap_err();
        assert!(unknown.to_string().contains("etaa"), "{unknown}");
        assert_eq!(
            "all-blocks".parse::<TrainingOrder>().unwrap(),
            TrainingOrder::AllBlocks
        );
        assert!("sideways".parse::<TrainingOrder>().is_err());
    }
}

//! The configuration of the back-propagation baseline: the number of
//! blocks, the class embedding, the dropout, the optimizer, the initial
//! mixing coefficients, the blocks' read-out and the inference default.
//! `Default` is the paper's MNIST setting, with the choices where the paper
//! is silent documented on their fields (docs/algorithm.md, "Eqs. 17-19", and the paper's
//! Table 3: AdamW, lr 1e-3, weight decay 1e-3, batch 128, dropout 0.2).

use candle_core::Result;
use noprop_core::{EmbeddingKind, VariantConfig};
use serde::{Deserialize, Serialize};

/// How a block's m logits become its prediction u_hat_t [B, d].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockOutput {
    /// softmax(logits) W, a convex combination of class embeddings, as in
    /// NoProp-DT's blocks.
    Softmax,
    /// logits W, without the softmax (NoProp-FM's read-out): no saturating
    /// softmax between the blocks of the chain. The default.
    #[default]
    Linear,
}

/// Settings of the back-propagation baseline (serde: every field optional,
/// unknown fields refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpropConfig {
    /// Number of chained blocks T (the paper: 10, as NoProp-DT).
    pub num_blocks: usize,
    /// Class embedding W: one-hot (fixed), dimN (learned, orthogonal start)
    /// or prototype (learned, d = C*H*W). A learned W is trained by the same
    /// end-to-end gradient as everything else.
    pub embedding: EmbeddingKind,
    /// Dropout of the blocks' convolutional branches (the paper: 0.2).
    pub dropout: f32,
    /// AdamW learning rate, shared by every parameter (blocks, mixing
    /// weights, head, learned W).
    pub lr: f64,
    /// AdamW learning rate of the head and a learned W; `None` uses `lr`
    /// (the paper gives one rate). As in NoProp-DT: the head reads z_T,
    /// which lies near the simplex of class embeddings, so its logits only
    /// separate once its weights have grown from their random start, one
    /// lr-sized Adam step at a time; a larger rate here shortens that phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_lr: Option<f64>,
    /// AdamW (decoupled) weight decay, shared by every parameter, the
    /// mixing weights w_t included (decay pulls a_t = tanh(w_t) towards 0).
    pub weight_decay: f64,
    /// Initial value of every mixing coefficient a_t = tanh(w_t), in
    /// (0, 1): w_t starts at atanh(mixing_init). The paper gives no value;
    /// 0.5 makes each step an equal blend of z_{t-1} and the block's
    /// prediction, and after T = 10 steps the noise z_0 keeps a weight of
    /// 0.5^10 (about 1e-3) in z_T.
    pub mixing_init: f64,
    /// How each block's logits become u_hat_t: `linear` (logits W, the
    /// default) or `softmax` (softmax(logits) W, as NoProp-DT reads its
    /// blocks). The paper writes u_hat_t for the baseline without saying.
    /// Measured (MNIST, 20,000 training images, one epoch, seed 0, test on
    /// 2,000 images): softmax 54.7%, linear 96.3%. With the softmax the
    /// chain maps each class to a vertex of the simplex that the random
    /// head happens to favour; two classes that favour the same vertex
    /// merge, and the saturated softmaxes leave too little gradient to part
    /// them (three pairs after 3 full epochs: 69%). See docs/algorithm.md.
    pub block_output: BlockOutput,
    /// Inference default: start the chain from z_0 = 0 (the prior's mean)
    /// instead of z_0 ~ N(0, I). Nothing is then drawn, and every run is
    /// the same.
    pub deterministic: bool,
}

impl Default for BackpropConfig {
    fn default() -> Self {
        Self {
            num_blocks: 10,
            embedding: EmbeddingKind::OneHot,
            dropout: noprop_block::config::DEFAULT_DROPOUT,
            lr: 1e-3,
            head_lr: None,
            weight_decay: 1e-3,
            mixing_init: 0.5,
            block_output: BlockOutput::Linear,
            deterministic: false,
        }
    }
}

impl BackpropConfig {
    /// The initial raw mixing weight w_t = atanh(mixing_init).
    pub fn initial_mixing_weight(&self) -> f64 {
        self.mixing_init.atanh()
    }

    /// Checks every setting; the error names the field and the problem.
    pub fn validate(&self) -> Result<()> {
        if self.num_blocks == 0 {
            candle_core::bail!("backprop config: num_blocks (T) must be at least 1");
        }
        if let EmbeddingKind::Learned { dim: 0 } = self.embedding {
            candle_core::bail!("backprop config: embedding: a learned embedding needs dim >= 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            candle_core::bail!(
                "backprop config: dropout must lie in [0, 1), got {}",
                self.dropout
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            candle_core::bail!(
                "backprop config: lr must be positive and finite, got {}",
                self.lr
            );
        }
        if let Some(head_lr) = self.head_lr {
            if !(head_lr > 0.0 && head_lr.is_finite()) {
                candle_core::bail!(
                    "backprop config: head_lr must be positive and finite, got {head_lr}"
                );
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            candle_core::bail!(
                "backprop config: weight_decay must be non-negative and finite, got {}",
                self.weight_decay
            );
        }
        if !(self.mixing_init > 0.0 && self.mixing_init < 1.0) {
            candle_core::bail!(
                "backprop config: mixing_init (the initial a_t = tanh(w_t)) must lie in (0, 1), got {}",
                self.mixing_init
            );
        }
        Ok(())
    }
}

impl VariantConfig for BackpropConfig {
    fn validate(&self) -> Result<()> {
        BackpropConfig::validate(self)
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
        let c = BackpropConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (c.num_blocks, c.lr, c.weight_decay, c.dropout),
            (10, 1e-3, 1e-3, 0.2)
        );
        assert_eq!(c.embedding, EmbeddingKind::OneHot);
        assert!(!c.deterministic);
        assert_eq!(c.head_lr, None);
        assert_eq!(c.block_output, BlockOutput::Linear);
        // tanh(atanh(0.5)) = 0.5; atanh(0.5) = ln(3) / 2.
        let w = c.initial_mixing_weight();
        assert!((w - 3f64.ln() / 2.0).abs() < 1e-15);
        assert!((w.tanh() - 0.5).abs() < 1e-15);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let base = BackpropConfig::default;
        let cases: Vec<(BackpropConfig, &str)> = vec![
            (
                BackpropConfig {
                    num_blocks: 0,
                    ..base()
                },
                "num_blocks",
            ),
            (
                BackpropConfig {
                    embedding: EmbeddingKind::Learned { dim: 0 },
                    ..base()
                },
                "embedding",
            ),
            (
                BackpropConfig {
                    dropout: 1.0,
                    ..base()
                },
                "dropout",
            ),
            (
                BackpropConfig {
                    dropout: -0.1,
                    ..base()
                },
                "dropout",
            ),
            (BackpropConfig { lr: 0.0, ..base() }, "lr"),
            (
                BackpropConfig {
                    lr: f64::INFINITY,
                    ..base()
                },
                "lr",
            ),
            (
                BackpropConfig {
                    head_lr: Some(0.0),
                    ..base()
                },
                "head_lr",
            ),
            (
                BackpropConfig {
                    head_lr: Some(f64::NAN),
                    ..base()
                },
                "head_lr",
            ),
            (
                BackpropConfig {
                    weight_decay: -1e-3,
                    ..base()
                },
                "weight_decay",
            ),
            (
                BackpropConfig {
                    weight_decay: f64::NAN,
                    ..base()
                },
                "weight_decay",
            ),
            (
                BackpropConfig {
                    mixing_init: 0.0,
                    ..base()
                },
                "mixing_init",
            ),
            (
                BackpropConfig {
                    mixing_init: 1.0,
                    ..base()
                },
                "mixing_init",
            ),
            (
                BackpropConfig {
                    mixing_init: f64::NAN,
                    ..base()
                },
                "mixing_init",
            ),
        ];
        for (config, field) in cases {
            let e = config.validate().unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains("backprop config"),
                "expected `{field}` in `{e}`"
            );
        }
        // Values inside the ranges pass.
        BackpropConfig {
            num_blocks: 1,
            embedding: EmbeddingKind::Prototype,
            dropout: 0.0,
            weight_decay: 0.0,
            mixing_init: 0.99,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn serde_round_trip_defaults_and_unknown_fields() {
        let c = BackpropConfig {
            num_blocks: 3,
            embedding: EmbeddingKind::Learned { dim: 20 },
            dropout: 0.1,
            lr: 2e-3,
            head_lr: Some(1e-2),
            weight_decay: 0.0,
            mixing_init: 0.25,
            block_output: BlockOutput::Softmax,
            deterministic: true,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"dim20\""), "{json}");
        assert!(json.contains(r#""block_output":"softmax""#), "{json}");
        assert_eq!(serde_json::from_str::<BackpropConfig>(&json).unwrap(), c);
        // Every field is optional.
        let partial: BackpropConfig =
            serde_json::from_str(r#"{"embedding": "prototype"}"#).unwrap();
        assert_eq!(
            partial,
            BackpropConfig {
                embedding: EmbeddingKind::Prototype,
                ..BackpropConfig::default()
            }
        );
        let empty: BackpropConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, BackpropConfig::default());
        // An unset head_lr is left out, not written as null (TOML has none).
        let defaults = serde_json::to_string(&BackpropConfig::default()).unwrap();
        assert!(!defaults.contains("head_lr"), "{defaults}");
        let unknown = serde_json::from_str::<BackpropConfig>(r#"{"eta": 0.1}"#).unwrap_err();
        assert!(unknown.to_string().contains("eta"), "{unknown}");
    }
}

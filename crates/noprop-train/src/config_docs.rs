//! `docs/configuration.md`: every key of a run configuration with its
//! default and meaning. The keys and defaults come from the code (the
//! resolved default configuration of every registered variant); the
//! meanings from [`MEANINGS`]. A test checks that the two cover the same
//! keys and that the committed page is [`render`]'s output, so the page
//! cannot go stale (`NOPROP_UPDATE_DOCS=1 cargo test -p noprop-train --lib
//! config_docs` rewrites it).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;

use crate::config::RunConfig;
use crate::overrides::Override;
use crate::registry::{self, Sections};

/// Keys that are unset by default (absent from a resolved configuration).
pub const OPTIONAL_KEYS: &[&str] = &[
    "data.dir",
    "data.train_limit",
    "data.test_limit",
    "data.mean",
    "data.std",
    "data.image_size",
    "data.channels",
    "data.test_fraction",
    "eval.steps",
    "eval.solver",
    "eval.deterministic",
    "eval.runs",
    "dt.head_lr",
    "dt.train_blocks",
    "ct.head_lr",
    "ct.schedule_lr",
    "backprop.head_lr",
];

/// The meaning of every key, by dotted path.
pub const MEANINGS: &[(&str, &str)] = &[
    (
        "variant",
        "Which variant to train: a registered name (`noprop info --list`).",
    ),
    (
        "seed",
        "Seed of every random number of the run: initial weights, noise, dropout masks, shuffles. The same seed trains bitwise identically on the CPU.",
    ),
    (
        "epochs",
        "Passes over the training split (`--epochs`; on `--resume`, the new total).",
    ),
    (
        "batch_size",
        "Training minibatch size.",
    ),
    (
        "device",
        "`cpu` or `cuda` (a binary built with `--features cuda`).",
    ),
    (
        "train_accuracy_every",
        "Measure the running train accuracy on every n-th batch and the last one of an epoch, in inference mode (0: never).",
    ),
    (
        "train_accuracy_steps",
        "ODE steps of that measurement (CT, FM): a cheap proxy; the test evaluation uses `[eval]`.",
    ),
    (
        "save_every_steps",
        "Also save `last.safetensors` every n steps within an epoch (0: only at the end of each epoch).",
    ),
    (
        "data.dataset",
        "`mnist`, `fashion-mnist`, `kmnist`, `cifar10`, `cifar100`, or `folder`: a directory of images, one subdirectory per class (`DIR/train/<class>/`, `DIR/test/<class>/`, or one tree `DIR/<class>/`), in `data.dir`.",
    ),
    (
        "data.dir",
        "Directory of the dataset's files; unset for MNIST: the copy embedded in the binary.",
    ),
    (
        "data.train_limit",
        "Train on the first n training images only.",
    ),
    (
        "data.test_limit",
        "Evaluate on the first n test images only.",
    ),
    (
        "data.validation",
        "Training images held out for validation (0: none); with a split, `best.safetensors` is chosen on validation accuracy, never on the test set.",
    ),
    (
        "data.split_seed",
        "Seed of the validation hold-out.",
    ),
    (
        "data.mean",
        "Per-channel mean of the [0, 1] pixels for normalisation; unset: the dataset's (a folder's: measured on its training images).",
    ),
    (
        "data.image_size",
        "Folder datasets: resize every image to this side (bilinear); unset: every image must already have one square size.",
    ),
    (
        "data.channels",
        "Folder datasets: 1 (grey) or 3 (RGB); unset: RGB if any training image has colour.",
    ),
    (
        "data.test_fraction",
        "Folder datasets with one tree: the fraction of each class held out as the test split (seeded by `data.split_seed`); unset: 0.2.",
    ),
    (
        "data.std",
        "Per-channel standard deviation for normalisation; unset: the dataset's.",
    ),
    (
        "data.drop_last",
        "Drop the last, smaller batch of each epoch.",
    ),
    (
        "eval.steps",
        "ODE steps of every evaluation (CT, FM): the per-epoch one, `eval`, `predict`; unset: 100 for the per-epoch evaluation (or the variant's `inference_steps` if fewer), the variant's `inference_steps` (the paper's 1000) for `eval` and `predict`.",
    ),
    (
        "eval.solver",
        "ODE integrator of the evaluation: `euler`, `heun` or `rk4`; unset: the variant's `solver`.",
    ),
    (
        "eval.deterministic",
        "DT and backprop: inference without injected noise; unset: the variant's `deterministic`.",
    ),
    (
        "eval.runs",
        "Independent stochastic inference runs, scored one by one (mean, sd) and as their ensemble; unset: 1.",
    ),
    (
        "eval.batch_size",
        "Images per inference batch (bounds memory).",
    ),
    (
        "lr_schedule.kind",
        "`constant` (the configured rates throughout) or `cosine` (half a cosine down to `min_factor` times them at the run's last step).",
    ),
    (
        "lr_schedule.warmup_steps",
        "Linear warm-up of the rates over the first W steps (0: none).",
    ),
    (
        "lr_schedule.min_factor",
        "The cosine's floor, as a fraction of the configured rates, in [0, 1].",
    ),
    (
        "dt.num_blocks",
        "Number of blocks (denoising steps) T.",
    ),
    (
        "dt.eta",
        "eta, the weight of the denoising terms (Eq. 8).",
    ),
    (
        "dt.alpha_bar_max",
        "Clean-end clip alpha_bar_T of the cosine schedule; it sets the last block's loss weight SNR(T).",
    ),
    (
        "dt.alpha_bar_min",
        "Noise-end clip: alpha_bar_t is at least this (0: unclipped).",
    ),
    (
        "dt.embedding",
        "Class embedding W: `one-hot` (fixed), `dimN` (learned, N dimensions) or `prototype`.",
    ),
    (
        "dt.dropout",
        "Dropout of the blocks' convolutional branches.",
    ),
    (
        "dt.lr",
        "AdamW learning rate of every optimizer (blocks, head and W).",
    ),
    (
        "dt.head_lr",
        "AdamW learning rate of the head and W; unset: `lr`.",
    ),
    (
        "dt.shared_optimizer",
        "How the head and a learned W keep their optimizer state: `shared` (one AdamW stepped by every block's loss) or `per-block`.",
    ),
    (
        "dt.weight_decay",
        "AdamW (decoupled) weight decay of every optimizer.",
    ),
    (
        "dt.order",
        "Which blocks step on a minibatch: `all-blocks` (every block, every minibatch), `sweep` (block by block, the paper's Algorithm 1) or `random` (one block drawn per minibatch).",
    ),
    (
        "dt.sweep_epochs_per_block",
        "Sweep order: epochs spent on one block before the next.",
    ),
    (
        "dt.train_blocks",
        "Train only these blocks (1-based); unset: all.",
    ),
    (
        "dt.parallel_blocks",
        "Train the blocks of a minibatch concurrently, one per worker thread (one-hot embedding, all-blocks order, CPU).",
    ),
    (
        "dt.deterministic",
        "Inference default: no noise injected by the posterior steps.",
    ),
    (
        "ct.embedding",
        "Class embedding W: `one-hot`, `dimN` or `prototype`.",
    ),
    (
        "ct.eta",
        "Weight eta of the SNR'-weighted denoising term (the paper: 1).",
    ),
    (
        "ct.schedule.gamma_0_init",
        "Initial gamma(0) of the learned schedule, alpha_bar(0) = sigmoid(-gamma(0)).",
    ),
    (
        "ct.schedule.gamma_1_init",
        "Initial gamma(1) of the learned schedule, alpha_bar(1) = sigmoid(-gamma(1)).",
    ),
    (
        "ct.schedule.hidden",
        "Hidden units of the schedule's monotone network.",
    ),
    (
        "ct.time_sampling",
        "How t is drawn in training: `uniform` (t ~ U[0, 1], Eq. 9 as written) or `importance` (t proportional to SNR'(t), reweighted).",
    ),
    (
        "ct.importance_cells",
        "Cells of the piecewise-constant importance density.",
    ),
    (
        "ct.importance_uniform_mix",
        "Fraction of the uniform density mixed into the importance density, in [0, 1].",
    ),
    (
        "ct.dropout",
        "Dropout of the block's image branch.",
    ),
    (
        "ct.lr",
        "Adam learning rate (block, head, W and schedule).",
    ),
    (
        "ct.weight_decay",
        "Adam L2 weight decay (added to the gradient) of the block, head and W.",
    ),
    (
        "ct.schedule_weight_decay",
        "Weight decay of the schedule's variables (0: decay would pull alpha_bar towards 0.5 at both ends).",
    ),
    (
        "ct.schedule_lr",
        "Learning rate of the schedule's variables; unset: `lr`.",
    ),
    (
        "ct.head_lr",
        "Learning rate of the linear head; unset: `lr`.",
    ),
    (
        "ct.warmup_steps",
        "Linear learning-rate warm-up over the first steps (0: none).",
    ),
    (
        "ct.inference_steps",
        "The model's default ODE steps at inference (the paper: 1000); `eval.steps` overrides it.",
    ),
    (
        "ct.solver",
        "The model's default ODE integrator; `eval.solver` overrides it.",
    ),
    (
        "fm.embedding",
        "Class embedding W: `one-hot`, `dimN` or `prototype`.",
    ),
    (
        "fm.lr",
        "Adam learning rate.",
    ),
    (
        "fm.weight_decay",
        "Adam weight decay (L2, added to the gradient).",
    ),
    (
        "fm.dropout",
        "Dropout of the block's convolutional branches.",
    ),
    (
        "fm.sigma",
        "Standard deviation of extra Gaussian noise on z_t (the paper's optional sigma).",
    ),
    (
        "fm.anchor_weight",
        "Weight of the anchor cross-entropy (Eq. 13), used only with a learned W.",
    ),
    (
        "fm.inference_steps",
        "The model's default ODE steps at inference (the paper: 1000); `eval.steps` overrides it.",
    ),
    (
        "fm.solver",
        "The model's default ODE integrator; `eval.solver` overrides it.",
    ),
    (
        "backprop.num_blocks",
        "Number of chained blocks T (the paper: 10, as NoProp-DT).",
    ),
    (
        "backprop.embedding",
        "Class embedding W: `one-hot`, `dimN` or `prototype`; a learned W is trained end to end.",
    ),
    (
        "backprop.dropout",
        "Dropout of the blocks' convolutional branches.",
    ),
    (
        "backprop.lr",
        "AdamW learning rate of every parameter.",
    ),
    (
        "backprop.head_lr",
        "AdamW learning rate of the head and a learned W; unset: `lr`.",
    ),
    (
        "backprop.weight_decay",
        "AdamW (decoupled) weight decay of every parameter.",
    ),
    (
        "backprop.mixing_init",
        "Initial mixing coefficient a_t = tanh(w_t) of each step, in (0, 1).",
    ),
    (
        "backprop.block_output",
        "How a block's logits become u_hat_t: `linear` (logits W) or `softmax` (softmax(logits) W).",
    ),
    (
        "backprop.deterministic",
        "Inference default: start the chain from z_0 = 0 instead of z_0 ~ N(0, I).",
    ),
];

/// The resolved default configuration of `variant`, as dotted keys.
fn defaults(variant: &str) -> Result<BTreeMap<String, serde_json::Value>> {
    let config = RunConfig::load(
        None,
        &[Override::flag("--variant", &["variant"], variant)],
        &Sections,
    )?;
    config.flat_values()
}

/// Every key (dotted path) with its default per variant (`None`: unset).
fn keys_and_defaults() -> Result<BTreeMap<String, BTreeMap<&'static str, serde_json::Value>>> {
    let mut keys: BTreeMap<String, BTreeMap<&'static str, serde_json::Value>> = BTreeMap::new();
    for variant in registry::names() {
        for (key, value) in defaults(variant)? {
            keys.entry(key).or_default().insert(variant, value);
        }
    }
    for key in OPTIONAL_KEYS {
        keys.entry(key.to_string()).or_default();
    }
    Ok(keys)
}

/// Keys without a meaning, and meanings of keys that do not exist.
pub fn coverage() -> Result<(Vec<String>, Vec<String>)> {
    let keys = keys_and_defaults()?;
    let meanings: BTreeMap<&str, &str> = MEANINGS.iter().copied().collect();
    let undocumented = keys
        .keys()
        .filter(|k| !meanings.contains_key(k.as_str()))
        .cloned()
        .collect();
    let unknown = meanings
        .keys()
        .filter(|k| !keys.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    Ok((undocumented, unknown))
}

fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("`\"{s}\"`"),
        // f32 fields widened to f64 print as 0.20000000298023224.
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let short = format!("{}", x as f32);
            match short.parse::<f32>().ok().map(f64::from) == Some(x) {
                true => format!("`{short}`"),
                false => format!("`{x}`"),
            }
        }
        other => format!("`{other}`"),
    }
}

/// The page.
pub fn render() -> Result<String> {
    let keys = keys_and_defaults()?;
    let meanings: BTreeMap<&str, &str> = MEANINGS.iter().copied().collect();
    let mut md = String::new();
    md.push_str(
        "# Run configuration keys\n\n\
         <!-- Generated by `NOPROP_UPDATE_DOCS=1 cargo test -p noprop-train --lib config_docs`\n\
         from the code (crates/noprop-train/src/config_docs.rs); a test fails when it is stale. -->\n\n\
         A run configuration is a TOML file (`noprop train --config FILE`, the presets in\n\
         `configs/`, every run's `config.toml`); `--set key=value` sets any key by its dotted\n\
         path (`--set fm.lr=0.003`, `--set data.test_limit=2000`). Only the section of the\n\
         selected `variant` is used; an unknown key is an error. The default is the value of a\n\
         key left out (per variant where the sections differ); *unset* keys are absent unless\n\
         given.\n",
    );
    let section_of = |key: &str| -> String {
        match key.split_once('.') {
            Some((section, _)) => section.to_string(),
            None => String::new(),
        }
    };
    // Top level first, then data, eval and lr_schedule, then the variants.
    let group = |key: &str| -> (usize, String) {
        let section = section_of(key);
        let rank = match section.as_str() {
            "" => 0,
            "data" => 1,
            "eval" => 2,
            "lr_schedule" => 3,
            _ => 4,
        };
        (rank, section)
    };
    let mut ordered: Vec<_> = keys.iter().collect();
    ordered.sort_by_key(|(key, _)| (group(key), (*key).clone()));
    let mut current = None;
    for (key, defaults) in ordered {
        let section = section_of(key);
        if current.as_deref() != Some(section.as_str()) {
            let title = match section.as_str() {
                "" => "Top level".to_string(),
                s if registry::find(s).is_ok() => {
                    format!("`[{s}]`: {}", registry::label(s))
                }
                s => format!("`[{s}]`"),
            };
            let _ = write!(
                md,
                "\n## {title}\n\n| key | default | meaning |\n|---|---|---|\n"
            );
            current = Some(section);
        }
        let default = {
            let all_same = defaults.len() == registry::names().len()
                && defaults
                    .values()
                    .all(|x| Some(x) == defaults.values().next());
            if key == "variant" {
                // Each variant's defaults name it; the key itself has none.
                "none (required)".to_string()
            } else if defaults.is_empty() {
                "unset".to_string()
            } else if all_same || defaults.len() == 1 {
                show(defaults.values().next().expect("not empty"))
            } else {
                defaults
                    .iter()
                    .map(|(v, x)| format!("{v}: {}", show(x)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let meaning = meanings.get(key.as_str()).copied().unwrap_or("");
        let _ = writeln!(md, "| `{key}` | {default} | {meaning} |");
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_meaning_and_every_meaning_a_key() {
        let (undocumented, unknown) = coverage().unwrap();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "keys without a meaning in MEANINGS: {undocumented:?}; meanings of no key: {unknown:?}"
        );
    }

    #[test]
    fn the_committed_page_is_up_to_date() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let page = render().unwrap();
        if std::env::var_os("NOPROP_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &page).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page,
            "docs/configuration.md is stale: rerun with NOPROP_UPDATE_DOCS=1"
        );
    }
}

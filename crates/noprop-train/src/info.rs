//! `noprop info`: what a model is. The variant, its parameter counts per
//! group, its noise schedule ([`noprop_core::Variant::schedule_table`]: a
//! fixed discrete schedule at its steps, a learned one on a grid of t) and,
//! for a checkpoint, its metadata. `noprop info --list` lists the
//! registered variants.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::Device;
use noprop_core::params::is_buffer;
use noprop_core::{ModelSpec, ParamStore, ScheduleTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::InfoArgs;
use crate::config::RunConfig;
use crate::model::{build_blank, build_fresh, load_model};
use crate::overrides::Override;
use crate::registry::{self, Sections};
use noprop_checkpoint::CheckpointMeta;

/// Parameter counts of one group of variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCount {
    /// Trainable scalars.
    pub parameters: usize,
    /// Buffer scalars (BatchNorm running statistics).
    pub buffers: usize,
}

/// What `noprop info --json` prints for a model (saved as `info.json` and
/// `info-initial.json` in a run directory by `cargo xtask train-all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoReport {
    /// The registered variant name.
    pub variant: String,
    /// Its display name ("NoProp-DT").
    pub label: String,
    /// The checkpoint's path, or how a fresh model was built.
    pub source: String,
    pub parameters: ParameterCounts,
    /// The noise schedule ([`noprop_core::Variant::schedule_table`]; None
    /// for a variant without one). Undefined and non-finite values are
    /// null (JSON has no infinity).
    pub schedule: Option<ScheduleTable>,
    /// The tensors of the checkpoint file, or of the fresh model.
    pub tensors: Vec<TensorInfo>,
    /// A checkpoint's metadata (None for a fresh model).
    pub checkpoint: Option<CheckpointInfo>,
    /// The run configuration.
    pub config: RunConfig,
    /// The model's own configuration ([`noprop_core::Variant::config_json`]).
    pub variant_config: Value,
}

/// Parameter counts of a model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterCounts {
    /// Trainable scalars.
    pub total: usize,
    /// Buffer scalars.
    pub buffers: usize,
    /// Per group ([`group_of`]), sorted by name.
    pub groups: BTreeMap<String, GroupCount>,
}

/// One tensor: its name, safetensors dtype name and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// A checkpoint's metadata, as `noprop info` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// "training" or "weights".
    pub checkpoint: String,
    pub format_version: u32,
    pub variant: String,
    pub crate_version: String,
    pub epoch: usize,
    pub step: u64,
    pub dataset: String,
    pub in_channels: usize,
    pub image_size: usize,
    pub num_classes: usize,
    pub normalize_mean: Vec<f32>,
    pub normalize_std: Vec<f32>,
    /// A training checkpoint's trainer state.
    pub trainer_state: Option<Value>,
    /// The class names, where the training data had them (image folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

/// The group a variable belongs to: its first name component, with the
/// second when that is an index (`blocks.3.conv1.weight` -> `blocks.3`).
pub fn group_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or(name);
    match parts.next() {
        Some(second) if !second.is_empty() && second.chars().all(|c| c.is_ascii_digit()) => {
            format!("{first}.{second}")
        }
        _ => first.to_string(),
    }
}

/// `("block.", 10)` for `block.10`: sorts indices numerically.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, index) = name.split_at(name.len() - digits);
    (stem.to_string(), index.parse().unwrap_or(0))
}

/// Counts per group, sorted by group name.
pub fn parameter_groups(store: &ParamStore) -> BTreeMap<String, GroupCount> {
    let mut groups: BTreeMap<String, GroupCount> = BTreeMap::new();
    for (name, var) in store.all_vars() {
        let entry = groups.entry(group_of(&name)).or_default();
        if is_buffer(&name) {
            entry.buffers += var.elem_count();
        } else {
            entry.parameters += var.elem_count();
        }
    }
    groups
}

/// Runs `noprop info`.
pub fn run(args: &InfoArgs) -> Result<()> {
    if args.list {
        return list_variants(args.json);
    }
    let device = Device::Cpu;
    let mut checkpoint_tensors = None;
    let (config, model, meta, source) = match (&args.checkpoint, &args.variant) {
        (Some(path), _) => {
            let loaded = load_model(path, &device)?;
            let meta = loaded.checkpoint.meta.clone();
            checkpoint_tensors = Some(
                loaded
                    .checkpoint
                    .tensors
                    .iter()
                    .map(|(name, t)| tensor_info(name, t))
                    .collect::<Vec<_>>(),
            );
            (
                loaded.config,
                loaded.model,
                Some(meta),
                path.display().to_string(),
            )
        }
        (None, Some(variant)) => {
            let mut overrides = vec![Override::flag("--variant", &["variant"], variant.as_str())];
            for text in &args.set {
                overrides.push(Override::parse_set(text)?);
            }
            let config = RunConfig::load(args.config.as_deref(), &overrides, &Sections)?;
            let data_kind = config.data.kind()?;
            let spec = match (data_kind.image_shape(), data_kind.num_classes()) {
                (Some((c, h, _)), Some(num_classes)) => ModelSpec {
                    in_channels: c,
                    image_size: h,
                    num_classes,
                },
                // An image folder's shape and classes are its images'.
                _ => {
                    let data = noprop_data::Dataset::load(&config.data.dataset_config()?, &device)
                        .with_context(|| format!("cannot read the {data_kind} data"))?;
                    let (c, h, _) = data.image_shape();
                    ModelSpec {
                        in_channels: c,
                        image_size: h,
                        num_classes: data.num_classes(),
                    }
                }
            };
            let entry = registry::find(&config.variant)?;
            let (model, source) = if entry.uses_prototypes(config.variant_section()?)? {
                // Prototype rows are training images: without loading the
                // data, W has its shape but no values.
                let model = build_blank(&config, spec, None, &device)?;
                (
                    model,
                    "fresh model, prototype W not initialised".to_string(),
                )
            } else {
                let model = build_fresh(&config, spec, None, &device)?;
                (model, format!("fresh model, seed {}", config.seed))
            };
            (config, model, None, source)
        }
        (None, None) => anyhow::bail!("give --variant, --checkpoint or --list"),
    };
    let groups = parameter_groups(model.params());
    let total: usize = groups.values().map(|g| g.parameters).sum();
    let buffers: usize = groups.values().map(|g| g.buffers).sum();
    let schedule = model.schedule_table(args.grid)?;
    // The tensors of the file (for a checkpoint) or of the model.
    let tensors: Vec<TensorInfo> = match checkpoint_tensors {
        Some(list) => list,
        None => model
            .params()
            .named_tensors()
            .iter()
            .map(|(name, t)| tensor_info(name, t))
            .collect(),
    };

    if args.json {
        let report = InfoReport {
            variant: config.variant.clone(),
            label: registry::label(&config.variant),
            source,
            parameters: ParameterCounts {
                total,
                buffers,
                groups,
            },
            schedule,
            tensors,
            checkpoint: meta.as_ref().map(checkpoint_info),
            config,
            variant_config: model.config_json()?,
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("{} ({source})", registry::label(&config.variant));
    if let Some(meta) = &meta {
        println!(
            "checkpoint: {} (format {}), written by noprop {}",
            meta.kind.as_str(),
            noprop_checkpoint::FORMAT_VERSION,
            meta.crate_version
        );
        println!(
            "  trained {} epoch(s), {} steps on {} ({}x{}x{}, {} classes)",
            meta.epoch,
            meta.step,
            meta.dataset,
            meta.spec.in_channels,
            meta.spec.image_size,
            meta.spec.image_size,
            meta.spec.num_classes
        );
        println!(
            "  normalisation mean {:?} std {:?}",
            meta.normalize_mean, meta.normalize_std
        );
        if let Some(names) = &meta.class_names {
            println!("  classes {}", names.join(", "));
        }
        if let Some(state) = &meta.trainer_state_json {
            println!("  trainer state {state}");
        }
    }
    println!(
        "configuration: seed {}, batch {}, {} epoch(s), {} data, lr schedule {} (warm-up {} steps, floor {})",
        config.seed,
        config.batch_size,
        config.epochs,
        config.data.dataset,
        config.lr_schedule.kind,
        config.lr_schedule.warmup_steps,
        config.lr_schedule.min_factor
    );
    if let Ok(section) = config.variant_section() {
        let keys: Vec<String> = section.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        println!("  [{}] {}", config.variant, keys.join(", "));
    }
    if let Ok(toml::Value::Table(eval)) = toml::Value::try_from(&config.eval) {
        let keys: Vec<String> = eval.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        println!("  [eval] {}", keys.join(", "));
    }
    println!("parameters: {total} trainable, {buffers} in buffers");
    // block.2 before block.10.
    let mut ordered: Vec<(&String, &GroupCount)> = groups.iter().collect();
    ordered.sort_by_key(|(name, _)| natural_key(name));
    for (name, g) in ordered {
        if g.buffers > 0 {
            println!("  {name:<24} {:>10}  (+{} buffer)", g.parameters, g.buffers);
        } else {
            println!("  {name:<24} {:>10}", g.parameters);
        }
    }
    if let Some(table) = &schedule {
        println!("{}", table.label);
        let header: Vec<String> = table.columns.iter().map(|c| format!("{c:>12}")).collect();
        println!("{}", header.join(" "));
        for row in &table.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|x| format!("{:>12}", x.map_or("-".into(), format_number)))
                .collect();
            println!("{}", cells.join(" "));
        }
    }
    Ok(())
}

/// A tensor's name, safetensors dtype name and shape.
fn tensor_info(name: &str, t: &candle_core::Tensor) -> TensorInfo {
    let dtype = match t.dtype() {
        candle_core::DType::F32 => "F32",
        candle_core::DType::F64 => "F64",
        candle_core::DType::F16 => "F16",
        candle_core::DType::BF16 => "BF16",
        candle_core::DType::U32 => "U32",
        candle_core::DType::U8 => "U8",
        candle_core::DType::I64 => "I64",
        _ => "other",
    };
    TensorInfo {
        name: name.to_string(),
        dtype: dtype.to_string(),
        shape: t.dims().to_vec(),
    }
}

/// `noprop info --list`: every registered variant, one per line (or JSON).
fn list_variants(json: bool) -> Result<()> {
    if json {
        let list: Vec<Value> = registry::VARIANTS
            .iter()
            .map(|v| {
                json!({
                    "name": v.name(),
                    "label": v.label(),
                    "summary": v.summary(),
                    "integrates_ode": v.integrates_ode(),
                })
            })
            .collect();
        println!("{}", Value::Array(list));
    } else {
        for v in registry::VARIANTS {
            println!("{:<10} {:<10} {}", v.name(), v.label(), v.summary());
        }
    }
    Ok(())
}

fn checkpoint_info(meta: &CheckpointMeta) -> CheckpointInfo {
    CheckpointInfo {
        checkpoint: meta.kind.as_str().to_string(),
        format_version: noprop_checkpoint::FORMAT_VERSION,
        variant: meta.variant.clone(),
        crate_version: meta.crate_version.clone(),
        epoch: meta.epoch,
        step: meta.step,
        dataset: meta.dataset.clone(),
        in_channels: meta.spec.in_channels,
        image_size: meta.spec.image_size,
        num_classes: meta.spec.num_classes,
        normalize_mean: meta.normalize_mean.clone(),
        normalize_std: meta.normalize_std.clone(),
        trainer_state: meta
            .trainer_state_json
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok()),
        class_names: meta.class_names.clone(),
    }
}

fn format_number(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e6 {
        format!("{x}")
    } else if x.abs() >= 1e4 || (x != 0.0 && x.abs() < 1e-3) {
        format!("{x:.4e}")
    } else {
        format!("{x:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{blob_spec, LinearSoftmax};
    use noprop_core::Variant;

    #[test]
    fn groups_split_on_indices_and_separate_buffers() {
        assert_eq!(group_of("blocks.3.conv1.weight"), "blocks.3");
        assert_eq!(group_of("block.conv1.weight"), "block");
        assert_eq!(group_of("head"), "head");
        let mut names = vec!["block.10", "head", "block.2", "block.1"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["block.1", "block.2", "block.10", "head"]);
        let model = LinearSoftmax::new(blob_spec(), 0, &Device::Cpu).unwrap();
        let vb = model
            .params()
            .var_builder(candle_core::DType::F32, &Device::Cpu);
        candle_nn::batch_norm(5, 1e-5, vb.pp("blocks.2.bn")).unwrap();
        let groups = parameter_groups(model.params());
        // head: 3x16 weights + 3 biases; the BatchNorm: 5 weights + 5 biases,
        // and 5 running means + 5 running variances as buffers.
        assert_eq!(
            groups["head"],
            GroupCount {
                parameters: 51,
                buffers: 0
            }
        );
        assert_eq!(
            groups["blocks.2"],
            GroupCount {
                parameters: 10,
                buffers: 10
            }
        );
    }
}

//! `noprop info`: what a model is. The variant, its parameter counts per
//! group, its noise schedule (DT: the fixed cosine schedule with SNR deltas
//! and the posterior coefficients of Eq. 3; CT: the learned schedule on a
//! grid of t) and, for a checkpoint, its metadata.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::Device;
use noprop_core::params::is_buffer;
use noprop_core::variant::ModelSpec;
use noprop_core::{ParamStore, VariantKind};
use serde::Serialize;
use serde_json::{json, Value};

use crate::checkpoint::CheckpointMeta;
use crate::cli::InfoArgs;
use crate::config::RunConfig;
use crate::model::{build_fresh, load_model};
use crate::overrides::Override;
use crate::variants::{self, ScheduleTable};

/// Parameter counts of one group of variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    /// Trainable scalars.
    pub parameters: usize,
    /// Buffer scalars (BatchNorm running statistics).
    pub buffers: usize,
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
    let device = Device::Cpu;
    let mut checkpoint_tensors = None;
    let (config, model, meta, source) = match (&args.checkpoint, args.variant) {
        (Some(path), _) => {
            let loaded = load_model(path, &device)?;
            let meta = loaded.checkpoint.meta.clone();
            checkpoint_tensors = Some(
                loaded
                    .checkpoint
                    .tensors
                    .iter()
                    .map(|(name, t)| tensor_json(name, t))
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
            let kind = VariantKind::from(variant);
            let mut overrides = vec![Override::flag("--variant", &["variant"], kind.as_str())];
            for text in &args.set {
                overrides.push(Override::parse_set(text)?);
            }
            let config = RunConfig::load(
                args.config.as_deref(),
                &overrides,
                &variants::resolve_section,
            )?;
            let data_kind = config.data.kind()?;
            let (c, h, _) = data_kind.image_shape();
            let spec = ModelSpec {
                in_channels: c,
                image_size: h,
                num_classes: data_kind.num_classes(),
            };
            let model = build_fresh(&config, spec, None, &device)?;
            let source = format!("fresh model, seed {}", config.seed);
            (config, model, None, source)
        }
        (None, None) => anyhow::bail!("give --variant or --checkpoint"),
    };
    let groups = parameter_groups(model.params());
    let total: usize = groups.values().map(|g| g.parameters).sum();
    let buffers: usize = groups.values().map(|g| g.buffers).sum();
    let schedule = variants::schedule_table(
        config.variant,
        config.variant_section()?,
        model.as_ref(),
        args.grid,
    )?;
    // The tensors of the file (for a checkpoint) or of the model.
    let tensors: Vec<Value> = match &checkpoint_tensors {
        Some(list) => list.clone(),
        None => model
            .params()
            .named_tensors()
            .iter()
            .map(|(name, t)| tensor_json(name, t))
            .collect(),
    };

    if args.json {
        let value = json!({
            "variant": config.variant.as_str(),
            "source": source,
            "parameters": {
                "total": total,
                "buffers": buffers,
                "groups": groups,
            },
            "schedule": schedule.as_ref().map(schedule_json),
            "tensors": tensors,
            "checkpoint": meta.as_ref().map(meta_json),
            "config": serde_json::to_value(&config)?,
            "variant_config": model.config_json(),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "NoProp-{} ({source})",
        config.variant.as_str().to_uppercase()
    );
    if let Some(meta) = &meta {
        println!(
            "checkpoint: {} (format {}), written by noprop {}",
            meta.kind.as_str(),
            crate::checkpoint::FORMAT_VERSION,
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
        if let Some(state) = &meta.trainer_state_json {
            println!("  trainer state {state}");
        }
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

/// `{name, dtype, shape}` with the safetensors dtype name.
fn tensor_json(name: &str, t: &candle_core::Tensor) -> Value {
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
    json!({ "name": name, "dtype": dtype, "shape": t.dims() })
}

/// A schedule as `{label, columns, table: [{column: value}, ...]}`.
fn schedule_json(table: &ScheduleTable) -> Value {
    let rows: Vec<Value> = table
        .rows
        .iter()
        .map(|row| {
            let object: serde_json::Map<String, Value> = table
                .columns
                .iter()
                .zip(row)
                .map(|(c, x)| (c.clone(), x.map_or(Value::Null, json_number)))
                .collect();
            Value::Object(object)
        })
        .collect();
    json!({ "label": table.label, "columns": table.columns, "table": rows })
}

/// Infinite values (SNR at alpha_bar = 1) as strings, since JSON has none.
fn json_number(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

fn meta_json(meta: &CheckpointMeta) -> Value {
    json!({
        "checkpoint": meta.kind.as_str(),
        "format_version": crate::checkpoint::FORMAT_VERSION,
        "variant": meta.variant,
        "crate_version": meta.crate_version,
        "epoch": meta.epoch,
        "step": meta.step,
        "dataset": meta.dataset,
        "in_channels": meta.spec.in_channels,
        "image_size": meta.spec.image_size,
        "num_classes": meta.spec.num_classes,
        "normalize_mean": meta.normalize_mean,
        "normalize_std": meta.normalize_std,
        "trainer_state": meta.trainer_state_json.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()),
    })
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

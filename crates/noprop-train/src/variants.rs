//! The one place that knows the concrete variant crates (noprop-dt,
//! noprop-ct, noprop-fm): parsing and validating their configuration
//! sections, building a model, the flags that map onto their keys, and the
//! schedule tables `noprop info` prints. Everything else in the trainer
//! works through [`noprop_core::Variant`].

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use noprop_core::variant::ModelSpec;
use noprop_core::{Variant, VariantKind};
use serde::Serialize;
use toml::Table;

/// Class embedding choices of `--embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddingChoice {
    /// W = I (d = number of classes), fixed.
    OneHot,
    /// Learned, d = 20, orthogonal initialisation.
    Dim20,
    /// Learned, d = image size, initialised with class prototypes.
    Prototype,
}

/// A table of numbers with named columns (`noprop info`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleTable {
    /// What the table shows, e.g. "DT cosine schedule (T = 10)".
    pub label: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

/// Parses `section` (absent: defaults) as `kind`'s configuration, validates
/// it, and returns it with every default filled in.
pub fn resolve_section(kind: VariantKind, _section: Option<&Table>) -> Result<Table> {
    unavailable(kind)
}

/// Builds a fresh `kind` model from its resolved section.
pub fn build(
    kind: VariantKind,
    _section: &Table,
    _spec: ModelSpec,
    _prototype_source: Option<(&Tensor, &Tensor)>,
    _seed: u64,
    _device: &Device,
) -> Result<Box<dyn Variant>> {
    unavailable(kind)
}

/// Whether the section asks for prototype embeddings (which need the
/// training images at construction).
pub fn uses_prototypes(kind: VariantKind, _section: &Table) -> Result<bool> {
    unavailable(kind)
}

/// The configuration key and value `--embedding` sets.
pub fn embedding_override(
    kind: VariantKind,
    _choice: EmbeddingChoice,
) -> Result<(Vec<String>, toml::Value)> {
    unavailable(kind)
}

/// The configuration key `--lr` sets.
pub fn lr_key(kind: VariantKind) -> Result<Vec<String>> {
    unavailable(kind)
}

/// The variant's noise schedule as a table, for a model built from
/// `section` (with its current, possibly trained, parameters).
pub fn schedule_table(
    kind: VariantKind,
    _section: &Table,
    _model: &dyn Variant,
    _grid: usize,
) -> Result<Option<ScheduleTable>> {
    unavailable(kind)
}

fn unavailable<T>(kind: VariantKind) -> Result<T> {
    bail!(
        "NoProp-{} is not available in this build yet",
        kind.as_str().to_uppercase()
    )
}

//! The variant registry: the one place in the trainer that names the
//! variant crates. Everything else (configuration, CLI, checkpoints,
//! reports, the GPU check) asks this list.
//!
//! Adding a variant: its crate implements [`noprop_core::BuildVariant`]
//! (a [`Variant`] with a [`noprop_core::VariantConfig`]); one [`Entry`]
//! below; a preset in `configs/`. ARCHITECTURE.md has the checklist.

use std::marker::PhantomData;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use noprop_core::{BuildVariant, EmbeddingKind, ModelInit, ModelSpec, Variant, VariantConfig};
use serde::Serialize;
use toml::{Table, Value};

/// What the trainer needs to know about a variant.
pub trait VariantEntry: Sync {
    /// Its name: `--variant`, the `[name]` configuration section, checkpoint
    /// metadata, run directory names.
    fn name(&self) -> &'static str;
    /// Its display name in reports, e.g. "NoProp-DT".
    fn label(&self) -> &'static str;
    /// One line for `--help` and `noprop info`.
    fn summary(&self) -> &'static str;
    /// Its colour in every plot (RGB).
    fn colour(&self) -> [u8; 3];
    /// Whether its inference integrates an ODE (`steps` and `solver`
    /// apply); otherwise `deterministic` does.
    fn integrates_ode(&self) -> bool;
    /// Parses `section` (absent: all defaults), validates it, and returns it
    /// with every default filled in.
    fn resolve(&self, section: Option<&Table>) -> Result<Table>;
    /// Whether the (resolved) section asks for prototype embeddings, which
    /// need the training images at construction.
    fn uses_prototypes(&self, section: &Table) -> Result<bool>;
    /// Builds a model from its resolved section.
    fn build(
        &self,
        section: &Table,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Box<dyn Variant>>;
}

/// A registered variant: the generic part comes from its
/// [`BuildVariant`] impl, the rest is stated here.
pub struct Entry<M> {
    label: &'static str,
    summary: &'static str,
    colour: [u8; 3],
    integrates_ode: bool,
    model: PhantomData<fn() -> M>,
}

impl<M> Entry<M> {
    const fn new(
        label: &'static str,
        summary: &'static str,
        colour: [u8; 3],
        integrates_ode: bool,
    ) -> Self {
        Self {
            label,
            summary,
            colour,
            integrates_ode,
            model: PhantomData,
        }
    }
}

impl<M: BuildVariant> VariantEntry for Entry<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn label(&self) -> &'static str {
        self.label
    }

    fn summary(&self) -> &'static str {
        self.summary
    }

    fn colour(&self) -> [u8; 3] {
        self.colour
    }

    fn integrates_ode(&self) -> bool {
        self.integrates_ode
    }

    fn resolve(&self, section: Option<&Table>) -> Result<Table> {
        let config: M::Config = parse(section)?;
        config.validate()?;
        to_table(&config)
    }

    fn uses_prototypes(&self, section: &Table) -> Result<bool> {
        let config: M::Config = parse(Some(section))?;
        Ok(config.embedding() == EmbeddingKind::Prototype)
    }

    fn build(
        &self,
        section: &Table,
        spec: ModelSpec,
        init: ModelInit<'_>,
        device: &Device,
    ) -> Result<Box<dyn Variant>> {
        let config: M::Config = parse(Some(section))?;
        let model = M::build(config, spec, init, device)
            .with_context(|| format!("cannot build the {} model", self.label))?;
        Ok(Box::new(model))
    }
}

// Okabe-Ito hues: distinguishable with colour-blindness.
static DT: Entry<noprop_dt::NoPropDt> = Entry::new(
    "NoProp-DT",
    "T blocks, discrete time: block t denoises z_{t-1} (cosine schedule)",
    [0, 114, 178],
    false,
);
static CT: Entry<noprop_ct::NoPropCt> = Entry::new(
    "NoProp-CT",
    "one block, continuous time, learned noise schedule",
    [230, 159, 0],
    true,
);
static FM: Entry<noprop_fm::NoPropFm> = Entry::new(
    "NoProp-FM",
    "one block, flow matching from noise to the class embedding",
    [0, 158, 115],
    true,
);

static BACKPROP: Entry<noprop_backprop::NoPropBackprop> = Entry::new(
    "Backprop",
    "the same T DT blocks chained and trained end to end by back-propagation (the paper's baseline)",
    [213, 94, 0],
    false,
);

/// Every registered variant, in report order.
pub static VARIANTS: &[&dyn VariantEntry] = &[&DT, &CT, &FM, &BACKPROP];

/// The variant called `name`, or an error listing the names there are.
pub fn find(name: &str) -> Result<&'static dyn VariantEntry> {
    match VARIANTS.iter().find(|v| v.name() == name) {
        Some(v) => Ok(*v),
        None => bail!(
            "unknown variant `{name}`; expected one of {}",
            names().join(", ")
        ),
    }
}

/// The names of every registered variant, in report order.
pub fn names() -> Vec<&'static str> {
    VARIANTS.iter().map(|v| v.name()).collect()
}

/// The display name of `name` ("NoProp-DT"), or the name itself for a
/// variant this build does not know.
pub fn label(name: &str) -> String {
    find(name).map_or_else(|_| name.to_string(), |v| v.label().to_string())
}

/// `--variant`'s parser: the registered names, each with its summary.
pub fn value_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        VARIANTS
            .iter()
            .map(|v| clap::builder::PossibleValue::new(v.name()).help(v.summary())),
    )
}

/// Parses `section` (absent: all defaults) as a configuration `C`.
fn parse<C: VariantConfig>(section: Option<&Table>) -> Result<C> {
    match section {
        None => Ok(C::default()),
        Some(table) => Ok(Value::Table(table.clone()).try_into()?),
    }
}

/// A configuration as a TOML table, every field present.
fn to_table<C: Serialize>(config: &C) -> Result<Table> {
    match Value::try_from(config)? {
        Value::Table(t) => Ok(t),
        _ => bail!("a variant configuration must serialise to a table"),
    }
}

/// The registry as configuration parsing sees it.
pub struct Sections;

impl crate::config::SectionResolver for Sections {
    fn names(&self) -> Vec<&'static str> {
        names()
    }

    fn resolve(&self, name: &str, section: Option<&Table>) -> Result<Table> {
        find(name)?.resolve(section)
    }
}

/// Builds a fresh model of `entry` for training from its resolved section;
/// `train` (normalised images, labels) is used by prototype embeddings only.
pub fn build_for_training(
    entry: &dyn VariantEntry,
    section: &Table,
    spec: ModelSpec,
    train: Option<(&Tensor, &Tensor)>,
    seed: u64,
    device: &Device,
) -> Result<Box<dyn Variant>> {
    let prototypes = if entry.uses_prototypes(section)? {
        match train {
            Some(t) => Some(t),
            None => bail!(
                "{}: prototype embeddings need the training images",
                entry.label()
            ),
        }
    } else {
        None
    };
    entry.build(section, spec, ModelInit::Train { seed, prototypes }, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        for name in &names {
            assert_eq!(find(name).unwrap().name(), *name);
        }
        let err = find("xx").err().unwrap().to_string();
        assert!(err.contains("xx") && err.contains(names[0]), "{err}");
        assert_eq!(label("no-such"), "no-such");
    }

    #[test]
    fn sections_resolve_with_defaults_and_refuse_bad_values() {
        for entry in VARIANTS {
            let resolved = entry.resolve(None).unwrap();
            assert_eq!(resolved["embedding"], Value::String("one-hot".into()));
            assert_eq!(resolved["lr"], Value::Float(1e-3));
            assert!(!entry.uses_prototypes(&resolved).unwrap());
            // What the registry resolved resolves to itself.
            assert_eq!(entry.resolve(Some(&resolved)).unwrap(), resolved);
        }
        let fm = find("fm").unwrap();
        let given: Table = "embedding = \"dim20\"\nlr = 0.01\n".parse().unwrap();
        let resolved = fm.resolve(Some(&given)).unwrap();
        assert_eq!(resolved["embedding"], Value::String("dim20".into()));
        for (text, expected) in [
            ("bogus = 1\n", "bogus"),
            ("lr = -1.0\n", "lr"),
            ("embedding = \"dim0\"\n", "dim0"),
        ] {
            let table: Table = text.parse().unwrap();
            let err = format!("{:#}", fm.resolve(Some(&table)).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn every_variant_builds_for_training_and_for_loading_with_the_same_variables() {
        // Small CT schedule network to keep the test light.
        for entry in VARIANTS {
            for embedding in ["one-hot", "prototype"] {
                let mut given = Table::new();
                given.insert("embedding".into(), Value::String(embedding.into()));
                if entry.name() == "ct" {
                    given.insert(
                        "schedule".into(),
                        Value::Table("hidden = 8".parse().unwrap()),
                    );
                }
                if entry.name() == "dt" {
                    given.insert("num_blocks".into(), Value::Integer(2));
                }
                let section = entry.resolve(Some(&given)).unwrap();
                let spec = ModelSpec::mnist();
                let m = spec.num_classes;
                let images =
                    Tensor::ones((2 * m, 1, 28, 28), candle_core::DType::F32, &Device::Cpu)
                        .unwrap();
                let labels: Vec<u32> = (0..2 * m as u32).map(|i| i % m as u32).collect();
                let labels = Tensor::from_vec(labels, 2 * m, &Device::Cpu).unwrap();
                let trained = build_for_training(
                    *entry,
                    &section,
                    spec,
                    Some((&images, &labels)),
                    3,
                    &Device::Cpu,
                )
                .unwrap();
                let blank = entry
                    .build(&section, spec, ModelInit::ForLoading, &Device::Cpu)
                    .unwrap();
                let shapes = |m: &dyn Variant| -> Vec<(String, Vec<usize>)> {
                    m.params()
                        .named_tensors()
                        .into_iter()
                        .map(|(n, t)| (n, t.dims().to_vec()))
                        .collect()
                };
                assert_eq!(
                    shapes(trained.as_ref()),
                    shapes(blank.as_ref()),
                    "{}",
                    entry.name()
                );
                assert_eq!(trained.name(), entry.name());
                if embedding == "prototype" {
                    let err = build_for_training(*entry, &section, spec, None, 3, &Device::Cpu)
                        .err()
                        .unwrap()
                        .to_string();
                    assert!(err.contains("training images"), "{err}");
                }
            }
        }
    }
}

//! The run configuration: what `noprop train` does, as one TOML document.
//!
//! ```toml
//! variant = "dt"            # a registered variant (`noprop info --list`)
//! seed = 0
//! epochs = 1
//! batch_size = 128
//! device = "cpu"            # cpu | cuda
//! train_accuracy_every = 10 # measure train accuracy on every 10th batch
//! train_accuracy_steps = 20 # ODE steps of that measurement (CT, FM)
//! save_every_steps = 0      # also checkpoint within epochs (0: epoch ends only)
//!
//! [data]                    # the dataset (noprop-data)
//! dataset = "mnist"
//! validation = 0
//!
//! [eval]                    # inference used for the per-epoch evaluation
//! [lr_schedule]             # kind = "constant" | "cosine", warmup_steps, min_factor
//! batch_size = 500
//!
//! [dt]                      # the variant's own configuration (its crate's Config)
//! ```
//!
//! The variant sections are named after the registered variants
//! ([`crate::registry`]); this module knows none of them by name.
//!
//! Settings are resolved in this order, later ones winning: built-in
//! defaults, the `--config` file, the dedicated flags (`--epochs`, ...),
//! then `--set key.path=value` overrides. The resolved configuration, with
//! every default filled in, is saved as `config.toml` in the run directory
//! and as JSON in every checkpoint. Unknown keys are errors, so a typo never
//! silently falls back to a default.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use noprop_core::{InferenceOptions, InferenceSettings, LrSchedule, OdeSolver};
use noprop_data::folder::FolderOptions;
use noprop_data::{DatasetConfig, DatasetKind};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::device::DeviceChoice;
use crate::overrides::Override;

/// Everything `noprop train` needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// Which variant to train (a registered name).
    pub variant: String,
    /// Seed of every random number of the run (weights, noise, shuffles).
    pub seed: u64,
    /// Number of passes over the training split.
    pub epochs: usize,
    /// Training minibatch size.
    pub batch_size: usize,
    /// Where to compute.
    pub device: DeviceChoice,
    /// Measure the running train accuracy on every n-th batch of an epoch
    /// and on its last batch, just after the step, in inference mode (0:
    /// never). Inference costs time, so the default samples one batch in ten.
    pub train_accuracy_every: usize,
    /// ODE steps of the train-accuracy measurement (CT, FM): a cheap proxy;
    /// the test evaluation uses `[eval]`.
    pub train_accuracy_steps: usize,
    /// Also save `last.safetensors` every n steps within an epoch (0: only
    /// at the end of each epoch).
    pub save_every_steps: usize,
    /// The dataset.
    pub data: DataConfig,
    /// Inference used for the per-epoch evaluation.
    pub eval: EvalConfig,
    /// The learning-rate schedule over the whole run (every step's factor
    /// on the variant's configured rates; default constant). It depends on
    /// the run's total steps, so `--resume --epochs N` with a new N
    /// changes it from the resumed step on.
    pub lr_schedule: LrSchedule,
    /// Every other top-level key: the variant sections (`[dt]`: the
    /// variant crate's config). Once resolved, only the selected variant's
    /// section is left, with every default filled in; an unknown key is an
    /// error then.
    #[serde(flatten)]
    pub sections: BTreeMap<String, Value>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            variant: String::new(),
            seed: 0,
            epochs: 1,
            batch_size: 128,
            device: DeviceChoice::Cpu,
            train_accuracy_every: 10,
            train_accuracy_steps: 20,
            save_every_steps: 0,
            data: DataConfig::default(),
            eval: EvalConfig::default(),
            lr_schedule: LrSchedule::default(),
            sections: BTreeMap::new(),
        }
    }
}

/// The `[data]` section: which dataset and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// mnist, fashion-mnist, kmnist, cifar10, cifar100, or folder (a
    /// directory of images, one subdirectory per class, in `dir`).
    pub dataset: String,
    /// Directory of the dataset's files; unset for MNIST means the copy
    /// embedded in the binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Train on the first n training images only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first n test images only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Training images held out for validation (0: none). With a validation
    /// split, `best.safetensors` is chosen on validation accuracy.
    pub validation: usize,
    /// Seed of the validation hold-out.
    pub split_seed: u64,
    /// Per-channel mean of the [0, 1] pixels; unset: the dataset's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation; unset: the dataset's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// Drop the last, smaller batch of each epoch.
    pub drop_last: bool,
    /// Folder datasets: resize every image to this side (unset: every image
    /// must already have one square size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Folder datasets: 1 (grey) or 3 (RGB); unset: RGB if any training
    /// image has colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// Folder datasets without a train/ and test/ directory: the fraction
    /// of each class held out as the test split (unset: 0.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            dir: None,
            train_limit: None,
            test_limit: None,
            validation: 0,
            split_seed: 0,
            mean: None,
            std: None,
            drop_last: false,
            image_size: None,
            channels: None,
            test_fraction: None,
        }
    }
}

impl DataConfig {
    /// The dataset kind, or an error naming the bad value.
    pub fn kind(&self) -> Result<DatasetKind> {
        self.dataset
            .parse::<DatasetKind>()
            .with_context(|| format!("data.dataset = {:?}", self.dataset))
    }

    /// The data crate's configuration.
    pub fn dataset_config(&self) -> Result<DatasetConfig> {
        let normalization = match (&self.mean, &self.std) {
            (None, None) => None,
            (Some(mean), Some(std)) => Some((mean.clone(), std.clone())),
            _ => bail!("data.mean and data.std must be given together"),
        };
        let defaults = FolderOptions::default();
        Ok(DatasetConfig {
            kind: self.kind()?,
            data_dir: self.dir.clone(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            validation: self.validation,
            normalization,
            split_seed: self.split_seed,
            folder: FolderOptions {
                image_size: self.image_size,
                channels: self.channels,
                test_fraction: self.test_fraction.unwrap_or(defaults.test_fraction),
                split_seed: self.split_seed,
            },
        })
    }
}

/// The `[eval]` section: inference settings of the per-epoch evaluation
/// (unset: the variant's own defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// ODE steps (CT, FM); unset: at most
    /// [`crate::train::EPOCH_EVAL_STEPS`] for the per-epoch evaluation, the
    /// model's `inference_steps` for `noprop eval` and `predict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// ODE integrator (CT, FM): euler, heun or rk4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver: Option<OdeSolver>,
    /// DT: no noise injected during inference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deterministic: Option<bool>,
    /// Independent stochastic inference runs (scored one by one and as
    /// their ensemble; unset: 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// Images per inference batch (bounds memory).
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            steps: None,
            solver: None,
            deterministic: None,
            runs: None,
            batch_size: noprop_core::inference::DEFAULT_INFERENCE_BATCH,
        }
    }
}

impl EvalConfig {
    /// The variant's own inference settings.
    pub fn inference_options(&self) -> InferenceOptions {
        InferenceOptions {
            steps: self.steps,
            solver: self.solver,
            deterministic: self.deterministic,
        }
    }

    /// Everything an evaluation needs: options, runs, batch size.
    pub fn settings(&self) -> InferenceSettings {
        InferenceSettings {
            options: self.inference_options(),
            runs: self.runs.unwrap_or(1),
            batch_size: self.batch_size,
        }
    }
}

/// What configuration parsing needs to know of the variants: their names,
/// and how to resolve (parse, validate, fill in) a section.
/// [`crate::registry::Sections`] in the binary.
pub trait SectionResolver {
    /// The names of the variant sections there are.
    fn names(&self) -> Vec<&'static str>;
    /// Resolves `name`'s section (absent: all defaults).
    fn resolve(&self, name: &str, section: Option<&Table>) -> Result<Table>;
}

/// Keys that variant sections had before every inference setting but the
/// variant's own moved to `[eval]`: `runs` (and `inference_runs`) became
/// `eval.runs`; `eval_batch_size` is `eval.batch_size`'s job.
/// Configurations written then still load: the keys are moved or dropped.
const MOVED_TO_EVAL: [&str; 3] = ["runs", "inference_runs", "eval_batch_size"];

impl RunConfig {
    /// Reads `file` (if any), applies `overrides`, and resolves the result.
    pub fn load(
        file: Option<&Path>,
        overrides: &[Override],
        resolver: &dyn SectionResolver,
    ) -> Result<Self> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => Table::new(),
        };
        for o in overrides {
            o.apply(&mut table)?;
        }
        if !table.contains_key("variant") {
            bail!(
                "no variant chosen: pass --variant {}{}",
                resolver.names().join("|"),
                match file {
                    Some(p) => format!(" or set `variant = \"dt\"` in {}", p.display()),
                    None => " (or a --config file that sets `variant`)".into(),
                }
            );
        }
        let source = match file {
            Some(p) => format!("{} and the command line", p.display()),
            None => "the command line".into(),
        };
        let config: RunConfig = Value::Table(table)
            .try_into()
            .with_context(|| format!("invalid configuration (from {source})"))?;
        config.resolve(resolver)
    }

    /// Parses a resolved configuration (a run directory's `config.toml`).
    pub fn from_toml_file(path: &Path, resolver: &dyn SectionResolver) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml_str(&text, resolver)
            .with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// [`RunConfig::from_toml_file`] of the file's text.
    pub fn from_toml_str(text: &str, resolver: &dyn SectionResolver) -> Result<Self> {
        let table = text.parse::<Table>().context("not valid TOML")?;
        let config: RunConfig = Value::Table(table).try_into()?;
        config.resolve(resolver)
    }

    /// Parses the configuration stored as JSON in a checkpoint.
    pub fn from_json(json: &str, resolver: &dyn SectionResolver) -> Result<Self> {
        let config: RunConfig =
            serde_json::from_str(json).context("invalid run configuration JSON")?;
        config.resolve(resolver)
    }

    /// Validates the settings and fills in the selected variant's section
    /// (other variants' sections are validated, then dropped).
    pub fn resolve(mut self, resolver: &dyn SectionResolver) -> Result<Self> {
        let names = resolver.names();
        if self.variant.is_empty() {
            bail!(
                "no variant chosen: set `variant` to one of {}",
                names.join(", ")
            );
        }
        if !names.contains(&self.variant.as_str()) {
            bail!(
                "variant = {:?}: unknown variant; expected one of {}",
                self.variant,
                names.join(", ")
            );
        }
        self.validate()?;
        let mut resolved = BTreeMap::new();
        for (key, value) in std::mem::take(&mut self.sections) {
            if !names.contains(&key.as_str()) {
                bail!(
                    "unknown configuration key `{key}` (the top-level keys are {}, [data], [eval], [lr_schedule] \
                     and the variant sections [{}])",
                    TOP_LEVEL_KEYS.join(", "),
                    names.join("], [")
                );
            }
            let Value::Table(mut section) = value else {
                bail!(
                    "`{key}` must be a section ([{key}]), got {}",
                    value.type_str()
                );
            };
            self.move_legacy_keys(&mut section);
            let section = resolver
                .resolve(&key, Some(&section))
                .with_context(|| format!("invalid [{key}] section"))?;
            if key == self.variant {
                resolved.insert(key, Value::Table(section));
            }
        }
        if !resolved.contains_key(&self.variant) {
            let section = resolver
                .resolve(&self.variant, None)
                .with_context(|| format!("invalid [{}] section", self.variant))?;
            resolved.insert(self.variant.clone(), Value::Table(section));
        }
        self.sections = resolved;
        Ok(self)
    }

    /// Moves [`MOVED_TO_EVAL`] keys out of a variant section: a run count
    /// other than 1 becomes `eval.runs` unless that is set.
    fn move_legacy_keys(&mut self, section: &mut Table) {
        for key in MOVED_TO_EVAL {
            if let Some(value) = section.remove(key) {
                let runs = value.as_integer().filter(|&r| r > 1);
                if let (Some(runs), "runs" | "inference_runs", None) = (runs, key, self.eval.runs) {
                    self.eval.runs = usize::try_from(runs).ok();
                }
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("train_accuracy_steps", self.train_accuracy_steps),
            ("eval.batch_size", self.eval.batch_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        for (name, value) in [
            ("eval.steps", self.eval.steps),
            ("eval.runs", self.eval.runs),
        ] {
            if value == Some(0) {
                bail!("{name} must be at least 1");
            }
        }
        noprop_core::ode::check_ode_steps(self.train_accuracy_steps, "train_accuracy_steps")?;
        if let Some(steps) = self.eval.steps {
            noprop_core::ode::check_ode_steps(steps, "eval.steps")?;
        }
        // TOML integers are signed 64-bit.
        for (name, value) in [
            ("seed", self.seed),
            ("data.split_seed", self.data.split_seed),
        ] {
            if i64::try_from(value).is_err() {
                bail!("{name} = {value} is too large (at most {})", i64::MAX);
            }
        }
        let kind = self.data.kind()?;
        // A folder's channels are its images' (or data.channels).
        let channels = match kind.image_shape() {
            Some((c, _, _)) => Some(c),
            None => self.data.channels,
        };
        for (name, values) in [("data.mean", &self.data.mean), ("data.std", &self.data.std)] {
            if let (Some(v), Some(channels)) = (values, channels) {
                if v.len() != 1 && v.len() != channels {
                    bail!(
                        "{name} has {} values; {kind} has {channels} channel(s)",
                        v.len()
                    );
                }
            }
        }
        if kind != DatasetKind::Folder {
            for (name, set) in [
                ("data.image_size", self.data.image_size.is_some()),
                ("data.channels", self.data.channels.is_some()),
                ("data.test_fraction", self.data.test_fraction.is_some()),
            ] {
                if set {
                    bail!("{name} applies to image folders (data.dataset = \"folder\") only, not {kind}");
                }
            }
        } else if self.data.dir.is_none() {
            bail!("data.dataset = \"folder\" needs the folder: set data.dir (--data-dir DIR)");
        }
        if let Some(f) = self.data.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                bail!("data.test_fraction = {f}: must be between 0 and 1 (exclusive)");
            }
        }
        if let Some(c) = self.data.channels {
            if c != 1 && c != 3 {
                bail!("data.channels = {c}: images are read as grey (1) or RGB (3)");
            }
        }
        if self.data.image_size == Some(0) {
            bail!("data.image_size must be at least 1");
        }
        if let Some(std) = &self.data.std {
            if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                bail!("data.std must be positive, got {std:?}");
            }
        }
        for (name, limit) in [
            ("data.train_limit", self.data.train_limit),
            ("data.test_limit", self.data.test_limit),
        ] {
            if limit == Some(0) {
                bail!("{name} must be at least 1");
            }
        }
        self.data.dataset_config()?;
        self.lr_schedule.validate()?;
        Ok(())
    }

    /// The selected variant's resolved section.
    pub fn variant_section(&self) -> Result<&Table> {
        self.sections
            .get(&self.variant)
            .and_then(Value::as_table)
            .with_context(|| {
                format!(
                    "the [{}] section is missing (configuration not resolved)",
                    self.variant
                )
            })
    }

    /// The configuration as a TOML document.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("cannot write the configuration as TOML")
    }

    /// The configuration as JSON (checkpoint metadata).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).context("cannot write the configuration as JSON")
    }

    /// Every key's value under its dotted path (`batch_size`, `data.dir`,
    /// `fm.lr`; arrays are values), for comparing configurations.
    pub fn flat_values(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        let value = serde_json::to_value(self).context("cannot read the configuration's keys")?;
        let mut out = BTreeMap::new();
        flatten_into(String::new(), value, &mut out);
        Ok(out)
    }
}

/// The keys (dotted paths, sorted) whose values are not the same in every
/// one of `configs`, with each configuration's value (None: unset).
pub fn differing_keys(
    configs: &[&RunConfig],
) -> Result<Vec<(String, Vec<Option<serde_json::Value>>)>> {
    let flat = configs
        .iter()
        .map(|config| config.flat_values())
        .collect::<Result<Vec<_>>>()?;
    let keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let values: Vec<Option<serde_json::Value>> =
                flat.iter().map(|f| f.get(key).cloned()).collect();
            let differ = values.iter().any(|v| *v != values[0]);
            differ.then(|| (key.clone(), values))
        })
        .collect())
}

/// The leaves of a JSON object under their dotted paths.
fn flatten_into(
    prefix: String,
    value: serde_json::Value,
    out: &mut BTreeMap<String, serde_json::Value>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = match prefix.is_empty() {
                    true => key,
                    false => format!("{prefix}.{key}"),
                };
                flatten_into(path, value, out);
            }
        }
        leaf => {
            out.insert(prefix, leaf);
        }
    }
}

/// The top-level keys besides the variant sections (for error messages).
const TOP_LEVEL_KEYS: [&str; 8] = [
    "variant",
    "seed",
    "epochs",
    "batch_size",
    "device",
    "train_accuracy_every",
    "train_accuracy_steps",
    "save_every_steps",
];

fn read_table(path: &Path) -> Result<Table> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    text.parse::<Table>()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two made-up variants, `alpha` and `beta`, whose sections accept the
    /// keys `eta` and `lr` and fill in `eta`: these tests exercise the
    /// merging independently of the variant crates.
    struct Fill;

    impl SectionResolver for Fill {
        fn names(&self) -> Vec<&'static str> {
            vec!["alpha", "beta"]
        }

        fn resolve(&self, _name: &str, section: Option<&Table>) -> Result<Table> {
            let mut t = section.cloned().unwrap_or_default();
            if t.keys().any(|k| k != "eta" && k != "lr") {
                bail!("unknown field in {t:?}");
            }
            t.entry("eta").or_insert(Value::Float(1.0));
            Ok(t)
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("c.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// Mutated run configurations (as a checkpoint stores them: JSON with
    /// every section of the real variants) parse or fail with an error,
    /// never a panic; both outcomes occur.
    /// Mutants of a resolved `variant` configuration written by `write`,
    /// each byte replaced from `alphabet`, removed, or a digit inserted,
    /// parsed by `parse` ([`crate::testing::fuzz_mutants`]).
    fn fuzz_configuration(
        seed: u64,
        variant: &str,
        alphabet: &[u8],
        write: impl Fn(&RunConfig) -> Result<String>,
        parse: impl Fn(&str) -> Result<RunConfig>,
    ) {
        let mut valid = RunConfig::load(
            None,
            &[Override::flag("--variant", &["variant"], variant)],
            &crate::registry::Sections,
        )
        .unwrap();
        valid.epochs = 3;
        let valid = write(&valid).unwrap().into_bytes();
        let mutate = |bytes: &mut Vec<u8>, rng: &mut crate::testing::Below| {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = alphabet[rng.below(alphabet.len())],
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, b'9'),
            }
        };
        let report = crate::testing::fuzz_mutants(seed, 1000, &valid, mutate, |bytes| {
            parse(&String::from_utf8_lossy(bytes))
        });
        eprintln!("configurations: {report}");
    }

    #[test]
    fn mutated_configurations_parse_or_fail_cleanly() {
        // The configuration a checkpoint stores, as JSON.
        fuzz_configuration(
            23,
            "fm",
            b"{}[]\":,0123456789e-.tfn",
            RunConfig::to_json,
            |text| RunConfig::from_json(text, &crate::registry::Sections),
        );
    }

    #[test]
    fn mutated_toml_configurations_parse_or_fail_cleanly() {
        // What `--resume` reads: a run's config.toml, edited or damaged.
        fuzz_configuration(
            29,
            "ct",
            b"[]=\"'.,{}#\n 0123456789e-+_tfnai",
            RunConfig::to_toml,
            |text| RunConfig::from_toml_str(text, &crate::registry::Sections),
        );
    }

    #[test]
    fn later_sources_win_and_the_result_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "variant = \"beta\"\nepochs = 3\n[beta]\nlr = 0.5\n[alpha]\nlr = 0.1\n[data]\ntrain_limit = 100\n",
        );
        let overrides = [
            Override::flag("--epochs", &["epochs"], 5),
            Override::parse_set("beta.eta=0.25").unwrap(),
        ];
        let mut config = RunConfig::load(Some(&path), &overrides, &Fill).unwrap();
        assert_eq!(config.variant, "beta");
        assert_eq!(config.epochs, 5);
        assert!(config.lr_schedule.is_constant());
        let cosine = [
            Override::parse_set("lr_schedule.kind=cosine").unwrap(),
            Override::parse_set("lr_schedule.warmup_steps=100").unwrap(),
        ];
        let scheduled = RunConfig::load(Some(&path), &cosine, &Fill).unwrap();
        assert_eq!(
            scheduled.lr_schedule,
            noprop_core::LrSchedule {
                kind: noprop_core::LrScheduleKind::Cosine,
                warmup_steps: 100,
                min_factor: 0.0,
            }
        );
        config.lr_schedule = scheduled.lr_schedule;
        assert_eq!(config.data.train_limit, Some(100));
        let beta = config.variant_section().unwrap();
        assert_eq!(beta["lr"], Value::Float(0.5));
        assert_eq!(beta["eta"], Value::Float(0.25));
        // The other variant's section was checked, then dropped.
        assert_eq!(config.sections.keys().collect::<Vec<_>>(), ["beta"]);

        let saved = write(dir.path(), &config.to_toml().unwrap());
        assert_eq!(RunConfig::from_toml_file(&saved, &Fill).unwrap(), config);
        assert_eq!(
            RunConfig::from_json(&config.to_json().unwrap(), &Fill).unwrap(),
            config
        );
    }

    #[test]
    fn bad_configurations_are_errors_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("epochs = 1\n", "no variant chosen"),
            ("variant = \"xx\"\n", "xx"),
            ("variant = \"alpha\"\nepohcs = 2\n", "epohcs"),
            ("variant = \"alpha\"\n[gamma]\nlr = 2\n", "gamma"),
            ("variant = \"alpha\"\nbeta = 2\n", "[beta]"),
            (
                "variant = \"alpha\"\nepochs = 0\n",
                "epochs must be at least 1",
            ),
            (
                "variant = \"alpha\"\n[data]\ndataset = \"imagenet\"\n",
                "imagenet",
            ),
            ("variant = \"alpha\"\n[alpha]\nbogus = 1\n", "[alpha]"),
            ("variant = \"alpha\"\n[beta]\nbogus = 1\n", "[beta]"),
            (
                "variant = \"alpha\"\n[data]\nmean = [0.1, 0.2]\nstd = [1.0, 1.0]\n",
                "data.mean",
            ),
            ("variant = \"alpha\"\n[eval]\nstep = 2\n", "step"),
            (
                "variant = \"alpha\"\n[eval]\nsteps = 200000\n",
                "eval.steps: 200000 ODE steps is beyond the supported maximum 100000",
            ),
            (
                "variant = \"alpha\"\ntrain_accuracy_steps = 200000\n",
                "train_accuracy_steps: 200000 ODE steps",
            ),
            (
                "variant = \"alpha\"\n[lr_schedule]\nkind = \"step\"\n",
                "step",
            ),
            (
                "variant = \"alpha\"\n[lr_schedule]\nmin_factor = 2.0\n",
                "lr_schedule.min_factor",
            ),
            ("variant = \"alpha\"\n[lr_schedule]\nfloor = 0.1\n", "floor"),
            ("variant = [\n", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let path = write(dir.path(), text);
            let err = format!(
                "{:#}",
                RunConfig::load(Some(&path), &[], &Fill).unwrap_err()
            );
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let missing = dir.path().join("missing.toml");
        let err = format!(
            "{:#}",
            RunConfig::load(Some(&missing), &[], &Fill).unwrap_err()
        );
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn inference_settings_come_from_the_eval_section() {
        let overrides = [
            Override::flag("--variant", &["variant"], "alpha"),
            Override::parse_set("eval.steps=7").unwrap(),
            Override::parse_set("eval.solver=rk4").unwrap(),
        ];
        let config = RunConfig::load(None, &overrides, &Fill).unwrap();
        let settings = config.eval.settings();
        assert_eq!(settings.options.steps, Some(7));
        assert_eq!(settings.options.solver, Some(OdeSolver::Rk4));
        assert_eq!((settings.runs, settings.batch_size), (1, 500));
    }

    #[test]
    fn configurations_of_format_1_move_their_inference_keys_to_eval() {
        // Before format 2 the variant sections held `runs` (or
        // `inference_runs`) and `eval_batch_size`.
        let text = "variant = \"alpha\"\n[alpha]\nlr = 0.5\nruns = 5\neval_batch_size = 100\n";
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig::load(Some(&write(dir.path(), text)), &[], &Fill).unwrap();
        assert_eq!(config.eval.runs, Some(5));
        assert_eq!(config.eval.batch_size, 500);
        assert!(!config.variant_section().unwrap().contains_key("runs"));
        let text = "variant = \"beta\"\n[eval]\nruns = 2\n[beta]\ninference_runs = 3\n";
        let config = RunConfig::load(Some(&write(dir.path(), text)), &[], &Fill).unwrap();
        assert_eq!(config.eval.runs, Some(2), "an explicit eval.runs wins");
    }
}

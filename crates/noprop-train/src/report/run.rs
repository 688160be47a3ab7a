//! One training run directory, read through the types that wrote it.
//!
//! A run directory (written by `noprop train --out DIR`, completed by
//! `cargo xtask train-all`) holds:
//!
//! | file | type | written by | used for |
//! |---|---|---|---|
//! | `config.toml` | [`RunConfig`] | `noprop train` (required) | variant, seed, data and inference settings |
//! | `metrics.jsonl` | [`EpochMetrics`] per line | `noprop train` (required) | per-epoch losses, accuracies, times |
//! | `summary.json` | [`RunSummary`] | `noprop train`, once every epoch is done | status, parameters, peak memory |
//! | `eval.json` | [`EvalReport`] | `noprop eval --checkpoint DIR/last.safetensors --json`, saved by xtask | the final model's test accuracy (single runs and ensemble), inference time |
//! | `info.json` | [`InfoReport`] | `noprop info --checkpoint DIR/last.safetensors --json`, saved by xtask | parameter count, noise schedule |
//! | `info-initial.json` | [`InfoReport`] | `noprop info --variant V --config DIR/config.toml --json`, saved by xtask | the schedule before training |
//!
//! The first two are required, the others optional. A file present that
//! does not parse as its type, or that describes another variant than
//! `config.toml`, is an error naming the file and the problem.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::config::RunConfig;
use crate::eval::EvalReport;
use crate::info::InfoReport;
use crate::metrics::{EpochMetrics, MetricsLog};
use crate::registry::Sections;
use crate::summary::{RunSummary, SUMMARY_FILE};
use crate::train::{CONFIG_FILE, LAST_CHECKPOINT};

/// File names of the saved `noprop eval --json` and `noprop info --json`
/// outputs (the names `cargo xtask train-all` gives them).
pub const EVAL_FILE: &str = "eval.json";
pub const INFO_FILE: &str = "info.json";
pub const INITIAL_INFO_FILE: &str = "info-initial.json";

/// Everything read from one run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The directory.
    pub dir: PathBuf,
    /// Its last path component (e.g. "dt"): the run's name in the report.
    pub name: String,
    /// `config.toml`, resolved.
    pub config: RunConfig,
    /// `metrics.jsonl`, in file order (epochs 1, 2, ...).
    pub epochs: Vec<EpochMetrics>,
    pub summary: Option<RunSummary>,
    /// `eval.json`: `noprop eval` of `last.safetensors`.
    pub eval: Option<EvalReport>,
    /// `info.json`: the trained model.
    pub info: Option<InfoReport>,
    /// `info-initial.json`: the untrained model (where a learned schedule
    /// started).
    pub initial_info: Option<InfoReport>,
}

impl RunData {
    /// Reads a run directory (see the module doc).
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("run directory {} does not exist", dir.display());
        }
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            bail!(
                "{} is not a run directory: it has no {CONFIG_FILE}",
                dir.display()
            );
        }
        let config = RunConfig::from_toml_file(&config_path, &Sections)?;

        let log = MetricsLog::new(dir);
        if !log.path().is_file() {
            bail!(
                "run directory {} has no metrics.jsonl (did training finish an epoch?)",
                dir.display()
            );
        }
        let epochs = log.read_checked()?;

        let summary: Option<RunSummary> =
            read_optional(&dir.join(SUMMARY_FILE), "a run summary (`noprop train`)")?;
        let eval: Option<EvalReport> =
            read_optional(&dir.join(EVAL_FILE), "the output of `noprop eval --json`")?;
        let info: Option<InfoReport> =
            read_optional(&dir.join(INFO_FILE), "the output of `noprop info --json`")?;
        let initial_info: Option<InfoReport> = read_optional(
            &dir.join(INITIAL_INFO_FILE),
            "the output of `noprop info --json`",
        )?;

        let variants = [
            (SUMMARY_FILE, summary.as_ref().map(|s| &s.variant)),
            (EVAL_FILE, eval.as_ref().map(|e| &e.variant)),
            (INFO_FILE, info.as_ref().map(|i| &i.variant)),
            (INITIAL_INFO_FILE, initial_info.as_ref().map(|i| &i.variant)),
        ];
        for (file, variant) in variants {
            if let Some(variant) = variant.filter(|v| **v != config.variant) {
                bail!(
                    "{} describes a {variant} model, but {} says variant {}",
                    dir.join(file).display(),
                    config_path.display(),
                    config.variant
                );
            }
        }
        if let Some(eval) = &eval {
            // The report's test accuracy is the final model's.
            if Path::new(&eval.checkpoint).file_name() != Some(LAST_CHECKPOINT.as_ref()) {
                bail!(
                    "{} evaluates {}, not the run's final model {LAST_CHECKPOINT}",
                    dir.join(EVAL_FILE).display(),
                    eval.checkpoint
                );
            }
        }

        let name = dir
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            config,
            epochs,
            summary,
            eval,
            info,
            initial_info,
        })
    }

    /// The registered variant name (`config.toml`'s `variant`).
    pub fn variant(&self) -> &str {
        &self.config.variant
    }
}

/// Parses the JSON file at `path` as a `T` if the file exists; `what`
/// names `T` in the error.
fn read_optional<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| anyhow!("{} is not {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{eval_report, run_config, summary, write_config, write_metrics};

    #[test]
    fn loads_a_minimal_run_and_optional_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-run");
        std::fs::create_dir(&dir).unwrap();
        let mut config = run_config("fm");
        config.data.train_limit = Some(100);
        write_config(&dir, &config);
        write_metrics(&dir, &[0.5]);
        let eval = eval_report(&dir, "fm", 0.75, &[]);
        std::fs::write(dir.join(EVAL_FILE), serde_json::to_string(&eval).unwrap()).unwrap();
        let run = RunData::load(&dir).unwrap();
        assert_eq!(run.name, "my-run");
        assert_eq!(run.variant(), "fm");
        assert_eq!(run.epochs.len(), 1);
        assert_eq!(run.config, config);
        assert_eq!(run.eval, Some(eval));
        assert!(run.info.is_none() && run.summary.is_none());
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let load_err = || format!("{:#}", RunData::load(dir).unwrap_err());
        let err = RunData::load(&dir.join("nope")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(load_err().contains("config.toml"), "{}", load_err());
        std::fs::write(dir.join(CONFIG_FILE), "variant = ").unwrap();
        let err = load_err();
        assert!(err.contains("config.toml") && err.contains("TOML"), "{err}");
        std::fs::write(dir.join(CONFIG_FILE), "variant = \"dt\"\nepohcs = 2\n").unwrap();
        let err = load_err();
        assert!(
            err.contains("config.toml") && err.contains("epohcs"),
            "{err}"
        );
        write_config(dir, &run_config("dt"));
        assert!(load_err().contains("metrics.jsonl"), "{}", load_err());
        write_metrics(dir, &[0.5]);
        std::fs::write(dir.join(INFO_FILE), "garbage").unwrap();
        let err = load_err();
        assert!(
            err.contains("info.json") && err.contains("expected"),
            "{err}"
        );
        std::fs::remove_file(dir.join(INFO_FILE)).unwrap();
        // A field missing: serde names it.
        let mut text = serde_json::to_value(summary(dir, "dt")).unwrap();
        text.as_object_mut().unwrap().remove("parameters");
        std::fs::write(dir.join(SUMMARY_FILE), text.to_string()).unwrap();
        let err = load_err();
        assert!(
            err.contains("summary.json") && err.contains("missing field `parameters`"),
            "{err}"
        );
        // Another variant's file.
        let summary = summary(dir, "fm");
        std::fs::write(
            dir.join(SUMMARY_FILE),
            serde_json::to_string(&summary).unwrap(),
        )
        .unwrap();
        let err = load_err();
        assert!(err.contains("summary.json") && err.contains("fm"), "{err}");
        std::fs::remove_file(dir.join(SUMMARY_FILE)).unwrap();
        // An evaluation of another checkpoint than the final model.
        let mut eval = eval_report(dir, "dt", 0.5, &[]);
        eval.checkpoint = dir.join("best.safetensors").display().to_string();
        std::fs::write(dir.join(EVAL_FILE), serde_json::to_string(&eval).unwrap()).unwrap();
        let err = load_err();
        assert!(
            err.contains("eval.json") && err.contains("best.safetensors"),
            "{err}"
        );
    }
}

//! One training run directory, as the report reads it.
//!
//! A run directory (written by `noprop train --out DIR`, completed by
//! `cargo xtask train-all`) holds:
//!
//! | file | written by | used for |
//! |---|---|---|
//! | `config.toml` | `noprop train` (required) | variant, seed, epochs, data settings |
//! | `metrics.jsonl` | `noprop train` (required) | per-epoch losses, accuracies, times |
//! | `summary.json` | `noprop train`, if it writes one | final numbers, when present |
//! | `eval.json` | `noprop eval --json` saved by xtask | final test accuracy, inference time |
//! | `info.json` | `noprop info --checkpoint last.safetensors --json` saved by xtask | parameter count, noise schedule |
//! | `info-initial.json` | `noprop info --variant ct --config config.toml --json` saved by xtask (CT) | the schedule before training |
//!
//! Only the first two are required; every number the others would give has
//! a fallback (see `summary.rs`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::epoch::{read_metrics, EpochMetrics};

/// Everything read from one run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The directory.
    pub dir: PathBuf,
    /// Its last path component (e.g. "dt"), used as the run's name.
    pub name: String,
    /// `dt`, `ct` or `fm` (from config.toml, else info.json, else the name).
    pub variant: String,
    /// The resolved configuration, as JSON (converted from TOML).
    pub config: Value,
    /// Per-epoch metrics, in epoch order.
    pub epochs: Vec<EpochMetrics>,
    pub summary: Option<Value>,
    pub eval: Option<Value>,
    pub info: Option<Value>,
    /// `info-initial.json`: the untrained model (CT's initial schedule).
    pub initial_info: Option<Value>,
}

impl RunData {
    /// Reads a run directory. Missing `config.toml` or `metrics.jsonl`, or a
    /// file that does not parse, is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("run directory {} does not exist", dir.display());
        }
        let config_path = dir.join("config.toml");
        if !config_path.is_file() {
            bail!(
                "{} is not a run directory: it has no config.toml",
                dir.display()
            );
        }
        let config_text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config_toml: toml::Value = toml::from_str(&config_text)
            .with_context(|| format!("{} is not valid TOML", config_path.display()))?;
        let config = serde_json::to_value(config_toml)
            .with_context(|| format!("converting {}", config_path.display()))?;

        let metrics_path = dir.join("metrics.jsonl");
        if !metrics_path.is_file() {
            bail!(
                "run directory {} has no metrics.jsonl (did training finish an epoch?)",
                dir.display()
            );
        }
        let epochs = read_metrics(&metrics_path)?;

        let summary = read_optional_json(&dir.join("summary.json"))?;
        let eval = read_optional_json(&dir.join("eval.json"))?;
        let info = read_optional_json(&dir.join("info.json"))?;
        let initial_info = read_optional_json(&dir.join("info-initial.json"))?;

        let name = dir
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let variant = super::fields::string(&config, &["variant"])
            .or_else(|| {
                info.as_ref()
                    .and_then(|i| super::fields::string(i, &["variant", "metadata.variant"]))
            })
            .unwrap_or_else(|| name.clone())
            .to_lowercase();

        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            variant,
            config,
            epochs,
            summary,
            eval,
            info,
            initial_info,
        })
    }
}

/// Parses a JSON file if it exists. `noprop ... --json` output saved by a
/// script may carry log lines before the JSON: the last line that parses as
/// a JSON object wins when the whole file is not JSON.
fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        return Ok(Some(value));
    }
    text.lines()
        .rev()
        .find_map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
        })
        .map(Some)
        .with_context(|| format!("{} holds no JSON object", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_a_minimal_run_and_optional_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-run");
        std::fs::create_dir(&dir).unwrap();
        write(
            &dir,
            "config.toml",
            "variant = \"FM\"\nseed = 3\n[data]\ntrain_limit = 100\n",
        );
        write(
            &dir,
            "metrics.jsonl",
            "{\"epoch\":1,\"test_accuracy\":0.5}\n",
        );
        write(&dir, "eval.json", "INFO loading\n{\"accuracy\": 0.75}\n");
        let run = RunData::load(&dir).unwrap();
        assert_eq!(run.name, "my-run");
        assert_eq!(run.variant, "fm");
        assert_eq!(run.epochs.len(), 1);
        assert_eq!(run.config["data"]["train_limit"], 100);
        assert_eq!(run.eval.unwrap()["accuracy"], 0.75);
        assert!(run.info.is_none() && run.summary.is_none());
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = RunData::load(&dir.join("nope")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = RunData::load(dir).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        write(dir, "config.toml", "variant = ");
        let err = format!("{:#}", RunData::load(dir).unwrap_err());
        assert!(err.contains("config.toml") && err.contains("TOML"), "{err}");
        write(dir, "config.toml", "variant = \"dt\"");
        let err = RunData::load(dir).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl"), "{err}");
        write(dir, "metrics.jsonl", "");
        write(dir, "info.json", "garbage");
        let err = format!("{:#}", RunData::load(dir).unwrap_err());
        assert!(err.contains("info.json"), "{err}");
    }
}

//! `noprop train`: resolve the configuration, prepare (or reopen) the run
//! directory, load the data, build (or restore) the model, run the
//! [`Trainer`], and report.
//!
//! A run directory holds `config.toml` (the resolved configuration),
//! `metrics.jsonl`, `last.safetensors`, `best.safetensors` and, once
//! training has finished, `summary.json` ([`crate::summary::RunSummary`],
//! the `--json` output).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use noprop_core::{ModelSpec, ProcessGroup};
use noprop_data::Dataset;

use crate::cli::{TrainArgs, EXIT_INTERRUPTED};
use crate::config::RunConfig;
use crate::metrics::MetricsLog;
use crate::model::{build_blank, build_fresh};
use crate::overrides::Override;
use crate::registry::{self, Sections};
use crate::run_lock::RunLock;
use crate::summary::{RunStatus, RunSummary, SUMMARY_FILE};
use crate::train::{RunData, TrainOutcome, Trainer, BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT};
use noprop_checkpoint::atomic::write_atomic;
use noprop_checkpoint::Checkpoint;

/// What rank 0 prepared before training: the resolved configuration, the
/// run directory, whether it resumes, the directory's lock and the
/// fresh-start guard (rank 0 only).
struct Prepared {
    config: RunConfig,
    run_dir: PathBuf,
    resume: bool,
    lock: Option<RunLock>,
    fresh_start: Option<FreshStart>,
}

/// Prepares the run directory (rank 0; every run of one process).
fn prepare(args: &TrainArgs) -> Result<Prepared> {
    match &args.resume {
        Some(dir) => {
            let (config, run_dir, resume, lock) = reopen(args, dir)?;
            Ok(Prepared {
                config,
                run_dir,
                resume,
                lock: Some(lock),
                fresh_start: None,
            })
        }
        None => {
            let config = RunConfig::load(args.config.as_deref(), &overrides(args)?, &Sections)?;
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| default_run_dir(&config.variant));
            let created = !dir.exists();
            let lock = prepare_run_dir(&dir, args.force)?;
            // Declared after the lock, so dropped (and cleaned up) before it.
            let guard = FreshStart {
                dir: dir.clone(),
                created,
                armed: true,
            };
            write_atomic(&dir.join(CONFIG_FILE), config.to_toml()?.as_bytes())
                .with_context(|| format!("cannot write {}", dir.join(CONFIG_FILE).display()))?;
            Ok(Prepared {
                config,
                run_dir: dir,
                resume: false,
                lock: Some(lock),
                fresh_start: Some(guard),
            })
        }
    }
}

/// What rank 0 tells the other processes after preparing the run.
#[derive(serde::Serialize, serde::Deserialize)]
enum Preparation {
    Ready {
        config_toml: String,
        run_dir: PathBuf,
        resume: bool,
    },
    Failed,
}

/// Rank 0 prepares the run directory and sends the others the resolved
/// configuration (they never write to the directory); in one process,
/// [`prepare`].
fn prepare_everywhere(args: &TrainArgs, group: &ProcessGroup) -> Result<Prepared> {
    if group.size() == 1 {
        return prepare(args);
    }
    if group.is_root() {
        let prepared = prepare(args);
        let message = match &prepared {
            Ok(p) => Preparation::Ready {
                config_toml: p.config.to_toml()?,
                run_dir: p.run_dir.clone(),
                resume: p.resume,
            },
            Err(_) => Preparation::Failed,
        };
        group.broadcast_bytes(0, &serde_json::to_vec(&message)?)?;
        return prepared;
    }
    let bytes = group.broadcast_bytes(0, &[])?;
    match serde_json::from_slice(&bytes).context("the run rank 0 prepared")? {
        Preparation::Ready {
            config_toml,
            run_dir,
            resume,
        } => Ok(Prepared {
            config: RunConfig::from_toml_str(&config_toml, &Sections)
                .context("the configuration rank 0 sent")?,
            run_dir,
            resume,
            lock: None,
            fresh_start: None,
        }),
        Preparation::Failed => bail!("rank 0 could not start the run (its error says why)"),
    }
}

/// Runs `noprop train` as one of `group`'s processes (one, unless started
/// by an MPI launcher).
pub fn run(args: &TrainArgs, group: &ProcessGroup) -> Result<ExitCode> {
    let Prepared {
        config,
        run_dir,
        resume,
        lock: _lock,
        mut fresh_start,
    } = prepare_everywhere(args, group)?;
    let device = config.device.open()?;
    let dataset_config = config.data.dataset_config()?;
    let dataset = Dataset::load(&dataset_config, &device)
        .with_context(|| format!("cannot load the {} dataset", dataset_config.kind))?;
    tracing::info!(
        dataset = %dataset.kind(),
        train = dataset.train().len(),
        validation = dataset.validation().map_or(0, |v| v.len()),
        test = dataset.test().len(),
        "dataset loaded"
    );
    let (c, h, w) = dataset.image_shape();
    if h != w {
        bail!("images of {h}x{w} pixels: only square images are supported");
    }
    let spec = ModelSpec {
        in_channels: c,
        image_size: h,
        num_classes: dataset.num_classes(),
    };
    let checkpoint = if resume {
        let path = run_dir.join(LAST_CHECKPOINT);
        let checkpoint = Checkpoint::load(&path, &device)?;
        if checkpoint.meta.variant != config.variant {
            bail!(
                "cannot resume {}: {} holds a {} model but {} says variant {}",
                run_dir.display(),
                path.display(),
                registry::label(&checkpoint.meta.variant),
                CONFIG_FILE,
                config.variant
            );
        }
        if checkpoint.meta.spec != spec {
            bail!(
                "cannot resume {}: {} was trained on {:?}, the data is {:?}",
                run_dir.display(),
                path.display(),
                checkpoint.meta.spec,
                spec
            );
        }
        check_same_configuration(&config, &checkpoint, &run_dir)?;
        Some(checkpoint)
    } else {
        None
    };
    let train_split = dataset.train();
    // A resumed model gets every value from its checkpoint.
    let mut model = if let Some(checkpoint) = &checkpoint {
        build_blank(&config, spec, Some(checkpoint.num_model_values()), &device)?
    } else {
        let train = (train_split.images(), train_split.labels());
        build_fresh(&config, spec, Some(train), &device)?
    };
    tracing::info!(
        variant = config.variant.as_str(),
        parameters = model.params().count_trainable(""),
        run_dir = %run_dir.display(),
        "model built"
    );

    let stop = Arc::new(AtomicBool::new(false));
    install_ctrlc(&stop);
    let (mean, std) = dataset.normalization();
    let trainer = Trainer {
        config: &config,
        run_dir: &run_dir,
        data: RunData {
            train: train_split,
            validation: dataset.validation(),
            test: dataset.test(),
            dataset: dataset.kind(),
            spec,
            mean: mean.to_vec(),
            std: std.to_vec(),
            class_names: dataset.class_names().map(<[String]>::to_vec),
        },
        stop: Some(&stop),
        // Rank 0 alone shows progress.
        progress: !args.no_progress && group.is_root(),
        log_every: match group.is_root() {
            true => std::time::Duration::from_secs_f64(args.log_every),
            false => std::time::Duration::ZERO,
        },
        group: group.clone(),
    };
    // From here on the run directory records training: keep it.
    if let Some(guard) = fresh_start.take() {
        guard.keep();
    }
    let outcome = trainer.run(model.as_mut(), checkpoint.as_ref());
    let outcome = match resume {
        true => outcome.with_context(|| format!("resuming {}", run_dir.display()))?,
        false => outcome?,
    };
    if !group.is_root() {
        return Ok(ExitCode::SUCCESS);
    }
    report(
        args,
        &config,
        &run_dir,
        model.params().count_trainable(""),
        &outcome,
    )
}

/// Reopens `dir` for `--resume`: its config (with a new `--epochs` or
/// `--device`) and checkpoint.
fn reopen(args: &TrainArgs, dir: &Path) -> Result<(RunConfig, PathBuf, bool, RunLock)> {
    let conflicting = [
        ("--variant", args.variant.is_some()),
        ("--config", args.config.is_some()),
        ("--embedding", args.embedding.is_some()),
        ("--seed", args.seed.is_some()),
        ("--dataset", args.dataset.is_some()),
        ("--data-dir", args.data_dir.is_some()),
        ("--train-limit", args.train_limit.is_some()),
        ("--test-limit", args.test_limit.is_some()),
        ("--validation", args.validation.is_some()),
        ("--batch-size", args.batch_size.is_some()),
        ("--lr", args.lr.is_some()),
        ("--set", !args.set.is_empty()),
        ("--out", args.out.is_some()),
        ("--force", args.force),
    ];
    if let Some((flag, _)) = conflicting.iter().find(|(_, given)| *given) {
        bail!(
            "{flag} cannot be combined with --resume: a resumed run keeps the configuration in {} \
             (only --epochs, --device and --json may change)",
            dir.join(CONFIG_FILE).display()
        );
    }
    if !dir.is_dir() {
        bail!("cannot resume {}: no such run directory", dir.display());
    }
    let lock = RunLock::acquire(dir).with_context(|| format!("cannot resume {}", dir.display()))?;
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        bail!(
            "cannot resume {}: it has no {CONFIG_FILE} (not a run directory?)",
            dir.display()
        );
    }
    if !dir.join(LAST_CHECKPOINT).is_file() {
        bail!(
            "cannot resume {}: it has no {LAST_CHECKPOINT} (training never saved a checkpoint); \
             start it again with `noprop train --config {} --out {}`",
            dir.display(),
            config_path.display(),
            dir.display()
        );
    }
    let mut config = RunConfig::from_toml_file(&config_path, &Sections)?;
    let done = Checkpoint::read_meta(&dir.join(LAST_CHECKPOINT))
        .with_context(|| format!("cannot resume {}", dir.display()))?
        .epoch;
    if let Some(epochs) = args.epochs.filter(|&e| e < done) {
        bail!(
            "cannot resume {} with --epochs {epochs}: it has already trained {done} epochs \
             (--epochs is the new total); nothing was changed. To train another run, choose a \
             new --out",
            dir.display()
        );
    }
    let mut changed = false;
    if let Some(epochs) = args.epochs {
        changed |= config.epochs != epochs;
        config.epochs = epochs;
    }
    if let Some(device) = args.device {
        changed |= config.device != device;
        config.device = device;
    }
    if changed {
        write_atomic(&config_path, config.to_toml()?.as_bytes())
            .with_context(|| format!("cannot update {}", config_path.display()))?;
    }
    Ok((config, dir.to_path_buf(), true, lock))
}

/// The run-configuration keys a resume may change: `epochs` (the new total,
/// `--epochs`), `device` (`--device`) and `data.dir` (where to find the same
/// data files). Every other key shapes the steps taken so far or to come.
const RESUMABLE_KEYS: [&str; 3] = ["epochs", "device", "data.dir"];

/// At most this many differing keys are listed in the error.
const DIFFERENCES_SHOWN: usize = 6;

/// Refuses to resume when `config` (the run directory's `config.toml`,
/// with `--epochs`/`--device` applied) differs from the configuration the
/// checkpoint was trained with in any key but [`RESUMABLE_KEYS`]: the
/// resumed run would not be the one that was stopped.
fn check_same_configuration(
    config: &RunConfig,
    checkpoint: &Checkpoint,
    run_dir: &Path,
) -> Result<()> {
    let checkpoint_path = run_dir.join(LAST_CHECKPOINT);
    let stored =
        RunConfig::from_json(&checkpoint.meta.config_json, &Sections).with_context(|| {
            format!(
                "cannot resume {}: the configuration stored in {} is invalid",
                run_dir.display(),
                checkpoint_path.display()
            )
        })?;
    let differences = configuration_differences(config, &stored)?;
    if differences.is_empty() {
        return Ok(());
    }
    let mut listed = String::new();
    for (key, in_file, in_checkpoint) in differences.iter().take(DIFFERENCES_SHOWN) {
        listed.push_str(&format!(
            "\n  {key}: {in_file} in {CONFIG_FILE}, {in_checkpoint} in {LAST_CHECKPOINT}"
        ));
    }
    if differences.len() > DIFFERENCES_SHOWN {
        listed.push_str(&format!(
            "\n  and {} more",
            differences.len() - DIFFERENCES_SHOWN
        ));
    }
    let config_path = run_dir.join(CONFIG_FILE);
    bail!(
        "cannot resume {}: {} differs from the configuration {} was trained with, so the \
         resumed run would not continue the stopped one:{listed}\n\
         Only `epochs`, `device` and `data.dir` may change on a resume (--epochs, --device). Restore {} to resume, or start \
         a new run from the edited file: `noprop train --config {} --out NEW_DIR`",
        run_dir.display(),
        config_path.display(),
        checkpoint_path.display(),
        config_path.display(),
        config_path.display(),
    )
}

/// The keys (dotted paths) where `current` and `stored` differ, with each
/// side's value (`unset` where a key is absent), [`RESUMABLE_KEYS`] aside;
/// sorted by key.
fn configuration_differences(
    current: &RunConfig,
    stored: &RunConfig,
) -> Result<Vec<(String, String, String)>> {
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map_or_else(|| "unset".to_string(), |v| v.to_string())
    };
    Ok(crate::config::differing_keys(&[current, stored])?
        .into_iter()
        .filter(|(key, _)| !RESUMABLE_KEYS.contains(&key.as_str()))
        .map(|(key, values)| (key, show(&values[0]), show(&values[1])))
        .collect())
}

/// The dedicated flags as configuration overrides, then the `--set` ones.
fn overrides(args: &TrainArgs) -> Result<Vec<Override>> {
    let mut list = Vec::new();
    if let Some(v) = &args.variant {
        list.push(Override::flag("--variant", &["variant"], v.as_str()));
    }
    let int = |n: u64| -> Result<i64> { i64::try_from(n).context("value too large") };
    if let Some(n) = args.epochs {
        list.push(Override::flag("--epochs", &["epochs"], int(n as u64)?));
    }
    if let Some(n) = args.seed {
        list.push(Override::flag(
            "--seed",
            &["seed"],
            int(n).context("--seed")?,
        ));
    }
    if let Some(d) = args.device {
        list.push(Override::flag("--device", &["device"], d.as_str()));
    }
    if let Some(name) = &args.dataset {
        list.push(Override::flag(
            "--dataset",
            &["data", "dataset"],
            name.as_str(),
        ));
    }
    if let Some(dir) = &args.data_dir {
        if !dir.is_dir() {
            bail!("--data-dir {}: no such directory", dir.display());
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--data-dir {}", dir.display()))?;
        list.push(Override::flag(
            "--data-dir",
            &["data", "dir"],
            dir.display().to_string(),
        ));
    }
    for (flag, key, value) in [
        ("--train-limit", "train_limit", args.train_limit),
        ("--test-limit", "test_limit", args.test_limit),
        ("--validation", "validation", args.validation),
    ] {
        if let Some(n) = value {
            list.push(Override::flag(flag, &["data", key], int(n as u64)?));
        }
    }
    if let Some(n) = args.batch_size {
        list.push(Override::flag(
            "--batch-size",
            &["batch_size"],
            int(n as u64)?,
        ));
    }
    // --embedding and --lr map onto keys of the selected variant's section,
    // so the variant must be known: from --variant, else from the file.
    if args.embedding.is_some() || args.lr.is_some() {
        // Every variant's configuration has `embedding` and `lr` keys.
        let variant = match &args.variant {
            Some(v) => v.clone(),
            None => variant_in_file(args.config.as_deref())?.context(
                "--embedding and --lr need the variant: pass --variant (or set `variant` in --config)",
            )?,
        };
        if let Some(choice) = args.embedding {
            list.push(Override {
                path: vec![variant.clone(), "embedding".into()],
                value: toml::Value::String(noprop_core::EmbeddingKind::from(choice).to_string()),
                origin: "--embedding".into(),
            });
        }
        if let Some(lr) = args.lr {
            list.push(Override {
                path: vec![variant.clone(), "lr".into()],
                value: toml::Value::Float(lr),
                origin: "--lr".into(),
            });
        }
    }
    for text in &args.set {
        list.push(Override::parse_set(text)?);
    }
    Ok(list)
}

/// The `variant` a config file sets, if any.
fn variant_in_file(path: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    match table.get("variant") {
        None => Ok(None),
        Some(v) => {
            Ok(Some(v.clone().try_into().with_context(|| {
                format!("{}: bad `variant`", path.display())
            })?))
        }
    }
}

/// `runs/<variant>-<YYYYMMDD-HHMMSS>` (UTC).
fn default_run_dir(variant: &str) -> PathBuf {
    let stamp = crate::metrics::utc_timestamp(SystemTime::now());
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        .replace('T', "-");
    PathBuf::from("runs").join(format!("{variant}-{compact}"))
}

/// Creates `dir` and locks it, refusing to overwrite an existing run
/// unless `force` (the lock is taken first, so `--force` never removes the
/// files of a run that is going on).
fn prepare_run_dir(dir: &Path, force: bool) -> Result<RunLock> {
    if dir.exists() && !dir.is_dir() {
        bail!("--out {}: exists and is not a directory", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let lock = RunLock::acquire(dir)?;
    let run_files = [
        CONFIG_FILE,
        LAST_CHECKPOINT,
        BEST_CHECKPOINT,
        "metrics.jsonl",
        SUMMARY_FILE,
    ];
    let existing: Vec<&str> = run_files
        .iter()
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect();
    // Only a configuration: a start that failed before training (bad data,
    // say) and left nothing to resume or lose. It is started afresh.
    if existing == [CONFIG_FILE] {
        tracing::info!(
            run_dir = %dir.display(),
            "replacing the configuration of a run that never started"
        );
        std::fs::remove_file(dir.join(CONFIG_FILE))
            .with_context(|| format!("cannot remove {}", dir.join(CONFIG_FILE).display()))?;
        return Ok(lock);
    }
    if !existing.is_empty() {
        if !force {
            bail!(
                "--out {} already holds a run ({}); continue it with --resume {}, \
                 choose another --out, or pass --force to start over",
                dir.display(),
                existing.join(", "),
                dir.display()
            );
        }
        for file in existing {
            std::fs::remove_file(dir.join(file))
                .with_context(|| format!("cannot remove {}", dir.join(file).display()))?;
        }
    }
    Ok(lock)
}

/// A fresh run directory until training starts: if the start fails before
/// (bad data, a model that cannot be built), dropping it removes what the
/// start wrote (`config.toml`, and the directory itself if the start
/// created it and nothing else is in it), so the same command can simply be
/// run again.
struct FreshStart {
    dir: PathBuf,
    created: bool,
    armed: bool,
}

impl FreshStart {
    /// Training has started: keep the directory.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for FreshStart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join(CONFIG_FILE));
        if self.created {
            let _ = std::fs::remove_file(self.dir.join(crate::run_lock::LOCK_FILE));
            // Fails, harmlessly, when anything else is in it.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP set `stop`; a second one exits at once. The handler can be
/// installed once per process, so a failure (a second install) is ignored.
fn install_ctrlc(stop: &Arc<AtomicBool>) {
    let flag = Arc::clone(stop);
    let result = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without saving");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!(
            "\ninterrupt: saving a checkpoint at the end of this step or evaluation batch (Ctrl-C again to quit now)"
        );
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

/// Prints the outcome and writes `summary.json`.
fn report(
    args: &TrainArgs,
    config: &RunConfig,
    run_dir: &Path,
    parameters: usize,
    outcome: &TrainOutcome,
) -> Result<ExitCode> {
    let (status, state, last_epoch) = match outcome {
        TrainOutcome::Completed { state, last_epoch } => {
            (RunStatus::Completed, state, last_epoch.as_deref().cloned())
        }
        TrainOutcome::Interrupted { state } => (RunStatus::Interrupted, state, None),
    };
    let epochs = MetricsLog::new(run_dir).read()?;
    let last = last_epoch.or_else(|| epochs.last().cloned());
    let summary = RunSummary {
        status,
        run_dir: run_dir.display().to_string(),
        variant: config.variant.clone(),
        dataset: config.data.dataset.clone(),
        epochs: state.epochs_done,
        epochs_planned: config.epochs,
        step: state.step,
        parameters,
        train_seconds: epochs.iter().map(|m| m.train_seconds).sum(),
        // The run's peaks over its processes (a resumed run has several).
        train_peak_rss_bytes: epochs
            .iter()
            .filter_map(|m| m.memory.train_peak_rss_bytes)
            .max(),
        eval_peak_rss_bytes: epochs
            .iter()
            .filter_map(|m| m.memory.eval_peak_rss_bytes)
            .max(),
        baseline_rss_bytes: last.as_ref().and_then(|m| m.memory.baseline_rss_bytes),
        train_peak_device_bytes: epochs
            .iter()
            .filter_map(|m| m.memory.train_peak_device_bytes)
            .max(),
        eval_peak_device_bytes: epochs
            .iter()
            .filter_map(|m| m.memory.eval_peak_device_bytes)
            .max(),
        train_accuracy: last.as_ref().and_then(|m| m.train_accuracy),
        test_accuracy: last.as_ref().map(|m| m.test_accuracy),
        validation_accuracy: last.as_ref().and_then(|m| m.validation_accuracy),
        best: state.best.clone(),
        last_checkpoint: run_dir.join(LAST_CHECKPOINT).display().to_string(),
        best_checkpoint: state
            .best
            .as_ref()
            .map(|_| run_dir.join(BEST_CHECKPOINT).display().to_string()),
    };
    if status == RunStatus::Completed {
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        write_atomic(&run_dir.join(SUMMARY_FILE), text.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
        println!(
            "{}: {} after {} epoch(s), {} steps; test accuracy {}; run directory {}",
            status.as_str(),
            registry::label(&config.variant),
            state.epochs_done,
            state.step,
            pct(summary.test_accuracy),
            run_dir.display()
        );
    }
    if status == RunStatus::Interrupted {
        eprintln!(
            "interrupted: {} holds epoch {} step {}; continue with `noprop train --resume {}`",
            run_dir.join(LAST_CHECKPOINT).display(),
            state.epochs_done,
            state.step,
            run_dir.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm() -> RunConfig {
        RunConfig {
            variant: "fm".into(),
            ..RunConfig::default()
        }
        .resolve(&Sections)
        .unwrap()
    }

    #[test]
    fn a_resume_may_change_only_the_epochs_the_device_and_the_data_directory() {
        let stored = fm();
        let mut current = fm();
        current.epochs += 5;
        current.device = crate::device::DeviceChoice::Cuda;
        current.data.dir = Some("/elsewhere".into());
        assert!(configuration_differences(&current, &stored)
            .unwrap()
            .is_empty());

        let mut current = RunConfig::load(
            None,
            &[
                Override::flag("--variant", &["variant"], "fm"),
                Override::parse_set("fm.lr=0.5").unwrap(),
                Override::parse_set("batch_size=7").unwrap(),
                Override::parse_set("data.train_limit=100").unwrap(),
            ],
            &Sections,
        )
        .unwrap();
        current.epochs += 5;
        current.device = crate::device::DeviceChoice::Cuda;
        current.data.dir = Some("/elsewhere".into());
        let differences = configuration_differences(&current, &stored).unwrap();
        let keys: Vec<&str> = differences.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["batch_size", "data.train_limit", "fm.lr"]);
        assert_eq!(differences[0].1, "7");
        assert_eq!(differences[0].2, "128");
        // A key set on one side only.
        assert_eq!(differences[1].1, "100");
        assert_eq!(differences[1].2, "unset");
        assert_eq!(differences[2].1, "0.5");
    }
}

//! End-to-end tests of the `noprop` binary on real (embedded) MNIST: train,
//! checkpoint, resume bitwise, Ctrl-C, NaN stops, export, eval, predict,
//! info, gpu-check (the CPU against itself), and every kind of bad input
//! (non-zero exit, a message naming the file or flag, never a panic).
//!
//! Runs are tiny (192 training images, 100 test images, NoProp-FM with 5
//! ODE steps) so the whole file takes seconds of training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use noprop_checkpoint::{Checkpoint, CheckpointKind};
use noprop_core::SeededRng;
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_noprop");

/// The settings of every small training run here.
const SMALL: &[&str] = &[
    "--variant",
    "fm",
    "--train-limit",
    "192",
    "--test-limit",
    "100",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--set",
    "fm.inference_steps=5",
    "--set",
    "train_accuracy_steps=2",
    "--no-progress",
];

fn noprop(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the noprop binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Fails with exit status 1 or 2, names `needle` on stderr, and does not panic.
#[track_caller]
fn assert_fails_with(args: &[&str], needle: &str) {
    let out = noprop(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{args:?}: exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr does not name {needle:?}: {stderr}"
    );
}

fn json_stdout(out: &Output) -> Value {
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// A scratch directory under target/tmp, emptied once per test process.
fn scratch(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("noprop-cli-tests");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    });
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    noprop(&args)
}

/// A 2-epoch run, trained once and shared by the tests that only read it.
fn reference_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("reference").join("run");
        assert_ok(&train(&dir, &["--epochs", "2"]));
        dir
    })
}

/// Every tensor of a checkpoint as bit patterns.
fn tensor_bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
    let checkpoint = Checkpoint::load(path, &Device::Cpu).unwrap();
    checkpoint.bit_patterns().unwrap()
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one() {
    let reference = reference_run();
    let dir = scratch("resume").join("run");
    assert_ok(&train(&dir, &["--epochs", "1"]));
    assert_eq!(metrics(&dir).len(), 1);
    let out = noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-progress",
        "--json",
    ]);
    assert_ok(&out);
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["epochs"], 2);

    let expected = tensor_bits(&reference.join("last.safetensors"));
    assert!(
        expected.keys().any(|k| k.starts_with("optim.")) && expected.contains_key("trainer.rng")
    );
    assert_eq!(tensor_bits(&dir.join("last.safetensors")), expected);
    let (a, b) = (metrics(reference), metrics(&dir));
    assert_eq!(b.len(), 2);
    for key in [
        "epoch",
        "step",
        "train_loss",
        "test_accuracy",
        "train_accuracy",
    ] {
        assert_eq!(
            a.iter().map(|m| &m[key]).collect::<Vec<_>>(),
            b.iter().map(|m| &m[key]).collect::<Vec<_>>(),
            "{key}"
        );
    }
    // The resumed run's config now asks for 2 epochs.
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("epochs = 2"), "{config}");
}

#[test]
fn ctrl_c_saves_mid_epoch_and_resuming_matches_the_uninterrupted_run() {
    interrupted_run_resumes_bitwise("-INT", "sigint");
}

#[test]
fn sigterm_saves_like_ctrl_c() {
    // What `timeout`, SLURM and docker send.
    interrupted_run_resumes_bitwise("-TERM", "sigterm");
}

fn interrupted_run_resumes_bitwise(signal: &str, name: &str) {
    let reference = reference_run();
    let dir = scratch(name).join("run");
    let mut args = vec![
        "train".to_string(),
        "--out".into(),
        dir.display().to_string(),
    ];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    args.extend(["--epochs".into(), "20".into()]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once epoch 1's checkpoint is on disk (written atomically,
    // at the end of the epoch), a moment into the steps of epoch 2.
    let start = Instant::now();
    while !dir.join("last.safetensors").is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "epoch 1 never finished"
        );
        assert!(child.try_wait().unwrap().is_none(), "training exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let meta = Checkpoint::read_meta(&dir.join("last.safetensors")).unwrap();
    assert_eq!(meta.epoch, 1, "the interrupt should land in epoch 2");
    assert!(
        meta.step > 3,
        "saved after a step of epoch 2, step {}",
        meta.step
    );
    assert_ok(&noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-progress",
    ]));
    assert_eq!(
        tensor_bits(&dir.join("last.safetensors")),
        tensor_bits(&reference.join("last.safetensors"))
    );
}

#[test]
fn a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let reference = reference_run();
    let dir = scratch("nan").join("run");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.toml", "last.safetensors", "metrics.jsonl"] {
        std::fs::copy(reference.join(file), dir.join(file)).unwrap();
    }
    // A user sets the run's learning rate to something absurd, in
    // config.toml and in the checkpoint's stored configuration alike (a
    // resume refuses the one without the other), and resumes.
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let edited = config.replace("lr = 0.001", "lr = 1e30");
    assert_ne!(edited, config);
    std::fs::write(dir.join("config.toml"), edited).unwrap();
    let mut checkpoint = Checkpoint::load(&dir.join("last.safetensors"), &Device::Cpu).unwrap();
    let stored = checkpoint
        .meta
        .config_json
        .replace("\"lr\":0.001", "\"lr\":1e30");
    assert_ne!(stored, checkpoint.meta.config_json);
    checkpoint.meta.config_json = stored;
    checkpoint.save(&dir.join("last.safetensors")).unwrap();
    let before = std::fs::read(dir.join("last.safetensors")).unwrap();
    let out = noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "4",
        "--no-progress",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("training stopped: the loss is")
            && stderr.contains("last.safetensors (epoch 2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("last.safetensors")).unwrap(), before);
}

/// A copy of the reference run's files in a new run directory.
fn copy_of_reference(name: &str) -> PathBuf {
    let reference = reference_run();
    let dir = scratch(name).join("run");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.toml", "last.safetensors", "metrics.jsonl"] {
        std::fs::copy(reference.join(file), dir.join(file)).unwrap();
    }
    dir
}

/// `train --resume dir --epochs 3` fails naming every one of `needles`
/// and leaves the checkpoint and the metrics as they were.
#[track_caller]
fn assert_resume_refused(dir: &Path, needles: &[&str]) {
    let before = (
        std::fs::read(dir.join("last.safetensors")).unwrap(),
        std::fs::read(dir.join("metrics.jsonl")).unwrap(),
    );
    let out = noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "3",
        "--no-progress",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    let after = (
        std::fs::read(dir.join("last.safetensors")).unwrap(),
        std::fs::read(dir.join("metrics.jsonl")).unwrap(),
    );
    assert!(before == after, "a refused resume changed the run");
}

#[test]
fn a_resume_refuses_an_edited_configuration_and_an_impossible_trainer_state() {
    // config.toml edited after the run started: the resume would take other
    // steps than the stopped run. Every differing key is named.
    let dir = copy_of_reference("resume-edited");
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let edited = config
        .replace("batch_size = 64", "batch_size = 32")
        .replace("seed = 3", "seed = 4");
    assert_ne!(edited, config);
    std::fs::write(dir.join("config.toml"), &edited).unwrap();
    assert_resume_refused(
        &dir,
        &[
            "batch_size: 32 in config.toml, 64 in last.safetensors",
            "seed: 4 in config.toml, 3 in last.safetensors",
            "noprop train --config",
        ],
    );

    // Another run's checkpoint (seed 4) copied into the directory.
    let other = scratch("resume-foreign").join("other");
    assert_ok(&train(&other, &["--epochs", "1", "--set", "seed=4"]));
    let dir = copy_of_reference("resume-foreign");
    std::fs::copy(other.join("last.safetensors"), dir.join("last.safetensors")).unwrap();
    assert_resume_refused(&dir, &["seed: 3 in config.toml, 4 in last.safetensors"]);

    // Crafted trainer states: a batch past the end of the epoch (3 batches
    // of 64 of the 192 images), epochs done that the metadata does not say,
    // a step count that no epoch and batch give.
    for (key, value, needle) in [
        (
            "batch_in_epoch",
            999u64,
            "batch 999 of an epoch of 3 batches",
        ),
        (
            "epochs_done",
            1_000_000_000_000_000_000,
            "epoch 1000000000000000000",
        ),
        ("step", 5, "step 5 after 2 epochs of 3 batches"),
    ] {
        let dir = copy_of_reference(&format!("resume-state-{key}"));
        let path = dir.join("last.safetensors");
        let mut checkpoint = Checkpoint::load(&path, &Device::Cpu).unwrap();
        let mut state: Value =
            serde_json::from_str(checkpoint.meta.trainer_state_json.as_deref().unwrap()).unwrap();
        state[key] = value.into();
        if key == "step" {
            // Consistent with the metadata, so only the arithmetic refuses it.
            checkpoint.meta.step = value;
        }
        checkpoint.meta.trainer_state_json = Some(state.to_string());
        checkpoint.save(&path).unwrap();
        assert_resume_refused(&dir, &["trainer state is impossible", needle]);
    }

    // What a resume may change: the total epochs, here edited by hand.
    let dir = copy_of_reference("resume-more-epochs");
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        config.replace("epochs = 2", "epochs = 3"),
    )
    .unwrap();
    assert_ok(&noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--no-progress",
    ]));
    assert_eq!(metrics(&dir).len(), 3);
}

#[test]
fn ctrl_c_during_the_evaluation_stops_promptly_and_keeps_the_epoch() {
    // One epoch of 3 steps, then a long evaluation (100 images in batches
    // of 5, many ODE steps); progress lines every 0.1 s.
    let dir = scratch("eval-interrupt").join("run");
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), dir.display().to_string()];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--epochs",
            "1",
            "--set",
            "eval.steps=3000",
            "--set",
            "eval.batch_size=5",
            "--log-every",
            "0.1",
        ]
        .map(String::from),
    );
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr as it comes; interrupt once a few evaluation batches are done.
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(300))
            .expect("no evaluation progress line");
        seen.push(line.clone());
        if line.starts_with("epoch 1/1: test ") && line.contains("left in the evaluation") {
            break;
        }
    }
    let interrupted = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    let waited = interrupted.elapsed();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    let stderr = seen.join("\n");
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        waited < Duration::from_secs(10),
        "took {waited:?} to stop: {stderr}"
    );
    assert!(
        stderr.contains("epoch 1/1: evaluating on 100 test images"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The epoch's 3 steps are saved; its evaluation is not recorded.
    let meta = Checkpoint::read_meta(&dir.join("last.safetensors")).unwrap();
    assert_eq!((meta.epoch, meta.step), (0, 3));
    assert!(!dir.join("metrics.jsonl").exists() || metrics(&dir).is_empty());

    // The resume only evaluates: no step more, and epoch 1 as the
    // uninterrupted reference run trained it.
    assert_ok(&noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--no-progress",
    ]));
    let resumed = metrics(&dir);
    let reference = metrics(reference_run());
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["step"], 3);
    for key in ["train_loss", "train_accuracy"] {
        assert_eq!(resumed[0][key], reference[0][key], "{key}");
    }
}

#[test]
fn export_info_eval_and_predict_work_on_real_mnist_images() {
    let reference = reference_run();
    let dir = scratch("export");
    // Without a validation split nothing is selected (no best.safetensors):
    // the final model is the run's result.
    assert!(!reference.join("best.safetensors").exists());
    let last = reference.join("last.safetensors");
    let model_path = dir.join("model.safetensors");
    let out = noprop(&[
        "export",
        "--checkpoint",
        last.to_str().unwrap(),
        "--out",
        model_path.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&out);
    assert_eq!(json_stdout(&out)["variant"], "fm");

    // The export holds exactly the model tensors of the checkpoint.
    let exported = Checkpoint::load(&model_path, &Device::Cpu).unwrap();
    assert_eq!(exported.meta.kind, CheckpointKind::Weights);
    assert!(exported
        .tensors
        .keys()
        .all(|k| !k.starts_with("optim.") && !k.starts_with("trainer.")));
    let full = tensor_bits(&last);
    let exported_bits = tensor_bits(&model_path);
    let model_part: BTreeMap<_, _> = full
        .into_iter()
        .filter(|(k, _)| exported_bits.contains_key(k))
        .collect();
    assert_eq!(model_part, exported_bits);

    // info shows the hyperparameters the model was trained with.
    let out = noprop(&["info", "--checkpoint", model_path.to_str().unwrap()]);
    assert_ok(&out);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("configuration: seed 3, batch 64, 2 epoch(s), mnist data")
            && shown.contains("  [fm] anchor_weight = 1.0,")
            && shown.contains("lr = 0.001")
            && shown.contains("inference_steps = 5"),
        "{shown}"
    );

    // info agrees with the file.
    let out = noprop(&[
        "info",
        "--checkpoint",
        model_path.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&out);
    let info = json_stdout(&out);
    assert_eq!(info["variant"], "fm");
    assert_eq!(info["checkpoint"]["checkpoint"], "weights");
    let names: Vec<&str> = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        exported_bits.keys().map(String::as_str).collect::<Vec<_>>()
    );
    let scalars: u64 = exported
        .tensors
        .values()
        .map(|t| t.elem_count() as u64)
        .sum();
    assert_eq!(
        info["parameters"]["total"].as_u64().unwrap()
            + info["parameters"]["buffers"].as_u64().unwrap(),
        scalars
    );

    // eval of the export reproduces the accuracy the trainer logged for that epoch
    // (same model, same inference settings, same noise).
    let last_epoch = metrics(reference).into_iter().next_back().unwrap();
    for file in [&model_path, &last] {
        let out = noprop(&[
            "eval",
            "--checkpoint",
            file.to_str().unwrap(),
            "--test-limit",
            "100",
            "--json",
        ]);
        assert_ok(&out);
        let eval = json_stdout(&out);
        assert_eq!(eval["images"], 100);
        assert_eq!(
            eval["accuracy"],
            last_epoch["test_accuracy"],
            "{}",
            file.display()
        );
    }

    // --runs 5: each single run's accuracy, their mean and standard
    // deviation (the paper's protocol), and the ensemble's, apart. With one
    // batch (100 images) the first of the 5 runs draws the same noise as
    // the single run above.
    let out = noprop(&[
        "eval",
        "--checkpoint",
        last.to_str().unwrap(),
        "--test-limit",
        "100",
        "--runs",
        "5",
        "--json",
    ]);
    assert_ok(&out);
    let eval = json_stdout(&out);
    let runs: Vec<f64> = eval["run_accuracies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect();
    assert_eq!(runs.len(), 5);
    assert_eq!(runs[0], last_epoch["test_accuracy"].as_f64().unwrap());
    let mean = runs.iter().sum::<f64>() / 5.0;
    let sd = (runs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
    assert!(
        (eval["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12,
        "{eval}"
    );
    assert!(
        (eval["accuracy_std"].as_f64().unwrap() - sd).abs() < 1e-12,
        "{eval}"
    );
    let ensemble = eval["ensemble_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ensemble), "{eval}");
    assert_eq!(eval["settings"]["runs"], 5);
    assert_eq!(
        eval["settings"]["steps"], 5,
        "the run's own ODE steps: {eval}"
    );

    // predict on real test images written as PNG matches the model on the
    // dataset's own tensors.
    let config = DatasetConfig {
        train_limit: Some(1),
        test_limit: Some(4),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let data = Dataset::load(&config, &Device::Cpu).unwrap();
    let (mean, std) = (data.normalization().0[0], data.normalization().1[0]);
    let mut paths = Vec::new();
    for i in 0..4 {
        let image = data.test().images().get(i).unwrap().squeeze(0).unwrap();
        let pixels: Vec<u8> = image
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| ((x * std + mean) * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let path = dir.join(format!("digit{i}.png"));
        image::GrayImage::from_raw(28, 28, pixels)
            .unwrap()
            .save(&path)
            .unwrap();
        paths.push(path.display().to_string());
    }
    let mut args = vec![
        "predict",
        "--checkpoint",
        model_path.to_str().unwrap(),
        "--json",
    ];
    args.extend(paths.iter().map(String::as_str));
    let out = noprop(&args);
    assert_ok(&out);
    let predictions = json_stdout(&out)["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), 4);

    let loaded = noprop_train::model::load_model(&model_path, &Device::Cpu).unwrap();
    let settings = loaded.config.eval.settings();
    let mut rng = SeededRng::new(loaded.config.seed).fork(noprop_train::train::EVAL_STREAM);
    let batch = data.test().images().narrow(0, 0, 4).unwrap();
    let expected =
        noprop_core::inference::predict_proba(loaded.model.as_ref(), &batch, &settings, &mut rng)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
    for (prediction, expected) in predictions.iter().zip(&expected) {
        let probs: Vec<f64> = prediction["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 10);
        for (p, e) in probs.iter().zip(expected) {
            assert!(
                (p - f64::from(*e)).abs() < 1e-4,
                "{probs:?} vs {expected:?}"
            );
        }
        let class = prediction["class"].as_u64().unwrap() as usize;
        assert!(probs.iter().all(|p| *p <= probs[class]));
    }
    // The human-readable form names each file.
    let mut args = vec!["predict", "--checkpoint", model_path.to_str().unwrap()];
    args.push(&paths[0]);
    let out = noprop(&args);
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains("digit0.png: class"),
        "{}",
        text(&out.stdout)
    );
}

/// `noprop compare` reads back what `train`, `eval --json` and `info
/// --json` write, through their own types, as `cargo xtask train-all`
/// leaves them in a run directory.
#[test]
fn compare_reads_what_train_eval_and_info_write() {
    use noprop_train::eval::EvalReport;
    use noprop_train::info::InfoReport;
    use noprop_train::summary::RunSummary;
    let reference = reference_run();
    let dir = scratch("compare").join("fm");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.toml", "metrics.jsonl", "summary.json"] {
        std::fs::copy(reference.join(file), dir.join(file)).unwrap();
    }
    let last = reference.join("last.safetensors");
    let config = dir.join("config.toml");
    let saved = |args: &[&str], file: &str| -> String {
        let out = noprop(args);
        assert_ok(&out);
        std::fs::write(dir.join(file), &out.stdout).unwrap();
        text(&out.stdout)
    };
    let eval_args = ["eval", "--checkpoint", last.to_str().unwrap()];
    let eval_text = saved(
        &[&eval_args[..], &["--test-limit", "100", "--json"]].concat(),
        "eval.json",
    );
    let info_args = ["info", "--checkpoint", last.to_str().unwrap(), "--json"];
    let info_text = saved(&info_args, "info.json");
    let initial_args = [
        "info",
        "--variant",
        "fm",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ];
    saved(&initial_args, "info-initial.json");
    let eval: EvalReport = serde_json::from_str(&eval_text).unwrap();
    // The confusion matrix: 10 x 10, every test image once (one run), the
    // correct ones on the diagonal; per-class accuracy is its diagonal
    // over its rows.
    assert_eq!(eval.confusion.len(), 10);
    assert!(eval.confusion.iter().all(|row| row.len() == 10));
    let total: u64 = eval.confusion.iter().flatten().sum();
    let diagonal: u64 = (0..10).map(|c| eval.confusion[c][c]).sum();
    assert_eq!((total, diagonal), (100, eval.correct_per_run[0]));
    for (c, row) in eval.confusion.iter().enumerate() {
        let n: u64 = row.iter().sum();
        let expected = row[c] as f64 / n.max(1) as f64;
        // serde_json's parser may be one ulp off the printed value.
        let got = eval.per_class_accuracy[c].unwrap_or(f64::NAN);
        assert!(
            (got - expected).abs() < 1e-12 || (n == 0 && eval.per_class_accuracy[c].is_none()),
            "class {c}: {got} vs {expected}"
        );
    }
    let info: InfoReport = serde_json::from_str(&info_text).unwrap();
    let summary: RunSummary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();

    let out_dir = scratch("compare").join("report");
    let out = noprop(&[
        "compare",
        "--runs",
        dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&out);
    let report = json_stdout(&out);
    let row = &report["runs"][0];
    assert_eq!(row["variant"], "fm");
    assert_eq!(row["test_accuracy_source"], "eval.json");
    assert_eq!(row["test_accuracy"], eval.accuracy);
    assert_eq!(row["inference_ms_per_image"], eval.ms_per_image);
    assert_eq!(row["parameters"], summary.parameters);
    assert_eq!(summary.parameters, info.parameters.total);
    assert_eq!(
        row["train_peak_rss_bytes"],
        serde_json::json!(summary.train_peak_rss_bytes)
    );
    assert_eq!(row["epochs"], 2);
    assert_eq!(row["status"], "completed");
    assert_eq!(report["epochs"][0]["epochs"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        md.contains(&format!("| NoProp-FM | {:.2}% |", 100.0 * eval.accuracy)),
        "{md}"
    );
    assert!(md.contains("## Per-class test accuracy"), "{md}");
    assert!(md.contains("| run | 0 | 1 | 2 |"), "{md}");
}

#[test]
fn compare_of_a_sweep_names_the_runs_and_the_keys_that_differ() {
    let reference = reference_run();
    let lr3 = scratch("sweep").join("fm-lr3");
    assert_ok(&train(
        &lr3,
        &[
            "--epochs",
            "1",
            "--set",
            "fm.lr=0.003",
            "--set",
            "data.test_limit=50",
        ],
    ));
    // Each metrics line records the evaluation behind its test accuracy.
    let line = &metrics(&lr3)[0];
    assert_eq!(line["test_images"], 50);
    assert_eq!(line["eval_settings"]["steps"], 5);
    assert_eq!(line["eval_settings"]["solver"], "euler");
    assert_eq!(line["eval_settings"]["runs"], 1);
    let out_dir = scratch("sweep").join("report");
    let args = [
        "compare",
        "--runs",
        reference.to_str().unwrap(),
        lr3.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = noprop(&args);
    assert_ok(&out);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Distinct names, the differing keys, and a warning on the test sets.
    assert!(stdout.contains("| NoProp-FM (run) |"), "{stdout}");
    assert!(stdout.contains("| NoProp-FM (fm-lr3) |"), "{stdout}");
    assert!(
        stdout.contains("| run | `data.test_limit` | `epochs` | `fm.lr` |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| NoProp-FM (fm-lr3) | 50 | 1 | 0.003 |"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: the test sets differ: NoProp-FM (run): the first 100 test images; NoProp-FM (fm-lr3): the first 50 test images"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Read with care") && md.contains("`fm.lr`"),
        "{md}"
    );
    // The report is not replaced without --force.
    assert_fails_with(&args, "already holds a report");
    let forced = [
        &args[..],
        &["--force", "--label", "base", "--label", "lr 3e-3"],
    ]
    .concat();
    let out = noprop(&forced);
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains("| lr 3e-3 |"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_per_epoch_evaluation_defaults_to_a_cheap_step_count() {
    // FM's own default is the paper's 1000 steps; the learning curve uses
    // 100 unless eval.steps says otherwise, and records it.
    let dir = scratch("epoch-steps").join("run");
    let out = noprop(&[
        "train",
        "--variant",
        "fm",
        "--train-limit",
        "64",
        "--test-limit",
        "20",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_eq!(metrics(&dir)[0]["eval_settings"]["steps"], 100);
    let eval = noprop(&[
        "eval",
        "--checkpoint",
        dir.join("last.safetensors").to_str().unwrap(),
        "--test-limit",
        "20",
        "--json",
    ]);
    assert_ok(&eval);
    assert_eq!(json_stdout(&eval)["settings"]["steps"], 1000);
}

#[test]
fn info_describes_fresh_models_with_their_schedules() {
    let out = noprop(&[
        "info",
        "--variant",
        "ct",
        "--set",
        "ct.schedule.hidden=8",
        "--grid",
        "3",
        "--json",
    ]);
    assert_ok(&out);
    let info = json_stdout(&out);
    assert_eq!(info["variant"], "ct");
    let schedule: noprop_core::ScheduleTable =
        serde_json::from_value(info["schedule"].clone()).unwrap();
    assert_eq!(schedule.rows.len(), 3);
    let alpha_bar = schedule.column("alpha_bar").unwrap();
    assert!((alpha_bar[0].unwrap() - 0.01).abs() < 1e-5, "{alpha_bar:?}");
    assert!(info["parameters"]["total"].as_u64().unwrap() > 800_000);
    let out = noprop(&["info", "--variant", "fm"]);
    assert_ok(&out);
    assert!(
        text(&out.stdout).contains("parameters:"),
        "{}",
        text(&out.stdout)
    );
    // The registry, as `--list` shows it: every variant --variant accepts.
    let out = noprop(&["info", "--list", "--json"]);
    assert_ok(&out);
    let names: Vec<String> = json_stdout(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, noprop_train::registry::names());
}

#[test]
fn gpu_check_on_the_cpu_agrees_exactly_and_reports_speed() {
    let dir = scratch("gpu-check");
    let json = dir.join("gpu-check.json");
    let out = noprop(&[
        "gpu-check",
        "--device",
        "cpu",
        "--variants",
        "fm",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["batch_size"], 16);
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 1);
    let fm = &variants[0];
    assert_eq!(fm["variant"], "fm");
    assert_eq!(fm["ok"], true);
    assert!(fm["error"].is_null(), "{fm:#}");
    // The CPU against itself: the same step gives the same bits.
    let agreement = &fm["agreement"];
    assert_eq!(agreement["ok"], true, "{agreement:#}");
    assert_eq!(agreement["exact"], true, "{agreement:#}");
    assert_eq!(agreement["copy_exact"], true);
    assert_eq!(agreement["loss_cpu"], agreement["loss_device"]);
    assert!(agreement["loss_cpu"].as_f64().unwrap() > 0.0);
    assert_eq!(agreement["worst"]["rel_diff"], 0.0);
    assert!(agreement["tensors"].as_u64().unwrap() > 2);
    assert_eq!(agreement["optimizer_worst"]["max_abs_diff"], 0.0);
    assert!(agreement["optimizer_tensors"].as_u64().unwrap() > 2);
    let training = &fm["training"];
    assert_eq!(training["steps"], 2);
    assert_eq!(training["losses"].as_array().unwrap().len(), 2);
    assert!(training["images_per_second"].as_f64().unwrap() > 0.0);
    let inference = &fm["inference"];
    assert_eq!(inference["ode_steps"], 100);
    assert_eq!(inference["batch_size"], 16);
    assert!(inference["ms_batch_1"].as_f64().unwrap() > 0.0);
    assert!(inference["ms_batch"].as_f64().unwrap() > 0.0);
    // The table on stdout names the variant and its verdict.
    let table = text(&out.stdout);
    assert!(table.contains("fm") && table.contains("exact"), "{table}");

    // Bad input: a --data directory that does not exist; without the cuda
    // feature, --device cuda (the default) says how to build one.
    assert_fails_with(
        &[
            "gpu-check",
            "--device",
            "cpu",
            "--data",
            &dir.join("nowhere").display().to_string(),
        ],
        "--data",
    );
    if cfg!(not(feature = "cuda")) {
        assert_fails_with(&["gpu-check", "--variants", "fm"], "--features cuda");
    }
}

#[test]
fn bad_inputs_exit_non_zero_with_clear_messages() {
    let dir = scratch("bad");
    let d = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("corrupt.toml"), "variant = [\n").unwrap();
    std::fs::write(
        dir.join("unknown-key.toml"),
        "variant = \"fm\"\nepohcs = 3\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a checkpoint").unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();

    // Configuration and flags.
    assert_fails_with(&["train", "--config", &d("missing.toml")], "missing.toml");
    assert_fails_with(&["train", "--config", &d("corrupt.toml")], "corrupt.toml");
    assert_fails_with(&["train", "--config", &d("unknown-key.toml")], "epohcs");
    assert_fails_with(&["train", "--variant", "xx"], "--variant");
    assert_fails_with(&["train", "--variant", "fm", "--epochs", "abc"], "--epochs");
    assert_fails_with(&["train", "--variant", "fm", "--epochs", "-1"], "--epochs");
    assert_fails_with(&["train", "--variant", "fm", "--lr", "0"], "--lr");
    assert_fails_with(
        &["train", "--variant", "fm", "--dataset", "imagenet"],
        "--dataset",
    );
    assert_fails_with(&["train", "--epochs", "1"], "--variant");
    assert_fails_with(&["--threads", "0", "info", "--variant", "fm"], "--threads");
    // Parallel DT blocks need a fixed W.
    assert_fails_with(
        &[
            "train",
            "--variant",
            "dt",
            "--embedding",
            "dim20",
            "--set",
            "dt.parallel_blocks=true",
            "--out",
            &d("r-parallel"),
        ],
        "parallel_blocks",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--set",
            "fm.bogus=1",
            "--out",
            &d("r1"),
        ],
        "bogus",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--set",
            "fm.lr=-1",
            "--out",
            &d("r2"),
        ],
        "lr",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--set",
            "nonsense",
            "--out",
            &d("r3"),
        ],
        "--set nonsense",
    );
    // Data.
    assert_fails_with(
        &["train", "--variant", "fm", "--data-dir", &d("no-such-dir")],
        "no-such-dir",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--dataset",
            "kmnist",
            "--out",
            &d("r4"),
        ],
        "--data-dir",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--dataset",
            "kmnist",
            "--data-dir",
            &d("empty"),
            "--out",
            &d("r5"),
        ],
        "empty",
    );
    #[cfg(not(feature = "cuda"))]
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--device",
            "cuda",
            "--out",
            &d("r6"),
        ],
        "--features cuda",
    );
    // Run directories.
    assert_fails_with(&["train", "--resume", &d("no-run")], "no-run");
    assert_fails_with(&["train", "--resume", &d("empty")], "config.toml");
    let reference = reference_run().display().to_string();
    assert_fails_with(
        &["train", "--resume", &reference, "--lr", "0.1"],
        "--lr cannot be combined with --resume",
    );
    assert_fails_with(
        &["train", "--variant", "fm", "--out", &reference],
        "already holds a run",
    );

    // Checkpoints.
    let last = reference_run().join("last.safetensors");
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(dir.join("truncated.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    for command in ["eval", "info", "export"] {
        let mut args = vec![command, "--checkpoint"];
        let truncated = d("truncated.safetensors");
        let notes = d("notes.txt");
        let missing = d("missing.safetensors");
        let out_file = d("out.safetensors");
        for (file, needle) in [
            (&truncated, "not a valid safetensors file"),
            (&notes, "not a valid safetensors file"),
            (&missing, "missing.safetensors"),
        ] {
            args.truncate(2);
            args.push(file);
            if command == "export" {
                args.extend(["--out", &out_file]);
            }
            assert_fails_with(&args, needle);
            assert_fails_with(&args, &file[file.rfind('/').unwrap() + 1..]);
        }
    }
    assert_fails_with(
        &[
            "export",
            "--checkpoint",
            last.to_str().unwrap(),
            "--out",
            &d("no-dir/m.safetensors"),
        ],
        "no-dir",
    );
    // A checkpoint of another variant in a run directory: the run says fm,
    // the file holds a ct model.
    let wrong = dir.join("wrong-variant");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::copy(
        reference_run().join("config.toml"),
        wrong.join("config.toml"),
    )
    .unwrap();
    let ct_run = dir.join("ct-run");
    let out = noprop(&[
        "train",
        "--variant",
        "ct",
        "--train-limit",
        "64",
        "--test-limit",
        "10",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--set",
        "ct.inference_steps=2",
        "--set",
        "ct.schedule.hidden=8",
        "--set",
        "train_accuracy_every=0",
        "--no-progress",
        "--out",
        ct_run.to_str().unwrap(),
    ]);
    assert_ok(&out);
    std::fs::copy(
        ct_run.join("last.safetensors"),
        wrong.join("last.safetensors"),
    )
    .unwrap();
    assert_fails_with(
        &["train", "--resume", wrong.to_str().unwrap()],
        "holds a NoProp-CT model",
    );
    // Predict: non-image and missing files.
    let ckpt = last.to_str().unwrap();
    assert_fails_with(
        &["predict", "--checkpoint", ckpt, &d("notes.txt")],
        "notes.txt",
    );
    assert_fails_with(
        &["predict", "--checkpoint", ckpt, &d("missing.png")],
        "missing.png",
    );
}

/// A PNG whose header claims `side` x `side` RGB pixels, with a tiny body.
fn png_claiming(side: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        // CRC-32 (IEEE) of kind + data, bit by bit.
        let mut crc = !0u32;
        for &byte in &out[start..] {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        out.extend_from_slice(&(!crc).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    // A stored (uncompressed) zlib stream of one zero byte.
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x01, 0x00, 0x01,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Damaged and hostile checkpoints, each changed in one way from a good
/// one: `eval`, `info`, `predict` and `export` refuse every one with exit 1
/// and a message naming the file and the problem, without panicking or
/// allocating what the claimed sizes would need, and write nothing.
#[test]
fn hostile_checkpoints_are_refused_before_anything_is_allocated() {
    let dir = scratch("hostile");
    let last = reference_run().join("last.safetensors");
    let good = Checkpoint::load(&last, &Device::Cpu).unwrap();
    let digit = dir.join("digit.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([128]))
        .save(&digit)
        .unwrap();
    let digit = digit.display().to_string();

    let config_with = |key: &str, value: Value| -> String {
        let mut config: Value = serde_json::from_str(&good.meta.config_json).unwrap();
        config["fm"][key] = value;
        config.to_string()
    };
    let first_weight = good
        .tensors
        .keys()
        .find(|n| n.ends_with(".weight"))
        .unwrap()
        .clone();
    let many_steps = config_with("inference_steps", (1u64 << 40).into());
    type Edit = Box<dyn Fn(&mut Checkpoint)>;
    // Replaces the first weight tensor by `change` of it.
    let weight = |change: fn(&Tensor) -> Tensor| -> Edit {
        let name = first_weight.clone();
        Box::new(move |c| {
            let changed = change(&c.tensors[&name]);
            c.tensors.insert(name.clone(), changed);
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "huge-image",
            Box::new(|c| c.meta.spec.image_size = 1 << 40),
            "`image_size` = 1099511627776 is beyond the supported maximum",
        ),
        (
            "huge-channels",
            Box::new(|c| c.meta.spec.in_channels = 1 << 50),
            "`in_channels`",
        ),
        (
            "huge-classes",
            Box::new(|c| c.meta.spec.num_classes = 1 << 30),
            "`num_classes`",
        ),
        // Within the metadata's bounds, but a model far larger than the
        // file's tensors (4096^2 images: a 3e10-value layer).
        (
            "large-image",
            Box::new(|c| c.meta.spec.image_size = 4096),
            "does not match the tensors it is loaded from",
        ),
        (
            "many-classes",
            Box::new(|c| c.meta.spec.num_classes = 5000),
            "does not match the tensors it is loaded from",
        ),
        (
            "many-steps",
            Box::new(move |c| c.meta.config_json = many_steps.clone()),
            "inference_steps",
        ),
        (
            "nan-weight",
            weight(|w| {
                let mut values = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                values[3] = f32::NAN;
                Tensor::from_vec(values, w.shape(), &Device::Cpu).unwrap()
            }),
            "holds NaN at flat index 3",
        ),
        (
            "inf-weight",
            weight(|w| (w.ones_like().unwrap() * f64::INFINITY).unwrap()),
            "holds inf at flat index 0",
        ),
        (
            "zero-std",
            Box::new(|c| c.meta.normalize_std = vec![0.0]),
            "a standard deviation must be positive",
        ),
        (
            "nan-mean",
            // JSON has no NaN: it is written as null.
            Box::new(|c| c.meta.normalize_mean = vec![f32::NAN]),
            "`normalize_mean` is not a JSON array of numbers",
        ),
        (
            "two-means",
            Box::new(|c| c.meta.normalize_mean = vec![0.1, 0.2]),
            "`normalize_mean` has 2 values",
        ),
        (
            "integer-weight",
            weight(|w| w.to_dtype(candle_core::DType::U8).unwrap()),
            "has dtype U8",
        ),
        (
            "flattened-weight",
            weight(|w| w.flatten_all().unwrap()),
            "has shape",
        ),
        (
            "other-variant",
            Box::new(|c| c.meta.variant = "dt".into()),
            "metadata says variant dt but its config says fm",
        ),
    ];
    for (name, edit, needle) in &cases {
        let mut hostile = Checkpoint {
            meta: good.meta.clone(),
            tensors: good.tensors.clone(),
        };
        edit(&mut hostile);
        let path = dir.join(format!("{name}.safetensors"));
        hostile.save(&path).unwrap();
        let file = path.display().to_string();
        let exported = dir.join(format!("{name}-exported.safetensors"));
        let out_path = exported.display().to_string();
        for args in [
            vec!["eval", "--checkpoint", &file],
            vec!["info", "--checkpoint", &file],
            vec!["predict", "--checkpoint", &file, &digit],
            vec!["export", "--checkpoint", &file, "--out", &out_path],
        ] {
            let started = Instant::now();
            let out = noprop(&args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}: {args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {args:?}: {stderr}");
            assert!(
                stderr.contains(&file) && stderr.contains(needle),
                "{name}: {args:?}: stderr names neither the file nor {needle:?}: {stderr}"
            );
            // Refused up front, not after building (or failing to build) a
            // huge model.
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name}: {args:?} took {:?}",
                started.elapsed()
            );
        }
        assert!(!exported.exists(), "{name}: export wrote {out_path}");
    }

    // An image whose header claims 100,000 x 100,000 pixels (30 GB).
    let huge = dir.join("huge.png");
    std::fs::write(&huge, png_claiming(100_000)).unwrap();
    assert_fails_with(
        &[
            "predict",
            "--checkpoint",
            last.to_str().unwrap(),
            huge.to_str().unwrap(),
        ],
        "huge.png: the image is too large to decode",
    );
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    // `noprop info ... | head -1`: the reader goes away before the table is
    // printed. No panic message, no backtrace.
    let mut child = Command::new(BIN)
        .args(["info", "--variant", "dt", "--grid", "3"])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn resuming_with_fewer_epochs_than_done_is_refused_and_changes_nothing() {
    let reference = reference_run();
    let dir = scratch("resume-fewer").join("run");
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "config.toml",
        "last.safetensors",
        "metrics.jsonl",
        "summary.json",
    ] {
        std::fs::copy(reference.join(file), dir.join(file)).unwrap();
    }
    let before: Vec<Vec<u8>> = ["config.toml", "metrics.jsonl", "summary.json"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let out = noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "1",
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already trained 2 epochs") && stderr.contains("--epochs 1"),
        "{stderr}"
    );
    let after: Vec<Vec<u8>> = ["config.toml", "metrics.jsonl", "summary.json"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(before == after, "the run directory was changed");
    // The same total as done: nothing to train, the metrics stay as written.
    let out = noprop(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "2",
        "--no-progress",
    ]);
    assert_ok(&out);
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before[1]);
}

#[test]
fn a_log_without_a_terminal_gets_progress_lines_during_epochs() {
    // stderr is a pipe here, as in a batch job; lines every 0.2 s.
    let dir = scratch("log-lines").join("run");
    let out = noprop(&[
        "train",
        "--variant",
        "dt",
        "--set",
        "dt.num_blocks=2",
        "--train-limit",
        "640",
        "--test-limit",
        "50",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--log-every",
        "0.2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("epoch 1/1: batch "))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    assert!(
        lines.iter().all(|l| l.contains("images/s")
            && l.contains("left in the epoch")
            && l.contains("/20,")),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "no bar drawn"
    );
    // The epoch's own line uses the same numbering.
    assert!(stderr.contains("epoch 1/1: loss"), "{stderr}");
}

#[test]
fn a_run_directory_belongs_to_one_process() {
    let dir = scratch("lock").join("run");
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), dir.display().to_string()];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    // Long enough (20 epochs, several seconds) for the attempts below.
    args.extend(["--epochs".into(), "20".into()]);
    let first = Command::new(BIN)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.join("config.toml").is_file() {
        assert!(start.elapsed() < Duration::from_secs(60), "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it runs: a second train, a --force and a --resume are refused,
    // naming the directory and the holder's pid.
    let pid = first.id().to_string();
    let dir_arg = dir.to_str().unwrap();
    let mut second: Vec<&str> = vec!["train", "--out", dir_arg];
    second.extend_from_slice(SMALL);
    let mut forced = second.clone();
    forced.push("--force");
    for attempt in [
        second,
        forced,
        vec!["train", "--resume", dir_arg, "--no-progress"],
    ] {
        let out = noprop(&attempt);
        assert_eq!(out.status.code(), Some(1), "{attempt:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("in use") && stderr.contains(&pid) && stderr.contains(dir_arg),
            "{attempt:?}: {stderr}"
        );
    }
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The first run is intact: its 20 epochs, in order, its own config.
    let epochs: Vec<u64> = metrics(&dir)
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=20).collect::<Vec<u64>>());
    assert!(std::fs::read_to_string(dir.join("config.toml"))
        .unwrap()
        .contains("epochs = 20"));
    // A dead writer's temporary file goes when the directory is next locked.
    let stale = dir.join(".last.safetensors.tmp-4194304");
    std::fs::write(&stale, b"partial").unwrap();
    assert_ok(&noprop(&["train", "--resume", dir_arg, "--no-progress"]));
    assert!(!stale.exists());
}

#[test]
fn export_refuses_its_own_input_and_links() {
    let reference = reference_run();
    let dir = scratch("export-self");
    let copy = dir.join("last.safetensors");
    std::fs::copy(reference.join("last.safetensors"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let c = copy.to_str().unwrap();
    assert_fails_with(
        &["export", "--checkpoint", c, "--out", c],
        "is the checkpoint being exported",
    );
    // The same file under another spelling.
    let dotted = dir.join(".").join("last.safetensors");
    assert_fails_with(
        &[
            "export",
            "--checkpoint",
            c,
            "--out",
            dotted.to_str().unwrap(),
        ],
        "is the checkpoint being exported",
    );
    #[cfg(unix)]
    {
        let link = dir.join("link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("elsewhere.safetensors"), &link).unwrap();
        assert_fails_with(
            &["export", "--checkpoint", c, "--out", link.to_str().unwrap()],
            "symbolic link",
        );
    }
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the input is untouched"
    );
}

/// A start that fails before training (here: a dataset directory without
/// the files) leaves nothing behind: the same command works once the data
/// is fixed, without `--force`; a directory holding only a configuration
/// (left by an older binary) is started afresh too, and `--resume` on it
/// says how to start it.
#[test]
fn a_failed_start_costs_nothing() {
    let root = scratch("failed-start");
    let empty = root.join("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let run = root.join("run");
    let out = noprop(&[
        "train",
        "--variant",
        "fm",
        "--dataset",
        "kmnist",
        "--data-dir",
        empty.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!run.exists(), "the failed start left {}", run.display());
    // The same run directory, now with good data (the embedded MNIST).
    assert_ok(&train(&run, &[]));
    assert!(run.join("last.safetensors").is_file());

    let leftover = root.join("leftover");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("config.toml"), "variant = \"fm\"\n").unwrap();
    assert_fails_with(
        &["train", "--resume", leftover.to_str().unwrap()],
        "start it again with `noprop train --config",
    );
    assert_ok(&train(&leftover, &[]));
    assert!(leftover.join("last.safetensors").is_file());
    // A real run is still protected.
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--out",
            leftover.to_str().unwrap(),
        ],
        "already holds a run",
    );
}

/// Writes MNIST images of digits 0, 1 and 2 as PNGs in the ImageFolder
/// layout `DIR/{train,test}/{zero,one,two}/N.png`: `per_class` training and
/// `per_class / 4` test images of each class, from the embedded MNIST's
/// training and test splits.
fn mnist_folder(dir: &Path, per_class: usize) {
    let raw = noprop_data::mnist::load_default_mnist().unwrap();
    let names = ["zero", "one", "two"];
    for (split, data, wanted) in [
        ("train", &raw.train, per_class),
        ("test", &raw.test, per_class / 4),
    ] {
        let mut written = [0usize; 3];
        for (i, &label) in data.labels.iter().enumerate() {
            let label = usize::from(label);
            if label >= 3 || written[label] == wanted {
                continue;
            }
            let class_dir = dir.join(split).join(names[label]);
            std::fs::create_dir_all(&class_dir).unwrap();
            let pixels = data.pixels[i * 784..(i + 1) * 784].to_vec();
            image::GrayImage::from_raw(28, 28, pixels)
                .unwrap()
                .save(class_dir.join(format!("{i}.png")))
                .unwrap();
            written[label] += 1;
            if written.iter().all(|&n| n == wanted) {
                break;
            }
        }
    }
}

/// A folder of a few hundred real images, end to end: train on it, evaluate,
/// predict by class name; the checkpoint keeps the class names and the
/// normalisation measured on the training images.
#[test]
fn an_image_folder_trains_evaluates_and_predicts_by_class_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits");
    mnist_folder(&data, 80);
    let run = dir.path().join("run");
    let data_arg = data.display().to_string();
    let run_arg = run.display().to_string();
    let out = noprop(&[
        "train",
        "--variant",
        "fm",
        "--dataset",
        "folder",
        "--data-dir",
        &data_arg,
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--set",
        "eval.steps=10",
        "--set",
        "train_accuracy_steps=2",
        "--no-progress",
        "--out",
        &run_arg,
    ]);
    assert_ok(&out);
    let checkpoint = run.join("last.safetensors");
    let meta = Checkpoint::read_meta(&checkpoint).unwrap();
    assert_eq!(meta.dataset, "folder");
    assert_eq!(
        meta.class_names.as_deref(),
        Some(&["one".to_string(), "two".into(), "zero".into()][..])
    );
    assert_eq!(
        (
            meta.spec.in_channels,
            meta.spec.image_size,
            meta.spec.num_classes
        ),
        (1, 28, 3)
    );
    // Measured on the 240 training images (about MNIST's 0.13 / 0.31).
    assert!(
        (0.05..0.3).contains(&meta.normalize_mean[0]),
        "{:?}",
        meta.normalize_mean
    );
    assert!(
        (0.2..0.45).contains(&meta.normalize_std[0]),
        "{:?}",
        meta.normalize_std
    );

    let checkpoint_arg = checkpoint.display().to_string();
    let out = noprop(&[
        "eval",
        "--checkpoint",
        &checkpoint_arg,
        "--steps",
        "10",
        "--json",
    ]);
    assert_ok(&out);
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["images"], 60);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.5,
        "three digit classes after two epochs: {accuracy}"
    );

    let image = std::fs::read_dir(data.join("test/two"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let image_arg = image.display().to_string();
    let out = noprop(&[
        "predict",
        "--checkpoint",
        &checkpoint_arg,
        "--steps",
        "10",
        &image_arg,
    ]);
    assert_ok(&out);
    let printed = text(&out.stdout);
    assert!(
        ["zero (class 2", "one (class 0", "two (class 1"]
            .iter()
            .any(|s| printed.contains(s)),
        "{printed}"
    );
    assert!(
        printed.contains("zero: ") && printed.contains("two: "),
        "{printed}"
    );
    let out = noprop(&[
        "predict",
        "--checkpoint",
        &checkpoint_arg,
        "--steps",
        "10",
        "--json",
        &image_arg,
    ]);
    assert_ok(&out);
    let json: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let name = json["predictions"][0]["class_name"].as_str().unwrap();
    assert!(["zero", "one", "two"].contains(&name), "{json}");
}

#[test]
fn bad_image_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits");
    mnist_folder(&data, 4);
    std::fs::write(data.join("train/one/broken.png"), "not a png").unwrap();
    let data_arg = data.display().to_string();
    let run = dir.path().join("run").display().to_string();
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--dataset",
            "folder",
            "--data-dir",
            &data_arg,
            "--out",
            &run,
        ],
        "broken.png",
    );
    assert!(
        !dir.path().join("run").exists(),
        "a failed start leaves no run directory"
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--dataset",
            "folder",
            "--out",
            &run,
        ],
        "data.dir",
    );
    assert_fails_with(
        &[
            "train",
            "--variant",
            "fm",
            "--set",
            "data.image_size=32",
            "--out",
            &run,
        ],
        "image folders",
    );
}

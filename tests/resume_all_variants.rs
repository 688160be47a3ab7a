//! Cross-crate end-to-end test: every variant (DT, CT, FM, backprop), driven by the
//! trainer's library on a small subset of the real MNIST, resumes bitwise.
//!
//! For each variant (DT twice: blocks stepped in turn and in parallel), a
//! run of 2 epochs and a run of 1 epoch continued from
//! its checkpoint (a model rebuilt from scratch, then restored) must end
//! with bitwise-identical checkpoints: parameters, BatchNorm statistics
//! (DT), the learned schedule (CT), every optimizer moment and step count,
//! and the trainer's generator. The `noprop` binary's own tests
//! (crates/noprop-train/tests/cli.rs) cover the command line.
//!
//! Sizes are reduced so the test stays quick on a 2-core machine: 128
//! training images in batches of 64, DT with T = 2 blocks, CT with an 8-unit
//! schedule network, and 2-step inference for the per-epoch evaluation.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use noprop::checkpoint::Checkpoint;
use noprop::core::ModelSpec;
use noprop::data::{Dataset, DatasetConfig, DatasetKind};
use noprop::train::config::RunConfig;
use noprop::train::model::{build_blank, build_fresh};
use noprop::train::overrides::Override;
use noprop::train::registry::Sections;
use noprop::train::train::{RunData, TrainOutcome, Trainer, LAST_CHECKPOINT};

fn config(v: &str, epochs: usize, extra: &[&str]) -> RunConfig {
    let mut sets = vec![
        format!("variant={v}"),
        format!("epochs={epochs}"),
        "batch_size=64".into(),
        "seed=11".into(),
    ];
    sets.extend(match v {
        "dt" => vec!["dt.num_blocks=2".to_string()],
        "ct" => vec!["ct.schedule.hidden=8".into(), "ct.inference_steps=2".into()],
        "backprop" => vec!["backprop.num_blocks=2".to_string()],
        _ => vec![format!("{v}.inference_steps=2")],
    });
    sets.push("train_accuracy_steps=2".into());
    sets.extend(extra.iter().map(|s| s.to_string()));
    let overrides: Vec<Override> = sets
        .iter()
        .map(|s| Override::parse_set(s).unwrap())
        .collect();
    RunConfig::load(None, &overrides, &Sections).unwrap()
}

fn train((kind, extra): Case, data: &Dataset, dir: &Path, epochs: usize, resume: bool) {
    let config = config(kind, epochs, extra);
    let spec = ModelSpec {
        in_channels: 1,
        image_size: 28,
        num_classes: 10,
    };
    // As `noprop train --resume` does: a resumed model is built blank and
    // gets every value from its checkpoint.
    let mut model = if resume {
        build_blank(&config, spec, None, &Device::Cpu).unwrap()
    } else {
        build_fresh(
            &config,
            spec,
            Some((data.train().images(), data.train().labels())),
            &Device::Cpu,
        )
        .unwrap()
    };
    let checkpoint =
        resume.then(|| Checkpoint::load(&dir.join(LAST_CHECKPOINT), &Device::Cpu).unwrap());
    let (mean, std) = data.normalization();
    let trainer = Trainer {
        config: &config,
        run_dir: dir,
        data: RunData {
            train: data.train(),
            validation: None,
            test: data.test(),
            dataset: DatasetKind::Mnist,
            spec,
            mean: mean.to_vec(),
            std: std.to_vec(),
            class_names: None,
        },
        stop: None,
        progress: false,
        log_every: std::time::Duration::ZERO,
        group: Default::default(),
    };
    let outcome = trainer.run(model.as_mut(), checkpoint.as_ref()).unwrap();
    assert!(
        matches!(outcome, TrainOutcome::Completed { .. }),
        "{outcome:?}"
    );
}

fn tensor_bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
    let checkpoint = Checkpoint::load(path, &Device::Cpu).unwrap();
    checkpoint.bit_patterns().unwrap()
}

/// A variant and extra `--set` overrides.
type Case = (&'static str, &'static [&'static str]);

#[test]
fn every_variant_resumes_bitwise_on_real_mnist() {
    let data_config = DatasetConfig {
        train_limit: Some(128),
        test_limit: Some(32),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let data = Dataset::load(&data_config, &Device::Cpu).unwrap();
    let cases: [Case; 5] = [
        ("dt", &[]),
        ("dt", &["dt.parallel_blocks=true"]),
        ("ct", &[]),
        ("fm", &[]),
        ("backprop", &[]),
    ];
    for case in cases {
        let kind = case.0;
        let straight = tempfile::tempdir().unwrap();
        train(case, &data, straight.path(), 2, false);
        let split = tempfile::tempdir().unwrap();
        train(case, &data, split.path(), 1, false);
        let after_one = tensor_bits(&split.path().join(LAST_CHECKPOINT));
        train(case, &data, split.path(), 2, true);

        let expected = tensor_bits(&straight.path().join(LAST_CHECKPOINT));
        let resumed = tensor_bits(&split.path().join(LAST_CHECKPOINT));
        assert_eq!(
            resumed.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{case:?}"
        );
        for (name, bits) in &expected {
            assert_eq!(
                &resumed[name], bits,
                "{case:?}: tensor {name} differs after resuming"
            );
        }
        // The second epoch changed the weights, so the comparison is not vacuous.
        assert!(
            expected
                .iter()
                .any(|(name, bits)| !name.starts_with("trainer.") && after_one[name] != *bits),
            "{case:?}"
        );
        let names: Vec<&String> = expected.keys().collect();
        assert!(
            names.iter().any(|n| n.starts_with("optim.")),
            "{case:?}: no optimizer state saved"
        );
        match kind {
            "dt" | "backprop" => assert!(
                names.iter().any(|n| n.ends_with("running_mean")),
                "BatchNorm statistics"
            ),
            "ct" => assert!(
                names.iter().any(|n| n.starts_with("schedule.")),
                "CT schedule"
            ),
            _ => {}
        }
    }
}

//! The presets in `configs/` resolve, and the paper presets are the paper's
//! settings: each variant crate's `Default` is the paper's recipe, so a
//! paper preset's section must resolve to exactly the defaults.

use std::path::{Path, PathBuf};

use noprop_train::config::RunConfig;
use noprop_train::overrides::Override;
use noprop_train::registry::{self, Sections};

fn preset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name)
}

#[test]
fn every_variant_has_paper_and_default_presets() {
    for entry in registry::VARIANTS {
        let name = entry.name();
        let file = format!("paper-mnist-{name}.toml");
        let config = RunConfig::load(Some(&preset(&file)), &[], &Sections).unwrap();
        assert_eq!(config.variant, name, "{file}");
        assert_eq!(config.batch_size, 128, "{file}");
        assert_eq!(config.seed, 0, "{file}");
        assert_eq!(config.data.dataset, "mnist");
        let defaults = entry.resolve(None).unwrap();
        assert_eq!(config.variant_section().unwrap(), &defaults, "{file}");

        let file = format!("default/{name}.toml");
        let config = RunConfig::load(Some(&preset(&file)), &[], &Sections).unwrap();
        assert_eq!(config.variant, name, "{file}");
    }
}

#[test]
fn the_quick_preset_works_with_any_variant() {
    for name in registry::names() {
        let overrides = [Override::flag("--variant", &["variant"], name)];
        let config = RunConfig::load(Some(&preset("quick.toml")), &overrides, &Sections).unwrap();
        assert_eq!(config.variant, name);
        assert_eq!(
            (
                config.epochs,
                config.data.train_limit,
                config.data.test_limit
            ),
            (2, Some(4000), Some(1000))
        );
        assert_eq!(config.eval.steps, Some(100));
    }
}

/// `cargo xtask reproduce`'s presets: one per variant, the paper's recipe
/// (the variant crate's defaults) but for the epochs and the keys listed
/// here, each a documented departure.
#[test]
fn every_variant_has_a_reproduction_preset_with_the_papers_recipe() {
    // (variant, key, value): what a reproduction preset may set apart from
    // the defaults.
    let departures: &[(&str, &str, toml::Value)] = &[
        // The blocks of a minibatch on the CPU's threads: the same updates.
        ("dt", "parallel_blocks", toml::Value::Boolean(true)),
    ];
    for entry in registry::VARIANTS {
        let name = entry.name();
        let file = format!("reproduce/{name}.toml");
        let config = RunConfig::load(Some(&preset(&file)), &[], &Sections).unwrap();
        assert_eq!(config.variant, name, "{file}");
        assert_eq!(config.batch_size, 128, "{file}");
        assert_eq!(config.data.dataset, "mnist", "{file}");
        assert!(
            (1..=20).contains(&config.epochs),
            "{file}: {} epochs",
            config.epochs
        );
        let mut expected = entry.resolve(None).unwrap();
        for (variant, key, value) in departures {
            if *variant == name {
                expected.insert(key.to_string(), value.clone());
            }
        }
        assert_eq!(config.variant_section().unwrap(), &expected, "{file}");
    }
}

/// `noprop info --config configs/NAME --json` (plus `extra`): the
/// parameters per group (`block.1`, ..., `block`, `head`, `schedule`).
fn parameter_groups(name: &str, extra: &[&str]) -> std::collections::BTreeMap<String, u64> {
    // paper-<dataset>-<variant>.toml
    let variant = name.trim_end_matches(".toml").rsplit('-').next().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_noprop"))
        .args(["info", "--variant", variant, "--json"])
        .args(["--config", preset(name).to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["parameters"]["groups"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["parameters"].as_u64().unwrap()))
        .collect()
}

#[test]
fn the_cifar_presets_build_the_papers_parameter_counts() {
    // Per block, from the paper's v2 Table 5 (valid 3x3 convolutions).
    let cases: &[(&str, &[&str], &str, u64)] = &[
        ("paper-cifar10-dt.toml", &[], "block.1", 1_215_434),
        ("paper-cifar100-dt.toml", &[], "block.1", 1_250_084),
        (
            "paper-cifar10-dt.toml",
            &["--set", "dt.embedding=prototype"],
            "block.1",
            1_992_714,
        ),
        ("paper-cifar10-ct.toml", &[], "block", 1_163_210),
        ("paper-cifar100-ct.toml", &[], "block", 1_197_860),
        // FM's block is CT's (no schedule, no head).
        ("paper-cifar10-fm.toml", &[], "block", 1_163_210),
        // The baseline chains DT's blocks.
        ("paper-cifar10-backprop.toml", &[], "block.1", 1_215_434),
    ];
    for (name, extra, group, count) in cases {
        let groups = parameter_groups(name, extra);
        assert_eq!(
            groups.get(*group),
            Some(count),
            "{name} {extra:?}: {groups:?}"
        );
    }
    // Every block of a DT model alike: T = 10 of them.
    let dt = parameter_groups("paper-cifar10-dt.toml", &[]);
    let blocks: Vec<u64> = (1..=10).map(|t| dt[&format!("block.{t}")]).collect();
    assert_eq!(blocks, vec![1_215_434; 10]);
    // The presets are the paper's recipe apart from the dataset and epochs.
    for entry in registry::VARIANTS {
        let name = entry.name();
        for dataset in ["cifar10", "cifar100"] {
            let file = format!("paper-{dataset}-{name}.toml");
            let config = RunConfig::load(Some(&preset(&file)), &[], &Sections).unwrap();
            assert_eq!(config.data.dataset, dataset, "{file}");
            assert_eq!(config.batch_size, 128, "{file}");
            let defaults = entry.resolve(None).unwrap();
            assert_eq!(config.variant_section().unwrap(), &defaults, "{file}");
        }
    }
}

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

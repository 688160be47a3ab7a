//! The presets in `configs/` resolve, and the paper presets are the paper's
//! settings: each variant crate's `Default` is the paper's recipe (per the
//! spec), so a paper preset's section must resolve to exactly the defaults.

use std::path::{Path, PathBuf};

use noprop_core::VariantKind;
use noprop_train::config::RunConfig;
use noprop_train::overrides::Override;
use noprop_train::variants::resolve_section;

fn preset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name)
}

#[test]
fn paper_presets_are_the_variants_paper_defaults() {
    for (file, kind) in [
        ("paper-mnist-dt.toml", VariantKind::Dt),
        ("paper-mnist-ct.toml", VariantKind::Ct),
        ("paper-mnist-fm.toml", VariantKind::Fm),
    ] {
        let config = RunConfig::load(Some(&preset(file)), &[], &resolve_section).unwrap();
        assert_eq!(config.variant, kind, "{file}");
        assert_eq!(
            (config.epochs, config.batch_size, config.seed),
            (100, 128, 0),
            "{file}"
        );
        assert_eq!(config.data.dataset, "mnist");
        let defaults = resolve_section(kind, None).unwrap();
        assert_eq!(config.variant_section().unwrap(), &defaults, "{file}");
    }
}

#[test]
fn the_quick_preset_works_with_any_variant() {
    for kind in ["dt", "ct", "fm"] {
        let overrides = [Override::flag("--variant", &["variant"], kind)];
        let config =
            RunConfig::load(Some(&preset("quick.toml")), &overrides, &resolve_section).unwrap();
        assert_eq!(config.variant.as_str(), kind);
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

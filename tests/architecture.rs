//! The invariants of ARCHITECTURE.md that a machine can check, read from
//! `cargo metadata` (the layering) and from the source tree (the variant
//! registry is the one place that names the variant crates), in the manner
//! of rust-analyzer's tidy tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Our packages and their normal (non-dev, non-build) dependencies on
/// other packages of the workspace.
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let ours: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|name| ours.contains(name))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// The variant crates: every `crates/noprop-*` whose library implements
/// `BuildVariant` (found in its source, so a new variant is covered too).
fn variant_crates() -> BTreeSet<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|dir| {
            rust_files(&dir.join("src")).iter().any(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .contains("impl BuildVariant for")
            })
        })
        .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_crates_are_layered_as_architecture_md_says() {
    let deps = workspace_dependencies();
    let variants = variant_crates();
    assert!(variants.len() >= 3, "variant crates found: {variants:?}");
    let none: BTreeSet<String> = BTreeSet::new();
    let of = |name: &str| deps.get(name).unwrap_or(&none);
    // noprop-core and noprop-kernels depend on none of ours; noprop-data on
    // nothing of models or training.
    assert!(of("noprop-core").is_empty(), "{:?}", of("noprop-core"));
    assert!(
        of("noprop-kernels").is_empty(),
        "{:?}",
        of("noprop-kernels")
    );
    assert!(of("noprop-data").is_empty(), "{:?}", of("noprop-data"));
    // The blocks: core and kernels only.
    let allowed: BTreeSet<String> = ["noprop-core", "noprop-kernels"].map(String::from).into();
    assert!(
        of("noprop-block").is_subset(&allowed),
        "{:?}",
        of("noprop-block")
    );
    // The checkpoint format: core only.
    let allowed: BTreeSet<String> = ["noprop-core"].map(String::from).into();
    assert!(
        of("noprop-checkpoint").is_subset(&allowed),
        "{:?}",
        of("noprop-checkpoint")
    );
    // Variants: core, the blocks and the checkpoint format only (never
    // another variant, the data crate or the trainer).
    let allowed: BTreeSet<String> = ["noprop-core", "noprop-block", "noprop-checkpoint"]
        .map(String::from)
        .into();
    for v in &variants {
        assert!(of(v).is_subset(&allowed), "{v} depends on {:?}", of(v));
    }
    // xtask drives the binary: it depends on none of our crates.
    assert!(of("xtask").is_empty(), "{:?}", of("xtask"));
    // The trainer depends on every variant (through its registry).
    for v in &variants {
        assert!(of("noprop-train").contains(v), "noprop-train lacks {v}");
    }
}

#[test]
fn only_the_registry_names_the_variant_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules: Vec<String> = variant_crates()
        .iter()
        .map(|c| c.replace('-', "_"))
        .collect();
    let mut naming = Vec::new();
    for dir in ["crates/noprop-train/src", "xtask/src"] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            if modules.iter().any(|m| text.contains(m.as_str())) {
                naming.push(file.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    assert_eq!(naming, ["crates/noprop-train/src/registry.rs"]);
}

#[test]
fn noprop_core_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/noprop-core/src");
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in ["std::fs", "std::net", "println!", "eprintln!", "File::"] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                file.display()
            );
        }
    }
}

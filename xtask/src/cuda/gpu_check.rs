//! `cargo xtask gpu-check`: builds the release `noprop` binary with
//! `--features cuda` and bundles it for a GPU machine, where
//! scripts/cuda/gpu-check.sh runs it.
//!
//! The GPU machine has the driver and the CUDA 13 libraries but no
//! crates.io, so nothing is built there: the bundle (`target/gpu-check/`:
//! the stripped binary and `bundle.json` describing how it was built)
//! travels with the repository, which already holds the MNIST files in
//! `data/mnist`. The script then locates the CUDA libraries at run time.
//! Here, without a GPU, the script runs in `--libs-only` mode against the
//! toolkit's libraries; with a GPU (nvidia-smi works) it runs in full.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::check::needed_libraries;
use super::{compute_cap, nvcc_threads, validate_compute_cap, Toolkit};
use crate::process::{self, cargo_program, niced, which};
use crate::{in_workspace, workspace_root};

/// What the bundle may weigh: copies to a GPU machine are often capped (64 MiB).
pub const MAX_BUNDLE_BYTES: u64 = 60 << 20;

#[derive(clap::Args, Debug)]
pub struct GpuCheckArgs {
    /// Toolkit directory made by `cargo xtask cuda-toolkit`.
    #[arg(long, default_value = super::DEFAULT_TOOLKIT_DIR)]
    pub toolkit: PathBuf,
    /// Target directory for the CUDA build.
    #[arg(long, default_value = super::CUDA_TARGET_DIR)]
    pub target_dir: PathBuf,
    /// Where the bundle goes.
    #[arg(long, default_value = "target/gpu-check")]
    pub out: PathBuf,
    /// GPU compute capability [default: $CUDA_COMPUTE_CAP, else 90].
    #[arg(long)]
    pub compute_cap: Option<String>,
    /// Bundle the already built binary instead of building it.
    #[arg(long)]
    pub no_build: bool,
}

pub fn run(args: &GpuCheckArgs) -> Result<()> {
    let toolkit = Toolkit::load(&in_workspace(&args.toolkit))?;
    let cap = match &args.compute_cap {
        Some(cap) => {
            validate_compute_cap(cap)?;
            cap.clone()
        }
        None => compute_cap(super::DEFAULT_COMPUTE_CAP)?,
    };
    let target_dir = in_workspace(&args.target_dir);
    if !args.no_build {
        let mut cargo = niced(cargo_program());
        cargo
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "noprop-train",
                "--bin",
                "noprop",
                "--features",
                "cuda",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .envs(toolkit.build_env(&cap, nvcc_threads())?);
        let took =
            process::run(&mut cargo).context("the release `--features cuda` build failed")?;
        eprintln!("xtask: release build took {:.0} s", took.as_secs_f64());
    }
    let built = target_dir.join("release").join("noprop");
    let out = in_workspace(&args.out);
    let bundled = bundle(&built, &out, &toolkit, &cap)?;

    let script = workspace_root().join("scripts/cuda/gpu-check.sh");
    let gpu_here =
        which("nvidia-smi").is_some_and(|smi| process::output(Command::new(smi).arg("-L")).is_ok());
    let mut check = Command::new("bash");
    check.current_dir(workspace_root()).arg(&script);
    if gpu_here {
        check.arg(&out);
        process::run(&mut check)?;
    } else {
        // Self-test of the library search, as on a GPU machine whose
        // libraries live where this toolkit's do.
        let lib_dirs = std::env::join_paths(&toolkit.lib_dirs)?;
        check
            .arg("--libs-only")
            .arg(&out)
            .env("NOPROP_CUDA_LIB_DIRS", lib_dirs)
            .env("OUT", out.join("out"));
        process::run(&mut check)?;
        eprintln!(
            "xtask: no GPU here; bundle ready ({:.1} MiB). On a GPU machine, with {} carried:\n  \
             bash scripts/cuda/gpu-check.sh {}",
            bundled as f64 / f64::from(1 << 20),
            args.out.display(),
            args.out.display()
        );
    }
    Ok(())
}

/// Copies `binary` stripped into `out/noprop` (xz-compressed to
/// `out/noprop.xz` when too big to carry) and writes `out/bundle.json`;
/// returns the size of what is carried.
fn bundle(binary: &Path, out: &Path, toolkit: &Toolkit, cap: &str) -> Result<u64> {
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it first (drop --no-build)",
            binary.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let bundled = out.join("noprop");
    let compressed = out.join("noprop.xz");
    for stale in [&bundled, &compressed] {
        let _ = std::fs::remove_file(stale);
    }
    match which("strip") {
        // Line tables are most of the release binary and useless there.
        Some(strip) => {
            process::output(Command::new(strip).arg("-o").arg(&bundled).arg(binary))?;
        }
        None => {
            std::fs::copy(binary, &bundled)?;
        }
    }
    let needed = needed_libraries(&bundled)?;
    let stripped_size = bundled.metadata()?.len();
    let carried = if stripped_size > MAX_BUNDLE_BYTES {
        xz_compress(&bundled, &compressed)?;
        std::fs::remove_file(&bundled)?;
        compressed.clone()
    } else {
        bundled.clone()
    };
    let size = carried.metadata()?.len();
    if size > MAX_BUNDLE_BYTES {
        bail!(
            "{} is {} MiB, over the {} MiB that can be carried to a GPU machine",
            carried.display(),
            size >> 20,
            MAX_BUNDLE_BYTES >> 20
        );
    }
    let git = |args: &[&str]| {
        process::output(Command::new("git").current_dir(workspace_root()).args(args))
            .map(|text| text.trim().to_owned())
            .unwrap_or_default()
    };
    let description = json!({
        "binary": carried.file_name().map(|name| name.to_string_lossy()),
        "features": ["cuda"],
        "profile": "release",
        "compute_cap": cap,
        "cuda_version": toolkit.cuda_version,
        "toolkit_packages": toolkit.packages,
        "needed": needed,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
        "stripped_bytes": stripped_size,
        "carried_bytes": size,
    });
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_string_pretty(&description)? + "\n",
    )?;
    Ok(size)
}

/// `xz -6` of `input` into `output`, with python3's lzma where xz is missing.
fn xz_compress(input: &Path, output: &Path) -> Result<()> {
    let mut compress = match which("xz") {
        Some(xz) => {
            let mut xz = Command::new(xz);
            xz.args(["-6", "-T0", "-c"]).arg(input);
            xz
        }
        None => {
            let python =
                which("python3").context("neither xz nor python3 found to compress the binary")?;
            let mut python = Command::new(python);
            python
                .args(["-c", "import lzma, shutil, sys\nwith open(sys.argv[1], 'rb') as src, lzma.open(sys.stdout.buffer, 'wb', preset=6) as dst: shutil.copyfileobj(src, dst)"])
                .arg(input);
            python
        }
    };
    process::run_to_file(&mut compress, output)
        .with_context(|| format!("compressing {}", input.display()))
}

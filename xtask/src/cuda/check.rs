//! `cargo xtask check-cuda`: builds the whole workspace with `--features
//! cuda` against the toolkit from `cargo xtask cuda-toolkit`, then checks
//! that the `noprop` binary links the CUDA libraries and that the dynamic
//! loader resolves every one of them from the toolkit.
//!
//! A full `cargo build` (not `cargo check`): `cargo check` still runs
//! candle-kernels' nvcc build script, so it saves only codegen and linking,
//! and linking is what breaks when a library or driver symbol goes missing.
//! The target dir is `target/cuda`, so the CPU build everyone uses in
//! `target/` is never invalidated; the build runs under `nice -n 19`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{compute_cap, nvcc_threads, prepend_path, validate_compute_cap, Toolkit};
use crate::process::{self, cargo_program, niced, which};
use crate::{in_workspace, workspace_root};

/// The profile of the CI build: compiled and linked like `dev`, but without
/// optimisation or debug info for anyone (the manifest's dev profile
/// optimises dependencies at opt-level 3): the binary only has to link and
/// start, and candle compiles several times faster. Defined on the command
/// line, so the workspace manifest stays as it is, and kept in its own
/// directory (`target/cuda/cuda-check`), apart from manual `dev` builds.
pub const CHECK_PROFILE: &str = "cuda-check";
const CHECK_PROFILE_CONFIG: &[&str] = &[
    "profile.cuda-check.inherits=\"dev\"",
    "profile.cuda-check.opt-level=0",
    "profile.cuda-check.debug=0",
    "profile.cuda-check.package.\"*\".opt-level=0",
];

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Toolkit directory made by `cargo xtask cuda-toolkit`.
    #[arg(long, default_value = super::DEFAULT_TOOLKIT_DIR)]
    pub toolkit: PathBuf,
    /// Target directory for the CUDA build (kept apart from `target/`).
    #[arg(long, default_value = super::CUDA_TARGET_DIR)]
    pub target_dir: PathBuf,
    /// GPU compute capability to compile kernels for [default:
    /// $CUDA_COMPUTE_CAP, else 90 (Hopper)].
    #[arg(long)]
    pub compute_cap: Option<String>,
    /// Build with `--features cudnn` (toolkit made with `--cudnn`).
    #[arg(long)]
    pub cudnn: bool,
    /// Also build tests, examples and benches (`--all-targets`).
    #[arg(long)]
    pub all_targets: bool,
    /// Build the release profile [default: the `cuda-check` profile].
    #[arg(long)]
    pub release: bool,
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let toolkit = Toolkit::load(&in_workspace(&args.toolkit))?;
    if args.cudnn && toolkit.cudnn_home.is_none() {
        bail!("--cudnn: the toolkit has no cuDNN; run `cargo xtask cuda-toolkit --cudnn` first");
    }
    let cap = match &args.compute_cap {
        Some(cap) => {
            validate_compute_cap(cap)?;
            cap.clone()
        }
        None => compute_cap(super::DEFAULT_COMPUTE_CAP)?,
    };
    let target_dir = in_workspace(&args.target_dir);
    let feature = if args.cudnn { "cudnn" } else { "cuda" };
    let profile = if args.release {
        "release"
    } else {
        CHECK_PROFILE
    };

    let mut cargo = niced(cargo_program());
    cargo
        .current_dir(workspace_root())
        .args(["build", "--workspace", "--features", feature])
        .arg("--target-dir")
        .arg(&target_dir)
        .envs(toolkit.build_env(&cap, nvcc_threads())?);
    if args.all_targets {
        cargo.arg("--all-targets");
    }
    if args.release {
        cargo.arg("--release");
    } else {
        for setting in CHECK_PROFILE_CONFIG {
            cargo.arg("--config").arg(setting);
        }
        cargo.args(["--profile", CHECK_PROFILE]);
    }
    let start = Instant::now();
    process::run(&mut cargo).with_context(|| format!("the `--features {feature}` build failed"))?;
    let build_secs = start.elapsed().as_secs_f64();

    let binary = target_dir.join(profile).join("noprop");
    verify_binary_loads(&binary, &toolkit)?;
    eprintln!(
        "xtask: check-cuda passed: `--features {feature}` ({profile}, sm_{cap}) built in {build_secs:.0} s; \
         {} links the CUDA libraries and they resolve",
        binary.display()
    );
    Ok(())
}

/// The `NEEDED` entries of an ELF file, via `readelf -d`.
pub fn needed_libraries(binary: &Path) -> Result<Vec<String>> {
    let readelf = which("readelf").context("readelf (binutils) not found on PATH")?;
    let dynamic = process::output(Command::new(readelf).arg("-dW").arg(binary))?;
    Ok(parse_needed(&dynamic))
}

/// Library names from `readelf -d` lines such as
/// `0x0000000000000001 (NEEDED)  Shared library: [libcuda.so.1]`.
pub fn parse_needed(readelf_dynamic: &str) -> Vec<String> {
    readelf_dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect()
}

/// Checks that `binary` needs libcuda and the CUDA libraries (so the
/// feature really reached it), that `ldd` resolves them all with the
/// toolkit's run-time directories plus the stub standing in for the driver,
/// and that it then starts (`--help`).
fn verify_binary_loads(binary: &Path, toolkit: &Toolkit) -> Result<()> {
    if !binary.is_file() {
        bail!("{} was not built", binary.display());
    }
    let needed = needed_libraries(binary)?;
    // libnvrtc and libcublasLt are on the link line too, but `--as-needed`
    // drops them while nothing in the binary calls them.
    for wanted in ["libcuda.so", "libcublas.so", "libcudart.so", "libcurand.so"] {
        if !needed.iter().any(|lib| lib.starts_with(wanted)) {
            bail!(
                "{} does not link {wanted}* (NEEDED: {}): did `--features cuda` reach candle?",
                binary.display(),
                needed.join(", ")
            );
        }
    }
    let ldd = which("ldd").context("ldd not found on PATH")?;
    let mut dirs = toolkit.lib_dirs.clone();
    dirs.extend(toolkit.stub_dir.clone());
    let library_path = prepend_path(&dirs, std::env::var_os("LD_LIBRARY_PATH"))?;
    let report = process::output(
        Command::new(ldd)
            .arg(binary)
            .env("LD_LIBRARY_PATH", &library_path),
    )?;
    let unresolved: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("not found"))
        .map(str::trim)
        .collect();
    if !unresolved.is_empty() {
        bail!(
            "{} has unresolved libraries: {}",
            binary.display(),
            unresolved.join("; ")
        );
    }
    // The loader really maps them all and static initialisers run: the
    // binary starts (printing its help needs no GPU).
    process::output(
        Command::new(binary)
            .arg("--help")
            .env("LD_LIBRARY_PATH", &library_path),
    )
    .context("the CUDA binary does not start with the toolkit's libraries")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_entries_are_read_from_readelf_output() {
        // Shape of `readelf -dW` output (binutils 2.40), abridged.
        let dynamic = "Dynamic section at offset 0x2d8 contains 30 entries:\n\
            \x20 Tag        Type                         Name/Value\n\
            \x200x0000000000000001 (NEEDED)             Shared library: [libcuda.so.1]\n\
            \x200x0000000000000001 (NEEDED)             Shared library: [libcublas.so.13]\n\
            \x200x000000000000000e (SONAME)             Library soname: [libx.so.1]\n";
        assert_eq!(parse_needed(dynamic), ["libcuda.so.1", "libcublas.so.13"]);
    }

    #[test]
    fn needed_libraries_of_a_real_binary_include_libc() {
        // /bin/sh is dynamically linked against libc on every glibc system.
        if which("readelf").is_none() {
            return;
        }
        let sh = which("sh").unwrap().canonicalize().unwrap();
        let needed = needed_libraries(&sh).unwrap();
        assert!(
            needed.iter().any(|lib| lib.starts_with("libc.so")),
            "{needed:?}"
        );
    }
}

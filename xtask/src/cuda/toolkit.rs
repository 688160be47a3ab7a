//! `cargo xtask cuda-toolkit`: a CUDA toolkit for `--features cuda` builds
//! on a machine with no GPU, no root and no system CUDA.
//!
//! With `nvcc` on PATH (or `$CUDA_HOME/bin/nvcc`) the system toolkit is
//! used. Otherwise PyPI's CUDA 13.0 component wheels are installed with ONE
//! `pip install --target DIR/wheels` call (they all unpack into
//! `nvidia/cu13/`, and a second `--target` call would not merge into it);
//! that directory becomes `CUDA_HOME` once it has the unversioned
//! `lib*.so` links the linker looks for and `lib64 -> lib` (nvcc.profile
//! searches `lib64`). CUDA 13.0 exactly: the target machines run driver 580,
//! which rejects PTX from a newer nvcc.
//!
//! No wheel ships `libcuda` (it comes with the driver), yet candle's cudarc
//! links `-lcuda`; a stub `libcuda.so.1` built from scripts/cuda/
//! libcuda_stub.c satisfies the link and the driver's library replaces it
//! at run time.
//!
//! Idempotent: `DIR/toolkit.json` is written last and records the pins, so
//! a rerun with the same pins only refreshes links, stub and `env.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{nvcc_threads, validate_compute_cap, Toolkit, ToolkitSource};
use crate::process::{self, which};
use crate::{in_workspace, workspace_root};

/// The CUDA 13.0 component wheels that build and link candle 0.11.1
/// (nvcc + cicc + crt headers + runtime + cccl, and the libraries cudarc
/// links: nvrtc, cublas/cublasLt, curand). About 650 MB.
pub const CUDA_WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
];
/// cuDNN for CUDA 13, matching cudarc's `cudnn-09021` (~510 MB more).
pub const CUDNN_WHEEL: &str = "nvidia-cudnn-cu13==9.21.1.3";

/// Libraries a `--features cuda` link needs besides libcuda (cudarc:
/// nvrtc, curand, cublas, cublasLt; candle-kernels: cudart).
pub const LINKED_LIBRARIES: &[&str] = &["cudart", "cublas", "cublasLt", "curand", "nvrtc"];

/// The stub's source, relative to the workspace root.
pub const STUB_SOURCE: &str = "scripts/cuda/libcuda_stub.c";

#[derive(clap::Args, Debug)]
pub struct ToolkitArgs {
    /// Directory for the toolkit, relative to the workspace root.
    #[arg(long, default_value = super::DEFAULT_TOOLKIT_DIR)]
    pub dir: PathBuf,
    /// Also install cuDNN (needed by `--features cudnn`).
    #[arg(long)]
    pub cudnn: bool,
    /// Install the pip wheels even when a system nvcc is on PATH.
    #[arg(long)]
    pub pip: bool,
    /// Default `CUDA_COMPUTE_CAP` written to env.sh (90: Hopper).
    #[arg(long, default_value = super::DEFAULT_COMPUTE_CAP)]
    pub compute_cap: String,
}

pub fn run(args: &ToolkitArgs) -> Result<()> {
    validate_compute_cap(&args.compute_cap)?;
    let dir = in_workspace(&args.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;

    let system_nvcc = if args.pip {
        None
    } else {
        find_system_nvcc(&dir)
    };
    let toolkit = match system_nvcc {
        Some(nvcc) => use_system_toolkit(&dir, &nvcc, args.cudnn)?,
        None => install_pip_toolkit(&dir, args.cudnn)?,
    };
    verify_linked_libraries(&toolkit)?;
    let env_file = dir.join("env.sh");
    std::fs::write(
        &env_file,
        toolkit.env_script(&args.compute_cap, nvcc_threads()),
    )
    .with_context(|| format!("writing {}", env_file.display()))?;
    toolkit.save(&dir)?;
    eprintln!(
        "xtask: CUDA {} toolkit ({}) ready: CUDA_HOME={}\nxtask: environment for manual builds: . {}",
        toolkit.cuda_version,
        match toolkit.source {
            ToolkitSource::Pip => "pip wheels",
            ToolkitSource::System => "system",
        },
        toolkit.cuda_home.display(),
        env_file.display()
    );
    Ok(())
}

/// The pip requirements for a toolkit with or without cuDNN.
pub fn requirements(cudnn: bool) -> Vec<String> {
    let mut packages: Vec<String> = CUDA_WHEELS.iter().map(|p| p.to_string()).collect();
    if cudnn {
        packages.push(CUDNN_WHEEL.to_owned());
    }
    packages
}

/// A system `nvcc`: on PATH, else `$CUDA_HOME/bin/nvcc`. One inside `dir`
/// (our own toolkit, after sourcing env.sh) does not count.
fn find_system_nvcc(dir: &Path) -> Option<PathBuf> {
    let from_home =
        std::env::var_os("CUDA_HOME").map(|home| PathBuf::from(home).join("bin").join("nvcc"));
    which("nvcc")
        .into_iter()
        .chain(from_home.filter(|nvcc| nvcc.is_file()))
        .filter_map(|nvcc| nvcc.canonicalize().ok())
        .find(|nvcc| !nvcc.starts_with(dir))
}

fn use_system_toolkit(dir: &Path, nvcc: &Path, cudnn: bool) -> Result<Toolkit> {
    let cuda_home = nvcc
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not inside a CUDA_HOME/bin", nvcc.display()))?
        .to_path_buf();
    let cuda_version = nvcc_release(nvcc)?;
    eprintln!(
        "xtask: using the system CUDA {cuda_version} at {}",
        cuda_home.display()
    );
    if cuda_version != "13.0" {
        eprintln!(
            "xtask: warning: CUDA {cuda_version}, not 13.0: driver 580 (the target machines) rejects PTX \
             from a newer nvcc; `--pip` installs 13.0"
        );
    }
    let lib_dirs: Vec<PathBuf> = ["lib64", "lib", "targets/x86_64-linux/lib"]
        .iter()
        .map(|sub| cuda_home.join(sub))
        .filter(|lib| has_library(lib, "cudart"))
        .take(1)
        .collect();
    if lib_dirs.is_empty() {
        bail!(
            "no libcudart.so under {}/lib64 or lib: incomplete toolkit?",
            cuda_home.display()
        );
    }
    // cudarc searches CUDA_HOME's lib{,64}/stubs and the linker the system
    // directories, where a driver install puts libcuda.so.
    let stub_searched = ["lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib/stubs"]
        .iter()
        .map(|sub| cuda_home.join(sub))
        .chain(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map(PathBuf::from))
        .any(|lib| lib.join("libcuda.so").exists());
    let stub_dir = if stub_searched {
        None
    } else {
        let stubs = dir.join("stubs");
        build_stub(&stubs)?;
        Some(stubs)
    };
    let cudnn_home = if cudnn {
        if !lib_dirs.iter().any(|lib| has_library(lib, "cudnn")) {
            bail!(
                "--cudnn: no libcudnn.so in {}; install cuDNN there or use `--pip --cudnn`",
                lib_dirs[0].display()
            );
        }
        Some(cuda_home.clone())
    } else {
        None
    };
    Ok(Toolkit {
        source: ToolkitSource::System,
        cuda_home,
        lib_dirs,
        stub_dir,
        cuda_version,
        packages: Vec::new(),
        cudnn_home,
    })
}

fn install_pip_toolkit(dir: &Path, cudnn: bool) -> Result<Toolkit> {
    let packages = requirements(cudnn);
    let wheels = dir.join("wheels");
    let cuda_home = wheels.join("nvidia").join("cu13");
    let up_to_date = Toolkit::load(dir).is_ok_and(|old| {
        old.source == ToolkitSource::Pip && old.packages == packages && old.cuda_home == cuda_home
    });
    if up_to_date {
        eprintln!(
            "xtask: pip wheels already installed in {}",
            wheels.display()
        );
    } else {
        // Pins changed or an earlier install was interrupted: start over,
        // since pip --target does not merge into an existing tree.
        let _ = std::fs::remove_file(dir.join(super::TOOLKIT_FILE));
        if wheels.exists() {
            std::fs::remove_dir_all(&wheels)
                .with_context(|| format!("removing {}", wheels.display()))?;
        }
        let python = which("python3")
            .context("python3 not found on PATH: the CUDA wheels are installed with pip")?;
        let mut pip = Command::new(python);
        pip.args(["-m", "pip", "install", "--no-deps", "--only-binary=:all:"])
            .args([
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--progress-bar",
                "off",
            ])
            .arg("--target")
            .arg(&wheels)
            .args(&packages);
        let took = process::run(&mut pip)
            .context("installing the CUDA wheels (network needed, ~650 MB)")?;
        eprintln!(
            "xtask: pip download and install took {:.0} s",
            took.as_secs_f64()
        );
    }
    let nvcc = cuda_home.join("bin").join("nvcc");
    if !nvcc.is_file() {
        bail!(
            "{} missing after installing {}: wheel layout changed?",
            nvcc.display(),
            packages.join(" ")
        );
    }
    let lib = cuda_home.join("lib");
    add_unversioned_links(&lib)?;
    symlink_if_missing(Path::new("lib"), &cuda_home.join("lib64"))?;
    let stub_dir = lib.join("stubs");
    build_stub(&stub_dir)?;
    let mut lib_dirs = vec![lib];
    let cudnn_home = if cudnn {
        let home = wheels.join("nvidia").join("cudnn");
        let cudnn_lib = home.join("lib");
        add_unversioned_links(&cudnn_lib)?;
        if !has_library(&cudnn_lib, "cudnn") {
            bail!(
                "{} has no libcudnn.so after installing {CUDNN_WHEEL}",
                cudnn_lib.display()
            );
        }
        lib_dirs.push(cudnn_lib);
        Some(home)
    } else {
        None
    };
    Ok(Toolkit {
        source: ToolkitSource::Pip,
        cuda_version: nvcc_release(&nvcc)?,
        cuda_home,
        lib_dirs,
        stub_dir: Some(stub_dir),
        packages,
        cudnn_home,
    })
}

/// `"13.0"` from nvcc's "Cuda compilation tools, release 13.0, V13.0.88".
fn nvcc_release(nvcc: &Path) -> Result<String> {
    let text = process::output(Command::new(nvcc).arg("--version"))?;
    parse_nvcc_release(&text)
        .with_context(|| format!("no `release X.Y` in `{} --version`", nvcc.display()))
}

pub fn parse_nvcc_release(version_text: &str) -> Option<String> {
    let after = version_text.split(", release ").nth(1)?;
    let release = after.split(',').next()?.trim();
    release
        .split('.')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        .then(|| release.to_owned())
}

/// `libNAME.so` present (file or link) in `dir`.
fn has_library(dir: &Path, name: &str) -> bool {
    dir.join(format!("lib{name}.so")).exists()
}

/// The unversioned link name for a versioned library file name:
/// `libcublas.so.13 -> libcublas.so`; `None` for anything else.
pub fn unversioned_name(file_name: &str) -> Option<String> {
    let (stem, version) = file_name.split_once(".so.")?;
    let is_version = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    (stem.starts_with("lib") && is_version).then(|| format!("{stem}.so"))
}

/// Adds `libX.so -> libX.so.N` for each versioned library in `dir` that has
/// no unversioned name yet (the linker's `-lX` only looks for `libX.so`).
pub fn add_unversioned_links(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    // Shortest first, so libX.so.13 wins over libX.so.13.0.2: the soname.
    names.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    for name in names {
        if let Some(link) = unversioned_name(&name) {
            symlink_if_missing(Path::new(&name), &dir.join(link))?;
        }
    }
    Ok(())
}

fn symlink_if_missing(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

/// Builds `stub_dir/libcuda.so.1` (soname libcuda.so.1, the driver's) and
/// `libcuda.so -> libcuda.so.1`, unless already newer than its source.
pub fn build_stub(stub_dir: &Path) -> Result<()> {
    let source = workspace_root().join(STUB_SOURCE);
    let library = stub_dir.join("libcuda.so.1");
    let modified = |path: &Path| path.metadata().and_then(|meta| meta.modified()).ok();
    let fresh =
        matches!((modified(&library), modified(&source)), (Some(built), Some(src)) if built >= src);
    if !fresh {
        std::fs::create_dir_all(stub_dir)
            .with_context(|| format!("creating {}", stub_dir.display()))?;
        let compiler = ["cc", "gcc", "clang"]
            .iter()
            .find_map(|name| which(name))
            .context("no C compiler (cc, gcc or clang) on PATH to build the libcuda link stub")?;
        let partial = stub_dir.join("libcuda.so.1.partial");
        process::output(
            Command::new(compiler)
                .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
                .arg(&partial)
                .arg(&source),
        )
        .context("building the libcuda link stub")?;
        std::fs::rename(&partial, &library)?;
    }
    symlink_if_missing(Path::new("libcuda.so.1"), &stub_dir.join("libcuda.so"))
}

/// Errors naming any library the link will ask for but cannot find.
fn verify_linked_libraries(toolkit: &Toolkit) -> Result<()> {
    let missing: Vec<&str> = LINKED_LIBRARIES
        .iter()
        .copied()
        .filter(|name| !toolkit.lib_dirs.iter().any(|dir| has_library(dir, name)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the toolkit at {} lacks lib{{{}}}.so, which a `--features cuda` link needs",
            toolkit.cuda_home.display(),
            missing.join(",")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unversioned_names_follow_the_soname() {
        assert_eq!(
            unversioned_name("libcublas.so.13").as_deref(),
            Some("libcublas.so")
        );
        assert_eq!(
            unversioned_name("libnvrtc-builtins.so.13.0").as_deref(),
            Some("libnvrtc-builtins.so")
        );
        assert_eq!(
            unversioned_name("libnvrtc.alt.so.13").as_deref(),
            Some("libnvrtc.alt.so")
        );
        for not_versioned in [
            "libcublas.so",
            "libcudart_static.a",
            "cmake",
            "libfoo.so.x",
            "foo.so.1",
        ] {
            assert_eq!(unversioned_name(not_versioned), None, "{not_versioned}");
        }
    }

    #[test]
    fn links_are_added_once_and_point_at_the_soname() {
        let dir = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["libfoo.so.1.2.3", "libfoo.so.1", "libbar.so.10", "libbaz.a"] {
            std::fs::write(dir.join(file), b"").unwrap();
        }
        add_unversioned_links(&dir).unwrap();
        add_unversioned_links(&dir).unwrap(); // idempotent
        assert_eq!(
            std::fs::read_link(dir.join("libfoo.so")).unwrap(),
            PathBuf::from("libfoo.so.1")
        );
        assert_eq!(
            std::fs::read_link(dir.join("libbar.so")).unwrap(),
            PathBuf::from("libbar.so.10")
        );
        assert!(!dir.join("libbaz.so").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nvcc_release_is_parsed_from_the_version_banner() {
        // The banner of the nvidia-cuda-nvcc 13.0.88 wheel, verbatim.
        let banner = "nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2025 NVIDIA Corporation\n\
                      Built on Wed_Aug_20_01:58:59_PM_PDT_2025\n\
                      Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0\n";
        assert_eq!(parse_nvcc_release(banner).as_deref(), Some("13.0"));
        assert_eq!(parse_nvcc_release("nvcc: unknown"), None);
    }

    #[test]
    fn cudnn_is_installed_in_the_same_pip_call() {
        let with = requirements(true);
        assert_eq!(with.len(), CUDA_WHEELS.len() + 1);
        assert!(with.iter().any(|p| p.starts_with("nvidia-cudnn-cu13==")));
        // Exact pins only, and nvcc at 13.0: driver 580 rejects newer PTX.
        assert!(requirements(false).iter().all(|p| p.contains("==")));
        assert!(CUDA_WHEELS
            .iter()
            .any(|p| p.starts_with("nvidia-cuda-nvcc==13.0.")));
    }

    #[test]
    fn stub_exports_the_driver_api_and_fails_every_call() {
        // Builds the real stub and checks its soname and a driver symbol
        // cudarc always links (cuInit), using binutils where present.
        let Some(readelf) = which("readelf") else {
            return;
        };
        if ["cc", "gcc", "clang"].iter().all(|c| which(c).is_none()) {
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-stub-{}", std::process::id()));
        build_stub(&dir).unwrap();
        let dynamic = process::output(
            Command::new(&readelf)
                .arg("-dW")
                .arg(dir.join("libcuda.so.1")),
        )
        .unwrap();
        assert!(dynamic.contains("[libcuda.so.1]"), "soname: {dynamic}");
        let symbols = process::output(
            Command::new(&readelf)
                .arg("--dyn-syms")
                .arg("-W")
                .arg(dir.join("libcuda.so")),
        )
        .unwrap();
        for name in [
            "cuInit",
            "cuDeviceGet",
            "cuMemAlloc_v2",
            "cuModuleLoadData",
            "cuLaunchKernel",
        ] {
            assert!(
                symbols.split_whitespace().any(|word| word == name),
                "{name} not exported"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The `cuda` feature's build side: a CUDA toolkit without root or a GPU,
//! a CI build of the workspace with `--features cuda`, and the bundle that
//! carries a GPU binary to a machine with the driver.
//!
//! - `cargo xtask cuda-toolkit` ([`toolkit`]): pinned CUDA 13.0 pip wheels
//!   (or the system toolkit when `nvcc` is on PATH), unversioned library
//!   links and a `libcuda.so.1` link stub, described by `toolkit.json`.
//! - `cargo xtask check-cuda` ([`check`]): `cargo build --workspace
//!   --features cuda` in `target/cuda`, so the CPU build in `target/` is
//!   never invalidated.
//! - `cargo xtask gpu-check` ([`gpu_check`]): release `noprop` binary with
//!   `--features cuda`, bundled for `scripts/cuda/gpu-check.sh`.
//!
//! docs/cuda.md explains the why of each step and the measured times.

pub mod check;
pub mod gpu_check;
pub mod toolkit;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::shell_quote;

/// Where `cargo xtask cuda-toolkit` puts the toolkit unless told otherwise.
pub const DEFAULT_TOOLKIT_DIR: &str = "target/cuda-toolkit";
/// Target directory of the CUDA builds, apart from everyone's CPU `target/`.
pub const CUDA_TARGET_DIR: &str = "target/cuda";
/// Default compute capability: 90 (Hopper); 80 gives a portable build.
pub const DEFAULT_COMPUTE_CAP: &str = "90";
/// The toolkit description written by `cuda-toolkit`, read by the others.
pub const TOOLKIT_FILE: &str = "toolkit.json";

/// Where the toolkit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolkitSource {
    /// PyPI's CUDA component wheels, installed under the toolkit dir.
    Pip,
    /// An installed toolkit found through `nvcc` on PATH or `CUDA_HOME`.
    System,
}

/// A CUDA toolkit usable for building, as recorded in `toolkit.json`
/// (`stub_dir` and `cudnn_home` may be null or absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolkit {
    pub source: ToolkitSource,
    /// Root holding `bin/nvcc`, `include/` and `lib/`: the build's `CUDA_HOME`.
    pub cuda_home: PathBuf,
    /// Directories holding the run-time libraries (libcudart, libcublas, ...,
    /// libcudnn with `--cudnn`): the `LD_LIBRARY_PATH` of a CUDA binary here.
    pub lib_dirs: Vec<PathBuf>,
    /// Directory holding the `libcuda.so` link stub, if the build needs one.
    /// Link time only: never on `LD_LIBRARY_PATH`, where it would shadow the
    /// real driver.
    pub stub_dir: Option<PathBuf>,
    /// `nvcc --version`'s release, e.g. "13.0".
    pub cuda_version: String,
    /// The pip requirements installed (empty for a system toolkit).
    pub packages: Vec<String>,
    /// Root holding cuDNN's `lib/` and `include/` (for the `cudnn` feature),
    /// if installed.
    pub cudnn_home: Option<PathBuf>,
}

impl Toolkit {
    pub fn nvcc(&self) -> PathBuf {
        self.cuda_home.join("bin").join("nvcc")
    }

    /// Reads `DIR/toolkit.json`, with an error saying how to create it.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(TOOLKIT_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "no CUDA toolkit description at {}: run `cargo xtask cuda-toolkit` first",
                file.display()
            )
        })?;
        let toolkit: Toolkit = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a toolkit description", file.display()))?;
        if !toolkit.nvcc().is_file() {
            bail!(
                "{} names {} but it is gone: rerun `cargo xtask cuda-toolkit`",
                file.display(),
                toolkit.nvcc().display()
            );
        }
        Ok(toolkit)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let file = dir.join(TOOLKIT_FILE);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&file, text + "\n").with_context(|| format!("writing {}", file.display()))
    }

    /// Environment for `cargo build --features cuda` against this toolkit.
    ///
    /// candle-kernels' build script compiles its kernels with nvcc through
    /// cudaforge (reads `CUDA_COMPUTE_CAP`, `CUDAFORGE_THREADS`, finds nvcc
    /// on PATH); cudarc's build script reads the CUDA version from nvcc and
    /// adds `$CUDA_HOME/lib{,/stubs}` to the link search path. `LIBRARY_PATH`
    /// also points the linker at the stub for a system toolkit without one.
    pub fn build_env(
        &self,
        compute_cap: &str,
        nvcc_threads: usize,
    ) -> Result<Vec<(String, OsString)>> {
        let bin = self.cuda_home.join("bin");
        let path = prepend_path(&[bin], std::env::var_os("PATH"))?;
        let mut env = vec![
            ("PATH".to_owned(), path),
            (
                "CUDA_HOME".to_owned(),
                self.cuda_home.clone().into_os_string(),
            ),
            ("CUDA_COMPUTE_CAP".to_owned(), compute_cap.into()),
            (
                "CUDAFORGE_THREADS".to_owned(),
                nvcc_threads.to_string().into(),
            ),
        ];
        if let Some(stub_dir) = &self.stub_dir {
            let library_path = prepend_path(
                std::slice::from_ref(stub_dir),
                std::env::var_os("LIBRARY_PATH"),
            )?;
            env.push(("LIBRARY_PATH".to_owned(), library_path));
        }
        env.extend(self.cudnn_env());
        Ok(env)
    }

    /// Extra link-search root for cudarc's `-lcudnn`: its build script
    /// searches `$CUDNN_LIB/lib` next to `$CUDA_HOME/lib`.
    fn cudnn_env(&self) -> Option<(String, OsString)> {
        let home = self.cudnn_home.as_ref()?;
        Some(("CUDNN_LIB".to_owned(), home.clone().into_os_string()))
    }

    /// The shell version of [`Toolkit::build_env`], for humans and scripts.
    pub fn env_script(&self, compute_cap: &str, nvcc_threads: usize) -> String {
        let quote = |path: &Path| shell_quote(&path.display().to_string());
        let mut script = String::from(
            "# Generated by `cargo xtask cuda-toolkit`. Source this file (`. env.sh`)\n\
             # before `cargo build --features cuda --target-dir target/cuda`.\n",
        );
        script += &format!("export CUDA_HOME={}\n", quote(&self.cuda_home));
        script += "export PATH=\"$CUDA_HOME/bin:$PATH\"\n";
        script += &format!("export CUDA_COMPUTE_CAP=\"${{CUDA_COMPUTE_CAP:-{compute_cap}}}\"\n");
        script += &format!("export CUDAFORGE_THREADS=\"${{CUDAFORGE_THREADS:-{nvcc_threads}}}\"\n");
        if let Some(stub_dir) = &self.stub_dir {
            script += &format!(
                "export LIBRARY_PATH={}\"${{LIBRARY_PATH:+:$LIBRARY_PATH}}\"\n",
                quote(stub_dir)
            );
        }
        if let Some(home) = &self.cudnn_home {
            script += &format!("export CUDNN_LIB={}\n", quote(home));
        }
        let lib_dirs: Vec<String> = self
            .lib_dirs
            .iter()
            .map(|dir| dir.display().to_string())
            .collect();
        script += "# Run time (never add the libcuda stub here: the driver provides libcuda):\n";
        script += &format!(
            "export NOPROP_CUDA_LIB_DIRS={}\n",
            shell_quote(&lib_dirs.join(":"))
        );
        script
    }
}

/// `dirs` followed by the entries of `existing`, as a PATH-style list.
pub fn prepend_path(dirs: &[PathBuf], existing: Option<OsString>) -> Result<OsString> {
    let mut all: Vec<PathBuf> = dirs.to_vec();
    if let Some(existing) = existing {
        all.extend(std::env::split_paths(&existing).filter(|p| !p.as_os_str().is_empty()));
    }
    std::env::join_paths(all).context("a path holds the list separator ':'")
}

/// The number of parallel nvcc jobs: `CUDAFORGE_THREADS` if set, else the CPUs.
pub fn nvcc_threads() -> usize {
    std::env::var("CUDAFORGE_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// `CUDA_COMPUTE_CAP` if set in the environment, else `fallback`.
pub fn compute_cap(fallback: &str) -> Result<String> {
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| fallback.to_owned());
    validate_compute_cap(&cap)?;
    Ok(cap)
}

/// Errors unless `cap` is what nvcc's `sm_XX` expects: digits only.
pub fn validate_compute_cap(cap: &str) -> Result<()> {
    if cap.is_empty() || !cap.chars().all(|c| c.is_ascii_digit()) {
        bail!("compute capability {cap:?} is not a number such as 90 (Hopper) or 80 (Ampere)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Toolkit {
        Toolkit {
            source: ToolkitSource::Pip,
            cuda_home: "/t/wheels/nvidia/cu13".into(),
            lib_dirs: vec!["/t/wheels/nvidia/cu13/lib".into()],
            stub_dir: Some("/t/wheels/nvidia/cu13/lib/stubs".into()),
            cuda_version: "13.0".into(),
            packages: vec!["nvidia-cuda-nvcc==13.0.88".into()],
            cudnn_home: None,
        }
    }

    #[test]
    fn toolkit_description_round_trips_through_json() {
        let dir = std::env::temp_dir().join(format!("xtask-toolkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let round_trip = |toolkit: &Toolkit| -> Toolkit {
            toolkit.save(&dir).unwrap();
            let text = std::fs::read_to_string(dir.join(TOOLKIT_FILE)).unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let toolkit = sample();
        assert_eq!(round_trip(&toolkit), toolkit);
        let system = Toolkit {
            source: ToolkitSource::System,
            stub_dir: None,
            packages: vec![],
            cudnn_home: Some("/opt/cudnn".into()),
            ..sample()
        };
        assert_eq!(round_trip(&system), system);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn optional_paths_may_be_null_or_absent() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["stub_dir"] = serde_json::Value::Null;
        value.as_object_mut().unwrap().remove("cudnn_home");
        let toolkit: Toolkit = serde_json::from_value(value).unwrap();
        assert_eq!((toolkit.stub_dir, toolkit.cudnn_home), (None, None));
    }

    #[test]
    fn malformed_description_names_the_field_or_its_line() {
        let text = serde_json::to_string_pretty(&sample()).unwrap();
        let err = serde_json::from_str::<Toolkit>(
            &text.replace("\"source\": \"pip\"", "\"source\": \"conda\""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("conda"), "{err}");
        let without = text.replace("\"cuda_version\": \"13.0\",", "");
        let err = serde_json::from_str::<Toolkit>(&without)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cuda_version"), "{err}");
        // A wrong type is located by line (the file is written one field
        // a line).
        let line = 1 + text.lines().position(|l| l.contains("cudnn_home")).unwrap();
        let bad = text.replace("\"cudnn_home\": null", "\"cudnn_home\": true");
        let err = serde_json::from_str::<Toolkit>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("line {line}")), "{err}");
    }

    #[test]
    fn build_env_puts_nvcc_first_and_the_stub_on_the_link_path() {
        let env = sample().build_env("90", 2).unwrap();
        let get = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let path = get("PATH");
        let first = std::env::split_paths(&path).next().unwrap();
        assert_eq!(first, PathBuf::from("/t/wheels/nvidia/cu13/bin"));
        assert_eq!(get("CUDA_COMPUTE_CAP"), "90");
        assert_eq!(get("CUDAFORGE_THREADS"), "2");
        let library_path = get("LIBRARY_PATH");
        assert_eq!(
            std::env::split_paths(&library_path).next().unwrap(),
            PathBuf::from("/t/wheels/nvidia/cu13/lib/stubs")
        );
    }

    #[test]
    fn env_script_keeps_the_stub_off_the_run_time_path() {
        let script = sample().env_script("90", 2);
        assert!(!script.contains("LD_LIBRARY_PATH="), "{script}");
        let run_dirs = script
            .lines()
            .find(|l| l.starts_with("export NOPROP_CUDA_LIB_DIRS="))
            .unwrap();
        assert!(!run_dirs.contains("stubs"), "{run_dirs}");
        assert!(
            script.contains("export LIBRARY_PATH='/t/wheels/nvidia/cu13/lib/stubs'"),
            "{script}"
        );
    }

    #[test]
    fn compute_cap_must_be_digits() {
        assert!(validate_compute_cap("90").is_ok());
        for bad in ["", "sm_90", "9.0"] {
            let err = validate_compute_cap(bad).unwrap_err().to_string();
            assert!(err.contains("compute capability"), "{err}");
        }
    }
}

//! Choosing the compute device.
//!
//! `cpu` is always available. `cuda` needs a binary built with the `cuda`
//! feature; without it the choice fails with a message saying how to build
//! one, rather than silently training on the CPU.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Where tensors live and computations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a binary built with `--features cuda`).
    Cuda,
}

impl DeviceChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda => open_cuda(),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => bail!("unknown device {other:?}; expected cpu or cuda"),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device> {
    use anyhow::Context;
    Device::new_cuda(0).context("cannot open CUDA device 0 (is a GPU and its driver present?)")
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device> {
    bail!(
        "--device cuda: this noprop binary was built without CUDA support; \
         rebuild it with `cargo build --release -p noprop-train --features cuda` (needs the CUDA toolkit: `cargo xtask cuda-toolkit`, docs/cuda.md), \
         or use --device cpu"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_opens_and_names_parse() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("tpu"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let err = DeviceChoice::Cuda.open().unwrap_err().to_string();
        assert!(err.contains("-p noprop-train --features cuda"), "{err}");
    }
}

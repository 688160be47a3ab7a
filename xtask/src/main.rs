//! Project tasks, run as `cargo xtask <task>`.
//!
//! Thin by design: each task drives `cargo` and the `noprop` binary; none
//! reimplements training. One module per task.

mod bench;
mod cuda;
mod distributed;
mod memory;
mod process;
mod reproduce;
mod standalone;
// The workspace's one median, shared as source: depending on noprop-core
// would build candle for every `cargo xtask`.
#[path = "../../crates/noprop-core/src/stats.rs"]
mod stats;
mod train_all;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "noprop-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Train every variant on MNIST and write a comparison report.
    TrainAll(train_all::TrainAllArgs),
    /// The paper's MNIST comparison: every variant, several seeds, the
    /// paper's evaluation protocol; resumable.
    Reproduce(reproduce::ReproduceArgs),
    /// Set up a CUDA 13.0 toolkit under target/ (pip wheels, or the system's).
    CudaToolkit(cuda::toolkit::ToolkitArgs),
    /// Build the workspace with `--features cuda` in target/cuda.
    CheckCuda(cuda::check::CheckArgs),
    /// Build and bundle the CUDA `noprop` binary for scripts/cuda/gpu-check.sh.
    GpuCheck(cuda::gpu_check::GpuCheckArgs),
    /// Time the blocks (release build), next to PyTorch when installed.
    Bench(bench::BenchArgs),
    /// Training memory of NoProp-DT for several T, and against the backprop baseline.
    Memory(memory::MemoryArgs),
    /// The variant crates used alone (tests/standalone) agree with `noprop`.
    Standalone(standalone::StandaloneArgs),
    /// Training time of one process against `mpirun -np N` (feature mpi).
    Distributed(distributed::DistributedArgs),
}

fn main() -> std::process::ExitCode {
    // The error and its causes on one line each, never a backtrace (many
    // shells set RUST_BACKTRACE=1, which anyhow's Debug output honours).
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::TrainAll(args) => train_all::run(&args),
        Task::Reproduce(args) => reproduce::run(&args),
        Task::CudaToolkit(args) => cuda::toolkit::run(&args),
        Task::CheckCuda(args) => cuda::check::run(&args),
        Task::GpuCheck(args) => cuda::gpu_check::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Memory(args) => memory::run(&args),
        Task::Standalone(args) => standalone::run(&args),
        Task::Distributed(args) => distributed::run(&args),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a workspace member, so its manifest dir has a parent")
        .to_path_buf()
}

/// `path` if absolute, else relative to `base`.
pub fn absolute(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `path` if absolute, else relative to the workspace root.
pub fn in_workspace(path: &Path) -> PathBuf {
    absolute(path, &workspace_root())
}

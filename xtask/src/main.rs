//! Project tasks, run as `cargo xtask <task>`.
//!
//! Thin by design: each task drives `cargo` and the `noprop` binary; none
//! reimplements training. One module per task.

mod bench;
mod cuda;
mod train_all;

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
    /// Set up a CUDA 13.0 toolkit under target/ (pip wheels, or the system's).
    CudaToolkit(cuda::toolkit::ToolkitArgs),
    /// Build the workspace with `--features cuda` in target/cuda.
    CheckCuda(cuda::check::CheckArgs),
    /// Build and bundle the CUDA `noprop` binary for scripts/cuda/gpu-check.sh.
    GpuCheck(cuda::gpu_check::GpuCheckArgs),
    /// Time the blocks (release build), next to PyTorch when installed.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::TrainAll(args) => train_all::run(&args),
        Task::CudaToolkit(args) => cuda::toolkit::run(&args),
        Task::CheckCuda(args) => cuda::check::run(&args),
        Task::GpuCheck(args) => cuda::gpu_check::run(&args),
        Task::Bench(args) => bench::run(&args),
    }
}

//! Project tasks, run as `cargo xtask <task>`.
//!
//! Thin by design: each task drives `cargo` and the `noprop` binary; none
//! reimplements training. One module per task.

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
    /// Train NoProp-DT, -CT and -FM on MNIST and write a comparison report.
    TrainAll(train_all::TrainAllArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::TrainAll(args) => train_all::run(&args),
    }
}

//! # noprop-train
//!
//! The `noprop` command-line trainer: train, evaluate, predict, inspect and
//! export NoProp models; TOML run configurations; safetensors checkpoints
//! that resume bitwise-exactly; `metrics.jsonl` logs. It drives the variants
//! only through the [`noprop_core::Variant`] trait; [`registry`] is the one
//! place that knows the concrete crates.
//!
//! ```text
//! noprop train --variant dt --epochs 3 --out runs/dt        # or --config configs/paper-mnist-dt.toml
//! noprop train --variant fm --embedding dim20 --set fm.inference_steps=100 --out runs/fm
//! noprop train --resume runs/dt --epochs 5                  # continues bitwise exactly
//! noprop eval --checkpoint runs/dt/last.safetensors --runs 5 --json
//! noprop predict --checkpoint runs/dt/last.safetensors digit.png
//! noprop info --variant ct                                  # parameters, schedule table
//! noprop export --checkpoint runs/dt/last.safetensors --out dt.safetensors
//! noprop compare --runs runs/dt runs/fm --out runs/compare
//! noprop gpu-check --data data/mnist --json gpu-check.json   # GPU vs CPU, speed
//! ```
//!
//! Modules, one concept each: [`config`] (the run configuration) and
//! [`overrides`] (`--set key=value`); checkpoints in the format of
//! [`noprop_checkpoint`] (see `docs/checkpoint-format.md`), which also
//! writes every file atomically, and [`checkpointer`] (when and what to
//! save); [`metrics`]
//! (`metrics.jsonl`); [`summary`] (`summary.json`); [`train`] (the loop)
//! and [`train_command`] (`noprop train`: run directories, resume);
//! [`eval`], [`predict`], [`info`],
//! [`export`] (the other subcommands); [`model`] (building models, fresh or
//! from a checkpoint); [`device`]; [`progress`] (indicatif bars); [`cli`]
//! (arguments, logging, dispatch; `main.rs` only calls [`cli::main`]);
//! [`report`] (`noprop compare`: the side-by-side report of several runs);
//! [`gpu_check`] (`noprop gpu-check`: a device against the CPU, and its speed).

pub mod checkpointer;
pub mod cli;
pub mod config;
pub mod config_docs;
pub mod device;
pub mod distributed;
pub mod eval;
pub mod export;
pub mod gpu_check;
pub mod info;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod overrides;
pub mod predict;
pub mod progress;
pub mod registry;
pub mod report;
pub mod run_lock;
pub mod summary;
pub mod train;
pub mod train_command;

#[cfg(test)]
mod testing;

//! # noprop-train
//!
//! The `noprop` command-line trainer: train, evaluate, predict, export, and
//! safetensors checkpoints. It drives the variants through the
//! `noprop_core` traits without knowing which one it holds.

//! Trains NoProp-FM on part of the embedded MNIST and prints test accuracy.
//!
//! `cargo run --release -p noprop-fm --example fm_mnist -- [TRAIN] [EPOCHS] [STEPS]`
//! (defaults: 5000 training images, 1 epoch, 100 Euler steps; all 10,000 test images).

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{InferenceOptions, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use noprop_fm::{FmConfig, NoPropFm};

/// Trains NoProp-FM on part of the embedded MNIST and prints the test
/// accuracy on all 10,000 test images.
#[derive(Parser)]
struct Args {
    /// Training images.
    #[arg(default_value_t = 5_000)]
    train: usize,
    #[arg(default_value_t = 1)]
    epochs: usize,
    /// Euler steps of the ODE at inference.
    #[arg(default_value_t = 100)]
    steps: usize,
}

fn main() -> Result<()> {
    let Args {
        train,
        epochs,
        steps,
    } = Args::parse();
    let device = Device::Cpu;
    let data = Dataset::load(
        &DatasetConfig {
            train_limit: Some(train),
            ..DatasetConfig::new(DatasetKind::Mnist)
        },
        &device,
    )?;
    let mut model = NoPropFm::new(FmConfig::default(), ModelSpec::mnist(), None, 0, &device)?;
    let mut rng = SeededRng::new(1);
    let start = Instant::now();
    for epoch in 0..epochs {
        let mut sum = 0.0;
        let mut n = 0;
        for batch in data.train().batches(128, Some((0, epoch as u64)))? {
            let (x, y) = batch?;
            sum += model.train_step(&x, &y, &mut rng)?.loss;
            n += 1;
        }
        println!("epoch {epoch}: mean loss {:.4}", sum / n as f64);
    }
    let train_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let options = InferenceOptions {
        steps: Some(steps),
        ..Default::default()
    };
    let test = data.test();
    let settings = InferenceSettings::new(options);
    let acc =
        inference::evaluate(&model, test.images(), test.labels(), &settings, &mut rng)?.mean();
    println!(
        "NoProp-FM: {train} train images x {epochs} epoch(s) in {train_s:.1} s; test accuracy {:.2}% on {} images ({steps} Euler steps, {:.1} s)",
        100.0 * acc,
        test.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

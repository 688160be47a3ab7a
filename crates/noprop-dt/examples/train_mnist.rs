//! Trains NoProp-DT on embedded MNIST and prints the test accuracy.
//!
//! ```text
//! cargo run --release --example train_mnist -p noprop-dt -- \
//!     [--train-limit 5000] [--test-limit 1000] [--epochs 1] [--batch-size 128] \
//!     [--embedding one-hot|dim20|prototype] [--order all-blocks|sweep|random] \
//!     [--blocks 10] [--runs 5] [--seed 0]
//! ```
//!
//! `--train-limit 0` / `--test-limit 0` mean the whole split (60,000 /
//! 10,000 images). Prints per-epoch training time and loss, then the test
//! accuracy with deterministic inference and with stochastic inference
//! (the mean accuracy of `--runs` single runs, as the paper reports, and the
//! accuracy of their averaged probabilities), with the inference times.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Parser;
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{EmbeddingKind, InferenceOptions, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use noprop_dt::{DtConfig, NoPropDt, TrainingOrder};

/// Trains NoProp-DT on embedded MNIST and prints the test accuracy.
#[derive(Parser)]
struct Args {
    /// Training images (0: all 60,000).
    #[arg(long, default_value_t = 5_000)]
    train_limit: usize,
    /// Test images (0: all 10,000).
    #[arg(long, default_value_t = 1_000)]
    test_limit: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Class embedding: one-hot, dimN (e.g. dim20) or prototype.
    #[arg(long, default_value_t = EmbeddingKind::OneHot)]
    embedding: EmbeddingKind,
    /// Which blocks a minibatch trains: all-blocks, sweep or random.
    #[arg(long, default_value_t = TrainingOrder::AllBlocks)]
    order: TrainingOrder,
    /// Blocks (diffusion steps T).
    #[arg(long, default_value_t = 10)]
    blocks: usize,
    /// Stochastic inference runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch_size < 2 || args.epochs == 0 || args.runs == 0 {
        bail!("need --batch-size >= 2, --epochs >= 1 and --runs >= 1");
    }
    let device = Device::Cpu;
    let data_config = DatasetConfig {
        train_limit: (args.train_limit > 0).then_some(args.train_limit),
        test_limit: (args.test_limit > 0).then_some(args.test_limit),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let data = Dataset::load(&data_config, &device)?;
    let (train, test) = (data.train(), data.test());
    println!(
        "NoProp-DT on MNIST: {} train / {} test images, T = {}, {} embedding, {} order, batch {}",
        train.len(),
        test.len(),
        args.blocks,
        args.embedding,
        args.order,
        args.batch_size
    );
    let config = DtConfig {
        num_blocks: args.blocks,
        embedding: args.embedding,
        order: args.order,
        ..DtConfig::default()
    };
    let mut model = NoPropDt::new(
        config,
        ModelSpec::mnist(),
        Some((train.images(), train.labels())),
        args.seed,
        &device,
    )?;
    let mut rng = SeededRng::new(args.seed).fork(100);
    for epoch in 0..args.epochs {
        model.begin_epoch(epoch)?;
        let started = Instant::now();
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        for batch in train
            .batches(args.batch_size, Some((args.seed, epoch as u64)))?
            .drop_last(true)
        {
            let (images, labels) = batch?;
            let report = model.train_step(&images, &labels, &mut rng)?;
            loss_sum += report.loss;
            steps += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "epoch {}: blocks {:?}, mean loss {:.4}, {steps} steps in {seconds:.1} s ({:.1} ms/step)",
            epoch + 1,
            model.blocks_in_epoch(epoch),
            loss_sum / steps.max(1) as f64,
            1e3 * seconds / steps.max(1) as f64
        );
    }

    let mut eval_rng = SeededRng::new(args.seed).fork(200);
    let (images, labels) = (test.images(), test.labels());
    let started = Instant::now();
    let options = |deterministic: bool| InferenceOptions {
        deterministic: Some(deterministic),
        ..Default::default()
    };
    let deterministic = inference::evaluate(
        &model,
        images,
        labels,
        &InferenceSettings::new(options(true)),
        &mut eval_rng,
    )?
    .mean();
    let det_seconds = started.elapsed().as_secs_f64();
    // All stochastic runs in one pass (the image features are shared).
    let started = Instant::now();
    let scores = inference::evaluate(
        &model,
        images,
        labels,
        &InferenceSettings::new(options(false)).with_runs(args.runs),
        &mut eval_rng,
    )?;
    let sto_seconds = started.elapsed().as_secs_f64();
    let single = scores.per_run();
    let averaged = scores.ensemble();
    let mean_single = scores.mean();
    println!(
        "test accuracy: deterministic {:.2}% ({det_seconds:.1} s); stochastic: mean of {} single runs {:.2}% (runs {:?}), probabilities averaged over the runs {:.2}% ({sto_seconds:.1} s for all runs)",
        100.0 * deterministic,
        args.runs,
        100.0 * mean_single,
        single.iter().map(|a| (1e4 * a).round() / 100.0).collect::<Vec<_>>(),
        100.0 * averaged
    );
    Ok(())
}

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

use anyhow::{bail, Context, Result};
use candle_core::Device;
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{EmbeddingKind, InferenceOptions, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use noprop_dt::{DtConfig, NoPropDt, TrainingOrder};

struct Args {
    train_limit: usize,
    test_limit: usize,
    epochs: usize,
    batch_size: usize,
    embedding: EmbeddingKind,
    order: TrainingOrder,
    blocks: usize,
    runs: usize,
    seed: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        train_limit: 5_000,
        test_limit: 1_000,
        epochs: 1,
        batch_size: 128,
        embedding: EmbeddingKind::OneHot,
        order: TrainingOrder::AllBlocks,
        blocks: 10,
        runs: 5,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: String| anyhow::anyhow!("{flag} {value}: {e}");
        match flag.as_str() {
            "--train-limit" => args.train_limit = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--test-limit" => args.test_limit = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--epochs" => args.epochs = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--batch-size" => args.batch_size = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--embedding" => args.embedding = value.parse().map_err(bad)?,
            "--order" => args.order = value.parse().map_err(bad)?,
            "--blocks" => args.blocks = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--runs" => args.runs = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--seed" => args.seed = value.parse().map_err(|e| bad(format!("{e}")))?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if args.batch_size < 2 || args.epochs == 0 || args.runs == 0 {
        bail!("need --batch-size >= 2, --epochs >= 1 and --runs >= 1");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
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

//! Trains NoProp-CT on embedded MNIST and prints the test accuracy.
//!
//! ```text
//! cargo run --release --example ct_mnist -p noprop-ct -- \
//!     [--train-limit 5000] [--test-limit 2000] [--epochs 1] [--batch-size 128] \
//!     [--embedding one-hot|dim20|prototype] [--sampling importance|uniform] \
//!     [--alpha-bar-noise 0.01] [--alpha-bar-clean 0.99] [--schedule-wd 0] \
//!     [--warmup 0] [--lr 1e-3] [--head-lr 1e-3] [--steps 100,1000] [--solver euler|heun|rk4] \
//!     [--runs 1] [--seed 0]
//! ```
//!
//! `--train-limit 0` / `--test-limit 0` mean the whole split (60,000 /
//! 10,000 images). Prints per-epoch loss, schedule endpoints and time, then
//! test accuracy and inference time for each number of ODE steps.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{
    EmbeddingKind, InferenceOptions, LearnedScheduleConfig, OdeSolver, SeededRng, Variant,
};
use noprop_ct::{CtConfig, NoPropCt, TimeSampling};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};

struct Args {
    train_limit: usize,
    test_limit: usize,
    epochs: usize,
    batch_size: usize,
    config: CtConfig,
    alpha_bar: (f64, f64),
    steps: Vec<usize>,
    runs: usize,
    seed: u64,
}

fn parse_solver(s: &str) -> Result<OdeSolver> {
    Ok(match s {
        "euler" => OdeSolver::Euler,
        "heun" => OdeSolver::Heun,
        "rk4" => OdeSolver::Rk4,
        _ => bail!("unknown solver {s} (euler, heun, rk4)"),
    })
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        train_limit: 5_000,
        test_limit: 2_000,
        epochs: 1,
        batch_size: 128,
        config: CtConfig::default(),
        alpha_bar: (0.01, 0.99),
        steps: vec![100],
        runs: 1,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<f64> { v.parse().with_context(|| format!("{flag} {v}")) };
        let c = &mut args.config;
        match flag.as_str() {
            "--train-limit" => args.train_limit = num(&value)? as usize,
            "--test-limit" => args.test_limit = num(&value)? as usize,
            "--epochs" => args.epochs = num(&value)? as usize,
            "--batch-size" => args.batch_size = num(&value)? as usize,
            "--embedding" => {
                c.embedding = value.parse::<EmbeddingKind>().map_err(anyhow::Error::msg)?
            }
            "--sampling" => {
                c.time_sampling = value.parse::<TimeSampling>().map_err(anyhow::Error::msg)?
            }
            "--alpha-bar-noise" => args.alpha_bar.0 = num(&value)?,
            "--alpha-bar-clean" => args.alpha_bar.1 = num(&value)?,
            "--schedule-wd" => c.schedule_weight_decay = num(&value)?,
            "--warmup" => c.warmup_steps = num(&value)? as usize,
            "--lr" => c.lr = num(&value)?,
            "--head-lr" => c.head_lr = Some(num(&value)?),
            "--solver" => c.solver = parse_solver(&value)?,
            "--runs" => args.runs = num(&value)? as usize,
            "--steps" => {
                args.steps = value
                    .split(',')
                    .map(|s| s.parse::<usize>().with_context(|| format!("--steps {s}")))
                    .collect::<Result<_>>()?
            }
            "--seed" => args.seed = num(&value)? as u64,
            _ => bail!("unknown flag {flag}"),
        }
    }
    let (lo, hi) = args.alpha_bar;
    if !(0.0 < lo && lo < hi && hi < 1.0) {
        bail!("need 0 < --alpha-bar-noise < --alpha-bar-clean < 1");
    }
    args.config.schedule =
        LearnedScheduleConfig::from_alpha_bar_range(lo, hi, args.config.schedule.hidden);
    if args.batch_size == 0 || args.epochs == 0 || args.runs == 0 || args.steps.contains(&0) {
        bail!("need --batch-size, --epochs, --runs and every --steps >= 1");
    }
    args.config.validate()?;
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
    let c = &args.config;
    println!(
        "NoProp-CT on MNIST: {} train / {} test, {} embedding, batch {}, sampling {}, alpha_bar {:?}, \
         schedule wd {}, warm-up {}, lr {}, head lr {}",
        train.len(),
        test.len(),
        c.embedding,
        args.batch_size,
        c.time_sampling,
        args.alpha_bar,
        c.schedule_weight_decay,
        c.warmup_steps,
        c.lr,
        c.head_lr.unwrap_or(c.lr)
    );
    let mut model = NoPropCt::new(
        args.config,
        ModelSpec::mnist(),
        Some((train.images(), train.labels())),
        args.seed,
        &device,
    )?;
    let mut rng = SeededRng::new(args.seed).fork(100);
    for epoch in 0..args.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        let mut last = Vec::new();
        for batch in train
            .batches(args.batch_size, Some((args.seed, epoch as u64)))?
            .drop_last(true)
        {
            let (images, labels) = batch?;
            let report = model.train_step(&images, &labels, &mut rng)?;
            loss_sum += report.loss;
            steps += 1;
            last = report.terms;
        }
        let seconds = started.elapsed().as_secs_f64();
        let terms: Vec<String> = last.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        println!(
            "epoch {}: mean loss {:.4}, last step: {}; {steps} steps in {seconds:.1} s ({:.1} ms/step)",
            epoch + 1,
            loss_sum / steps.max(1) as f64,
            terms.join(", "),
            1000.0 * seconds / steps.max(1) as f64
        );
    }
    for &steps in &args.steps {
        let options = InferenceOptions {
            steps: Some(steps),
            ..Default::default()
        };
        let started = Instant::now();
        let mut eval_rng = SeededRng::new(args.seed).fork(200);
        let settings = InferenceSettings::new(options).with_runs(args.runs);
        let accuracy = inference::evaluate(
            &model,
            test.images(),
            test.labels(),
            &settings,
            &mut eval_rng,
        )?;
        println!(
            "test accuracy ({steps} {} steps, {} run(s)): mean of single runs {:.2}%, ensemble {:.2}% in {:.1} s",
            model.config().solver.as_str(),
            args.runs,
            100.0 * accuracy.mean(),
            100.0 * accuracy.ensemble(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

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

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Parser;
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{
    EmbeddingKind, InferenceOptions, LearnedScheduleConfig, OdeSolver, SeededRng, Variant,
};
use noprop_ct::{CtConfig, NoPropCt, TimeSampling};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};

/// Trains NoProp-CT on embedded MNIST and prints the test accuracy.
#[derive(Parser)]
struct Args {
    /// Training images (0: all 60,000).
    #[arg(long, default_value_t = 5_000)]
    train_limit: usize,
    /// Test images (0: all 10,000).
    #[arg(long, default_value_t = 2_000)]
    test_limit: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Class embedding: one-hot, dimN (e.g. dim20) or prototype.
    #[arg(long, default_value_t = CtConfig::default().embedding)]
    embedding: EmbeddingKind,
    /// How training draws t: uniform or importance.
    #[arg(long, default_value_t = CtConfig::default().time_sampling)]
    sampling: TimeSampling,
    /// alpha_bar at the noise end of the initial schedule.
    #[arg(long, default_value_t = 0.01)]
    alpha_bar_noise: f64,
    /// alpha_bar at the clean end of the initial schedule.
    #[arg(long, default_value_t = 0.99)]
    alpha_bar_clean: f64,
    /// Weight decay of the schedule's variables.
    #[arg(long, default_value_t = CtConfig::default().schedule_weight_decay)]
    schedule_wd: f64,
    /// Learning-rate warm-up steps.
    #[arg(long, default_value_t = CtConfig::default().warmup_steps)]
    warmup: usize,
    #[arg(long, default_value_t = CtConfig::default().lr)]
    lr: f64,
    /// Learning rate of the classification head [default: --lr].
    #[arg(long)]
    head_lr: Option<f64>,
    /// ODE steps at inference, comma-separated: one evaluation each.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    steps: Vec<usize>,
    /// ODE integrator: euler, heun or rk4.
    #[arg(long, default_value_t = CtConfig::default().solver)]
    solver: OdeSolver,
    /// Stochastic inference runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    /// The model's configuration, checked.
    fn config(&self) -> Result<CtConfig> {
        let (lo, hi) = (self.alpha_bar_noise, self.alpha_bar_clean);
        if !(0.0 < lo && lo < hi && hi < 1.0) {
            bail!("need 0 < --alpha-bar-noise < --alpha-bar-clean < 1");
        }
        if self.batch_size == 0 || self.epochs == 0 || self.runs == 0 || self.steps.contains(&0) {
            bail!("need --batch-size, --epochs, --runs and every --steps >= 1");
        }
        let defaults = CtConfig::default();
        let config = CtConfig {
            embedding: self.embedding,
            time_sampling: self.sampling,
            schedule: LearnedScheduleConfig::from_alpha_bar_range(lo, hi, defaults.schedule.hidden),
            schedule_weight_decay: self.schedule_wd,
            warmup_steps: self.warmup,
            lr: self.lr,
            head_lr: self.head_lr.or(defaults.head_lr),
            solver: self.solver,
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = args.config()?;
    let device = Device::Cpu;
    let data_config = DatasetConfig {
        train_limit: (args.train_limit > 0).then_some(args.train_limit),
        test_limit: (args.test_limit > 0).then_some(args.test_limit),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    let data = Dataset::load(&data_config, &device)?;
    let (train, test) = (data.train(), data.test());
    let c = &config;
    println!(
        "NoProp-CT on MNIST: {} train / {} test, {} embedding, batch {}, sampling {}, alpha_bar {:?}, \
         schedule wd {}, warm-up {}, lr {}, head lr {}",
        train.len(),
        test.len(),
        c.embedding,
        args.batch_size,
        c.time_sampling,
        (args.alpha_bar_noise, args.alpha_bar_clean),
        c.schedule_weight_decay,
        c.warmup_steps,
        c.lr,
        c.head_lr.unwrap_or(c.lr)
    );
    let mut model = NoPropCt::new(
        config,
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

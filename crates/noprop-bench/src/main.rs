//! `noprop-bench`: CPU timings of NoProp's blocks at MNIST shapes, printed as
//! one JSON object (and written to `--json`). Normally run by
//! `cargo xtask bench`, which also runs the PyTorch script in `bench/` and
//! reports the ratios.
//!
//! Measurements (median wall ms over `--iters` runs after `--warmup`, and
//! the mean process CPU ms per run):
//!
//! | name | what |
//! |---|---|
//! | `dt_train_step` | DT block forward + loss + backward + AdamW |
//! | `dt_forward` | DT block, eval mode |
//! | `ctfm_train_step` | CT/FM block forward + loss + backward + AdamW |
//! | `ctfm_forward` | CT/FM block, eval mode |
//! | `ctfm_cached_step` | one CT/FM inference step on cached image features |
//! | `conv_stack_fwd_bwd` | the three image convolutions (ReLU, pooling; no dropout) forward + backward, fused kernels |
//! | `conv_stack_fwd_bwd_separate` | the same with convolution+ReLU and pooling as separate ops |
//! | `dt_minibatch` | one training step of the NoProp-DT model (`noprop_dt::NoPropDt::step`: all T = 10 blocks and the shared head), blocks one after another, each using every thread (intra-op) |
//! | `dt_minibatch_block_parallel` | the same with `parallel_blocks`: blocks spread over the threads, each single-threaded |
//! | `fm_eval`, `ct_eval` | the whole inference of `--eval-images` test images (one stochastic run, `--eval-steps` Euler steps) by the NoProp-FM / NoProp-CT model, as `noprop eval` runs it (`noprop_core::inference`, batches of 500) |
//! | `dt_eval` | the same for the NoProp-DT model (T = 10 blocks, stochastic posterior mixing) |
//!
//! With `--with-candle`, the block-level measurements are repeated with
//! candle's reference ops (`KernelBackend::Candle`) under `candle_ops`.
//! Epoch throughput (images/s) follows from the minibatch times: an epoch is
//! 60,000 images, one DT minibatch steps every block, one CT/FM minibatch
//! steps the shared block once.

mod conv_stack;
mod timing;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use noprop_block::Mode;
use noprop_core::inference::{predict_runs, InferenceSettings};
use noprop_core::variant::{ModelSpec, Variant};
use noprop_core::{InferenceOptions, OdeSolver, SeededRng};
use noprop_ct::{CtConfig, NoPropCt};
use noprop_dt::{DtConfig, NoPropDt};
use noprop_fm::{FmConfig, NoPropFm};
use noprop_kernels::{set_kernel_backend, KernelBackend};
use serde_json::{json, Value};

use conv_stack::{ConvStack, StackOps};
use timing::median_ms;
use workloads::{Batch, CtFmTrainer, DtTrainer, CLASSES};

/// Number of DT blocks.
const T_BLOCKS: usize = 10;

#[derive(Parser, Debug)]
#[command(name = "noprop-bench", about = "CPU timings of NoProp's blocks (JSON)")]
struct Args {
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Comma-separated measurement names (default: all).
    #[arg(long, default_value = "")]
    only: String,
    /// Also time the block measurements with candle's reference ops.
    #[arg(long)]
    with_candle: bool,
    /// Images of the whole-evaluation measurements (`*_eval`).
    #[arg(long, default_value_t = 500)]
    eval_images: usize,
    /// ODE steps of the CT/FM whole-evaluation measurements.
    #[arg(long, default_value_t = 1000)]
    eval_steps: usize,
    /// Timed runs of the whole-evaluation measurements.
    #[arg(long, default_value_t = 3)]
    eval_iters: usize,
    /// Also write the JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Bench<'a> {
    args: &'a Args,
    only: Vec<String>,
}

impl Bench<'_> {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }

    /// The image convolutions alone: `fused` and `separate` with our
    /// kernels, or candle's ops.
    fn conv_stack(
        &self,
        out: &mut BTreeMap<String, Value>,
        iters: usize,
        candle: bool,
    ) -> Result<()> {
        let stack = ConvStack::new(self.args.batch, 3)?;
        let variants: &[(&str, StackOps)] = if candle {
            &[("conv_stack_fwd_bwd", StackOps::Candle)]
        } else {
            &[
                ("conv_stack_fwd_bwd", StackOps::FastFused),
                ("conv_stack_fwd_bwd_separate", StackOps::FastSeparate),
            ]
        };
        for &(name, ops) in variants {
            if self.wants(name) {
                let m = median_ms(self.args.warmup, iters, || stack.forward_backward(ops))?;
                out.insert(name.into(), m.to_json());
            }
        }
        Ok(())
    }

    /// The single-block measurements with the current kernel backend.
    fn blocks(&self, out: &mut BTreeMap<String, Value>, iters: usize) -> Result<()> {
        let (warmup, batch) = (self.args.warmup, self.args.batch);
        let data = Batch::new(batch, &mut SeededRng::new(1))?;
        let mut rng = SeededRng::new(2);
        let z = rng.normal((batch, CLASSES), &Device::Cpu)?;
        let t = Tensor::full(0.5f32, batch, &Device::Cpu)?;

        if self.wants("dt_train_step") || self.wants("dt_forward") {
            let mut dt = DtTrainer::new(10)?;
            if self.wants("dt_train_step") {
                let m = median_ms(warmup, iters, || dt.step(&data))?;
                out.insert("dt_train_step".into(), m.to_json());
            }
            if self.wants("dt_forward") {
                let m = median_ms(warmup, iters, || dt.forward_eval(&data, &z).map(drop))?;
                out.insert("dt_forward".into(), m.to_json());
            }
        }
        let ctfm_names = ["ctfm_train_step", "ctfm_forward", "ctfm_cached_step"];
        if ctfm_names.iter().any(|n| self.wants(n)) {
            let mut ctfm = CtFmTrainer::new(20)?;
            if self.wants("ctfm_train_step") {
                let m = median_ms(warmup, iters, || ctfm.step(&data))?;
                out.insert("ctfm_train_step".into(), m.to_json());
            }
            if self.wants("ctfm_forward") {
                let m = median_ms(warmup, iters, || {
                    ctfm.block
                        .forward(&data.x, &z, &t, Mode::Eval)
                        .map(drop)
                        .map_err(Into::into)
                })?;
                out.insert("ctfm_forward".into(), m.to_json());
            }
            if self.wants("ctfm_cached_step") {
                let features = ctfm.block.image_features(&data.x, Mode::Eval)?;
                let m = median_ms(warmup, 10 * iters, || {
                    ctfm.cached_step(&features, &z, &t, &data).map(drop)
                })?;
                out.insert("ctfm_cached_step".into(), m.to_json());
            }
        }
        Ok(())
    }

    /// One training step of the NoProp-DT model the trainer uses (T = 10
    /// blocks, the shared head and its optimizers, default config): blocks
    /// one after another with intra-op threading, and with
    /// `parallel_blocks` (one block per thread, each single-threaded).
    fn dt_minibatch(&self, out: &mut BTreeMap<String, Value>) -> Result<()> {
        let iters = self.args.iters.div_ceil(T_BLOCKS).max(3);
        let data = Batch::new(self.args.batch, &mut SeededRng::new(1))?;
        for (name, parallel_blocks) in [
            ("dt_minibatch", false),
            ("dt_minibatch_block_parallel", true),
        ] {
            if !self.wants(name) {
                continue;
            }
            let config = DtConfig {
                num_blocks: T_BLOCKS,
                parallel_blocks,
                ..DtConfig::default()
            };
            let mut model = NoPropDt::new(config, ModelSpec::mnist(), None, 100, &Device::Cpu)?;
            let mut rng = SeededRng::new(3);
            let m = median_ms(1, iters, || {
                model
                    .step(&data.x, &data.labels, &mut rng)
                    .map(drop)
                    .map_err(Into::into)
            })?;
            let mut value = m.to_json();
            if parallel_blocks {
                value["workers"] = json!(rayon::current_num_threads().clamp(1, T_BLOCKS));
            }
            out.insert(name.into(), value);
        }
        Ok(())
    }
}

impl Bench<'_> {
    /// The whole inference of `--eval-images` images by each variant's
    /// model, through `noprop_core::inference` as `noprop eval` runs it.
    /// Freshly initialised models: the cost does not depend on the weights.
    fn evaluations(&self, out: &mut BTreeMap<String, Value>) -> Result<()> {
        let names = ["fm_eval", "ct_eval", "dt_eval"];
        if !names.iter().any(|n| self.wants(n)) {
            return Ok(());
        }
        let (dev, spec) = (Device::Cpu, ModelSpec::mnist());
        let n = self.args.eval_images;
        let images = SeededRng::new(5).normal((n, 1, 28, 28), &dev)?;
        let options = InferenceOptions {
            steps: Some(self.args.eval_steps),
            solver: Some(OdeSolver::Euler),
            deterministic: Some(false),
        };
        let settings = InferenceSettings::new(options);
        for name in names {
            if !self.wants(name) {
                continue;
            }
            let model: Box<dyn Variant> = match name {
                "fm_eval" => Box::new(NoPropFm::new(FmConfig::default(), spec, None, 7, &dev)?),
                "ct_eval" => Box::new(NoPropCt::new(CtConfig::default(), spec, None, 7, &dev)?),
                _ => Box::new(NoPropDt::new(DtConfig::default(), spec, None, 7, &dev)?),
            };
            let mut rng = SeededRng::new(8);
            let m = median_ms(0, self.args.eval_iters, || {
                predict_runs(model.as_ref(), &images, &settings, &mut rng)
                    .map(drop)
                    .map_err(Into::into)
            })?;
            let mut value = m.to_json();
            value["images"] = json!(n);
            value["ms_per_image"] = json!(m.median_ms / n as f64);
            if name != "dt_eval" {
                value["steps"] = json!(self.args.eval_steps);
            }
            out.insert(name.into(), value);
        }
        Ok(())
    }
}

/// Images per second for an epoch whose unit of work is one minibatch.
fn throughput(batch: usize, minibatch: Option<&Value>) -> Option<f64> {
    let ms = minibatch?.get("median_ms")?.as_f64()?;
    Some(batch as f64 / (ms / 1e3))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch < 2 {
        bail!(
            "--batch must be at least 2 (BatchNorm needs batch statistics), got {}",
            args.batch
        );
    }
    let bench = Bench {
        args: &args,
        only: args
            .only
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };

    let allocator_tuned = noprop_kernels::tune_cpu_allocator();
    set_kernel_backend(KernelBackend::Fast);
    let mut ours = BTreeMap::new();
    bench.conv_stack(&mut ours, args.iters, false)?;
    bench.blocks(&mut ours, args.iters)?;
    bench.dt_minibatch(&mut ours)?;
    bench.evaluations(&mut ours)?;
    let epoch = json!({
        "dt_images_per_s": throughput(args.batch, ours.get("dt_minibatch")),
        "dt_block_parallel_images_per_s": throughput(args.batch, ours.get("dt_minibatch_block_parallel")),
        "ctfm_images_per_s": throughput(args.batch, ours.get("ctfm_train_step")),
        "note": "estimated from minibatch times: DT steps all 10 blocks per minibatch, CT/FM its one block",
    });

    let mut candle = BTreeMap::new();
    if args.with_candle {
        let iters = args.iters.div_ceil(4).max(3);
        bench.conv_stack(&mut candle, iters, true)?;
        set_kernel_backend(KernelBackend::Candle);
        bench.blocks(&mut candle, iters)?;
        set_kernel_backend(KernelBackend::Fast);
    }

    let env = |k: &str| std::env::var(k).ok();
    let report = json!({
        "implementation": "noprop-rs",
        "batch": args.batch,
        "eval_images": args.eval_images,
        "eval_steps": args.eval_steps,
        "rayon_threads": rayon::current_num_threads(),
        "allocator_tuned": allocator_tuned,
        "env": {
            "RAYON_NUM_THREADS": env("RAYON_NUM_THREADS"),
            "CANDLE_NUM_THREADS": env("CANDLE_NUM_THREADS"),
        },
        "measurements": ours,
        "epoch_throughput": epoch,
        "candle_ops": candle,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

//! The `noprop` command line: argument definitions, logging setup and
//! dispatch to the subcommands. Exit status: 0 success, 1 error, 2 bad
//! usage, 130 training interrupted by Ctrl-C (after saving).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use noprop_core::{EmbeddingKind, OdeSolver};

use crate::device::DeviceChoice;
use crate::registry;

/// Exit status of a training run stopped by Ctrl-C (after saving).
pub const EXIT_INTERRUPTED: u8 = 130;

/// NoProp (Li, Teh, Pascanu 2025): train, evaluate and use classifiers
/// trained without end-to-end back-propagation.
#[derive(Debug, Parser)]
#[command(name = "noprop", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG
    /// overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Worker threads of the CPU kernels (and of NoProp-DT's parallel
    /// blocks); default: RAYON_NUM_THREADS, else one per core.
    #[arg(long, value_name = "N", value_parser = thread_count, global = true)]
    pub threads: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model; writes a run directory (config.toml, metrics.jsonl,
    /// last.safetensors; best.safetensors with a validation split).
    Train(TrainArgs),
    /// Test accuracy of a checkpoint.
    Eval(EvalArgs),
    /// Classify image files (PNG; grey or colour, any size).
    Predict(PredictArgs),
    /// Parameter counts, noise schedule and checkpoint metadata.
    Info(InfoArgs),
    /// Write the weights of a checkpoint, without training state.
    Export(ExportArgs),
    /// Compare training runs: report.md, report.json and plots.
    Compare(crate::report::CompareArgs),
    /// Check a device against the CPU (one training step from the same
    /// weights must agree) and measure its training and inference speed.
    GpuCheck(GpuCheckArgs),
}

/// Class embedding choices of `--embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddingChoice {
    /// W = I (d = number of classes), fixed.
    OneHot,
    /// Learned, d = 20, orthogonal initialisation.
    Dim20,
    /// Learned, d = image size, initialised with class prototypes.
    Prototype,
}

impl From<EmbeddingChoice> for EmbeddingKind {
    fn from(c: EmbeddingChoice) -> Self {
        match c {
            EmbeddingChoice::OneHot => EmbeddingKind::OneHot,
            EmbeddingChoice::Dim20 => EmbeddingKind::Learned { dim: 20 },
            EmbeddingChoice::Prototype => EmbeddingKind::Prototype,
        }
    }
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Which variant to train (or `variant` in the --config file).
    #[arg(long, value_parser = registry::value_parser())]
    pub variant: Option<String>,
    /// A TOML run configuration (see configs/ for presets).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Number of epochs (with --resume: the new total).
    #[arg(long, value_parser = positive)]
    pub epochs: Option<usize>,
    /// Class embedding.
    #[arg(long, value_enum)]
    pub embedding: Option<EmbeddingChoice>,
    /// Seed of every random number of the run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute device.
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Dataset: mnist (embedded), fashion-mnist, kmnist, cifar10, cifar100.
    #[arg(long, value_parser = dataset_name)]
    pub dataset: Option<String>,
    /// Directory holding the dataset's files (not needed for MNIST).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub test_limit: Option<usize>,
    /// Hold out N training images for validation (best.safetensors is then
    /// chosen on validation accuracy).
    #[arg(long, value_name = "N")]
    pub validation: Option<usize>,
    /// Minibatch size.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Learning rate of the variant's optimizers.
    #[arg(long, value_parser = positive_float)]
    pub lr: Option<f64>,
    /// Set any configuration key, e.g. --set dt.eta=0.1 --set eval.steps=100
    /// (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory to create (default: `runs/<variant>-<UTC time>`).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Use --out even if it already holds a run (its files are replaced).
    #[arg(long)]
    pub force: bool,
    /// Continue the run in RUN_DIR from its last.safetensors, bitwise as if
    /// never stopped (only --epochs, --device, --json may be given too).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// When stderr is not a terminal (a log file, a batch job): a progress
    /// line every SECONDS during an epoch (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = seconds)]
    pub log_every: f64,
}

/// Inference settings shared by eval and predict.
#[derive(Debug, Args, Clone)]
pub struct InferenceArgs {
    /// ODE steps (CT, FM); default: the model's configuration.
    #[arg(long, value_parser = positive)]
    pub steps: Option<usize>,
    /// ODE integrator (CT, FM): euler, heun or rk4.
    #[arg(long, value_parser = solver)]
    pub solver: Option<OdeSolver>,
    /// DT: inject no noise during inference.
    #[arg(long)]
    pub deterministic: bool,
    /// N independent stochastic runs: each is scored on its own (their
    /// mean and standard deviation are the paper's protocol), and their
    /// averaged probabilities as an ensemble.
    #[arg(long, value_parser = positive)]
    pub runs: Option<usize>,
    /// Images per inference batch (default: the run's `eval.batch_size`).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Seed of the inference noise (default: the run's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    /// A checkpoint (training or exported).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Directory of the dataset's files (default: the run's).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on the first N test images only (default: all of them).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub test_limit: Option<usize>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    /// A checkpoint (training or exported).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Image files (PNG), grey or colour, any size: resized to the model's input.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Print the predictions as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["variant", "checkpoint", "list"])))]
pub struct InfoArgs {
    /// List the registered variants (name, display name, summary).
    #[arg(long)]
    pub list: bool,
    /// Describe a fresh model of this variant (default configuration, or
    /// --config / --set).
    #[arg(long, value_parser = registry::value_parser())]
    pub variant: Option<String>,
    /// Describe a checkpoint: metadata, parameters, (learned) schedule.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// With --variant: a TOML run configuration.
    #[arg(long, value_name = "FILE.toml", requires = "variant")]
    pub config: Option<PathBuf>,
    /// With --variant: configuration overrides (KEY=VALUE).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "variant")]
    pub set: Vec<String>,
    /// Points of a learned schedule's grid on [0, 1].
    #[arg(long, value_name = "N", default_value_t = 11, value_parser = grid_points)]
    pub grid: usize,
    /// Print everything as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The checkpoint to export.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The weights-only safetensors file to write.
    #[arg(long, value_name = "MODEL.safetensors")]
    pub out: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GpuCheckArgs {
    /// Directory of the MNIST IDX files (`*-idx3-ubyte.gz`, ...), e.g.
    /// data/mnist (default: the MNIST embedded in the binary).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Variants to check, comma-separated (default: every variant).
    #[arg(long, value_parser = registry::value_parser(), value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Timed training steps per variant (after one warm-up step).
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 20)]
    pub steps: usize,
    /// Images per training step and per inference batch.
    #[arg(long, value_name = "B", value_parser = at_least_two, default_value_t = 128)]
    pub batch_size: usize,
    /// The device checked against the CPU (cpu: the CPU against itself).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cuda)]
    pub device: DeviceChoice,
    /// ODE steps of the timed inference (CT, FM; DT always runs its T blocks).
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 100)]
    pub inference_steps: usize,
    /// Timed inference calls per batch size; their median is reported.
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 5)]
    pub latency_runs: usize,
    /// Seed of the weights, the batches and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write every number as JSON to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Worker threads: at least 1, at most [`MAX_THREADS_PER_CORE`] per core
/// (more only slows a run down, and thousands of threads take minutes to
/// start).
fn thread_count(s: &str) -> Result<usize, String> {
    let n = positive(s)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = MAX_THREADS_PER_CORE * cores;
    if n > max {
        return Err(format!(
            "{n} threads on {cores} core(s): at most {max} ({MAX_THREADS_PER_CORE} per core)"
        ));
    }
    Ok(n)
}

/// The most threads `--threads` accepts per core.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// Points of a schedule grid: 2 to 100,000 (a table, not an allocation).
fn grid_points(s: &str) -> Result<usize, String> {
    match at_least_two(s)? {
        n if n > 100_000 => Err(format!("{n} points: at most 100000")),
        n => Ok(n),
    }
}

/// A finite, non-negative number of seconds (at most a day).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

/// An ODE integrator by name (euler, heun, rk4).
fn solver(s: &str) -> Result<OdeSolver, String> {
    s.parse()
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn at_least_two(s: &str) -> Result<usize, String> {
    match positive(s)? {
        1 => Err("must be at least 2".into()),
        n => Ok(n),
    }
}

fn positive_float(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be a positive, finite number".into()),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

fn dataset_name(s: &str) -> Result<String, String> {
    s.parse::<noprop_data::DatasetKind>()
        .map(|k| k.name().to_string())
        .map_err(|e| e.to_string())
}

/// Logs to stderr: warnings by default, more with -v, RUST_LOG overrides.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The process-wide threading setup (see `docs/benchmarks/README.md`):
/// the CPU kernels and NoProp-DT's parallel blocks run on rayon's global
/// pool (`--threads`, else `RAYON_NUM_THREADS`, else one thread per core);
/// candle's own element-wise ops run inline (`CANDLE_NUM_THREADS=1` unless
/// the environment sets it), because its spinning thread pool competes with
/// the kernels' threads for the same cores and measured no faster.
fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any thread exists (set_var is not thread-safe) and before
        // candle reads it.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads {n}: {e}"))?;
    }
    Ok(())
}

/// The whole program: parse, run, report errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = init_threads(cli.threads) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    // `noprop train` started by an MPI launcher joins the other processes.
    let launch = match &cli.command {
        Command::Train(_) => match crate::distributed::launch() {
            Ok(launch) => launch,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => crate::distributed::Launch::single(),
    };
    let result = match &cli.command {
        Command::Train(args) => crate::train_command::run(args, &launch.group),
        Command::Eval(args) => crate::eval::run(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => crate::predict::run(args).map(|()| ExitCode::SUCCESS),
        Command::Info(args) => crate::info::run(args).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => crate::export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => crate::report::run_compare(args).map(|()| ExitCode::SUCCESS),
        Command::GpuCheck(args) => crate::gpu_check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if launch.is_distributed() => {
            // The other processes may be waiting for this one: end them all.
            let g = &launch.group;
            eprintln!("error (rank {} of {}): {e:#}", g.rank(), g.size());
            launch.abort(1);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flag_values_are_usage_errors_naming_the_flag() {
        let cases = [
            (vec!["noprop", "train", "--variant", "xx"], "--variant"),
            (vec!["noprop", "train", "--epochs", "0"], "--epochs"),
            (vec!["noprop", "train", "--threads", "0"], "--threads"),
            (vec!["noprop", "train", "--threads", "10000"], "at most"),
            (
                vec!["noprop", "info", "--variant", "dt", "--grid", "1000000000"],
                "at most 100000",
            ),
            (vec!["noprop", "train", "--log-every", "-1"], "--log-every"),
            (vec!["noprop", "train", "--epochs", "-3"], "--epochs"),
            (vec!["noprop", "train", "--lr", "abc"], "--lr"),
            (
                vec!["noprop", "train", "--dataset", "imagenet"],
                "--dataset",
            ),
            (
                vec!["noprop", "train", "--embedding", "dim30"],
                "--embedding",
            ),
            (
                vec!["noprop", "eval", "--checkpoint", "x", "--solver", "rk5"],
                "--solver",
            ),
            (vec!["noprop", "info"], "--variant"),
            (vec!["noprop", "predict", "--checkpoint", "x"], "IMAGE"),
            (
                vec!["noprop", "gpu-check", "--variants", "xx"],
                "--variants",
            ),
            (
                vec!["noprop", "gpu-check", "--batch-size", "1"],
                "--batch-size",
            ),
            (vec!["noprop", "gpu-check", "--device", "tpu"], "--device"),
        ];
        for (argv, flag) in cases {
            let err = Cli::try_parse_from(&argv).unwrap_err().to_string();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }
}

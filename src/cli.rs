//! The command-line program: `train`, `eval`, `predict` and `summary`.
//!
//! Everything here is I/O around the library: parse flags (clap), find the data, call
//! [`train::fit`] / [`train::evaluate`], print what a Keras user expects to see, and write
//! the run's files atomically. Errors reach the user as one line and a non-zero exit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::Rng;
use serde_json::json;

use crate::data::{self, Dataset, DatasetKind, LoadOptions};
use crate::files::write_atomic;
use crate::model::LayerConfig;
use crate::modelfile::{self, SavedModel};
use crate::optim::OptimizerConfig;
use crate::presets::{self, Preset, INPUT_SHAPE};
use crate::report;
use crate::train::{self, EpochStats, Evaluation, Observer, RunStreams, ScheduleKind, TrainConfig};
use crate::{Init, Sequential};

#[derive(Parser, Debug)]
#[command(
    name = "fmnist",
    version,
    about = "Train, evaluate and use small CNNs on Fashion-MNIST, on the CPU, from scratch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `TrainArgs` costs nothing worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model and write it, its history and its metrics to a run folder.
    Train(TrainArgs),
    /// Test loss and accuracy, confusion matrix and per-class report of a saved model.
    Eval(EvalArgs),
    /// Top-3 classes for images (PNG or PGM files) or test-set images (`test:INDEX`).
    Predict(PredictArgs),
    /// Print a model's architecture table.
    Summary(SummaryArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    /// Fashion-MNIST (Zalando's clothing images).
    Fashion,
    /// The original MNIST digits.
    Mnist,
}

/// The learning-rate schedule's shape (see [`train::ScheduleKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from the rate to ~0 over all steps after the warm-up.
    Cosine,
    /// Multiply the rate by --step-gamma every --step-epochs epochs.
    Step,
}

impl DatasetArg {
    fn kind(self) -> DatasetKind {
        match self {
            DatasetArg::Fashion => DatasetKind::Fashion,
            DatasetArg::Mnist => DatasetKind::Digits,
        }
    }
}

/// Where the data comes from (shared by the commands that read it).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Folder with the four IDX .gz files or the two Kaggle CSV files [default: search
    /// $FASHION_MNIST_DIR, ./data/fashion-mnist, /usr/share/datasets/fashion-mnist, then download]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never try to download the data.
    #[arg(long)]
    pub no_download: bool,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Model and recipe: c1 (write-up C model 1), a and b (write-ups A and B), c2, c3, cmasch (write-up E), ours.
    #[arg(long, default_value = "c1", value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    pub model: String,
    /// Epochs [default: the preset's]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch [default: the preset's]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate [default: the preset's, 1e-3 for Adam]
    #[arg(long)]
    pub lr: Option<f32>,
    /// Optimizer [default: the preset's (adam); sgd means lr 0.01 and momentum 0.9 unless --lr]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Seed of every random stream (split, initialisation, shuffling, dropout, augmentation); with --runs N, run k uses seed + k - 1.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train N models with seeds seed, seed+1, ... (each its own split), each in run-K/ of the run folder; report each, their mean and sample std, and their ensemble (mean softmax) in summary.json.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Learning-rate schedule [default: the preset's; constant, ours: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Epochs of linear warm-up before the schedule's decay [default: the preset's, 0]
    #[arg(long, value_name = "N")]
    pub warmup_epochs: Option<usize>,
    /// With --schedule step: epochs between two decays [default: a third of the epochs]
    #[arg(long, value_name = "N")]
    pub step_epochs: Option<usize>,
    /// With --schedule step: factor of each decay [default: 0.1]
    #[arg(long, value_name = "X")]
    pub step_gamma: Option<f32>,
    /// Label smoothing of the training loss, in [0, 1) [default: the preset's; ours: 0.1]
    #[arg(long, value_name = "X")]
    pub label_smoothing: Option<f32>,
    /// L2 weight decay added to every trainable parameter's gradient (Adam and SGD, coupled as in PyTorch) [default: the preset's, 0]
    #[arg(long, value_name = "X")]
    pub weight_decay: Option<f32>,
    /// On-the-fly random shifts of up to +-N pixels per axis, zero fill (0: off) [default: the preset's, 0]
    #[arg(long, value_name = "N")]
    pub shift: Option<usize>,
    /// On-the-fly horizontal flips with probability P (0: off) [default: the preset's, 0]
    #[arg(long, value_name = "P")]
    pub flip: Option<f32>,
    /// On-the-fly cutout: an NxN square at a random centre set to 0, after the shift (0: off) [default: the preset's]
    #[arg(long, value_name = "N")]
    pub cutout: Option<usize>,
    /// Rotated/flipped copies of each training image made once before training (0: off) [default: the preset's; cmasch: 2]
    #[arg(long, value_name = "N")]
    pub static_copies: Option<usize>,
    /// Largest rotation of those copies, in degrees [default: the preset's; cmasch: 10]
    #[arg(long, value_name = "DEG")]
    pub static_rotation: Option<f32>,
    /// No augmentation at all: --shift 0 --flip 0 --cutout 0 --static-copies 0.
    #[arg(long, conflicts_with_all = ["shift", "flip", "cutout", "static_copies", "static_rotation"])]
    pub no_augment: bool,
    /// Remove every batch-norm layer from the preset's network (ablation).
    #[arg(long)]
    pub no_batch_norm: bool,
    /// Remove every dropout layer from the preset's network (ablation).
    #[arg(long)]
    pub no_dropout: bool,
    /// Worker threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of the training images held out for validation [default: the preset's, 0.2]
    #[arg(long)]
    pub val_split: Option<f32>,
    /// Use only the first N training images (quick runs).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Run folder [default: runs/<timestamp>-<model>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Dataset.
    #[arg(long, value_enum, default_value = "fashion")]
    pub dataset: DatasetArg,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A model file written by `train` (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Worker threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Test-time augmentation: average each image's prediction with its mirror image's
    #[arg(long)]
    pub tta: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A model file written by `train` (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// PNG or PGM files (any size, colour or grey), or test:INDEX for an image of the test set.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SummaryArgs {
    /// A preset's architecture.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    pub model: Option<String>,
    /// The architecture stored in a model file.
    #[arg(long, value_name = "FILE")]
    pub model_file: Option<PathBuf>,
}

/// Runs the program; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Predict(a) => run_predict(a),
        Command::Summary(a) => run_summary(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

type CliResult<T> = Result<T, String>;

/// Sizes rayon's global pool (`None`: rayon's default, `RAYON_NUM_THREADS` or one thread per
/// core) and makes the calling thread its first worker; returns the thread count.
///
/// As a worker, the main thread runs the parallel loops it starts itself, next to `n - 1`
/// pool threads. Otherwise it would hand every parallel op to the pool and sleep until a
/// worker finished it, two thread wake-ups per op: C1 trained at 18.6-19.8k img/s that way
/// at 1 thread, and at 20.0-20.3k img/s with the main thread working (alternating runs).
///
/// A caution for later code: rayon does not run a job that *another* thread hands the pool on
/// the main thread unless the main thread is inside rayon at the time, and with `--threads 1`
/// the main thread is the whole pool. A background thread (a checkpoint writer, a data
/// loader) must therefore not use rayon while the main thread blocks waiting for it.
pub fn set_threads(threads: Option<usize>) -> CliResult<usize> {
    if threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
        .map_err(|e| format!("cannot start the thread pool: {e}"))?;
    Ok(rayon::current_num_threads())
}

fn load_data(kind: DatasetKind, args: &DataArgs) -> CliResult<(Dataset, Dataset, data::DataSource)> {
    let opts = LoadOptions { kind, data_dir: args.data_dir.as_deref(), allow_download: !args.no_download };
    data::load(&opts).map_err(|e| e.to_string())
}

/// `YYYYMMDD-HHMMSS` in UTC, from the system clock (civil-from-days, H. Hinnant's algorithm).
fn timestamp() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn write_json(path: &Path, value: &serde_json::Value) -> CliResult<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise") + "\n";
    write_atomic(path, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Draws a progress bar per epoch and prints a Keras-like line at its end.
struct ConsoleObserver {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Observer for ConsoleObserver {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        let style =
            ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ETA {eta}")
                .expect("valid template")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
        self.started = Instant::now();
    }

    fn batch_end(&mut self, batch: usize, images: usize, running_loss: f32) {
        if let Some(bar) = &self.bar {
            let rate = images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(batch as u64);
            bar.set_message(format!("{rate:>6.0} img/s  loss {running_loss:.4}"));
        }
    }

    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = format!(
            "Epoch {:>2} - {:.1}s - {:.0} img/s - loss: {:.4} - accuracy: {:.4}",
            s.epoch, s.seconds, s.images_per_second, s.loss, s.accuracy
        );
        if let (Some(vl), Some(va)) = (s.val_loss, s.val_accuracy) {
            let _ = write!(line, " - val_loss: {vl:.4} - val_accuracy: {va:.4}");
        }
        println!("{line}");
    }
}

/// What `train` will do, resolved from the flags and the preset before any data is read.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    pub preset: Preset,
    /// The preset's layers, less the batch-norm layers with `--no-batch-norm` and the dropout
    /// layers with `--no-dropout`.
    pub layers: Vec<LayerConfig>,
    pub cfg: TrainConfig,
    pub val_split: f32,
}

/// Resolves the flags against the preset's recipe: a flag given wins, the recipe fills the
/// rest. Checks every knob; the error names the flag or the knob.
pub fn plan_training(a: &TrainArgs) -> CliResult<TrainPlan> {
    let preset = presets::preset(&a.model).ok_or_else(|| format!("unknown model `{}`", a.model))?;
    let recipe = &preset.recipe;
    // The preset's optimizer unless another kind is asked for; then that kind's Keras defaults
    // (Adam 1e-3; SGD 0.01), SGD with momentum 0.9.
    let mut optimizer = match (a.optimizer, recipe.optimizer) {
        (None, o)
        | (Some(OptimizerKind::Adam), o @ OptimizerConfig::Adam { .. })
        | (Some(OptimizerKind::Sgd), o @ OptimizerConfig::Sgd { .. }) => o,
        (Some(OptimizerKind::Adam), _) => OptimizerConfig::adam(1e-3),
        (Some(OptimizerKind::Sgd), _) => OptimizerConfig::sgd(0.01, 0.9),
    };
    if let Some(lr) = a.lr {
        optimizer = optimizer.with_lr(lr);
    }
    if let Some(wd) = a.weight_decay {
        optimizer = train::with_weight_decay(optimizer, wd);
    }
    let mut cfg = recipe.train_config();
    cfg.optimizer = optimizer;
    cfg.epochs = a.epochs.unwrap_or(recipe.epochs);
    cfg.batch_size = a.batch_size.unwrap_or(recipe.batch_size);
    cfg.label_smoothing = a.label_smoothing.unwrap_or(recipe.label_smoothing);

    let kind = match (a.schedule, recipe.schedule.kind) {
        (None, k) | (Some(ScheduleArg::Step), k @ ScheduleKind::Step { .. }) => k,
        (Some(ScheduleArg::Constant), _) => ScheduleKind::Constant,
        (Some(ScheduleArg::Cosine), _) => ScheduleKind::Cosine,
        (Some(ScheduleArg::Step), _) => {
            ScheduleKind::Step { every_epochs: cfg.epochs.div_ceil(3), gamma: 0.1 }
        }
    };
    cfg.schedule.kind = match kind {
        ScheduleKind::Step { every_epochs, gamma } => ScheduleKind::Step {
            every_epochs: a.step_epochs.unwrap_or(every_epochs),
            gamma: a.step_gamma.unwrap_or(gamma),
        },
        other => {
            if a.step_epochs.is_some() || a.step_gamma.is_some() {
                return Err("--step-epochs and --step-gamma apply only to --schedule step".into());
            }
            other
        }
    };
    cfg.schedule.warmup_epochs = a.warmup_epochs.unwrap_or(recipe.schedule.warmup_epochs);

    if a.no_augment {
        cfg.augment = Default::default();
        cfg.static_augment = Default::default();
    }
    if let Some(m) = a.shift {
        cfg.augment.max_shift = m;
    }
    if let Some(p) = a.flip {
        cfg.augment.flip_prob = p;
    }
    if let Some(c) = a.cutout {
        cfg.augment.cutout = c;
    }
    if let Some(c) = a.static_copies {
        cfg.static_augment.copies = c;
        if c > 0 && recipe.static_augment.copies == 0 {
            // Switched on for a preset without copies: write-up E's transform.
            let e = crate::augment::StaticAugment::cmasch();
            cfg.static_augment.max_degrees = e.max_degrees;
            cfg.static_augment.flip_prob = e.flip_prob;
        }
    }
    if let Some(d) = a.static_rotation {
        cfg.static_augment.max_degrees = d;
    }
    cfg.validate()?;

    let val_split = a.val_split.unwrap_or(recipe.val_split);
    if !(0.0..1.0).contains(&val_split) {
        return Err(format!("--val-split {val_split} is not in [0, 1)"));
    }
    if a.limit == Some(0) {
        return Err("--limit must be at least 1".into());
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let mut layers = preset.layers.clone();
    layers.retain(|l| match l {
        LayerConfig::BatchNorm { .. } => !a.no_batch_norm,
        LayerConfig::Dropout { .. } => !a.no_dropout,
        _ => true,
    });
    Ok(TrainPlan { preset, layers, cfg, val_split })
}

/// The parts of the "Training ..." line beyond epochs, batch and optimizer; empty for the
/// write-ups' plain recipes, so their line reads as it always has.
fn recipe_extras(cfg: &TrainConfig) -> String {
    let mut s = String::new();
    match cfg.schedule.kind {
        ScheduleKind::Constant => {}
        ScheduleKind::Cosine => s.push_str(", cosine schedule"),
        ScheduleKind::Step { every_epochs, gamma } => {
            let _ = write!(s, ", step schedule (x{gamma} every {every_epochs} epochs)");
        }
    }
    if cfg.schedule.warmup_epochs > 0 {
        let _ = write!(s, ", {} warm-up epochs", cfg.schedule.warmup_epochs);
    }
    if cfg.label_smoothing > 0.0 {
        let _ = write!(s, ", label smoothing {}", cfg.label_smoothing);
    }
    if cfg.augment.max_shift > 0 {
        let _ = write!(s, ", shifts +-{} px", cfg.augment.max_shift);
    }
    if cfg.augment.flip_prob > 0.0 {
        let _ = write!(s, ", flips p={}", cfg.augment.flip_prob);
    }
    if cfg.augment.cutout > 0 {
        let _ = write!(s, ", cutout {}x{}", cfg.augment.cutout, cfg.augment.cutout);
    }
    s
}

/// Everything the runs of one `train` command share.
struct TrainContext<'a> {
    args: &'a TrainArgs,
    plan: &'a TrainPlan,
    kind: DatasetKind,
    source: &'a data::DataSource,
    full_train: &'a Dataset,
    test: &'a Dataset,
    threads: usize,
    /// `Some((k, n))` for run k (1-based) of n when --runs is above 1.
    run: Option<(usize, usize)>,
}

/// What one run leaves for the summary of several.
struct RunOutcome {
    seed: u64,
    eval: Evaluation,
    best_epoch: usize,
    best_val_loss: Option<f32>,
    wall_seconds: f32,
    train_seconds: f32,
}

fn run_train(a: TrainArgs) -> CliResult<()> {
    let wall = Instant::now();
    let threads = set_threads(a.threads)?;
    let plan = plan_training(&a)?;

    let kind = a.dataset.kind();
    let (full_train, test, source) = load_data(kind, &a.data)?;
    println!("Data: {} from {source}", kind.name());
    let full_train = match a.limit {
        Some(n) => full_train.take(n),
        None => full_train,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", timestamp(), plan.preset.name)));
    let mut ctx = TrainContext {
        args: &a,
        plan: &plan,
        kind,
        source: &source,
        full_train: &full_train,
        test: &test,
        threads,
        run: None,
    };
    if a.runs == 1 {
        train_one(&ctx, a.seed, &out, wall)?;
        return Ok(());
    }

    let mut outcomes = Vec::with_capacity(a.runs);
    for k in 1..=a.runs {
        let seed = a.seed.wrapping_add(k as u64 - 1);
        let dir = out.join(format!("run-{k}"));
        println!("\nRun {k} of {}: seed {seed}, folder {}", a.runs, dir.display());
        ctx.run = Some((k, a.runs));
        outcomes.push(train_one(&ctx, seed, &dir, Instant::now())?);
    }
    summarize_runs(&ctx, &outcomes, &out, wall)
}

/// Prints and writes (`summary.json`) the figures of several runs: each run's, the mean and
/// sample standard deviation of the test accuracy, and the ensemble of all models.
fn summarize_runs(ctx: &TrainContext, outcomes: &[RunOutcome], out: &Path, wall: Instant) -> CliResult<()> {
    let n = outcomes.len();
    println!("\nSummary of {n} runs of {}:", ctx.plan.preset.name);
    for (k, o) in outcomes.iter().enumerate() {
        println!(
            "  run-{}  seed {}  test accuracy {:.2}%  test loss {:.4}  best epoch {}",
            k + 1,
            o.seed,
            100.0 * o.eval.accuracy,
            o.eval.loss,
            o.best_epoch
        );
    }
    let accs: Vec<f64> = outcomes.iter().map(|o| o.eval.accuracy as f64).collect();
    let losses: Vec<f64> = outcomes.iter().map(|o| o.eval.loss as f64).collect();
    let (mean, std) = train::mean_and_sample_std(&accs);
    let (loss_mean, loss_std) = train::mean_and_sample_std(&losses);
    println!(
        "Test accuracy over {n} runs: mean {:.2}%, sample std {:.2}% (n-1); test loss mean {loss_mean:.4}",
        100.0 * mean,
        100.0 * std
    );
    let probs: Vec<&[f32]> = outcomes.iter().map(|o| o.eval.probabilities.as_slice()).collect();
    let k = ctx.kind.class_names().len();
    let ens = train::ensemble(&probs, &ctx.test.labels, k);
    println!(
        "Ensemble of the {n} models (mean of their softmax outputs): test loss {:.4}, test accuracy {:.2}%",
        ens.loss,
        100.0 * ens.accuracy
    );
    let wall_seconds = wall.elapsed().as_secs_f32();
    println!("Wall time {wall_seconds:.1}s");

    let per_run: Vec<serde_json::Value> = outcomes
        .iter()
        .enumerate()
        .map(|(k, o)| {
            json!({
                "run": k + 1,
                "folder": format!("run-{}", k + 1),
                "seed": o.seed,
                "test_accuracy": o.eval.accuracy,
                "test_loss": o.eval.loss,
                "best_epoch": o.best_epoch,
                "best_val_loss": o.best_val_loss,
                "wall_seconds": o.wall_seconds,
                "train_seconds": o.train_seconds,
            })
        })
        .collect();
    let summary = json!({
        "preset": ctx.plan.preset.name,
        "dataset": ctx.kind.folder(),
        "runs": n,
        "base_seed": ctx.args.seed,
        "per_run": per_run,
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "std": "sample standard deviation (divisor n - 1)",
        "test_loss_mean": loss_mean,
        "test_loss_std": loss_std,
        "ensemble_test_accuracy": ens.accuracy,
        "ensemble_test_loss": ens.loss,
        "ensemble": "mean of the models' softmax probabilities; loss -ln(max(p_true, 1e-7))",
        "test_images": ctx.test.len(),
        "wall_seconds": wall_seconds,
    });
    write_json(&out.join("summary.json"), &summary)?;
    println!("Wrote {}", out.join("summary.json").display());
    Ok(())
}

/// One training run with `seed`, written to `out`; prints what `train` always printed.
fn train_one(ctx: &TrainContext, seed: u64, out: &Path, wall: Instant) -> CliResult<RunOutcome> {
    let (plan, cfg, test) = (ctx.plan, &ctx.plan.cfg, ctx.test);
    let mut streams = RunStreams::new(seed);
    let (train_set, val_set) = data::train_val_split(ctx.full_train, plan.val_split, &mut streams.split);
    if train_set.is_empty() {
        return Err("no training images left after the validation split".into());
    }
    let copies = cfg.static_augment.copies;
    let train_desc = if copies > 0 {
        format!(
            "{} train ({} with {copies} rotated/flipped copies of each)",
            train_set.len(),
            train_set.len() * (1 + copies)
        )
    } else {
        format!("{} train", train_set.len())
    };
    println!(
        "Images: {train_desc}, {} validation, {} test; SIMD: {}; threads: {}",
        val_set.len(),
        test.len(),
        kernels::simd::describe(),
        ctx.threads
    );

    let mut model = Sequential::new(&INPUT_SHAPE, &plan.layers, Init::GlorotUniform, &mut streams.init)
        .map_err(|e| e.to_string())?;
    if ctx.run.is_none_or(|(k, _)| k == 1) {
        println!("Model: {} - {}", plan.preset.name, plan.preset.description);
        print!("{}", model.summary());
    }

    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create the run folder {}: {e}", out.display()))?;
    let mut config_json = json!({
        "preset": plan.preset.name,
        "dataset": ctx.kind.folder(),
        "data_source": ctx.source.to_string(),
        "seed": seed,
        "threads": ctx.threads,
        "simd": kernels::simd::describe(),
        "val_split": plan.val_split,
        "limit": ctx.args.limit,
        "train_images": train_set.len(),
        "val_images": val_set.len(),
        "train": cfg,
        "layers": plan.layers,
    });
    if let Some((k, n)) = ctx.run {
        config_json["run"] = json!(k);
        config_json["runs"] = json!(n);
    }
    write_json(&out.join("config.json"), &config_json)?;
    println!(
        "Training {} epochs, batch {}, {:?}{}",
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        recipe_extras(cfg)
    );

    let mut observer = ConsoleObserver { bar: None, started: Instant::now() };
    let result = train::fit(&mut model, cfg, &train_set, &val_set, &mut streams.fit, &mut observer);
    let best_val_loss = result.history[result.best_epoch - 1].val_loss;
    if !val_set.is_empty() {
        println!(
            "Best validation loss {:.4} at epoch {}: keeping those weights",
            best_val_loss.unwrap_or(f32::NAN),
            result.best_epoch
        );
    }

    let t_eval = Instant::now();
    let eval = train::evaluate(&mut model, &cfg.normalization, test, 1000);
    let eval_secs = t_eval.elapsed().as_secs_f32();
    let wall_seconds = wall.elapsed().as_secs_f32();
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images, {:.1}s)",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        eval_secs
    );
    println!("Wall time {wall_seconds:.1}s (training {:.1}s)", result.train_seconds);

    let saved = SavedModel {
        model,
        normalization: cfg.normalization,
        dataset: ctx.kind.folder().to_string(),
        classes: ctx.kind.class_names().iter().map(|s| s.to_string()).collect(),
        preset: plan.preset.name.to_string(),
    };
    let model_path = out.join("model.safetensors");
    modelfile::save(&model_path, &saved)
        .map_err(|e| format!("cannot write {}: {e}", model_path.display()))?;
    write_json(&out.join("history.json"), &serde_json::to_value(&result.history).expect("plain data"))?;
    let mut csv = String::from("epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_second,lr\n");
    for s in &result.history {
        let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            s.epoch,
            s.loss,
            s.accuracy,
            opt(s.val_loss),
            opt(s.val_accuracy),
            s.seconds,
            s.images_per_second,
            s.lr
        );
    }
    let csv_path = out.join("history.csv");
    write_atomic(&csv_path, csv.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;
    let train_ips =
        result.history.iter().map(|s| s.images_per_second).sum::<f32>() / result.history.len() as f32;
    let mut metrics = json!({
        "test_accuracy": eval.accuracy,
        "test_loss": eval.loss,
        "epochs": cfg.epochs,
        "best_epoch": result.best_epoch,
        "wall_seconds": wall_seconds,
        "train_seconds": result.train_seconds,
        "train_images_per_second": train_ips,
        "test_images": test.len(),
        "preset": plan.preset.name,
        "seed": seed,
        "threads": ctx.threads,
    });
    if let Some((k, n)) = ctx.run {
        metrics["run"] = json!(k);
        metrics["runs"] = json!(n);
    }
    write_json(&out.join("metrics.json"), &metrics)?;
    println!("Wrote {}", out.display());
    Ok(RunOutcome {
        seed,
        eval,
        best_epoch: result.best_epoch,
        best_val_loss,
        wall_seconds,
        train_seconds: result.train_seconds,
    })
}

fn dataset_kind_of(saved: &SavedModel) -> CliResult<DatasetKind> {
    match saved.dataset.as_str() {
        "fashion-mnist" => Ok(DatasetKind::Fashion),
        "mnist" => Ok(DatasetKind::Digits),
        other => Err(format!("the model was trained on an unknown dataset `{other}`")),
    }
}

fn load_model(path: &Path) -> CliResult<SavedModel> {
    modelfile::load(path).map_err(|e| e.to_string())
}

fn run_eval(a: EvalArgs) -> CliResult<()> {
    set_threads(a.threads)?;
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let mut saved = load_model(&a.model_file)?;
    let kind = dataset_kind_of(&saved)?;
    let (_, test, source) = load_data(kind, &a.data)?;
    println!("Model: {} ({})", a.model_file.display(), saved.preset);
    println!("Data: {} test set from {source}", kind.name());
    let eval = if a.tta {
        train::evaluate_flip_tta(&mut saved.model, &saved.normalization, &test, a.batch_size)
    } else {
        train::evaluate(&mut saved.model, &saved.normalization, &test, a.batch_size)
    };
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images{})\n",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        if a.tta { ", each averaged with its mirror image" } else { "" }
    );
    let m = report::confusion_matrix(&test.labels, &eval.predictions, saved.classes.len());
    println!("Confusion matrix (rows: true class, columns: predicted class)");
    println!("{}", report::confusion_table(&m, &saved.classes));
    println!("{}", report::classification_report(&m, &saved.classes));
    println!("Most confused pairs (both directions):");
    for (x, y, n) in report::most_confused(&m, 5) {
        println!("  {:>4}  {} <-> {}", n, saved.classes[x], saved.classes[y]);
    }
    Ok(())
}

fn run_predict(a: PredictArgs) -> CliResult<()> {
    let mut saved = load_model(&a.model_file)?;
    let mut test: Option<Dataset> = None;
    let mut images: Vec<u8> = Vec::new();
    let mut truths: Vec<Option<u8>> = Vec::new();
    for input in &a.inputs {
        if let Some(index) = input.strip_prefix("test:") {
            let i: usize =
                index.parse().map_err(|_| format!("{input}: the index after `test:` must be a number"))?;
            if test.is_none() {
                test = Some(load_data(dataset_kind_of(&saved)?, &a.data)?.1);
            }
            let t = test.as_ref().expect("just loaded");
            if i >= t.len() {
                return Err(format!("{input}: the test set has {} images (0..{})", t.len(), t.len() - 1));
            }
            images.extend_from_slice(t.image(i));
            truths.push(Some(t.labels[i]));
        } else {
            images.extend(crate::image::load_for_model(Path::new(input)).map_err(|e| e.to_string())?);
            truths.push(None);
        }
    }
    let n = a.inputs.len();
    // The images go through `evaluate` as a small dataset; its labels are placeholders, so
    // only the probabilities are used.
    let ds = Dataset { images, labels: vec![0; n], rows: 28, cols: 28 };
    let probs = train::evaluate(&mut saved.model, &saved.normalization, &ds, n.max(1)).probabilities;
    let k = saved.classes.len();
    for ((input, p), truth) in a.inputs.iter().zip(probs.chunks(k)).zip(&truths) {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
        let top: Vec<String> =
            order.iter().take(3).map(|&c| format!("{} {:.1}%", saved.classes[c], 100.0 * p[c])).collect();
        let truth = truth.map(|t| format!("  (true: {})", saved.classes[t as usize])).unwrap_or_default();
        println!("{input}: {}{truth}", top.join(", "));
    }
    Ok(())
}

fn run_summary(a: SummaryArgs) -> CliResult<()> {
    let model = match (a.model, a.model_file) {
        (Some(name), _) => {
            let p = presets::preset(&name).expect("clap checked the name");
            println!("Model: {} - {}", p.name, p.description);
            Sequential::new(&INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut Rng::new(0))
                .map_err(|e| e.to_string())?
        }
        (None, Some(path)) => {
            let saved = load_model(&path)?;
            println!("Model file: {} ({}, {})", path.display(), saved.preset, saved.dataset);
            saved.model
        }
        (None, None) => unreachable!("clap requires one of the two"),
    };
    print!("{}", model.summary());
    Ok(())
}

//! The command line's grammar: the clap structs and enums of `fmnist`'s commands and
//! their flags, with their help texts. Parsing only: what a flag means for a run is resolved
//! in `recipe.rs`, and the commands themselves run in their own files.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::data::DatasetKind;
use crate::presets;

/// `train --checkpoint-every`'s default: steps between two checkpoints within an epoch (see
/// the README's "Checkpoints and resume" for its measured cost).
pub const DEFAULT_CHECKPOINT_EVERY: usize = 200;

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
    /// Write a saved model as a PyTorch module (model.py) and its weights (state_dict.safetensors).
    Export(ExportArgs),
    /// Redraw a run folder's pictures (curves, confusion matrix, samples, mistakes) and its report.html.
    Report(ReportArgs),
    /// Show what a model does with one image: first-layer filters, activation maps and a saliency map, in one PNG.
    Explain(ExplainArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    Adam,
    Sgd,
    /// Adam with decoupled weight decay (PyTorch's AdamW).
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    /// Fashion-MNIST (Zalando's clothing images).
    Fashion,
    /// The original MNIST digits.
    Mnist,
}

/// The learning-rate schedule's shape (see [`train::ScheduleKind`](crate::train::ScheduleKind)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from the rate to ~0 over all steps after the warm-up.
    Cosine,
    /// Multiply the rate by --step-gamma every --step-epochs epochs.
    Step,
    /// PyTorch's OneCycleLR (cosine): from lr/25 up to lr over the first 30% of the steps, then down to lr/25/1e4.
    OneCycle,
}

impl DatasetArg {
    pub(super) fn kind(self) -> DatasetKind {
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

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model and recipe: c1 (write-up C model 1), a and b (write-ups A and B), c2, c3, cmasch (write-up E), ours.
    #[arg(long, default_value = "c1", value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    pub model: String,
    /// An architecture file (TOML: layers and, optionally, a recipe) instead of a preset; flags
    /// given here override its recipe. See models/*.toml.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "model")]
    pub arch: Option<PathBuf>,
    /// Epochs, 1 to 10000 [default: the preset's]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch, 1 to 60000, and at most 2^28 activation values per batch for the
    /// model (ours: 1,075; c1: 4,869) [default: the preset's]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate, a positive finite number [default: the preset's, 1e-3 for Adam]
    #[arg(long)]
    pub lr: Option<f32>,
    /// Optimizer [default: the preset's (adam); sgd means lr 0.01 and momentum 0.9 unless --lr; adamw means lr 1e-3, eps 1e-8 and weight decay 0.01 unless --lr / --weight-decay]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Nesterov momentum (PyTorch's SGD(nesterov=True)); SGD only.
    #[arg(long)]
    pub nesterov: bool,
    /// Seed of every random stream (split, initialisation, shuffling, dropout, augmentation); with --runs N, run k uses seed + k - 1.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train N models (1 to 100) with seeds seed, seed+1, ... (each its own split), each in run-K/ of the run folder; report each, their mean and sample std, and their ensemble (mean softmax) in summary.json.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Learning-rate schedule [default: the preset's; constant, ours: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Epochs of linear warm-up before the schedule's decay, at most 10000 [default: the preset's, 0]
    #[arg(long, value_name = "N")]
    pub warmup_epochs: Option<usize>,
    /// With --schedule step: epochs between two decays, 1 to 10000 [default: a third of the epochs]
    #[arg(long, value_name = "N")]
    pub step_epochs: Option<usize>,
    /// With --schedule step: factor of each decay, a positive finite number [default: 0.1]
    #[arg(long, value_name = "X")]
    pub step_gamma: Option<f32>,
    /// Label smoothing of the training loss, in [0, 1) [default: the preset's; ours: 0.1]
    #[arg(long, value_name = "X")]
    pub label_smoothing: Option<f32>,
    /// Weight decay, 0 or a positive finite number: for Adam and SGD an L2 term added to every trainable parameter's gradient (coupled, as in PyTorch); for AdamW the decoupled decay p -= lr*wd*p [default: the preset's, 0; AdamW 0.01]
    #[arg(long, value_name = "X")]
    pub weight_decay: Option<f32>,
    /// On-the-fly random shifts of up to +-N pixels per axis, zero fill, N at most 27 (0: off) [default: the preset's, 0]
    #[arg(long, value_name = "N")]
    pub shift: Option<usize>,
    /// On-the-fly random crops with zero padding P, PyTorch's RandomCrop(28, padding=P): the same draws and bits as --shift P (give one of the two), P at most 27 (0: off)
    #[arg(long, value_name = "P", conflicts_with = "shift")]
    pub crop_padding: Option<usize>,
    /// On-the-fly horizontal flips with probability P, in [0, 1] (0: off) [default: the preset's, 0]
    #[arg(long, value_name = "P")]
    pub flip: Option<f32>,
    /// On-the-fly cutout: an NxN square at a random centre set to 0, after the shift, N at most 56 (0: off) [default: the preset's]
    #[arg(long, value_name = "N")]
    pub cutout: Option<usize>,
    /// On-the-fly random erasing (torchvision's RandomErasing, value 0) with probability P, in [0, 1] (0: off): one rectangle of 2-33% of the image, aspect ratio 0.3-3.3 [default: the preset's, 0]
    #[arg(long, value_name = "P")]
    pub random_erasing: Option<f32>,
    /// Exponential moving average of the weights with this decay, in (0, 1) (e.g. 0.999; warm-up min(DECAY, (1+t)/(10+t))): validation, best epoch and the saved model use the average [default: the preset's, off]
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f32>,
    /// Mixup of every batch (Zhang et al. 2018) with Beta(ALPHA, ALPHA) blends, ALPHA in [0, 10] (e.g. 0.2; 0: off); with --cutmix too, each batch picks one [default: the preset's, off]
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f32>,
    /// CutMix of every batch (Yun et al. 2019): a box of another image of the batch pasted in, its area from Beta(ALPHA, ALPHA), ALPHA in [0, 10] (e.g. 1; 0: off) [default: the preset's, off]
    #[arg(long, value_name = "ALPHA")]
    pub cutmix: Option<f32>,
    /// Rotated/flipped copies of each training image made once before training, at most 10 (0: off) [default: the preset's; cmasch: 2]
    #[arg(long, value_name = "N")]
    pub static_copies: Option<usize>,
    /// Largest rotation of those copies, in degrees, 0 to 180 [default: the preset's; cmasch: 10]
    #[arg(long, value_name = "DEG")]
    pub static_rotation: Option<f32>,
    /// Make those copies from all the training images before the validation split, which is then drawn over originals and copies (the write-up's notebook order; its validation accuracy then flatters) [default: the preset's, off]
    #[arg(long)]
    pub copies_before_split: bool,
    /// No augmentation at all: --shift 0 --flip 0 --cutout 0 --random-erasing 0 --mixup 0 --cutmix 0 --static-copies 0.
    #[arg(long, conflicts_with_all = ["shift", "crop_padding", "flip", "cutout", "random_erasing", "static_copies", "static_rotation", "copies_before_split", "mixup", "cutmix"])]
    pub no_augment: bool,
    /// Remove every batch-norm layer from the preset's network (ablation).
    #[arg(long)]
    pub no_batch_norm: bool,
    /// Remove every dropout layer from the preset's network (ablation).
    #[arg(long)]
    pub no_dropout: bool,
    /// Worker threads, 1 to 256 [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of the training images held out for validation, in [0, 1) [default: the preset's, 0.2]
    #[arg(long)]
    pub val_split: Option<f32>,
    /// Use only the first N training images, 1 to 60000 (quick runs).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Run folder (default: `runs/<timestamp>-<model>`)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Train into an --out folder that already holds a run: its files are replaced once the new run's are all written.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in DIR from its checkpoint, to the bits an uninterrupted run gives; the recipe is the checkpoint's (a flag that contradicts it is refused; --threads may change).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "overwrite"])]
    pub resume: Option<PathBuf>,
    /// Write a checkpoint every N training steps, besides the one at the end of every epoch (0: only at epoch ends).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: usize,
    /// Dataset.
    #[arg(long, value_enum, default_value = "fashion")]
    pub dataset: DatasetArg,
    /// Run on the reference engine: every op on its plain nested-loop twin (slow; see README,
    /// "How it works")
    #[arg(long)]
    pub reference: bool,
    /// Replay a plan file (a run folder's plan.json): how each layer runs, exactly as recorded,
    /// instead of the choices measured on this machine (README, "How the plan is made and
    /// replayed"); at most 1 MiB, for this model's layers.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A model file written by `train` (model.safetensors), at most 257 MiB; its architecture
    /// and tensors are checked in full before use (README, "What a model file must satisfy").
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// Images per batch, 1 to 60000, and at most 2^28 activation values per batch for the
    /// model [default: 1000, or fewer for a model that would not fit]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Worker threads, 1 to 256 [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Test-time augmentation: average each image's prediction with its mirror image's
    #[arg(long)]
    pub tta: bool,
    /// Also write each test image's true class, predicted class and logits (CSV: index,label,predicted,logit_0,...)
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Also draw confusion.png, errors.png and report.html into this folder
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Run on the reference engine: every op on its plain nested-loop twin (slow; see README,
    /// "How it works")
    #[arg(long)]
    pub reference: bool,
    /// Replay a plan file (a run folder's plan.json): how each layer runs, exactly as recorded,
    /// instead of the choices measured on this machine (README, "How the plan is made and
    /// replayed"); at most 1 MiB, for this model's layers.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A model file written by `train` (model.safetensors), at most 257 MiB; its architecture
    /// and tensors are checked in full before use (README, "What a model file must satisfy").
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// PNG or PGM files (any size up to 100 megapixels and 256 MiB, colour or grey), or test:INDEX for an image of the test set.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Also draw the inputs, as the network sees them, beside their top-3 classes into this PNG file
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    /// Run on the reference engine: every op on its plain nested-loop twin (slow; see README,
    /// "How it works")
    #[arg(long)]
    pub reference: bool,
    /// Replay a plan file (a run folder's plan.json): how each layer runs, exactly as recorded,
    /// instead of the choices measured on this machine (README, "How the plan is made and
    /// replayed"); at most 1 MiB, for this model's layers.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub of: SummaryOf,
    /// Show the paths of a plan file (a run folder's plan.json, as `train --plan` replays it)
    /// in the "Runs as" column [default: the rule's, which `train` replaces with choices
    /// measured on this machine]
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

/// The model whose summary `summary` prints: one of the three.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SummaryOf {
    /// A preset's architecture.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(presets::NAMES))]
    pub model: Option<String>,
    /// The architecture stored in a model file.
    #[arg(long, value_name = "FILE")]
    pub model_file: Option<PathBuf>,
    /// An architecture file (TOML).
    #[arg(long, value_name = "FILE.toml")]
    pub arch: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A model file written by `train` (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// Folder to write model.py and state_dict.safetensors into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub pytorch: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A run folder written by `train` (with model.safetensors, history.json, metrics.json; or summary.json and run-K/ folders for --runs N).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Worker threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// A model file written by `train` (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model_file: PathBuf,
    /// A PNG or PGM file, or test:INDEX for an image of the test set.
    #[arg(value_name = "INPUT")]
    pub input: String,
    /// The PNG file to write [default: explain.png]
    #[arg(long, value_name = "FILE.png", default_value = "explain.png")]
    pub out: PathBuf,
    /// Run on the reference engine: every op on its plain nested-loop twin
    #[arg(long)]
    pub reference: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

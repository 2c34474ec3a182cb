//! The reference models and their training recipes.
//!
//! The presets reproduce five public Fashion-MNIST write-ups (Keras/TensorFlow), named A to E
//! throughout the code, and add one of our own. Shapes below are (H, W, C) as Keras writes
//! them; this engine is NCHW. Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
//! 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot. Pixels 0..255, scaled to [0, 1].
//!
//! # The five write-ups
//!
//! | id | data | model | training | reported test accuracy |
//! |---|---|---|---|---|
//! | A (blog, 2020) | Kaggle CSV `fashion-mnist_train.csv` / `_test.csv` (`label,pixel1..pixel784`, header row) | Conv 64@3x3 valid, ReLU -> MaxPool 2 -> Dropout 0.25 -> Flatten (10,816) -> Dense 32 ReLU -> Dense 10 | Adam 1e-3, batch 32, only 100 steps an epoch (3,200 images) x 50 epochs | 90.0% |
//! | B (tutorial) | same CSV; 80/20 train/validation split, seed 12345 | same model as A | Adam 1e-3, batch 512, 50 epochs | ~90-91% (figure only in a picture) |
//! | C (report) | Keras built-in IDX; 80/20 split, seed 2020 | C1: Conv 32@3x3 valid ReLU -> MaxPool 2 -> Flatten (5,408) -> Dense 128 ReLU -> Dense 10 softmax. C2: Conv 32@3x3 -> MaxPool -> Conv 64@3x3 stride 2 same -> MaxPool -> Dense 128 -> Dropout .25 -> Dense 256 -> Dropout .25 -> Dense 128 -> Dense 10. C3: Conv 64@3x3 -> MaxPool -> Conv 128@3x3 s2 same -> MaxPool -> Conv 64@3x3 s2 same -> MaxPool -> Dense 128 -> Dropout .25 -> Dense 256 -> Dropout .5 -> Dense 256 -> Dropout .25 -> Dense 128 -> Dropout .1 -> Dense 10 | Adam 1e-3, batch 512; C1 10 epochs, C2 20, C3 50; then the same C1 on digit MNIST | C1 about 91% |
//! | D (project README) | the four IDX `.gz` files | a Keras CNN | - | 89%; Shirt right 650/1000 (158 taken for T-shirt), Trouser and Bag 966/1000 |
//! | E (cmasch, 2017) | IDX files | BatchNorm on the input -> Conv 64@4x4 same (Keras pads 1 before, 2 after) ReLU -> MaxPool 2 -> Dropout 0.1 -> Conv 64@4x4 valid ReLU -> MaxPool 2 -> Dropout 0.3 -> Flatten (1,600) -> Dense 256 ReLU -> Dropout 0.5 -> Dense 64 ReLU -> BatchNorm -> Dense 10 softmax; 493,772 trainable parameters | Adam 1e-3 (Keras defaults, eps 1e-7), batch 250, 80 epochs, best weights by validation loss; "2x augmentation": two extra copies of each training image made once before training, each rotated by up to +-10 degrees and flipped horizontally with probability 0.5, nearest-edge fill; 5 models, mean reported | 93.43% (train 95.99%, validation 95.64%, test loss 0.2149); the same net on digit MNIST 99.43% |
//!
//! # Where the field stands
//!
//! | reference | Fashion-MNIST test accuracy |
//! |---|---|
//! | human | 83.5% |
//! | best classical model in the dataset's own benchmark (RBF SVC) | 89.7% |
//! | TensorFlow tutorial 2-conv CNN | 91.6% |
//! | cmasch (write-up E) | 93.43% |
//! | 2 conv + 2 dense with flips | 93.9% |
//! | ResNet-18 | 94.9% |
//! | wide ResNets with random erasing | 96.3-96.7% |
//!
//! # The presets
//!
//! | preset | write-up | model |
//! |---|---|---|
//! | `c1` | C | conv 32@3x3, pool, dense 128, dense 10 (693,962 parameters) |
//! | `a`, `b` | A and B | conv 64@3x3, pool, dropout .25, dense 32, dense 10; two recipes |
//! | `c2`, `c3` | C | two and three convolutions with stride-2 'same' layers, dropout |
//! | `cmasch` | E | input batch-norm, two 4x4 convolutions, dropout, batch-norm (493,772) |
//! | `ours` | - | two blocks of two 3x3 'same' convolutions with batch-norm, dense 256 with batch-norm |
//!
//! A [`Recipe`] carries everything a write-up decided besides the layers: epochs, batch,
//! optimizer (with its weight decay), validation split, and the ingredients of our own preset
//! (learning-rate schedule, label smoothing, on-the-fly and static augmentation), each of
//! which the CLI can switch off for an ablation. [`Recipe::train_config`] turns it into the
//! trainer's [`TrainConfig`].
//!
//! Keras's `Conv2D(..., activation='relu')` is written here as a conv layer followed by a
//! ReLU layer; Keras's `Dense(10, activation='softmax')` is a plain dense layer, the softmax
//! being fused into the loss.

use crate::augment::{BatchAugment, StaticAugment};
use crate::mix::BatchMix;
use crate::model::LayerConfig;
use crate::optim::OptimizerConfig;
use crate::train::{LrSchedule, Normalization, TrainConfig};

/// How a preset trains, as its write-up did.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Write-up A ran only 100 steps an epoch; `None` means one full pass.
    pub steps_per_epoch: Option<usize>,
    /// Fraction of the training images held out for validation.
    pub val_split: f32,
    /// Learning-rate schedule (the write-ups: constant).
    pub schedule: LrSchedule,
    /// Label smoothing of the training loss (the write-ups: 0).
    pub label_smoothing: f32,
    /// Random shifts and flips of every batch (the write-ups: none).
    pub augment: BatchAugment,
    /// Transformed copies made once before training (write-up E: two; the others: none).
    pub static_augment: StaticAugment,
    /// Decay of the weights' exponential moving average (the write-ups: none).
    pub ema: Option<f32>,
    /// Mixup and CutMix (the write-ups: none).
    pub mix: BatchMix,
}

impl Recipe {
    /// The trainer's configuration for this recipe: best weights by validation loss, pixels
    /// scaled by 1/255.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            steps_per_epoch: self.steps_per_epoch,
            label_smoothing: self.label_smoothing,
            keep_best: true,
            normalization: Normalization::default(),
            schedule: self.schedule,
            augment: self.augment,
            static_augment: self.static_augment,
            ema: self.ema,
            mix: self.mix,
        }
    }
}

/// A named model with its recipe: an architecture file ([`crate::arch`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: String,
    pub description: String,
    pub layers: Vec<LayerConfig>,
    pub recipe: Recipe,
}

/// Fashion-MNIST images: one channel, 28 x 28.
pub const INPUT_SHAPE: [usize; 3] = [1, 28, 28];

/// The names `preset` accepts.
pub const NAMES: [&str; 7] = ["c1", "a", "b", "c2", "c3", "cmasch", "ours"];

/// The presets' architecture files (`models/*.toml`), built into the binary so that `--model
/// c1` works from anywhere, and read by the same parser as a user's `--arch` file.
const FILES: [(&str, &str); 7] = [
    ("c1", include_str!("../models/c1.toml")),
    ("a", include_str!("../models/a.toml")),
    ("b", include_str!("../models/b.toml")),
    ("c2", include_str!("../models/c2.toml")),
    ("c3", include_str!("../models/c3.toml")),
    ("cmasch", include_str!("../models/cmasch.toml")),
    ("ours", include_str!("../models/ours.toml")),
];

/// Looks a preset up by name; `None` for an unknown name.
///
/// # Panics
/// If a built-in file does not parse (a programmer error, caught by the tests).
pub fn preset(name: &str) -> Option<Preset> {
    let (_, text) = FILES.iter().find(|(n, _)| *n == name)?;
    let origin = format!("models/{name}.toml");
    Some(crate::arch::parse(text, &origin, name).unwrap_or_else(|e| panic!("built-in preset: {e}")))
}

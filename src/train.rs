//! The training loop: mini-batches, the optimizer and its learning-rate schedule, data
//! augmentation, validation, best-weights selection and evaluation; and the figures over
//! several runs (mean, sample standard deviation, the ensemble of their softmax outputs). No
//! I/O: progress is reported through the [`Observer`] trait, so the CLI can draw progress bars
//! while tests and benchmarks stay silent.
//!
//! Pixels enter the network as `value / 255` (the write-ups' scaling), in `[N, 1, 28, 28]`.
//!
//! # Random streams
//! A run is fixed by one seed. [`RunStreams::new`] forks `Rng::new(seed)` in this order:
//! 1. `split`: the train/validation split (`data::train_val_split`);
//! 2. `init`: the weights' initialisation;
//! 3. `fit`: handed to [`fit`], which forks it in turn, in this order, into
//!    1. shuffling (one Fisher-Yates shuffle per pass over the training images),
//!    2. dropout masks,
//!    3. on-the-fly augmentation ([`crate::augment::augment_batch`]),
//!    4. the static augmented copies ([`crate::augment::expand`]).
//!
//! Every fork is taken whether or not its feature is switched on, so switching one on does not
//! change the others' streams, and a seed gives the same split, initial weights, batches and
//! dropout masks as before augmentation existed.
//!
//! The test set plays no part in any choice made here: the best epoch is picked on the
//! validation loss, and evaluation on the test set comes after.

use std::time::Instant;

use kernels::softmax::softmax_xent_forward;
use kernels::Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{self, BatchAugment, StaticAugment};
use crate::data::Dataset;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::params::Params;
use crate::tape::Tape;
use crate::tensor::Tensor;
use crate::{Mode, Sequential};

/// Pixel scaling applied to the raw bytes: `x = (byte * scale - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub scale: f32,
    pub mean: f32,
    pub std: f32,
}

impl Default for Normalization {
    /// The write-ups' `x / 255`.
    fn default() -> Self {
        Normalization { scale: 1.0 / 255.0, mean: 0.0, std: 1.0 }
    }
}

impl Normalization {
    /// The images at `idx` as a `[n, 1, rows, cols]` tensor.
    pub fn batch(&self, ds: &Dataset, idx: &[usize]) -> Tensor {
        let p = ds.pixels();
        let mut data = Vec::with_capacity(idx.len() * p);
        let (a, b) = (self.scale / self.std, -self.mean / self.std);
        for &i in idx {
            data.extend(ds.image(i).iter().map(|&v| v as f32 * a + b));
        }
        Tensor::from_vec(&[idx.len(), 1, ds.rows, ds.cols], data)
    }

    /// `n` images given as raw pixels, as a `[n, 1, rows, cols]` tensor.
    ///
    /// # Shapes
    /// `pixels`: `[n, rows, cols]`.
    pub fn pixels(&self, pixels: &[u8], n: usize, rows: usize, cols: usize) -> Tensor {
        assert_eq!(pixels.len(), n * rows * cols, "Normalization::pixels: not {n} images of {rows}x{cols}");
        let (a, b) = (self.scale / self.std, -self.mean / self.std);
        Tensor::from_vec(&[n, 1, rows, cols], pixels.iter().map(|&v| v as f32 * a + b).collect())
    }
}

/// How the learning rate decays. Written with the optimizer's learning rate `lr`, the
/// batches per epoch `S`, all steps `T = epochs * S`, the warm-up steps `W = warmup_epochs *
/// S`, and `t` the 0-based index of the update about to be taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `lr` throughout (Keras's default).
    #[default]
    Constant,
    /// Cosine decay over the steps after the warm-up (Loshchilov & Hutter 2017, SGDR, one
    /// cycle, no restart): `lr * (1 + cos(pi * (t - W) / (T - W))) / 2`. It starts at `lr`
    /// and the last step gets `lr * (1 + cos(pi * (T - W - 1) / (T - W))) / 2`, just above 0
    /// (it would reach 0 one step after the end).
    Cosine,
    /// `lr * gamma^floor(t / (every_epochs * S))`: multiplied by `gamma` at the start of
    /// every `every_epochs`-th epoch, counting from the start of training.
    Step { every_epochs: usize, gamma: f32 },
}

/// A learning-rate schedule: an optional linear warm-up, then [`ScheduleKind`]'s decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Warm-up epochs: during the first `W` steps the rate is `lr * (t + 1) / W`, rising
    /// linearly to `lr` (Goyal et al. 2017). A warm-up as long as the run leaves no decay.
    pub warmup_epochs: usize,
}

impl LrSchedule {
    /// The constant rate.
    pub fn constant() -> Self {
        LrSchedule::default()
    }

    /// Cosine decay after `warmup_epochs` of linear warm-up.
    pub fn cosine(warmup_epochs: usize) -> Self {
        LrSchedule { kind: ScheduleKind::Cosine, warmup_epochs }
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if let ScheduleKind::Step { every_epochs, gamma } = self.kind {
            if every_epochs == 0 {
                return Err("the step schedule needs at least 1 epoch between steps".into());
            }
            if !(gamma > 0.0 && gamma.is_finite()) {
                return Err(format!("step schedule factor {gamma} must be a positive number"));
            }
        }
        Ok(())
    }

    /// The learning rate of update `t` (0-based) of a run of `epochs` epochs of
    /// `steps_per_epoch` batches, starting from `lr` (formulas at [`ScheduleKind`]).
    pub fn lr_at(&self, lr: f32, t: usize, steps_per_epoch: usize, epochs: usize) -> f32 {
        let total = epochs * steps_per_epoch;
        let warmup = (self.warmup_epochs * steps_per_epoch).min(total);
        if t < warmup {
            return (lr as f64 * (t + 1) as f64 / warmup as f64) as f32;
        }
        let factor = match self.kind {
            ScheduleKind::Constant => return lr,
            ScheduleKind::Cosine => {
                let progress = (t - warmup) as f64 / (total - warmup).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::Step { every_epochs, gamma } => {
                (gamma as f64).powi((t / (every_epochs * steps_per_epoch).max(1)) as i32)
            }
        };
        (lr as f64 * factor) as f32
    }
}

/// Everything that decides a training run (besides the data and the model's layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Batches per epoch; `None` is one full pass over the training images.
    pub steps_per_epoch: Option<usize>,
    /// Label smoothing of the training loss (0 = plain cross-entropy): the target is
    /// `1 - s + s/K` for the true class and `s/K` for the others (Szegedy et al. 2016, as
    /// Keras's `label_smoothing`). Validation and test losses are always plain cross-entropy.
    pub label_smoothing: f32,
    /// Keep the weights of the epoch with the lowest validation loss (Keras's
    /// `ModelCheckpoint(save_best_only=True)` / `restore_best_weights`).
    pub keep_best: bool,
    pub normalization: Normalization,
    /// Learning-rate schedule, applied before every update.
    pub schedule: LrSchedule,
    /// Random shifts and flips applied to every batch.
    pub augment: BatchAugment,
    /// Transformed copies added to the training images once, before the first epoch.
    pub static_augment: StaticAugment,
}

impl Default for TrainConfig {
    /// Keras's `fit` defaults where it has them (batch 32, Adam 1e-3, constant rate), 10
    /// epochs, the best weights kept, no smoothing and no augmentation.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            optimizer: OptimizerConfig::adam(1e-3),
            steps_per_epoch: None,
            label_smoothing: 0.0,
            keep_best: true,
            normalization: Normalization::default(),
            schedule: LrSchedule::default(),
            augment: BatchAugment::default(),
            static_augment: StaticAugment::default(),
        }
    }
}

impl TrainConfig {
    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch size must be at least 1".into());
        }
        if self.steps_per_epoch == Some(0) {
            return Err("steps per epoch must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!("label smoothing {} is not in [0, 1)", self.label_smoothing));
        }
        let lr = self.optimizer.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("learning rate {lr} must be a positive number"));
        }
        let wd = weight_decay(&self.optimizer);
        if !(wd >= 0.0 && wd.is_finite()) {
            return Err(format!("weight decay {wd} must be 0 or a positive number"));
        }
        self.schedule.validate()?;
        self.augment.validate()?;
        self.static_augment.validate()
    }
}

/// The optimizer's weight decay.
pub fn weight_decay(o: &OptimizerConfig) -> f32 {
    match *o {
        OptimizerConfig::Sgd { weight_decay, .. } | OptimizerConfig::Adam { weight_decay, .. } => {
            weight_decay
        }
    }
}

/// The optimizer with another weight decay: an L2 term `wd * w` added to every trainable
/// parameter's gradient before the update (biases and batch-norm scales included), as
/// PyTorch's `weight_decay` for both SGD and Adam (coupled; not AdamW's decoupled decay).
pub fn with_weight_decay(o: OptimizerConfig, wd: f32) -> OptimizerConfig {
    match o {
        OptimizerConfig::Sgd { lr, momentum, .. } => OptimizerConfig::Sgd { lr, momentum, weight_decay: wd },
        OptimizerConfig::Adam { lr, beta1, beta2, eps, .. } => {
            OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay: wd }
        }
    }
}

/// The random streams of one run, forked from `Rng::new(seed)` in the order the module docs
/// give.
#[derive(Clone, Debug)]
pub struct RunStreams {
    pub split: Rng,
    pub init: Rng,
    pub fit: Rng,
}

impl RunStreams {
    pub fn new(seed: u64) -> Self {
        let mut root = Rng::new(seed);
        let split = root.fork();
        let init = root.fork();
        let fit = root.fork();
        RunStreams { split, init, fit }
    }
}

/// One epoch's figures, as Keras's `History` holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean training loss and accuracy over the epoch's batches (in training mode, so with
    /// dropout active, as Keras reports them).
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub seconds: f32,
    /// Training images per second over the epoch (forward + backward + update).
    pub images_per_second: f32,
    /// The learning rate of the epoch's last update.
    pub lr: f32,
}

/// Progress callbacks. All methods have empty defaults.
pub trait Observer {
    /// An epoch of `batches` batches begins.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A batch finished; `running_loss` is the mean over the epoch so far.
    fn batch_end(&mut self, _batch: usize, _images: usize, _running_loss: f32) {}
    fn epoch_end(&mut self, _stats: &EpochStats) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// Loss, accuracy and per-image predictions of a model on a dataset.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
    /// `[N, 10]` class probabilities.
    pub probabilities: Vec<f32>,
    pub predictions: Vec<u8>,
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// Runs the model in evaluation mode over `ds` in batches of `batch_size`.
pub fn evaluate(model: &mut Sequential, norm: &Normalization, ds: &Dataset, batch_size: usize) -> Evaluation {
    let k = model.output_shape().iter().product::<usize>();
    let mut probabilities = vec![0.0; ds.len() * k];
    let mut total_loss = 0.0f64;
    let mut rng = Rng::new(0); // unused in Eval mode: dropout is the identity
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut tape = Tape::no_grad();
    for (b, idx) in all.chunks(batch_size.max(1)).enumerate() {
        tape.reset();
        let x = tape.input(norm.batch(ds, idx));
        let logits = model.forward(&mut tape, x, Mode::Eval, &mut rng);
        let labels = &ds.labels[idx[0]..idx[0] + idx.len()];
        let out = &mut probabilities[b * batch_size * k..][..idx.len() * k];
        total_loss += softmax_xent_forward(tape.value(logits).data(), labels, idx.len(), k, 0.0, out);
    }
    let predictions: Vec<u8> = probabilities.chunks(k.max(1)).map(|p| argmax(p) as u8).collect();
    let correct = predictions.iter().zip(&ds.labels).filter(|(p, l)| p == l).count();
    let n = ds.len().max(1) as f32;
    Evaluation {
        loss: (total_loss / n as f64) as f32,
        accuracy: correct as f32 / n,
        probabilities,
        predictions,
    }
}

/// [`evaluate`] with test-time augmentation by horizontal flips: the model sees every image
/// and its mirror image, and the two probability vectors are averaged ([`ensemble`]'s
/// arithmetic). Meant for models trained with flips; one model, twice the evaluation time.
pub fn evaluate_flip_tta(
    model: &mut Sequential,
    norm: &Normalization,
    ds: &Dataset,
    batch_size: usize,
) -> Evaluation {
    let plain = evaluate(model, norm, ds, batch_size);
    let mut mirrored = ds.clone();
    let p = ds.pixels().max(1);
    for (dst, src) in mirrored.images.chunks_exact_mut(p).zip(ds.images.chunks_exact(p)) {
        augment::flip_horizontal(src, ds.rows, ds.cols, dst);
    }
    let flipped = evaluate(model, norm, &mirrored, batch_size);
    let k = model.output_shape().iter().product::<usize>();
    ensemble(&[&plain.probabilities, &flipped.probabilities], &ds.labels, k)
}

/// The outcome of [`fit`].
#[derive(Clone, Debug)]
pub struct FitResult {
    pub history: Vec<EpochStats>,
    /// 1-based epoch whose weights the model holds at the end.
    pub best_epoch: usize,
    pub train_seconds: f32,
}

/// What one training step did.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Images in the batch.
    pub images: usize,
    /// The batch's mean loss times its images (so sums over batches give the epoch's mean).
    pub loss_sum: f64,
    /// Images the batch classified right (in training mode, before the update).
    pub correct: usize,
    /// The learning rate this step used.
    pub lr: f32,
}

/// Training steps one after another, as [`fit`] runs them and `fmnist-speed` times them:
/// batches from a shuffled order (reshuffled after each full pass), on-the-fly augmentation,
/// forward, backward, the schedule's learning rate, the optimizer's update. One tape is reused,
/// so after the first step its buffers are recycled.
pub struct Stepper {
    cfg: TrainConfig,
    opt: Optimizer,
    tape: Tape,
    order: Vec<usize>,
    cursor: usize,
    step: usize,
    batches_per_epoch: usize,
    classes: usize,
    shuffle_rng: Rng,
    dropout_rng: Rng,
    augment_rng: Rng,
    raw: Vec<u8>,       // [batch, rows, cols], the batch's pixels as stored
    augmented: Vec<u8>, // [batch, rows, cols], after augment_batch
}

impl Stepper {
    /// A stepper for `model` over a training set of `n_train` images. Forks three streams from
    /// `rng`, in this order: shuffling, dropout, on-the-fly augmentation.
    pub fn new(cfg: &TrainConfig, model: &Sequential, n_train: usize, rng: &mut Rng) -> Stepper {
        cfg.validate().expect("invalid training config");
        assert!(n_train > 0, "Stepper: no training images");
        let (shuffle_rng, dropout_rng, augment_rng) = (rng.fork(), rng.fork(), rng.fork());
        Stepper {
            cfg: cfg.clone(),
            opt: Optimizer::new(cfg.optimizer, model.params()).on(model.engine()),
            tape: Tape::new(),
            order: (0..n_train).collect(),
            cursor: n_train, // forces a shuffle before the first batch
            step: 0,
            batches_per_epoch: cfg.steps_per_epoch.unwrap_or(n_train.div_ceil(cfg.batch_size)),
            classes: model.output_shape().iter().product(),
            shuffle_rng,
            dropout_rng,
            augment_rng,
            raw: Vec::new(),
            augmented: Vec::new(),
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// Trains `model` on the next batch of `train` (the set the stepper was built for).
    pub fn step(&mut self, model: &mut Sequential, train: &Dataset) -> StepOutcome {
        let (cfg, n) = (&self.cfg, self.order.len());
        assert_eq!(train.len(), n, "Stepper built for {n} images, given {}", train.len());
        if self.cursor >= n {
            self.shuffle_rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let idx = &self.order[self.cursor..(self.cursor + cfg.batch_size).min(n)];
        self.cursor += idx.len();
        let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();

        let x = if cfg.augment.is_active() {
            let (rows, cols) = (train.rows, train.cols);
            self.raw.clear();
            idx.iter().for_each(|&i| self.raw.extend_from_slice(train.image(i)));
            self.augmented.resize(self.raw.len(), 0);
            augment::augment_batch(
                &self.raw,
                rows,
                cols,
                &cfg.augment,
                &mut self.augment_rng,
                &mut self.augmented,
            );
            cfg.normalization.pixels(&self.augmented, idx.len(), rows, cols)
        } else {
            cfg.normalization.batch(train, idx)
        };

        let tape = &mut self.tape;
        tape.reset();
        let x = tape.input(x);
        let logits = model.forward(tape, x, Mode::Train, &mut self.dropout_rng);
        let loss = model.loss(tape, logits, &labels, cfg.label_smoothing);
        model.zero_grads();
        model.backward(tape, loss);
        let lr = cfg.schedule.lr_at(cfg.optimizer.lr(), self.step, self.batches_per_epoch, cfg.epochs);
        self.opt.set_lr(lr);
        self.opt.step(model.params_mut());
        self.step += 1;

        let z = tape.value(logits).data();
        let correct =
            z.chunks(self.classes).zip(&labels).filter(|(row, &l)| argmax(row) == l as usize).count();
        let loss_sum = tape.value(loss).data()[0] as f64 * idx.len() as f64;
        StepOutcome { images: idx.len(), loss_sum, correct, lr }
    }
}

/// Trains `model` on `train`, validating on `val` after each epoch (skipped when `val` is
/// empty). `rng` is forked for shuffling, dropout, on-the-fly augmentation (the [`Stepper`]'s)
/// and the static copies, in that order (module docs), so the run is fixed by the caller's
/// generator.
///
/// `train` must not contain the validation images: the static copies are made from `train`
/// alone (after the split), so no transformed validation image leaks into training.
pub fn fit(
    model: &mut Sequential,
    cfg: &TrainConfig,
    train: &Dataset,
    val: &Dataset,
    rng: &mut Rng,
    observer: &mut dyn Observer,
) -> FitResult {
    cfg.validate().expect("invalid training config");
    assert!(!train.is_empty(), "fit: no training images");
    let started = Instant::now();
    let n_train = train.len() * (1 + cfg.static_augment.copies);
    let mut stepper = Stepper::new(cfg, model, n_train, rng);
    let mut static_rng = rng.fork();
    let expanded;
    let train = if cfg.static_augment.is_active() {
        expanded = augment::expand(train, &cfg.static_augment, &mut static_rng);
        &expanded
    } else {
        train
    };
    let batches = stepper.batches_per_epoch();
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f32, usize, Params)> = None;

    for epoch in 1..=cfg.epochs {
        observer.epoch_start(epoch, cfg.epochs, batches);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.optimizer.lr();
        for b in 0..batches {
            let s = stepper.step(model, train);
            (loss_sum, correct, seen, lr) =
                (loss_sum + s.loss_sum, correct + s.correct, seen + s.images, s.lr);
            observer.batch_end(b + 1, seen, (loss_sum / seen as f64) as f32);
        }
        let train_secs = t0.elapsed().as_secs_f32();
        let (val_loss, val_accuracy) = if val.is_empty() {
            (None, None)
        } else {
            let e = evaluate(model, &cfg.normalization, val, 1000);
            (Some(e.loss), Some(e.accuracy))
        };
        let stats = EpochStats {
            epoch,
            loss: (loss_sum / seen as f64) as f32,
            accuracy: correct as f32 / seen as f32,
            val_loss,
            val_accuracy,
            seconds: t0.elapsed().as_secs_f32(),
            images_per_second: seen as f32 / train_secs.max(1e-9),
            lr,
        };
        observer.epoch_end(&stats);
        if cfg.keep_best {
            if let Some(vl) = val_loss {
                if best.as_ref().is_none_or(|(b, _, _)| vl < *b) {
                    best = Some((vl, epoch, model.params().clone()));
                }
            }
        }
        history.push(stats);
    }
    let best_epoch = match best {
        Some((_, epoch, params)) => {
            *model.params_mut() = params;
            epoch
        }
        None => cfg.epochs,
    };
    FitResult { history, best_epoch, train_seconds: started.elapsed().as_secs_f32() }
}

/// Mean and sample standard deviation (divisor `n - 1`, numpy's `ddof=1`) of `xs`; the
/// deviation is NaN for a single value.
///
/// # Panics
/// If `xs` is empty.
pub fn mean_and_sample_std(xs: &[f64]) -> (f64, f64) {
    assert!(!xs.is_empty(), "mean_and_sample_std of no values");
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let ss = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// Smallest probability the ensemble's loss takes the log of (Keras's `epsilon()`, with
/// which its cross-entropy on probabilities clips), so a class every model ruled out costs
/// `-ln(1e-7) = 16.1` rather than infinity.
pub const ENSEMBLE_EPS: f32 = 1e-7;

/// The ensemble that averages several models' class probabilities: its accuracy, its loss
/// (mean of `-ln(max(p_true, 1e-7))`, see [`ENSEMBLE_EPS`]), its probabilities and its
/// predictions (argmax, first on ties).
///
/// # Shapes
/// Each of `probabilities`: `[N, K]` (as [`Evaluation::probabilities`]); `labels`: `[N]`.
///
/// # Panics
/// If there is no model, or a model's probabilities are not `labels.len() * k` long.
pub fn ensemble(probabilities: &[&[f32]], labels: &[u8], k: usize) -> Evaluation {
    assert!(!probabilities.is_empty(), "ensemble of no models");
    let n = labels.len();
    for (m, p) in probabilities.iter().enumerate() {
        assert_eq!(p.len(), n * k, "ensemble: model {m} has {} probabilities for {n} images x {k}", p.len());
    }
    let inv = 1.0 / probabilities.len() as f64;
    let mean: Vec<f32> =
        (0..n * k).map(|j| (probabilities.iter().map(|p| p[j] as f64).sum::<f64>() * inv) as f32).collect();
    let predictions: Vec<u8> = mean.chunks(k.max(1)).map(|p| argmax(p) as u8).collect();
    let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
    let total_loss: f64 =
        mean.chunks(k.max(1)).zip(labels).map(|(p, &l)| -(p[l as usize].max(ENSEMBLE_EPS) as f64).ln()).sum();
    // The same arithmetic as `evaluate`, so one model's ensemble reports its figures.
    let n_f = n.max(1) as f32;
    Evaluation {
        loss: (total_loss / n_f as f64) as f32,
        accuracy: correct as f32 / n_f,
        probabilities: mean,
        predictions,
    }
}

//! The training loop: mini-batches, the optimizer, validation, best-weights selection and
//! evaluation. No I/O: progress is reported through the [`Observer`] trait, so the CLI can
//! draw progress bars while tests and benchmarks stay silent.
//!
//! Pixels enter the network as `value / 255` (the write-ups' scaling), in `[N, 1, 28, 28]`.

use std::time::Instant;

use kernels::softmax::softmax_xent_forward;
use kernels::Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::ops;
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
}

/// Everything that decides a training run (besides the data and the model's layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Batches per epoch; `None` is one full pass over the training images.
    pub steps_per_epoch: Option<usize>,
    /// Label smoothing of the loss (0 = plain cross-entropy).
    pub label_smoothing: f32,
    /// Keep the weights of the epoch with the lowest validation loss (Keras's
    /// `ModelCheckpoint(save_best_only=True)` / `restore_best_weights`).
    pub keep_best: bool,
    pub normalization: Normalization,
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
        Ok(())
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
    let mut tape = Tape::new();
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

/// The outcome of [`fit`].
#[derive(Clone, Debug)]
pub struct FitResult {
    pub history: Vec<EpochStats>,
    /// 1-based epoch whose weights the model holds at the end.
    pub best_epoch: usize,
    pub train_seconds: f32,
}

/// Trains `model` on `train`, validating on `val` after each epoch (skipped when `val` is
/// empty). Random streams: `rng` is forked once for shuffling and once for dropout, so the
/// run is fixed by the caller's generator.
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
    let mut shuffle_rng = rng.fork();
    let mut dropout_rng = rng.fork();
    let mut opt = Optimizer::new(cfg.optimizer, &model.params);
    let k = model.output_shape().iter().product::<usize>();
    let n = train.len();
    let full_pass = n.div_ceil(cfg.batch_size);
    let batches = cfg.steps_per_epoch.unwrap_or(full_pass);

    let mut order: Vec<usize> = (0..n).collect();
    let mut cursor = n; // forces a shuffle before the first batch
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f32, usize, Params)> = None;
    let started = Instant::now();
    let mut tape = Tape::new();

    for epoch in 1..=cfg.epochs {
        observer.epoch_start(epoch, cfg.epochs, batches);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for b in 0..batches {
            if cursor >= n {
                shuffle_rng.shuffle(&mut order);
                cursor = 0;
            }
            let idx = &order[cursor..(cursor + cfg.batch_size).min(n)];
            cursor += idx.len();
            let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();

            tape.reset();
            let x = tape.input(cfg.normalization.batch(train, idx));
            let logits = model.forward(&mut tape, x, Mode::Train, &mut dropout_rng);
            let loss = ops::softmax_cross_entropy(&mut tape, logits, &labels, cfg.label_smoothing);
            model.params.zero_grads();
            tape.backward(loss, &mut model.params);
            opt.step(&mut model.params);

            let z = tape.value(logits).data();
            correct += z.chunks(k).zip(&labels).filter(|(row, &l)| argmax(row) == l as usize).count();
            loss_sum += tape.value(loss).data()[0] as f64 * idx.len() as f64;
            seen += idx.len();
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
            lr: cfg.optimizer.lr(),
        };
        observer.epoch_end(&stats);
        if cfg.keep_best {
            if let Some(vl) = val_loss {
                if best.as_ref().is_none_or(|(b, _, _)| vl < *b) {
                    best = Some((vl, epoch, model.params.clone()));
                }
            }
        }
        history.push(stats);
    }
    let best_epoch = match best {
        Some((_, epoch, params)) => {
            model.params = params;
            epoch
        }
        None => cfg.epochs,
    };
    FitResult { history, best_epoch, train_seconds: started.elapsed().as_secs_f32() }
}

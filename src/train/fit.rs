//! The training loop ([`fit`]): the static augmented copies, epochs of [`Stepper`] steps,
//! validation after each epoch, and the best epoch's weights kept. It does no I/O (progress
//! goes to an [`Observer`]) and never looks at the test set.

use std::time::Instant;

use kernels::Rng;

use super::{evaluate, EpochStats, Observer, Stepper, TrainConfig};
use crate::augment;
use crate::data::Dataset;
use crate::params::Params;
use crate::Sequential;

/// The outcome of [`fit`].
#[derive(Clone, Debug)]
pub struct FitResult {
    pub history: Vec<EpochStats>,
    /// 1-based epoch whose weights the model holds at the end.
    pub best_epoch: usize,
    pub train_seconds: f32,
}

/// Trains `model` on `train`, validating on `val` after each epoch (skipped when `val` is
/// empty). `rng` is forked for shuffling, dropout, on-the-fly augmentation (the [`Stepper`]'s)
/// and the static copies, in that order ([`train`](crate::train)'s module docs), so the run is
/// fixed by the caller's generator.
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

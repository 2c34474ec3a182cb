//! The training loop: the static augmented copies, epochs of [`Stepper`] steps, validation
//! after each epoch, and the best epoch's weights kept. [`fit`] runs it in one go;
//! [`Trainer`] runs it one unit of work (a step, or an epoch's validation) at a time, so the
//! caller can save a checkpoint between two units ([`Trainer::snapshot`]), stop, and later
//! continue from it ([`Trainer::restore`]) to the same bits. It does no I/O (progress goes to
//! an [`Observer`]) and never looks at the test set.
//!
//! With `cfg.ema`, the trainer also keeps the weights' moving average ([`ema_update`] after
//! every step): validation, the best epoch's weights and the final model are the average's,
//! while the raw weights go on training.

use std::borrow::Cow;
use std::time::Instant;

use kernels::Rng;

use super::{ema_update, evaluate, Best, EpochStats, Observer, Progress, StepOutcome, Stepper, TrainConfig};
use super::{TrainSnapshot, TrainState};
use crate::augment;
use crate::data::{self, Dataset};
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

/// What one [`Trainer::advance`] did.
#[derive(Clone, Debug)]
pub enum Advance {
    /// A training step.
    Step(StepOutcome),
    /// An epoch's validation: the epoch is over, with these figures.
    EpochEnd(EpochStats),
    /// Nothing: every epoch is done.
    Done,
}

/// The training and validation images of one run: `val_fraction` of `full` drawn at random
/// with `split_rng` (`data::train_val_split`). With the static copies' `before_split` (the
/// write-up's notebook order) the copies of all of `full` are made first, from
/// `split_rng.fork()`, and the split is drawn over originals and copies together: 60,000
/// images with 2 copies and 0.2 give 144,000 training and 36,000 validation images.
pub fn split_for_run(
    full: &Dataset,
    cfg: &TrainConfig,
    val_fraction: f32,
    split_rng: &mut Rng,
) -> (Dataset, Dataset) {
    if cfg.static_augment.copies_before_split() {
        let mut copy_rng = split_rng.fork();
        let all = augment::expand(full, &cfg.static_augment, &mut copy_rng);
        data::train_val_split(&all, val_fraction, split_rng)
    } else {
        data::train_val_split(full, val_fraction, split_rng)
    }
}

/// Trains `model` on `train`, validating on `val` after each epoch (skipped when `val` is
/// empty). `rng` is forked for shuffling, dropout, on-the-fly augmentation (the [`Stepper`]'s)
/// and the static copies, in that order ([`train`](crate::train)'s module docs), so the run is
/// fixed by the caller's generator.
///
/// `train` must not contain the validation images: the static copies are made from `train`
/// alone (after the split), so no transformed validation image leaks into training. With
/// `before_split` the copies are already in `train` and `val` ([`split_for_run`]), and none
/// is made here.
pub fn fit(
    model: &mut Sequential,
    cfg: &TrainConfig,
    train: &Dataset,
    val: &Dataset,
    rng: &mut Rng,
    observer: &mut dyn Observer,
) -> FitResult {
    let mut trainer = Trainer::new(model, cfg, train, val, rng);
    while !matches!(trainer.advance(model, observer), Advance::Done) {}
    trainer.finish(model)
}

/// [`fit`], one unit of work at a time, with its state open to checkpoints.
pub struct Trainer<'d> {
    cfg: TrainConfig,
    stepper: Stepper,
    /// The training images, with the static copies when they are on.
    train: Cow<'d, Dataset>,
    val: &'d Dataset,
    progress: Progress,
    best: Option<Best<Params>>,
    /// The weights' moving average, with `cfg.ema`.
    ema: Option<Params>,
    /// When this session started, and when it started on the epoch in progress.
    session: Instant,
    epoch_clock: Option<Instant>,
    /// `progress`'s times when this session started (or its epoch clock did).
    train_seconds_before: f64,
    epoch_train_before: f64,
    epoch_before: f64,
}

impl<'d> Trainer<'d> {
    /// A trainer before its first step: forks `rng` as [`fit`] does and makes the static
    /// copies.
    pub fn new(
        model: &Sequential,
        cfg: &TrainConfig,
        train: &'d Dataset,
        val: &'d Dataset,
        rng: &mut Rng,
    ) -> Trainer<'d> {
        cfg.validate().expect("invalid training config");
        assert!(!train.is_empty(), "fit: no training images");
        let session = Instant::now();
        let copies = if cfg.static_augment.after_split() { cfg.static_augment.copies } else { 0 };
        let n_train = train.len() * (1 + copies);
        let stepper = Stepper::new(cfg, model, n_train, rng);
        let mut static_rng = rng.fork();
        let train = if cfg.static_augment.after_split() {
            Cow::Owned(augment::expand(train, &cfg.static_augment, &mut static_rng))
        } else {
            Cow::Borrowed(train)
        };
        Trainer {
            cfg: cfg.clone(),
            stepper,
            train,
            val,
            progress: Progress::start(cfg.optimizer.lr()),
            best: None,
            ema: cfg.ema.map(|_| model.params().clone()),
            session,
            epoch_clock: None,
            train_seconds_before: 0.0,
            epoch_train_before: 0.0,
            epoch_before: 0.0,
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.stepper.batches_per_epoch()
    }

    /// Training steps taken so far (in every session).
    pub fn steps(&self) -> usize {
        self.stepper.steps()
    }

    /// Where the run stands (its times as of the last unit of work).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Whether every epoch is done.
    pub fn is_done(&self) -> bool {
        self.progress.epoch > self.cfg.epochs
    }

    /// Runs the next unit of work: the epoch's next step, or, once its steps are done, its
    /// validation and the best-weights bookkeeping.
    pub fn advance(&mut self, model: &mut Sequential, observer: &mut dyn Observer) -> Advance {
        if self.is_done() {
            return Advance::Done;
        }
        let batches = self.stepper.batches_per_epoch();
        let clock = *self.epoch_clock.get_or_insert_with(|| {
            if self.progress.batch < batches {
                observer.epoch_start(self.progress.epoch, self.cfg.epochs, batches);
            }
            Instant::now()
        });
        let p = &mut self.progress;
        if p.batch < batches {
            let s = self.stepper.step(model, &self.train);
            if let (Some(decay), Some(ema)) = (self.cfg.ema, self.ema.as_mut()) {
                ema_update(ema, model.params(), decay, self.stepper.steps() - 1);
            }
            p.batch += 1;
            (p.loss_sum, p.correct, p.seen, p.lr) =
                (p.loss_sum + s.loss_sum, p.correct + s.correct, p.seen + s.images, s.lr);
            p.epoch_train_seconds = self.epoch_train_before + clock.elapsed().as_secs_f64();
            p.epoch_seconds = self.epoch_before + clock.elapsed().as_secs_f64();
            p.train_seconds = self.train_seconds_before + self.session.elapsed().as_secs_f64();
            observer.batch_end(p.batch, p.seen, (p.loss_sum / p.seen as f64) as f32);
            return Advance::Step(s);
        }

        // With EMA the averaged weights are validated (and kept as the best): swapped into the
        // model for the evaluation, and back.
        if let Some(ema) = self.ema.as_mut() {
            std::mem::swap(model.params_mut(), ema);
        }
        let (val_loss, val_accuracy) = if self.val.is_empty() {
            (None, None)
        } else {
            let e = evaluate(model, &self.cfg.normalization, self.val, 1000);
            (Some(e.loss), Some(e.accuracy))
        };
        let stats = EpochStats {
            epoch: p.epoch,
            loss: (p.loss_sum / p.seen as f64) as f32,
            accuracy: p.correct as f32 / p.seen as f32,
            val_loss,
            val_accuracy,
            seconds: (self.epoch_before + clock.elapsed().as_secs_f64()) as f32,
            images_per_second: (p.seen as f64 / p.epoch_train_seconds.max(1e-9)) as f32,
            lr: p.lr,
        };
        observer.epoch_end(&stats);
        if self.cfg.keep_best {
            if let Some(vl) = val_loss {
                if self.best.as_ref().is_none_or(|b| vl < b.val_loss) {
                    self.best = Some(Best { val_loss: vl, epoch: p.epoch, params: model.params().clone() });
                }
            }
        }
        if let Some(ema) = self.ema.as_mut() {
            std::mem::swap(model.params_mut(), ema);
        }
        p.history.push(stats.clone());
        *p = Progress {
            epoch: p.epoch + 1,
            lr: p.lr,
            train_seconds: self.train_seconds_before + self.session.elapsed().as_secs_f64(),
            history: std::mem::take(&mut p.history),
            ..Progress::start(p.lr)
        };
        (self.epoch_clock, self.epoch_train_before, self.epoch_before) = (None, 0.0, 0.0);
        Advance::EpochEnd(stats)
    }

    /// The whole state, borrowed from the trainer and `model` (the model it trains).
    pub fn snapshot<'a>(&'a self, model: &'a Sequential) -> TrainSnapshot<'a> {
        TrainSnapshot {
            progress: self.progress.clone(),
            stepper: self.stepper.position(),
            optimizer: self.stepper.optimizer(),
            params: model.params(),
            best: self.best.as_ref().map(|b| Best {
                val_loss: b.val_loss,
                epoch: b.epoch,
                params: &b.params,
            }),
            ema: self.ema.as_ref(),
        }
    }

    /// Puts a saved state back into this trainer, fresh from [`Trainer::new`] with the same
    /// configuration, data and generator, and into `model`: the next [`advance`](Self::advance)
    /// does what the saved run's next one would have. Refused, with the trainer unchanged,
    /// if the state does not fit the model or the training set.
    pub fn restore(&mut self, model: &mut Sequential, state: TrainState) -> Result<(), String> {
        let fits = |values: &[Vec<f32>]| {
            values.len() == model.params().len()
                && values.iter().zip(model.params().iter()).all(|(v, p)| v.len() == p.value.len())
        };
        if !fits(&state.params)
            || !state.best.as_ref().is_none_or(|b| fits(&b.params))
            || !state.ema.as_ref().is_none_or(|e| fits(e))
        {
            return Err("the saved weights do not fit this model".into());
        }
        if state.ema.is_some() != self.ema.is_some() {
            return Err(format!(
                "the saved state {} a moving average of the weights, this run {}",
                if state.ema.is_some() { "has" } else { "has no" },
                if self.ema.is_some() { "keeps one" } else { "keeps none" }
            ));
        }
        let batches = self.stepper.batches_per_epoch();
        let p = &state.progress;
        if p.epoch == 0
            || p.epoch > self.cfg.epochs + 1
            || p.batch > batches
            || p.history.len() != p.epoch - 1
        {
            return Err(format!(
                "the saved position (epoch {}, batch {}, {} epochs of history) does not fit a run of {} epochs of {batches} batches",
                p.epoch,
                p.batch,
                p.history.len(),
                self.cfg.epochs
            ));
        }
        if let Some(b) = &state.best {
            if b.epoch == 0 || b.epoch > p.history.len() {
                return Err(format!(
                    "the saved best epoch {} is not one of the {} epochs done",
                    b.epoch,
                    p.history.len()
                ));
            }
        }
        self.stepper.restore(state.stepper, state.optimizer_step, state.moments)?;
        let set = |params: &mut Params, values: Vec<Vec<f32>>| {
            for (p, v) in params.iter_mut().zip(values) {
                p.value.data_mut().copy_from_slice(&v);
            }
        };
        set(model.params_mut(), state.params);
        if let (Some(ema), Some(values)) = (self.ema.as_mut(), state.ema) {
            set(ema, values);
        }
        self.best = state.best.map(|b| {
            let mut params = model.params().clone();
            set(&mut params, b.params);
            Best { val_loss: b.val_loss, epoch: b.epoch, params }
        });
        self.train_seconds_before = state.progress.train_seconds;
        self.epoch_train_before = state.progress.epoch_train_seconds;
        self.epoch_before = state.progress.epoch_seconds;
        self.session = Instant::now();
        self.epoch_clock = None;
        self.progress = state.progress;
        Ok(())
    }

    /// Ends training: puts the best epoch's weights into `model` (with `keep_best` and a
    /// validation set), else the moving average's (with `cfg.ema`), and returns the history.
    pub fn finish(self, model: &mut Sequential) -> FitResult {
        let best_epoch = match (self.best, self.ema) {
            (Some(b), _) => {
                *model.params_mut() = b.params;
                b.epoch
            }
            (None, Some(ema)) => {
                *model.params_mut() = ema;
                self.cfg.epochs
            }
            (None, None) => self.cfg.epochs,
        };
        FitResult {
            history: self.progress.history,
            best_epoch,
            train_seconds: (self.train_seconds_before + self.session.elapsed().as_secs_f64()) as f32,
        }
    }
}

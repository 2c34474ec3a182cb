//! One training step at a time ([`Stepper`]): the next batch of a shuffled order, on-the-fly
//! augmentation, mixup or CutMix ([`crate::mix`]), forward, loss, backward, the schedule's
//! learning rate and the optimizer's update. It knows nothing of epochs, validation or best weights:
//! [`fit`](crate::train::fit) counts the epochs, and `fmnist-speed` times bare steps.
//!
//! Everything a step reads from the steps before it is the optimizer's state, the shuffled
//! order with the cursor into it, the update count and three random streams;
//! [`Stepper::position`] and [`Stepper::optimizer`] expose it for a checkpoint and
//! [`Stepper::restore`] puts it back, so the next step is the one an uninterrupted run takes.
//! The tape's recycled buffers are not state: every op overwrites or zeroes what it reuses.

use kernels::Rng;

use super::{argmax, TrainConfig};
use crate::augment;
use crate::data::Dataset;
use crate::mix;
use crate::optim::Optimizer;
use crate::tape::Tape;
use crate::{Mode, Sequential};

/// What one training step did.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Images in the batch.
    pub images: usize,
    /// The batch's mean loss times its images (so sums over batches give the epoch's mean).
    pub loss_sum: f64,
    /// Images the batch classified right (in training mode, before the update; in a mixed
    /// batch, against each image's own label).
    pub correct: usize,
    /// The learning rate this step used.
    pub lr: f32,
}

/// Where a [`Stepper`] stands between two steps, besides the optimizer's state: all a
/// checkpoint needs to resume it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepperPosition {
    /// Updates taken so far (the schedule's `t` of the next one).
    pub step: usize,
    /// The current pass's shuffled order of the training images, `[n_train]`.
    pub order: Vec<usize>,
    /// Images of `order` already used; `n_train` means the next step reshuffles.
    pub cursor: usize,
    /// The shuffling, dropout and on-the-fly augmentation streams' states.
    pub shuffle_rng: [u64; 4],
    pub dropout_rng: [u64; 4],
    pub augment_rng: [u64; 4],
}

/// Training steps one after another, as [`fit`](crate::train::fit) runs them and
/// `fmnist-speed` times them: batches from a shuffled order (reshuffled after each full pass),
/// on-the-fly augmentation, forward, backward, the schedule's learning rate, the optimizer's
/// update. One tape is reused, so after the first step its buffers are recycled.
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

    /// Updates taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Where the stepper stands (see [`StepperPosition`]).
    pub fn position(&self) -> StepperPosition {
        StepperPosition {
            step: self.step,
            order: self.order.clone(),
            cursor: self.cursor,
            shuffle_rng: self.shuffle_rng.state(),
            dropout_rng: self.dropout_rng.state(),
            augment_rng: self.augment_rng.state(),
        }
    }

    /// The optimizer, whose step count and moments a checkpoint saves.
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// Puts back a saved position and optimizer state (see [`Optimizer::restore_state`]), so
    /// the next [`step`](Self::step) is the one the saved run would have taken. Refused, with
    /// nothing changed, unless `order` is a permutation of this stepper's training images and
    /// the optimizer state fits the model.
    pub fn restore(
        &mut self,
        pos: StepperPosition,
        optimizer_step: u64,
        moments: Vec<Vec<Vec<f32>>>,
    ) -> Result<(), String> {
        let n = self.order.len();
        if pos.order.len() != n {
            return Err(format!("the saved order has {} images, the training set {n}", pos.order.len()));
        }
        let mut seen = vec![false; n];
        for &i in &pos.order {
            if i >= n || std::mem::replace(&mut seen[i], true) {
                return Err(format!("the saved order is not a permutation of the {n} training images"));
            }
        }
        if pos.cursor > n {
            return Err(format!("the saved cursor {} is past the {n} training images", pos.cursor));
        }
        self.opt.restore_state(optimizer_step, moments)?;
        self.step = pos.step;
        self.order = pos.order;
        self.cursor = pos.cursor;
        self.shuffle_rng = Rng::from_state(pos.shuffle_rng);
        self.dropout_rng = Rng::from_state(pos.dropout_rng);
        self.augment_rng = Rng::from_state(pos.augment_rng);
        Ok(())
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

        let mut x = if cfg.augment.is_active() {
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
        // Mixup / CutMix: image i blended with image n-1-i, and the loss with its label.
        let lam =
            mix::mix_batch(x.data_mut(), idx.len(), train.rows, train.cols, &cfg.mix, &mut self.augment_rng);

        let tape = &mut self.tape;
        tape.reset();
        let x = tape.input(x);
        let logits = model.forward(tape, x, Mode::Train, &mut self.dropout_rng);
        let loss = match lam {
            None => model.loss(tape, logits, &labels, cfg.label_smoothing),
            Some(lam) => {
                let partners: Vec<u8> = labels.iter().rev().copied().collect();
                model.loss_mixed(tape, logits, (&labels, &partners, lam), cfg.label_smoothing)
            }
        };
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

//! One training step at a time ([`Stepper`]): the next batch of a shuffled order, on-the-fly
//! augmentation, forward, loss, backward, the schedule's learning rate and the optimizer's
//! update. It knows nothing of epochs, validation or best weights:
//! [`fit`](crate::train::fit) counts the epochs, and `fmnist-speed` times bare steps.

use kernels::Rng;

use super::{argmax, TrainConfig};
use crate::augment;
use crate::data::Dataset;
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
    /// Images the batch classified right (in training mode, before the update).
    pub correct: usize,
    /// The learning rate this step used.
    pub lr: f32,
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

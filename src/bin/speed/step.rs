//! One training step exactly as `fmnist::train::fit` takes it, held in a struct so that a timer
//! can call it step by step: `fmnist-speed` (`src/bin/speed.rs`) and the criterion bench
//! `benches/train.rs` (which includes this file with `#[path]`) share it, so both time the same
//! work.
//!
//! A step is: take the next `batch_size` indices of the shuffled order (reshuffling when the
//! order runs out), build the `[B, 1, 28, 28]` input with the pixel scaling (after the recipe's
//! random shifts and flips, when it has them), `tape.reset()`, forward in [`Mode::Train`],
//! softmax cross-entropy (with the recipe's label smoothing), zero the gradients, backward, the
//! learning rate of the recipe's schedule, one optimizer step, and the running loss and accuracy
//! `fit` keeps. The random streams are forked in the order the CLI and `fit` fork them (split,
//! initialisation, then shuffling, dropout, augmentation), so a seed starts from the same weights
//! and batches as `fmnist train --seed`.
//!
//! Not here: validation, best-weights bookkeeping, progress reporting (outside `fit`'s timed
//! loop, or free), and the static augmented copies of E's recipe, made once before training:
//! they change how many images an epoch has, not what a step costs.

use fmnist::augment::augment_batch;
use fmnist::data::{train_val_split, Dataset};
use fmnist::optim::Optimizer;
use fmnist::presets::{Preset, Recipe, INPUT_SHAPE};
use fmnist::train::{argmax, Normalization};
use fmnist::{ops, Init, Mode, Rng, Sequential, Tape};

/// The training split of `full` as `fmnist train` makes it (`--seed seed`), and the generator
/// left after the split, from which [`Stepper::new`] forks the rest.
pub fn split(full: &Dataset, val_split: f32, seed: u64) -> (Dataset, Rng) {
    let mut rng = Rng::new(seed);
    let mut split_rng = rng.fork();
    let (train, _val) = train_val_split(full, val_split, &mut split_rng);
    (train, rng)
}

/// A model, its optimizer and tape, and `fit`'s batching state.
pub struct Stepper {
    pub model: Sequential,
    recipe: Recipe,
    opt: Optimizer,
    tape: Tape,
    norm: Normalization,
    batch_size: usize,
    /// Values per output row (10 classes).
    k: usize,
    order: Vec<usize>,
    cursor: usize,
    /// Updates taken so far (the schedule's `t`).
    step: usize,
    shuffle_rng: Rng,
    dropout_rng: Rng,
    augment_rng: Rng,
    /// `[B, rows, cols]`: the batch's pixels as stored, and after the random shifts and flips.
    raw: Vec<u8>,
    augmented: Vec<u8>,
    /// Running sums since the last [`Stepper::reset_stats`], as `fit` keeps them per epoch.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
}

impl Stepper {
    /// A freshly initialised `preset` model that will train on `n_train` images in batches of
    /// `batch_size`. `rng` is the generator [`split`] returned.
    pub fn new(preset: &Preset, batch_size: usize, n_train: usize, rng: &mut Rng) -> Stepper {
        assert!(batch_size > 0 && n_train > 0, "Stepper: batch {batch_size}, {n_train} images");
        let mut init_rng = rng.fork();
        let model = Sequential::new(&INPUT_SHAPE, &preset.layers, Init::GlorotUniform, &mut init_rng)
            .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
        // `fit` forks its shuffling, dropout and augmentation streams from the one it is given.
        let mut fit_rng = rng.fork();
        let shuffle_rng = fit_rng.fork();
        let dropout_rng = fit_rng.fork();
        let augment_rng = fit_rng.fork();
        let opt = Optimizer::new(preset.recipe.optimizer, &model.params);
        let k = model.output_shape().iter().product();
        Stepper {
            model,
            recipe: preset.recipe.clone(),
            opt,
            tape: Tape::new(),
            norm: Normalization::default(),
            batch_size,
            k,
            order: (0..n_train).collect(),
            cursor: n_train, // forces a shuffle before the first batch, as in `fit`
            step: 0,
            shuffle_rng,
            dropout_rng,
            augment_rng,
            raw: Vec::new(),
            augmented: Vec::new(),
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
        }
    }

    /// One full training step on the next batch of `train`; returns the images it used.
    pub fn step(&mut self, train: &Dataset) -> usize {
        let n = self.order.len();
        assert_eq!(train.len(), n, "Stepper built for {n} images, given {}", train.len());
        if self.cursor >= n {
            self.shuffle_rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let idx = &self.order[self.cursor..(self.cursor + self.batch_size).min(n)];
        self.cursor += idx.len();
        let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();

        let x = if self.recipe.augment.is_active() {
            let (rows, cols) = (train.rows, train.cols);
            self.raw.clear();
            idx.iter().for_each(|&i| self.raw.extend_from_slice(train.image(i)));
            self.augmented.resize(self.raw.len(), 0);
            augment_batch(
                &self.raw,
                rows,
                cols,
                &self.recipe.augment,
                &mut self.augment_rng,
                &mut self.augmented,
            );
            self.norm.pixels(&self.augmented, idx.len(), rows, cols)
        } else {
            self.norm.batch(train, idx)
        };

        let tape = &mut self.tape;
        tape.reset();
        let x = tape.input(x);
        let logits = self.model.forward(tape, x, Mode::Train, &mut self.dropout_rng);
        let loss = ops::softmax_cross_entropy(tape, logits, &labels, self.recipe.label_smoothing);
        self.model.params.zero_grads();
        tape.backward(loss, &mut self.model.params);
        let batches = self.recipe.steps_per_epoch.unwrap_or(n.div_ceil(self.batch_size));
        let base_lr = self.recipe.optimizer.lr();
        self.opt.set_lr(self.recipe.schedule.lr_at(base_lr, self.step, batches, self.recipe.epochs));
        self.opt.step(&mut self.model.params);
        self.step += 1;

        let z = tape.value(logits).data();
        self.correct += z.chunks(self.k).zip(&labels).filter(|(row, &l)| argmax(row) == l as usize).count();
        self.loss_sum += tape.value(loss).data()[0] as f64 * idx.len() as f64;
        self.seen += idx.len();
        idx.len()
    }

    /// Mean training loss and accuracy since the last reset.
    pub fn stats(&self) -> (f64, f64) {
        let n = self.seen.max(1) as f64;
        (self.loss_sum / n, self.correct as f64 / n)
    }

    pub fn reset_stats(&mut self) {
        (self.loss_sum, self.correct, self.seen) = (0.0, 0, 0);
    }
}

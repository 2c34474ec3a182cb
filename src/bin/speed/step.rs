//! The training step `fmnist-speed` and `benches/train.rs` time: [`fmnist::train::Stepper`],
//! the very step `fit` runs, set up for a preset with the random streams `fmnist train` forks.
//! It leaves out only E's static copies (made once before training), which change an epoch's
//! length but not the cost of a step.

use fmnist::data::{train_val_split, Dataset};
use fmnist::presets::{Preset, INPUT_SHAPE};
use fmnist::train::Stepper as TrainStepper;
use fmnist::{Engine, Init, Rng, Sequential};

/// The training part of the `val_split` split for `seed`, and the generator left after the
/// split's fork (as `fmnist train` has it).
pub fn split(full: &Dataset, val_split: f32, seed: u64) -> (Dataset, Rng) {
    let mut rng = Rng::new(seed);
    let mut split_rng = rng.fork();
    let (train, _val) = train_val_split(full, val_split, &mut split_rng);
    (train, rng)
}

/// A preset's model and its training steps, with running loss and accuracy.
pub struct Stepper {
    pub model: Sequential,
    steps: TrainStepper,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
}

impl Stepper {
    /// Forks the initialisation stream, then the training streams, from `rng` (as `fmnist train`),
    /// for a model on `engine`.
    pub fn new(preset: &Preset, batch_size: usize, n_train: usize, rng: &mut Rng, engine: Engine) -> Stepper {
        assert!(batch_size > 0 && n_train > 0, "Stepper: batch {batch_size}, {n_train} images");
        let mut init_rng = rng.fork();
        let mut model = Sequential::new(&INPUT_SHAPE, &preset.layers, Init::GlorotUniform, &mut init_rng)
            .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
        model.set_engine(engine);
        let mut cfg = preset.recipe.train_config();
        cfg.batch_size = batch_size;
        let mut fit_rng = rng.fork();
        let steps = TrainStepper::new(&cfg, &model, n_train, &mut fit_rng);
        Stepper { model, steps, loss_sum: 0.0, correct: 0, seen: 0 }
    }

    /// One training step on `train`; returns the images it used.
    pub fn step(&mut self, train: &Dataset) -> usize {
        let s = self.steps.step(&mut self.model, train);
        (self.loss_sum, self.correct, self.seen) =
            (self.loss_sum + s.loss_sum, self.correct + s.correct, self.seen + s.images);
        s.images
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

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
//! 1. `split`: the train/validation split (`data::train_val_split`; with the static copies
//!    made before the split, its first fork makes them: [`split_for_run`]);
//! 2. `init`: the weights' initialisation;
//! 3. `fit`: handed to [`fit`], which forks it in turn, in this order, into
//!    1. shuffling (one Fisher-Yates shuffle per pass over the training images),
//!    2. dropout masks,
//!    3. on-the-fly augmentation ([`crate::augment::augment_batch`]),
//!    4. the static augmented copies ([`crate::augment::expand`]), when made after the split.
//!
//! Every fork is taken whether or not its feature is switched on, so switching one on does not
//! change the others' streams, and a seed gives the same split, initial weights, batches and
//! dropout masks as before augmentation existed.
//!
//! The test set plays no part in any choice made here: the best epoch is picked on the
//! validation loss, and evaluation on the test set comes after.
//!
//! # Reading order
//! Each file does one job; read them in this order, each building on the ones before:
//! 1. `normalize.rs`: [`Normalization`], the pixel bytes turned into the network's input;
//! 2. `schedule.rs`: [`LrSchedule`] and [`ScheduleKind`], the learning rate of each update;
//! 3. `config.rs`: [`TrainConfig`], everything that decides a run, and [`weight_decay`] /
//!    [`with_weight_decay`];
//! 4. `streams.rs`: [`RunStreams`], the run's random streams (order above);
//! 5. `observer.rs`: [`EpochStats`], [`Observer`] and [`Silent`], how progress is reported;
//! 6. `evaluate.rs`: [`evaluate`], [`evaluate_flip_tta`], [`ensemble`] and [`argmax`];
//! 7. `step.rs`: [`Stepper`], one training step (batch, forward, backward, update);
//!    `ema.rs`: [`ema_update`], the weights' moving average the [`Trainer`] keeps;
//! 8. `state.rs`: [`Progress`], [`TrainSnapshot`] and [`TrainState`], a run's state between
//!    two units of work, as a checkpoint holds it;
//! 9. `fit.rs`: [`fit`], the epochs of steps, validation and the best weights; [`Trainer`],
//!    the same one unit of work at a time, with its state saved and restored;
//! 10. `stats.rs`: [`mean_and_sample_std`], the figures over several runs.
//!
//! Everything public is re-exported here, so the paths are `crate::train::Item`; the files
//! themselves are private.

mod config;
mod ema;
mod evaluate;
mod fit;
mod normalize;
mod observer;
mod schedule;
mod state;
mod stats;
mod step;
mod streams;

pub use config::{weight_decay, with_weight_decay, TrainConfig};
pub use ema::{ema_decay_at, ema_update};
pub use evaluate::{argmax, ensemble, evaluate, evaluate_flip_tta, logits, Evaluation, ENSEMBLE_EPS};
pub use fit::{fit, split_for_run, Advance, FitResult, Trainer};
pub use normalize::Normalization;
pub use observer::{EpochStats, Observer, Silent};
pub use schedule::{LrSchedule, ScheduleKind};
pub use state::{Best, Progress, TrainSnapshot, TrainState};
pub use stats::mean_and_sample_std;
pub use step::{StepOutcome, Stepper, StepperPosition};
pub use streams::RunStreams;

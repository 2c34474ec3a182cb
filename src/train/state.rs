//! A training run's state between two units of work, as a checkpoint saves it and a resume
//! puts it back: where the run stands ([`Progress`]: epoch, batch, this epoch's running sums,
//! the history), what the [`Stepper`](crate::train::Stepper) carries
//! ([`StepperPosition`](crate::train::StepperPosition) and the optimizer), the weights and the
//! best-so-far weights. [`TrainSnapshot`] borrows it from a live
//! [`Trainer`](crate::train::Trainer) (nothing large is copied); [`TrainState`] owns it, as
//! read back from a file. No I/O and no file format here: `crate::checkpoint` does both.
//!
//! What is not here, because it is rebuilt exactly from the seed and the data: the split, the
//! initial weights (overwritten anyway) and the static augmented copies. Their streams are
//! used up before the first step.

use super::{EpochStats, StepperPosition};
use crate::optim::Optimizer;
use crate::params::Params;

/// Where a run stands, in epochs and batches, with what the epoch in progress has added up.
///
/// Units of work run in this order: the batches of epoch 1, its validation, the batches of
/// epoch 2, ... A state with `batch == batches` has all of the epoch's steps done and its
/// validation still to come.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The 1-based epoch in progress; `epochs + 1` once every epoch is done.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// This epoch so far: the sum of the batches' mean loss times their images, the images
    /// classified right, the images seen, and the last step's learning rate.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub lr: f32,
    /// Seconds this epoch has taken so far: training only, and training plus validation.
    pub epoch_train_seconds: f64,
    pub epoch_seconds: f64,
    /// Seconds of training (every epoch, every session) so far.
    pub train_seconds: f64,
    /// The finished epochs' figures.
    pub history: Vec<EpochStats>,
}

impl Progress {
    /// The state before the first step.
    pub fn start(lr: f32) -> Progress {
        Progress {
            epoch: 1,
            batch: 0,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            lr,
            epoch_train_seconds: 0.0,
            epoch_seconds: 0.0,
            train_seconds: 0.0,
            history: Vec::new(),
        }
    }
}

/// The best epoch so far (lowest validation loss) and its weights.
#[derive(Clone, Debug)]
pub struct Best<P> {
    pub val_loss: f32,
    /// 1-based.
    pub epoch: usize,
    pub params: P,
}

/// A live trainer's whole state, borrowed: what a checkpoint writes.
pub struct TrainSnapshot<'a> {
    pub progress: Progress,
    pub stepper: StepperPosition,
    pub optimizer: &'a Optimizer,
    /// The model's parameters and batch-norm running statistics.
    pub params: &'a Params,
    pub best: Option<Best<&'a Params>>,
    /// The weights' moving average, when the run keeps one.
    pub ema: Option<&'a Params>,
}

/// A trainer's whole state, owned: what a checkpoint reads back. Tensors are listed in the
/// model's parameter order ([`Params::iter`]) and hold its values only.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub progress: Progress,
    pub stepper: StepperPosition,
    pub optimizer_step: u64,
    /// Per parameter: the optimizer's slots (see [`Optimizer::state`]).
    pub moments: Vec<Vec<Vec<f32>>>,
    pub params: Vec<Vec<f32>>,
    pub best: Option<Best<Vec<Vec<f32>>>>,
    /// The weights' moving average (every parameter, buffers included), when kept.
    pub ema: Option<Vec<Vec<f32>>>,
}

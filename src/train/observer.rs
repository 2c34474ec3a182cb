//! How training reports progress: one epoch's figures ([`EpochStats`]) and the callbacks
//! ([`Observer`]) that [`fit`](crate::train::fit) calls. No drawing or printing here: the CLI's
//! observer draws the progress bars, and [`Silent`] reports nothing (tests, benchmarks).

use serde::{Deserialize, Serialize};

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

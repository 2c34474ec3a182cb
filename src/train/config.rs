//! The training configuration ([`TrainConfig`]): epochs, batch size, optimizer, schedule,
//! label smoothing, augmentation, normalisation and best-weights selection, with its checks;
//! and the helpers that read and set the optimizer's weight decay. It holds no state and runs
//! nothing: [`fit`](crate::train::fit) and the [`Stepper`](crate::train::Stepper) do.

use serde::{Deserialize, Serialize};

use super::{LrSchedule, Normalization};
use crate::augment::{BatchAugment, StaticAugment};
use crate::mix::BatchMix;
use crate::optim::OptimizerConfig;

/// Everything that decides a training run (besides the data and the model's layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Batches per epoch; `None` is one full pass over the training images.
    pub steps_per_epoch: Option<usize>,
    /// Label smoothing of the training loss (0 = plain cross-entropy): the target is
    /// `1 - s + s/K` for the true class and `s/K` for the others (Szegedy et al. 2016, as
    /// Keras's `label_smoothing`). Validation and test losses are always plain cross-entropy.
    pub label_smoothing: f32,
    /// Keep the weights of the epoch with the lowest validation loss (Keras's
    /// `ModelCheckpoint(save_best_only=True)` / `restore_best_weights`).
    pub keep_best: bool,
    pub normalization: Normalization,
    /// Learning-rate schedule, applied before every update.
    pub schedule: LrSchedule,
    /// Random shifts and flips applied to every batch.
    pub augment: BatchAugment,
    /// Transformed copies added to the training images once, before the first epoch.
    pub static_augment: StaticAugment,
    /// Decay of an exponential moving average of the weights (e.g. 0.999; `None` = off):
    /// validation, the best epoch and the final model use the average (see
    /// [`ema_update`](crate::train::ema_update)). Left out of saved configurations when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f32>,
    /// Mixup and CutMix of every batch ([`crate::mix`]); off by default, and left out of
    /// saved configurations when off.
    #[serde(default, skip_serializing_if = "BatchMix::is_off")]
    pub mix: BatchMix,
}

impl Default for TrainConfig {
    /// Keras's `fit` defaults where it has them (batch 32, Adam 1e-3, constant rate), 10
    /// epochs, the best weights kept, no smoothing and no augmentation.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            optimizer: OptimizerConfig::adam(1e-3),
            steps_per_epoch: None,
            label_smoothing: 0.0,
            keep_best: true,
            normalization: Normalization::default(),
            schedule: LrSchedule::default(),
            augment: BatchAugment::default(),
            static_augment: StaticAugment::default(),
            ema: None,
            mix: BatchMix::default(),
        }
    }
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
        let wd = weight_decay(&self.optimizer);
        if !(wd >= 0.0 && wd.is_finite()) {
            return Err(format!("weight decay {wd} must be 0 or a positive number"));
        }
        if let OptimizerConfig::Sgd { momentum, nesterov, .. } = self.optimizer {
            if !(momentum >= 0.0 && momentum.is_finite()) {
                return Err(format!("momentum {momentum} must be 0 or a positive number"));
            }
            if nesterov && momentum == 0.0 {
                return Err("Nesterov momentum needs a momentum above 0 (PyTorch refuses it too)".into());
            }
        }
        if let Some(d) = self.ema {
            if !(d > 0.0 && d < 1.0) {
                return Err(format!("EMA decay {d} is not in (0, 1)"));
            }
        }
        self.schedule.validate()?;
        self.augment.validate()?;
        self.mix.validate()?;
        self.static_augment.validate()
    }
}

/// The optimizer's weight decay.
pub fn weight_decay(o: &OptimizerConfig) -> f32 {
    match *o {
        OptimizerConfig::Sgd { weight_decay, .. }
        | OptimizerConfig::Adam { weight_decay, .. }
        | OptimizerConfig::AdamW { weight_decay, .. } => weight_decay,
    }
}

/// The optimizer with another weight decay. For SGD and Adam: an L2 term `wd * w` added to
/// every trainable parameter's gradient before the update (biases and batch-norm scales
/// included), as PyTorch's `weight_decay` (coupled). For AdamW: the decoupled decay, every
/// trainable parameter shrunk by `lr * wd` before the Adam step.
pub fn with_weight_decay(o: OptimizerConfig, wd: f32) -> OptimizerConfig {
    match o {
        OptimizerConfig::Sgd { lr, momentum, nesterov, .. } => {
            OptimizerConfig::Sgd { lr, momentum, weight_decay: wd, nesterov }
        }
        OptimizerConfig::Adam { lr, beta1, beta2, eps, .. } => {
            OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay: wd }
        }
        OptimizerConfig::AdamW { lr, beta1, beta2, eps, .. } => {
            OptimizerConfig::AdamW { lr, beta1, beta2, eps, weight_decay: wd }
        }
    }
}

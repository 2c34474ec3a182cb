//! Learning-rate schedules: a linear warm-up, then a constant rate, cosine decay or step
//! decay, as a pure function of the update's index. It does not touch the optimizer: the
//! [`Stepper`](crate::train::Stepper) sets the rate before every update.

use serde::{Deserialize, Serialize};

/// How the learning rate decays. Written with the optimizer's learning rate `lr`, the
/// batches per epoch `S`, all steps `T = epochs * S`, the warm-up steps `W = warmup_epochs *
/// S`, and `t` the 0-based index of the update about to be taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `lr` throughout (Keras's default).
    #[default]
    Constant,
    /// Cosine decay over the steps after the warm-up (Loshchilov & Hutter 2017, SGDR, one
    /// cycle, no restart): `lr * (1 + cos(pi * (t - W) / (T - W))) / 2`. It starts at `lr`
    /// and the last step gets `lr * (1 + cos(pi * (T - W - 1) / (T - W))) / 2`, just above 0
    /// (it would reach 0 one step after the end).
    Cosine,
    /// `lr * gamma^floor(t / (every_epochs * S))`: multiplied by `gamma` at the start of
    /// every `every_epochs`-th epoch, counting from the start of training.
    Step { every_epochs: usize, gamma: f32 },
}

/// A learning-rate schedule: an optional linear warm-up, then [`ScheduleKind`]'s decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Warm-up epochs: during the first `W` steps the rate is `lr * (t + 1) / W`, rising
    /// linearly to `lr` (Goyal et al. 2017). A warm-up as long as the run leaves no decay.
    pub warmup_epochs: usize,
}

impl LrSchedule {
    /// The constant rate.
    pub fn constant() -> Self {
        LrSchedule::default()
    }

    /// Cosine decay after `warmup_epochs` of linear warm-up.
    pub fn cosine(warmup_epochs: usize) -> Self {
        LrSchedule { kind: ScheduleKind::Cosine, warmup_epochs }
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if let ScheduleKind::Step { every_epochs, gamma } = self.kind {
            if every_epochs == 0 {
                return Err("the step schedule needs at least 1 epoch between steps".into());
            }
            if !(gamma > 0.0 && gamma.is_finite()) {
                return Err(format!("step schedule factor {gamma} must be a positive number"));
            }
        }
        Ok(())
    }

    /// The learning rate of update `t` (0-based) of a run of `epochs` epochs of
    /// `steps_per_epoch` batches, starting from `lr` (formulas at [`ScheduleKind`]).
    pub fn lr_at(&self, lr: f32, t: usize, steps_per_epoch: usize, epochs: usize) -> f32 {
        let total = epochs * steps_per_epoch;
        let warmup = (self.warmup_epochs * steps_per_epoch).min(total);
        if t < warmup {
            return (lr as f64 * (t + 1) as f64 / warmup as f64) as f32;
        }
        let factor = match self.kind {
            ScheduleKind::Constant => return lr,
            ScheduleKind::Cosine => {
                let progress = (t - warmup) as f64 / (total - warmup).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::Step { every_epochs, gamma } => {
                (gamma as f64).powi((t / (every_epochs * steps_per_epoch).max(1)) as i32)
            }
        };
        (lr as f64 * factor) as f32
    }
}

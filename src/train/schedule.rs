//! Learning-rate schedules: a linear warm-up, then a constant rate, cosine decay or step
//! decay; or the one-cycle policy (its own warm-up built in); each a pure function of the
//! update's index. It does not touch the optimizer: the
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
    /// The one-cycle policy (Smith & Topin 2018), PyTorch's `OneCycleLR` with
    /// `anneal_strategy='cos'`, `three_phase=False` and the optimizer's rate as `max_lr`.
    /// With `a = pct_start * T - 1` (a real number, as PyTorch computes it), the rate anneals
    /// from `lr / div_factor` at `t = 0` up to `lr` at `t = a`, then down to
    /// `lr / div_factor / final_div_factor` at `t = T - 1`, each phase by
    /// `end + (start - end) * (1 + cos(pi * pct)) / 2` with `pct` the fraction of the phase
    /// done (`t / a`, then `(t - a) / (T - 1 - a)`). A phase of zero length gives `pct = 1`
    /// (PyTorch divides by zero there). PyTorch's defaults: `pct_start` 0.3, `div_factor` 25,
    /// `final_div_factor` 1e4. The warm-up epochs must be 0: the first phase is the warm-up.
    OneCycle { pct_start: f32, div_factor: f32, final_div_factor: f32 },
}

impl ScheduleKind {
    /// The one-cycle policy with PyTorch's defaults (pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4).
    pub fn one_cycle() -> Self {
        ScheduleKind::OneCycle { pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
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
        if let ScheduleKind::OneCycle { pct_start, div_factor, final_div_factor } = self.kind {
            if !(pct_start > 0.0 && pct_start < 1.0) {
                return Err(format!("one-cycle pct_start {pct_start} is not in (0, 1)"));
            }
            for (name, v) in [("div_factor", div_factor), ("final_div_factor", final_div_factor)] {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(format!("one-cycle {name} {v} must be a positive number"));
                }
            }
            if self.warmup_epochs > 0 {
                return Err("the one-cycle schedule has its own warm-up (its first 30% of steps); \
                            set the warm-up epochs to 0"
                    .into());
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
            ScheduleKind::OneCycle { pct_start, div_factor, final_div_factor } => {
                return one_cycle(lr as f64, t, total, pct_start, div_factor, final_div_factor) as f32;
            }
        };
        (lr as f64 * factor) as f32
    }
}

/// PyTorch's `OneCycleLR.get_lr` for two phases with cosine annealing (formula at
/// [`ScheduleKind::OneCycle`]), in `f64`.
fn one_cycle(max_lr: f64, t: usize, total: usize, pct_start: f32, div: f32, final_div: f32) -> f64 {
    let initial = max_lr / div as f64;
    let min = initial / final_div as f64;
    let peak_step = pct_start as f64 * total as f64 - 1.0;
    let last_step = total as f64 - 1.0;
    let t = t as f64;
    // PyTorch: `if step_num <= end_step or i == len(phases) - 1` picks the phase.
    let (start_step, end_step, start_lr, end_lr) =
        if t <= peak_step { (0.0, peak_step, initial, max_lr) } else { (peak_step, last_step, max_lr, min) };
    let pct = if end_step > start_step { (t - start_step) / (end_step - start_step) } else { 1.0 };
    end_lr + (start_lr - end_lr) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos())
}

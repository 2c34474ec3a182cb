//! Optimizers, in order of increasing complexity: SGD (with momentum, optionally Nesterov's,
//! and weight decay), then Adam (L2 weight decay, coupled), then AdamW (decoupled weight
//! decay). The update loops are `kernels::optim`; this module owns the per-parameter state and
//! the step counter, skips non-trainable buffers, and leaves zeroing the gradients to the
//! caller (an explicit step, as in PyTorch). Its whole state (`step` and the moments) is public
//! and [`Optimizer::restore_state`] puts a saved one back, so a checkpoint resumes it exactly.

use kernels::optim::{AdamParams, SgdParams};
use kernels::Engine;
use serde::{Deserialize, Serialize};

use crate::params::Params;

/// Which optimizer, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        /// Nesterov momentum, PyTorch's `SGD(nesterov=True)` (formula in `kernels::optim`);
        /// needs `momentum > 0`. Absent from files written before it existed: off; left out
        /// when off, so such files and a plain SGD run's configuration compare equal.
        #[serde(default, skip_serializing_if = "crate::is_false")]
        nesterov: bool,
    },
    /// `eps` defaults to Keras's 1e-7; PyTorch uses 1e-8 (see `kernels::optim` for where it
    /// enters the update).
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
    /// PyTorch's `AdamW` (Loshchilov & Hutter 2019): `weight_decay` shrinks the weights
    /// (`p -= lr * wd * p`) instead of entering the gradient. Defaults are PyTorch's: betas
    /// 0.9 and 0.999, eps 1e-8, weight decay 0.01.
    #[serde(rename = "adamw")]
    AdamW { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

/// The optimizer as the "Training ..." line shows it: `SGD lr 0.01, momentum 0.9`,
/// `Adam lr 0.001 (betas 0.9, 0.999, eps 1e-7)`, with `, Nesterov` and `, weight decay X`
/// when they are on.
impl std::fmt::Display for OptimizerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match *self {
            OptimizerConfig::Sgd { lr, momentum, weight_decay, nesterov } => {
                write!(f, "SGD lr {lr}, momentum {momentum}")?;
                if nesterov {
                    f.write_str(", Nesterov")?;
                }
                if weight_decay != 0.0 {
                    write!(f, ", weight decay {weight_decay}")?;
                }
                Ok(())
            }
            OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay }
            | OptimizerConfig::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                let name = if matches!(self, OptimizerConfig::Adam { .. }) { "Adam" } else { "AdamW" };
                write!(f, "{name} lr {lr}")?;
                if weight_decay != 0.0 {
                    write!(f, ", weight decay {weight_decay}")?;
                }
                write!(f, " (betas {beta1}, {beta2}, eps {eps:e})")
            }
        }
    }
}

impl OptimizerConfig {
    /// SGD with the given momentum and no weight decay.
    pub fn sgd(lr: f32, momentum: f32) -> Self {
        OptimizerConfig::Sgd { lr, momentum, weight_decay: 0.0, nesterov: false }
    }

    /// Adam with Keras's defaults: betas 0.9 and 0.999, eps 1e-7.
    pub fn adam(lr: f32) -> Self {
        OptimizerConfig::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 }
    }

    /// AdamW with PyTorch's defaults: betas 0.9 and 0.999, eps 1e-8, weight decay 0.01.
    pub fn adamw(lr: f32) -> Self {
        OptimizerConfig::AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }

    pub fn lr(&self) -> f32 {
        match *self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => lr,
        }
    }

    pub fn with_lr(mut self, new: f32) -> Self {
        match &mut self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => *lr = new,
        }
        self
    }
}

/// An optimizer bound to a model's parameters.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Steps taken so far (Adam's `t` is `step` after the increment).
    pub step: u64,
    /// Per parameter: SGD's velocity, or Adam's first and second moments (empty for buffers).
    pub state: Vec<Vec<Vec<f32>>>,
    /// Which update loops run: the reference twins or the fast kernels.
    pub engine: Engine,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: &Params) -> Self {
        let slots = match config {
            OptimizerConfig::Sgd { .. } => 1,
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => 2,
        };
        let state = params
            .iter()
            .map(|p| if p.trainable { vec![vec![0.0; p.value.len()]; slots] } else { Vec::new() })
            .collect();
        Optimizer { config, step: 0, state, engine: Engine::Fast }
    }

    /// The same optimizer, running its updates on `engine`.
    pub fn on(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Puts back a state saved from an optimizer built for the same model (a checkpoint's):
    /// the step count and every moment. Refused, with nothing changed, if the moments do not
    /// have this optimizer's layout (parameters, slots, lengths).
    pub fn restore_state(&mut self, step: u64, state: Vec<Vec<Vec<f32>>>) -> Result<(), String> {
        if state.len() != self.state.len() {
            return Err(format!(
                "optimizer state for {} parameters, this model has {}",
                state.len(),
                self.state.len()
            ));
        }
        for (i, (new, old)) in state.iter().zip(&self.state).enumerate() {
            let (a, b): (Vec<usize>, Vec<usize>) =
                (new.iter().map(Vec::len).collect(), old.iter().map(Vec::len).collect());
            if a != b {
                return Err(format!(
                    "optimizer state of parameter {i} has slots of lengths {a:?}, expected {b:?}"
                ));
            }
        }
        self.step = step;
        self.state = state;
        Ok(())
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f32) {
        self.config = self.config.with_lr(lr);
    }

    /// Applies one update to every trainable parameter from its accumulated gradient.
    pub fn step(&mut self, params: &mut Params) {
        assert_eq!(self.state.len(), params.len(), "optimizer built for another model");
        self.step += 1;
        for (p, st) in params.iter_mut().zip(&mut self.state) {
            if !p.trainable {
                continue;
            }
            match self.config {
                OptimizerConfig::Sgd { lr, momentum, weight_decay, nesterov } => {
                    let h = SgdParams { lr, momentum, weight_decay, nesterov };
                    self.engine.sgd_update(&h, p.value.data_mut(), p.grad.data(), &mut st[0]);
                }
                OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay } => {
                    let h = AdamParams { lr, beta1, beta2, eps, weight_decay, t: self.step };
                    let (m, v) = st.split_at_mut(1);
                    self.engine.adam_update(&h, p.value.data_mut(), p.grad.data(), &mut m[0], &mut v[0]);
                }
                OptimizerConfig::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                    let h = AdamParams { lr, beta1, beta2, eps, weight_decay, t: self.step };
                    let (m, v) = st.split_at_mut(1);
                    self.engine.adamw_update(&h, p.value.data_mut(), p.grad.data(), &mut m[0], &mut v[0]);
                }
            }
        }
    }
}

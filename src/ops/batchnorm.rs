//! Batch normalisation over the channels of `[N, C, H, W]` or the features of `[N, F]`.
//!
//! # The math
//! Per channel, over its `M = N*H*W` values: `mean`, the biased variance `var`,
//! `xhat = (x - mean) / sqrt(var + eps)` and `y = gamma * xhat + beta`. Backward (Ioffe &
//! Szegedy 2015, section 3): `dbeta = sum dy`, `dgamma = sum dy * xhat`, and, since `mean` and
//! `var` depend on every `x` of the channel,
//! `dx = gamma / sqrt(var + eps) / M * (M * dy - sum dy - xhat * sum(dy * xhat))`.
//! With the running statistics (evaluation) the layer is a fixed per-channel affine map and
//! `dx = dy * gamma / sqrt(var + eps)`. `kernels::batchnorm` derives each step; its `_ref`
//! twins are the reference engine.
//!
//! Conventions, written down because the frameworks differ:
//! - `momentum` follows **Keras**: `running = momentum * running + (1 - momentum) * batch`,
//!   default 0.99. PyTorch's `momentum=0.1` weighs the *batch* statistic, so it equals Keras
//!   0.9 here.
//! - The running variance is updated with the **biased** batch variance (as Keras does;
//!   PyTorch uses the unbiased `M / (M - 1)` correction there). Normalisation always uses the
//!   biased variance, in both frameworks.
//! - `eps` default is Keras's 1e-3 (PyTorch's is 1e-5).
//!
//! In training the batch statistics normalise and the running statistics are updated; in
//! evaluation the running statistics normalise and nothing changes.

use kernels::Engine;

use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;
use crate::Mode;

/// The parameters and settings of one batch-norm layer.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormState {
    pub gamma: ParamId,
    pub beta: ParamId,
    pub running_mean: ParamId,
    pub running_var: ParamId,
    pub momentum: f32,
    pub eps: f32,
    pub engine: Engine,
}

/// `[N, C, S]` view of a `[N, C, ...]` tensor.
fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "batch_norm: input {shape:?} has no channel dimension");
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Records batch normalisation of `x`; in training also updates the running statistics.
///
/// # Shapes
/// `x: [N, C, H, W]` or `[N, C]`; `gamma`, `beta`, running mean and variance `[C]` -> `x`'s shape.
pub fn batch_norm(tape: &mut Tape, params: &mut Params, x: Var, st: &BatchNormState, mode: Mode) -> Var {
    record(tape, params, x, st, mode, false)
}

/// Records batch normalisation of `x` followed by a ReLU as one op: the same values as
/// [`batch_norm`] then [`relu`](crate::ops::relu), without storing the normalised values or
/// their gradient. The fast engine's plan uses it for every batch-norm followed by a ReLU
/// ([`crate::plan`]).
///
/// # Shapes
/// As [`batch_norm`].
pub fn batch_norm_relu(tape: &mut Tape, params: &mut Params, x: Var, st: &BatchNormState, mode: Mode) -> Var {
    record(tape, params, x, st, mode, true)
}

/// Batch-norm of `x`, and a ReLU after it when `relu`.
fn record(tape: &mut Tape, params: &mut Params, x: Var, st: &BatchNormState, mode: Mode, relu: bool) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let mut y = tape.scratch(&shape);
    let xv = tape.value(x);
    let (n, c, s) = ncs(xv.shape());
    assert_eq!(
        params.value(st.gamma).len(),
        c,
        "batch_norm: {c} channels, gamma {:?}",
        params.value(st.gamma).shape()
    );
    let (mean, var) = match mode {
        Mode::Train => {
            let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
            st.engine.batchnorm_stats(xv.data(), n, c, s, &mut mean, &mut var);
            let m = st.momentum;
            for (r, b) in params.value_mut(st.running_mean).data_mut().iter_mut().zip(&mean) {
                *r = m * *r + (1.0 - m) * b;
            }
            for (r, b) in params.value_mut(st.running_var).data_mut().iter_mut().zip(&var) {
                *r = m * *r + (1.0 - m) * b;
            }
            (mean, var)
        }
        Mode::Eval => {
            (params.value(st.running_mean).data().to_vec(), params.value(st.running_var).data().to_vec())
        }
    };
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + st.eps).sqrt()).collect();
    let (gamma, beta) = (params.value(st.gamma).data(), params.value(st.beta).data());
    if relu {
        st.engine.batchnorm_relu_normalize(xv.data(), (n, c, s), &mean, &inv_std, gamma, beta, y.data_mut());
    } else {
        st.engine.batchnorm_normalize(xv.data(), (n, c, s), &mean, &inv_std, gamma, beta, y.data_mut());
    }
    let op = BatchNormBackward {
        x,
        gamma: st.gamma,
        beta: st.beta,
        mean,
        inv_std,
        batch_stats: mode == Mode::Train,
        relu,
        engine: st.engine,
    };
    tape.push(y, true, Box::new(op))
}

struct BatchNormBackward {
    x: Var,
    gamma: ParamId,
    beta: ParamId,
    /// The statistics that normalised: the batch's in training, the running ones in eval.
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// With batch statistics the mean and variance depend on `x` and backward must go
    /// through them; with running statistics the layer is a per-channel affine map.
    batch_stats: bool,
    /// A ReLU follows in the same op: the gradient entering batch-norm is `dout` where the
    /// output is positive, 0 elsewhere.
    relu: bool,
    engine: Engine,
}

impl Backward for BatchNormBackward {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let gamma = grads.params.value(self.gamma).data().to_vec();
        let c = gamma.len();
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        // Straight into the input's gradient (set by the first op to reach it, added to by
        // later ones: `value_and_grad_to_set`); an input that needs none (the data,
        // for a batch-norm on the input) gets a throwaway buffer, since gamma and beta still
        // need their gradients.
        let mut throwaway = Vec::new();
        let (x, dx, accumulate) = if grads.nodes.needs_grad(self.x) {
            let (x, dx, accumulate) = grads.nodes.value_and_grad_to_set(self.x);
            (x, dx.data_mut(), accumulate)
        } else {
            let x = grads.nodes.value(self.x);
            throwaway.resize(x.len(), 0.0);
            (x, &mut throwaway[..], false)
        };
        let (n, c, s) = ncs(x.shape());
        if self.batch_stats {
            let (mean, inv_std) = (&self.mean, &self.inv_std);
            let (x, dx) = (x.data(), (dx, accumulate));
            if self.relu {
                let y = (out.data(), dout.data());
                let (dg, db) = (&mut dgamma, &mut dbeta);
                self.engine.batchnorm_relu_backward(x, y, (n, c, s), mean, inv_std, &gamma, dx, dg, db);
            } else {
                let (dg, db) = (&mut dgamma, &mut dbeta);
                self.engine.batchnorm_backward(x, dout.data(), (n, c, s), mean, inv_std, &gamma, dx, dg, db);
            }
        } else if s > 0 {
            // Running statistics: a fixed per-channel affine map.
            let planes = x.data().chunks_exact(s).zip(out.data().chunks_exact(s));
            let planes = planes.zip(dout.data().chunks_exact(s)).zip(dx.chunks_exact_mut(s));
            for (i, (((xp, yp), dyp), dxp)) in planes.enumerate() {
                let ch = i % c;
                let (mu, is) = (self.mean[ch], self.inv_std[ch]);
                for (((&xv, &yv), &g), d) in xp.iter().zip(yp).zip(dyp).zip(dxp.iter_mut()) {
                    // Through the ReLU first, when there is one.
                    let g = if !self.relu || yv > 0.0 { g } else { 0.0 };
                    dgamma[ch] += g * (xv - mu) * is;
                    dbeta[ch] += g;
                    let v = g * gamma[ch] * is;
                    *d = if accumulate { *d + v } else { v };
                }
            }
        }
        grads.params.grad_mut(self.gamma).add_slice(&dgamma);
        grads.params.grad_mut(self.beta).add_slice(&dbeta);
    }
}

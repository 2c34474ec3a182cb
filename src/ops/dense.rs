//! Fully connected layer, `y = x w + b`, with Keras's weight layout `w: [IN, OUT]`.
//!
//! # The math
//! For one row `r` of the batch: `y[r, o] = b[o] + sum_i x[r, i] w[i, o]`. Backward, from the
//! upstream gradient `dy[r, o]`:
//! - `db[o] += sum_r dy[r, o]`;
//! - `dw[i, o] += sum_r x[r, i] dy[r, o]`, that is `dw += x^T dy`;
//! - `dx[r, i] += sum_o dy[r, o] w[i, o]`, that is `dx += dy w^T`.
//!
//! The layer's [`DensePlan`] runs these: as the loops above on the reference engine, and with
//! SIMD row kernels and GEMMs on the fast one (`kernels::dense_plan`).

use kernels::DensePlan;
use std::sync::Arc;

use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `x w + b`, run by `plan` (whose weights must be
/// [`refresh`](DensePlan::refresh)ed from `w` before a backward pass).
///
/// # Shapes
/// `x: [N, IN]` (or any `[N, ...]` whose trailing dims multiply to IN), `w: [IN, OUT]`,
/// `b: [OUT]` -> `[N, OUT]`.
pub fn dense(tape: &mut Tape, params: &Params, x: Var, w: ParamId, b: ParamId, plan: &Arc<DensePlan>) -> Var {
    let (wv, bv) = (params.value(w), params.value(b));
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, wv.dim(1)]);
    let xv = tape.value(x);
    assert_eq!(
        xv.row_len(),
        wv.dim(0),
        "dense: input {:?} has {} features, weight {:?}",
        xv.shape(),
        xv.row_len(),
        wv.shape()
    );
    assert_eq!(bv.len(), wv.dim(1), "dense: bias {:?} for weight {:?}", bv.shape(), wv.shape());
    plan.forward(xv.data(), wv.data(), bv.data(), y.data_mut());
    tape.push(y, true, Box::new(DenseBackward { x, w, b, plan: Arc::clone(plan) }))
}

struct DenseBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    plan: Arc<DensePlan>,
}

impl Backward for DenseBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (xv, dx) = if grads.nodes.needs_grad(self.x) {
            let (v, g) = grads.nodes.value_and_grad(self.x);
            (v, Some(g.data_mut()))
        } else {
            (grads.nodes.value(self.x), None)
        };
        // The weights are read while their gradient is written: take the gradients out first.
        let mut dw = std::mem::take(grads.params.grad_mut(self.w));
        let mut db = std::mem::take(grads.params.grad_mut(self.b));
        let w = grads.params.value(self.w).data();
        self.plan.backward(xv.data(), w, dout.data(), dw.data_mut(), db.data_mut(), dx);
        *grads.params.grad_mut(self.w) = dw;
        *grads.params.grad_mut(self.b) = db;
    }
}

//! 2-D convolution, `y = w (*) x + b`, and its fusion with a following ReLU and max-pool.
//!
//! # The math
//! For one image, with `xpad` the input surrounded by the layer's zero padding:
//!
//! ```text
//! y[o, oh, ow] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * xpad[c, oh*SH + kh, ow*SW + kw]
//! ```
//!
//! Backward, from the upstream gradient `dy[o, oh, ow]` (each term of the sum above is a
//! product, so its derivative with respect to one factor is the other factor times `dy`):
//! - `db[o] += sum_{oh, ow} dy[o, oh, ow]` (the bias enters every output of channel `o`);
//! - `dw[o, c, kh, kw] += sum_{oh, ow} dy[o, oh, ow] * xpad[c, oh*SH + kh, ow*SW + kw]`
//!   (the correlation of the input with the output gradient);
//! - `dxpad[c, oh*SH + kh, ow*SW + kw] += w[o, c, kh, kw] * dy[o, oh, ow]` for every term,
//!   then the padding is dropped (the "transposed convolution" of `dy`).
//!
//! Summed over the batch, `dw` and `db` collect every image's contribution; `dx` is per
//! image. Exactly these loops are the reference engine's kernels
//! (`kernels::conv_direct::conv_forward_ref`, `conv_backward_weights_ref`,
//! `conv_backward_input_ref`): read them first.
//!
//! # How it runs
//! Every pass goes through the layer's [`ConvPlan`], built with the model for an engine: the
//! reference engine loops over images on those twins; the fast engine picks a path (direct
//! SIMD, implicit GEMM or im2col + GEMM), keeps the weights prepared for it, and can fuse
//! conv -> ReLU -> max-pool into one pass ([`conv2d_relu_maxpool`]; `kernels::conv_plan`
//! explains how and why). This file only records the op on the tape.

use kernels::im2col::ConvGeom;
use kernels::pool::PoolGeom;
use kernels::{ConvGrad, ConvPlan};
use std::sync::Arc;

use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Checks the shapes against the plan's geometry (a mismatch is a programmer error).
fn check_shapes(x: &Tensor, w: &Tensor, b: &Tensor, g: &ConvGeom) {
    assert_eq!(
        &x.shape()[1..],
        &[g.c, g.h, g.w],
        "conv2d: input {:?} does not match geometry [N, {}, {}, {}]",
        x.shape(),
        g.c,
        g.h,
        g.w
    );
    assert_eq!(w.shape()[1..], [g.c, g.kh, g.kw], "conv2d: weight shape {:?} for geometry {g:?}", w.shape());
    assert_eq!(b.len(), w.dim(0), "conv2d: bias {:?} for weight {:?}", b.shape(), w.shape());
}

/// Records a convolution of `x` with weights `w` and bias `b`, run by `plan` (whose weights
/// must be [`refresh`](ConvPlan::refresh)ed from `w`).
///
/// # Shapes
/// `x: [N, C, H, W]`, `w: [OC, C, KH, KW]`, `b: [OC]` -> `[N, OC, OH, OW]`, with `C, H, W,
/// KH, KW`, strides, padding and `OH, OW` given by the plan's geometry.
pub fn conv2d(tape: &mut Tape, params: &Params, x: Var, w: ParamId, b: ParamId, plan: &Arc<ConvPlan>) -> Var {
    let g = *plan.geom();
    let (wv, bv) = (params.value(w), params.value(b));
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, wv.dim(0), g.oh, g.ow]);
    let xv = tape.value(x);
    check_shapes(xv, wv, bv, &g);
    plan.forward(xv.data(), wv.data(), bv.data(), y.data_mut());
    tape.push(y, true, Box::new(Conv2dBackward { x, w, b, plan: Arc::clone(plan) }))
}

struct Conv2dBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    plan: Arc<ConvPlan>,
}

impl Backward for Conv2dBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        conv_backward(&self.plan, ConvGrad::Direct(dout.data()), self.x, self.w, self.b, grads);
    }
}

/// `dw`, `db` and (when wanted) `dx` of a convolution whose output gradient is `src`.
fn conv_backward(plan: &ConvPlan, src: ConvGrad, x: Var, w: ParamId, b: ParamId, grads: &mut Grads) {
    let (xv, dx) = if grads.nodes.needs_grad(x) {
        // The plan adds into `dx`: zero it first if this op is the first to reach `x`.
        let (v, g, accumulate) = grads.nodes.value_and_grad_to_set(x);
        if !accumulate {
            plan.engine().fill_zero(g.data_mut());
        }
        (v, Some(g.data_mut()))
    } else {
        (grads.nodes.value(x), None)
    };
    // The weights are read while their gradient is written: take the gradients out first.
    let mut dw = std::mem::take(grads.params.grad_mut(w));
    let mut db = std::mem::take(grads.params.grad_mut(b));
    plan.backward(&src, xv.data(), grads.params.value(w).data(), dw.data_mut(), db.data_mut(), dx);
    *grads.params.grad_mut(w) = dw;
    *grads.params.grad_mut(b) = db;
}

/// Records conv -> ReLU -> max-pool (`k x k` windows, stride `stride`) as one op; equal to
/// [`conv2d`], [`relu`](super::relu) and [`max_pool2d`](super::max_pool2d) in sequence, bit
/// for bit. The model uses it where the plan says so (see `plan::Plan`).
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, OC, PH, PW]`, `PH = (OH - k) / stride + 1`.
pub fn conv2d_relu_maxpool(
    tape: &mut Tape,
    params: &Params,
    x: Var,
    (w, b): (ParamId, ParamId),
    plan: &Arc<ConvPlan>,
    (k, stride): (usize, usize),
) -> Var {
    let g = *plan.geom();
    let pool = PoolGeom::new(g.oh, g.ow, k, stride);
    let (wv, bv) = (params.value(w), params.value(b));
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, wv.dim(0), pool.oh, pool.ow]);
    // Each window's argmax within its convolution plane, kept for backward (not on a no-grad
    // tape, where no backward will come).
    let mut argmax = if tape.records_grad() { plan.engine().zeroed(y.len()) } else { Vec::new() };
    let xv = tape.value(x);
    check_shapes(xv, wv, bv, &g);
    let args = tape.records_grad().then_some(&mut argmax[..]);
    plan.forward_relu_pool(&pool, xv.data(), wv.data(), bv.data(), y.data_mut(), args);
    tape.push(y, true, Box::new(ConvReluPoolBackward { x, w, b, plan: Arc::clone(plan), pool, argmax }))
}

struct ConvReluPoolBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    plan: Arc<ConvPlan>,
    pool: PoolGeom,
    /// `[N, OC, PH, PW]`: each window's argmax within its `OH x OW` convolution plane.
    argmax: Vec<u32>,
}

impl Backward for ConvReluPoolBackward {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let src = ConvGrad::Pooled { dy: dout.data(), y: out.data(), argmax: &self.argmax, pool: self.pool };
        conv_backward(&self.plan, src, self.x, self.w, self.b, grads);
    }
}

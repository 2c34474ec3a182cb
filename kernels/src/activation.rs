//! ReLU. Kink convention: the derivative at exactly 0 is taken as 0 (as PyTorch and
//! TensorFlow do), so backward passes gradient only where the *output* is positive.
//! Reference twins: [`relu_forward_ref`], [`relu_backward_ref`].

use crate::simd::{load, store, Fx, LANES};

/// `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "relu: x has {} values, y has {}", x.len(), y.len());
    let zero = Fx::splat(0.0);
    let mut xc = x.chunks_exact(LANES);
    let mut yc = y.chunks_exact_mut(LANES);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        store(load(xs).max(zero), ys);
    }
    relu_forward_ref(xc.remainder(), yc.into_remainder());
}

/// `dx += dy` where `y > 0`, or `dx = ` that (0 elsewhere) when not `accumulate`.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    assert!(y.len() == dy.len() && dy.len() == dx.len(), "relu_backward: lengths differ");
    let zero = Fx::splat(0.0);
    let mut yc = y.chunks_exact(LANES);
    let mut dyc = dy.chunks_exact(LANES);
    let mut dxc = dx.chunks_exact_mut(LANES);
    for ((ys, dys), dxs) in (&mut yc).zip(&mut dyc).zip(&mut dxc) {
        let pass = load(ys).simd_gt(zero);
        let g = pass.select(load(dys), zero);
        store(if accumulate { load(dxs) + g } else { g }, dxs);
    }
    relu_backward_ref(yc.remainder(), dyc.remainder(), dxc.into_remainder(), accumulate);
}

/// Reference twin of [`relu_forward`].
pub fn relu_forward_ref(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = if v > 0.0 { v } else { 0.0 };
    }
}

/// Reference twin of [`relu_backward`].
pub fn relu_backward_ref(y: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
    for ((d, &o), &g) in dx.iter_mut().zip(y).zip(dy) {
        let g = if o > 0.0 { g } else { 0.0 };
        *d = if accumulate { *d + g } else { g };
    }
}

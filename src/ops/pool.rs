//! Max-pooling (`kernels::pool`): forward keeps the argmax of every window (except on a
//! no-grad tape), backward scatters the gradient to it. Ties: the first maximum in row-major
//! order wins.

use kernels::pool::{maxpool_backward, maxpool_forward, PoolGeom};
use rayon::prelude::*;

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records max-pooling with a `k x k` window and stride `stride`.
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, C, OH, OW]`, `OH = (H - k) / stride + 1`.
pub fn max_pool2d(tape: &mut Tape, x: Var, k: usize, stride: usize) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let &[n, c, h, w] = &shape[..] else { panic!("max_pool2d: input {shape:?} is not [N, C, H, W]") };
    let g = PoolGeom::new(h, w, k, stride);
    let (in_img, out_img) = (c * h * w, c * g.oh * g.ow);
    let mut y = tape.scratch(&[n, c, g.oh, g.ow]);
    let xv = tape.value(x);
    // The argmaxes are kept for backward; a no-grad tape (inference) needs each image's only
    // while it is pooled, in a buffer reused from image to image.
    let record = tape.records_grad();
    let mut argmax = if record { vec![0u32; n * out_img] } else { Vec::new() };
    if n > 0 && out_img > 0 {
        let (ys, xs) = (y.data_mut().par_chunks_mut(out_img), xv.data().par_chunks(in_img));
        if record {
            ys.zip(argmax.par_chunks_mut(out_img))
                .zip(xs)
                .for_each(|((yi, ai), xi)| maxpool_forward(&g, c, xi, yi, ai));
        } else {
            ys.zip(xs)
                .for_each_init(|| vec![0u32; out_img], |ai, (yi, xi)| maxpool_forward(&g, c, xi, yi, ai));
        }
    }
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(MaxPoolBackward { x, g, c, argmax }))
}

struct MaxPoolBackward {
    x: Var,
    g: PoolGeom,
    c: usize,
    /// `[N, C, OH, OW]`: index of each window's maximum within its `H x W` plane.
    argmax: Vec<u32>,
}

impl Backward for MaxPoolBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (g, c) = (self.g, self.c);
        let (in_img, out_img) = (c * g.h * g.w, c * g.oh * g.ow);
        if out_img == 0 || in_img == 0 {
            return;
        }
        let dx = grads.nodes.grad_mut(self.x);
        dx.data_mut()
            .par_chunks_mut(in_img)
            .zip(dout.data().par_chunks(out_img))
            .zip(self.argmax.par_chunks(out_img))
            .for_each(|((dxi, dyi), ai)| maxpool_backward(&g, c, dyi, ai, dxi));
    }
}

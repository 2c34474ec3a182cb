//! 2-D convolution, `y = w (*) x + b`.
//!
//! Two paths compute the same function:
//! - **direct** (`kernels::conv_direct`) when the input has one channel: the GEMM's inner
//!   dimension would be only `KH*KW` (9 or 16), too thin for a GEMM to pay for the column matrix;
//! - **im2col + GEMM** otherwise, per image: `y_i[OC, OH*OW] = w[OC, C*KH*KW] * col_i`.
//!   Backward: `dw += dy_i * col_i^T`, `dcol = w^T * dy_i`, then `col2im(dcol)` into `dx_i`.
//!   The column matrix is rebuilt in backward rather than stored: it is cheap next to the GEMMs
//!   and storing it for a batch would cost `N * C*KH*KW * OH*OW` floats.

use kernels::bias::{bias_add, channel_sums};
use kernels::conv_direct::{conv_backward_input, conv_backward_weights, conv_forward};
use kernels::gemm::matmul;
use kernels::im2col::{col2im, im2col, ConvGeom};
use rayon::prelude::*;

use super::{sum_into, IMAGES_PER_CHUNK};
use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Im2col,
}

/// Records a convolution of `x` with weights `w` and bias `b`.
///
/// # Shapes
/// `x: [N, C, H, W]`, `w: [OC, C, KH, KW]`, `b: [OC]` -> `[N, OC, OH, OW]`, with `C, H, W, KH, KW`,
/// strides, padding and `OH, OW` given by `g`.
pub fn conv2d(tape: &mut Tape, params: &Params, x: Var, w: ParamId, b: ParamId, g: ConvGeom) -> Var {
    let (wv, bv) = (params.value(w), params.value(b));
    let oc = wv.dim(0);
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, oc, g.oh, g.ow]);
    let xv = tape.value(x);
    assert_eq!(
        &xv.shape()[1..],
        &[g.c, g.h, g.w],
        "conv2d: input {:?} does not match geometry [N, {}, {}, {}]",
        xv.shape(),
        g.c,
        g.h,
        g.w
    );
    assert_eq!(wv.shape(), &[oc, g.c, g.kh, g.kw], "conv2d: weight shape {:?}", wv.shape());
    let path = if g.c == 1 { Path::Direct } else { Path::Im2col };
    let plane = g.out_plane();
    if n > 0 && oc * plane > 0 {
        let (wd, bd) = (wv.data(), bv.data());
        y.data_mut().par_chunks_mut(oc * plane).zip(xv.data().par_chunks(g.in_len().max(1))).for_each_init(
            Vec::new,
            |scratch, (yi, xi)| {
                match path {
                    Path::Direct => conv_forward(&g, oc, xi, wd, yi, scratch),
                    Path::Im2col => {
                        scratch.resize(g.col_rows() * plane, 0.0);
                        im2col(&g, xi, scratch);
                        // y_i[OC, OH*OW] = w[OC, C*KH*KW] * col[C*KH*KW, OH*OW]
                        matmul(false, false, oc, g.col_rows(), plane, wd, scratch, yi, false);
                    }
                }
                bias_add(yi, bd, 1, oc, plane);
            },
        );
    }
    tape.push(y, true, Box::new(Conv2dBackward { x, w, b, g, oc, path }))
}

struct Conv2dBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    g: ConvGeom,
    oc: usize,
    path: Path,
}

impl Backward for Conv2dBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (g, oc, path) = (self.g, self.oc, self.path);
        let plane = g.out_plane();
        let ckk = g.col_rows();
        let x = grads.nodes.value(self.x);
        let n = x.dim(0);
        if n == 0 || oc * plane == 0 {
            return;
        }
        let (xd, dyd) = (x.data(), dout.data());

        // dw and db: partial sums over fixed chunks of images, then added in chunk order.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..n.div_ceil(IMAGES_PER_CHUNK))
            .into_par_iter()
            .map(|chunk| {
                let mut dw = vec![0.0f32; oc * ckk];
                let mut db = vec![0.0f32; oc];
                let mut scratch = Vec::new();
                let images = chunk * IMAGES_PER_CHUNK..((chunk + 1) * IMAGES_PER_CHUNK).min(n);
                for i in images {
                    let xi = &xd[i * g.in_len()..(i + 1) * g.in_len()];
                    let dyi = &dyd[i * oc * plane..(i + 1) * oc * plane];
                    match path {
                        Path::Direct => conv_backward_weights(&g, oc, xi, dyi, &mut dw, &mut scratch),
                        Path::Im2col => {
                            scratch.resize(ckk * plane, 0.0);
                            im2col(&g, xi, &mut scratch);
                            // dw[OC, CKK] += dy_i[OC, OH*OW] * col^T[OH*OW, CKK]
                            matmul(false, true, oc, plane, ckk, dyi, &scratch, &mut dw, true);
                        }
                    }
                    channel_sums(dyi, 1, oc, plane, &mut db);
                }
                (dw, db)
            })
            .collect();
        let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
        sum_into(grads.params.grad_mut(self.w).data_mut(), dws);
        sum_into(grads.params.grad_mut(self.b).data_mut(), dbs);

        if !grads.nodes.needs_grad(self.x) {
            return;
        }
        let w = grads.params.value(self.w).data();
        let dx = grads.nodes.grad_mut(self.x);
        dx.data_mut().par_chunks_mut(g.in_len().max(1)).zip(dyd.par_chunks(oc * plane)).for_each_init(
            Vec::new,
            |scratch, (dxi, dyi)| match path {
                Path::Direct => conv_backward_input(&g, oc, w, dyi, dxi, scratch),
                Path::Im2col => {
                    scratch.resize(ckk * plane, 0.0);
                    // dcol[CKK, OH*OW] = w^T[CKK, OC] * dy_i[OC, OH*OW]
                    matmul(true, false, ckk, oc, plane, w, dyi, scratch, false);
                    col2im(&g, scratch, dxi);
                }
            },
        );
    }
}

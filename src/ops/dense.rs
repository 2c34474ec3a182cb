//! Fully connected layer, `y = x w + b`, with Keras's weight layout `w: [IN, OUT]`.
//!
//! Forward and the input gradient split the batch into a few fixed blocks of rows, one GEMM per
//! block; the weight gradient `dw = x^T dy` splits the *rows of dw* instead (blocks of input
//! features), so each element of `dw` is one GEMM's full sum over the batch and no partial
//! sums across threads are needed.

use kernels::bias::{bias_add, channel_sums};
use kernels::gemm::{matmul, sgemm, MatMut, MatRef};
use rayon::prelude::*;

use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Rows per GEMM task: a quarter of the rows, rounded up to a multiple of 16. Each task
/// packs the whole other operand (the weights, 2.7 MB for C1's first dense layer), so few
/// large tasks beat many small ones; four keep two threads busy. The split depends only on
/// the shapes, never on the thread count.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4).next_multiple_of(16).max(16)
}

/// Records `x w + b`.
///
/// # Shapes
/// `x: [N, IN]` (or any `[N, ...]` whose trailing dims multiply to IN), `w: [IN, OUT]`,
/// `b: [OUT]` -> `[N, OUT]`.
pub fn dense(tape: &mut Tape, params: &Params, x: Var, w: ParamId, b: ParamId) -> Var {
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, params.value(w).dim(1)]);
    let xv = tape.value(x);
    let (wv, bv) = (params.value(w), params.value(b));
    let (fin, fout) = (wv.dim(0), wv.dim(1));
    assert_eq!(
        xv.row_len(),
        fin,
        "dense: input {:?} has {} features, weight {:?}",
        xv.shape(),
        xv.row_len(),
        wv.shape()
    );
    if n > 0 && fout > 0 {
        let (xd, wd, bd) = (xv.data(), wv.data(), bv.data());
        let block = rows_per_task(n);
        y.data_mut().par_chunks_mut(block * fout).enumerate().for_each(|(blk, yb)| {
            let rows = yb.len() / fout;
            let xb = &xd[blk * block * fin..][..rows * fin];
            matmul(false, false, rows, fin, fout, xb, wd, yb, false);
            bias_add(yb, bd, rows, fout, 1);
        });
    }
    tape.push(y, true, Box::new(DenseBackward { x, w, b }))
}

struct DenseBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
}

impl Backward for DenseBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let x = grads.nodes.value(self.x);
        let (n, fout) = (dout.dim(0), dout.dim(1));
        let fin = x.row_len();
        if n == 0 || fout == 0 || fin == 0 {
            return;
        }
        let (xd, dyd) = (x.data(), dout.data());
        // dw[IN, OUT] = x^T[IN, N] * dy[N, OUT], a block of IN rows per task.
        let dw = grads.params.grad_mut(self.w);
        let block = rows_per_task(fin);
        dw.data_mut().par_chunks_mut(block * fout).enumerate().for_each(|(blk, dwb)| {
            let rows = dwb.len() / fout;
            let i0 = blk * block;
            // Rows i0..i0+rows of x^T are columns of x: start at offset i0, step 1 down a
            // row of x^T (next feature), step IN across (next image).
            let a = MatRef { data: &xd[i0..], rows, cols: n, row_stride: 1, col_stride: fin };
            sgemm(1.0, a, MatRef::new(dyd, n, fout), 1.0, MatMut::new(dwb, rows, fout));
        });
        channel_sums(dyd, n, fout, 1, grads.params.grad_mut(self.b).data_mut());

        if !grads.nodes.needs_grad(self.x) {
            return;
        }
        let w = grads.params.value(self.w).data();
        let dx = grads.nodes.grad_mut(self.x);
        // dx[N, IN] += dy[N, OUT] * w^T[OUT, IN]
        let block = rows_per_task(n);
        dx.data_mut().par_chunks_mut(block * fin).enumerate().for_each(|(blk, dxb)| {
            let rows = dxb.len() / fin;
            let dyb = &dyd[blk * block * fout..][..rows * fout];
            matmul(false, true, rows, fout, fin, dyb, w, dxb, true);
        });
    }
}

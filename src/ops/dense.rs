//! Fully connected layer, `y = x w + b`, with Keras's weight layout `w: [IN, OUT]`.
//!
//! Forward and the input gradient split the batch into one block of rows per thread. Each
//! block is `kernels::gemv::rowsmat` (no packing) when the output of its product is whole SIMD
//! vectors wide, else a GEMM; one image takes `kernels::gemv::vecmat` (its columns split
//! between the threads when the weights are large, [`GEMV_SPLIT_VALUES`]). The weight gradient
//! `dw = x^T dy` splits the *rows of dw* instead (blocks of input features), so each element of
//! `dw` is one GEMM's full sum over the batch and no partial sums across threads are needed.

use kernels::bias::{bias_add, channel_sums};
use kernels::gemm::{matmul, sgemm, MatMut, MatRef};
use kernels::gemv::{rowsmat, vecmat};
use kernels::simd::{transpose, LANES};
use rayon::prelude::*;

use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Batches of at most this many rows skip the GEMM in forward (see [`dense`]).
const GEMV_ROWS: usize = 4;

/// Rows of `dw` (input features) per GEMM task in the weight gradient: a quarter of them,
/// rounded up to a multiple of 16, so that four tasks keep two threads busy. Each element of
/// `dw` is one task's full sum over the batch, so the split never changes a result.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4).next_multiple_of(16).max(16)
}

/// Batch rows per task in forward and the input gradient: one task per thread. A GEMM task
/// packs the whole weight matrix (2.8 MB for C1's first dense layer), so fewer tasks pack less:
/// at one thread, with GEMMs, one task trained C1 at batch 64 about 1.5x as fast as four tasks
/// of 16 rows. The blocks depend on the thread count but the results do not: an output row
/// does not depend on which other rows share the call (`rowsmat` sums each row alone; for the
/// GEMM the kernels' test `gemm_rows_do_not_depend_on_the_row_blocking` checks it to the bit;
/// end to end, `same_seed_same_weights_with_one_and_two_threads`).
fn batch_rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads()).max(1)
}

/// Weights (values) from which a row's pass through a dense layer on the `vecmat` path (one
/// image, or a batch of up to [`GEMV_ROWS`]) is split between the threads, each streaming its
/// own columns of `w`: 2 MiB, twice a core's L2. A pool thread that has gone idle takes 25-50
/// us to wake here, as long as a smaller layer's whole pass. Measured at 2 threads, alternating
/// runs: one image of C1 (2.8 MB layer) 37-40 -> 29-32 us split; split from 256 KB up, E's 1.6
/// MB layer went from 99 to 110 us and A/B's 1.4 MB one did not move.
const GEMV_SPLIT_VALUES: usize = 1 << 19;

/// Columns per task on the `vecmat` path: all of them, or an equal share per thread in whole
/// SIMD vectors. Each output column is one sum whoever computes it, so the split never
/// changes a result.
fn gemv_cols_per_task(fin: usize, fout: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads == 1 || fin * fout < GEMV_SPLIT_VALUES || fout < 2 * LANES {
        return fout;
    }
    fout.div_ceil(threads).next_multiple_of(LANES)
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
    if n > 0 && fout > 0 && n <= GEMV_ROWS {
        // A few rows (one image at inference): y_r = b + x_r w, one pass over w per row, no
        // packing (see `kernels::gemv`).
        let (xd, wd, bd) = (xv.data(), wv.data(), bv.data());
        let cols = gemv_cols_per_task(fin, fout);
        for (yr, xr) in y.data_mut().chunks_exact_mut(fout).zip(xd.chunks_exact(fin)) {
            yr.copy_from_slice(bd);
            if cols == fout {
                vecmat(xr, wd, fout, yr);
            } else {
                yr.par_chunks_mut(cols).enumerate().for_each(|(t, yc)| vecmat(xr, &wd[t * cols..], fout, yc));
            }
        }
    } else if n > 0 && fout > 0 {
        let (xd, wd, bd) = (xv.data(), wv.data(), bv.data());
        let block = batch_rows_per_task(n);
        y.data_mut().par_chunks_mut(block * fout).enumerate().for_each(|(blk, yb)| {
            let rows = yb.len() / fout;
            let xb = &xd[blk * block * fin..][..rows * fin];
            if fout.is_multiple_of(LANES) {
                // Whole vectors of outputs: y = b + x w, summed as `vecmat` sums one image.
                for yr in yb.chunks_exact_mut(fout) {
                    yr.copy_from_slice(bd);
                }
                rowsmat(xb, wd, fin, fout, yb);
            } else {
                matmul(false, false, rows, fin, fout, xb, wd, yb, false);
                bias_add(yb, bd, rows, fout, 1);
            }
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
        // dw[IN, OUT] = x^T dy, computed as its transpose dw^T[OUT, IN] = dy^T[OUT, N] * x[N, IN]
        // written through strides straight into dw's [IN, OUT] layout: the large operand x is
        // then read row by row when packed, instead of down its columns. A task takes a block
        // of IN (a block of dw's rows, a block of x's columns).
        let dw = grads.params.grad_mut(self.w);
        let block = rows_per_task(fin);
        dw.data_mut().par_chunks_mut(block * fout).enumerate().for_each(|(blk, dwb)| {
            let cols = dwb.len() / fout;
            let j0 = blk * block;
            let b = MatRef { data: &xd[j0..], rows: n, cols, row_stride: fin, col_stride: 1 };
            let c = MatMut { data: dwb, rows: fout, cols, row_stride: 1, col_stride: fout };
            sgemm(1.0, MatRef::transposed(dyd, fout, n), b, 1.0, c);
        });
        channel_sums(dyd, n, fout, 1, grads.params.grad_mut(self.b).data_mut());

        if !grads.nodes.needs_grad(self.x) {
            return;
        }
        let w = grads.params.value(self.w).data();
        let dx = grads.nodes.grad_mut(self.x);
        // dx[N, IN] += dy w^T, per block of rows.
        let block = batch_rows_per_task(n);
        if fin.is_multiple_of(LANES) {
            // Without packing: `rowsmat` on w transposed once, `[OUT, IN]`, in this thread's
            // buffer (taken out while the tasks run, so no borrow spans the rayon call).
            let mut wt = TRANSPOSED.take();
            wt.resize(fin * fout, 0.0);
            transpose(w, fin, fout, &mut wt, fin);
            dx.data_mut().par_chunks_mut(block * fin).enumerate().for_each(|(blk, dxb)| {
                let dyb = &dyd[blk * block * fout..][..dxb.len() / fin * fout];
                rowsmat(dyb, &wt, fout, fin, dxb);
            });
            TRANSPOSED.set(wt);
            return;
        }
        // Else by GEMM, as dx_b^T[IN, B] += w[IN, OUT] * dy_b^T[OUT, B], written into dx's
        // layout through strides: w is then packed row by row rather than down its columns.
        dx.data_mut().par_chunks_mut(block * fin).enumerate().for_each(|(blk, dxb)| {
            let rows = dxb.len() / fin;
            let dyb = &dyd[blk * block * fout..][..rows * fout];
            let c = MatMut { data: dxb, rows: fin, cols: rows, row_stride: 1, col_stride: fin };
            sgemm(1.0, MatRef::new(w, fin, fout), MatRef::transposed(dyb, fout, rows), 1.0, c);
        });
    }
}

thread_local! {
    /// The transposed weights of the last input gradient, kept so that a step does not
    /// allocate (and page-fault in) a fresh copy of the weights.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which one-image passes are split: C1's first layer and the engine test's layer at 2
    /// threads, not E's or A/B's (too small to pay for waking a thread), nothing at 1 thread.
    #[test]
    fn which_one_image_passes_are_split() {
        let at = |threads: usize, fin: usize, fout: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| gemv_cols_per_task(fin, fout))
        };
        assert_eq!(at(2, 5408, 128), 64, "C1");
        assert_eq!(at(2, 2048, 276), 144, "tests/engine.rs");
        assert_eq!(at(2, 1600, 256), 256, "E");
        assert_eq!(at(2, 10816, 32), 32, "A/B");
        assert_eq!(at(1, 5408, 128), 128, "C1, one thread");
    }
}

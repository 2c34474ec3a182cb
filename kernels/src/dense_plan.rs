//! One dense layer's plan: how `y = x w + b` (`w: [IN, OUT]`) and its gradients run on an
//! [`Engine`].
//!
//! On [`Engine::Reference`] each pass is the definition as loops, row by row of the batch
//! (rows in parallel where each output is one row's own sum).
//!
//! On [`Engine::Fast`]:
//! - forward and the input gradient split the batch into one block of rows per thread. A
//!   block is [`rowsmat`] (no packing) when the product's rows are whole SIMD vectors, else a
//!   GEMM. A few rows (one image) take [`vecmat`], their columns split between the threads
//!   when [`DenseChoice::split_one_image`] says so: by the rule, when the weights are large
//!   (`GEMV_SPLIT_VALUES`); in a measured plan, when [`crate::planner`] timed the split
//!   faster on this machine;
//! - the input gradient runs `rowsmat` on the weights transposed once per refresh (kept here);
//! - the weight gradient `dw = x^T dy` splits the *rows of dw* (blocks of input features),
//!   so each element of `dw` is one GEMM's full sum over the batch and no partial sums across
//!   threads are needed.
//!
//! The row blocks depend on the thread count but the results do not: an output row does not
//! depend on which other rows share the call (`rowsmat` sums each row alone; for the GEMM the
//! kernels' test `gemm_rows_do_not_depend_on_the_row_blocking` checks it to the bit).

use rayon::prelude::*;
use std::sync::Mutex;

use crate::bias::{bias_add, channel_sums, channel_sums_ref};
use crate::engine::Engine;
use crate::gemm::{matmul, sgemm, MatMut, MatRef};
use crate::gemv::{rowsmat, vecmat, vecmat_ref};
use crate::simd::{transpose, LANES};

/// Batches of at most this many rows skip the GEMM in forward.
const GEMV_ROWS: usize = 4;

/// Weights (values) from which a row's pass on the `vecmat` path is split between the
/// threads, each streaming its own columns of `w`: 2 MiB, twice a core's L2. A pool thread
/// that has gone idle takes tens of microseconds to wake, as long as a smaller layer's whole
/// pass. The rule's constant, tuned on the 2-core AMD EPYC (AVX-512, 1 MiB L2 per core) of
/// the README's Performance section; on the 2-vCPU Intel Xeon KVM guest (2 MiB L2) the split
/// of C1's 5408 x 128 layer loses (one image 34 -> 58 us), which the measured plan sees.
const GEMV_SPLIT_VALUES: usize = 1 << 19;

/// How one dense layer runs on the fast engine: plain data, so that a plan can be measured,
/// stored and replayed (`crate::planner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DenseChoice {
    /// Whether a pass of a few rows (one image) splits its output columns between the
    /// threads (`None`: the rule, decided at each call from the size and the threads).
    pub split_one_image: Option<bool>,
}

impl DenseChoice {
    /// The rule: decided at each call (`GEMV_SPLIT_VALUES`).
    pub const RULE: DenseChoice = DenseChoice { split_one_image: None };

    /// The rule's answer for a layer of `fin x fout` weights on `threads` threads.
    pub fn rule_splits(fin: usize, fout: usize, threads: usize) -> bool {
        threads > 1 && fin * fout >= GEMV_SPLIT_VALUES && fout >= 2 * LANES
    }
}

/// One dense layer's plan (module docs).
pub struct DensePlan {
    fin: usize,
    fout: usize,
    engine: Engine,
    choice: DenseChoice,
    /// Fast engine: `w^T[OUT, IN]` for the input gradient, made by the first backward pass
    /// after each [`DensePlan::refresh`] (`None` until then: inference never needs it).
    transposed: Mutex<Option<Vec<f32>>>,
}

impl DensePlan {
    /// A plan for a layer with `fin` inputs and `fout` outputs. Call [`DensePlan::refresh`]
    /// with the weights before the first backward pass.
    pub fn new(engine: Engine, fin: usize, fout: usize) -> Self {
        Self::with_choice(engine, fin, fout, DenseChoice::RULE)
    }

    /// A plan that runs as `choice` says on the fast engine.
    pub fn with_choice(engine: Engine, fin: usize, fout: usize, choice: DenseChoice) -> Self {
        DensePlan { fin, fout, engine, choice, transposed: Mutex::new(None) }
    }

    /// How the fast engine runs this layer.
    pub fn choice(&self) -> DenseChoice {
        self.choice
    }

    /// Inputs and outputs: `(IN, OUT)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.fin, self.fout)
    }

    /// Whether a pass of one image splits its columns between the threads, on the current
    /// pool.
    pub fn splits_one_image(&self) -> bool {
        gemv_cols_per_task(self.fin, self.fout, self.choice) != self.fout
    }

    /// Forgets what was prepared from the weights `w[IN, OUT]`. Call it after every change of
    /// the weights; the next backward pass prepares them again.
    pub fn refresh(&self, w: &[f32]) {
        assert_eq!(w.len(), self.fin * self.fout, "DensePlan::refresh: weights of another layer");
        *self.transposed.lock().expect("transposed weights") = None;
    }

    /// `y[N, OUT] = x[N, IN] w + b`.
    pub fn forward(&self, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
        let (fin, fout) = (self.fin, self.fout);
        if y.is_empty() {
            return;
        }
        let n = y.len() / fout;
        if fin == 0 {
            y.chunks_exact_mut(fout).for_each(|yr| yr.copy_from_slice(b));
            return;
        }
        if self.engine == Engine::Reference {
            // y_r = b + sum_i x_r[i] w[i, ..], row by row.
            y.par_chunks_mut(fout).zip(x.par_chunks(fin)).for_each(|(yr, xr)| {
                yr.copy_from_slice(b);
                vecmat_ref(xr, w, fout, yr);
            });
            return;
        }
        if n <= GEMV_ROWS {
            // A few rows (one image at inference): one pass over w per row, no packing.
            let cols = gemv_cols_per_task(fin, fout, self.choice);
            for (yr, xr) in y.chunks_exact_mut(fout).zip(x.chunks_exact(fin)) {
                yr.copy_from_slice(b);
                if cols == fout {
                    vecmat(xr, w, fout, yr);
                } else {
                    yr.par_chunks_mut(cols)
                        .enumerate()
                        .for_each(|(t, yc)| vecmat(xr, &w[t * cols..], fout, yc));
                }
            }
            return;
        }
        let block = batch_rows_per_task(n);
        y.par_chunks_mut(block * fout).enumerate().for_each(|(blk, yb)| {
            let rows = yb.len() / fout;
            let xb = &x[blk * block * fin..][..rows * fin];
            if fout.is_multiple_of(LANES) {
                // Whole vectors of outputs: y = b + x w, summed as `vecmat` sums one image.
                for yr in yb.chunks_exact_mut(fout) {
                    yr.copy_from_slice(b);
                }
                rowsmat(xb, w, fin, fout, yb);
            } else {
                matmul(false, false, rows, fin, fout, xb, w, yb, false);
                bias_add(yb, b, rows, fout, 1);
            }
        });
    }

    /// Adds the gradients of `y = x w + b` with output gradient `dy[N, OUT]`: into
    /// `dw[IN, OUT]`, `db[OUT]`, and `dx[N, IN]` when given.
    pub fn backward(
        &self,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        let (fin, fout) = (self.fin, self.fout);
        if dy.is_empty() || fin == 0 {
            return;
        }
        let n = dy.len() / fout;
        if self.engine == Engine::Reference {
            // dw[i, o] += sum_r x[r, i] dy[r, o], row i of dw by row i, the sum in row order.
            dw.par_chunks_mut(fout).enumerate().for_each(|(i, dw_i)| {
                for (xr, dyr) in x.chunks_exact(fin).zip(dy.chunks_exact(fout)) {
                    for (d, &g) in dw_i.iter_mut().zip(dyr) {
                        *d += xr[i] * g;
                    }
                }
            });
            channel_sums_ref(dy, n, fout, 1, db);
            // dx[r, i] += sum_o dy[r, o] w[i, o].
            if let Some(dx) = dx {
                dx.par_chunks_mut(fin).zip(dy.par_chunks(fout)).for_each(|(dxr, dyr)| {
                    for (d, w_i) in dxr.iter_mut().zip(w.chunks_exact(fout)) {
                        *d += dyr.iter().zip(w_i).map(|(g, wv)| g * wv).sum::<f32>();
                    }
                });
            }
            return;
        }
        // dw[IN, OUT] = x^T dy, computed as its transpose dw^T[OUT, IN] = dy^T[OUT, N] * x[N, IN]
        // written through strides straight into dw's [IN, OUT] layout: the large operand x is
        // then read row by row when packed. A task takes a block of IN.
        let block = rows_per_task(fin);
        dw.par_chunks_mut(block * fout).enumerate().for_each(|(blk, dwb)| {
            let cols = dwb.len() / fout;
            let b = MatRef { data: &x[blk * block..], rows: n, cols, row_stride: fin, col_stride: 1 };
            let c = MatMut { data: dwb, rows: fout, cols, row_stride: 1, col_stride: fout };
            sgemm(1.0, MatRef::transposed(dy, fout, n), b, 1.0, c);
        });
        channel_sums(dy, n, fout, 1, db);

        let Some(dx) = dx else { return };
        // dx[N, IN] += dy w^T, per block of rows.
        let block = batch_rows_per_task(n);
        if fin.is_multiple_of(LANES) {
            // Without packing: `rowsmat` on the transposed weights `[OUT, IN]`, made once per
            // refresh.
            let mut prepared = self.transposed.lock().expect("transposed weights");
            let wt = prepared.get_or_insert_with(|| {
                let mut wt = vec![0.0; fin * fout];
                transpose(w, fin, fout, &mut wt, fin);
                wt
            });
            let wt = &*wt;
            dx.par_chunks_mut(block * fin).enumerate().for_each(|(blk, dxb)| {
                let dyb = &dy[blk * block * fout..][..dxb.len() / fin * fout];
                rowsmat(dyb, wt, fout, fin, dxb);
            });
            return;
        }
        // Else by GEMM, as dx_b^T[IN, B] += w[IN, OUT] * dy_b^T[OUT, B], written into dx's
        // layout through strides: w is then packed row by row rather than down its columns.
        dx.par_chunks_mut(block * fin).enumerate().for_each(|(blk, dxb)| {
            let rows = dxb.len() / fin;
            let dyb = &dy[blk * block * fout..][..rows * fout];
            let c = MatMut { data: dxb, rows: fin, cols: rows, row_stride: 1, col_stride: fin };
            sgemm(1.0, MatRef::new(w, fin, fout), MatRef::transposed(dyb, fout, rows), 1.0, c);
        });
    }
}

/// Rows of `dw` (input features) per GEMM task in the weight gradient: a quarter of them,
/// rounded up to a multiple of 16, so that four tasks keep two threads busy.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4).next_multiple_of(16).max(16)
}

/// Batch rows per task in forward and the input gradient: one task per thread, since a GEMM
/// task packs the whole weight matrix.
fn batch_rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads()).max(1)
}

/// Columns per task on the `vecmat` path: all of them, or an equal share per thread in whole
/// SIMD vectors. Each output column is one sum whoever computes it.
fn gemv_cols_per_task(fin: usize, fout: usize, choice: DenseChoice) -> usize {
    let threads = rayon::current_num_threads();
    let split = choice.split_one_image.unwrap_or_else(|| DenseChoice::rule_splits(fin, fout, threads));
    if !split || threads == 1 || fout < 2 * LANES {
        return fout;
    }
    fout.div_ceil(threads).next_multiple_of(LANES)
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
            pool.install(|| gemv_cols_per_task(fin, fout, DenseChoice::RULE))
        };
        assert_eq!(at(2, 5408, 128), 64, "C1");
        assert_eq!(at(2, 2048, 276), 144, "tests/engine.rs");
        assert_eq!(at(2, 1600, 256), 256, "E");
        assert_eq!(at(2, 10816, 32), 32, "A/B");
        assert_eq!(at(1, 5408, 128), 128, "C1, one thread");
    }
}

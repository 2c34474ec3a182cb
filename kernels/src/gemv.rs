//! Vector times matrix, `y += x w`: a dense layer's forward pass for one image.
//!
//! For one row of input a GEMM is the wrong tool: it first copies (packs) the whole of `w`,
//! and the work is a single pass over `w` anyway, so the time is the time it takes to stream
//! `w` through the core (C1's first dense layer: 5408 x 128 weights, 2.8 MB, more than a
//! core's L2). Two things make that pass cheaper:
//!
//! - rows of `w` whose input `x[i]` is zero add nothing, and are not even read. After ReLU
//!   and max-pooling many inputs are zero: the rows that remain are listed first, without a
//!   branch per row;
//! - a block of up to [`BLOCK`] outputs stays in registers (8 SIMD vectors) while the loop runs
//!   down the listed rows, so each weight is loaded once and each output is loaded and stored
//!   once per block, not once per row.
//!
//! Every output is summed over the rows in increasing order, one fused multiply-add per row:
//! `y[j] = (((y[j] + x[0] w[0][j]) + x[1] w[1][j]) + ...)`, whatever block `j` falls in, so the
//! result does not depend on how the columns are blocked or split between threads. Skipping a
//! zero input is exact (`0 * w` is a signed zero, and adding it changes no sum) unless the
//! weight is infinite or NaN, where the skipped product would have been NaN.
//!
//! Reference twin: [`vecmat_ref`].

use crate::simd::{load, store, Fx, LANES};

/// SIMD vectors of outputs kept in registers at once (8 x 16 lanes = 128 outputs).
const NV: usize = 8;
/// Outputs per register block.
pub const BLOCK: usize = NV * LANES;

/// `y[j] += sum_i x[i] * w[i * w_cols + j]` for `j < y.len()`: `x` times the first `y.len()`
/// columns of the row-major matrix `w: [x.len(), w_cols]`. To compute another range of columns
/// `j0..j0 + y.len()`, pass `&w[j0..]` (the last row may then be short; only the columns used
/// must be there).
///
/// # Panics
/// If `y` is wider than `w_cols`, or `w` is too short for `x.len()` rows.
pub fn vecmat(x: &[f32], w: &[f32], w_cols: usize, y: &mut [f32]) {
    let n = y.len();
    assert!(n <= w_cols, "vecmat: {n} outputs but w has {w_cols} columns");
    if x.is_empty() || n == 0 {
        return;
    }
    assert!(
        w.len() >= (x.len() - 1) * w_cols + n,
        "vecmat: w has {} values, {} rows of {w_cols} need {}",
        w.len(),
        x.len(),
        (x.len() - 1) * w_cols + n
    );
    let rows = nonzero_rows(x);
    let mut j = 0;
    while n - j >= BLOCK {
        block::<NV>(x, &rows, &w[j..], w_cols, &mut y[j..j + BLOCK]);
        j += BLOCK;
    }
    // The whole vectors left, as one block whose width is a constant, so that its
    // accumulators are a fixed set of registers; then the partial vector, if any.
    let (w_rest, y_rest) = (&w[j..], &mut y[j..]);
    match y_rest.len() / LANES {
        0 => {}
        1 => block::<1>(x, &rows, w_rest, w_cols, &mut y_rest[..LANES]),
        2 => block::<2>(x, &rows, w_rest, w_cols, &mut y_rest[..2 * LANES]),
        3 => block::<3>(x, &rows, w_rest, w_cols, &mut y_rest[..3 * LANES]),
        4 => block::<4>(x, &rows, w_rest, w_cols, &mut y_rest[..4 * LANES]),
        5 => block::<5>(x, &rows, w_rest, w_cols, &mut y_rest[..5 * LANES]),
        6 => block::<6>(x, &rows, w_rest, w_cols, &mut y_rest[..6 * LANES]),
        _ => block::<7>(x, &rows, w_rest, w_cols, &mut y_rest[..7 * LANES]),
    }
    let j = n - n % LANES;
    if j < n {
        partial(x, &rows, &w[j..], w_cols, &mut y[j..]);
    }
}

/// The indices `i` with `x[i] != 0`, in increasing order. Branch-free: every index is written,
/// and the write position only advances past the non-zero ones.
fn nonzero_rows(x: &[f32]) -> Vec<u32> {
    let mut rows = vec![0u32; x.len()];
    let mut k = 0;
    for (i, &xi) in x.iter().enumerate() {
        rows[k] = i as u32;
        k += usize::from(xi != 0.0);
    }
    rows.truncate(k);
    rows
}

/// `V` whole vectors of outputs held in `V` registers over all the listed rows.
fn block<const V: usize>(x: &[f32], rows: &[u32], w: &[f32], w_cols: usize, y: &mut [f32]) {
    let mut acc = [Fx::splat(0.0); V];
    for (a, ys) in acc.iter_mut().zip(y.chunks_exact(LANES)) {
        *a = load(ys);
    }
    for &i in rows {
        let i = i as usize;
        let xi = Fx::splat(x[i]);
        let wr = &w[i * w_cols..][..V * LANES];
        for (a, ws) in acc.iter_mut().zip(wr.chunks_exact(LANES)) {
            *a = load(ws).mul_add(xi, *a);
        }
    }
    for (a, ys) in acc.iter().zip(y.chunks_exact_mut(LANES)) {
        store(*a, ys);
    }
}

/// The last, partial vector of outputs (fewer than [`LANES`]): the same sums, lanes past the
/// end zero.
fn partial(x: &[f32], rows: &[u32], w: &[f32], w_cols: usize, y: &mut [f32]) {
    let mut acc = load(y);
    for &i in rows {
        let i = i as usize;
        acc = load(&w[i * w_cols..][..y.len()]).mul_add(Fx::splat(x[i]), acc);
    }
    store(acc, y);
}

/// Reference twin of [`vecmat`]: every row, in order, with a plain multiply and add.
pub fn vecmat_ref(x: &[f32], w: &[f32], w_cols: usize, y: &mut [f32]) {
    for (j, yj) in y.iter_mut().enumerate() {
        for (i, &xi) in x.iter().enumerate() {
            *yj += xi * w[i * w_cols + j];
        }
    }
}

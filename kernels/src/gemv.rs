//! Vector (or rows) times matrix without packing, `y += x w`: a dense layer's forward pass for
//! one image ([`vecmat`]) and for a batch ([`rowsmat`], which also computes its input gradient
//! on the transposed weights).
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
//! Reference twins: [`vecmat_ref`], [`rowsmat_ref`].

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

/// Rows of `w` per pass in [`rowsmat`]: 512 rows of up to 256 columns stay in a core's L2
/// (512 KB of its 1 MiB), and each row of `x` is read 2 KB at a time. On the dense layers'
/// shapes both half and twice this block are slower.
const KC: usize = 512;
/// At most this many rows of `w` ([`rowsmat`]'s K): one pass over the columns instead of
/// passes over blocks of rows.
const SHORT_K: usize = 256;
/// Rows of `x` per tile.
const R: usize = 6;
/// Vectors of columns per tile: with [`R`] rows, 24 accumulators of AVX-512's 32 registers;
/// AVX2 has 16, so 2 there (12 accumulators, 2 vectors of a row of `w` and a broadcast).
#[cfg(target_feature = "avx512f")]
const V: usize = 4;
#[cfg(not(target_feature = "avx512f"))]
const V: usize = 2;

/// `y[M, N] += x[M, K] w[K, N]`, all row-major, `N` a multiple of [`LANES`]: a dense layer's
/// forward pass for a batch (and its input gradient, `dx += dy w^T` with `w^T` stored), as
/// [`vecmat`] does it for one row, without its skipping of zeros.
///
/// A general GEMM first copies both operands into packed panels; here `w`'s rows already are
/// what the SIMD loop wants (consecutive outputs), and `x` is read one value at a time, so
/// nothing is copied. `w` is taken `KC` rows at a time, a block that stays in L2 while every
/// row of `x` runs over it; a tile of `R` rows of `x` by `V` vectors of columns keeps its
/// outputs in registers over the block's rows, and the tile's strip of `x` (R x KC values)
/// stays in L1 while the tiles move across the columns.
///
/// Each output is summed in the same order as [`vecmat`]'s, `y[j]` first and then the rows of
/// `w` in increasing order, one fused multiply-add each, whatever the blocking: a row of the
/// batch gives the same bits as that image alone through [`vecmat`], and the split of the batch
/// between threads changes nothing.
///
/// # Panics
/// If `N` is not a multiple of [`LANES`] or a length does not match `M`, `K`, `N`.
pub fn rowsmat(x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]) {
    assert_eq!(n % LANES, 0, "rowsmat: N = {n} is not a multiple of {LANES}");
    assert_eq!(w.len(), k * n, "rowsmat: w has {} values, K*N = {}", w.len(), k * n);
    if n == 0 {
        return;
    }
    assert_eq!(y.len() % n, 0, "rowsmat: y has {} values, not rows of {n}", y.len());
    let m = y.len() / n;
    assert_eq!(x.len(), m * k, "rowsmat: x has {} values, M*K = {}", x.len(), m * k);
    if k <= SHORT_K {
        // Few rows of `w` (a dense layer's input gradient, K = the layer's outputs): a block of
        // V vectors of columns of `w`, all K rows of it (32 KB for K = 128), stays in L1 while
        // every row of `x` runs over it; `y` is then read and written once.
        let t = Tiles { x, w, k, n, ks: 0..k };
        let mut c0 = 0;
        while c0 + V * LANES <= n {
            t.col_tiles::<V>(c0, m, y);
            c0 += V * LANES;
        }
        match (n - c0) / LANES {
            0 => {}
            1 => t.col_tiles::<1>(c0, m, y),
            2 => t.col_tiles::<2>(c0, m, y),
            _ => t.col_tiles::<3>(c0, m, y),
        }
        return;
    }
    for k0 in (0..k).step_by(KC) {
        let t = Tiles { x, w, k, n, ks: k0..(k0 + KC).min(k) };
        let mut r0 = 0;
        while r0 + R <= m {
            t.row_tiles::<R>(r0, y);
            r0 += R;
        }
        for r in r0..m {
            t.row_tiles::<1>(r, y);
        }
    }
}

/// One pass of [`rowsmat`]: the rows `ks` of `w`.
struct Tiles<'a> {
    x: &'a [f32],
    w: &'a [f32],
    k: usize,
    n: usize,
    ks: std::ops::Range<usize>,
}

impl Tiles<'_> {
    /// Columns `c0..c0 + VT * LANES` down all the rows: [`R`] rows at a time, then one at a
    /// time.
    fn col_tiles<const VT: usize>(&self, c0: usize, m: usize, y: &mut [f32]) {
        let mut r0 = 0;
        while r0 + R <= m {
            self.tile::<VT, R>(r0, c0, y);
            r0 += R;
        }
        for r in r0..m {
            self.tile::<VT, 1>(r, c0, y);
        }
    }

    /// Rows `r0..r0 + RT` across all the columns: [`V`] vectors at a time, then the 1 to 3
    /// vectors left.
    fn row_tiles<const RT: usize>(&self, r0: usize, y: &mut [f32]) {
        let mut c0 = 0;
        while c0 + V * LANES <= self.n {
            self.tile::<V, RT>(r0, c0, y);
            c0 += V * LANES;
        }
        match (self.n - c0) / LANES {
            0 => {}
            1 => self.tile::<1, RT>(r0, c0, y),
            2 => self.tile::<2, RT>(r0, c0, y),
            _ => self.tile::<3, RT>(r0, c0, y),
        }
    }

    /// Rows `r0..r0 + RT`, columns `c0..c0 + VT * LANES`, over the rows `ks` of `w`.
    #[inline(always)]
    fn tile<const VT: usize, const RT: usize>(&self, r0: usize, c0: usize, y: &mut [f32]) {
        let (n, width) = (self.n, VT * LANES);
        let mut acc = [[Fx::splat(0.0); VT]; RT];
        for (i, acc_r) in acc.iter_mut().enumerate() {
            for (a, ys) in acc_r.iter_mut().zip(y[(r0 + i) * n + c0..][..width].chunks_exact(LANES)) {
                *a = load(ys);
            }
        }
        let xs: [&[f32]; RT] = std::array::from_fn(|i| &self.x[(r0 + i) * self.k..][self.ks.clone()]);
        let w = &self.w[self.ks.start * n..self.ks.end * n];
        // The row's `VT` weight vectors first, then one broadcast of `x` at a time: `RT * VT`
        // sums, `VT` weights and one broadcast live at once, 15 of AVX2's 16 registers at
        // `R = 6`, `V = 2` (29 of AVX-512's 32 at `V = 4`). Broadcasting all `RT` values
        // before the row's multiply-adds, as the loop did until 2026-12-01, needs `RT - 1`
        // registers more: 19 on AVX2, so the sums went to the stack, or not, depending on the
        // build. Two builds of the same source had 31 and
        // 132 stack accesses in this function; on an AMD EPYC (Zen 3, AVX2, 2026-12-01) the
        // spilling one ran C1's inference at 16.6-19.9k img/s against 21.0-30.1k for this
        // order, eight rounds alternated (`results/speed/epyc-kernels/rowsmat.txt`).
        for (kk, wr) in w.chunks_exact(n).enumerate() {
            let wv: [Fx; VT] = std::array::from_fn(|v| load(&wr[c0 + v * LANES..][..LANES]));
            for (acc_r, x_r) in acc.iter_mut().zip(&xs) {
                let xi = Fx::splat(x_r[kk]);
                for (a, &wv) in acc_r.iter_mut().zip(&wv) {
                    *a = wv.mul_add(xi, *a);
                }
            }
        }
        for (i, acc_r) in acc.iter().enumerate() {
            for (a, ys) in acc_r.iter().zip(y[(r0 + i) * n + c0..][..width].chunks_exact_mut(LANES)) {
                store(*a, ys);
            }
        }
    }
}

/// Reference twin of [`vecmat`]: every row, in order, with a plain multiply and add.
pub fn vecmat_ref(x: &[f32], w: &[f32], w_cols: usize, y: &mut [f32]) {
    for (j, yj) in y.iter_mut().enumerate() {
        for (i, &xi) in x.iter().enumerate() {
            *yj += xi * w[i * w_cols + j];
        }
    }
}

/// Reference twin of [`rowsmat`]: [`vecmat_ref`] row by row.
pub fn rowsmat_ref(x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]) {
    if n == 0 || k == 0 {
        return;
    }
    for (yr, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(k)) {
        vecmat_ref(xr, w, n, yr);
    }
}

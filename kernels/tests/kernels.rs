//! Every fast kernel against its plain nested-loop twin (`*_ref`), plus adjoint identities,
//! hand-computed cases, the reference models' real shapes, and the wrappers' loud failures.
//!
//! Conventions, each there so that a class of bug shows:
//! - sizes are drawn from [`AWKWARD`] (0, 1, and both sides of the 8- and 16-lane SIMD
//!   widths), strides 1 and 2, padding up to the kernel size on each side independently;
//! - outputs a kernel overwrites start as NaN, so a missed element shows; outputs it
//!   accumulates into (`+=`) start as random finite values;
//! - data are small integers (-4..=4) wherever the result is then exact in `f32` whatever the
//!   summation order (every partial sum stays far below 2^24), and the comparison is `==`;
//!   otherwise uniform reals and a tolerance that says where it comes from.
//!
//! Data come from the crate's own seeded [`Rng`], seeded by proptest, so a failing case is
//! reproducible from the seed proptest prints.

use kernels::activation::{relu_backward, relu_backward_ref, relu_forward, relu_forward_ref};
use kernels::batchnorm::{
    batchnorm_backward, batchnorm_backward_ref, batchnorm_normalize, batchnorm_normalize_ref,
    batchnorm_relu_backward, batchnorm_relu_normalize, batchnorm_stats, batchnorm_stats_ref,
};
use kernels::bias::{bias_add, bias_add_ref, channel_sums, channel_sums_ref};
use kernels::conv_direct::{
    conv_backward_input, conv_backward_input_ref, conv_backward_weights, conv_backward_weights_ref,
    conv_forward, conv_forward_ref, conv_forward_relu_pool2,
};
use kernels::conv_implicit::{self, ImplicitConv, ImplicitInputGrad, ImplicitScratch, WeightGrad};
use kernels::conv_scatter::{ScatterInputGrad, ScatterScratch};
use kernels::dropout::{apply_mask, apply_mask_ref, dropout_mask, dropout_mask_ref};
use kernels::gemm::{matmul, matmul_ref, sgemm, sgemm_ref, MatMut, MatRef};
use kernels::gemv::{rowsmat, rowsmat_ref, vecmat, vecmat_ref, BLOCK};
use kernels::im2col::{col2im, col2im_ref, im2col, im2col_ref, ConvGeom, Crop};
use kernels::optim::{
    adam_update, adam_update_ref, adamw_update, adamw_update_ref, sgd_update, sgd_update_ref, AdamParams,
    SgdParams,
};
use kernels::pool::{
    avgpool_backward, avgpool_backward_ref, avgpool_forward, avgpool_forward_ref, global_avgpool_backward,
    global_avgpool_backward_ref, global_avgpool_forward, global_avgpool_forward_ref, maxpool_backward,
    maxpool_backward_ref, maxpool_forward, maxpool_forward_ref, PoolGeom,
};
use kernels::softmax::{
    softmax_xent_backward, softmax_xent_backward_ref, softmax_xent_forward, softmax_xent_forward_ref,
};
use kernels::Rng;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Data, strategies and comparisons
// ---------------------------------------------------------------------------------------------

/// Sizes around the SIMD widths (8 and 16 lanes) and the empty and single cases.
const AWKWARD: [usize; 9] = [0, 1, 7, 8, 9, 15, 16, 17, 33];

fn dim() -> impl Strategy<Value = usize> {
    prop::sample::select(AWKWARD.to_vec())
}

/// Lengths for element-wise kernels: the awkward sizes plus a few longer ones.
fn len() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0, 1, 7, 8, 9, 15, 16, 17, 33, 100, 1000])
}

/// Channel counts for convolutions: small, so that the reference twins stay cheap.
fn chans() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0, 1, 2, 3])
}

/// A convolution geometry: H and W awkward, kernel 1..=5 per side (4 gives the even 'same'
/// case), stride 1 or 2 per axis, and each of the four paddings independently in 0..=kernel.
fn geom() -> impl Strategy<Value = ConvGeom> {
    (
        chans(),
        dim(),
        dim(),
        1usize..=5,
        1usize..=5,
        1usize..=2,
        1usize..=2,
        0usize..=5,
        0usize..=5,
        0usize..=5,
        0usize..=5,
    )
        .prop_filter_map(
            "padded input smaller than the kernel",
            |(c, h, w, kh, kw, sh, sw, pt, pl, pb, pr)| {
                let (pt, pb, pl, pr) = (pt % (kh + 1), pb % (kh + 1), pl % (kw + 1), pr % (kw + 1));
                (h + pt + pb >= kh && w + pl + pr >= kw)
                    .then(|| ConvGeom::new(c, h, w, kh, kw, (sh, sw), (pt, pl, pb, pr)))
            },
        )
}

/// Small integers in -4..=4: sums of up to 2^20 products of two of them are exact in `f32`.
fn ints(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.below(9) as f32 - 4.0).collect()
}

fn reals(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn nans(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// Element-wise `==`; a NaN on either side fails.
#[track_caller]
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "{what}: element {i} is {g}, reference {w}");
    }
}

/// `|got - want| <= tol * (1 + |want|)` element-wise; a NaN fails.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} is {g}, reference {w} (tol {tol})"
        );
    }
}

/// `|got - want| <= tol * (1 + scale[i])`, where `scale[i]` is the sum of the absolute values of
/// the terms that make up element `i`. A dot product of length K summed in any order in `f32`
/// is within `K * 2^-24 * sum |terms|` of the exact value (Higham, *Accuracy and Stability of
/// Numerical Algorithms*, 2nd ed., eq. 3.5), so `tol = K * f32::EPSILON` is a safe bound that
/// scales with K instead of a guess.
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], scale: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + s),
            "{what}: element {i} is {g}, reference {w} (tol {tol} * (1 + {s}))"
        );
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn dot64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let dot = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let mag = a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
    (dot, mag)
}

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------

/// Where a `rows x cols` view lives inside a larger buffer: `off` unused values in front, then
/// row- or column-major with `pad` unused values after each row (column), and 3 spare values
/// at the end. Returns `(buffer length, row stride, column stride)`.
fn layout(rows: usize, cols: usize, col_major: bool, pad: usize, off: usize) -> (usize, usize, usize) {
    let (rs, cs) = if col_major { (1, rows + pad) } else { (cols + pad, 1) };
    let extent = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    (off + extent + 3, rs, cs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// All four transpose combinations, overwrite (C starts NaN) and accumulate. Integer data
    /// with K <= 33: exact.
    #[test]
    fn matmul_matches_ref_for_every_transpose(
        m in dim(), k in dim(), n in dim(), ta in any::<bool>(), tb in any::<bool>(),
        accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let a = ints(&mut rng, m * k);
        let b = ints(&mut rng, k * n);
        let c0 = if accumulate { ints(&mut rng, m * n) } else { nans(m * n) };
        let (mut got, mut want) = (c0.clone(), c0);
        matmul(ta, tb, m, k, n, &a, &b, &mut got, accumulate);
        matmul_ref(ta, tb, m, k, n, &a, &b, &mut want, accumulate);
        assert_same("matmul", &got, &want);
    }

    /// Real-valued data: agreement within the K-scaled rounding bound.
    #[test]
    fn matmul_matches_ref_on_reals(
        m in dim(), k in dim(), n in dim(), ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let a = reals(&mut rng, m * k);
        let b = reals(&mut rng, k * n);
        let (mut got, mut want, mut scale) = (nans(m * n), nans(m * n), nans(m * n));
        matmul(ta, tb, m, k, n, &a, &b, &mut got, false);
        matmul_ref(ta, tb, m, k, n, &a, &b, &mut want, false);
        matmul_ref(ta, tb, m, k, n, &abs(&a), &abs(&b), &mut scale, false);
        assert_within("matmul reals", &got, &want, &scale, (k as f32 + 1.0) * f32::EPSILON);
    }

    /// Strided sub-matrix views (an offset into a bigger buffer, padded rows, row- or
    /// column-major for each operand), general alpha and beta. C's buffer is filled with a
    /// sentinel outside the view, NaN inside when beta == 0: comparing whole buffers with the
    /// reference (which touches only the view) also proves nothing outside the view is written.
    #[test]
    fn sgemm_matches_ref_on_strided_views(
        m in dim(), k in dim(), n in dim(),
        major in prop::array::uniform3(any::<bool>()),
        pad in prop::array::uniform3(0usize..3), off in prop::array::uniform3(0usize..4),
        alpha in prop::sample::select(vec![1.0f32, -1.0, 0.5, 2.0]),
        beta in prop::sample::select(vec![0.0f32, 1.0, -1.0, 0.5]),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let (la, ars, acs) = layout(m, k, major[0], pad[0], off[0]);
        let (lb, brs, bcs) = layout(k, n, major[1], pad[1], off[1]);
        let (lc, crs, ccs) = layout(m, n, major[2], pad[2], off[2]);
        let a = ints(&mut rng, la);
        let b = ints(&mut rng, lb);
        let mut c0 = vec![777.0f32; lc];
        for i in 0..m {
            for j in 0..n {
                c0[off[2] + i * crs + j * ccs] = if beta == 0.0 { f32::NAN } else { rng.below(9) as f32 - 4.0 };
            }
        }
        let av = MatRef { data: &a[off[0]..], rows: m, cols: k, row_stride: ars, col_stride: acs };
        let bv = MatRef { data: &b[off[1]..], rows: k, cols: n, row_stride: brs, col_stride: bcs };
        let (mut got, mut want) = (c0.clone(), c0);
        let cv = MatMut { data: &mut got[off[2]..], rows: m, cols: n, row_stride: crs, col_stride: ccs };
        sgemm(alpha, av, bv, beta, cv);
        let cv = MatMut { data: &mut want[off[2]..], rows: m, cols: n, row_stride: crs, col_stride: ccs };
        sgemm_ref(alpha, av, bv, beta, cv);
        assert_same("sgemm strided", &got, &want);
    }

    /// The adjoint identities the backward pass relies on, both transposes:
    /// `<A X, Y> = <X, A^T Y>` and `<X B, Y> = <X, Y B^T>`, dot products in f64.
    #[test]
    fn matmul_transposes_are_adjoints(m in dim(), k in dim(), n in dim(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let a = reals(&mut rng, m * k); // A [M, K]
        let x = reals(&mut rng, k * n); // X [K, N]
        let y = reals(&mut rng, m * n); // Y [M, N]
        let (mut ax, mut aty) = (nans(m * n), nans(k * n));
        matmul(false, false, m, k, n, &a, &x, &mut ax, false); // A X      [M, N]
        matmul(true, false, k, m, n, &a, &y, &mut aty, false); // A^T Y    [K, N]
        let ((l, lm), (r, rm)) = (dot64(&ax, &y), dot64(&x, &aty));
        prop_assert!((l - r).abs() <= 1e-5 * (1.0 + lm + rm), "<Ax,y> = {l}, <x,A^T y> = {r}");

        let xm = reals(&mut rng, m * k); // X [M, K]
        let b = reals(&mut rng, k * n); //  B [K, N]
        let (mut xb, mut ybt) = (nans(m * n), nans(m * k));
        matmul(false, false, m, k, n, &xm, &b, &mut xb, false); // X B    [M, N]
        matmul(false, true, m, n, k, &y, &b, &mut ybt, false); //  Y B^T  [M, K]
        let ((l, lm), (r, rm)) = (dot64(&xb, &y), dot64(&xm, &ybt));
        prop_assert!((l - r).abs() <= 1e-5 * (1.0 + lm + rm), "<XB,y> = {l}, <x,Y B^T> = {r}");
    }
}

/// A GEMM at a real shape, all four transposes where the layer uses them, integer data:
/// every partial sum is a multiple of 1 below 16 * K <= 2^17, so the result is exact whatever
/// the blocking, even for K = 5408.
fn check_matmul_exact(ta: bool, tb: bool, m: usize, k: usize, n: usize, accumulate: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = ints(&mut rng, m * k);
    let b = ints(&mut rng, k * n);
    let c0 = if accumulate { ints(&mut rng, m * n) } else { nans(m * n) };
    let (mut got, mut want) = (c0.clone(), c0);
    matmul(ta, tb, m, k, n, &a, &b, &mut got, accumulate);
    matmul_ref(ta, tb, m, k, n, &a, &b, &mut want, accumulate);
    assert_same(&format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"), &got, &want);
}

#[test]
fn gemm_at_the_conv_layers_real_shapes() {
    check_matmul_exact(false, false, 32, 9, 676, false, 1); // C1: w[32, 9] * col[9, 676]
    check_matmul_exact(false, false, 64, 9, 676, false, 2); // A/B conv
    check_matmul_exact(false, false, 64, 16, 784, false, 3); // E conv1 (pad 1,1,2,2 -> 28x28)
    check_matmul_exact(false, false, 64, 1024, 121, false, 4); // E conv2: w[64, 1024] * col[1024, 121]
    check_matmul_exact(false, true, 64, 121, 1024, true, 5); // E conv2 dW += dY col^T
    check_matmul_exact(true, false, 1024, 64, 121, false, 6); // E conv2 dcol = W^T dY
}

#[test]
fn gemm_at_the_dense_layers_real_shapes() {
    // [512, 5408] x [5408, 128] with 8 rows instead of 512 (the rows are independent).
    check_matmul_exact(false, false, 8, 5408, 128, false, 7); //   Y = X W
    check_matmul_exact(true, false, 5408, 8, 128, true, 8); //     dW += X^T dY
    check_matmul_exact(false, true, 8, 128, 5408, true, 9); //     dX += dY W^T
    check_matmul_exact(false, false, 250, 1600, 256, false, 10); // E dense
    check_matmul_exact(true, false, 1600, 250, 256, true, 11);
    check_matmul_exact(false, true, 250, 256, 1600, true, 12);
}

/// `x` with about a third of its entries zero (as after ReLU), the rest small non-zero
/// integers, so that the skipped rows and the kept ones both occur.
fn sparse_ints(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| if rng.below(3) == 0 { 0.0 } else { rng.below(4) as f32 + 1.0 }).collect()
}

/// `vecmat` on columns `j0..j0 + n` of a `[k, cols]` matrix against its twin: integer data,
/// exact. `y` starts random (it accumulates).
fn check_vecmat(k: usize, cols: usize, j0: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = sparse_ints(&mut rng, k);
    let w = ints(&mut rng, k * cols);
    let y0 = ints(&mut rng, n);
    let (mut got, mut want) = (y0.clone(), y0);
    let w = &w[j0.min(w.len())..]; // k = 0: no rows, nothing to offset into
    vecmat(&x, w, cols, &mut got);
    vecmat_ref(&x, w, cols, &mut want);
    assert_same(&format!("vecmat k={k} cols={cols} j0={j0} n={n}"), &got, &want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Widths on both sides of the register block and the SIMD width, every count of whole
    /// vectors left after the blocks (1 to 7), any column offset.
    #[test]
    fn vecmat_matches_ref(
        k in len(),
        n in prop::sample::select(vec![0, 1, 15, 16, 17, 35, 50, 70, 90, 100, BLOCK - 1, BLOCK, BLOCK + 17, 2 * BLOCK + 5]),
        extra in 0usize..20, seed in any::<u64>(),
    ) {
        let j0 = extra / 2;
        check_vecmat(k, n + extra, j0, n, seed);
    }
}

#[test]
fn vecmat_at_the_dense_layers_real_shapes() {
    check_vecmat(5408, 128, 0, 128, 14); // C1
    check_vecmat(5408, 128, 64, 64, 15); // C1, the second half of the columns
    check_vecmat(10816, 32, 0, 32, 16); //  A/B
    check_vecmat(1600, 256, 0, 256, 17); // E
    check_vecmat(128, 10, 0, 10, 18); //    every network's last layer
}

/// `rowsmat` against its twin (integers: exact), and each of its rows against `vecmat` of that
/// row alone on reals: the same bits, as the batch and the one-image forward must give.
fn check_rowsmat(m: usize, k: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = sparse_ints(&mut rng, m * k);
    let w = ints(&mut rng, k * n);
    let y0 = ints(&mut rng, m * n);
    let (mut got, mut want) = (y0.clone(), y0);
    rowsmat(&x, &w, k, n, &mut got);
    rowsmat_ref(&x, &w, k, n, &mut want);
    assert_same(&format!("rowsmat {m}x{k}x{n}"), &got, &want);

    let x: Vec<f32> = reals(&mut rng, m * k).into_iter().map(|v| if v < -0.5 { 0.0 } else { v }).collect();
    let w = reals(&mut rng, k * n);
    let y0 = reals(&mut rng, m * n);
    let mut batch = y0.clone();
    rowsmat(&x, &w, k, n, &mut batch);
    for r in 0..m {
        let mut one = y0[r * n..][..n].to_vec();
        vecmat(&x[r * k..][..k], &w, n, &mut one);
        assert_same(&format!("rowsmat {m}x{k}x{n} row {r} against vecmat"), &batch[r * n..][..n], &one);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every column-block width (whole vectors 1 to 19), row counts on both sides of the
    /// tiles' 6 rows, K in the one-pass range (up to 256) and across the 512-row passes.
    #[test]
    fn rowsmat_matches_ref_and_vecmat(
        m in prop::sample::select(vec![0, 1, 2, 3, 4, 7, 9, 17]),
        k in prop::sample::select(vec![0, 1, 7, 63, 64, 65, 130, 257, 600]),
        vectors in 0usize..20, seed in any::<u64>(),
    ) {
        check_rowsmat(m, k, vectors * kernels::simd::LANES, seed);
    }
}

#[test]
fn rowsmat_at_the_dense_layers_real_shapes() {
    check_rowsmat(5, 5408, 128, 24); // C1 (5 rows: a tile of 3 and two single rows)
    check_rowsmat(8, 10816, 32, 25); // A/B
    check_rowsmat(7, 1600, 256, 26); // E
    check_rowsmat(6, 256, 64, 27); //   E's second dense layer
}

#[test]
fn vecmat_of_all_zero_input_leaves_y_alone() {
    let mut y = vec![1.5, -2.0, 3.0];
    vecmat(&[0.0; 4], &[7.0; 12], 3, &mut y);
    assert_eq!(y, [1.5, -2.0, 3.0]);
}

#[test]
#[should_panic(expected = "vecmat: w has")]
fn vecmat_panics_when_w_is_too_short() {
    vecmat(&[1.0; 3], &[0.0; 8], 3, &mut [0.0; 3]);
}

/// A GEMM's row `i` of `C` does not depend on the other rows in the call: computed whole or
/// in blocks of rows, `C` is the same to the bit, on real data. The dense layer relies on it
/// to pick its row blocks by the thread count and still give the same results on any.
#[test]
fn gemm_rows_do_not_depend_on_the_row_blocking() {
    for (m, k, n, seed) in [(512, 5408, 128, 20), (250, 1600, 256, 21), (64, 128, 10, 22), (37, 300, 33, 23)]
    {
        let mut rng = Rng::new(seed);
        let a = reals(&mut rng, m * k);
        let b = reals(&mut rng, k * n);
        let mut whole = nans(m * n);
        matmul(false, false, m, k, n, &a, &b, &mut whole, false);
        for block in [1, 5, 16, 100, 256] {
            let mut blocked = nans(m * n);
            for (cb, ab) in blocked.chunks_mut(block * n).zip(a.chunks(block * k)) {
                matmul(false, false, cb.len() / n, k, n, ab, &b, cb, false);
            }
            assert_same(&format!("{m}x{k}x{n} in blocks of {block} rows"), &blocked, &whole);
        }
        // And the input gradient as the dense layer computes it: dx^T[K, M] += w[K, N] dy^T[N, M]
        // into dx's [M, K] layout through strides, so a block of rows of dx is a block of
        // columns of this GEMM's C.
        let dy = reals(&mut rng, m * n);
        let dx = |rows: usize, dyb: &[f32], dxb: &mut [f32]| {
            let c = MatMut { data: dxb, rows: k, cols: rows, row_stride: 1, col_stride: k };
            sgemm(1.0, MatRef::new(&b, k, n), MatRef::transposed(dyb, n, rows), 1.0, c);
        };
        let mut whole = reals(&mut Rng::new(seed + 100), m * k);
        let mut blocked = whole.clone();
        dx(m, &dy, &mut whole);
        for (cb, db) in blocked.chunks_mut(16 * k).zip(dy.chunks(16 * n)) {
            dx(cb.len() / k, db, cb);
        }
        assert_same(&format!("{m}x{n}x{k} dx in blocks of 16 rows"), &blocked, &whole);
    }
}

#[test]
fn gemm_at_e_conv2_on_reals_is_within_the_rounding_bound() {
    let (m, k, n) = (64, 1024, 121);
    let mut rng = Rng::new(13);
    let a = reals(&mut rng, m * k);
    let b = reals(&mut rng, k * n);
    let (mut got, mut want, mut scale) = (nans(m * n), nans(m * n), nans(m * n));
    matmul(false, false, m, k, n, &a, &b, &mut got, false);
    matmul_ref(false, false, m, k, n, &a, &b, &mut want, false);
    matmul_ref(false, false, m, k, n, &abs(&a), &abs(&b), &mut scale, false);
    assert_within("E conv2 GEMM", &got, &want, &scale, (k as f32 + 1.0) * f32::EPSILON);
}

#[test]
#[should_panic(expected = "A is 3x4")]
fn sgemm_panics_when_a_slice_is_too_short() {
    let (a, b, mut c) = (vec![0.0; 11], vec![0.0; 8], vec![0.0; 6]);
    sgemm(1.0, MatRef::new(&a, 3, 4), MatRef::new(&b, 4, 2), 0.0, MatMut::new(&mut c, 3, 2));
}

#[test]
#[should_panic(expected = "B is 4x2 with strides (5, 1)")]
fn sgemm_panics_when_a_strided_view_runs_past_its_slice() {
    // Rows of 5 (padded): the last element is at 3 * 5 + 1 = 16, so 17 values are needed.
    let (a, b, mut c) = (vec![0.0; 12], vec![0.0; 16], vec![0.0; 6]);
    let b = MatRef { data: &b, rows: 4, cols: 2, row_stride: 5, col_stride: 1 };
    sgemm(1.0, MatRef::new(&a, 3, 4), b, 0.0, MatMut::new(&mut c, 3, 2));
}

#[test]
#[should_panic(expected = "shapes do not chain: A 3x4, B 5x2")]
fn sgemm_panics_when_shapes_do_not_chain() {
    let (a, b, mut c) = (vec![0.0; 12], vec![0.0; 10], vec![0.0; 6]);
    sgemm(1.0, MatRef::new(&a, 3, 4), MatRef::new(&b, 5, 2), 0.0, MatMut::new(&mut c, 3, 2));
}

#[test]
#[should_panic(expected = "C 2x3")]
fn sgemm_panics_when_c_has_the_wrong_shape() {
    let (a, b, mut c) = (vec![0.0; 12], vec![0.0; 8], vec![0.0; 6]);
    sgemm(1.0, MatRef::new(&a, 3, 4), MatRef::new(&b, 4, 2), 0.0, MatMut::new(&mut c, 2, 3));
}

#[test]
#[should_panic(expected = "alias")]
fn sgemm_panics_when_c_strides_alias() {
    let (a, b, mut c) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 4]);
    let c = MatMut { data: &mut c, rows: 2, cols: 2, row_stride: 1, col_stride: 1 };
    sgemm(1.0, MatRef::new(&a, 2, 2), MatRef::new(&b, 2, 2), 0.0, c);
}

#[test]
#[should_panic(expected = "C is 3x2")]
fn matmul_panics_when_c_is_too_short() {
    let (a, b, mut c) = (vec![0.0; 12], vec![0.0; 8], vec![0.0; 5]);
    matmul(false, false, 3, 4, 2, &a, &b, &mut c, false);
}

// ---------------------------------------------------------------------------------------------
// im2col / col2im and the convolutions
// ---------------------------------------------------------------------------------------------

/// Every way the layers compute a convolution, on integer data (exact), against the
/// definition in `conv_forward_ref` and its two backward twins:
/// - the direct kernels against their twins;
/// - im2col + GEMM (forward `y = w * col`; backward `dw += dy col^T`, `dx += col2im(w^T dy)`),
///   which is how a layer uses im2col.
///
/// Overwritten outputs start NaN, accumulated ones random; the scratch buffer starts with
/// stale NaNs to prove the kernels never read what an earlier call left there.
fn check_conv(g: &ConvGeom, oc: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let (taps, plane) = (g.col_rows(), g.out_plane());
    let x = ints(&mut rng, g.in_len()); //     x[C, H, W]
    let w = ints(&mut rng, oc * taps); //      w[OC, C*KH*KW]
    let dy = ints(&mut rng, oc * plane); //    dy[OC, OH*OW]
    let dw0 = ints(&mut rng, oc * taps); //    dw[OC, C*KH*KW], accumulated into
    let dx0 = ints(&mut rng, g.in_len()); //   dx[C, H, W], accumulated into
    let mut scratch = nans(7);

    // Forward.
    let mut want = nans(oc * plane);
    conv_forward_ref(g, oc, &x, &w, &mut want);
    let mut direct = nans(oc * plane);
    conv_forward(g, oc, &x, &w, &mut direct, &mut scratch);
    assert_same(&format!("conv_forward {g:?} oc={oc}"), &direct, &want);
    if g.unit_stride() && g.oh >= 2 && g.ow >= 2 {
        check_conv_relu_pool2(g, oc, &x, &w, &want, seed);
    }
    let mut col = nans(taps * plane); // col[C*KH*KW, OH*OW]
    im2col(g, &x, &mut col);
    let mut gemm = nans(oc * plane);
    matmul(false, false, oc, taps, plane, &w, &col, &mut gemm, false);
    assert_same(&format!("im2col + GEMM forward {g:?} oc={oc}"), &gemm, &want);
    if conv_implicit::supports(g) {
        check_implicit(g, oc, 2, seed);
    }

    // Weight gradient.
    let mut want = dw0.clone();
    conv_backward_weights_ref(g, oc, &x, &dy, &mut want);
    let mut direct = dw0.clone();
    conv_backward_weights(g, oc, &x, &dy, &mut direct, &mut scratch);
    assert_same(&format!("conv_backward_weights {g:?} oc={oc}"), &direct, &want);
    let mut gemm = dw0;
    matmul(false, true, oc, plane, taps, &dy, &col, &mut gemm, true); // dw += dy col^T
    assert_same(&format!("GEMM dw {g:?} oc={oc}"), &gemm, &want);

    // Input gradient.
    let mut want = dx0.clone();
    conv_backward_input_ref(g, oc, &w, &dy, &mut want);
    let mut direct = dx0.clone();
    scratch.iter_mut().for_each(|v| *v = f32::NAN);
    conv_backward_input(g, oc, &w, &dy, &mut direct, &mut scratch);
    assert_same(&format!("conv_backward_input {g:?} oc={oc}"), &direct, &want);
    let mut dcol = nans(taps * plane);
    matmul(true, false, taps, oc, plane, &w, &dy, &mut dcol, false); // dcol = w^T dy
    let mut gemm = dx0;
    col2im(g, &dcol, &mut gemm);
    assert_same(&format!("GEMM + col2im dx {g:?} oc={oc}"), &gemm, &want);
}

/// The fused kernel (convolution, bias, ReLU, 2x2/2 max-pool), with and without argmaxes,
/// against the unfused steps on the twin's output `conv`: bias added, `maxpool_forward_ref`,
/// ReLU. The output and scratch start NaN. Integer data makes ties common, so the first-maximum
/// rule is exercised.
fn check_conv_relu_pool2(g: &ConvGeom, oc: usize, x: &[f32], w: &[f32], conv: &[f32], seed: u64) {
    let b = ints(&mut Rng::new(seed ^ 0xb1a5), oc);
    let plane = g.out_plane();
    let mut biased = conv.to_vec();
    for (y_o, &b_o) in biased.chunks_exact_mut(plane.max(1)).zip(&b) {
        y_o.iter_mut().for_each(|v| *v += b_o);
    }
    let pg = PoolGeom::new(g.oh, g.ow, 2, 2);
    let pooled = oc * pg.oh * pg.ow;
    let (mut want, mut argmax) = (nans(pooled), vec![0u32; pooled]);
    maxpool_forward_ref(&pg, oc, &biased, &mut want, &mut argmax);
    want.iter_mut().for_each(|v| *v = v.max(0.0));
    let mut got = nans(pooled);
    conv_forward_relu_pool2(g, oc, x, w, &b, &mut got, None, &mut nans(5));
    assert_same(&format!("conv_forward_relu_pool2 {g:?} oc={oc}"), &got, &want);
    // With argmaxes (training): the same outputs, and the pool's argmaxes.
    let (mut got, mut got_argmax) = (nans(pooled), vec![u32::MAX; pooled]);
    conv_forward_relu_pool2(g, oc, x, w, &b, &mut got, Some(&mut got_argmax), &mut nans(5));
    assert_same(&format!("conv_forward_relu_pool2 with argmax {g:?} oc={oc}"), &got, &want);
    assert_eq!(got_argmax, argmax, "conv_forward_relu_pool2 argmax {g:?} oc={oc}");
}

/// The kernels that loop over output positions, on a crop of the outputs (as a max-pool
/// after the layer reads them): the forward writes the crop's outputs, equal to the full
/// forward's `want`, and leaves the others as they were (NaN); with output gradients zero
/// outside the crop, the weight gradient and the scattered input gradient skip those
/// positions and give the same bits as over every position.
fn check_crop(g: &ConvGeom, oc: usize, xs: &[f32], w: &[f32], b: &[f32], want: &[f32], rng: &mut Rng) {
    let crop = Crop { rows: g.oh - g.oh / 3, cols: g.ow - g.ow / 4 };
    let (plane, out_len) = (g.out_plane(), oc * g.out_plane());
    let inside = |i: usize| (i % plane) / g.ow.max(1) < crop.rows && (i % plane) % g.ow.max(1) < crop.cols;
    let mut got = nans(want.len());
    ImplicitConv::new(g, oc, w).forward(xs, b, &mut got, crop, &mut ImplicitScratch::default());
    for (i, (a, z)) in got.iter().zip(want).enumerate() {
        if inside(i) {
            assert_eq!(a.to_bits(), z.to_bits(), "cropped forward {crop:?} {g:?} oc={oc} at {i}");
        } else {
            assert!(a.is_nan(), "cropped forward {crop:?} {g:?} wrote outside the crop at {i}");
        }
    }
    let mut dys = ints(rng, want.len());
    dys.iter_mut().enumerate().filter(|(i, _)| !inside(*i)).for_each(|(_, d)| *d = 0.0);
    let (dw0, dx0) = (ints(rng, oc * g.col_rows()), ints(rng, xs.len()));
    let weight_grad = |crop: Crop| {
        let mut sums = WeightGrad::new(g, oc);
        sums.add(xs, &dys, crop, &mut ImplicitScratch::default());
        let mut dw = dw0.clone();
        sums.finish(&mut dw);
        dw
    };
    assert_same(
        &format!("cropped weight gradient {crop:?} {g:?}"),
        &weight_grad(crop),
        &weight_grad(Crop::full(g)),
    );
    let scatter = ScatterInputGrad::new(g, oc, w);
    let input_grad = |crop: Crop| {
        let mut dx = dx0.clone();
        if out_len > 0 {
            scatter.accumulate(&dys, &mut dx, crop, &mut ScatterScratch::default());
        }
        dx
    };
    assert_same(
        &format!("cropped input gradient {crop:?} {g:?}"),
        &input_grad(crop),
        &input_grad(Crop::full(g)),
    );
}

/// The implicit GEMM on a group of `images` images (bias added, outputs start NaN) against
/// the twin per image plus the bias.
fn check_implicit(g: &ConvGeom, oc: usize, images: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x1a1a);
    let (taps, out_len) = (g.col_rows(), oc * g.out_plane());
    let xs = ints(&mut rng, images * g.in_len());
    let w = ints(&mut rng, oc * taps);
    let b = ints(&mut rng, oc);
    let mut want = nans(images * out_len);
    if out_len > 0 {
        for (j, y) in want.chunks_exact_mut(out_len).enumerate() {
            conv_forward_ref(g, oc, &xs[j * g.in_len()..(j + 1) * g.in_len()], &w, y);
            bias_add_ref(y, &b, 1, oc, g.out_plane());
        }
    }
    let mut got = nans(images * out_len);
    let mut scratch = ImplicitScratch::default();
    ImplicitConv::new(g, oc, &w).forward(&xs, &b, &mut got, Crop::full(g), &mut scratch);
    assert_same(&format!("implicit GEMM forward, {images} images, {g:?} oc={oc}"), &got, &want);
    check_crop(g, oc, &xs, &w, &b, &want, &mut rng);

    // Backward: both gradients accumulate into random values, the weights' over the group.
    let dys = ints(&mut rng, images * out_len);
    let dw0 = ints(&mut rng, oc * taps);
    let dx0 = ints(&mut rng, images * g.in_len());
    let (mut want_dw, mut want_dx) = (dw0.clone(), dx0.clone());
    if out_len > 0 {
        for (j, dy) in dys.chunks_exact(out_len).enumerate() {
            let x = &xs[j * g.in_len()..(j + 1) * g.in_len()];
            conv_backward_weights_ref(g, oc, x, dy, &mut want_dw);
            conv_backward_input_ref(g, oc, &w, dy, &mut want_dx[j * g.in_len()..(j + 1) * g.in_len()]);
        }
    }
    let mut got_dw = dw0;
    conv_implicit::weight_grad(g, oc, &xs, &dys, &mut got_dw, &mut scratch);
    assert_same(&format!("implicit GEMM weight gradient, {images} images, {g:?} oc={oc}"), &got_dw, &want_dw);
    if let Some(input_grad) = ImplicitInputGrad::new(g, oc, &w) {
        let mut got_dx = dx0;
        input_grad.accumulate(&dys, &mut got_dx, &mut scratch);
        assert_same(
            &format!("implicit GEMM input gradient, {images} images, {g:?} oc={oc}"),
            &got_dx,
            &want_dx,
        );
    } else {
        assert!(
            g.stride_h != 1
                || g.stride_w != 1
                || out_len == 0
                || g.in_len() == 0
                || g.pad_top >= g.kh
                || g.pad_left >= g.kw
                || g.pad_bottom >= g.kh
                || g.pad_right >= g.kw,
            "no implicit input gradient for {g:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// im2col writes every element (col starts NaN) and is a pure copy: exact.
    #[test]
    fn im2col_matches_ref(g in geom(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = ints(&mut rng, g.in_len());
        let (mut got, mut want) = (nans(g.col_rows() * g.out_plane()), nans(g.col_rows() * g.out_plane()));
        im2col(&g, &x, &mut got);
        im2col_ref(&g, &x, &mut want);
        assert_same(&format!("im2col {g:?}"), &got, &want);
    }

    /// col2im adds into x (which starts random); integer sums are exact.
    #[test]
    fn col2im_matches_ref(g in geom(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let col = ints(&mut rng, g.col_rows() * g.out_plane());
        let x0 = ints(&mut rng, g.in_len());
        let (mut got, mut want) = (x0.clone(), x0);
        col2im(&g, &col, &mut got);
        col2im_ref(&g, &col, &mut want);
        assert_same(&format!("col2im {g:?}"), &got, &want);
    }

    /// col2im is the adjoint of im2col: `<im2col(x), y> = <x, col2im(y)>`, in f64.
    #[test]
    fn col2im_is_the_adjoint_of_im2col(g in geom(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = reals(&mut rng, g.in_len());
        let y = reals(&mut rng, g.col_rows() * g.out_plane());
        let mut col = nans(y.len());
        im2col(&g, &x, &mut col);
        let mut back = vec![0.0; x.len()];
        col2im(&g, &y, &mut back);
        let ((l, lm), (r, rm)) = (dot64(&col, &y), dot64(&x, &back));
        prop_assert!((l - r).abs() <= 1e-5 * (1.0 + lm + rm), "{g:?}: <im2col x, y> = {l}, <x, col2im y> = {r}");
    }

    /// Direct convolution (forward, both backwards) and im2col + GEMM, against the twins.
    #[test]
    fn convolutions_match_ref(g in geom(), oc in prop::sample::select(vec![0usize, 1, 3, 8, 17, 70]), seed in any::<u64>()) {
        check_conv(&g, oc, seed);
    }
}

#[test]
fn convolutions_at_the_reference_models_real_shapes() {
    // C1: 1x28x28, 32 filters 3x3 valid -> 26x26; GEMM M=32 K=9 N=676.
    let c1 = ConvGeom::new(1, 28, 28, 3, 3, (1, 1), (0, 0, 0, 0));
    assert_eq!((c1.oh, c1.ow, c1.col_rows(), c1.out_plane()), (26, 26, 9, 676));
    check_conv(&c1, 32, 21);
    // A/B: the same input, 64 filters.
    check_conv(&c1, 64, 22);
    // E conv1: 1x28x28, 64 filters 4x4, Keras 'same' pads (top 1, left 1, bottom 2, right 2).
    let e1 = ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2));
    assert_eq!((e1.oh, e1.ow), (28, 28));
    check_conv(&e1, 64, 23);
    // E conv2: 64x14x14, 64 filters 4x4 valid -> 11x11; GEMM M=64 K=1024 N=121.
    let e2 = ConvGeom::new(64, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0));
    assert_eq!((e2.oh, e2.ow, e2.col_rows(), e2.out_plane()), (11, 11, 1024, 121));
    check_conv(&e2, 64, 24);
    // `ours`: 3x3 'same' convolutions with several input channels (the direct path on 28x28).
    let same = (1, 1, 1, 1);
    check_conv(&ConvGeom::new(32, 28, 28, 3, 3, (1, 1), same), 32, 26);
    check_conv(&ConvGeom::new(64, 14, 14, 3, 3, (1, 1), same), 64, 27);
}

/// The direct weight gradient of a group of images in one call equals the sum of the twin's
/// per-image gradients (the layer passes several images at once).
#[test]
fn direct_weight_gradient_of_a_group_is_the_sum_over_its_images() {
    let geoms = [
        (ConvGeom::new(1, 28, 28, 3, 3, (1, 1), (0, 0, 0, 0)), 32),
        (ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2)), 7),
        (ConvGeom::new(5, 9, 11, 3, 3, (1, 1), (1, 1, 1, 1)), 5),
        (ConvGeom::new(3, 9, 9, 3, 3, (2, 2), (0, 1, 0, 1)), 4),
    ];
    for (seed, (g, oc)) in geoms.into_iter().enumerate() {
        let mut rng = Rng::new(40 + seed as u64);
        let images = 3;
        let xs = ints(&mut rng, images * g.in_len());
        let dys = ints(&mut rng, images * oc * g.out_plane());
        let dw0 = ints(&mut rng, oc * g.col_rows());
        let mut want = dw0.clone();
        for (x, dy) in xs.chunks_exact(g.in_len()).zip(dys.chunks_exact(oc * g.out_plane())) {
            conv_backward_weights_ref(&g, oc, x, dy, &mut want);
        }
        let mut got = dw0;
        conv_backward_weights(&g, oc, &xs, &dys, &mut got, &mut nans(3));
        assert_same(&format!("group of {images} images, {g:?} oc={oc}"), &got, &want);
    }
}

#[test]
fn direct_conv_on_reals_is_within_the_rounding_bound() {
    // E conv1 on real data: the fast path sums 16 taps in f32, the twin in f64.
    let g = ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2));
    let oc = 64;
    let mut rng = Rng::new(25);
    let x = reals(&mut rng, g.in_len());
    let w = reals(&mut rng, oc * g.col_rows());
    let (mut got, mut want, mut scale) = (nans(oc * 784), nans(oc * 784), nans(oc * 784));
    conv_forward(&g, oc, &x, &w, &mut got, &mut Vec::new());
    conv_forward_ref(&g, oc, &x, &w, &mut want);
    conv_forward_ref(&g, oc, &abs(&x), &abs(&w), &mut scale);
    assert_within("E conv1 direct", &got, &want, &scale, 17.0 * f32::EPSILON);
}

#[test]
fn im2col_of_a_small_padded_image_by_hand() {
    // x = [[1, 2], [3, 4]], 2x2 kernel, pad 1 on top and left only: OH = OW = 2.
    // Output (0, 0) sees [[pad, pad], [pad, 1]]; (1, 1) sees [[1, 2], [3, 4]].
    let g = ConvGeom::new(1, 2, 2, 2, 2, (1, 1), (1, 1, 0, 0));
    let mut col = nans(4 * 4);
    im2col(&g, &[1.0, 2.0, 3.0, 4.0], &mut col);
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0, 1.0, // (kh 0, kw 0)
        0.0, 0.0, 1.0, 2.0, // (kh 0, kw 1)
        0.0, 1.0, 0.0, 3.0, // (kh 1, kw 0)
        1.0, 2.0, 3.0, 4.0, // (kh 1, kw 1)
    ];
    assert_same("im2col by hand", &col, &want);
}

#[test]
fn im2col_when_a_kernel_column_sees_only_padding() {
    // W = 1, a 1x3 kernel, 2 columns of padding on the left only: OW = 1, and kernel columns 0
    // and 1 read only padding. (Regression: the stride-1 copy once computed its start column
    // as `lo + kw - PL` for this empty range, which underflows.)
    let g = ConvGeom::new(1, 1, 1, 1, 3, (1, 1), (0, 2, 0, 0));
    assert_eq!((g.oh, g.ow), (1, 1));
    let mut col = nans(3);
    im2col(&g, &[5.0], &mut col);
    assert_same("im2col", &col, &[0.0, 0.0, 5.0]);
    let mut x = vec![1.0];
    col2im(&g, &[1.0, 2.0, 3.0], &mut x);
    assert_same("col2im", &x, &[4.0]);
}

#[test]
#[should_panic(expected = "smaller than the 4x4 kernel")]
fn conv_geom_panics_when_the_kernel_does_not_fit() {
    ConvGeom::new(1, 2, 2, 4, 4, (1, 1), (0, 0, 1, 1));
}

#[test]
#[should_panic(expected = "im2col: x has 783 values, geometry needs 784")]
fn im2col_panics_when_x_is_too_short() {
    let g = ConvGeom::new(1, 28, 28, 3, 3, (1, 1), (0, 0, 0, 0));
    im2col(&g, &vec![0.0; 783], &mut vec![0.0; 9 * 676]);
}

#[test]
#[should_panic(expected = "w has 287 values, needs OC*C*KH*KW = 288")]
fn conv_forward_panics_when_w_is_too_short() {
    let g = ConvGeom::new(1, 28, 28, 3, 3, (1, 1), (0, 0, 0, 0));
    conv_forward(&g, 32, &[0.0; 784], &[0.0; 287], &mut vec![0.0; 32 * 676], &mut Vec::new());
}

// ---------------------------------------------------------------------------------------------
// Max-pooling
// ---------------------------------------------------------------------------------------------

/// Forward (y NaN, argmax poisoned) and backward (dx random) against the twins. Integer data in
/// -4..=4 makes ties common, so the first-maximum convention is exercised on every case; the
/// backward twin recomputes the winner from `x` instead of trusting the saved index.
fn check_pool(g: &PoolGeom, planes: usize, x: &[f32], rng: &mut Rng) {
    let outs = planes * g.oh * g.ow;
    let (mut y, mut y_ref) = (nans(outs), nans(outs));
    let (mut arg, mut arg_ref) = (vec![u32::MAX; outs], vec![u32::MAX; outs]);
    maxpool_forward(g, planes, x, &mut y, &mut arg);
    maxpool_forward_ref(g, planes, x, &mut y_ref, &mut arg_ref);
    assert_same(&format!("maxpool y {g:?} planes={planes}"), &y, &y_ref);
    assert_eq!(arg, arg_ref, "maxpool argmax {g:?} planes={planes}");

    let dy = ints(rng, outs);
    let dx0 = ints(rng, x.len());
    let (mut dx, mut dx_ref) = (dx0.clone(), dx0);
    maxpool_backward(g, planes, &dy, &arg, &mut dx);
    maxpool_backward_ref(g, planes, x, &dy, &mut dx_ref);
    assert_same(&format!("maxpool dx {g:?} planes={planes}"), &dx, &dx_ref);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Windows 1..=3 and strides 1..=3, with the unrolled 2x2/2 fast path drawn most often.
    #[test]
    fn maxpool_matches_ref(
        planes in prop::sample::select(vec![0usize, 1, 3]), h in dim(), w in dim(),
        (k, stride) in prop_oneof![3 => Just((2usize, 2usize)), 2 => (1usize..=3, 1usize..=3)],
        seed in any::<u64>(),
    ) {
        prop_assume!(h >= k && w >= k);
        let g = PoolGeom::new(h, w, k, stride);
        let mut rng = Rng::new(seed);
        let x = ints(&mut rng, planes * h * w);
        check_pool(&g, planes, &x, &mut rng);
    }
}

// ---------------------------------------------------------------------------------------------
// Average pooling
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Average pooling (windows 1..=3, strides 1..=3) and global average pooling against their
    /// twins. Integer data keeps every window's sum exact in f32, so the only rounding is the
    /// division (the fast kernel multiplies by `1/K^2`): a few ulps.
    #[test]
    fn avgpool_matches_ref(
        planes in prop::sample::select(vec![0usize, 1, 3]), h in dim(), w in dim(),
        k in 1usize..=3, stride in 1usize..=3, seed in any::<u64>(),
    ) {
        prop_assume!(h >= k && w >= k);
        let g = PoolGeom::new(h, w, k, stride);
        let mut rng = Rng::new(seed);
        let x = ints(&mut rng, planes * h * w);
        let outs = planes * g.oh * g.ow;
        let (mut y, mut y_ref) = (nans(outs), nans(outs));
        avgpool_forward(&g, planes, &x, &mut y);
        avgpool_forward_ref(&g, planes, &x, &mut y_ref);
        assert_close(&format!("avgpool y {g:?}"), &y, &y_ref, 4.0 * f32::EPSILON);
        let dy = ints(&mut rng, outs);
        let dx0 = ints(&mut rng, x.len());
        let (mut dx, mut dx_ref) = (dx0.clone(), dx0);
        avgpool_backward(&g, planes, &dy, &mut dx);
        avgpool_backward_ref(&g, planes, &dy, &mut dx_ref);
        assert_close(&format!("avgpool dx {g:?}"), &dx, &dx_ref, 4.0 * 9.0 * f32::EPSILON);

        let s = h * w;
        let (mut gy, mut gy_ref) = (nans(planes), nans(planes));
        global_avgpool_forward(planes, s, &x, &mut gy);
        global_avgpool_forward_ref(planes, s, &x, &mut gy_ref);
        assert_close("global avgpool y", &gy, &gy_ref, 4.0 * f32::EPSILON);
        let gdy = ints(&mut rng, planes);
        let gdx0 = ints(&mut rng, x.len());
        let (mut gdx, mut gdx_ref) = (gdx0.clone(), gdx0);
        global_avgpool_backward(planes, s, &gdy, &mut gdx);
        global_avgpool_backward_ref(planes, s, &gdy, &mut gdx_ref);
        assert_close("global avgpool dx", &gdx, &gdx_ref, 4.0 * f32::EPSILON);
    }
}

#[test]
fn avgpool_of_a_hand_computed_plane() {
    // 4x4 plane 0..16, 2x2 windows, stride 2: means of {0,1,4,5}, {2,3,6,7}, ...
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let g = PoolGeom::new(4, 4, 2, 2);
    let mut y = nans(4);
    avgpool_forward(&g, 1, &x, &mut y);
    assert_eq!(y, [2.5, 4.5, 10.5, 12.5]);
    let mut dx = vec![0.0; 16];
    avgpool_backward(&g, 1, &[4.0, 8.0, 0.0, -4.0], &mut dx);
    assert_eq!(&dx[..4], &[1.0, 1.0, 2.0, 2.0]);
    assert_eq!(&dx[12..], &[0.0, 0.0, -1.0, -1.0]);
    let mut gy = nans(1);
    global_avgpool_forward(1, 16, &x, &mut gy);
    assert_eq!(gy, [7.5]);
}

#[test]
fn maxpool_at_the_reference_models_real_shapes() {
    let mut rng = Rng::new(31);
    // C1 32x26x26, E 64x28x28 and 64x11x11 (the odd last row and column are dropped), two
    // images each; integer data (ties) and real data (no ties).
    for (c, hw, ohw) in [(32, 26, 13), (64, 28, 14), (64, 11, 5)] {
        let g = PoolGeom::new(hw, hw, 2, 2);
        assert_eq!((g.oh, g.ow), (ohw, ohw));
        let planes = 2 * c;
        let x = ints(&mut rng, planes * hw * hw);
        check_pool(&g, planes, &x, &mut rng);
        let x = reals(&mut rng, planes * hw * hw);
        check_pool(&g, planes, &x, &mut rng);
    }
}

#[test]
fn maxpool_ties_go_to_the_first_maximum_in_row_major_order() {
    // One 4x4 plane, 2x2/2 windows (the fast path) and one 3x3/1 window (the generic path).
    #[rustfmt::skip]
    let x = [
        5.0, 5.0,   1.0, 3.0,
        5.0, 5.0,   3.0, 2.0,

        0.0, -1.0,  7.0, 6.0,
        -1.0, 0.0,  7.0, 7.0,
    ];
    let g = PoolGeom::new(4, 4, 2, 2);
    let (mut y, mut arg) = (nans(4), vec![u32::MAX; 4]);
    maxpool_forward(&g, 1, &x, &mut y, &mut arg);
    assert_same("tie y", &y, &[5.0, 3.0, 0.0, 7.0]);
    assert_eq!(arg, [0, 3, 8, 10]);
    // Only the first maximum receives gradient.
    let mut dx = vec![0.0; 16];
    maxpool_backward(&g, 1, &[1.0, 2.0, 3.0, 4.0], &arg, &mut dx);
    let mut want = [0.0; 16];
    (want[0], want[3], want[8], want[10]) = (1.0, 2.0, 3.0, 4.0);
    assert_same("tie dx", &dx, &want);

    // The generic path (3x3 windows, stride 1): the 7 at (2, 2) comes before those at (3, 2),
    // (3, 3); on a constant plane every window's winner is its top-left corner.
    let g = PoolGeom::new(4, 4, 3, 1);
    let (mut y, mut arg) = (nans(4), vec![u32::MAX; 4]);
    maxpool_forward(&g, 1, &x, &mut y, &mut arg);
    assert_same("tie y 3x3", &y, &[7.0, 7.0, 7.0, 7.0]);
    assert_eq!(arg, [10, 10, 10, 10]);
    maxpool_forward(&g, 1, &[1.0; 16], &mut y, &mut arg);
    assert_eq!(arg, [0, 1, 4, 5]);
}

#[test]
#[should_panic(expected = "maxpool: y has 168 values, needs planes*OH*OW = 169")]
fn maxpool_panics_when_y_is_too_short() {
    let g = PoolGeom::new(26, 26, 2, 2);
    maxpool_forward(&g, 1, &[0.0; 676], &mut [0.0; 168], &mut [0; 168]);
}

// ---------------------------------------------------------------------------------------------
// ReLU, bias, softmax cross-entropy, dropout
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Integer data, so exact zeros (the kink) are common: forward overwrites (NaN start),
    /// backward accumulates and passes gradient only where `y > 0`.
    #[test]
    fn relu_matches_ref(n in len(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = ints(&mut rng, n);
        let (mut y, mut y_ref) = (nans(n), nans(n));
        relu_forward(&x, &mut y);
        relu_forward_ref(&x, &mut y_ref);
        assert_same("relu forward", &y, &y_ref);

        let dy = ints(&mut rng, n);
        let dx0 = ints(&mut rng, n);
        let (mut dx, mut dx_ref) = (dx0.clone(), dx0.clone());
        relu_backward(&y, &dy, &mut dx, true);
        relu_backward_ref(&y_ref, &dy, &mut dx_ref, true);
        assert_same("relu backward", &dx, &dx_ref);
        for i in 0..n {
            let expect = if x[i] > 0.0 { dx0[i] + dy[i] } else { dx0[i] };
            prop_assert_eq!(dx[i], expect, "relu kink convention at x = {}", x[i]);
        }
        // Overwriting (the first gradient a node gets): every stale value replaced.
        let (mut dx, mut dx_ref) = (nans(n), nans(n));
        relu_backward(&y, &dy, &mut dx, false);
        relu_backward_ref(&y_ref, &dy, &mut dx_ref, false);
        assert_same("relu backward, overwriting", &dx, &dx_ref);
        for i in 0..n {
            let expect = if x[i] > 0.0 { dy[i] } else { 0.0 };
            prop_assert_eq!(dx[i], expect, "relu backward overwriting at x = {}", x[i]);
        }
    }

    /// `[N, C, S]` with S = 1 (dense features, the SIMD row path) and S > 1 (image planes).
    #[test]
    fn bias_add_and_channel_sums_match_ref(
        n in dim(), c in dim(), s in prop::sample::select(vec![1usize, 1, 2, 7, 9, 16, 17]),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let b = ints(&mut rng, c);
        let y0 = ints(&mut rng, n * c * s);
        let (mut y, mut y_ref) = (y0.clone(), y0);
        bias_add(&mut y, &b, n, c, s);
        bias_add_ref(&mut y_ref, &b, n, c, s);
        assert_same("bias_add", &y, &y_ref);

        let dy = ints(&mut rng, n * c * s);
        let db0 = ints(&mut rng, c);
        let (mut db, mut db_ref) = (db0.clone(), db0);
        channel_sums(&dy, n, c, s, &mut db);
        channel_sums_ref(&dy, n, c, s, &mut db_ref);
        assert_same("channel_sums", &db, &db_ref);
    }

    /// Forward probabilities and summed loss, and the backward `dz += scale * (p - t)`, with and
    /// without label smoothing, against the f64 twins.
    #[test]
    fn softmax_xent_matches_ref(
        n in prop::sample::select(vec![0usize, 1, 7, 8, 9]), k in prop::sample::select(vec![1usize, 2, 7, 10, 17]),
        smoothing in prop::sample::select(vec![0.0f32, 0.1]), spread in prop::sample::select(vec![1.0f32, 5.0, 30.0]),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let z: Vec<f32> = reals(&mut rng, n * k).iter().map(|v| v * spread).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.below(k as u64) as u8).collect();
        let (mut p, mut p_ref) = (nans(n * k), nans(n * k));
        let loss = softmax_xent_forward(&z, &labels, n, k, smoothing, &mut p);
        let loss_ref = softmax_xent_forward_ref(&z, &labels, n, k, smoothing, &mut p_ref);
        assert_close("softmax probs", &p, &p_ref, 1e-6);
        // Each row's loss is at most ~2 * spread + ln K; its f32 parts are exact to ~1e-7 of that.
        prop_assert!((loss - loss_ref).abs() <= 1e-5 * (1.0 + loss_ref.abs()), "loss {loss} vs {loss_ref}");
        for row in p.chunks_exact(k) {
            let sum: f32 = row.iter().sum();
            prop_assert!((sum - 1.0).abs() <= 1e-5, "row sums to {sum}");
        }

        let scale = rng.uniform(-2.0, 2.0);
        let dz0 = reals(&mut rng, n * k);
        let (mut dz, mut dz_ref) = (dz0.clone(), dz0);
        softmax_xent_backward(&p, &labels, n, k, smoothing, scale, &mut dz);
        softmax_xent_backward_ref(&p, &labels, n, k, smoothing, scale, &mut dz_ref);
        assert_close("softmax backward", &dz, &dz_ref, 1e-6);
    }

    /// Same key, same mask, bit for bit, however it is split into chunks; every value is 0 or
    /// `1 / (1 - rate)`.
    #[test]
    fn dropout_mask_matches_ref(n in len(), rate in prop::sample::select(vec![0.0f32, 0.1, 0.5, 0.9]), seed in any::<u64>(), cut in 0usize..40) {
        let mut mask = nans(n);
        dropout_mask(rate, seed, 0, &mut mask);
        let want = dropout_mask_ref(rate, seed, 0, n);
        assert_same("dropout mask", &mask, &want);
        // Filling in two chunks with offsets gives the same mask.
        let cut = cut.min(n);
        let mut chunked = nans(n);
        let (a, b) = chunked.split_at_mut(cut);
        dropout_mask(rate, seed, 0, a);
        dropout_mask(rate, seed, cut, b);
        assert_same("dropout mask in chunks", &chunked, &want);
        let keep = 1.0 / (1.0 - rate);
        prop_assert!(mask.iter().all(|&m| m == 0.0 || m == keep));
    }

    /// Forward `y = x * mask` overwrites (NaN start); backward `dx += dy * mask` accumulates.
    #[test]
    fn apply_mask_matches_a_scalar_loop(n in len(), accumulate in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = ints(&mut rng, n);
        let mut mask = vec![0.0; n];
        dropout_mask(0.5, seed, 0, &mut mask); // values 0 or 2: products stay exact
        let y0 = if accumulate { ints(&mut rng, n) } else { nans(n) };
        let mut want = y0.clone();
        apply_mask_ref(&x, &mask, &mut want, accumulate);
        let mut y = y0;
        apply_mask(&x, &mask, &mut y, accumulate);
        assert_same("apply_mask", &y, &want);
    }
}

#[test]
fn softmax_xent_survives_huge_logits() {
    // exp(1000) overflows f32 (and f64): only the max-shifted form stays finite.
    let z = [1000.0, 0.0, -1000.0, 1000.0, 999.0, -5.0];
    let labels = [0u8, 2];
    for smoothing in [0.0f32, 0.1] {
        let (mut p, mut p_ref) = (nans(6), nans(6));
        let loss = softmax_xent_forward(&z, &labels, 2, 3, smoothing, &mut p);
        let loss_ref = softmax_xent_forward_ref(&z, &labels, 2, 3, smoothing, &mut p_ref);
        assert!(loss.is_finite() && p.iter().all(|v| v.is_finite()), "loss {loss}, probs {p:?}");
        assert_close("huge-logit probs", &p, &p_ref, 1e-6);
        // Row 0: p = (1, 0, 0) and label 0, so the unsmoothed loss is 0; smoothing adds
        // eps/K * (0 + 1000 + 2000). Row 1: label 2 has log p = -5 - 1000 - ln(1 + e^-1).
        let ln_sum = (1.0f64 + (-1.0f64).exp()).ln();
        let (s, k) = (smoothing as f64, 3.0);
        let row0 = s / k * 3000.0;
        let row1 = (1.0 - s + s / k) * (1005.0 + ln_sum) + s / k * (ln_sum + (1.0 + ln_sum));
        let want = row0 + row1;
        assert!(
            (loss - want).abs() <= 1e-4 * want.max(1.0),
            "smoothing {smoothing}: loss {loss}, by hand {want}"
        );
        assert!(
            (loss - loss_ref).abs() <= 1e-4 * want.max(1.0),
            "smoothing {smoothing}: loss {loss}, twin {loss_ref}"
        );
    }
}

#[test]
fn softmax_xent_of_equal_logits_is_ln_k() {
    // p = 1/K everywhere, so the loss is ln K per row whatever the smoothing, and the gradient
    // is 1/K - t.
    let (n, k) = (3, 10);
    let z = vec![0.25f32; n * k];
    let labels = [0u8, 4, 9];
    let mut p = nans(n * k);
    let loss = softmax_xent_forward(&z, &labels, n, k, 0.1, &mut p);
    assert!((loss - 3.0 * 10f64.ln()).abs() < 1e-5, "loss {loss}");
    let mut dz = vec![0.0; n * k];
    softmax_xent_backward(&p, &labels, n, k, 0.1, 1.0, &mut dz);
    // t = 0.9 + 0.01 for the label, 0.01 elsewhere: row 0, class 4 is not its label; row 1's is.
    assert!((dz[4] - (0.1 - 0.01)).abs() < 1e-6 && (dz[10 + 4] - (0.1 - 0.91)).abs() < 1e-6, "{dz:?}");
}

#[test]
#[should_panic(expected = "label 10 is not below the class count 10")]
fn softmax_xent_panics_on_a_label_out_of_range() {
    softmax_xent_forward(&[0.0; 10], &[10], 1, 10, 0.0, &mut [0.0; 10]);
}

#[test]
fn dropout_drops_the_requested_fraction() {
    // 100k draws: the zero count is Binomial(n, rate), standard deviation sqrt(n r (1 - r))
    // <= 159; allow 5 of them. The mean of the mask is 1 (inverted dropout) to the same accuracy.
    let n = 100_000;
    for (key, rate) in [0.0f32, 0.1, 0.25, 0.5].into_iter().enumerate() {
        let mut mask = nans(n);
        dropout_mask(rate, 41 + key as u64, 0, &mut mask);
        let zeros = mask.iter().filter(|&&m| m == 0.0).count();
        let sd = (n as f64 * rate as f64 * (1.0 - rate as f64)).sqrt();
        assert!(
            (zeros as f64 - n as f64 * rate as f64).abs() <= 5.0 * sd,
            "rate {rate}: {zeros} zeros of {n}"
        );
        let mean = mask.iter().map(|&m| m as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() <= 0.01, "rate {rate}: mask mean {mean}");
    }
}

#[test]
#[should_panic(expected = "rate 1 is not in [0, 1)")]
fn dropout_panics_at_rate_one() {
    dropout_mask(1.0, 0, 0, &mut [0.0; 4]);
}

// ---------------------------------------------------------------------------------------------
// Batch normalisation
// ---------------------------------------------------------------------------------------------

#[test]
fn batchnorm_stats_and_normalize_by_hand() {
    // [N=2, C=2, S=2]. Channel 0 holds 1, -1, 1, -1: mean 0, biased variance 1.
    // Channel 1 holds 2, 6, 2, 6: mean 4, variance 4, so inv_std = 1/2 (eps = 0).
    let x = [1.0, -1.0, 2.0, 6.0, 1.0, -1.0, 2.0, 6.0];
    let (mut mean, mut var) = (nans(2), nans(2));
    batchnorm_stats(&x, 2, 2, 2, &mut mean, &mut var);
    assert_same("mean", &mean, &[0.0, 4.0]);
    assert_same("var", &var, &[1.0, 4.0]);
    // gamma (2, -1), beta (0.5, 3): channel 0 -> 2 x + 0.5; channel 1 -> -(x - 4) / 2 + 3.
    let mut y = nans(8);
    batchnorm_normalize(&x, 2, 2, 2, &mean, &[1.0, 0.5], &[2.0, -1.0], &[0.5, 3.0], &mut y);
    assert_same("normalize", &y, &[2.5, -1.5, 4.0, 2.0, 2.5, -1.5, 4.0, 2.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Statistics against the twin; normalize against the formula written out; backward (into
    /// random dx, dgamma, dbeta) against the twin derived through the chain rule.
    #[test]
    fn batchnorm_matches_ref(
        n in prop::sample::select(vec![1usize, 2, 7, 8, 17]), c in prop::sample::select(vec![0usize, 1, 3, 8]),
        s in prop::sample::select(vec![1usize, 1, 7, 16, 17, 33]), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        // An offset and scale per element so that the mean is not 0 and variances differ.
        let x: Vec<f32> = reals(&mut rng, n * c * s).iter().map(|v| 1.5 + 2.0 * v).collect();
        let (mut mean, mut var, mut mean_ref, mut var_ref) = (nans(c), nans(c), nans(c), nans(c));
        batchnorm_stats(&x, n, c, s, &mut mean, &mut var);
        batchnorm_stats_ref(&x, n, c, s, &mut mean_ref, &mut var_ref);
        assert_close("batchnorm mean", &mean, &mean_ref, 1e-6);
        assert_close("batchnorm var", &var, &var_ref, 1e-6);

        let eps = 1e-3f32;
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let gamma = reals(&mut rng, c);
        let beta = reals(&mut rng, c);
        let mut y = nans(n * c * s);
        batchnorm_normalize(&x, n, c, s, &mean, &inv_std, &gamma, &beta, &mut y);
        let mut want = nans(n * c * s);
        batchnorm_normalize_ref(&x, n, c, s, &mean, &inv_std, &gamma, &beta, &mut want);
        // The kernel folds mean, inv_std, gamma and beta into one scale and shift; the
        // rounding differs from the formula by a few ulps of the terms (|x * scale| <= ~4).
        assert_close("batchnorm normalize", &y, &want, 1e-5);

        let dy = reals(&mut rng, n * c * s);
        let (dx0, dg0, db0) = (reals(&mut rng, n * c * s), reals(&mut rng, c), reals(&mut rng, c));
        let (mut dx, mut dg, mut db) = (dx0.clone(), dg0.clone(), db0.clone());
        let (mut dx_ref, mut dg_ref, mut db_ref) = (dx0, dg0, db0);
        batchnorm_backward(&x, &dy, n, c, s, &mean, &inv_std, &gamma, (&mut dx[..], true), &mut dg, &mut db);
        let dx_ref_set = (&mut dx_ref[..], true);
        batchnorm_backward_ref(&x, &dy, n, c, s, &mean, &inv_std, &gamma, dx_ref_set, &mut dg_ref, &mut db_ref);
        // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)): three O(1) terms
        // in f32 times inv_std <= 1/sqrt(eps) ~ 32 (when a channel is constant).
        assert_close("batchnorm dx", &dx, &dx_ref, 2e-4);
        // Sums of up to 561 products, each term rounded in f32 before the f64 sum.
        assert_close("batchnorm dgamma", &dg, &dg_ref, 1e-5);
        assert_close("batchnorm dbeta", &db, &db_ref, 1e-5);
        // Overwriting: the same dx as adding to zeros, whatever the buffer held.
        let (mut set, mut added) = (nans(n * c * s), vec![0.0; n * c * s]);
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        batchnorm_backward(&x, &dy, n, c, s, &mean, &inv_std, &gamma, (&mut set[..], false), &mut dg, &mut db);
        batchnorm_backward(&x, &dy, n, c, s, &mean, &inv_std, &gamma, (&mut added[..], true), &mut dg, &mut db);
        assert_same("batchnorm dx, overwriting", &set, &added);
        let (mut set, mut added) = (nans(n * c * s), vec![0.0; n * c * s]);
        batchnorm_backward_ref(&x, &dy, n, c, s, &mean, &inv_std, &gamma, (&mut set[..], false), &mut dg, &mut db);
        batchnorm_backward_ref(&x, &dy, n, c, s, &mean, &inv_std, &gamma, (&mut added[..], true), &mut dg, &mut db);
        assert_same("batchnorm_ref dx, overwriting", &set, &added);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batch-norm fused with the ReLU after it gives the bits of the two kernels one after the
    /// other (forward, and backward into dx, dgamma, dbeta, adding and overwriting), and the
    /// reference engine's composition of the plain twins to rounding.
    #[test]
    fn batchnorm_relu_is_batchnorm_then_relu(
        n in prop::sample::select(vec![1usize, 2, 7, 17]), c in prop::sample::select(vec![0usize, 1, 3, 8]),
        s in prop::sample::select(vec![1usize, 7, 16, 17, 33]), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let len = n * c * s;
        let x: Vec<f32> = reals(&mut rng, len).iter().map(|v| 0.5 + 2.0 * v).collect();
        let (mut mean, mut var) = (nans(c), nans(c));
        batchnorm_stats(&x, n, c, s, &mut mean, &mut var);
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-3).sqrt()).collect();
        let (gamma, beta) = (reals(&mut rng, c), reals(&mut rng, c));

        let (mut normalized, mut two_passes, mut fused) = (nans(len), nans(len), nans(len));
        batchnorm_normalize(&x, n, c, s, &mean, &inv_std, &gamma, &beta, &mut normalized);
        relu_forward(&normalized, &mut two_passes);
        batchnorm_relu_normalize(&x, n, c, s, &mean, &inv_std, &gamma, &beta, &mut fused);
        assert_same("batchnorm+relu forward", &fused, &two_passes);
        let mut plain = nans(len);
        batchnorm_normalize_ref(&x, n, c, s, &mean, &inv_std, &gamma, &beta, &mut plain);
        let plain: Vec<f32> = plain.iter().map(|&v| v.max(0.0)).collect();
        assert_close("batchnorm+relu forward vs the twins", &fused, &plain, 1e-5);

        let y = fused;
        let dy = reals(&mut rng, len);
        let (dx0, dg0, db0) = (reals(&mut rng, len), reals(&mut rng, c), reals(&mut rng, c));
        // Two kernels: the ReLU's gradient into a buffer, then batch-norm's backward.
        let mut d_normalized = nans(len);
        relu_backward(&y, &dy, &mut d_normalized, false);
        let (mut dx, mut dg, mut db) = (dx0.clone(), dg0.clone(), db0.clone());
        batchnorm_backward(&x, &d_normalized, n, c, s, &mean, &inv_std, &gamma, (&mut dx[..], accumulate), &mut dg, &mut db);
        // One kernel.
        let (mut fdx, mut fdg, mut fdb) = (dx0.clone(), dg0.clone(), db0.clone());
        let fused_dx = (&mut fdx[..], accumulate);
        batchnorm_relu_backward(&x, &y, &dy, n, c, s, &mean, &inv_std, &gamma, fused_dx, &mut fdg, &mut fdb);
        assert_same("batchnorm+relu dx", &fdx, &dx);
        assert_same("batchnorm+relu dgamma", &fdg, &dg);
        assert_same("batchnorm+relu dbeta", &fdb, &db);
        // The plain twins, masked by hand.
        let masked: Vec<f32> = y.iter().zip(&dy).map(|(&o, &g)| if o > 0.0 { g } else { 0.0 }).collect();
        let (mut rdx, mut rdg, mut rdb) = (dx0, dg0, db0);
        let ref_dx = (&mut rdx[..], accumulate);
        batchnorm_backward_ref(&x, &masked, n, c, s, &mean, &inv_std, &gamma, ref_dx, &mut rdg, &mut rdb);
        assert_close("batchnorm+relu dx vs the twins", &fdx, &rdx, 2e-4);
        assert_close("batchnorm+relu dgamma vs the twins", &fdg, &rdg, 1e-5);
        assert_close("batchnorm+relu dbeta vs the twins", &fdb, &rdb, 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Five steps with fresh gradients, momentum 0 and 0.9, with and without weight decay,
    /// with and without Nesterov's step (only with momentum, as PyTorch requires).
    /// The fast loop fuses multiply-adds, so it differs from the twin by rounding only.
    #[test]
    fn sgd_matches_ref_over_several_steps(
        n in len(), momentum in prop::sample::select(vec![0.0f32, 0.9]),
        weight_decay in prop::sample::select(vec![0.0f32, 5e-4, 0.1]), nesterov in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let h = SgdParams { lr: 0.05, momentum, weight_decay, nesterov: nesterov && momentum > 0.0 };
        let mut rng = Rng::new(seed);
        let (mut p, mut v) = (reals(&mut rng, n), reals(&mut rng, n));
        let (mut p_ref, mut v_ref) = (p.clone(), v.clone());
        for step in 0..5 {
            let g = reals(&mut rng, n);
            sgd_update(&h, &mut p, &g, &mut v);
            sgd_update_ref(&h, &mut p_ref, &g, &mut v_ref);
            assert_close(&format!("sgd p, step {step}"), &p, &p_ref, 1e-5);
            assert_close(&format!("sgd velocity, step {step}"), &v, &v_ref, 1e-5);
        }
    }

    /// Five Adam steps (t = 1..=5, where bias correction matters most) against Algorithm 1
    /// in f64, with and without weight decay.
    #[test]
    fn adam_matches_ref_over_several_steps(
        n in len(), weight_decay in prop::sample::select(vec![0.0f32, 0.01]), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let mut p = reals(&mut rng, n);
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let (mut p_ref, mut m_ref, mut v_ref) = (p.clone(), m.clone(), v.clone());
        for t in 1..=5 {
            let h = AdamParams { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay, t };
            let g = reals(&mut rng, n);
            adam_update(&h, &mut p, &g, &mut m, &mut v);
            adam_update_ref(&h, &mut p_ref, &g, &mut m_ref, &mut v_ref);
            assert_close(&format!("adam p, t {t}"), &p, &p_ref, 1e-6);
            assert_close(&format!("adam m, t {t}"), &m, &m_ref, 1e-6);
            assert_close(&format!("adam v, t {t}"), &v, &v_ref, 1e-6);
        }
    }

    /// Five AdamW steps against PyTorch's `AdamW` written in f64, with the decay off, at
    /// PyTorch's default 0.01 and at a large 0.5 (where the decoupled shrink dominates).
    #[test]
    fn adamw_matches_ref_over_several_steps(
        n in len(), weight_decay in prop::sample::select(vec![0.0f32, 0.01, 0.5]), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let mut p = reals(&mut rng, n);
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let (mut p_ref, mut m_ref, mut v_ref) = (p.clone(), m.clone(), v.clone());
        for t in 1..=5 {
            let h = AdamParams { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t };
            let g = reals(&mut rng, n);
            adamw_update(&h, &mut p, &g, &mut m, &mut v);
            adamw_update_ref(&h, &mut p_ref, &g, &mut m_ref, &mut v_ref);
            assert_close(&format!("adamw p, t {t}"), &p, &p_ref, 1e-6);
            assert_close(&format!("adamw m, t {t}"), &m, &m_ref, 1e-6);
            assert_close(&format!("adamw v, t {t}"), &v, &v_ref, 1e-6);
        }
    }
}

/// `im2col_ld` writes one image's column matrix into its slot of a group's wider matrix: the
/// same values as `im2col_ref`, rows `ld` apart, other images' columns untouched; `col2im_ld`
/// reads the same slot back as `col2im_ref` does.
#[test]
fn group_column_matrices_match_the_per_image_reference() {
    use kernels::im2col::{col2im_ld, im2col_ld};
    let geoms = [
        ConvGeom::new(3, 9, 8, 3, 3, (1, 1), (1, 1, 1, 1)),
        ConvGeom::new(2, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0)),
        ConvGeom::new(4, 13, 13, 3, 3, (2, 2), (1, 1, 1, 1)),
        ConvGeom::new(1, 7, 7, 4, 4, (1, 1), (1, 1, 2, 2)),
    ];
    for g in geoms {
        let (plane, rows, count) = (g.out_plane(), g.col_rows(), 3);
        let ld = count * plane;
        let mut rng = Rng::new(77);
        let xs: Vec<Vec<f32>> = (0..count).map(|_| ints(&mut rng, g.in_len())).collect();
        let mut group = nans(rows * ld);
        for (j, x) in xs.iter().enumerate() {
            im2col_ld(&g, x, &mut group[j * plane..], ld);
        }
        for (j, x) in xs.iter().enumerate() {
            let mut one = nans(rows * plane);
            im2col_ref(&g, x, &mut one);
            for r in 0..rows {
                assert_eq!(
                    &group[r * ld + j * plane..][..plane],
                    &one[r * plane..][..plane],
                    "{g:?} image {j} row {r}"
                );
            }
        }
        // col2im_ld of each image's slot equals col2im_ref of that slot copied out.
        let dcol = ints(&mut rng, rows * ld);
        for j in 0..count {
            let mut a = ints(&mut rng, g.in_len());
            let mut b = a.clone();
            col2im_ld(&g, &dcol[j * plane..], ld, &mut a);
            let slot: Vec<f32> =
                (0..rows).flat_map(|r| dcol[r * ld + j * plane..][..plane].to_vec()).collect();
            col2im_ref(&g, &slot, &mut b);
            assert_eq!(a, b, "{g:?} image {j}");
        }
    }
}

/// `simd::transpose` against the definition, on shapes around its 8 x 8 tiles, with rows of
/// the result further apart than needed: every value lands where the definition says, and
/// the values between rows (starting NaN) are left alone.
#[test]
fn transpose_matches_the_definition_and_leaves_the_gaps() {
    for (rows, cols, ld) in [(1, 1, 1), (5, 3, 5), (16, 9, 16), (17, 4, 20), (33, 1024, 48), (64, 16, 64)] {
        let a = ints(&mut Rng::new((rows * cols) as u64), rows * cols);
        let mut t = nans(cols * ld);
        kernels::simd::transpose(&a, rows, cols, &mut t, ld);
        for c in 0..cols {
            for r in 0..ld {
                let got = t[c * ld + r];
                if r < rows {
                    assert_eq!(got, a[r * cols + c], "{rows}x{cols} ld {ld}: t[{c}][{r}]");
                } else {
                    assert!(got.is_nan(), "{rows}x{cols} ld {ld}: gap t[{c}][{r}] written");
                }
            }
        }
    }
}

/// A padded image with no rows is all padding, so the implicit forward gives the bias alone,
/// also in a scratch that an earlier layer left full of its padded input.
#[test]
fn implicit_forward_of_an_empty_padded_image_reads_no_stale_values() {
    let mut s = ImplicitScratch::default();
    let full = ConvGeom::new(2, 4, 4, 3, 3, (1, 1), (1, 1, 1, 1));
    let mut ys = vec![0.0; 2 * 3 * full.out_plane()];
    let w = vec![1.0; 3 * full.col_rows()];
    ImplicitConv::new(&full, 3, &w).forward(
        &vec![5.0; 2 * full.in_len()],
        &[0.0; 3],
        &mut ys,
        Crop::full(&full),
        &mut s,
    );
    // 0 rows of 4, padded to 4 x 6: outputs 2 x 4 per channel, every window in the padding.
    let empty = ConvGeom::new(2, 0, 4, 3, 3, (1, 1), (2, 1, 2, 1));
    assert_eq!((empty.oh, empty.ow), (2, 4));
    let b = [1.0, 2.0, 3.0];
    let mut got = vec![f32::NAN; 2 * 3 * empty.out_plane()];
    ImplicitConv::new(&empty, 3, &w).forward(&[], &b, &mut got, Crop::full(&empty), &mut s);
    let want: Vec<f32> = (0..2).flat_map(|_| b.iter().flat_map(|&v| [v; 8])).collect();
    assert_eq!(got, want);
}

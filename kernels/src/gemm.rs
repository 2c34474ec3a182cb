//! Matrix multiplication: the one audited `unsafe` wrapper around `matrixmultiply::sgemm`.
//!
//! `C[M, N] = alpha * A[M, K] * B[K, N] + beta * C` where each matrix is described by a slice
//! and a row stride and column stride (in elements). Row-major contiguous `A` has strides
//! `(K, 1)`; its transpose is read by swapping them to `(1, K)`, so every transposed variant
//! that backward needs is a stride choice, not a copy.
//!
//! When `beta == 0`, `C` is only written, never read (NaN or garbage in `C` is fine), as
//! BLAS specifies. This wrapper is single-threaded on purpose: the callers parallelise over
//! images or row blocks with rayon, and nesting thread pools only loses.
//!
//! Reference twin: [`sgemm_ref`].

/// A matrix operand: a slice viewed with `rows x cols` shape and the given strides.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major contiguous `[rows, cols]`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major contiguous `[cols, rows]` buffer, viewed as `[rows, cols]`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: 1, col_stride: rows }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// The mutable output operand.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatMut<'a> {
    /// Row-major contiguous `[rows, cols]`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, row_stride: cols, col_stride: 1 }
    }
}

/// Largest index touched by a `rows x cols` view with these strides, or `None` when empty.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    Some((rows - 1) * rs + (cols - 1) * cs)
}

fn check_fits(name: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if let Some(last) = last_index(rows, cols, rs, cs) {
        assert!(
            last < len,
            "sgemm: {name} is {rows}x{cols} with strides ({rs}, {cs}), needing {} values, \
             but its slice holds {len}",
            last + 1
        );
        assert!(last <= isize::MAX as usize, "sgemm: {name} strides overflow isize");
    }
}

/// `c = alpha * a * b + beta * c`, checked.
///
/// # Panics
/// When the shapes do not chain (`a.cols != b.rows`, `c` not `a.rows x b.cols`), when a view
/// reaches past its slice, or when `c`'s strides would make two elements share memory.
#[allow(unsafe_code)] // the one audited call; see the SAFETY comment below
pub fn sgemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "sgemm: shapes do not chain: A {}x{}, B {}x{}, C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    check_fits("A", a.data.len(), m, k, a.row_stride, a.col_stride);
    check_fits("B", b.data.len(), k, n, b.row_stride, b.col_stride);
    check_fits("C", c.data.len(), m, n, c.row_stride, c.col_stride);
    if m == 0 || n == 0 {
        return;
    }
    // Distinct (i, j) must map to distinct elements of C, or the kernel's read-modify-write of
    // one element would see another's partial result. One stride covering the whole extent of
    // the other dimension is a simple sufficient condition (row- or column-major, padded or not).
    let (rs, cs) = (c.row_stride, c.col_stride);
    let distinct = if m == 1 {
        n == 1 || cs >= 1
    } else if n == 1 {
        rs >= 1
    } else {
        rs >= 1 && cs >= 1 && (rs >= n * cs || cs >= m * rs)
    };
    assert!(distinct, "sgemm: C strides ({rs}, {cs}) alias elements of a {m}x{n} matrix");
    // SAFETY: the checks above establish every precondition matrixmultiply documents:
    // - every index `i * rs + j * cs` that the kernel forms for i < rows, j < cols is at most
    //   `last_index(..)`, which is inside the corresponding slice (check_fits), and fits isize;
    // - C is derived from a `&mut [f32]`, so it aliases neither A nor B, and its own elements
    //   are pairwise distinct (the stride assertion);
    // - matrixmultiply is built without its `threading` feature, so nothing outlives this call.
    // `k == 0` is handled by matrixmultiply (C = beta * C, never reading A or B).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.data.as_mut_ptr(),
            c.row_stride as isize,
            c.col_stride as isize,
        );
    }
}

/// The reference twin of [`sgemm`]: three nested loops, accumulating in `f64`.
pub fn sgemm_ref(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && c.rows == m && c.cols == n, "sgemm_ref: shapes do not chain");
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let idx = i * c.row_stride + j * c.col_stride;
            let old = if beta == 0.0 { 0.0 } else { beta * c.data[idx] };
            c.data[idx] = alpha * s as f32 + old;
        }
    }
}

/// Row-major convenience: `c[M, N] (+)= op(a) * op(b)`, where `op(a)` is `a` stored as
/// `[M, K]`, or as `[K, M]` when `trans_a`; likewise `op(b)` is `[K, N]` or stored `[N, K]`.
/// `accumulate` adds to `c` (beta = 1) instead of overwriting it.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    let a = if trans_a { MatRef::transposed(a, m, k) } else { MatRef::new(a, m, k) };
    let b = if trans_b { MatRef::transposed(b, k, n) } else { MatRef::new(b, k, n) };
    sgemm(1.0, a, b, if accumulate { 1.0 } else { 0.0 }, MatMut::new(c, m, n));
}

/// Reference twin of [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_ref(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    let a = if trans_a { MatRef::transposed(a, m, k) } else { MatRef::new(a, m, k) };
    let b = if trans_b { MatRef::transposed(b, k, n) } else { MatRef::new(b, k, n) };
    sgemm_ref(1.0, a, b, if accumulate { 1.0 } else { 0.0 }, MatMut::new(c, m, n));
}

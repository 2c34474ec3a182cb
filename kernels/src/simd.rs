//! The SIMD vector type the kernels use, chosen at compile time.
//!
//! `wide` decides how an `f32x16` or `f32x8` runs from the `target_feature`s the crate is
//! compiled with: with AVX-512 an `f32x16` is one zmm register, with only AVX2 it is two ymm
//! halves, and with neither it falls back to four SSE halves. The repository's
//! `.cargo/config.toml` sets `target-cpu=native`, so the width follows the building machine.

#[cfg(target_feature = "avx512f")]
pub type Fx = wide::f32x16;
#[cfg(not(target_feature = "avx512f"))]
pub type Fx = wide::f32x8;

/// Lanes in [`Fx`].
#[cfg(target_feature = "avx512f")]
pub const LANES: usize = 16;
#[cfg(not(target_feature = "avx512f"))]
pub const LANES: usize = 8;

/// A one-line description of the SIMD width compiled in, for logs and benchmarks.
pub fn describe() -> &'static str {
    if cfg!(target_feature = "avx512f") {
        "AVX-512 (f32x16, 512-bit)"
    } else if cfg!(target_feature = "avx2") {
        "AVX2 (f32x8, 256-bit)"
    } else if cfg!(target_feature = "sse2") {
        "SSE2 (f32x8 emulated as 2x128-bit)"
    } else {
        "scalar fallback"
    }
}

/// Loads up to [`LANES`] values; missing lanes are zero.
#[inline(always)]
pub fn load(s: &[f32]) -> Fx {
    // A full vector is one unaligned load; `wide`'s slice conversion handles any length by
    // zeroing a vector and copying into it, which costs a `memcpy` call per load.
    match <[f32; LANES]>::try_from(s) {
        Ok(a) => Fx::from(a),
        Err(_) => Fx::from(s),
    }
}

/// Stores the first `out.len()` lanes (at most [`LANES`]).
#[inline(always)]
pub fn store(v: Fx, out: &mut [f32]) {
    match <&mut [f32; LANES]>::try_from(&mut *out) {
        Ok(a) => *a = v.to_array(),
        Err(_) => {
            let n = out.len();
            out.copy_from_slice(&v.as_array()[..n]);
        }
    }
}

/// `dst = src` for the short rows that im2col and the direct convolution copy (11 to 28
/// values for the reference models):
/// a plain `copy_from_slice` of a length unknown at compile time becomes a `memcpy` call,
/// whose overhead dominates at this size; two overlapping fixed-size copies do not call.
#[inline]
pub fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_short: lengths differ");
    match n {
        8..=16 => {
            dst[..8].copy_from_slice(&<[f32; 8]>::try_from(&src[..8]).expect("8 values"));
            dst[n - 8..].copy_from_slice(&<[f32; 8]>::try_from(&src[n - 8..]).expect("8 values"));
        }
        17..=32 => {
            dst[..16].copy_from_slice(&<[f32; 16]>::try_from(&src[..16]).expect("16 values"));
            dst[n - 16..].copy_from_slice(&<[f32; 16]>::try_from(&src[n - 16..]).expect("16 values"));
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `t[c * ld + r] = a[r * cols + c]`: the row-major `a[rows, cols]` transposed into rows of
/// `t` that are `ld >= rows` apart (the values past `rows` in each are left as they are).
///
/// # Panics
/// If `ld < rows`, or `a` or `t` is too short.
pub fn transpose(a: &[f32], rows: usize, cols: usize, t: &mut [f32], ld: usize) {
    transpose_ld(a, cols, rows, cols, t, ld);
}

/// [`transpose`] of a matrix whose rows are `lda >= cols` apart in `a`: `t[c * ld + r] =
/// a[r * lda + c]`, for `r < rows`, `c < cols`. Each matrix's row distance follows it: `a,
/// lda`, then the shape, then `t, ld`.
///
/// In 8 x 8 tiles, each 8 loads of 8 values, an in-register transpose (`wide`'s, 24
/// shuffles with AVX) and 8 stores, where a value-by-value copy makes one load and one store
/// of each value, and one of the two runs across rows: a layer's channels-last copy took a
/// fifth of the sparse backward that way. The values outside whole tiles go one by one.
///
/// # Panics
/// If `lda < cols`, `ld < rows`, or `a` or `t` is too short.
pub fn transpose_ld(a: &[f32], lda: usize, rows: usize, cols: usize, t: &mut [f32], ld: usize) {
    use wide::f32x8;
    assert!(lda >= cols, "transpose: rows of a are {lda} apart, {cols} needed");
    assert!(ld >= rows, "transpose: rows of t are {ld} apart, {rows} needed");
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + cols, "transpose: a has {} values, {rows}x{cols} needed", a.len());
    assert!(t.len() >= (cols - 1) * ld + rows, "transpose: t has {} values", t.len());
    let (whole_rows, whole_cols) = (rows - rows % 8, cols - cols % 8);
    for r0 in (0..whole_rows).step_by(8) {
        for c0 in (0..whole_cols).step_by(8) {
            let tile: [f32x8; 8] = std::array::from_fn(|i| {
                f32x8::from(<[f32; 8]>::try_from(&a[(r0 + i) * lda + c0..][..8]).expect("8 values"))
            });
            for (j, column) in f32x8::transpose(tile).iter().enumerate() {
                t[(c0 + j) * ld + r0..][..8].copy_from_slice(column.as_array());
            }
        }
        for c in whole_cols..cols {
            for (r, v) in (r0..r0 + 8).zip(&mut t[c * ld + r0..][..8]) {
                *v = a[r * lda + c];
            }
        }
    }
    for r in whole_rows..rows {
        for (c, &v) in a[r * lda..][..cols].iter().enumerate() {
            t[c * ld + r] = v;
        }
    }
}

/// `y[i] += a * x[i]` for equal-length slices.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: x has {} values, y has {}", x.len(), y.len());
    let av = Fx::splat(a);
    let mut xc = x.chunks_exact(LANES);
    let mut yc = y.chunks_exact_mut(LANES);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        store(load(xs).mul_add(av, load(ys)), ys);
    }
    for (xv, yv) in xc.remainder().iter().zip(yc.into_remainder()) {
        *yv += a * xv;
    }
}

/// Dot product of equal-length slices (lane-wise partial sums, then a fixed-order reduction,
/// so the result depends only on the inputs).
#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot: x has {} values, y has {}", x.len(), y.len());
    let mut acc = Fx::splat(0.0);
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        acc = load(xs).mul_add(load(ys), acc);
    }
    let mut s = acc.reduce_add();
    for (a, b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, on shapes with and without whole 8 x 8 tiles, with gaps
    /// between the rows of both matrices (which must be left as they were).
    #[test]
    fn transpose_matches_its_definition() {
        for (rows, cols, lda, ld) in [
            (0, 3, 3, 1),
            (3, 0, 0, 3),
            (1, 1, 1, 1),
            (8, 8, 8, 8),
            (9, 17, 20, 11),
            (16, 24, 24, 16),
            (7, 5, 5, 7),
            (29, 64, 70, 32),
        ] {
            let a: Vec<f32> = (0..rows * lda).map(|i| i as f32).collect();
            let len = if cols == 0 { 0 } else { (cols - 1) * ld + rows };
            let mut t = vec![-1.0; len + 3];
            transpose_ld(&a, lda, rows, cols, &mut t, ld);
            for (i, &v) in t.iter().enumerate() {
                let (c, r) = (i / ld.max(1), i % ld.max(1));
                let want = if r < rows && c < cols { a[r * lda + c] } else { -1.0 };
                assert_eq!(v, want, "{rows}x{cols} lda {lda} ld {ld} at {i}");
            }
            if lda == cols {
                let mut u = vec![-1.0; len + 3];
                transpose(&a, rows, cols, &mut u, ld);
                assert_eq!(u, t, "{rows}x{cols} ld {ld}");
            }
        }
    }

    #[test]
    fn axpy_and_dot_match_scalar_loops_on_awkward_lengths() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
            let x: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut y: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
            let expect: Vec<f32> = x.iter().zip(&y).map(|(a, b)| b + 2.0 * a).collect();
            let d: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert_eq!(dot(&x, &y), d, "dot n={n}");
            axpy(2.0, &x, &mut y);
            assert_eq!(y, expect, "axpy n={n}");
        }
    }
}

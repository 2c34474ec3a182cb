//! im2col / col2im: turn a convolution into one matrix multiplication.
//!
//! For one image `x[C, H, W]`, `im2col` writes `col[C*KH*KW, OH*OW]` where row
//! `(c, kh, kw)` and column `(oh, ow)` hold `x[c, oh*SH + kh - PT, ow*SW + kw - PL]`, or 0 where
//! that position falls in the padding. Then `y[OC, OH*OW] = w[OC, C*KH*KW] * col`.
//! `col2im` is its adjoint: it scatters `col` back, *adding* into `x` (so overlapping windows
//! sum their contributions, which is what the gradient of im2col needs).
//!
//! Padding may differ on each side: Keras 'same' with an even kernel pads less before than
//! after (4x4, stride 1: 1 before, 2 after).
//!
//! Reference twins: [`im2col_ref`], [`col2im_ref`].

use crate::simd::copy_short;

/// The geometry of a 2-D convolution (or pooling window) over one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Builds the geometry and derives the output size
    /// `OH = (H + PT + PB - KH) / SH + 1` (floor), likewise `OW`.
    ///
    /// # Panics
    /// When the padded input is smaller than the kernel, or a stride or kernel side is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: (usize, usize),
        pad: (usize, usize, usize, usize),
    ) -> Self {
        let (stride_h, stride_w) = stride;
        let (pad_top, pad_left, pad_bottom, pad_right) = pad;
        assert!(kh > 0 && kw > 0 && stride_h > 0 && stride_w > 0, "ConvGeom: zero kernel or stride");
        assert!(
            h + pad_top + pad_bottom >= kh && w + pad_left + pad_right >= kw,
            "ConvGeom: padded input {}x{} is smaller than the {kh}x{kw} kernel",
            h + pad_top + pad_bottom,
            w + pad_left + pad_right
        );
        let oh = (h + pad_top + pad_bottom - kh) / stride_h + 1;
        let ow = (w + pad_left + pad_right - kw) / stride_w + 1;
        ConvGeom { c, h, w, kh, kw, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, oh, ow }
    }

    /// Whether both strides are 1.
    pub fn unit_stride(&self) -> bool {
        self.stride_h == 1 && self.stride_w == 1
    }

    /// Values in one input image, `C*H*W`.
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Rows of the column matrix, `C*KH*KW`.
    pub fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per channel, `OH*OW`.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
    /// The input column `iw` read by output column `ow` at kernel column `kw`, or `None` in the
    /// padding.
    #[inline]
    fn src_col(&self, ow: usize, kw: usize) -> Option<usize> {
        (ow * self.stride_w + kw).checked_sub(self.pad_left).filter(|&iw| iw < self.w)
    }
    #[inline]
    fn src_row(&self, oh: usize, kh: usize) -> Option<usize> {
        (oh * self.stride_h + kh).checked_sub(self.pad_top).filter(|&ih| ih < self.h)
    }
    /// The range of output columns whose source column (for kernel column `kw`) is inside the
    /// image: `ow` in `lo..hi`, with `lo == hi` when there is none (then `lo + kw` may be
    /// less than `PL`, so callers must not form a source index from `lo`).
    fn valid_ow(&self, kw: usize) -> (usize, usize) {
        let s = self.stride_w;
        // ow*s + kw >= PL  <=>  ow >= ceil((PL - kw) / s)
        let lo = self.pad_left.saturating_sub(kw).div_ceil(s);
        // ow*s + kw - PL <= W - 1  <=>  ow <= (W + PL - 1 - kw) / s  (no underflow when W = 0)
        let hi = if self.w + self.pad_left > kw {
            ((self.w + self.pad_left - 1 - kw) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// The outputs of a convolution that are computed: the top-left `rows x cols` of its
/// `OH x OW` plane.
///
/// A max-pool after a convolution reads only the rows and columns its windows cover: a 2x2/2
/// pool of write-up E's 11x11 conv2 outputs reads 10x10 of them, 83%. So the fused
/// conv -> ReLU -> max-pool computes no others forward, and backward their gradients are zero,
/// so the kernels that loop over output positions ([`crate::conv_implicit`],
/// [`crate::conv_scatter`]) skip them: the same sums without their `0 * x` terms, so the same
/// bits (adding a zero leaves a sum as it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub rows: usize,
    pub cols: usize,
}

impl Crop {
    /// Every output of `g`.
    pub fn full(g: &ConvGeom) -> Crop {
        Crop { rows: g.oh, cols: g.ow }
    }

    /// The outputs of `g` that the max-pool `pool` over them reads: its last window ends at
    /// `(PH - 1) * stride + k`.
    pub fn pooled(g: &ConvGeom, pool: &crate::pool::PoolGeom) -> Crop {
        let end = |n: usize| if n == 0 { 0 } else { (n - 1) * pool.stride + pool.k };
        Crop { rows: end(pool.oh).min(g.oh), cols: end(pool.ow).min(g.ow) }
    }

    /// Whether this is every output of `g`.
    pub fn is_full(&self, g: &ConvGeom) -> bool {
        self.rows >= g.oh && self.cols >= g.ow
    }
}

/// `col[C*KH*KW, OH*OW]` from `x[C, H, W]`; every element of `col` is written.
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    assert_eq!(col.len(), g.col_rows() * g.out_plane(), "im2col: col has the wrong length");
    im2col_ld(g, x, col, g.out_plane());
}

/// Rows of `col` `ld` apart: [`im2col`] into the columns `0..OH*OW` of a wider matrix, e.g.
/// one image's slot in the column matrix of a group of images (`ld = G*OH*OW`, `col` starting
/// at the image's first column). Values between `OH*OW` and `ld` in each row are left alone.
///
/// # Panics
/// When `ld < OH*OW` or `col` is too short for `C*KH*KW` rows.
pub fn im2col_ld(g: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize) {
    assert_eq!(x.len(), g.in_len(), "im2col: x has {} values, geometry needs {}", x.len(), g.in_len());
    let plane = g.out_plane();
    let rows_needed = g.col_rows();
    assert!(ld >= plane, "im2col: row stride {ld} is below the row length {plane}");
    assert!(
        rows_needed == 0 || col.len() >= (rows_needed - 1) * ld + plane,
        "im2col: col has {} values, {rows_needed} rows {ld} apart need {}",
        col.len(),
        (rows_needed.max(1) - 1) * ld + plane
    );
    let mut r = 0;
    for c in 0..g.c {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let row = &mut col[r * ld..r * ld + plane];
                r += 1;
                let (lo, hi) = g.valid_ow(kw);
                if lo == hi {
                    // This kernel column reads only padding, in every output position.
                    row.fill(0.0);
                    continue;
                }
                for oh in 0..g.oh {
                    let out = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    let Some(ih) = g.src_row(oh, kh) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &xc[ih * g.w..(ih + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if g.stride_w == 1 {
                        let start = lo + kw - g.pad_left;
                        copy_short(&mut out[lo..hi], &src[start..start + hi - lo]);
                    } else {
                        for (ow, o) in (lo..hi).zip(&mut out[lo..hi]) {
                            *o = src[ow * g.stride_w + kw - g.pad_left];
                        }
                    }
                }
            }
        }
    }
}

/// Reference twin of [`im2col`].
pub fn im2col_ref(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    assert_eq!(x.len(), g.in_len());
    assert_eq!(col.len(), g.col_rows() * g.out_plane());
    for c in 0..g.c {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let r = (c * g.kh + kh) * g.kw + kw;
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let v = match (g.src_row(oh, kh), g.src_col(ow, kw)) {
                            (Some(ih), Some(iw)) => x[(c * g.h + ih) * g.w + iw],
                            _ => 0.0,
                        };
                        col[r * g.out_plane() + oh * g.ow + ow] = v;
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `x[c, ih, iw] += col[(c, kh, kw), (oh, ow)]` for every pair that
/// im2col connects. Padding positions are dropped.
pub fn col2im(g: &ConvGeom, col: &[f32], x: &mut [f32]) {
    assert_eq!(col.len(), g.col_rows() * g.out_plane(), "col2im: col has the wrong length");
    col2im_ld(g, col, g.out_plane(), x);
}

/// [`col2im`] from rows `ld` apart (the adjoint of [`im2col_ld`]).
///
/// # Panics
/// When `ld < OH*OW` or `col` is too short for `C*KH*KW` rows.
pub fn col2im_ld(g: &ConvGeom, col: &[f32], ld: usize, x: &mut [f32]) {
    assert_eq!(x.len(), g.in_len(), "col2im: x has {} values, geometry needs {}", x.len(), g.in_len());
    let plane = g.out_plane();
    let rows_needed = g.col_rows();
    assert!(ld >= plane, "col2im: row stride {ld} is below the row length {plane}");
    assert!(
        rows_needed == 0 || col.len() >= (rows_needed - 1) * ld + plane,
        "col2im: col has {} values, {rows_needed} rows {ld} apart need more",
        col.len()
    );
    if plane == 0 {
        return;
    }
    let mut r = 0;
    for c in 0..g.c {
        let xc = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let row = &col[r * ld..r * ld + plane];
                r += 1;
                let (lo, hi) = g.valid_ow(kw);
                if lo == hi {
                    continue; // this kernel column reads only padding
                }
                for oh in 0..g.oh {
                    let Some(ih) = g.src_row(oh, kh) else { continue };
                    let src = &row[oh * g.ow..(oh + 1) * g.ow];
                    let dst = &mut xc[ih * g.w..(ih + 1) * g.w];
                    if g.stride_w == 1 {
                        let start = lo + kw - g.pad_left;
                        for (d, s) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    } else {
                        for ow in lo..hi {
                            dst[ow * g.stride_w + kw - g.pad_left] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// Reference twin of [`col2im`].
pub fn col2im_ref(g: &ConvGeom, col: &[f32], x: &mut [f32]) {
    assert_eq!(x.len(), g.in_len());
    assert_eq!(col.len(), g.col_rows() * g.out_plane());
    for c in 0..g.c {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let r = (c * g.kh + kh) * g.kw + kw;
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        if let (Some(ih), Some(iw)) = (g.src_row(oh, kh), g.src_col(ow, kw)) {
                            x[(c * g.h + ih) * g.w + iw] += col[r * g.out_plane() + oh * g.ow + ow];
                        }
                    }
                }
            }
        }
    }
}

//! The backward pass of conv -> ReLU -> max-pool from the windows' argmaxes alone.
//!
//! Behind a max-pool, a convolution's output gradient is zero everywhere but at each window's
//! argmax, and there only when the pooled value passed the ReLU: with a 2x2/2 pool, at most a
//! quarter of the positions of each channel. The dense backward (`conv_implicit`'s weight
//! gradient, `conv_scatter`'s input gradient) rebuilds the full-size gradient and multiplies
//! all of it, zeros included. Here each non-zero is an *entry*, the window it belongs to and
//! its value, and both gradients run over the entries alone:
//!
//! ```text
//! for each image j, output channel o, entry (p, d) of (j, o):
//!     dw[o, kh, kw, :] += d * x[j, p + (kh, kw), :]     (weight gradient)
//!     dx[j, p + (kh, kw), :] += d * w[o, kh, kw, :]     (input gradient)
//! ```
//!
//! with the input, its gradient and the weights laid out channels-last (`[H, W, C]`, `C`
//! padded to whole SIMD vectors), so one kernel row `(kh, 0..KW, 0..C)` of a window is
//! `KW * C` consecutive values: up to `ROW_VECTORS` (16) of them stay in registers (the sums of
//! `dw`, or the weights of `dx`) while the loop runs over the entries of one image and
//! channel. Each multiply-add then needs one load (of `x`), or one load and one store (of
//! `dx`), from an image that fits in L1, where the dense kernels keep their operands in
//! registers and reach two multiply-adds a cycle: by that count the sparse loop is about
//! half as fast per multiply-add, and with at most a quarter of them it takes at most half
//! the time. Which of the two runs is measured per layer (the plan's `sparse` choice).
//!
//! The sums run in another order than the dense kernels' (entry by entry, image by image),
//! so the bits differ from theirs in the last places; the same inputs always give the same
//! bits. Reference twins: the dense gradient rebuilt from the pooled one, then
//! [`crate::conv_direct::conv_backward_weights_ref`] and
//! [`crate::conv_direct::conv_backward_input_ref`] (tested in `conv_plan`).

use crate::conv_direct::padded_dims;
use crate::im2col::ConvGeom;
use crate::pool::PoolGeom;
use crate::simd::{Fx, LANES};

/// Vectors of one kernel row kept in registers: 16 of AVX-512's 32 (the rest hold the loaded
/// values and the broadcast gradient), 8 of AVX2's 16.
#[cfg(target_feature = "avx512f")]
const ROW_VECTORS: usize = 16;
#[cfg(not(target_feature = "avx512f"))]
const ROW_VECTORS: usize = 8;

/// A layer's weights for the sparse input gradient: `w[OC, KH, KW, CP]`, input channels last
/// and padded with zeros to `CP`, a whole number of vectors.
pub struct SparseConvGrad {
    g: ConvGeom,
    oc: usize,
    wt: Vec<Fx>,
}

/// Weight-gradient sums over groups of images, `dw[OC, KH, KW, CP]`;
/// [`SparseSums::finish`] adds them into a layer's `dw[OC, C, KH, KW]`.
pub struct SparseSums {
    g: ConvGeom,
    oc: usize,
    dwt: Vec<Fx>,
}

/// Reusable buffers of one thread.
#[derive(Default)]
pub struct SparseScratch {
    /// The group's input, zero-padded and channels-last: `[G, HP, WP, CP]`.
    xh: Vec<Fx>,
    /// The group's input gradient in the same layout.
    dxh: Vec<Fx>,
    /// Each non-zero gradient: where its window starts in `xh` (in vectors), and its value.
    entries: Vec<(usize, f32)>,
    /// The entries of image `j`, channel `o` are `entries[starts[j*OC + o]..starts[j*OC + o + 1]]`.
    starts: Vec<usize>,
}

/// Vectors per position: the channels padded to whole vectors.
fn vectors(g: &ConvGeom) -> usize {
    g.c.div_ceil(LANES)
}

impl SparseConvGrad {
    /// Prepares the weights `w[OC, C, KH, KW]` of the layer `g`.
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), oc * g.col_rows(), "conv_sparse: w has {} values for {oc} filters", w.len());
        let cp = vectors(g) * LANES;
        let mut wt = vec![Fx::splat(0.0); oc * g.kh * g.kw * vectors(g)];
        let values: &mut [f32] = bytemuck::cast_slice_mut(&mut wt);
        for o in 0..oc {
            for c in 0..g.c {
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        values[((o * g.kh + kh) * g.kw + kw) * cp + c] =
                            w[((o * g.c + c) * g.kh + kh) * g.kw + kw];
                    }
                }
            }
        }
        SparseConvGrad { g: *g, oc, wt }
    }

    /// Adds the gradients of the images `xs[G, C, H, W]` whose pooled output `y[G, OC, PH, PW]`
    /// (after the ReLU) has the gradient `dy` and the window argmaxes `argmax` (within each
    /// `OH x OW` plane): into `sums`, `db[OC]`, and `dxs[G, C, H, W]` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        pool: &PoolGeom,
        xs: &[f32],
        dy: &[f32],
        y: &[f32],
        argmax: &[u32],
        sums: &mut SparseSums,
        db: &mut [f32],
        dxs: Option<&mut [f32]>,
        s: &mut SparseScratch,
    ) {
        let (g, oc) = (&self.g, self.oc);
        assert!(sums.g == *g && sums.oc == oc, "conv_sparse: sums of another layer");
        let in_len = g.in_len();
        if in_len == 0 || oc == 0 {
            return;
        }
        let count = xs.len() / in_len;
        let pooled = pool.oh * pool.ow;
        assert!(
            dy.len() == count * oc * pooled && y.len() == dy.len() && argmax.len() == dy.len(),
            "conv_sparse: pooled tensors of {} values for {count} images",
            dy.len()
        );
        let (hp, wp) = padded_dims(g);
        let cv = vectors(g);

        // The entries, image by image and channel by channel; the bias gradient on the way.
        s.entries.clear();
        s.starts.clear();
        s.starts.push(0);
        for j in 0..count {
            for (o, db_o) in db.iter_mut().enumerate() {
                let range = (j * oc + o) * pooled..(j * oc + o + 1) * pooled;
                for ((&d, &v), &a) in dy[range.clone()].iter().zip(&y[range.clone()]).zip(&argmax[range]) {
                    // Only a window whose value passed the ReLU passes its gradient on; a zero
                    // gradient adds nothing.
                    if v > 0.0 && d != 0.0 {
                        let (oh, ow) = (a as usize / g.ow, a as usize % g.ow);
                        let base = ((j * hp + oh * g.stride_h) * wp + ow * g.stride_w) * cv;
                        s.entries.push((base, d));
                        *db_o += d;
                    }
                }
                s.starts.push(s.entries.len());
            }
        }

        channels_last(g, xs, count, &mut s.xh);
        let row = g.kw * cv;
        let per_o = g.kh * row;
        for j in 0..count {
            for o in 0..oc {
                let entries = &s.entries[s.starts[j * oc + o]..s.starts[j * oc + o + 1]];
                if entries.is_empty() {
                    continue;
                }
                let dw_o = &mut sums.dwt[o * per_o..][..per_o];
                for (kh, dw_row) in dw_o.chunks_exact_mut(row).enumerate() {
                    by_chunks(dw_row, kh * wp * cv, |chunk, off| sum_row(chunk, entries, &s.xh, off));
                }
            }
        }

        let Some(dxs) = dxs else { return };
        assert_eq!(dxs.len(), xs.len(), "conv_sparse: dxs has {} values for {count} images", dxs.len());
        s.dxh.clear();
        s.dxh.resize(count * hp * wp * cv, Fx::splat(0.0));
        for j in 0..count {
            for o in 0..oc {
                let entries = &s.entries[s.starts[j * oc + o]..s.starts[j * oc + o + 1]];
                if entries.is_empty() {
                    continue;
                }
                let w_o = &self.wt[o * per_o..][..per_o];
                for (kh, w_row) in w_o.chunks_exact(row).enumerate() {
                    let off = kh * wp * cv;
                    let mut start = 0;
                    while start < row {
                        let len = chunk_len(row - start);
                        scatter_row(&w_row[start..start + len], entries, &mut s.dxh, off + start);
                        start += len;
                    }
                }
            }
        }
        add_channels_first(g, &s.dxh, count, dxs);
    }
}

impl SparseSums {
    /// Zero sums for the layer `g` with `oc` filters.
    pub fn new(g: &ConvGeom, oc: usize) -> Self {
        SparseSums { g: *g, oc, dwt: vec![Fx::splat(0.0); oc * g.kh * g.kw * vectors(g)] }
    }

    /// `dw[OC, C, KH, KW] +=` the sums.
    pub fn finish(&self, dw: &mut [f32]) {
        let g = &self.g;
        assert_eq!(dw.len(), self.oc * g.col_rows(), "conv_sparse: dw has {} values", dw.len());
        let cp = vectors(g) * LANES;
        let sums: &[f32] = bytemuck::cast_slice(&self.dwt);
        for (o, dw_o) in dw.chunks_exact_mut(g.col_rows()).enumerate() {
            for (c, dw_c) in dw_o.chunks_exact_mut(g.kh * g.kw).enumerate() {
                for (t, d) in dw_c.iter_mut().enumerate() {
                    *d += sums[(o * g.kh * g.kw + t) * cp + c];
                }
            }
        }
    }
}

/// The longest run of vectors from a row's `left` remaining that one register block takes:
/// `ROW_VECTORS`, else the largest power of two that fits.
fn chunk_len(left: usize) -> usize {
    if left >= ROW_VECTORS {
        ROW_VECTORS
    } else {
        1 << left.ilog2()
    }
}

/// Runs `f` over `row` in register blocks ([`chunk_len`]), with each block's offset `off +
/// start` into the channels-last image.
fn by_chunks(row: &mut [Fx], off: usize, mut f: impl FnMut(&mut [Fx], usize)) {
    let mut start = 0;
    while start < row.len() {
        let len = chunk_len(row.len() - start);
        f(&mut row[start..start + len], off + start);
        start += len;
    }
}

/// `sums += sum_e d_e * xh[base_e + off..][..len]` for one register block of a kernel row.
fn sum_row(sums: &mut [Fx], entries: &[(usize, f32)], xh: &[Fx], off: usize) {
    match sums.len() {
        16 => sum_row_n::<16>(sums, entries, xh, off),
        8 => sum_row_n::<8>(sums, entries, xh, off),
        4 => sum_row_n::<4>(sums, entries, xh, off),
        2 => sum_row_n::<2>(sums, entries, xh, off),
        _ => sum_row_n::<1>(sums, entries, xh, off),
    }
}

#[inline(always)]
fn sum_row_n<const R: usize>(sums: &mut [Fx], entries: &[(usize, f32)], xh: &[Fx], off: usize) {
    let mut acc: [Fx; R] = std::array::from_fn(|i| sums[i]);
    for &(base, d) in entries {
        let d = Fx::splat(d);
        let x: &[Fx; R] = xh[base + off..][..R].try_into().expect("R vectors");
        for (a, &xv) in acc.iter_mut().zip(x) {
            *a = xv.mul_add(d, *a);
        }
    }
    sums[..R].copy_from_slice(&acc);
}

/// `dxh[base_e + off..][..len] += d_e * w` for every entry, one register block of weights.
fn scatter_row(w: &[Fx], entries: &[(usize, f32)], dxh: &mut [Fx], off: usize) {
    match w.len() {
        16 => scatter_row_n::<16>(w, entries, dxh, off),
        8 => scatter_row_n::<8>(w, entries, dxh, off),
        4 => scatter_row_n::<4>(w, entries, dxh, off),
        2 => scatter_row_n::<2>(w, entries, dxh, off),
        _ => scatter_row_n::<1>(w, entries, dxh, off),
    }
}

#[inline(always)]
fn scatter_row_n<const R: usize>(w: &[Fx], entries: &[(usize, f32)], dxh: &mut [Fx], off: usize) {
    let w: [Fx; R] = std::array::from_fn(|i| w[i]);
    for &(base, d) in entries {
        let d = Fx::splat(d);
        let dx: &mut [Fx; R] = (&mut dxh[base + off..][..R]).try_into().expect("R vectors");
        for (x, &wv) in dx.iter_mut().zip(&w) {
            *x = wv.mul_add(d, *x);
        }
    }
}

/// `xh[G, HP, WP, CP]`: the images `xs[G, C, H, W]` zero-padded as the layer pads them,
/// channels last and padded with zeros to whole vectors.
fn channels_last(g: &ConvGeom, xs: &[f32], count: usize, xh: &mut Vec<Fx>) {
    let (hp, wp) = padded_dims(g);
    let cp = vectors(g) * LANES;
    xh.clear();
    xh.resize(count * hp * wp * vectors(g), Fx::splat(0.0));
    let values: &mut [f32] = bytemuck::cast_slice_mut(xh);
    for (j, x) in xs.chunks_exact(g.in_len()).enumerate() {
        for h in 0..g.h {
            let row = &mut values[((j * hp + h + g.pad_top) * wp + g.pad_left) * cp..][..g.w * cp];
            // 16 channels at a time: their input rows stay in L1 while each position's
            // 16 values are written side by side.
            for c0 in (0..g.c).step_by(16) {
                let c1 = (c0 + 16).min(g.c);
                for (w, out) in row.chunks_exact_mut(cp).enumerate() {
                    for (c, v) in (c0..c1).zip(&mut out[c0..c1]) {
                        *v = x[(c * g.h + h) * g.w + w];
                    }
                }
            }
        }
    }
}

/// `dxs[G, C, H, W] +=` the interior of `dxh[G, HP, WP, CP]` (the padding's gradients dropped).
fn add_channels_first(g: &ConvGeom, dxh: &[Fx], count: usize, dxs: &mut [f32]) {
    let (hp, wp) = padded_dims(g);
    let cp = vectors(g) * LANES;
    let values: &[f32] = bytemuck::cast_slice(dxh);
    for (j, dx) in dxs.chunks_exact_mut(g.in_len()).enumerate().take(count) {
        for h in 0..g.h {
            let row = &values[((j * hp + h + g.pad_top) * wp + g.pad_left) * cp..][..g.w * cp];
            for (c, dx_c) in dx.chunks_exact_mut(g.h * g.w).enumerate() {
                for (d, at) in dx_c[h * g.w..(h + 1) * g.w].iter_mut().zip(row.chunks_exact(cp)) {
                    *d += at[c];
                }
            }
        }
    }
}

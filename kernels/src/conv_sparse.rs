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
//! with the input, its gradient and the weights laid out so that a window's values are runs
//! of whole SIMD vectors (`Layout`): channels-last (`[H, W, C]`, `C` padded to whole
//! vectors), where one kernel row `(kh, 0..KW, 0..C)` of a window is `KW * C` consecutive
//! values; or, when padding the channels would waste most of each vector (one input channel),
//! each position's whole window as one column (`C*KH*KW` values, as im2col's, padded). Up to
//! `ROW_VECTORS` (16) vectors of a row stay in registers (the sums of `dw`, or the weights of
//! `dx`) while the loop runs over the entries of one image and channel. Each multiply-add then needs one load (of `x`), or one load and one store (of
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

use crate::conv_direct::{add_channels_last, padded_dims};
use crate::im2col::{col2im_ld, im2col_ld, ConvGeom};
use crate::pool::PoolGeom;
use crate::simd::{transpose, transpose_ld, Fx, LANES};

/// Vectors of one kernel row kept in registers: 16 of AVX-512's 32 (the rest hold the loaded
/// values and the broadcast gradient), 8 of AVX2's 16.
#[cfg(target_feature = "avx512f")]
const ROW_VECTORS: usize = 16;
#[cfg(not(target_feature = "avx512f"))]
const ROW_VECTORS: usize = 8;

/// A layer's weights for the sparse input gradient, each filter laid out as its windows are
/// (`Layout`): `w[OC, KH, KW, CP]` (channels last, padded with zeros to whole vectors) or
/// `w[OC, C*KH*KW]` padded to whole vectors.
pub struct SparseConvGrad {
    g: ConvGeom,
    oc: usize,
    lay: Layout,
    wt: Vec<Fx>,
}

/// Weight-gradient sums over groups of images, laid out as [`SparseConvGrad`]'s weights;
/// [`SparseSums::finish`] adds them into a layer's `dw[OC, C, KH, KW]`.
pub struct SparseSums {
    g: ConvGeom,
    oc: usize,
    lay: Layout,
    dwt: Vec<Fx>,
}

/// Reusable buffers of one thread.
#[derive(Default)]
pub struct SparseScratch {
    /// The group's input as `Layout` says: `[G, HP, WP, CP]` (zero-padded, channels last) or
    /// the windows' columns `[G, OH, OW, KP]` (`C*KH*KW` values padded to whole vectors).
    xh: Vec<Fx>,
    /// The group's input gradient in the same layout.
    dxh: Vec<Fx>,
    /// Each non-zero gradient: where its window starts in `xh` (in vectors), and its value.
    entries: Vec<(usize, f32)>,
    /// The entries of image `j`, channel `o` are `entries[starts[j*OC + o]..starts[j*OC + o + 1]]`.
    starts: Vec<usize>,
    /// One image's column matrix `[C*KH*KW, OH*OW]`, for the columns layout; one input row of
    /// the input gradient `[C, W]`, for the channels-last one.
    col: Vec<f32>,
}

/// How a layer's windows are laid out for the sparse loops: `rows` runs of `row` vectors,
/// `stride` vectors apart, from a window's start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Layout {
    /// Each output position's window as one column of `C*KH*KW` values (else channels last).
    columns: bool,
    rows: usize,
    row: usize,
    stride: usize,
}

impl Layout {
    /// Channels last, unless one column of a window takes fewer vectors than its `KH*KW`
    /// positions' padded channels (the channels fill less than half of each vector: one input
    /// channel, for example).
    fn of(g: &ConvGeom) -> Layout {
        let (cv, kv) = (g.c.div_ceil(LANES), g.col_rows().div_ceil(LANES));
        let (_, wp) = padded_dims(g);
        if kv < g.kh * g.kw * cv {
            Layout { columns: true, rows: 1, row: kv, stride: 0 }
        } else {
            Layout { columns: false, rows: g.kh, row: g.kw * cv, stride: wp * cv }
        }
    }

    /// Whether a laid-out image has values that its copy leaves alone, which must be zero:
    /// the padding and the lanes past the channels (channels last), or the lanes past the
    /// column (columns).
    fn has_gaps(&self, g: &ConvGeom) -> bool {
        if self.columns {
            !g.col_rows().is_multiple_of(LANES)
        } else {
            !g.c.is_multiple_of(LANES) || g.pad_top + g.pad_bottom + g.pad_left + g.pad_right > 0
        }
    }

    /// Vectors of one filter (of `w` or `dw`).
    fn per_filter(&self) -> usize {
        self.rows * self.row
    }

    /// Vectors of one image's input (or input gradient).
    fn per_image(&self, g: &ConvGeom) -> usize {
        let (hp, wp) = padded_dims(g);
        if self.columns {
            g.out_plane() * self.row
        } else {
            hp * wp * g.c.div_ceil(LANES)
        }
    }

    /// Where the window of output `(oh, ow)` of image `j` starts, in vectors.
    fn window(&self, g: &ConvGeom, j: usize, oh: usize, ow: usize) -> usize {
        if self.columns {
            ((j * g.oh + oh) * g.ow + ow) * self.row
        } else {
            let (hp, wp) = padded_dims(g);
            ((j * hp + oh * g.stride_h) * wp + ow * g.stride_w) * g.c.div_ceil(LANES)
        }
    }

    /// Where weight `(o, c, kh, kw)` goes among the `f32` values of a filter-major buffer.
    fn weight(&self, g: &ConvGeom, o: usize, c: usize, kh: usize, kw: usize) -> usize {
        let start = o * self.per_filter() * LANES;
        if self.columns {
            start + (c * g.kh + kh) * g.kw + kw
        } else {
            start + (kh * g.kw + kw) * g.c.div_ceil(LANES) * LANES + c
        }
    }
}

impl SparseConvGrad {
    /// Prepares the weights `w[OC, C, KH, KW]` of the layer `g`.
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), oc * g.col_rows(), "conv_sparse: w has {} values for {oc} filters", w.len());
        let lay = Layout::of(g);
        let mut wt = vec![Fx::splat(0.0); oc * lay.per_filter()];
        let values: &mut [f32] = bytemuck::cast_slice_mut(&mut wt);
        for (t, &v) in w.iter().enumerate() {
            let (o, c) = (t / g.col_rows(), t / (g.kh * g.kw) % g.c);
            values[lay.weight(g, o, c, t / g.kw % g.kh, t % g.kw)] = v;
        }
        SparseConvGrad { g: *g, oc, lay, wt }
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
        let (g, oc, lay) = (&self.g, self.oc, self.lay);
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
                        s.entries.push((lay.window(g, j, oh, ow), d));
                        *db_o += d;
                    }
                }
                s.starts.push(s.entries.len());
            }
        }
        let entries_of = |j: usize, o: usize| s.starts[j * oc + o]..s.starts[j * oc + o + 1];

        // Zeroed only where the layout has values that the copy does not write (the padding,
        // lanes past the channels or the column): E's conv2 has none, and rewriting its 12,544
        // values an image twice would be one pass over them for nothing.
        if lay.has_gaps(g) {
            s.xh.clear();
        }
        s.xh.resize(count * lay.per_image(g), Fx::splat(0.0));
        if lay.columns {
            columns(g, xs, &mut s.xh, &mut s.col);
        } else {
            channels_last(g, xs, &mut s.xh);
        }
        let per_filter = lay.per_filter();
        for j in 0..count {
            for (o, dw_o) in sums.dwt.chunks_exact_mut(per_filter).enumerate() {
                let entries = &s.entries[entries_of(j, o)];
                if entries.is_empty() {
                    continue;
                }
                for (r, dw_row) in dw_o.chunks_exact_mut(lay.row).enumerate() {
                    for (start, len) in blocks(lay.row) {
                        let off = r * lay.stride + start;
                        sum_row(&mut dw_row[start..start + len], entries, &s.xh, off);
                    }
                }
            }
        }

        let Some(dxs) = dxs else { return };
        assert_eq!(dxs.len(), xs.len(), "conv_sparse: dxs has {} values for {count} images", dxs.len());
        s.dxh.clear();
        s.dxh.resize(count * lay.per_image(g), Fx::splat(0.0));
        for j in 0..count {
            for (o, w_o) in self.wt.chunks_exact(per_filter).enumerate() {
                let entries = &s.entries[entries_of(j, o)];
                if entries.is_empty() {
                    continue;
                }
                for (r, w_row) in w_o.chunks_exact(lay.row).enumerate() {
                    for (start, len) in blocks(lay.row) {
                        let off = r * lay.stride + start;
                        scatter_row(&w_row[start..start + len], entries, &mut s.dxh, off);
                    }
                }
            }
        }
        if lay.columns {
            add_columns(g, &s.dxh, dxs, &mut s.col);
        } else {
            let cp = g.c.div_ceil(LANES) * LANES;
            add_channels_last(g, bytemuck::cast_slice(&s.dxh), cp, (0, g.c), dxs, &mut s.col);
        }
    }
}

impl SparseSums {
    /// Zero sums for the layer `g` with `oc` filters.
    pub fn new(g: &ConvGeom, oc: usize) -> Self {
        let mut sums = SparseSums { g: *g, oc, lay: Layout::of(g), dwt: Vec::new() };
        sums.reset(g, oc);
        sums
    }

    /// Zero sums for the layer `g` with `oc` filters, in this buffer (a thread keeps one
    /// across layers and batches: a fresh 256 KiB block would be new pages to fault in).
    pub fn reset(&mut self, g: &ConvGeom, oc: usize) {
        (self.g, self.oc, self.lay) = (*g, oc, Layout::of(g));
        self.dwt.clear();
        self.dwt.resize(oc * self.lay.per_filter(), Fx::splat(0.0));
    }

    /// `dw[OC, C, KH, KW] +=` the sums.
    pub fn finish(&self, dw: &mut [f32]) {
        let (g, lay) = (&self.g, &self.lay);
        assert_eq!(dw.len(), self.oc * g.col_rows(), "conv_sparse: dw has {} values", dw.len());
        let sums: &[f32] = bytemuck::cast_slice(&self.dwt);
        let filters = dw.chunks_exact_mut(g.col_rows()).zip(sums.chunks_exact(lay.per_filter() * LANES));
        for (dw_o, sums_o) in filters {
            if lay.columns {
                // The same order, padded.
                for (d, &v) in dw_o.iter_mut().zip(sums_o) {
                    *d += v;
                }
                continue;
            }
            // `sums_o[KH, KW, CP]` transposed into `dw_o[C, KH*KW]`.
            let cp = g.c.div_ceil(LANES) * LANES;
            for (t, at) in sums_o.chunks_exact(cp).enumerate() {
                for (c, &v) in at[..g.c].iter().enumerate() {
                    dw_o[c * g.kh * g.kw + t] += v;
                }
            }
        }
    }
}

impl Default for SparseSums {
    /// Sums of no layer; [`SparseSums::reset`] gives them one.
    fn default() -> Self {
        let g = ConvGeom::new(0, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0));
        SparseSums { g, oc: 0, lay: Layout::of(&g), dwt: Vec::new() }
    }
}

/// A row of `len` vectors as register blocks `(start, len)`: `ROW_VECTORS` at a time, then
/// the largest powers of two that fit what is left.
fn blocks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        let n = if left >= ROW_VECTORS { ROW_VECTORS } else { 1 << left.checked_ilog2()? };
        start += n;
        Some((start - n, n))
    })
}

/// `sums += sum_e d_e * xh[base_e + off..][..len]` for one register block of a row.
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

/// `xh[G, HP, WP, CP]` (zeroed before): the images `xs[G, C, H, W]` zero-padded as the layer
/// pads them, channels last and padded with zeros to whole vectors.
fn channels_last(g: &ConvGeom, xs: &[f32], xh: &mut [Fx]) {
    let (hp, wp) = padded_dims(g);
    let cp = g.c.div_ceil(LANES) * LANES;
    let values: &mut [f32] = bytemuck::cast_slice_mut(xh);
    for (j, x) in xs.chunks_exact(g.in_len()).enumerate() {
        for h in 0..g.h {
            // Row h of every channel, `[C, W]` with rows `H*W` apart, transposed into the
            // padded row's `[W, CP]`.
            let row = &mut values[((j * hp + h + g.pad_top) * wp + g.pad_left) * cp..][..g.w * cp];
            transpose_ld(&x[h * g.w..], g.h * g.w, g.c, g.w, row, cp);
        }
    }
}

/// `cols[G, OH, OW, KP]`: each output position's window of the images `xs[G, C, H, W]`,
/// `C*KH*KW` values in im2col's order (padded to whole vectors; the padding lanes are left
/// as they are): im2col, then transposed, with `col` as scratch.
fn columns(g: &ConvGeom, xs: &[f32], cols: &mut [Fx], col: &mut Vec<f32>) {
    let (kp, plane) = (g.col_rows().div_ceil(LANES) * LANES, g.out_plane());
    col.resize(g.col_rows() * plane, 0.0);
    let values: &mut [f32] = bytemuck::cast_slice_mut(cols);
    for (x, image) in xs.chunks_exact(g.in_len()).zip(values.chunks_exact_mut(plane * kp)) {
        im2col_ld(g, x, col, plane);
        transpose(col, g.col_rows(), plane, image, kp);
    }
}

/// `dxs[G, C, H, W] +=` the columns `dcols[G, OH, OW, KP]` put back in place (transposed,
/// then col2im; the padding's gradients dropped), with `col` as scratch.
fn add_columns(g: &ConvGeom, dcols: &[Fx], dxs: &mut [f32], col: &mut Vec<f32>) {
    let (kp, plane) = (g.col_rows().div_ceil(LANES) * LANES, g.out_plane());
    col.resize(kp * plane, 0.0);
    let values: &[f32] = bytemuck::cast_slice(dcols);
    for (dx, image) in dxs.chunks_exact_mut(g.in_len()).zip(values.chunks_exact(plane * kp)) {
        transpose(image, plane, kp, col, plane);
        col2im_ld(g, col, plane, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which layout the layers of `conv_plan`'s test of this module take: columns where
    /// padding the channels to vectors would waste most of them, channels last elsewhere.
    #[test]
    fn layouts_of_the_tested_layers() {
        let columns = |c, k| Layout::of(&ConvGeom::new(c, 9, 9, k, k, (1, 1), (1, 1, 1, 1))).columns;
        assert!(columns(1, 4) && columns(3, 3));
        // Whole vectors of channels, with AVX-512's 16 lanes and AVX2's 8.
        assert!(!columns(16, 3) && !columns(32, 3) && !columns(64, 4));
    }
}

//! Direct convolution with `wide` SIMD, for layers where im2col + GEMM is weak: one input
//! channel (the GEMM's inner dimension `C*KH*KW` is only 9 or 16, and the column matrix costs
//! more to build than the multiplication saves), and stride-1 layers on large planes (building
//! and packing a column matrix costs as much memory traffic as the GEMM reads).
//!
//! Per image: `y[OC, OH, OW] = sum_{c,kh,kw} w[OC, C, KH, KW] * xpad[c, oh*SH + kh, ow*SW + kw]`
//! where `xpad` is `x` surrounded by the geometry's zero padding. No bias: the layer adds it.
//! With stride 1 every kernel tap becomes one long contiguous vector operation (see
//! `Wide` for the "wide rows" layout); other strides take a scalar path. The three passes:
//! - forward: `OC_BLOCK` output channels x `BLOCK` vectors of accumulators, each input
//!   vector loaded feeding every channel; [`conv_forward_relu_pool2`] adds the bias, ReLU and
//!   a 2x2 max-pool to it, straight from the accumulators' wide rows;
//! - weight gradient: `DW_OC` channels x up to 12 taps of accumulators, summed over a whole
//!   group of images before the one horizontal sum;
//! - input gradient: the forward kernel again, on transposed weights ([`InputGrad`]).
//!
//! Reference twins: [`conv_forward_ref`], [`conv_backward_weights_ref`],
//! [`conv_backward_input_ref`], which index straight from the definition above.

use crate::im2col::ConvGeom;
use crate::pool::first_max_2x2;
use crate::simd::{copy_short, load, store, transpose_ld, Fx, LANES};

/// The input's height and width with its padding: `(H + pad_top + pad_bottom, W + ...)`.
pub(crate) fn padded_dims(g: &ConvGeom) -> (usize, usize) {
    (g.h + g.pad_top + g.pad_bottom, g.w + g.pad_left + g.pad_right)
}

/// Writes `xp[C, HP, WP]`, followed by `slack` zeros: `x[C, H, W]` in the interior, zeros
/// around it. Every value is written once (the padding rows and columns, then each row's
/// copy), so the buffer needs no zeroing first: a full `fill` before the copy was two passes
/// over the buffer where one does.
pub(crate) fn pad_into(g: &ConvGeom, x: &[f32], xp: &mut [f32], slack: usize) {
    let (hp, wp) = padded_dims(g);
    assert_eq!(xp.len(), g.c * hp * wp + slack, "pad_into: buffer length");
    let (planes, tail) = xp.split_at_mut(g.c * hp * wp);
    tail.fill(0.0);
    for c in 0..g.c {
        let plane = &mut planes[c * hp * wp..][..hp * wp];
        let (top, rest) = plane.split_at_mut(g.pad_top * wp);
        let (rows, bottom) = rest.split_at_mut(g.h * wp);
        top.fill(0.0);
        bottom.fill(0.0);
        for ih in 0..g.h {
            let (left, rest) = rows[ih * wp..][..wp].split_at_mut(g.pad_left);
            let (mid, right) = rest.split_at_mut(g.w);
            left.fill(0.0);
            copy_short(mid, &x[(c * g.h + ih) * g.w..][..g.w]);
            right.fill(0.0);
        }
    }
}

/// `dxs[G, C, H, W] +=` the interior of a padded, channels-last gradient `dxh[G, HP, WP,
/// width]` (the padding's gradients dropped), whose lanes `0..channels` are the channels
/// `c0..c0 + channels`: each input row's `[W, width]` block transposed (`transpose_ld`, 8 x 8
/// register tiles) into `rowt[channels, W]`, then added row by row. The way back from the
/// layouts of the scatter's and the sparse input gradients.
pub(crate) fn add_channels_last(
    g: &ConvGeom,
    dxh: &[f32],
    width: usize,
    (c0, channels): (usize, usize),
    dxs: &mut [f32],
    rowt: &mut Vec<f32>,
) {
    let (hp, wp) = padded_dims(g);
    rowt.resize(channels * g.w, 0.0);
    for (j, dx) in dxs.chunks_exact_mut(g.in_len()).enumerate() {
        for h in 0..g.h {
            let row = &dxh[((j * hp + h + g.pad_top) * wp + g.pad_left) * width..][..g.w * width];
            transpose_ld(row, width, g.w, channels, rowt, g.w);
            let planes = dx[c0 * g.h * g.w..].chunks_exact_mut(g.h * g.w);
            for (dx_c, src) in planes.zip(rowt.chunks_exact(g.w)) {
                dx_c[h * g.w..][..g.w].iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
        }
    }
}

fn check(g: &ConvGeom, oc: usize, x: usize, w: usize, y: usize) {
    assert_eq!(x, g.in_len(), "conv_direct: x has {x} values, geometry needs {}", g.in_len());
    assert_eq!(
        w,
        oc * g.col_rows(),
        "conv_direct: w has {w} values, needs OC*C*KH*KW = {}",
        oc * g.col_rows()
    );
    assert_eq!(
        y,
        oc * g.out_plane(),
        "conv_direct: y has {y} values, needs OC*OH*OW = {}",
        oc * g.out_plane()
    );
}

/// Vectors per block in the wide-row loops: independent accumulators hide the FMA latency.
/// With [`OC_BLOCK`] channels that is `OC_BLOCK * BLOCK` accumulators, plus `BLOCK` input
/// vectors and a weight: 21 of AVX-512's 32 registers with 4, while AVX2's 16 registers would
/// spill, so 2 there (11).
#[cfg(target_feature = "avx512f")]
const BLOCK: usize = 4;
#[cfg(not(target_feature = "avx512f"))]
const BLOCK: usize = 2;
/// Values per block.
const STEP: usize = BLOCK * LANES;

/// The stride-1 layout trick ("wide rows"). With the input padded to `xp[C, HP, WP]`, output
/// `(oh, ow)` reads tap `(c, kh, kw)` at `xp[c*HP*WP + (oh + kh)*WP + ow + kw]`, which is
/// `xp[off(c, kh, kw) + i]` with `i = oh*WP + ow`. Computing the output on a grid `WP` wide
/// instead of `OW` makes every tap one contiguous vector operation over `i in 0..span`,
/// `span = (OH - 1)*WP + OW`; the `WP - OW` extra columns of each row are computed and
/// dropped (7% extra work for 28-wide images and a 3x3 kernel). The loops run over whole
/// blocks of [`STEP`] values, `len = span` rounded up, so there is no partial vector to
/// handle: the largest index read is `off(C-1, KH-1, KW-1) + len - 1 = C*HP*WP - 1 + (len -
/// span)`, and `xp` carries those `len - span` extra zeros ("slack") at its end.
struct Wide {
    wp: usize,
    /// `off(c, kh, kw)` for every tap, in `w`'s order.
    offs: Vec<usize>,
    span: usize,
    len: usize,
    /// Values of the padded input `xp`, slack included.
    padded: usize,
}

impl Wide {
    fn new(g: &ConvGeom) -> Self {
        let (hp, wp) = padded_dims(g);
        let mut offs = Vec::with_capacity(g.col_rows());
        for c in 0..g.c {
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    offs.push(c * hp * wp + kh * wp + kw);
                }
            }
        }
        let span = if g.oh == 0 || g.ow == 0 { 0 } else { (g.oh - 1) * wp + g.ow };
        let len = span.next_multiple_of(STEP);
        Wide { wp, offs, span, len, padded: g.c * hp * wp + (len - span) }
    }

    /// Copies the wide rows of `wide` (`[OH, WP]`, the first `OW` of each row) into `y[OH, OW]`,
    /// or adds them.
    fn unwide(&self, g: &ConvGeom, wide: &[f32], y: &mut [f32], accumulate: bool) {
        for oh in 0..g.oh {
            let src = &wide[oh * self.wp..oh * self.wp + g.ow];
            let dst = &mut y[oh * g.ow..(oh + 1) * g.ow];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                copy_short(dst, src);
            }
        }
    }

    /// `dy` of one output channel spread onto the wide grid: row `oh` at `oh*WP`, zeros in the
    /// extra columns and after `span` (so they contribute nothing to the gradients).
    fn spread(&self, g: &ConvGeom, dy_o: &[f32], wide: &mut [f32]) {
        wide.fill(0.0);
        for oh in 0..g.oh {
            copy_short(&mut wide[oh * self.wp..oh * self.wp + g.ow], &dy_o[oh * g.ow..(oh + 1) * g.ow]);
        }
    }
}

/// Splits `scratch` into the padded input `xp` (filled from `x`) and a zeroed buffer of
/// `rest` values.
fn padded_and_rest<'a>(
    g: &ConvGeom,
    l: &Wide,
    x: &[f32],
    scratch: &'a mut Vec<f32>,
    rest: usize,
) -> (&'a [f32], &'a mut [f32]) {
    // `pad_into` writes every value of `xp`; only `rest` needs zeroing.
    scratch.resize(l.padded + rest, 0.0);
    let (xp, rest) = scratch.split_at_mut(l.padded);
    pad_into(g, x, xp, l.len - l.span);
    rest.fill(0.0);
    (xp, rest)
}

/// Output channels computed together in the forward: each input vector loaded feeds this many
/// FMAs (one per channel), so loads stop being the limit.
const OC_BLOCK: usize = 4;

/// `wide[q][i] = sum_t w_il[t][q] * xp[offs[t] + i]` for `Q` output channels and every `i` in
/// `0..len` (`len` a multiple of [`STEP`]). The weights are interleaved, `w_il[taps, Q]`, so each
/// tap reads its `Q` weights together.
fn correlate<const Q: usize>(xp: &[f32], offs: &[usize], w_il: &[f32], len: usize, wide: &mut [f32]) {
    for i in (0..len).step_by(STEP) {
        let mut acc = [[Fx::splat(0.0); BLOCK]; Q];
        for (&off, wt) in offs.iter().zip(w_il.chunks_exact(Q)) {
            let src = &xp[off + i..off + i + STEP];
            let v: [Fx; BLOCK] = std::array::from_fn(|j| load(&src[j * LANES..(j + 1) * LANES]));
            for (acc_q, &wq) in acc.iter_mut().zip(wt) {
                let wv = Fx::splat(wq);
                for (a, &vj) in acc_q.iter_mut().zip(&v) {
                    *a = vj.mul_add(wv, *a);
                }
            }
        }
        for (q, acc_q) in acc.iter().enumerate() {
            for (j, a) in acc_q.iter().enumerate() {
                let at = q * len + i + j * LANES;
                store(*a, &mut wide[at..at + LANES]);
            }
        }
    }
}

/// Stride-1 forward, block by block: for each block of `q` output channels `o..o + q` it
/// calls `emit(&layout, o, wide)` with their wide rows, `wide[k * len..(k + 1) * len]` for
/// channel `o + k` (no bias), and then reuses the buffer for the next block.
fn forward_blocks(
    g: &ConvGeom,
    oc: usize,
    x: &[f32],
    w: &[f32],
    scratch: &mut Vec<f32>,
    mut emit: impl FnMut(&Wide, usize, &[f32]),
) {
    let l = Wide::new(g);
    let taps = g.col_rows();
    let (xp, rest) = padded_and_rest(g, &l, x, scratch, OC_BLOCK * (l.len + taps));
    let (wide, w_il) = rest.split_at_mut(OC_BLOCK * l.len);
    let mut o = 0;
    while o < oc {
        let q = if oc - o >= OC_BLOCK { OC_BLOCK } else { 1 };
        for (t, slot) in w_il[..taps * q].chunks_exact_mut(q).enumerate() {
            for (k, v) in slot.iter_mut().enumerate() {
                *v = w[(o + k) * taps + t];
            }
        }
        let w_il = &w_il[..taps * q];
        match q {
            OC_BLOCK => correlate::<OC_BLOCK>(xp, &l.offs, w_il, l.len, wide),
            _ => correlate::<1>(xp, &l.offs, w_il, l.len, wide),
        }
        emit(&l, o, &wide[..q * l.len]);
        o += q;
    }
}

/// Stride-1 forward: `y[OC, OH, OW] = w (*) x`, or `+=` when `accumulate`.
fn forward_wide(
    g: &ConvGeom,
    oc: usize,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    accumulate: bool,
    scratch: &mut Vec<f32>,
) {
    let plane = g.out_plane();
    forward_blocks(g, oc, x, w, scratch, |l, o, wide| {
        for (k, wide_k) in wide.chunks_exact(l.len).enumerate() {
            l.unwide(g, wide_k, &mut y[(o + k) * plane..(o + k + 1) * plane], accumulate);
        }
    });
}

/// `max(a, b)` as one compare-and-select (`f32::max` adds NaN handling, which keeps the
/// pooling loop from vectorising).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Convolution, bias, ReLU and 2x2 max-pool with stride 2, for one image with both strides 1:
/// `y[OC, OH/2, OW/2]` (rounded down, as the pool drops a last odd row or column) `= max(0,
/// max over each window of (w (*) x + b))`, without ever writing the full-size output. Each
/// block of channels is pooled straight from its wide rows, while they are in L1.
///
/// Equal to the layer's unfused sequence (add the bias, pool, ReLU) value for value (NaN
/// aside: the inference form passes a NaN through where ReLU would make it 0), and with
/// `argmax` (training) also index for index: each window's argmax, its index in the `[OH, OW]`
/// plane, is the first maximum of the biased values in row-major order, as
/// [`crate::pool::maxpool_forward`] picks it. Without `argmax` (inference) the bias is added
/// after the pool, to a quarter of the values: rounding is monotone, so `max(fl(a + b),
/// fl(c + b)) = fl(max(a, c) + b)`. Only the sign of a zero may differ.
///
/// # Panics
/// If a stride is not 1, or a length does not match the geometry.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward_relu_pool2(
    g: &ConvGeom,
    oc: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    mut argmax: Option<&mut [u32]>,
    scratch: &mut Vec<f32>,
) {
    assert!(g.unit_stride(), "conv_forward_relu_pool2: strides {}x{} are not 1", g.stride_h, g.stride_w);
    let (ph, pw) = (g.oh / 2, g.ow / 2);
    check(g, oc, x.len(), w.len(), oc * g.out_plane());
    assert_eq!(b.len(), oc, "conv_forward_relu_pool2: b has {} values, needs OC = {oc}", b.len());
    assert_eq!(y.len(), oc * ph * pw, "conv_forward_relu_pool2: y has {} values, needs OC*PH*PW", y.len());
    if let Some(a) = argmax.as_deref() {
        assert_eq!(
            a.len(),
            y.len(),
            "conv_forward_relu_pool2: argmax has {} values, y has {}",
            a.len(),
            y.len()
        );
    }
    if ph * pw == 0 {
        return;
    }
    let ow = g.ow;
    forward_blocks(g, oc, x, w, scratch, |l, o, wide| {
        for (k, wide_k) in wide.chunks_exact(l.len).enumerate() {
            let bias = b[o + k];
            let pooled = (o + k) * ph * pw..(o + k + 1) * ph * pw;
            let y_o = &mut y[pooled.clone()];
            match argmax.as_deref_mut() {
                None => {
                    for (r, y_r) in y_o.chunks_exact_mut(pw).enumerate() {
                        let top = wide_k[2 * r * l.wp..][..2 * pw].chunks_exact(2);
                        let bottom = wide_k[(2 * r + 1) * l.wp..][..2 * pw].chunks_exact(2);
                        for ((out, t), u) in y_r.iter_mut().zip(top).zip(bottom) {
                            *out = larger(larger(larger(t[0], t[1]), larger(u[0], u[1])) + bias, 0.0);
                        }
                    }
                }
                Some(argmax) => {
                    let a_o = &mut argmax[pooled];
                    for (r, (y_r, a_r)) in y_o.chunks_exact_mut(pw).zip(a_o.chunks_exact_mut(pw)).enumerate()
                    {
                        let top = wide_k[2 * r * l.wp..][..2 * pw].chunks_exact(2);
                        let bottom = wide_k[(2 * r + 1) * l.wp..][..2 * pw].chunks_exact(2);
                        for (c, (((out, a), t), u)) in
                            y_r.iter_mut().zip(a_r).zip(top).zip(bottom).enumerate()
                        {
                            // The biased values, compared as the pool compares them.
                            let at = (2 * r * ow + 2 * c) as u32;
                            let (m, i) = first_max_2x2(
                                [t[0] + bias, t[1] + bias],
                                [u[0] + bias, u[1] + bias],
                                at,
                                ow as u32,
                            );
                            *out = m.max(0.0);
                            *a = i;
                        }
                    }
                }
            }
        }
    });
}

/// Forward for one image: overwrites `y[OC, OH, OW]`. `scratch` holds the padded input and
/// a wide row buffer between calls (reused, so no allocation per image once it has grown).
pub fn conv_forward(g: &ConvGeom, oc: usize, x: &[f32], w: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) {
    check(g, oc, x.len(), w.len(), y.len());
    let (hp, wp) = padded_dims(g);
    let taps = g.col_rows();
    if taps == 0 {
        y.fill(0.0); // an empty sum
        return;
    }
    if g.out_plane() == 0 {
        return;
    }
    if g.unit_stride() {
        forward_wide(g, oc, x, w, y, false, scratch);
        return;
    }
    scratch.resize(g.c * hp * wp, 0.0); // no zeroing: `pad_into` writes every value
    pad_into(g, x, scratch, 0);
    let xp = &scratch[..];
    for (y_o, w_o) in y.chunks_exact_mut(g.out_plane()).zip(w.chunks_exact(taps)) {
        for oh in 0..g.oh {
            for (ow, out) in y_o[oh * g.ow..(oh + 1) * g.ow].iter_mut().enumerate() {
                let mut s = 0.0;
                let mut t = 0;
                for c in 0..g.c {
                    for kh in 0..g.kh {
                        let row = &xp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                        for kw in 0..g.kw {
                            s += w_o[t] * row[ow * g.stride_w + kw];
                            t += 1;
                        }
                    }
                }
                *out = s;
            }
        }
    }
}

/// Output channels per block of the weight gradient (with blocks of up to 12 taps: 24
/// accumulators with AVX-512; of 6, 12 with 8 lanes).
const DW_OC: usize = 2;

/// `sum_{j,i} dy_wide[j][q][i] * xps[j][offs[t] + i]` over the images `j` for `Q` output
/// channels (`dy_wide: [G, Q, len]`, `xps: [G, padded]`) and `T` taps: each input vector loaded
/// feeds every channel's accumulator, each `dy` vector every tap's. `Q` and `T` are constants
/// so the `Q*T` accumulators stay in registers; they run over all the images before the one
/// horizontal sum at the end.
fn dw_block<const Q: usize, const T: usize>(
    xps: &[f32],
    padded: usize,
    offs: [usize; T],
    dy_wide: &[f32],
    len: usize,
) -> [[f32; T]; Q] {
    let mut acc = [[Fx::splat(0.0); T]; Q];
    for (xp, dyw) in xps.chunks_exact(padded).zip(dy_wide.chunks_exact(Q * len)) {
        for i in (0..len).step_by(LANES) {
            let d: [Fx; Q] = std::array::from_fn(|q| load(&dyw[q * len + i..q * len + i + LANES]));
            for (t, &off) in offs.iter().enumerate() {
                let xv = load(&xp[off + i..off + i + LANES]);
                for (acc_q, &dq) in acc.iter_mut().zip(&d) {
                    acc_q[t] = xv.mul_add(dq, acc_q[t]);
                }
            }
        }
    }
    acc.map(|acc_q| acc_q.map(|a| a.reduce_add()))
}

/// `dw[q][t] += sum_{j,i} dy_wide[j][q][i] * xps[j][offs[t] + i]` for `Q` output channels
/// (`dw: [Q, taps]`), a block of taps at a time. With AVX-512: 12, 9 or 8, whichever divides
/// the taps (a 3x3 kernel: 9 per channel; a 4x4 one: 16), else 12 with the last block padded
/// with taps at offset 0 whose sums are dropped. With AVX2, whose 16 registers hold `Q x T`
/// sums, `Q` output-gradient vectors and one input vector: blocks of 6 (`2 x 6 + 2 + 1 = 15`),
/// then one of 3 or 5 for what is left (padded as above): 9 taps are 6 + 3. At 9 in one block
/// the 18 sums did not fit, and the loop kept them on the stack (132 stack accesses in
/// `conv_backward_weights`, AMD EPYC Zen 3 build, 2026-12-01).
fn weight_grads_block<const Q: usize>(
    xps: &[f32],
    padded: usize,
    offs: &[usize],
    dy_wide: &[f32],
    len: usize,
    dw: &mut [f32],
) {
    /// The taps `first..first + offs.len()` in blocks of `T`.
    fn run<const Q: usize, const T: usize>(
        (xps, padded, offs, dy_wide, len): (&[f32], usize, &[usize], &[f32], usize),
        first: usize,
        dw: &mut [f32],
    ) {
        let taps = dw.len() / Q;
        for (k, offs_k) in offs.chunks(T).enumerate() {
            let offs_t: [usize; T] = std::array::from_fn(|t| offs_k.get(t).copied().unwrap_or(0));
            for (q, sums) in dw_block::<Q, T>(xps, padded, offs_t, dy_wide, len).iter().enumerate() {
                for (t, s) in sums.iter().enumerate().take(offs_k.len()) {
                    dw[q * taps + first + k * T + t] += s;
                }
            }
        }
    }
    let args = |taps| (xps, padded, taps, dy_wide, len);
    #[cfg(target_feature = "avx512f")]
    match offs.len() {
        n if n % 12 == 0 => run::<Q, 12>(args(offs), 0, dw),
        n if n % 9 == 0 => run::<Q, 9>(args(offs), 0, dw),
        n if n % 8 == 0 => run::<Q, 8>(args(offs), 0, dw),
        _ => run::<Q, 12>(args(offs), 0, dw),
    }
    #[cfg(not(target_feature = "avx512f"))]
    {
        let whole = offs.len() - offs.len() % 6;
        run::<Q, 6>(args(&offs[..whole]), 0, dw);
        let rest = &offs[whole..];
        match rest.len() {
            0 => {}
            1..=3 => run::<Q, 3>(args(rest), whole, dw),
            _ => run::<Q, 5>(args(rest), whole, dw),
        }
    }
}

/// Weight gradient of a group of images, accumulated: `dw[OC, C, KH, KW] += sum_j dy_j (*)
/// xpad_j` for `xs: [G, C, H, W]` and `dys: [G, OC, OH, OW]` (any `G`; a layer passes a few
/// images at a time, so the sums over the small planes of late layers run long enough).
pub fn conv_backward_weights(
    g: &ConvGeom,
    oc: usize,
    xs: &[f32],
    dys: &[f32],
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (taps, plane) = (g.col_rows(), g.out_plane());
    let count = xs.len().checked_div(g.in_len()).or(dys.len().checked_div(oc * plane)).unwrap_or(0);
    check(g, oc, g.in_len(), dw.len(), oc * plane);
    assert_eq!(
        (xs.len(), dys.len()),
        (count * g.in_len(), count * oc * plane),
        "conv_direct: xs and dys must hold the same number of whole images"
    );
    if oc == 0 || plane == 0 || taps == 0 || count == 0 || g.in_len() == 0 {
        return; // an all-zero (or empty) padded input contributes nothing
    }
    if g.unit_stride() {
        let l = Wide::new(g);
        scratch.clear();
        scratch.resize(count * l.padded + count * DW_OC * l.len, 0.0);
        let (xps, dy_wide) = scratch.split_at_mut(count * l.padded);
        for (x, xp) in xs.chunks_exact(g.in_len()).zip(xps.chunks_exact_mut(l.padded)) {
            pad_into(g, x, xp, l.len - l.span);
        }
        let xps = &*xps;
        let mut o = 0;
        while o < oc {
            let q = if oc - o >= DW_OC { DW_OC } else { 1 };
            let dy_wide = &mut dy_wide[..count * q * l.len];
            for (dy, wide) in dys.chunks_exact(oc * plane).zip(dy_wide.chunks_exact_mut(q * l.len)) {
                for (k, wide_k) in wide.chunks_exact_mut(l.len).enumerate() {
                    l.spread(g, &dy[(o + k) * plane..(o + k + 1) * plane], wide_k);
                }
            }
            let dw_q = &mut dw[o * taps..(o + q) * taps];
            match q {
                DW_OC => weight_grads_block::<DW_OC>(xps, l.padded, &l.offs, dy_wide, l.len, dw_q),
                _ => weight_grads_block::<1>(xps, l.padded, &l.offs, dy_wide, l.len, dw_q),
            }
            o += q;
        }
        return;
    }
    let (hp, wp) = padded_dims(g);
    scratch.resize(g.c * hp * wp, 0.0); // no zeroing: `pad_into` writes every value
    for (x, dy) in xs.chunks_exact(g.in_len()).zip(dys.chunks_exact(oc * plane)) {
        pad_into(g, x, scratch, 0);
        let xp = &scratch[..];
        for (dy_o, dw_o) in dy.chunks_exact(plane).zip(dw.chunks_exact_mut(taps)) {
            let mut t = 0;
            for c in 0..g.c {
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        let mut s = 0.0;
                        for oh in 0..g.oh {
                            let row = &xp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                            for (ow, d) in dy_o[oh * g.ow..(oh + 1) * g.ow].iter().enumerate() {
                                s += d * row[ow * g.stride_w + kw];
                            }
                        }
                        dw_o[t] += s;
                        t += 1;
                    }
                }
            }
        }
    }
}

/// The input gradient of a convolution, prepared once per weight update and applied image by
/// image with [`InputGrad::accumulate`].
///
/// The input gradient's convolution (see [`InputGrad`]): its geometry, over `dy[OC, OH, OW]`
/// with `C` output channels, and its weights `wt[C, OC, KH, KW]`; `None` when the stride is
/// not 1, the padding is as wide as the kernel, or there is nothing to compute.
pub(crate) fn transposed(g: &ConvGeom, oc: usize, w: &[f32]) -> Option<(ConvGeom, Vec<f32>)> {
    let fits = g.pad_top < g.kh && g.pad_bottom < g.kh && g.pad_left < g.kw && g.pad_right < g.kw;
    (g.unit_stride() && fits && g.out_plane() > 0 && g.in_len() > 0).then(|| {
        let pad =
            (g.kh - 1 - g.pad_top, g.kw - 1 - g.pad_left, g.kh - 1 - g.pad_bottom, g.kw - 1 - g.pad_right);
        let gt = ConvGeom::new(oc, g.oh, g.ow, g.kh, g.kw, (1, 1), pad);
        debug_assert_eq!((gt.oh, gt.ow), (g.h, g.w));
        let mut wt = vec![0.0; w.len()];
        for o in 0..oc {
            for c in 0..g.c {
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        let src = ((o * g.c + c) * g.kh + kh) * g.kw + kw;
                        let dst = ((c * oc + o) * g.kh + (g.kh - 1 - kh)) * g.kw + (g.kw - 1 - kw);
                        wt[dst] = w[src];
                    }
                }
            }
        }
        (gt, wt)
    })
}

/// With stride 1 the input gradient is itself a stride-1 convolution, so it runs on the
/// forward's fast path: `dx[c, h, w] = sum_{o,kh,kw} w[o, c, kh, kw] * dy[o, h + PT - kh,
/// w + PL - kw]` is a correlation of `dy` (padded by `KH-1-PT` before and `KH-1-PB` after,
/// likewise across) with the weights turned 180 degrees and their two channel axes swapped,
/// `wt[c, o, KH-1-kh, KW-1-kw] = w[o, c, kh, kw]`. Other strides (and padding wider than the
/// kernel) take a scalar path.
pub struct InputGrad {
    g: ConvGeom,
    oc: usize,
    /// `Some((geometry, wt))` of the transposed convolution on the fast path.
    transposed: Option<(ConvGeom, Vec<f32>)>,
    w: Vec<f32>,
}

impl InputGrad {
    /// Prepares the input gradient of the convolution `g` with weights `w[OC, C, KH, KW]`.
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Self {
        check(g, oc, g.in_len(), w.len(), oc * g.out_plane());
        let transposed = transposed(g, oc, w);
        let w = if transposed.is_some() { Vec::new() } else { w.to_vec() };
        InputGrad { g: *g, oc, transposed, w }
    }

    /// One image's input gradient, accumulated: `dx[C, H, W] += w^T (*) dy`, padding dropped.
    pub fn accumulate(&self, dy: &[f32], dx: &mut [f32], scratch: &mut Vec<f32>) {
        let (g, oc) = (&self.g, self.oc);
        assert_eq!(dy.len(), oc * g.out_plane(), "conv_direct: dy length");
        assert_eq!(dx.len(), g.in_len(), "conv_direct: dx length");
        if g.out_plane() == 0 || g.col_rows() == 0 {
            return;
        }
        match &self.transposed {
            Some((gt, wt)) => forward_wide(gt, g.c, dy, wt, dx, true, scratch),
            None => self.scalar(dy, dx, scratch),
        }
    }

    fn scalar(&self, dy: &[f32], dx: &mut [f32], scratch: &mut Vec<f32>) {
        let (g, taps) = (&self.g, self.g.col_rows());
        let (hp, wp) = padded_dims(g);
        scratch.clear();
        scratch.resize(g.c * hp * wp, 0.0);
        let dxp = &mut scratch[..];
        for (dy_o, w_o) in dy.chunks_exact(g.out_plane()).zip(self.w.chunks_exact(taps)) {
            for oh in 0..g.oh {
                let dy_row = &dy_o[oh * g.ow..(oh + 1) * g.ow];
                let mut t = 0;
                for c in 0..g.c {
                    for kh in 0..g.kh {
                        let row = &mut dxp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                        for kw in 0..g.kw {
                            for (ow, d) in dy_row.iter().enumerate() {
                                row[ow * g.stride_w + kw] += w_o[t] * d;
                            }
                            t += 1;
                        }
                    }
                }
            }
        }
        for c in 0..g.c {
            for ih in 0..g.h {
                let src = &dxp[(c * hp + ih + g.pad_top) * wp + g.pad_left..][..g.w];
                let dst = &mut dx[(c * g.h + ih) * g.w..][..g.w];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
}

/// Input gradient for one image, accumulated: `dx[C, H, W] += w^T (*) dy`, padding dropped.
/// A layer with several input channels prepares an [`InputGrad`] once per batch instead (one
/// with a single input channel takes `w^T dy` by GEMM and col2im).
pub fn conv_backward_input(
    g: &ConvGeom,
    oc: usize,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    check(g, oc, dx.len(), w.len(), dy.len());
    InputGrad::new(g, oc, w).accumulate(dy, dx, scratch);
}

/// The index into `x[C, H, W]` of a position of the padded frame, or `None` in the padding.
fn at_padded(g: &ConvGeom, c: usize, ph: usize, pw: usize) -> Option<usize> {
    let ih = ph.checked_sub(g.pad_top).filter(|&i| i < g.h)?;
    let iw = pw.checked_sub(g.pad_left).filter(|&i| i < g.w)?;
    Some((c * g.h + ih) * g.w + iw)
}

/// Reference twin of [`conv_forward`].
pub fn conv_forward_ref(g: &ConvGeom, oc: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    check(g, oc, x.len(), w.len(), y.len());
    for o in 0..oc {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let mut s = 0.0f64;
                for c in 0..g.c {
                    for kh in 0..g.kh {
                        for kw in 0..g.kw {
                            let pos = at_padded(g, c, oh * g.stride_h + kh, ow * g.stride_w + kw);
                            if let Some(i) = pos {
                                s += (w[((o * g.c + c) * g.kh + kh) * g.kw + kw] * x[i]) as f64;
                            }
                        }
                    }
                }
                y[(o * g.oh + oh) * g.ow + ow] = s as f32;
            }
        }
    }
}

/// Reference twin of [`conv_backward_weights`].
pub fn conv_backward_weights_ref(g: &ConvGeom, oc: usize, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    check(g, oc, x.len(), dw.len(), dy.len());
    for o in 0..oc {
        for c in 0..g.c {
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let mut s = 0.0f64;
                    for oh in 0..g.oh {
                        for ow in 0..g.ow {
                            let pos = at_padded(g, c, oh * g.stride_h + kh, ow * g.stride_w + kw);
                            if let Some(i) = pos {
                                s += (dy[(o * g.oh + oh) * g.ow + ow] * x[i]) as f64;
                            }
                        }
                    }
                    dw[((o * g.c + c) * g.kh + kh) * g.kw + kw] += s as f32;
                }
            }
        }
    }
}

/// Reference twin of [`conv_backward_input`].
pub fn conv_backward_input_ref(g: &ConvGeom, oc: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    check(g, oc, dx.len(), w.len(), dy.len());
    for o in 0..oc {
        for c in 0..g.c {
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    for oh in 0..g.oh {
                        for ow in 0..g.ow {
                            let pos = at_padded(g, c, oh * g.stride_h + kh, ow * g.stride_w + kw);
                            if let Some(i) = pos {
                                dx[i] += w[((o * g.c + c) * g.kh + kh) * g.kw + kw]
                                    * dy[(o * g.oh + oh) * g.ow + ow];
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pad_into` writes every value of a buffer that held anything before (here NaN): the
    /// interior from `x`, zeros around it and in the slack, as a padding written value by value.
    #[test]
    fn pad_into_overwrites_a_used_buffer() {
        let cases = [
            (3, 5, 4, (1, 2, 0, 3), 2),
            (1, 28, 28, (1, 1, 1, 1), 0),
            (2, 0, 3, (1, 1, 1, 1), 1),
            (2, 3, 1, (0, 0, 0, 0), 3),
        ];
        for (c, h, w, (pt, pl, pb, pr), slack) in cases {
            let g = ConvGeom::new(c, h, w, 1, 1, (1, 1), (pt, pl, pb, pr));
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let (hp, wp) = padded_dims(&g);
            let mut want = vec![0.0; c * hp * wp + slack];
            for ch in 0..c {
                for ih in 0..h {
                    for iw in 0..w {
                        want[(ch * hp + ih + pt) * wp + iw + pl] = x[(ch * h + ih) * w + iw];
                    }
                }
            }
            let mut xp = vec![f32::NAN; want.len()];
            pad_into(&g, &x, &mut xp, slack);
            assert_eq!(xp, want, "{g:?}");
        }
    }
}

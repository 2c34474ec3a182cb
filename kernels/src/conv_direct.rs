//! Direct convolution with `wide` SIMD, for layers where im2col + GEMM is weak: few input
//! channels, so the GEMM's inner dimension `C*KH*KW` is only 9 or 16 and the column matrix
//! costs more to build than the multiplication saves.
//!
//! Per image: `y[OC, OH, OW] = sum_{c,kh,kw} w[OC, C, KH, KW] * xpad[c, oh*SH + kh, ow*SW + kw]`
//! where `xpad` is `x` surrounded by the geometry's zero padding. No bias: the layer adds it.
//! With stride 1 every kernel tap becomes one long contiguous vector operation (see
//! [`tap_offsets`] for the "wide rows" layout); other strides take a scalar path.
//!
//! Reference twins: [`conv_forward_ref`], [`conv_backward_weights_ref`],
//! [`conv_backward_input_ref`], which index straight from the definition above.

use crate::im2col::ConvGeom;
use crate::simd::{copy_short, load, store, Fx, LANES};

fn padded_dims(g: &ConvGeom) -> (usize, usize) {
    (g.h + g.pad_top + g.pad_bottom, g.w + g.pad_left + g.pad_right)
}

fn has_padding(g: &ConvGeom) -> bool {
    g.pad_top + g.pad_left + g.pad_bottom + g.pad_right > 0
}

/// Copies `x[C, H, W]` into the interior of the zeroed `xp[C, HP, WP]`.
fn pad_into(g: &ConvGeom, x: &[f32], xp: &mut Vec<f32>) {
    let (hp, wp) = padded_dims(g);
    xp.clear();
    xp.resize(g.c * hp * wp, 0.0);
    for c in 0..g.c {
        for ih in 0..g.h {
            let src = &x[(c * g.h + ih) * g.w..][..g.w];
            let dst = &mut xp[(c * hp + ih + g.pad_top) * wp + g.pad_left..][..g.w];
            dst.copy_from_slice(src);
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

/// Whether the fast "wide rows" layout applies (both strides 1).
fn unit_stride(g: &ConvGeom) -> bool {
    g.stride_h == 1 && g.stride_w == 1
}

/// The stride-1 layout trick ("wide rows"). With the input padded to `xp[C, HP, WP]`, output
/// `(oh, ow)` reads tap `(c, kh, kw)` at `xp[c*HP*WP + (oh + kh)*WP + ow + kw]`, which is
/// `xp[off(c, kh, kw) + i]` with `i = oh*WP + ow`. Computing the output on a grid `WP` wide
/// instead of `OW` makes every tap one contiguous vector operation over `i in 0..SPAN`,
/// `SPAN = (OH - 1)*WP + OW`; the `WP - OW` extra columns of each row are computed and
/// dropped (7% extra work for 28-wide images and a 3x3 kernel). The largest index read is
/// `off(C-1, KH-1, KW-1) + SPAN - 1 = C*HP*WP - 1`, inside `xp`.
fn tap_offsets(g: &ConvGeom, hp: usize, wp: usize) -> Vec<usize> {
    let mut offs = Vec::with_capacity(g.col_rows());
    for c in 0..g.c {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                offs.push(c * hp * wp + kh * wp + kw);
            }
        }
    }
    offs
}

fn wide_span(g: &ConvGeom, wp: usize) -> usize {
    if g.oh == 0 || g.ow == 0 {
        0
    } else {
        (g.oh - 1) * wp + g.ow
    }
}

/// Vectors per block in the wide-row loops: independent accumulators hide the FMA latency.
const BLOCK: usize = 4;

/// `wide[i] = sum_t w[t] * xp[offs[t] + i]` for every `i` of `wide`.
fn correlate_wide(xp: &[f32], offs: &[usize], w: &[f32], wide: &mut [f32]) {
    let span = wide.len();
    let mut i = 0;
    while i + BLOCK * LANES <= span {
        let mut acc = [Fx::splat(0.0); BLOCK];
        for (&off, &wt) in offs.iter().zip(w) {
            let wv = Fx::splat(wt);
            let src = &xp[off + i..off + i + BLOCK * LANES];
            for (j, a) in acc.iter_mut().enumerate() {
                *a = load(&src[j * LANES..(j + 1) * LANES]).mul_add(wv, *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            store(*a, &mut wide[i + j * LANES..i + (j + 1) * LANES]);
        }
        i += BLOCK * LANES;
    }
    correlate_rest(xp, offs, w, i, wide);
}

/// [`correlate_wide`] for `i` from `start` on, one vector (or a partial one) at a time.
fn correlate_rest(xp: &[f32], offs: &[usize], w: &[f32], start: usize, wide: &mut [f32]) {
    let span = wide.len();
    let mut i = start;
    while i < span {
        let len = LANES.min(span - i);
        let mut acc = Fx::splat(0.0);
        for (&off, &wt) in offs.iter().zip(w) {
            acc = load(&xp[off + i..off + i + len]).mul_add(Fx::splat(wt), acc);
        }
        store(acc, &mut wide[i..i + len]);
        i += len;
    }
}

/// Output channels computed together in the forward: each input vector loaded feeds this many
/// FMAs (one per channel), so loads stop being the limit.
const OC_BLOCK: usize = 4;

/// [`correlate_wide`] for `OC_BLOCK` output channels at once: `w` is `[OC_BLOCK, taps]`,
/// `wide` is `[OC_BLOCK, span]`.
fn correlate_wide_block(xp: &[f32], offs: &[usize], w: &[f32], span: usize, wide: &mut [f32]) {
    let taps = offs.len();
    let mut i = 0;
    while i + BLOCK * LANES <= span {
        let mut acc = [[Fx::splat(0.0); BLOCK]; OC_BLOCK];
        for (t, &off) in offs.iter().enumerate() {
            let src = &xp[off + i..off + i + BLOCK * LANES];
            let v: [Fx; BLOCK] = std::array::from_fn(|j| load(&src[j * LANES..(j + 1) * LANES]));
            for (q, acc_q) in acc.iter_mut().enumerate() {
                let wv = Fx::splat(w[q * taps + t]);
                for (a, &vj) in acc_q.iter_mut().zip(&v) {
                    *a = vj.mul_add(wv, *a);
                }
            }
        }
        for (q, acc_q) in acc.iter().enumerate() {
            for (j, a) in acc_q.iter().enumerate() {
                store(*a, &mut wide[q * span + i + j * LANES..q * span + i + (j + 1) * LANES]);
            }
        }
        i += BLOCK * LANES;
    }
    for (w_q, wide_q) in w.chunks_exact(taps).zip(wide.chunks_exact_mut(span)) {
        correlate_rest(xp, offs, w_q, i, wide_q);
    }
}

/// `dy` of one output channel spread onto the wide grid: row `oh` at `oh*WP`, zeros in the
/// `WP - OW` extra columns (so they contribute nothing to the gradients).
fn spread_wide(g: &ConvGeom, wp: usize, dy_o: &[f32], wide: &mut [f32]) {
    wide.fill(0.0);
    for oh in 0..g.oh {
        copy_short(&mut wide[oh * wp..oh * wp + g.ow], &dy_o[oh * g.ow..(oh + 1) * g.ow]);
    }
}

/// `dw[t] += sum_i dy_wide[i] * xp[offs[t] + i]`, up to sixteen taps at a time (a whole 3x3 or 4x4
/// kernel for one channel) so each `dy` vector
/// loaded feeds that many independent accumulators.
fn weight_grads_wide(xp: &[f32], offs: &[usize], dy_wide: &[f32], dw: &mut [f32]) {
    const TAPS: usize = 16;
    let span = dy_wide.len();
    let full = span - span % LANES;
    for (offs, dw) in offs.chunks(TAPS).zip(dw.chunks_mut(TAPS)) {
        let mut acc = [Fx::splat(0.0); TAPS];
        for i in (0..full).step_by(LANES) {
            let d = load(&dy_wide[i..i + LANES]);
            for (a, &off) in acc.iter_mut().zip(offs) {
                *a = load(&xp[off + i..off + i + LANES]).mul_add(d, *a);
            }
        }
        for ((a, &off), out) in acc.iter().zip(offs).zip(dw.iter_mut()) {
            let tail: f32 = (full..span).map(|i| dy_wide[i] * xp[off + i]).sum();
            *out += a.reduce_add() + tail;
        }
    }
}

/// [`weight_grads_wide`] for two output channels at once (`dy_wide`: `[2, span]`, `dw`:
/// `[2, taps]`): each input vector loaded feeds both channels' accumulators.
fn weight_grads_wide_pair(xp: &[f32], offs: &[usize], dy_wide: &[f32], span: usize, dw: &mut [f32]) {
    const TAPS: usize = 12;
    let taps = offs.len();
    let full = span - span % LANES;
    let (dy0, dy1) = dy_wide.split_at(span);
    let (dw0, dw1) = dw.split_at_mut(taps);
    for (c, offs_c) in offs.chunks(TAPS).enumerate() {
        let mut acc = [[Fx::splat(0.0); TAPS]; 2];
        for i in (0..full).step_by(LANES) {
            let (d0, d1) = (load(&dy0[i..i + LANES]), load(&dy1[i..i + LANES]));
            for (t, &off) in offs_c.iter().enumerate() {
                let xv = load(&xp[off + i..off + i + LANES]);
                acc[0][t] = xv.mul_add(d0, acc[0][t]);
                acc[1][t] = xv.mul_add(d1, acc[1][t]);
            }
        }
        for (t, &off) in offs_c.iter().enumerate() {
            let tail0: f32 = (full..span).map(|i| dy0[i] * xp[off + i]).sum();
            let tail1: f32 = (full..span).map(|i| dy1[i] * xp[off + i]).sum();
            dw0[c * TAPS + t] += acc[0][t].reduce_add() + tail0;
            dw1[c * TAPS + t] += acc[1][t].reduce_add() + tail1;
        }
    }
}

/// Splits `scratch` into a padded copy of `x` (when there is padding) and a wide buffer.
fn padded_and_wide<'a>(
    g: &ConvGeom,
    x: &'a [f32],
    scratch: &'a mut Vec<f32>,
    rows: usize,
) -> (&'a [f32], &'a mut [f32]) {
    let (hp, wp) = padded_dims(g);
    let span = rows * wide_span(g, wp);
    if has_padding(g) {
        pad_into(g, x, scratch);
        let padded = scratch.len();
        scratch.resize(padded + span, 0.0);
        let (xp, wide) = scratch.split_at_mut(padded);
        (xp, wide)
    } else {
        let _ = hp;
        scratch.clear();
        scratch.resize(span, 0.0);
        (x, &mut scratch[..])
    }
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
    if unit_stride(g) {
        let offs = tap_offsets(g, hp, wp);
        let span = wide_span(g, wp);
        let (xp, wide) = padded_and_wide(g, x, scratch, OC_BLOCK);
        let plane = g.out_plane();
        let blocks = oc / OC_BLOCK;
        let (y_blocked, y_rest) = y.split_at_mut(blocks * OC_BLOCK * plane);
        let (w_blocked, w_rest) = w.split_at(blocks * OC_BLOCK * taps);
        for (y_b, w_b) in
            y_blocked.chunks_exact_mut(OC_BLOCK * plane).zip(w_blocked.chunks_exact(OC_BLOCK * taps))
        {
            correlate_wide_block(xp, &offs, w_b, span, wide);
            for (y_o, wide_o) in y_b.chunks_exact_mut(plane).zip(wide.chunks_exact(span)) {
                for oh in 0..g.oh {
                    copy_short(&mut y_o[oh * g.ow..(oh + 1) * g.ow], &wide_o[oh * wp..oh * wp + g.ow]);
                }
            }
        }
        for (y_o, w_o) in y_rest.chunks_exact_mut(plane).zip(w_rest.chunks_exact(taps)) {
            let wide = &mut wide[..span];
            correlate_wide(xp, &offs, w_o, wide);
            for oh in 0..g.oh {
                copy_short(&mut y_o[oh * g.ow..(oh + 1) * g.ow], &wide[oh * wp..oh * wp + g.ow]);
            }
        }
        return;
    }
    let xp: &[f32] = if has_padding(g) {
        pad_into(g, x, scratch);
        scratch
    } else {
        x
    };
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

/// Weight gradient for one image, accumulated: `dw[OC, C, KH, KW] += dy (*) xpad`.
pub fn conv_backward_weights(
    g: &ConvGeom,
    oc: usize,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    check(g, oc, x.len(), dw.len(), dy.len());
    let (hp, wp) = padded_dims(g);
    let taps = g.col_rows();
    if g.out_plane() == 0 || taps == 0 {
        return;
    }
    if unit_stride(g) {
        let offs = tap_offsets(g, hp, wp);
        let span = wide_span(g, wp);
        let plane = g.out_plane();
        let (xp, dy_wide) = padded_and_wide(g, x, scratch, 2);
        let pairs = oc / 2;
        let (dy_pairs, dy_rest) = dy.split_at(pairs * 2 * plane);
        let (dw_pairs, dw_rest) = dw.split_at_mut(pairs * 2 * taps);
        for (dy_p, dw_p) in dy_pairs.chunks_exact(2 * plane).zip(dw_pairs.chunks_exact_mut(2 * taps)) {
            for (dy_o, wide_o) in dy_p.chunks_exact(plane).zip(dy_wide.chunks_exact_mut(span)) {
                spread_wide(g, wp, dy_o, wide_o);
            }
            weight_grads_wide_pair(xp, &offs, dy_wide, span, dw_p);
        }
        for (dy_o, dw_o) in dy_rest.chunks_exact(plane).zip(dw_rest.chunks_exact_mut(taps)) {
            let wide = &mut dy_wide[..span];
            spread_wide(g, wp, dy_o, wide);
            weight_grads_wide(xp, &offs, wide, dw_o);
        }
        return;
    }
    let xp: &[f32] = if has_padding(g) {
        pad_into(g, x, scratch);
        scratch
    } else {
        x
    };
    for (dy_o, dw_o) in dy.chunks_exact(g.out_plane()).zip(dw.chunks_exact_mut(taps)) {
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

/// Input gradient for one image, accumulated: `dx[C, H, W] += w^T (*) dy`, padding dropped.
pub fn conv_backward_input(
    g: &ConvGeom,
    oc: usize,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    check(g, oc, dx.len(), w.len(), dy.len());
    let (hp, wp) = padded_dims(g);
    let taps = g.col_rows();
    if g.out_plane() == 0 || taps == 0 {
        return;
    }
    let padded = g.c * hp * wp;
    let span = wide_span(g, wp);
    scratch.clear();
    scratch.resize(padded + span, 0.0);
    let (dxp, dy_wide) = scratch.split_at_mut(padded);
    if unit_stride(g) {
        let offs = tap_offsets(g, hp, wp);
        for (dy_o, w_o) in dy.chunks_exact(g.out_plane()).zip(w.chunks_exact(taps)) {
            spread_wide(g, wp, dy_o, dy_wide);
            for (&off, &wt) in offs.iter().zip(w_o) {
                crate::simd::axpy(wt, dy_wide, &mut dxp[off..off + span]);
            }
        }
    } else {
        for (dy_o, w_o) in dy.chunks_exact(g.out_plane()).zip(w.chunks_exact(taps)) {
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

//! Direct convolution with `wide` SIMD, for layers where im2col + GEMM is weak: few input
//! channels, so the GEMM's inner dimension `C*KH*KW` is only 9 or 16 and the column matrix
//! costs more to build than the multiplication saves.
//!
//! Per image: `y[OC, OH, OW] = sum_{c,kh,kw} w[OC, C, KH, KW] * xpad[c, oh*SH + kh, ow*SW + kw]`
//! where `xpad` is `x` surrounded by the geometry's zero padding. No bias: the layer adds it.
//! With stride 1 the output row is built `LANES` columns at a time in registers; other strides
//! take a scalar path.
//!
//! Reference twins: [`conv_forward_ref`], [`conv_backward_weights_ref`],
//! [`conv_backward_input_ref`], which index straight from the definition above.

use crate::im2col::ConvGeom;
use crate::simd::{dot, load, store, Fx, LANES};

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

/// Forward for one image: overwrites `y[OC, OH, OW]`. `scratch` holds the padded input
/// between calls (reused, so no allocation per image once it has grown).
pub fn conv_forward(g: &ConvGeom, oc: usize, x: &[f32], w: &[f32], y: &mut [f32], scratch: &mut Vec<f32>) {
    check(g, oc, x.len(), w.len(), y.len());
    let (hp, wp) = padded_dims(g);
    let xp: &[f32] = if has_padding(g) {
        pad_into(g, x, scratch);
        scratch
    } else {
        x
    };
    let taps = g.col_rows();
    for (o, y_o) in y.chunks_exact_mut(g.out_plane().max(1)).take(oc).enumerate() {
        let w_o = &w[o * taps..(o + 1) * taps];
        for oh in 0..g.oh {
            let y_row = &mut y_o[oh * g.ow..(oh + 1) * g.ow];
            if g.stride_w == 1 {
                // LANES output columns at a time, accumulated in one register over every tap.
                for j0 in (0..g.ow).step_by(LANES) {
                    let len = LANES.min(g.ow - j0);
                    let mut acc = Fx::splat(0.0);
                    let mut t = 0;
                    for c in 0..g.c {
                        for kh in 0..g.kh {
                            let row = &xp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                            for kw in 0..g.kw {
                                let src = &row[j0 + kw..j0 + kw + len];
                                acc = load(src).mul_add(Fx::splat(w_o[t]), acc);
                                t += 1;
                            }
                        }
                    }
                    store(acc, &mut y_row[j0..j0 + len]);
                }
            } else {
                for (ow, out) in y_row.iter_mut().enumerate() {
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
    let xp: &[f32] = if has_padding(g) {
        pad_into(g, x, scratch);
        scratch
    } else {
        x
    };
    let taps = g.col_rows();
    for o in 0..oc {
        let dy_o = &dy[o * g.out_plane()..(o + 1) * g.out_plane()];
        let dw_o = &mut dw[o * taps..(o + 1) * taps];
        let mut t = 0;
        for c in 0..g.c {
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let mut s = 0.0;
                    for oh in 0..g.oh {
                        let dy_row = &dy_o[oh * g.ow..(oh + 1) * g.ow];
                        let row = &xp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                        if g.stride_w == 1 {
                            s += dot(dy_row, &row[kw..kw + g.ow]);
                        } else {
                            for (ow, d) in dy_row.iter().enumerate() {
                                s += d * row[ow * g.stride_w + kw];
                            }
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
    scratch.clear();
    scratch.resize(g.c * hp * wp, 0.0);
    let dxp = scratch;
    let taps = g.col_rows();
    for o in 0..oc {
        let dy_o = &dy[o * g.out_plane()..(o + 1) * g.out_plane()];
        let w_o = &w[o * taps..(o + 1) * taps];
        for oh in 0..g.oh {
            let dy_row = &dy_o[oh * g.ow..(oh + 1) * g.ow];
            let mut t = 0;
            for c in 0..g.c {
                for kh in 0..g.kh {
                    let row = &mut dxp[(c * hp + oh * g.stride_h + kh) * wp..][..wp];
                    for kw in 0..g.kw {
                        let wv = w_o[t];
                        t += 1;
                        if g.stride_w == 1 {
                            crate::simd::axpy(wv, dy_row, &mut row[kw..kw + g.ow]);
                        } else {
                            for (ow, d) in dy_row.iter().enumerate() {
                                row[ow * g.stride_w + kw] += wv * d;
                            }
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

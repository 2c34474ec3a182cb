//! A convolution's input gradient computed from the output side: `col2im(w^T dy)` without
//! the column matrix, and without multiplying any padding.
//!
//! The other fast way ([`crate::conv_implicit::ImplicitInputGrad`]) runs the input gradient
//! as a convolution of `dy`, zero-padded by `KH-1` on each side for a 'valid' layer, with the
//! turned weights. That convolution has one output per *input* position (`H*W`), and every
//! output multiplies a full `C*KH*KW` window, padding included: for write-up E's second
//! convolution (11x11 outputs of a 14x14 input, 4x4 kernel) only `11*11 / (14*14)` = 62% of its
//! multiply-adds touch a real `dy` value. Here every multiply-add does:
//!
//! ```text
//! dx[c, oh*SH + kh - PT, ow*SW + kw - PL] += sum_o w[o, c, kh, kw] * dy[o, oh, ow]
//! ```
//!
//! read as: each output position `p = (oh, ow)` sends, for every tap `t = (kh, kw)`, the
//! vector `sum_o w[o, ., kh, kw] dy[o, p]` over the input channels to the input position it
//! came from. The kernel puts input channels along the SIMD lanes:
//!
//! ```text
//! for a block of input channels (NV vectors):
//!     for each tap t:                                  (its weights, OC x NV vectors, stay in L1)
//!         for a block of PB output positions p:
//!             acc[p][..] = sum_o dy[p][o] * wt[t][o][..]   (one broadcast, NV vector FMAs per o)
//!             dxt[target(p) + off(t)][..] += acc[p][..]    (PB x NV vector adds)
//! dx[c, h, w] += dxt[(h + PT, w + PL)][c]              (the interior, back to NCHW)
//! ```
//!
//! `dxt[G, HP, WP, NV*LANES]` is the group's input gradient, padded and channels-last, so the
//! taps that land in the padding cost nothing but a discarded add, and the channels of one
//! position are one vector. The tap loop is outermost so that one tap's weights (`OC x NV`
//! vectors: 16 KiB for 64 channels) stay in L1 while every position of the group streams past
//! them, instead of all of the layer's weights (256 KiB for E's conv2) being re-read from L2
//! for every block of positions, as the implicit forward does. It works for any stride and
//! padding.
//!
//! Summation order: each `dx` value adds its contributions tap by tap in `(kh, kw)` order
//! (within a tap, a stride-1 layer has one contributing position), each a sum over `o` in
//! order. It depends on the group's images only, never on threads.
//!
//! Reference twin: [`crate::conv_direct::conv_backward_input_ref`].

use crate::conv_direct::padded_dims;
use crate::im2col::{ConvGeom, Crop};
use crate::simd::{transpose, Fx, LANES};

/// Vectors of input channels per block: 64 channels with AVX-512, 16 with AVX2 (as the
/// implicit GEMM's output channels, for the same register budget).
#[cfg(target_feature = "avx512f")]
const MAX_NV: usize = 4;
#[cfg(not(target_feature = "avx512f"))]
const MAX_NV: usize = 2;

/// One layer's weights laid out for the scatter, and the geometry they go with.
pub struct ScatterInputGrad {
    g: ConvGeom,
    oc: usize,
    /// Per block of up to `MAX_NV * LANES` input channels `c0..`: per tap `t = kh*KW + kw`,
    /// `wt[t][o][NV*LANES] = w[o, c0 + l, kh, kw]`, the lanes past `C` zero. Blocks follow each
    /// other. Held as vectors, so each weight load is one aligned line
    /// ([`crate::conv_implicit`], "Aligned vectors").
    wt: Vec<Fx>,
}

/// Reusable buffers of one thread.
#[derive(Default)]
pub struct ScatterScratch {
    /// `dy` of the group transposed to `[G*OH*OW, OC]`: one position's channels in a row.
    dyt: Vec<f32>,
    /// Per output position: where its window starts in `dxt` (in positions).
    targets: Vec<usize>,
    /// The group's padded, channels-last input gradient for one block of channels, `NV`
    /// vectors a position.
    dxt: Vec<Fx>,
    /// One input row of it, transposed to `[NV*LANES, W]`.
    rowt: Vec<f32>,
}

impl ScatterInputGrad {
    /// Prepares the weights `w[OC, C, KH, KW]` of a layer with geometry `g`.
    ///
    /// # Panics
    /// When `w` has the wrong length.
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Self {
        let (taps, ckk) = (g.kh * g.kw, g.col_rows());
        assert_eq!(
            w.len(),
            oc * ckk,
            "conv_scatter: w has {} values, needs OC*C*KH*KW = {}",
            w.len(),
            oc * ckk
        );
        let mut vectors = vec![Fx::splat(0.0); g.c.div_ceil(LANES) * taps * oc];
        let wt: &mut [f32] = bytemuck::cast_slice_mut(&mut vectors);
        let mut start = 0;
        for c0 in (0..g.c).step_by(MAX_NV * LANES) {
            let width = (g.c - c0).min(MAX_NV * LANES).next_multiple_of(LANES);
            let block = &mut wt[start..start + taps * oc * width];
            for t in 0..taps {
                for o in 0..oc {
                    for l in 0..width.min(g.c - c0) {
                        block[(t * oc + o) * width + l] = w[(o * g.c + c0 + l) * taps + t];
                    }
                }
            }
            start += taps * oc * width;
        }
        ScatterInputGrad { g: *g, oc, wt: vectors }
    }

    /// `dxs[G, C, H, W] +=` the input gradient of a group of images whose output gradients
    /// are `dys[G, OC, OH, OW]`, zero outside `crop` (those positions are skipped).
    pub fn accumulate(&self, dys: &[f32], dxs: &mut [f32], crop: Crop, s: &mut ScatterScratch) {
        let (g, oc) = (&self.g, self.oc);
        let (plane, in_len) = (g.out_plane(), g.in_len());
        if oc * plane == 0 || in_len == 0 {
            return;
        }
        assert_eq!(dys.len() % (oc * plane), 0, "conv_scatter: dys is not whole output images");
        let count = dys.len() / (oc * plane);
        assert_eq!(
            dxs.len(),
            count * in_len,
            "conv_scatter: dxs has {} values for {count} images",
            dxs.len()
        );
        let (hp, wp) = padded_dims(g);

        // dy[G, OC, P] -> dyt[G*P, OC], then only the rows of the positions in `crop`, in order.
        s.dyt.clear();
        s.dyt.resize(count * plane * oc, 0.0);
        for (dyj, out) in dys.chunks_exact(oc * plane).zip(s.dyt.chunks_exact_mut(plane * oc)) {
            transpose(dyj, oc, plane, out, oc);
        }
        let (rows, cols) = (crop.rows.min(g.oh), crop.cols.min(g.ow));
        s.targets.clear();
        let mut kept = 0;
        for j in 0..count {
            for oh in 0..rows {
                if !crop.is_full(g) {
                    // Move the row's `cols` positions down to the next free row of dyt (never
                    // up: a source is never before its destination).
                    let from = (j * plane + oh * g.ow) * oc;
                    s.dyt.copy_within(from..from + cols * oc, kept * oc);
                }
                kept += cols;
                for ow in 0..cols {
                    s.targets.push(j * hp * wp + oh * g.stride_h * wp + ow * g.stride_w);
                }
            }
        }
        s.dyt.truncate(kept * oc);

        let mut wt = &self.wt[..];
        for c0 in (0..g.c).step_by(MAX_NV * LANES) {
            let nv = (g.c - c0).min(MAX_NV * LANES).div_ceil(LANES);
            let (block_wt, rest) = wt.split_at(g.kh * g.kw * oc * nv);
            wt = rest;
            s.dxt.clear();
            s.dxt.resize(count * hp * wp * nv, Fx::splat(0.0));
            let block = Block { g, oc, wt: block_wt, dyt: &s.dyt, targets: &s.targets };
            #[cfg(target_feature = "avx512f")]
            match nv {
                4 => block.run::<4, 6>(&mut s.dxt),
                3 => block.run::<3, 8>(&mut s.dxt),
                2 => block.run::<2, 8>(&mut s.dxt),
                _ => block.run::<1, 8>(&mut s.dxt),
            }
            #[cfg(not(target_feature = "avx512f"))]
            match nv {
                2 => block.run::<2, 6>(&mut s.dxt),
                _ => block.run::<1, 8>(&mut s.dxt),
            }
            // The interior of dxt[G, HP, WP, NV*LANES], added into dx[G, C, H, W]: each input
            // row's `W x NV*LANES` block transposed (tiled) into `rowt[NV*LANES, W]`, then added
            // plane by plane.
            let width = nv * LANES;
            let channels = (g.c - c0).min(width);
            let dxt: &[f32] = bytemuck::cast_slice(&s.dxt);
            s.rowt.resize(width * g.w, 0.0);
            for (j, dxj) in dxs.chunks_exact_mut(in_len).enumerate() {
                for h in 0..g.h {
                    let row = (j * hp + h + g.pad_top) * wp + g.pad_left;
                    transpose(&dxt[row * width..(row + g.w) * width], g.w, width, &mut s.rowt, g.w);
                    for (l, src) in s.rowt.chunks_exact(g.w).take(channels).enumerate() {
                        let dst = &mut dxj[((c0 + l) * g.h + h) * g.w..][..g.w];
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                    }
                }
            }
        }
    }
}

/// One block of input channels over one group (module docs).
struct Block<'a> {
    g: &'a ConvGeom,
    oc: usize,
    /// This block's weights: per tap, `[OC, NV]` vectors.
    wt: &'a [Fx],
    /// `dy[G*OH*OW, OC]`.
    dyt: &'a [f32],
    /// Each position's window start in `dxt`, in positions.
    targets: &'a [usize],
}

impl Block<'_> {
    /// Adds every tap's contributions into `dxt[G*HP*WP, NV]` (vectors).
    fn run<const NV: usize, const PB: usize>(&self, dxt: &mut [Fx]) {
        let (g, oc) = (self.g, self.oc);
        let (_, wp) = padded_dims(g);
        for (t, wt_t) in self.wt.chunks_exact(oc * NV).enumerate() {
            let off = (t / g.kw) * wp + t % g.kw;
            for (dy_block, targets) in self.dyt.chunks(PB * oc).zip(self.targets.chunks(PB)) {
                // A short last block repeats its last position; those sums are not added.
                let last = targets.len() - 1;
                let dy: [&[f32]; PB] = std::array::from_fn(|i| &dy_block[i.min(last) * oc..][..oc]);
                let acc = sums::<NV, PB>(wt_t, &dy, oc);
                for (&target, acc_p) in targets.iter().zip(&acc) {
                    let d = &mut dxt[(target + off) * NV..][..NV];
                    for (dv, a) in d.iter_mut().zip(acc_p) {
                        *dv += *a;
                    }
                }
            }
        }
    }
}

/// `acc[i][v] = sum_o dy[i][o] * wt[o][v]` for `PB` positions and `NV` vectors of channels.
#[inline(always)]
fn sums<const NV: usize, const PB: usize>(wt: &[Fx], dy: &[&[f32]; PB], oc: usize) -> [[Fx; NV]; PB] {
    let mut acc = [[Fx::splat(0.0); NV]; PB];
    let dy: [&[f32]; PB] = std::array::from_fn(|i| &dy[i][..oc]);
    let wt = &wt[..oc * NV];
    let step = |acc: &mut [[Fx; NV]; PB], o: usize| {
        let w_o = &wt[o * NV..][..NV];
        let w: [Fx; NV] = std::array::from_fn(|v| w_o[v]);
        for (acc_p, dy_p) in acc.iter_mut().zip(&dy) {
            let d = Fx::splat(dy_p[o]);
            for (a, &wv) in acc_p.iter_mut().zip(&w) {
                *a = wv.mul_add(d, *a);
            }
        }
    };
    // Two channels a turn: half the loop's counting and branching, which on Intel cores
    // competes with the FMAs for ports 0 and 5.
    for o in (0..oc - oc % 2).step_by(2) {
        step(&mut acc, o);
        step(&mut acc, o + 1);
    }
    if oc % 2 == 1 {
        step(&mut acc, oc - 1);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_direct::conv_backward_input_ref;

    fn filled(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Against the reference twin, image by image, on strides, paddings, channel counts that
    /// are and are not whole vectors, and more than one block of channels.
    #[test]
    fn matches_the_reference_twin() {
        let cases = [
            (ConvGeom::new(64, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0)), 64, 3), // E conv2
            (ConvGeom::new(32, 14, 14, 3, 3, (1, 1), (1, 1, 1, 1)), 32, 2), // `ours` conv3
            (ConvGeom::new(5, 9, 7, 3, 2, (2, 1), (1, 0, 2, 1)), 7, 2),
            (ConvGeom::new(70, 6, 6, 3, 3, (2, 2), (1, 1, 1, 1)), 3, 3),
            (ConvGeom::new(3, 5, 5, 1, 1, (1, 1), (0, 0, 0, 0)), 1, 1),
            (ConvGeom::new(16, 8, 8, 2, 2, (2, 2), (0, 0, 0, 0)), 20, 7),
        ];
        for (seed, (g, oc, count)) in cases.into_iter().enumerate() {
            let w = filled(oc * g.col_rows(), seed as u32 * 3 + 1);
            let dy = filled(count * oc * g.out_plane(), seed as u32 * 3 + 2);
            let start = filled(count * g.in_len(), seed as u32 * 3 + 3);
            let mut want = start.clone();
            for (dyi, dxi) in dy.chunks_exact(oc * g.out_plane()).zip(want.chunks_exact_mut(g.in_len())) {
                conv_backward_input_ref(&g, oc, &w, dyi, dxi);
            }
            let mut got = start.clone();
            let mut s = ScatterScratch::default();
            ScatterInputGrad::new(&g, oc, &w).accumulate(&dy, &mut got, Crop::full(&g), &mut s);
            // Twice with the same scratch: no state leaks from one call to the next.
            let mut again = start;
            ScatterInputGrad::new(&g, oc, &w).accumulate(&dy, &mut again, Crop::full(&g), &mut s);
            assert_eq!(got, again, "{g:?}");
            let taps = (oc * g.kh * g.kw) as f32;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                // Each value: at most OC*KH*KW products of values under 1, summed in another
                // order; the rounding is bounded by that many ulps of the largest partial sum.
                assert!(
                    (a - b).abs() <= 4.0 * taps * f32::EPSILON * (1.0 + b.abs()),
                    "{g:?} at {i}: {a} vs {b}"
                );
            }
        }
    }
}

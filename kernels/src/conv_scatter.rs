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
//! The output gradients are packed once per call in tiles of `PB` positions, `[OC, PB]` each
//! (`pack`; again for a last block of channels with another `PB`), so that the loop over `o`
//! reads one stream of broadcasts and one of weights, with no index to check. In
//! `dy[G, OC, OH*OW]` as it comes, a tile's values for one `o` are `PB` scattered values (a
//! tile may span output rows and images), `OH*OW` apart from the next `o`'s.
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

use crate::conv_direct::{add_channels_last, padded_dims};
use crate::im2col::{ConvGeom, Crop};
use crate::simd::{Fx, LANES};

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
    /// Per output position in `crop`: where its channel-0 value is in `dys`.
    sources: Vec<usize>,
    /// Per output position: where its window starts in `dxt` (in positions).
    targets: Vec<usize>,
    /// `dy` packed for the sums' tile: per block of `PB` positions, `[OC, PB]` (see
    /// `pack`); `packed` is the `PB` it holds, 0 for none yet.
    dyb: Vec<f32>,
    packed: usize,
    /// The group's padded, channels-last input gradient for one block of channels, `NV`
    /// vectors a position.
    dxt: Vec<Fx>,
    /// One input row of it, transposed to `[channels, W]` (`add_channels_last`).
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
        let (rows, cols) = (crop.rows.min(g.oh), crop.cols.min(g.ow));
        s.sources.clear();
        s.targets.clear();
        for j in 0..count {
            for oh in 0..rows {
                for ow in 0..cols {
                    s.sources.push(j * oc * plane + oh * g.ow + ow);
                    s.targets.push(j * hp * wp + oh * g.stride_h * wp + ow * g.stride_w);
                }
            }
        }
        s.packed = 0;

        let mut wt = &self.wt[..];
        for c0 in (0..g.c).step_by(MAX_NV * LANES) {
            let nv = (g.c - c0).min(MAX_NV * LANES).div_ceil(LANES);
            let (block_wt, rest) = wt.split_at(g.kh * g.kw * oc * nv);
            wt = rest;
            s.dxt.clear();
            s.dxt.resize(count * hp * wp * nv, Fx::splat(0.0));
            // NV x PB sums: 24 of AVX-512's 32 registers, 12 of AVX2's 16.
            #[cfg(target_feature = "avx512f")]
            match nv {
                4 => self.block::<4, 6>(block_wt, dys, s),
                3 => self.block::<3, 8>(block_wt, dys, s),
                2 => self.block::<2, 8>(block_wt, dys, s),
                _ => self.block::<1, 8>(block_wt, dys, s),
            }
            #[cfg(not(target_feature = "avx512f"))]
            match nv {
                2 => self.block::<2, 6>(block_wt, dys, s),
                _ => self.block::<1, 8>(block_wt, dys, s),
            }
            // The interior of dxt[G, HP, WP, NV*LANES], added into dx[G, C, H, W].
            let (width, channels) = (nv * LANES, (g.c - c0).min(nv * LANES));
            add_channels_last(g, bytemuck::cast_slice(&s.dxt), width, (c0, channels), dxs, &mut s.rowt);
        }
    }

    /// Adds every tap's contributions of one block of `NV` vectors of channels, whose weights
    /// are `wt` (per tap, `[OC, NV]` vectors), into `s.dxt[G*HP*WP, NV]`, `PB` positions at a
    /// time.
    fn block<const NV: usize, const PB: usize>(&self, wt: &[Fx], dys: &[f32], s: &mut ScatterScratch) {
        let (g, oc) = (&self.g, self.oc);
        if s.packed != PB {
            pack(dys, &s.sources, oc, g.out_plane(), PB, &mut s.dyb);
            s.packed = PB;
        }
        let (_, wp) = padded_dims(g);
        for (t, wt_t) in wt.chunks_exact(oc * NV).enumerate() {
            let off = (t / g.kw) * wp + t % g.kw;
            // A short last tile's missing positions have zero gradients; their sums are not added.
            for (dy_tile, targets) in s.dyb.chunks_exact(oc * PB).zip(s.targets.chunks(PB)) {
                let acc = sums::<NV, PB>(wt_t, dy_tile);
                for (&target, acc_p) in targets.iter().zip(&acc) {
                    let d = &mut s.dxt[(target + off) * NV..][..NV];
                    for (dv, a) in d.iter_mut().zip(acc_p) {
                        *dv += *a;
                    }
                }
            }
        }
    }
}

/// Packs the output gradients of the positions whose channel-0 values are at `sources` in
/// `dys[G, OC, OH*OW]` for tiles of `pb` positions: `dyb[k][o][i] = dy[o]` of position
/// `k*pb + i`, zero past the last position. One tile's values for one channel are then `pb`
/// consecutive values, read in order as the sums run over the channels, as a GEMM packs its
/// panels.
///
/// Channel by channel, so that `dys` is read along its rows: tile by tile instead, each tile
/// reads a few values from each of `OC` rows, a pattern the hardware prefetchers do not
/// follow, and with `dys` in L3 (a batch's output gradients) that made the packing a quarter
/// of the layer's input gradient (AMD EPYC, Zen 3, 2026-12-01, `perf record`).
fn pack(dys: &[f32], sources: &[usize], oc: usize, plane: usize, pb: usize, dyb: &mut Vec<f32>) {
    // Every value is written below but a short last tile's missing positions: only that tile
    // is zeroed.
    let len = sources.len().div_ceil(pb) * oc * pb;
    dyb.resize(len, 0.0);
    if !sources.len().is_multiple_of(pb) {
        dyb[len - oc * pb..].fill(0.0);
    }
    for o in 0..oc {
        let row = o * plane;
        for (tile, at) in dyb.chunks_exact_mut(oc * pb).zip(sources.chunks(pb)) {
            for (d, &source) in tile[o * pb..][..pb].iter_mut().zip(at) {
                *d = dys[source + row];
            }
        }
    }
}

/// `acc[i][v] = sum_o dy[o][i] * wt[o][v]` for a tile of `PB` positions, `dyb[OC, PB]`, and
/// `NV` vectors of channels, `wt[OC, NV]`: per channel `o`, `NV` weight loads and `PB`
/// broadcasts for `NV x PB` FMAs. Iterating over the two packed slices together leaves no
/// index to check in the loop.
#[inline(always)]
fn sums<const NV: usize, const PB: usize>(wt: &[Fx], dyb: &[f32]) -> [[Fx; NV]; PB] {
    let mut acc = [[Fx::splat(0.0); NV]; PB];
    let step = |acc: &mut [[Fx; NV]; PB], w_o: &[Fx], d_o: &[f32]| {
        let w: [Fx; NV] = std::array::from_fn(|v| w_o[v]);
        for (acc_p, &d) in acc.iter_mut().zip(d_o) {
            let d = Fx::splat(d);
            for (a, &wv) in acc_p.iter_mut().zip(&w) {
                *a = wv.mul_add(d, *a);
            }
        }
    };
    // Two channels a turn: half the loop's counting and branching, which on Intel cores
    // competes with the FMAs for ports 0 and 5.
    let (w2, d2) = (wt.chunks_exact(2 * NV), dyb.chunks_exact(2 * PB));
    let (w_last, d_last) = (w2.remainder(), d2.remainder());
    for (w, d) in w2.zip(d2) {
        step(&mut acc, &w[..NV], &d[..PB]);
        step(&mut acc, &w[NV..], &d[PB..]);
    }
    if !w_last.is_empty() {
        step(&mut acc, w_last, d_last);
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

//! Implicit-GEMM convolution: the GEMMs of im2col (`y = w * col`, `dw += dy * col^T`),
//! computed without building `col`.
//!
//! im2col + GEMM copies every input value `KH*KW` times into the column matrix, and the GEMM
//! then copies (packs) it once more; on small planes with many channels (write-up E's second
//! convolution: 64 channels of 14x14, 4x4 kernel) those copies cost a third of the layer. Here
//! the output channels run along the SIMD lanes and each input value is broadcast straight from
//! the (padded) image:
//!
//! ```text
//! for a block of PB output positions p (any positions, of any images of the group):
//!     acc[p][oc] = b[oc]                                  (PB x NV vectors of accumulators)
//!     for each tap t = (c, kh, kw):
//!         acc[p][..] += x[base(p) + off(t)] * wt[t][..]   (one broadcast, NV vector FMAs)
//!     y[image(p), oc, pos(p)] = acc[p][oc]
//! ```
//!
//! with `base(p) = image*C*HP*WP + oh*SH*WP + ow*SW` in the zero-padded input `xp[G, C, HP, WP]`
//! and `off(c, kh, kw) = c*HP*WP + kh*WP + kw`. The weights are transposed once per call
//! (`wt[C*KH*KW, OC]`, lanes past `OC` zero), so each tap's `NV` weight vectors are one
//! contiguous load. Every output position is computed alone, so strides, padding and images
//! mixed in one block cost nothing extra, and no work is wasted on padding columns.
//!
//! The backward passes use the same idea: [`WeightGrad`] keeps one kernel row's taps x
//! channel vectors in registers and broadcasts the input while it runs over the positions,
//! and [`ImplicitInputGrad`] is the forward kernel on turned weights (stride 1).
//!
//! # Why the same loops reach a smaller share of an Intel core's peak than of an AMD one's
//! An Intel Xeon core since Skylake-SP has two 512-bit FMA ports (0 and 5); AMD's Zen 4 runs a
//! 512-bit FMA as two 256-bit halves, one per cycle. At the same clock the Xeon does twice the
//! FLOPs per cycle, so every load, every byte from L2 and every scalar instruction costs twice
//! as large a share of its peak, and its scalar instructions (counting, addresses, bounds
//! checks) compete with the FMAs for ports 0 and 5, where Zen 4 has separate integer pipes.
//! Measured on a Xeon (232 GFLOP/s a core, 2026-11-30), write-up E's conv2 forward went from
//! 152-159 to 166-172 GFLOP/s when the bounds of a kernel row were checked once per block
//! instead of once per position (`Block::accumulate`'s `windows`), and its weight gradient
//! from 114-121 to 141-159 when the output gradients stayed in L1 (`POSITIONS_PER_PASS`).
//! Keeping the forward's weights in L1 (passes of a few input channels over all positions)
//! made it slower on the same Xeon (128-148): it is not bound by L2 there. Nor did halving the
//! weights read per multiply-add help: blocks of 32 channels by 12 positions (`NV = 2, PB = 12`)
//! ran at 138-142 GFLOP/s against 143-153 for 64 by 6, alternated three times (2026-11-30).
//!
//! # Aligned vectors
//! A 512-bit load is one cache line only when its address is a multiple of 64; a `Vec<f32>`
//! is aligned to 4 bytes, and the allocator hands out large blocks 16 bytes past a page, so
//! every weight vector read from one spanned two lines (a split load, which costs an Intel
//! core two of its load slots and a split buffer). The weights, the transposed output
//! gradients and the weight-gradient sums are therefore `Vec<Fx>`, whose elements are
//! 64-byte aligned, viewed as `f32` (`bytemuck`) only where they are laid out. The same bits,
//! and on the Xeon above (2026-11-30, criterion, alternated three times, peak 221-231) E's conv2
//! forward went from 152-156 to 165-170 GFLOP/s, and `ours`' 3x3 layers gained 9-18% in every
//! pass (`results/speed/xeon-kernels/aligned.txt`). The scatter's weights and its padded
//! gradient buffer are aligned the same way.
//!
//! Reference twins: [`crate::conv_direct::conv_forward_ref`] (plus the bias),
//! [`crate::conv_direct::conv_backward_weights_ref`] and
//! [`crate::conv_direct::conv_backward_input_ref`], which the tests compare against.

use crate::conv_direct::{pad_into, padded_dims};
use crate::im2col::{ConvGeom, Crop};
use crate::simd::{transpose, Fx, LANES};

/// Vectors of output channels in one block of the forward's accumulators (64 channels with
/// AVX-512, 16 with 8 lanes), `NV x PB` of them in registers; the weight gradient's blocks are
/// [`grad_vectors`]' (AVX-512: this many).
#[cfg(target_feature = "avx512f")]
const MAX_NV: usize = 4;
#[cfg(not(target_feature = "avx512f"))]
const MAX_NV: usize = 2;

/// Vectors of output channels per block of the weight gradient, whose loop keeps a kernel
/// row's `KW x NV` sums, `NV` output-gradient vectors and one broadcast input in registers.
///
/// An FMA's result is ready 4 cycles after it starts (AMD Zen 3 and 4, Intel since Skylake),
/// and a core starts two a cycle, so a loop needs 8 independent sums to keep both FMA units
/// busy; each sum here takes one FMA per output position, one after the other. With AVX-512's
/// 32 registers, 4 vectors give `4 KW` sums (4 to 20). Builds without AVX-512 (AVX2) have 16
/// registers, so `KW x NV + NV + 1 <= 16`: at a fixed 2 vectors a kernel row of 3 taps had only
/// 6 sums and one of 4 taps 8, no slack at all; the widest `NV` that fits, up to the 4 that
/// `GradBlock::run` takes, gives 9 to 12 for rows of 3 to 5 taps (AMD EPYC Zen 3, 2026-12-01:
/// E conv2's weight gradient 53% -> 60% of the measured peak, README "Performance").
#[cfg(target_feature = "avx512f")]
fn grad_vectors(_kw: usize) -> usize {
    MAX_NV
}
#[cfg(not(target_feature = "avx512f"))]
fn grad_vectors(kw: usize) -> usize {
    match kw {
        1 | 2 => 4,
        3 | 4 => 3,
        _ => 2,
    }
}

/// Output positions per pass of the weight gradient over the kernel rows: 64 positions' output
/// gradients are 16 KiB at 64 channels, so they stay in L1 (32 KiB on AMD Zen 4, 48 KiB on
/// Intel's Golden Cove cores) while all `C*KH` kernel rows run over them. A pass over all of a
/// group's positions (495 KiB for write-up E's conv2) is re-read from L2 for every kernel row,
/// 32 bytes per cycle at two 512-bit FMAs per cycle: more than an Intel core's L2 sustains.
const POSITIONS_PER_PASS: usize = 64;

/// The widest kernel row the specialised loops handle; [`supports`] says which layers qualify.
const MAX_KW: usize = 5;

/// Whether [`ImplicitConv`] handles this geometry: kernel rows of at most `MAX_KW` (5) taps.
pub fn supports(g: &ConvGeom) -> bool {
    (1..=MAX_KW).contains(&g.kw)
}

/// One layer's weights, transposed for the implicit GEMM, and the geometry they go with.
pub struct ImplicitConv {
    g: ConvGeom,
    oc: usize,
    /// Per block of up to `MAX_NV * LANES` output channels: `wt[C*KH*KW, NV*LANES]`, the lanes
    /// past `OC` zero. Blocks follow each other. Held as vectors, so every weight load is one
    /// 64-byte-aligned line (see "Aligned vectors" in the module docs).
    wt: Vec<Fx>,
}

/// Reusable buffers of one thread: the group's padded input and each position's offsets.
#[derive(Default)]
pub struct ImplicitScratch {
    xp: Vec<f32>,
    /// Per output position of the group: where its window starts in `xp`, and where its
    /// channel-0 output goes in `ys`.
    at: Vec<(usize, usize)>,
    /// The weight gradient's transposed output gradients, `OC.div_ceil(LANES)` vectors a
    /// position.
    dyt: Vec<Fx>,
}

impl ImplicitConv {
    /// Prepares the weights `w[OC, C, KH, KW]` of a layer with geometry `g`.
    ///
    /// # Panics
    /// When `w` has the wrong length or the geometry is not [`supports`]ed.
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Self {
        let taps = g.col_rows();
        assert_eq!(
            w.len(),
            oc * taps,
            "conv_implicit: w has {} values, needs OC*C*KH*KW = {}",
            w.len(),
            oc * taps
        );
        assert!(supports(g), "conv_implicit: kernel width {} is outside 1..={MAX_KW}", g.kw);
        let mut wt = vec![Fx::splat(0.0); oc.div_ceil(LANES) * taps];
        let values: &mut [f32] = bytemuck::cast_slice_mut(&mut wt);
        for o0 in (0..oc).step_by(MAX_NV * LANES) {
            let width = (oc - o0).min(MAX_NV * LANES).next_multiple_of(LANES);
            let rows = (oc - o0).min(width);
            // Tiled (`simd::transpose`): done value by value down the taps it costs more than
            // one image's convolution (a cache miss per value).
            transpose(
                &w[o0 * taps..(o0 + rows) * taps],
                rows,
                taps,
                &mut values[o0 * taps..(o0 + width) * taps],
                width,
            );
        }
        ImplicitConv { g: *g, oc, wt }
    }

    /// Whether these are weights for a layer of geometry `g` with `oc` filters.
    pub fn fits(&self, g: &ConvGeom, oc: usize) -> bool {
        self.g == *g && self.oc == oc
    }

    /// `ys[G, OC, OH*OW] = w (*) xs + b` for the images `xs[G, C, H, W]`: the outputs in
    /// `crop` are written, the others left as they are.
    pub fn forward(&self, xs: &[f32], b: &[f32], ys: &mut [f32], crop: Crop, s: &mut ImplicitScratch) {
        assert_eq!(b.len(), self.oc, "conv_implicit: bias has {} values for {} channels", b.len(), self.oc);
        self.run(xs, Some(b), ys, crop, s);
    }

    /// `ys[G, OC, OH*OW] += w (*) xs` (no bias), every output.
    pub fn accumulate(&self, xs: &[f32], ys: &mut [f32], s: &mut ImplicitScratch) {
        self.run(xs, None, ys, Crop::full(&self.g), s);
    }

    /// Overwrites the outputs in `crop` with the convolution plus `b`, or adds the convolution
    /// when `b` is `None`.
    fn run(&self, xs: &[f32], b: Option<&[f32]>, ys: &mut [f32], crop: Crop, s: &mut ImplicitScratch) {
        let g = &self.g;
        let out_len = self.oc * g.out_plane();
        if out_len == 0 {
            return;
        }
        assert_eq!(ys.len() % out_len, 0, "conv_implicit: ys is not whole output images");
        let count = ys.len() / out_len;
        let (xp, at) = positions(g, self.oc, xs, count, crop, s);
        let taps = g.col_rows();
        let mut o0 = 0;
        let mut wt = &self.wt[..];
        while o0 < self.oc {
            let nv = (self.oc - o0).min(MAX_NV * LANES).div_ceil(LANES);
            let (wt_block, rest) = wt.split_at(taps * nv);
            let block =
                Block { g, xp, wt: wt_block, b: b.map(|b| &b[o0..]), o0, oc: self.oc, plane: g.out_plane() };
            // NV x PB accumulators: 24 of AVX-512's 32 registers; at most 12 of AVX2's 16.
            #[cfg(target_feature = "avx512f")]
            match nv {
                4 => block.run::<4, 6>(at, ys),
                3 => block.run::<3, 8>(at, ys),
                2 => block.run::<2, 8>(at, ys),
                _ => block.run::<1, 8>(at, ys),
            }
            #[cfg(not(target_feature = "avx512f"))]
            match nv {
                4 => block.run::<4, 3>(at, ys),
                3 => block.run::<3, 4>(at, ys),
                2 => block.run::<2, 6>(at, ys),
                _ => block.run::<1, 8>(at, ys),
            }
            wt = rest;
            o0 += nv * LANES;
        }
    }
}

/// Lays out a group of `count` images for the implicit loops: returns the zero-padded input
/// `xp[G, C, HP, WP]` (`xs` itself when the layer has no padding) and fills `s.at` with each
/// output position's window start in it and its channel-0 index in `[G, OC, OH*OW]`, for the
/// positions in `crop`.
fn positions<'a>(
    g: &ConvGeom,
    oc: usize,
    xs: &'a [f32],
    count: usize,
    crop: Crop,
    s: &'a mut ImplicitScratch,
) -> (&'a [f32], &'a [(usize, usize)]) {
    assert_eq!(xs.len(), count * g.in_len(), "conv_implicit: xs has {} values for {count} images", xs.len());
    let (hp, wp) = padded_dims(g);
    let plane = g.out_plane();
    s.at.clear();
    for j in 0..count {
        for oh in 0..crop.rows.min(g.oh) {
            for ow in 0..crop.cols.min(g.ow) {
                let base = j * g.c * hp * wp + oh * g.stride_h * wp + ow * g.stride_w;
                s.at.push((base, j * oc * plane + oh * g.ow + ow));
            }
        }
    }
    if g.pad_top + g.pad_bottom + g.pad_left + g.pad_right == 0 {
        return (xs, &s.at);
    }
    // No zeroing: `pad_into` writes every value of each image, an empty one (H or W of 0)
    // included, whose padded image is all zeros.
    let (in_len, padded) = (g.in_len(), g.c * hp * wp);
    s.xp.resize(count * padded, 0.0);
    for j in 0..count {
        pad_into(g, &xs[j * in_len..][..in_len], &mut s.xp[j * padded..][..padded], 0);
    }
    (&s.xp, &s.at)
}

/// One block of output channels `o0..o0 + NV*LANES` over all positions of the group.
struct Block<'a> {
    g: &'a ConvGeom,
    xp: &'a [f32],
    wt: &'a [Fx],
    /// Biases from channel `o0` on; `None`: add into `ys` instead of overwriting it.
    b: Option<&'a [f32]>,
    o0: usize,
    oc: usize,
    plane: usize,
}

impl Block<'_> {
    fn run<const NV: usize, const PB: usize>(&self, at: &[(usize, usize)], ys: &mut [f32]) {
        match self.g.kw {
            1 => self.run_kw::<NV, PB, 1>(at, ys),
            2 => self.run_kw::<NV, PB, 2>(at, ys),
            3 => self.run_kw::<NV, PB, 3>(at, ys),
            4 => self.run_kw::<NV, PB, 4>(at, ys),
            _ => self.run_kw::<NV, PB, 5>(at, ys),
        }
    }

    fn run_kw<const NV: usize, const PB: usize, const KW: usize>(
        &self,
        at: &[(usize, usize)],
        ys: &mut [f32],
    ) {
        debug_assert_eq!(self.g.kw, KW);
        let lanes = (self.oc - self.o0).min(NV * LANES);
        let bias: [Fx; NV] = std::array::from_fn(|v| {
            Fx::from(std::array::from_fn::<f32, LANES, _>(|l| {
                self.b.and_then(|b| b.get(v * LANES + l)).copied().unwrap_or(0.0)
            }))
        });
        for chunk in at.chunks(PB) {
            // A short last block repeats its last position; those results are not stored.
            let bases: [usize; PB] = std::array::from_fn(|i| chunk[i.min(chunk.len() - 1)].0);
            let acc = self.accumulate::<NV, PB, KW>(&bases, bias);
            for (&(_, out), acc_p) in chunk.iter().zip(&acc) {
                for (v, a) in acc_p.iter().enumerate() {
                    let values = a.as_array().iter().take(lanes.saturating_sub(v * LANES));
                    for (l, &value) in values.enumerate() {
                        let y = &mut ys[out + (self.o0 + v * LANES + l) * self.plane];
                        *y = if self.b.is_some() { value } else { *y + value };
                    }
                }
            }
        }
    }

    /// The sums of `PB` positions whose windows start at `bases` in `xp`, for `NV` vectors of
    /// channels, started from `bias`.
    ///
    /// Never inlined, so that its loop compiles the same way in every build. Inlined into
    /// `run`, the same source built once to a loop that keeps the sums in registers (117
    /// instructions a kernel row of three taps at 64 channels) and, after an unrelated edit
    /// elsewhere in the crate, to one that stored all 24 sums to the stack every row (189
    /// instructions, 73 of them stack accesses): `pb`'s training step (README, "Other shapes
    /// of the network") ran at 662-787 img/s instead of 828-926 at one thread (Intel Xeon,
    /// 2026-11-30, alternated three times). Out of line, both builds ran at 851-908. The call
    /// costs nothing measurable: one per block of `PB` positions, thousands of multiply-adds.
    #[inline(never)]
    fn accumulate<const NV: usize, const PB: usize, const KW: usize>(
        &self,
        bases: &[usize; PB],
        bias: [Fx; NV],
    ) -> [[Fx; NV]; PB] {
        let g = self.g;
        let (hp, wp) = padded_dims(g);
        let mut acc = [bias; PB];
        if g.c == 0 {
            return acc;
        }
        // Each position's whole window, `span` values from its start: all of them have the same
        // length, so the compiler checks a row's bounds once for the block, not once per position.
        let span = (g.c - 1) * hp * wp + (g.kh - 1) * wp + KW;
        let windows: [&[f32]; PB] = std::array::from_fn(|i| &self.xp[bases[i]..bases[i] + span]);
        // Weights of one kernel row: KW taps of NV vectors.
        let mut rows = self.wt.chunks_exact(KW * NV);
        for c in 0..g.c {
            for kh in 0..g.kh {
                let off = c * hp * wp + kh * wp;
                let x: [&[f32]; PB] = std::array::from_fn(|i| &windows[i][off..off + KW]);
                let w_row = rows.next().expect("one weight row per (c, kh)");
                for kw in 0..KW {
                    let w: [Fx; NV] = std::array::from_fn(|v| w_row[kw * NV + v]);
                    for (acc_p, x_p) in acc.iter_mut().zip(&x) {
                        let xv = Fx::splat(x_p[kw]);
                        for (a, &wv) in acc_p.iter_mut().zip(&w) {
                            *a = wv.mul_add(xv, *a);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// The input gradient of a stride-1 convolution by implicit GEMM: the convolution of `dy` with
/// the weights turned 180 degrees and their channel axes swapped (derived in
/// [`crate::conv_direct::InputGrad`]), added into `dx`.
pub struct ImplicitInputGrad(ImplicitConv);

impl ImplicitInputGrad {
    /// Prepares the input gradient of the layer `g` with weights `w[OC, C, KH, KW]`; `None`
    /// when it is not a plain convolution (stride other than 1, padding as wide as the kernel)
    /// or the kernel is too wide for [`ImplicitConv`].
    pub fn new(g: &ConvGeom, oc: usize, w: &[f32]) -> Option<Self> {
        let (gt, wt) = crate::conv_direct::transposed(g, oc, w)?;
        supports(&gt).then(|| ImplicitInputGrad(ImplicitConv::new(&gt, g.c, &wt)))
    }

    /// `dxs[G, C, H, W] += w^T (*) dys` for a group of images' output gradients `dys[G, OC, OH, OW]`.
    pub fn accumulate(&self, dys: &[f32], dxs: &mut [f32], s: &mut ImplicitScratch) {
        self.0.accumulate(dys, dxs, s);
    }
}

/// Weight gradient by implicit GEMM: `dw[OC, C*KH*KW] += sum_p dy[o, p] * x[base(p) + off(t)]`
/// over every output position `p` of the images `xs[G, C, H, W]`, with `dys[G, OC, OH*OW]`.
/// A layer that adds several groups keeps one [`WeightGrad`] instead.
pub fn weight_grad(
    g: &ConvGeom,
    oc: usize,
    xs: &[f32],
    dys: &[f32],
    dw: &mut [f32],
    s: &mut ImplicitScratch,
) {
    let mut acc = WeightGrad::new(g, oc);
    acc.add(xs, dys, Crop::full(g), s);
    acc.finish(dw);
}

/// Weight-gradient sums over groups of images, in the kernels' layout: per block of channels,
/// `dwt[C*KH*KW, NV*LANES]` in blocks of `grad_vectors` vectors (laid out as
/// [`ImplicitConv`]'s weights, whose blocks may be narrower). The output gradients are
/// transposed once per group (`dyT[p, OC]`, each row whole vectors) so that each position's
/// channels are vectors; the `KW` taps of one kernel row times `NV` channel vectors stay in registers while
/// the loop runs over a slice of `POSITIONS_PER_PASS` positions, so each value of `dwt` is
/// one running sum over the groups' positions in order. [`WeightGrad::finish`] adds the
/// transpose into a layer's `dw[OC, C*KH*KW]` once.
pub struct WeightGrad {
    g: ConvGeom,
    oc: usize,
    /// `dwt[C*KH*KW, NV*LANES]` per block of channels, as vectors (aligned, as `wt`).
    dwt: Vec<Fx>,
}

impl WeightGrad {
    /// Zero sums for the layer `g` with `oc` output channels.
    ///
    /// # Panics
    /// When the geometry is not [`supports`]ed.
    pub fn new(g: &ConvGeom, oc: usize) -> Self {
        assert!(supports(g), "conv_implicit: kernel width {} is outside 1..={MAX_KW}", g.kw);
        WeightGrad { g: *g, oc, dwt: vec![Fx::splat(0.0); g.col_rows() * oc.div_ceil(LANES)] }
    }

    /// Zero sums for the layer `g` with `oc` output channels, in this buffer (a thread keeps
    /// one across layers and batches).
    pub fn reset(&mut self, g: &ConvGeom, oc: usize) {
        assert!(supports(g), "conv_implicit: kernel width {} is outside 1..={MAX_KW}", g.kw);
        (self.g, self.oc) = (*g, oc);
        self.dwt.clear();
        self.dwt.resize(g.col_rows() * oc.div_ceil(LANES), Fx::splat(0.0));
    }

    /// Adds the gradient of the images `xs[G, C, H, W]` with output gradients `dys[G, OC, OH*OW]`,
    /// which are zero outside `crop`.
    pub fn add(&mut self, xs: &[f32], dys: &[f32], crop: Crop, s: &mut ImplicitScratch) {
        let (g, oc) = (&self.g, self.oc);
        let (plane, taps) = (g.out_plane(), g.col_rows());
        let out_len = oc * plane;
        if out_len == 0 || taps == 0 {
            return;
        }
        assert_eq!(dys.len() % out_len, 0, "conv_implicit: dys is not whole output images");
        let count = dys.len() / out_len;
        let mut dyt = std::mem::take(&mut s.dyt);
        let (xp, at) = positions(g, oc, xs, count, crop, s);
        // dy[G, OC, P] -> dyT[G*P, OC] (tiled, image by image), in rows of whole vectors; the
        // lanes past OC are the only values the transpose does not write, so they are zeroed
        // only when there are some.
        let row_vectors = oc.div_ceil(LANES);
        if !oc.is_multiple_of(LANES) {
            dyt.clear();
        }
        dyt.resize(count * plane * row_vectors, Fx::splat(0.0));
        let rows: &mut [f32] = bytemuck::cast_slice_mut(&mut dyt);
        for (dyj, out) in dys.chunks_exact(out_len).zip(rows.chunks_exact_mut(plane * row_vectors * LANES)) {
            transpose(dyj, oc, plane, out, row_vectors * LANES);
        }
        if !crop.is_full(g) {
            // Only the rows of the positions in `crop`, in `at`'s order: position `k`'s row
            // moves down to row `k` (a source is never before its destination).
            for (k, &(_, out)) in at.iter().enumerate() {
                let from = ((out / out_len) * plane + out % out_len) * row_vectors;
                dyt.copy_within(from..from + row_vectors, k * row_vectors);
            }
        }
        dyt.truncate(at.len() * row_vectors);
        let block_vectors = grad_vectors(g.kw);
        for o0 in (0..oc).step_by(block_vectors * LANES) {
            let nv = (oc - o0).min(block_vectors * LANES).div_ceil(LANES);
            let block = GradBlock { g, xp, at, dyt: &dyt, row_vectors, v0: o0 / LANES };
            let dwt = &mut self.dwt[o0 / LANES * taps..(o0 / LANES + nv) * taps];
            match nv {
                4 => block.run::<4>(dwt),
                3 => block.run::<3>(dwt),
                2 => block.run::<2>(dwt),
                _ => block.run::<1>(dwt),
            }
        }
        s.dyt = dyt;
    }

    /// `dw[OC, C*KH*KW] +=` the sums so far ([`WeightGrad::reset`] starts new ones).
    pub fn finish(&mut self, dw: &mut [f32]) {
        let (oc, taps) = (self.oc, self.g.col_rows());
        assert_eq!(dw.len(), oc * taps, "conv_implicit: dw has {} values, needs {}", dw.len(), oc * taps);
        if dw.is_empty() {
            return;
        }
        let sums: &[f32] = bytemuck::cast_slice(&self.dwt);
        let block_vectors = grad_vectors(self.g.kw);
        for o0 in (0..oc).step_by(block_vectors * LANES) {
            let width = (oc - o0).min(block_vectors * LANES).next_multiple_of(LANES);
            let block = &sums[o0 * taps..(o0 + width) * taps];
            // Row by row of `dw`: its writes stay contiguous, the reads stride by `width`.
            for (o, dw_o) in dw[o0 * taps..].chunks_exact_mut(taps).take(width.min(oc - o0)).enumerate() {
                for (d, sums) in dw_o.iter_mut().zip(block.chunks_exact(width)) {
                    *d += sums[o];
                }
            }
        }
    }
}

/// One block of `NV*LANES` output channels of the weight gradient, over one group.
struct GradBlock<'a> {
    g: &'a ConvGeom,
    xp: &'a [f32],
    at: &'a [(usize, usize)],
    /// `dyT[p, OC]` of all channels, `row_vectors` vectors a position; this block's are
    /// `v0..v0 + NV` of each.
    dyt: &'a [Fx],
    row_vectors: usize,
    v0: usize,
}

impl GradBlock<'_> {
    /// Adds into this block's `dwt[C*KH*KW, NV*LANES]`.
    fn run<const NV: usize>(&self, dwt: &mut [Fx]) {
        match self.g.kw {
            1 => self.run_kw::<NV, 1>(dwt),
            2 => self.run_kw::<NV, 2>(dwt),
            3 => self.run_kw::<NV, 3>(dwt),
            4 => self.run_kw::<NV, 4>(dwt),
            _ => self.run_kw::<NV, 5>(dwt),
        }
    }

    fn run_kw<const NV: usize, const KW: usize>(&self, dwt: &mut [Fx]) {
        let g = self.g;
        let (hp, wp) = padded_dims(g);
        // Positions in slices of `POSITIONS_PER_PASS`, so that a slice's output gradients stay
        // in L1 while every kernel row runs over them; each kernel row `(c, kh)` starts at
        // `c*HP*WP + kh*WP` of each window, and its sums are the `KW*NV*LANES` values of `dwt`
        // from `((c*KH + kh)*KW)*NV*LANES`, carried from slice to slice.
        let slices =
            self.at.chunks(POSITIONS_PER_PASS).zip(self.dyt.chunks(POSITIONS_PER_PASS * self.row_vectors));
        for (at, dyt) in slices {
            for (row, dwt_row) in dwt.chunks_exact_mut(KW * NV).enumerate() {
                let off = (row / g.kh) * hp * wp + (row % g.kh) * wp;
                let mut acc: [[Fx; NV]; KW] =
                    std::array::from_fn(|t| std::array::from_fn(|v| dwt_row[t * NV + v]));
                for (&(base, _), d) in at.iter().zip(dyt.chunks_exact(self.row_vectors)) {
                    let d = &d[self.v0..self.v0 + NV];
                    let dv: [Fx; NV] = std::array::from_fn(|v| d[v]);
                    let x: &[f32; KW] = self.xp[base + off..][..KW].try_into().expect("KW values");
                    for (acc_t, &xt) in acc.iter_mut().zip(x) {
                        let xv = Fx::splat(xt);
                        for (a, &dvv) in acc_t.iter_mut().zip(&dv) {
                            *a = dvv.mul_add(xv, *a);
                        }
                    }
                }
                for (sums, a) in dwt_row.iter_mut().zip(acc.iter().flatten()) {
                    *sums = *a;
                }
            }
        }
    }
}

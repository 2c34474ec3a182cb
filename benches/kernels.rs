//! Kernel benchmarks at the reference models' real shapes (the write-ups of
//! `fmnist::presets`).
//!
//! Units: compute-bound kernels (GEMM, convolution) report `Throughput::Elements(flops)`, so
//! the "elements/s" criterion prints *is* FLOP/s (one multiply-add counts as 2 FLOP). Memory-
//! bound kernels (im2col, col2im, max-pooling, one image's dense layer) report
//! `Throughput::Bytes` of the data they must move at least. Every input is allocated and
//! filled before the timed closure; the closure runs the kernel only.
//!
//! Everything here is single-threaded, as the kernels are: the layers parallelise over images
//! with rayon, so per-core figures are what to compare. The SIMD width compiled in is printed
//! first (`.cargo/config.toml` builds with `target-cpu=native`).
//!
//! Run: `cargo bench --bench kernels` (about three minutes), one group with a filter, e.g.
//! `cargo bench --bench kernels -- gemm/`, or `-- --quick` for a fast pass.
//!
//! Shapes (legend as in the kernels crate: OC filters, C channels, KHxKW kernel, OHxOW output):
//! - C1 conv: 1x28x28 input, 32 filters 3x3 valid -> 26x26; GEMM M=32, K=9, N=676 per image.
//! - E conv1: 1x28x28, 64 filters 4x4, 'same' pads (top 1, left 1, bottom 2, right 2) -> 28x28.
//! - E conv2: 64x14x14, 64 filters 4x4 valid -> 11x11; GEMM M=64, K=1024, N=121 per image.
//! - `ours` conv2-4: 3x3 'same' convolutions 32x28x28 -> 32, 32x14x14 -> 64, 64x14x14 -> 64.
//! - C1 dense: [512, 5408] x [5408, 128] for a batch of 512.
//! - One image through the first dense layer (vector times matrix): C1 5408 x 128, A/B
//!   10816 x 32, E 1600 x 256, the weights warm in cache as in a loop of single images; and a
//!   training batch through the same layers without packing (`rowsmat`) and as a GEMM.
//! - Max-pooling 2x2/2: C1 32x26x26 (batch 512); E 64x28x28 and 64x11x11 (batch 250).
//! - The backward behind a ReLU and 2x2/2 pool from the argmaxes alone (`conv_sparse`): E
//!   conv2, `ours` conv2 and conv4.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput};
use kernels::conv_direct::{conv_backward_weights, conv_forward, conv_forward_relu_pool2, InputGrad};
use kernels::conv_implicit::{ImplicitConv, ImplicitInputGrad, ImplicitScratch, WeightGrad};
use kernels::conv_scatter::{ScatterInputGrad, ScatterScratch};
use kernels::conv_sparse::{SparseConvGrad, SparseScratch, SparseSums};
use kernels::gemm::matmul;
use kernels::gemv::{rowsmat, vecmat};
use kernels::im2col::{col2im, im2col, ConvGeom, Crop};
use kernels::pool::{maxpool_backward, maxpool_forward, PoolGeom};
use kernels::Rng;

/// Images per timed call for the per-image convolution loops.
const CONV_BATCH: usize = 64;
/// Images per timed call for the (much heavier) E conv2 loops.
const CONV2_BATCH: usize = 16;

fn filled(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn gemm_flops(m: usize, k: usize, n: usize) -> u64 {
    2 * (m * k * n) as u64
}

fn c1_geom() -> ConvGeom {
    ConvGeom::new(1, 28, 28, 3, 3, (1, 1), (0, 0, 0, 0))
}
fn e_conv1_geom() -> ConvGeom {
    ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2))
}
fn e_conv2_geom() -> ConvGeom {
    ConvGeom::new(64, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0))
}

/// The `ours` preset's 3x3 'same' convolutions with more than one input channel.
fn ours_geoms() -> [(&'static str, ConvGeom, usize); 3] {
    let same = (1, 1, 1, 1);
    [
        ("ours_conv2_32x28x28_32x3x3_same", ConvGeom::new(32, 28, 28, 3, 3, (1, 1), same), 32),
        ("ours_conv3_32x14x14_64x3x3_same", ConvGeom::new(32, 14, 14, 3, 3, (1, 1), same), 64),
        ("ours_conv4_64x14x14_64x3x3_same", ConvGeom::new(64, 14, 14, 3, 3, (1, 1), same), 64),
    ]
}

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One `matmul` benchmark: `c[M, N] (+)= op(a) op(b)`, throughput in FLOP.
#[allow(clippy::too_many_arguments)]
fn bench_matmul(g: &mut Group, name: &str, ta: bool, tb: bool, m: usize, k: usize, n: usize, acc: bool) {
    let a = filled(m * k, 1);
    let b = filled(k * n, 2);
    let mut c = filled(m * n, 3);
    g.throughput(Throughput::Elements(gemm_flops(m, k, n)));
    g.bench_function(name, |bench| {
        bench.iter(|| matmul(ta, tb, m, k, n, black_box(&a), black_box(&b), black_box(&mut c), acc))
    });
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    // Convolution GEMMs, one image: y[OC, OH*OW] = w[OC, C*KH*KW] * col[C*KH*KW, OH*OW].
    bench_matmul(&mut g, "c1_conv_fwd_32x9x676", false, false, 32, 9, 676, false);
    bench_matmul(&mut g, "e_conv2_fwd_64x1024x121", false, false, 64, 1024, 121, false);
    // dw += dy col^T, then dcol = w^T dy.
    bench_matmul(&mut g, "e_conv2_dw_64x121x1024", false, true, 64, 121, 1024, true);
    bench_matmul(&mut g, "e_conv2_dcol_1024x64x121", true, false, 1024, 64, 121, false);
    // C1's dense layer for a batch of 512: forward and both backward products.
    bench_matmul(&mut g, "dense_fwd_512x5408x128", false, false, 512, 5408, 128, false); // y = x W
    bench_matmul(&mut g, "dense_dw_5408x512x128", true, false, 5408, 512, 128, true); // dW += x^T dy
    bench_matmul(&mut g, "dense_dx_512x128x5408", false, true, 512, 128, 5408, true); // dx += dy W^T
    g.finish();
}

/// One image through a dense layer's weights `w[K, N]` (`kernels::gemv::vecmat`), with the
/// share `zeros` of the inputs zero (their rows are skipped). Memory-bound: the throughput is
/// the weight bytes actually read, the rows of the non-zero inputs.
fn bench_vecmat(g: &mut Group, name: &str, k: usize, n: usize, zeros: f32) {
    let mut rng = Rng::new(4);
    let x: Vec<f32> =
        (0..k).map(|_| if rng.uniform(0.0, 1.0) < zeros { 0.0 } else { rng.uniform(0.0, 1.0) }).collect();
    let w = filled(k * n, 5);
    let mut y = vec![0.0; n];
    let kept = x.iter().filter(|&&v| v != 0.0).count();
    g.throughput(Throughput::Bytes((kept * n * 4) as u64));
    g.bench_function(name, |bench| bench.iter(|| vecmat(black_box(&x), black_box(&w), n, black_box(&mut y))));
}

/// A batch through a dense layer without packing (`kernels::gemv::rowsmat`), the dense
/// layer's forward when its width is whole SIMD vectors; compare `gemm/dense_fwd_*`.
fn bench_rowsmat(g: &mut Group, name: &str, m: usize, k: usize, n: usize) {
    let x = filled(m * k, 6);
    let w = filled(k * n, 7);
    let mut y = vec![0.0; m * n];
    g.throughput(Throughput::Elements(gemm_flops(m, k, n)));
    g.bench_function(name, |bench| {
        bench.iter(|| rowsmat(black_box(&x), black_box(&w), k, n, black_box(&mut y)))
    });
}

fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv");
    // The first dense layer of C1, A/B and E for one image: every input non-zero, and half.
    for (model, k, n) in [("c1", 5408, 128), ("ab", 10816, 32), ("e", 1600, 256)] {
        bench_vecmat(&mut g, &format!("{model}_dense_1x{k}x{n}"), k, n, 0.0);
        bench_vecmat(&mut g, &format!("{model}_dense_1x{k}x{n}_half_zero"), k, n, 0.5);
    }
    // A training batch through the same layers (FLOP/s), and the same as GEMMs; then the
    // input gradient dx[M, IN] += dy[M, OUT] w^T, by rowsmat on the transposed weights (the
    // transpose, once per step, not timed) against the GEMM the dense layer used before.
    for (model, m, k, n) in [("c1", 512, 5408, 128), ("ab", 512, 10816, 32), ("e", 250, 1600, 256)] {
        bench_rowsmat(&mut g, &format!("{model}_dense_{m}x{k}x{n}_rowsmat"), m, k, n);
        bench_matmul(&mut g, &format!("{model}_dense_{m}x{k}x{n}_gemm"), false, false, m, k, n, false);
        bench_rowsmat(&mut g, &format!("{model}_dense_dx_{m}x{n}x{k}_rowsmat"), m, n, k);
        bench_matmul(&mut g, &format!("{model}_dense_dx_{m}x{n}x{k}_gemm"), false, true, m, n, k, true);
    }
    g.finish();
}

fn im2col_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("im2col");
    for (name, geom) in [("c1_1x28x28_k3", c1_geom()), ("e_conv2_64x14x14_k4", e_conv2_geom())] {
        let x = filled(geom.in_len(), 4);
        let mut col = vec![0.0; geom.col_rows() * geom.out_plane()];
        // Bytes: read x once, write col once.
        g.throughput(Throughput::Bytes(4 * (x.len() + col.len()) as u64));
        g.bench_function(name, |b| b.iter(|| im2col(&geom, black_box(&x), black_box(&mut col))));
    }
    let geom = e_conv2_geom();
    let col = filled(geom.col_rows() * geom.out_plane(), 5);
    let mut x = vec![0.0; geom.in_len()];
    // Bytes: read col once, read-modify-write x.
    g.throughput(Throughput::Bytes(4 * (col.len() + 2 * x.len()) as u64));
    g.bench_function("col2im_e_conv2_64x14x14_k4", |b| {
        b.iter(|| col2im(&geom, black_box(&col), black_box(&mut x)))
    });
    g.finish();
}

/// Direct convolution of a batch of `n` images, one call per image (as a layer does), forward
/// and both backward passes (the input gradient prepared once, as a layer does per batch).
/// FLOP: `2 * OC * C*KH*KW * OH*OW` per image and pass.
fn bench_direct(g: &mut Group, name: &str, geom: ConvGeom, oc: usize, n: usize) {
    let (taps, plane) = (geom.col_rows(), geom.out_plane());
    let x = filled(n * geom.in_len(), 6); //   x[N, C, H, W]
    let w = filled(oc * taps, 7); //           w[OC, C, KH, KW]
    let dy = filled(n * oc * plane, 8); //     dy[N, OC, OH, OW]
    let mut y = vec![0.0; n * oc * plane]; //  y[N, OC, OH, OW]
    let mut dw = vec![0.0; oc * taps];
    let mut dx = vec![0.0; n * geom.in_len()];
    let mut scratch = Vec::new();
    g.throughput(Throughput::Elements(n as u64 * gemm_flops(oc, taps, plane)));
    g.bench_function(format!("direct_{name}_fwd"), |b| {
        b.iter(|| {
            for (xi, yi) in x.chunks_exact(geom.in_len()).zip(y.chunks_exact_mut(oc * plane)) {
                conv_forward(&geom, oc, black_box(xi), &w, yi, &mut scratch);
            }
        })
    });
    // Inference's fused kernel (convolution, bias, ReLU and 2x2/2 pool), the same FLOP count as
    // the forward above, which writes the full-size output that a bias pass and a pool then read.
    if geom.unit_stride() && geom.oh >= 2 && geom.ow >= 2 {
        let bias = filled(oc, 9);
        let pooled_len = oc * (geom.oh / 2) * (geom.ow / 2);
        let mut pooled = vec![0.0; n * pooled_len];
        g.bench_function(format!("direct_{name}_fwd_relu_pool2"), |b| {
            b.iter(|| {
                for (xi, yi) in x.chunks_exact(geom.in_len()).zip(pooled.chunks_exact_mut(pooled_len)) {
                    conv_forward_relu_pool2(&geom, oc, black_box(xi), &w, &bias, yi, None, &mut scratch);
                }
            })
        });
    }
    // The weight gradient takes a few images per call, as the layer groups them (src/ops/conv.rs).
    let group = ((1 << 18) / geom.in_len()).clamp(1, 16);
    g.bench_function(format!("direct_{name}_bwd_weights"), |b| {
        b.iter(|| {
            let groups = x.chunks(group * geom.in_len()).zip(dy.chunks(group * oc * plane));
            for (xs, dys) in groups {
                conv_backward_weights(&geom, oc, black_box(xs), dys, &mut dw, &mut scratch);
            }
        })
    });
    let input_grad = InputGrad::new(&geom, oc, &w);
    g.bench_function(format!("direct_{name}_bwd_input"), |b| {
        b.iter(|| {
            for (dxi, dyi) in dx.chunks_exact_mut(geom.in_len()).zip(dy.chunks_exact(oc * plane)) {
                input_grad.accumulate(black_box(dyi), dxi, &mut scratch);
            }
        })
    });
}

/// Implicit-GEMM convolution of a batch in groups of images, as a layer does it: forward (the
/// weights transposed once per call, the bias added), weight gradient (summed in the kernel's
/// layout, added to `dw` once) and stride-1 input gradient (prepared once).
fn bench_implicit(g: &mut Group, name: &str, geom: ConvGeom, oc: usize, n: usize) {
    let (taps, plane) = (geom.col_rows(), geom.out_plane());
    let x = filled(n * geom.in_len(), 12);
    let w = filled(oc * taps, 13);
    let b = filled(oc, 14);
    let dy = filled(n * oc * plane, 15);
    let mut y = vec![0.0; n * oc * plane];
    let mut dw = vec![0.0; oc * taps];
    let mut dx = vec![0.0; n * geom.in_len()];
    let mut s = ImplicitScratch::default();
    // The layer's group: as many images as fill a 1 MiB column matrix, at most 16.
    let group = ((1 << 18) / (taps * plane)).clamp(1, 16);
    g.throughput(Throughput::Elements(n as u64 * gemm_flops(oc, taps, plane)));
    g.bench_function(format!("implicit_{name}_fwd"), |bench| {
        bench.iter(|| {
            let conv = ImplicitConv::new(&geom, oc, &w);
            for (xs, ys) in x.chunks(group * geom.in_len()).zip(y.chunks_mut(group * oc * plane)) {
                conv.forward(black_box(xs), &b, ys, Crop::full(&geom), &mut s);
            }
        })
    });
    g.bench_function(format!("implicit_{name}_bwd_weights"), |bench| {
        bench.iter(|| {
            let mut sums = WeightGrad::new(&geom, oc);
            for (xs, dys) in x.chunks(group * geom.in_len()).zip(dy.chunks(group * oc * plane)) {
                sums.add(black_box(xs), dys, Crop::full(&geom), &mut s);
            }
            sums.finish(&mut dw);
        })
    });
    let input_grad = ImplicitInputGrad::new(&geom, oc, &w).expect("a stride-1 layer");
    g.bench_function(format!("implicit_{name}_bwd_input"), |bench| {
        bench.iter(|| {
            for (dxs, dys) in dx.chunks_mut(group * geom.in_len()).zip(dy.chunks(group * oc * plane)) {
                input_grad.accumulate(black_box(dys), dxs, &mut s);
            }
        })
    });
    let scatter = ScatterInputGrad::new(&geom, oc, &w);
    let mut ss = ScatterScratch::default();
    g.bench_function(format!("scatter_{name}_bwd_input"), |bench| {
        bench.iter(|| {
            for (dxs, dys) in dx.chunks_mut(group * geom.in_len()).zip(dy.chunks(group * oc * plane)) {
                scatter.accumulate(black_box(dys), dxs, Crop::full(&geom), &mut ss);
            }
        })
    });
}

/// im2col + GEMM convolution of a batch, per image as a layer does it. Forward: im2col, then
/// `y = w * col`. Backward recomputes the column matrix (nothing is saved between passes), then
/// `dw += dy col^T`, `dcol = w^T dy`, `dx += col2im(dcol)`: twice the forward GEMM FLOP.
fn bench_im2col_gemm(g: &mut Group, name: &str, geom: ConvGeom, oc: usize, n: usize, with_backward: bool) {
    let (taps, plane) = (geom.col_rows(), geom.out_plane());
    let x = filled(n * geom.in_len(), 9);
    let w = filled(oc * taps, 10);
    let dy = filled(n * oc * plane, 11);
    let mut y = vec![0.0; n * oc * plane];
    let mut dw = vec![0.0; oc * taps];
    let mut dx = vec![0.0; n * geom.in_len()];
    let mut col = vec![0.0; taps * plane]; //  col[C*KH*KW, OH*OW], one image
    let mut dcol = vec![0.0; taps * plane];
    let fwd = gemm_flops(oc, taps, plane);
    g.throughput(Throughput::Elements(n as u64 * fwd));
    g.bench_function(format!("im2col_gemm_{name}_fwd"), |b| {
        b.iter(|| {
            for (xi, yi) in x.chunks_exact(geom.in_len()).zip(y.chunks_exact_mut(oc * plane)) {
                im2col(&geom, black_box(xi), &mut col);
                matmul(false, false, oc, taps, plane, &w, &col, yi, false);
            }
        })
    });
    if !with_backward {
        return;
    }
    g.throughput(Throughput::Elements(n as u64 * 2 * fwd));
    g.bench_function(format!("im2col_gemm_{name}_bwd"), |b| {
        b.iter(|| {
            let images = x.chunks_exact(geom.in_len()).zip(dx.chunks_exact_mut(geom.in_len()));
            for ((xi, dxi), dyi) in images.zip(dy.chunks_exact(oc * plane)) {
                im2col(&geom, black_box(xi), &mut col);
                matmul(false, true, oc, plane, taps, dyi, &col, &mut dw, true);
                matmul(true, false, taps, oc, plane, &w, dyi, &mut dcol, false);
                col2im(&geom, &dcol, dxi);
            }
        })
    });
}

/// The backward of conv -> ReLU -> 2x2/2 max-pool from the windows' argmaxes alone
/// (`conv_sparse`): both gradients and the bias gradient, on a pooled gradient made by the
/// reference forward of random images and weights (so about half the windows pass the ReLU).
/// Throughput counts the dense backward's FLOP (twice the forward's, as `im2col_gemm_*_bwd`),
/// so its "FLOP/s" compares with the dense kernels' time for the same gradients.
fn bench_sparse(g: &mut Group, name: &str, geom: ConvGeom, oc: usize, n: usize) {
    let (taps, plane) = (geom.col_rows(), geom.out_plane());
    let pool = PoolGeom::new(geom.oh, geom.ow, 2, 2);
    let x = filled(n * geom.in_len(), 16);
    let w: Vec<f32> = filled(oc * taps, 17).iter().map(|v| v * 0.1).collect();
    let mut conv = vec![0.0; n * oc * plane];
    for (xi, yi) in x.chunks_exact(geom.in_len()).zip(conv.chunks_exact_mut(oc * plane)) {
        kernels::conv_direct::conv_forward_ref(&geom, oc, xi, &w, yi);
    }
    let pooled = n * oc * pool.oh * pool.ow;
    let (mut y, mut argmax) = (vec![0.0; pooled], vec![0u32; pooled]);
    maxpool_forward(&pool, n * oc, &conv, &mut y, &mut argmax);
    y.iter_mut().for_each(|v| *v = v.max(0.0));
    let dy = filled(pooled, 18);
    let (mut dw, mut db, mut dx) = (vec![0.0; oc * taps], vec![0.0; oc], vec![0.0; n * geom.in_len()]);
    let sparse = SparseConvGrad::new(&geom, oc, &w);
    let mut s = SparseScratch::default();
    g.throughput(Throughput::Elements(n as u64 * 2 * gemm_flops(oc, taps, plane)));
    let mut sums = SparseSums::new(&geom, oc);
    g.bench_function(format!("sparse_{name}_bwd"), |b| {
        b.iter(|| {
            sums.reset(&geom, oc);
            sparse.backward(
                &pool,
                black_box(&x),
                &dy,
                &y,
                &argmax,
                &mut sums,
                &mut db,
                Some(&mut dx),
                &mut s,
            );
            sums.finish(&mut dw);
        })
    });
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv");
    // The paths a layer picks (src/ops/conv.rs): direct for one input channel and for the
    // 28x28 stride-1 layer, implicit GEMM for the others. Every path is timed on the
    // multi-channel shapes for comparison.
    bench_direct(&mut g, "c1_1x28x28_32x3x3", c1_geom(), 32, CONV_BATCH);
    bench_direct(&mut g, "e_conv1_1x28x28_64x4x4_same", e_conv1_geom(), 64, CONV_BATCH);
    bench_im2col_gemm(&mut g, "c1_1x28x28_32x3x3", c1_geom(), 32, CONV_BATCH, false);
    let multi = [("e_conv2_64x14x14_64x4x4", e_conv2_geom(), 64)].into_iter().chain(ours_geoms());
    for (name, geom, oc) in multi {
        bench_direct(&mut g, name, geom, oc, CONV2_BATCH);
        bench_implicit(&mut g, name, geom, oc, CONV2_BATCH);
        bench_im2col_gemm(&mut g, name, geom, oc, CONV2_BATCH, true);
    }
    bench_sparse(&mut g, "e_conv2_64x14x14_64x4x4", e_conv2_geom(), 64, CONV2_BATCH);
    // `ours`' two layers that a pool follows, which `pb` (README, "Other shapes of the
    // network") runs as fused conv-ReLU-pool.
    for (name, geom, oc) in [ours_geoms()[0], ours_geoms()[2]] {
        bench_sparse(&mut g, name, geom, oc, CONV2_BATCH);
    }
    g.finish();
}

/// 2x2/2 max-pooling forward and backward over `n` images of `c` planes. Bytes: the input (or
/// its gradient) once at 4 B per value, plus the output (or its gradient) and the saved argmax
/// at 4 B each per output.
fn bench_pool(g: &mut Group, name: &str, n: usize, c: usize, hw: usize) {
    let geom = PoolGeom::new(hw, hw, 2, 2);
    let planes = n * c;
    let (ins, outs) = (planes * hw * hw, planes * geom.oh * geom.ow);
    let x = filled(ins, 14);
    let dy = filled(outs, 15);
    let mut y = vec![0.0; outs];
    let mut argmax = vec![0u32; outs];
    let mut dx = vec![0.0; ins];
    g.throughput(Throughput::Bytes(4 * (ins + 2 * outs) as u64));
    g.bench_function(format!("{name}_fwd"), |b| {
        b.iter(|| maxpool_forward(&geom, planes, black_box(&x), &mut y, &mut argmax))
    });
    g.bench_function(format!("{name}_bwd"), |b| {
        b.iter(|| maxpool_backward(&geom, planes, black_box(&dy), &argmax, &mut dx))
    });
}

fn maxpool(c: &mut Criterion) {
    let mut g = c.benchmark_group("maxpool");
    bench_pool(&mut g, "c1_512x32x26x26", 512, 32, 26);
    bench_pool(&mut g, "e_pool1_250x64x28x28", 250, 64, 28);
    bench_pool(&mut g, "e_pool2_250x64x11x11", 250, 64, 11);
    g.finish();
}

fn main() {
    println!("fmnist kernel benchmarks, SIMD compiled in: {}", kernels::simd::describe());
    println!("(GEMM, conv and rowsmat: elements/s = FLOP/s; vecmat, im2col, col2im and maxpool: bytes/s)");
    // Short runs: the whole suite should take minutes, not tens of minutes. Command-line
    // options (`--quick`, `--measurement-time`, a name filter) still override these.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    gemm(&mut c);
    gemv(&mut c);
    im2col_benches(&mut c);
    conv(&mut c);
    maxpool(&mut c);
    c.final_summary();
}

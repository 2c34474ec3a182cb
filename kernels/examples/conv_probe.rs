//! The three convolution paths side by side, per core, timed by the thread's CPU time
//! (`/proc/thread-self/schedstat`) instead of the wall clock, so that it reads roughly the same
//! on a busy machine (other processes share the caches and memory bandwidth, so it is a guide,
//! not a benchmark: `cargo bench --bench kernels -- conv/` is, on a quiet machine).
//!
//! Run: `cargo run --release -p fmnist-kernels --example conv_probe` (Linux only).
//!
//! For each multi-channel layer of the presets, GFLOP/s (one multiply-add = 2 FLOP) of a batch
//! of 16 images, grouped as the layer groups them: forward; weight gradient; input gradient.
use std::hint::black_box;

use kernels::conv_direct::{conv_backward_weights, conv_forward, InputGrad};
use kernels::conv_implicit::{ImplicitConv, ImplicitInputGrad, ImplicitScratch, WeightGrad};
use kernels::gemm::matmul;
use kernels::im2col::{col2im_ld, im2col_ld, ConvGeom};

const IMAGES: usize = 16;

/// CPU time of this thread so far, in nanoseconds.
fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    s.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat's first field")
}

/// The best of 5 measurements of `f`'s CPU time, each over at least 0.2 s of repetitions.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = cpu_ns();
            let mut reps = 0;
            while cpu_ns() - t < 200_000_000 {
                f();
                reps += 1;
            }
            (cpu_ns() - t) as f64 / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

fn filled(len: usize, k: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * k) % 13) as f32 * 0.1 - 0.6).collect()
}

fn main() {
    let same = (1, 1, 1, 1);
    let layers = [
        ("E conv2 64x14x14 -> 64, 4x4 valid", ConvGeom::new(64, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0)), 64),
        ("ours conv2 32x28x28 -> 32, 3x3 same", ConvGeom::new(32, 28, 28, 3, 3, (1, 1), same), 32),
        ("ours conv3 32x14x14 -> 64, 3x3 same", ConvGeom::new(32, 14, 14, 3, 3, (1, 1), same), 64),
        ("ours conv4 64x14x14 -> 64, 3x3 same", ConvGeom::new(64, 14, 14, 3, 3, (1, 1), same), 64),
    ];
    println!("GFLOP/s per core by CPU time: forward / weight gradient / input gradient");
    for (name, g, oc) in layers {
        let (in_len, plane, taps) = (g.in_len(), g.out_plane(), g.col_rows());
        let out_len = oc * plane;
        let flop = 2.0 * (IMAGES * oc * plane * taps) as f64;
        let (xs, w, b, dys) = (
            filled(IMAGES * in_len, 7919),
            filled(oc * taps, 31),
            filled(oc, 3),
            filled(IMAGES * out_len, 17),
        );
        let (mut ys, mut dw, mut dxs) =
            (vec![0.0; IMAGES * out_len], vec![0.0; oc * taps], vec![0.0; IMAGES * in_len]);
        // The layers' groups (src/ops/conv.rs): by input size on the direct path, by column
        // matrix size on the others.
        let direct_group = ((1 << 18) / in_len).clamp(1, 16);
        let group = ((1 << 18) / (taps * plane)).clamp(1, 16);

        let mut s = Vec::new();
        let direct = [
            time(|| {
                for (x, y) in xs.chunks_exact(in_len).zip(ys.chunks_exact_mut(out_len)) {
                    conv_forward(&g, oc, black_box(x), &w, y, &mut s);
                }
            }),
            time(|| {
                for (x, dy) in xs.chunks(direct_group * in_len).zip(dys.chunks(direct_group * out_len)) {
                    conv_backward_weights(&g, oc, black_box(x), dy, &mut dw, &mut s);
                }
            }),
            time(|| {
                let input_grad = InputGrad::new(&g, oc, &w);
                for (dy, dx) in dys.chunks_exact(out_len).zip(dxs.chunks_exact_mut(in_len)) {
                    input_grad.accumulate(black_box(dy), dx, &mut s);
                }
            }),
        ];

        let mut s = ImplicitScratch::default();
        let implicit = [
            time(|| {
                let conv = ImplicitConv::new(&g, oc, &w);
                for (x, y) in xs.chunks(group * in_len).zip(ys.chunks_mut(group * out_len)) {
                    conv.forward(black_box(x), &b, y, &mut s);
                }
            }),
            time(|| {
                let mut sums = WeightGrad::new(&g, oc);
                for (x, dy) in xs.chunks(group * in_len).zip(dys.chunks(group * out_len)) {
                    sums.add(black_box(x), dy, &mut s);
                }
                sums.finish(&mut dw);
            }),
            time(|| {
                let input_grad = ImplicitInputGrad::new(&g, oc, &w).expect("stride 1");
                for (dy, dx) in dys.chunks(group * out_len).zip(dxs.chunks_mut(group * in_len)) {
                    input_grad.accumulate(black_box(dy), dx, &mut s);
                }
            }),
        ];

        // im2col + GEMM as the layer ran it before: a column matrix per group of images.
        let (mut col, mut out) = (Vec::new(), Vec::new());
        let gather = |x: &[f32], col: &mut Vec<f32>| {
            let ld = x.len() / in_len * plane;
            col.resize(taps * ld, 0.0);
            for (j, xi) in x.chunks_exact(in_len).enumerate() {
                im2col_ld(&g, xi, &mut col[j * plane..], ld);
            }
            ld
        };
        let im2col_fwd = time(|| {
            for x in xs.chunks(group * in_len) {
                let ld = gather(black_box(x), &mut col);
                out.resize(oc * ld, 0.0);
                matmul(false, false, oc, taps, ld, &w, &col, &mut out, false);
            }
        });
        let im2col_bwd = time(|| {
            for ((x, dy), dx) in
                xs.chunks(group * in_len).zip(dys.chunks(group * out_len)).zip(dxs.chunks_mut(group * in_len))
            {
                let ld = gather(black_box(x), &mut col);
                out.resize(oc * ld, 0.0);
                for (j, dyi) in dy.chunks_exact(out_len).enumerate() {
                    for (o, d) in dyi.chunks_exact(plane).enumerate() {
                        out[o * ld + j * plane..][..plane].copy_from_slice(d);
                    }
                }
                matmul(false, true, oc, ld, taps, &out, &col, &mut dw, true);
                matmul(true, false, taps, oc, ld, &w, &out, &mut col, false);
                for (j, dxi) in dx.chunks_exact_mut(in_len).enumerate() {
                    col2im_ld(&g, &col[j * plane..], ld, dxi);
                }
            }
        });

        let rate = |t: f64| flop / t;
        println!("{name}:");
        println!(
            "  direct        {:4.0} / {:4.0} / {:4.0}",
            rate(direct[0]),
            rate(direct[1]),
            rate(direct[2])
        );
        println!(
            "  implicit GEMM {:4.0} / {:4.0} / {:4.0}",
            rate(implicit[0]),
            rate(implicit[1]),
            rate(implicit[2])
        );
        println!("  im2col + GEMM {:4.0} / both gradients {:4.0}", rate(im2col_fwd), 2.0 * rate(im2col_bwd));
    }
}

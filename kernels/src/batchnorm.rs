//! Batch normalisation over the channels of `[N, C, S]` (S = H*W for images, 1 for vectors).
//!
//! Training: per channel, `mean` and the *biased* variance `var` over the `M = N*S` values,
//! `xhat = (x - mean) * inv_std` with `inv_std = 1 / sqrt(var + eps)`, `y = gamma * xhat + beta`.
//! Backward (the standard derivation, e.g. Ioffe & Szegedy 2015, section 3):
//! `dgamma = sum dy * xhat`, `dbeta = sum dy`,
//! `dx = gamma * inv_std / M * (M * dy - sum dy - xhat * sum(dy * xhat))`.
//! Each channel's sums run in a fixed order: within a plane in `f32` SIMD lanes, across planes in
//! `f64`. Channels (for the sums) and images (for the element-wise passes) run in parallel.
//! Only `mean` and `inv_std` are saved; backward recomputes `xhat` from `x`.
//! Reference twins: [`batchnorm_stats_ref`], [`batchnorm_normalize_ref`], [`batchnorm_backward_ref`].
//!
//! A batch-norm followed by a ReLU has fused kernels, [`batchnorm_relu_normalize`] and
//! [`batchnorm_relu_backward`]: the ReLU is applied, or its mask to the gradient, inside the
//! same loops, so the normalised values and their gradient are never stored. They give the bits
//! of the two kernels one after the other; their plain form is those twins one after the other
//! (`Engine::batchnorm_relu_*` on the reference engine).

use rayon::prelude::*;

use crate::simd::{load, Fx, LANES};

fn check(len: usize, n: usize, c: usize, s: usize) {
    assert_eq!(len, n * c * s, "batchnorm: buffer has {len} values, needs N*C*S = {}", n * c * s);
}

/// Sum of one plane in `f32` lanes (planes are at most a few thousand values), widened to `f64`
/// for the sum over planes.
fn plane_sum(v: &[f32], f: impl Fn(Fx) -> Fx, g: impl Fn(f32) -> f32) -> f64 {
    let mut acc = Fx::splat(0.0);
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| g(x)).sum();
    for c in chunks {
        acc += f(load(c));
    }
    (acc.reduce_add() + tail) as f64
}

/// Per-channel mean and biased variance (two passes: mean first, then squared deviations).
/// Channels run in parallel; each channel's sums run in a fixed order.
pub fn batchnorm_stats(x: &[f32], n: usize, c: usize, s: usize, mean: &mut [f32], var: &mut [f32]) {
    check(x.len(), n, c, s);
    assert!(mean.len() == c && var.len() == c, "batchnorm_stats: stats need {c} entries");
    let m = (n * s).max(1) as f64;
    mean.par_iter_mut().zip(var.par_iter_mut()).enumerate().for_each(|(ch, (mean_c, var_c))| {
        let planes = || (0..n).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
        let mu = planes().map(|p| plane_sum(p, |v| v, |v| v)).sum::<f64>() / m;
        let mu32 = mu as f32;
        let muv = Fx::splat(mu32);
        let sq = planes()
            .map(|p| plane_sum(p, |v| (v - muv) * (v - muv), |v| (v - mu32) * (v - mu32)))
            .sum::<f64>();
        *mean_c = mu32;
        *var_c = (sq / m) as f32;
    });
}

/// Reference twin of [`batchnorm_stats`]: one element at a time by index.
pub fn batchnorm_stats_ref(x: &[f32], n: usize, c: usize, s: usize, mean: &mut [f32], var: &mut [f32]) {
    check(x.len(), n, c, s);
    let m = (n * s).max(1) as f64;
    for ch in 0..c {
        let mut sum = 0.0f64;
        for i in 0..n {
            for k in 0..s {
                sum += x[(i * c + ch) * s + k] as f64;
            }
        }
        let mu = sum / m;
        let mut sq = 0.0f64;
        for i in 0..n {
            for k in 0..s {
                let d = x[(i * c + ch) * s + k] as f64 - mu;
                sq += d * d;
            }
        }
        mean[ch] = mu as f32;
        var[ch] = (sq / m) as f32;
    }
}

/// `y = (x - mean) * inv_std * gamma + beta`, per channel. Used with batch statistics in
/// training and with the running statistics in evaluation.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_normalize(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    normalize::<false>(x, (n, c, s), mean, inv_std, gamma, beta, y);
}

/// [`batchnorm_normalize`] and a ReLU in one pass: `y = max((x - mean) * inv_std * gamma + beta, 0)`,
/// the same bits as the two kernels one after the other, without writing and reading the
/// normalised values in between.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_relu_normalize(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    normalize::<true>(x, (n, c, s), mean, inv_std, gamma, beta, y);
}

/// The normalising pass, with a ReLU after it when `RELU`.
fn normalize<const RELU: bool>(
    x: &[f32],
    (n, c, s): (usize, usize, usize),
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    check(x.len(), n, c, s);
    check(y.len(), n, c, s);
    assert!(mean.len() == c && inv_std.len() == c && gamma.len() == c && beta.len() == c);
    let image = c * s;
    if image == 0 {
        return;
    }
    y.par_chunks_mut(image).zip(x.par_chunks(image)).for_each(|(yi, xi)| {
        for (ch, (xp, yp)) in xi.chunks_exact(s).zip(yi.chunks_exact_mut(s)).enumerate() {
            let scale = inv_std[ch] * gamma[ch];
            let shift = beta[ch] - mean[ch] * scale;
            for (o, &v) in yp.iter_mut().zip(xp) {
                let t = v * scale + shift;
                *o = if !RELU || t > 0.0 { t } else { 0.0 };
            }
        }
    });
}

/// Reference twin of [`batchnorm_normalize`]: the definition `gamma * (x - mean) * inv_std + beta`
/// element by element, in `f64`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_normalize_ref(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    for i in 0..n {
        for ch in 0..c {
            for k in 0..s {
                let j = (i * c + ch) * s + k;
                let xhat = (x[j] as f64 - mean[ch] as f64) * inv_std[ch] as f64;
                y[j] = (gamma[ch] as f64 * xhat + beta[ch] as f64) as f32;
            }
        }
    }
}

/// Backward of training-mode batch-norm; accumulates into `dgamma` and `dbeta`, and into `dx`
/// (overwrites it when not `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dx: (&mut [f32], bool),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    backward::<false>(x, dy, dy, (n, c, s), (mean, inv_std, gamma), dx, dgamma, dbeta);
}

/// Backward of batch-norm followed by a ReLU whose output is `y` and output gradient `dy`:
/// [`batchnorm_backward`] of the ReLU's input gradient (`dy` where `y > 0`, else 0), computed
/// in the same order, so the same bits as the two kernels one after the other, without
/// writing and reading that gradient in between.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_relu_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dx: (&mut [f32], bool),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    check(y.len(), n, c, s);
    backward::<true>(x, y, dy, (n, c, s), (mean, inv_std, gamma), dx, dgamma, dbeta);
}

/// The backward passes; with `RELU`, the gradient is `dy` masked by `y > 0` (else `y` is unused).
#[allow(clippy::too_many_arguments)]
fn backward<const RELU: bool>(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    (n, c, s): (usize, usize, usize),
    (mean, inv_std, gamma): (&[f32], &[f32], &[f32]),
    (dx, accumulate): (&mut [f32], bool),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    check(x.len(), n, c, s);
    check(dy.len(), n, c, s);
    check(dx.len(), n, c, s);
    let m = (n * s) as f64;
    if m == 0.0 || c == 0 {
        return;
    }
    let zero = Fx::splat(0.0);
    // The gradient entering batch-norm, lane by lane and one value at a time.
    let grad =
        |ys: &[f32], ds: &[f32]| if RELU { load(ys).simd_gt(zero).select(load(ds), zero) } else { load(ds) };
    let grad1 = |yv: f32, g: f32| if !RELU || yv > 0.0 { g } else { 0.0 };
    // Per channel, in parallel: sum(dy) and sum(dy * xhat).
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mu, is) = (mean[ch], inv_std[ch]);
            let (muv, isv) = (Fx::splat(mu), Fx::splat(is));
            let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
            for i in 0..n {
                let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                let (xp, yp, dyp) = (&x[r.clone()], &y[r.clone()], &dy[r]);
                let (xc, yc, dc) = (xp.chunks_exact(LANES), yp.chunks_exact(LANES), dyp.chunks_exact(LANES));
                // sum(dy) over the plane, as `plane_sum` adds: lanes, then the tail.
                let tail: f32 = yc.remainder().iter().zip(dc.remainder()).map(|(&yv, &g)| grad1(yv, g)).sum();
                let mut acc = Fx::splat(0.0);
                for (ys, ds) in yc.clone().zip(dc.clone()) {
                    acc += grad(ys, ds);
                }
                sum_dy += (acc.reduce_add() + tail) as f64;
                let (mut acc, mut tail) = (Fx::splat(0.0), 0.0f32);
                for ((&xv, &yv), &g) in xc.remainder().iter().zip(yc.remainder()).zip(dc.remainder()) {
                    tail += grad1(yv, g) * (xv - mu) * is;
                }
                for ((xs, ys), ds) in xc.zip(yc).zip(dc) {
                    acc += grad(ys, ds) * (load(xs) - muv) * isv;
                }
                sum_dy_xhat += (acc.reduce_add() + tail) as f64;
            }
            (sum_dy, sum_dy_xhat)
        })
        .collect();
    for (ch, &(sd, sdx)) in sums.iter().enumerate() {
        dgamma[ch] += sdx as f32;
        dbeta[ch] += sd as f32;
    }
    // dx per image, in parallel.
    let image = c * s;
    dx.par_chunks_mut(image)
        .zip(x.par_chunks(image))
        .zip(y.par_chunks(image))
        .zip(dy.par_chunks(image))
        .for_each(|(((dxi, xi), yi), dyi)| {
            for ch in 0..c {
                let (mu, is) = (mean[ch], inv_std[ch]);
                let k = gamma[ch] * is;
                let (a, b) = ((sums[ch].0 / m) as f32, (sums[ch].1 / m) as f32);
                let r = ch * s..(ch + 1) * s;
                let planes = dxi[r.clone()].iter_mut().zip(&xi[r.clone()]).zip(&yi[r.clone()]).zip(&dyi[r]);
                for (((d, &xv), &yv), &g) in planes {
                    let xhat = (xv - mu) * is;
                    let v = k * (grad1(yv, g) - a - xhat * b);
                    *d = if accumulate { *d + v } else { v };
                }
            }
        });
}

/// Reference twin of [`batchnorm_backward`], written from the chain rule through mean and
/// variance rather than the simplified formula: `dxhat = dy * gamma`,
/// `dvar = sum dxhat * (x - mean) * -1/2 * inv_std^3`, `dmean = -sum dxhat * inv_std`
/// (the `dvar` term through the mean is zero for the biased variance), and
/// `dx = dxhat * inv_std + dvar * 2 (x - mean) / M + dmean / M`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_ref(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    (dx, accumulate): (&mut [f32], bool),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let m = (n * s) as f64;
    for ch in 0..c {
        let (mu, is, ga) = (mean[ch] as f64, inv_std[ch] as f64, gamma[ch] as f64);
        let (mut dvar, mut dmean, mut dg, mut db) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            for k in 0..s {
                let j = (i * c + ch) * s + k;
                let (xv, g) = (x[j] as f64, dy[j] as f64);
                dg += g * (xv - mu) * is;
                db += g;
                dvar += g * ga * (xv - mu) * -0.5 * is * is * is;
                dmean -= g * ga * is;
            }
        }
        for i in 0..n {
            for k in 0..s {
                let j = (i * c + ch) * s + k;
                let (xv, g) = (x[j] as f64, dy[j] as f64);
                let v = (g * ga * is + dvar * 2.0 * (xv - mu) / m + dmean / m) as f32;
                dx[j] = if accumulate { dx[j] + v } else { v };
            }
        }
        dgamma[ch] += dg as f32;
        dbeta[ch] += db as f32;
    }
}

//! Batch normalisation over the channels of `[N, C, S]` (S = H*W for images, 1 for vectors).
//!
//! Training: per channel, `mean` and the *biased* variance `var` over the `M = N*S` values,
//! `xhat = (x - mean) * inv_std` with `inv_std = 1 / sqrt(var + eps)`, `y = gamma * xhat + beta`.
//! Backward (the standard derivation, e.g. Ioffe & Szegedy 2015, section 3):
//! `dgamma = sum dy * xhat`, `dbeta = sum dy`,
//! `dx = gamma * inv_std / M * (M * dy - sum dy - xhat * sum(dy * xhat))`.
//! Sums run over each channel in a fixed order and accumulate in `f64`.
//! Only `mean` and `inv_std` are saved; backward recomputes `xhat` from `x`.
//! Reference twins: [`batchnorm_stats_ref`], [`batchnorm_normalize_ref`], [`batchnorm_backward_ref`].

fn check(len: usize, n: usize, c: usize, s: usize) {
    assert_eq!(len, n * c * s, "batchnorm: buffer has {len} values, needs N*C*S = {}", n * c * s);
}

/// Per-channel mean and biased variance (two passes: mean first, then squared deviations).
pub fn batchnorm_stats(x: &[f32], n: usize, c: usize, s: usize, mean: &mut [f32], var: &mut [f32]) {
    check(x.len(), n, c, s);
    assert!(mean.len() == c && var.len() == c, "batchnorm_stats: stats need {c} entries");
    let m = (n * s).max(1) as f64;
    for ch in 0..c {
        let planes = || (0..n).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
        let mu = planes().map(|p| p.iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() / m;
        let sq =
            planes().map(|p| p.iter().map(|&v| (v as f64 - mu) * (v as f64 - mu)).sum::<f64>()).sum::<f64>();
        mean[ch] = mu as f32;
        var[ch] = (sq / m) as f32;
    }
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
    check(x.len(), n, c, s);
    check(y.len(), n, c, s);
    assert!(mean.len() == c && inv_std.len() == c && gamma.len() == c && beta.len() == c);
    if s == 0 {
        return;
    }
    for (i, (xp, yp)) in x.chunks_exact(s).zip(y.chunks_exact_mut(s)).enumerate() {
        let ch = i % c;
        let scale = inv_std[ch] * gamma[ch];
        let shift = beta[ch] - mean[ch] * scale;
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = v * scale + shift;
        }
    }
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

/// Backward of training-mode batch-norm; accumulates into `dx`, `dgamma`, `dbeta`.
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
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    check(x.len(), n, c, s);
    check(dy.len(), n, c, s);
    check(dx.len(), n, c, s);
    let m = (n * s) as f64;
    if m == 0.0 {
        return;
    }
    for ch in 0..c {
        let (mu, is) = (mean[ch], inv_std[ch]);
        let idx = |i: usize| (i * c + ch) * s..(i * c + ch + 1) * s;
        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
        for i in 0..n {
            for (&xv, &g) in x[idx(i)].iter().zip(&dy[idx(i)]) {
                sum_dy += g as f64;
                sum_dy_xhat += (g * (xv - mu) * is) as f64;
            }
        }
        dgamma[ch] += sum_dy_xhat as f32;
        dbeta[ch] += sum_dy as f32;
        let k = gamma[ch] * is;
        let (a, b) = ((sum_dy / m) as f32, (sum_dy_xhat / m) as f32);
        for i in 0..n {
            for ((d, &xv), &g) in dx[idx(i)].iter_mut().zip(&x[idx(i)]).zip(&dy[idx(i)]) {
                let xhat = (xv - mu) * is;
                *d += k * (g - a - xhat * b);
            }
        }
    }
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
    dx: &mut [f32],
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
                dx[j] += (g * ga * is + dvar * 2.0 * (xv - mu) / m + dmean / m) as f32;
            }
        }
        dgamma[ch] += dg as f32;
        dbeta[ch] += db as f32;
    }
}

//! Softmax with cross-entropy, fused.
//!
//! For logits `z[N, K]` and integer labels, with the target distribution
//! `t = (1 - eps) * onehot(label) + eps / K` (label smoothing; `eps = 0` is the plain loss):
//! `p = softmax(z)` computed as `exp(z - max z) / sum`, so no `exp` overflows, and the loss
//! `sum_i sum_k -t_ik * log p_ik` uses `log p = z - max - ln(sum)` rather than `ln(p)`, which
//! would be `-inf` for a tiny probability. The gradient w.r.t. `z` is simply `p - t`.
//! Reference twins: [`softmax_xent_forward_ref`], [`softmax_xent_backward_ref`].

fn check(z: usize, p: usize, labels: &[u8], n: usize, k: usize) {
    assert_eq!(z, n * k, "softmax_xent: logits have {z} values, need N*K = {}", n * k);
    assert_eq!(p, n * k, "softmax_xent: probs have {p} values, need N*K = {}", n * k);
    assert_eq!(labels.len(), n, "softmax_xent: {} labels for {n} rows", labels.len());
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        panic!("softmax_xent: label {bad} is not below the class count {k}");
    }
}

/// Writes `probs[N, K]` and returns the loss *summed* over the batch (the caller divides).
pub fn softmax_xent_forward(
    z: &[f32],
    labels: &[u8],
    n: usize,
    k: usize,
    smoothing: f32,
    probs: &mut [f32],
) -> f64 {
    check(z.len(), probs.len(), labels, n, k);
    if k == 0 {
        return 0.0;
    }
    let off = smoothing / k as f32;
    let mut total = 0.0f64;
    for ((zr, pr), &label) in z.chunks_exact(k).zip(probs.chunks_exact_mut(k)).zip(labels) {
        let max = zr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (p, &v) in pr.iter_mut().zip(zr) {
            *p = (v - max).exp();
            sum += *p;
        }
        let inv = 1.0 / sum;
        pr.iter_mut().for_each(|p| *p *= inv);
        let log_sum = sum.ln();
        let mut loss = 0.0f64;
        for (j, &v) in zr.iter().enumerate() {
            let t = if j == label as usize { 1.0 - smoothing + off } else { off };
            if t != 0.0 {
                loss -= (t * (v - max - log_sum)) as f64;
            }
        }
        total += loss;
    }
    total
}

/// `dz += scale * (p - t)`; `scale` is the upstream gradient of the summed loss, for a mean
/// loss `upstream / N`.
pub fn softmax_xent_backward(
    probs: &[f32],
    labels: &[u8],
    n: usize,
    k: usize,
    smoothing: f32,
    scale: f32,
    dz: &mut [f32],
) {
    check(dz.len(), probs.len(), labels, n, k);
    if k == 0 {
        return;
    }
    let off = smoothing / k as f32;
    for ((pr, dr), &label) in probs.chunks_exact(k).zip(dz.chunks_exact_mut(k)).zip(labels) {
        for (j, (d, &p)) in dr.iter_mut().zip(pr).enumerate() {
            let t = if j == label as usize { 1.0 - smoothing + off } else { off };
            *d += scale * (p - t);
        }
    }
}

/// Reference twin of [`softmax_xent_forward`], in `f64` throughout.
pub fn softmax_xent_forward_ref(
    z: &[f32],
    labels: &[u8],
    n: usize,
    k: usize,
    smoothing: f32,
    probs: &mut [f32],
) -> f64 {
    check(z.len(), probs.len(), labels, n, k);
    let mut total = 0.0;
    for i in 0..n {
        let row: Vec<f64> = z[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for j in 0..k {
            // log p straight from the logits: `p.ln()` is -inf once p underflows (a logit 745
            // below the max), and 0 * -inf is NaN.
            let log_p = row[j] - max - sum.ln();
            probs[i * k + j] = log_p.exp() as f32;
            let t = smoothing as f64 / k as f64
                + if j == labels[i] as usize { 1.0 - smoothing as f64 } else { 0.0 };
            total -= t * log_p;
        }
    }
    total
}

/// Reference twin of [`softmax_xent_backward`].
pub fn softmax_xent_backward_ref(
    probs: &[f32],
    labels: &[u8],
    n: usize,
    k: usize,
    smoothing: f32,
    scale: f32,
    dz: &mut [f32],
) {
    check(dz.len(), probs.len(), labels, n, k);
    for i in 0..n {
        for j in 0..k {
            let t = smoothing / k as f32 + if j == labels[i] as usize { 1.0 - smoothing } else { 0.0 };
            dz[i * k + j] += scale * (probs[i * k + j] - t);
        }
    }
}
